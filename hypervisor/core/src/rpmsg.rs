//! The rpmsg link between two partitions: each side has a virtio rpmsg
//! device (ID 7) whose driver receives on queue 0 and transmits on queue 1;
//! the hypervisor is the device side of both and moves each message from
//! one side's transmit buffer into a receive buffer the other side posted:
//! one copy, no memory shared. A message whose receiver has no free buffer
//! stays in its sender's queue until one is posted, so none is lost and
//! order is kept. Name-service messages (to address 53) pass like any other.

use crate::virtio::{Chain, Fault, GuestMemory, VirtioMmio};

pub const DEVICE_ID: u32 = 7;
/// VIRTIO_RPMSG_F_NS: name-service announcements.
pub const F_NS: u64 = 1;
pub const RX: usize = 0;
pub const TX: usize = 1;
/// src, dst, reserved (u32 each), len, flags (u16 each).
pub const HEADER: u32 = 16;
/// The name-service endpoint.
pub const NS_ADDR: u32 = 53;
/// The device-specific configuration word that says whether the other
/// side's driver is ready.
pub const PEER_READY: u64 = 0x100;

/// A fault, and which side of the link caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideFault {
    pub side: usize,
    pub fault: Fault,
}

/// What one pump did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub messages: u32,
    /// Each side's driver asked for an interrupt about used buffers.
    pub interrupt: [bool; 2],
    /// Messages still waiting for a receive buffer.
    pub waiting: bool,
    /// Name-service messages not delivered: the receiver did not
    /// negotiate VIRTIO_RPMSG_F_NS.
    pub dropped_ns: u32,
}

#[derive(Clone, Debug)]
pub struct Link {
    pub dev: [VirtioMmio; 2],
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

fn blame<T>(side: usize, r: Result<T, Fault>) -> Result<T, SideFault> {
    r.map_err(|fault| SideFault { side, fault })
}

/// Copies `len` bytes from `src`'s segments to `dst`'s, straight from one
/// memory to the other, a contiguous run at a time.
fn copy<M: GuestMemory>(
    src: &Chain,
    sm: &M,
    dst: &Chain,
    dm: &mut M,
    len: u32,
) -> Result<(), SideFault> {
    let (mut si, mut so, mut di, mut doff) = (0usize, 0u32, 0usize, 0u32);
    let mut left = len;
    while left > 0 {
        let (s, d) = (&src.segments()[si], &dst.segments()[di]);
        let n = left.min(s.len - so).min(d.len - doff);
        dm.copy_from(
            d.addr + u64::from(doff),
            sm,
            s.addr + u64::from(so),
            n as usize,
        )
        .map_err(|(side, fault)| SideFault { side, fault })?;
        (so, doff, left) = (so + n, doff + n, left - n);
        if so == s.len {
            (si, so) = (si + 1, 0);
        }
        if doff == d.len {
            (di, doff) = (di + 1, 0);
        }
    }
    Ok(())
}

impl Link {
    pub fn new() -> Self {
        Self::with_name_service([true, true])
    }

    /// A link whose devices offer VIRTIO_RPMSG_F_NS only where `ns` says.
    pub fn with_name_service(ns: [bool; 2]) -> Self {
        let dev = |on: bool| VirtioMmio::new(DEVICE_ID, if on { F_NS } else { 0 });
        Link {
            dev: [dev(ns[0]), dev(ns[1])],
        }
    }

    /// A register read of side `side`'s device. Its device-specific
    /// configuration is one word at 0x100: 1 while the other side's driver
    /// is ready (DRIVER_OK), 0 while it is not; every change of it is a
    /// configuration-change interrupt.
    pub fn read(&self, side: usize, off: u64) -> u32 {
        match off {
            PEER_READY => u32::from(self.dev[1 - side].driver_ok()),
            _ => self.dev[side].read(off),
        }
    }

    /// Side `side` went down (its driver reset the device, or its
    /// partition stopped: then `reset` resets its device first) or came up
    /// (DRIVER_OK): the other side sees the change of its PEER_READY word
    /// through a configuration-change interrupt, if its driver is live (a
    /// device notifies no driver before DRIVER_OK, 3.1.1). Returns the
    /// side to interrupt.
    pub fn side_changed(&mut self, side: usize, reset: bool) -> Option<usize> {
        if reset {
            self.dev[side].reset();
        }
        let peer = 1 - side;
        self.dev[peer].driver_ok().then(|| {
            self.dev[peer].config_changed();
            peer
        })
    }

    /// Moves every message side `from` has queued, in order, into receive
    /// buffers of the other side, until either runs out. `mem[i]` is side
    /// i's memory. A fault is blamed on the side whose queue or buffer
    /// caused it; the messages moved before it stay moved.
    pub fn pump<M: GuestMemory>(
        &mut self,
        from: usize,
        mem: &mut [M; 2],
    ) -> Result<Moved, SideFault> {
        let to = 1 - from;
        let mut moved = Moved::default();
        if !self.dev[from].driver_ok() {
            return Ok(moved);
        }
        // The sender's message is checked first, whether or not the
        // receiver is ready: a malformed queue is found at its notify.
        while let Some(tx_head) = blame(from, self.dev[from].queues[TX].peek(&mem[from]))? {
            let tx = blame(from, self.dev[from].queues[TX].chain(&mem[from], tx_head))?;
            let sent = blame(from, tx.len(false))?;
            let first = tx.segments()[0];
            if first.len < HEADER {
                return Err(SideFault {
                    side: from,
                    fault: Fault::BadLength {
                        len: HEADER,
                        room: first.len,
                    },
                });
            }
            let mut hdr = [0u8; 16];
            blame(from, mem[from].read(first.addr, &mut hdr))?;
            let len = HEADER + u32::from(u16::from_le_bytes([hdr[12], hdr[13]]));
            if len > sent {
                return Err(SideFault {
                    side: from,
                    fault: Fault::BadLength { len, room: sent },
                });
            }
            if !self.dev[to].driver_ok() {
                moved.waiting = true;
                break;
            }
            // A receiver without the name service gets no announcements
            // (5.12.3: F_NS); the sender's buffer is returned all the same.
            if u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) == NS_ADDR
                && self.dev[to].negotiated() & F_NS == 0
            {
                blame(
                    from,
                    self.dev[from].queues[TX].push_used(&mut mem[from], tx_head, 0),
                )?;
                self.dev[from].queues[TX].advance();
                moved.dropped_ns += 1;
                moved.interrupt[from] |=
                    blame(from, self.dev[from].queues[TX].wants_interrupt(&mem[from]))?;
                continue;
            }
            let Some(rx_head) = blame(to, self.dev[to].queues[RX].peek(&mem[to]))? else {
                moved.waiting = true;
                break;
            };
            let rx = blame(to, self.dev[to].queues[RX].chain(&mem[to], rx_head))?;
            let room = blame(to, rx.len(true))?;
            if len > room {
                return Err(SideFault {
                    side: to,
                    fault: Fault::BadLength { len, room },
                });
            }
            let (a, b) = mem.split_at_mut(1);
            let (sm, dm) = if from == 0 {
                (&a[0], &mut b[0])
            } else {
                (&b[0], &mut a[0])
            };
            copy(&tx, sm, &rx, dm, len).map_err(|f| SideFault {
                side: if f.side == 0 { from } else { to },
                ..f
            })?;
            blame(
                to,
                self.dev[to].queues[RX].push_used(&mut mem[to], rx_head, len),
            )?;
            self.dev[to].queues[RX].advance();
            blame(
                from,
                self.dev[from].queues[TX].push_used(&mut mem[from], tx_head, 0),
            )?;
            self.dev[from].queues[TX].advance();
            moved.messages += 1;
        }
        if moved.messages > 0 {
            for (side, q) in [(to, RX), (from, TX)] {
                self.dev[side].signal_used();
                moved.interrupt[side] |=
                    blame(side, self.dev[side].queues[q].wants_interrupt(&mem[side]))?;
            }
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::tests::{ready_device_with, Driver, Ram};
    use crate::virtio::Effect;
    use std::vec::Vec;

    const BUF: u32 = 512;

    /// One side: its memory, its two queues, its buffers.
    struct Side {
        rx: Driver,
        tx: Driver,
        buf: u64,
        tx_next: u16,
    }

    fn side(link: &mut Link, i: usize, m: &mut Ram) -> Side {
        let base = m.base;
        link.dev[i] = ready_device_with(u64::from(link.dev[i].read(0x010)), m);
        let rx = Driver::at(base, 16);
        let tx = Driver::at(base + 0x1000, 16);
        assert_eq!(rx.setup(&mut link.dev[i], 0, m), Effect::None);
        assert_eq!(tx.setup(&mut link.dev[i], 1, m), Effect::None);
        link.dev[i].write(0x070, 15, m);
        assert!(link.dev[i].driver_ok());
        Side {
            rx,
            tx,
            buf: base + 0x4000,
            tx_next: 0,
        }
    }

    impl Side {
        fn post_rx(&mut self, m: &mut Ram, n: u16) {
            for _ in 0..n {
                let i = self.rx.avail_idx % 16;
                self.rx
                    .desc(m, i, self.buf + u64::from(i) * u64::from(BUF), BUF, 2, 0);
                self.rx.offer(m, i);
            }
        }
        fn send(&mut self, m: &mut Ram, src: u32, dst: u32, payload: &[u8]) {
            let i = self.tx_next % 16;
            self.tx_next += 1;
            let a = self.buf + 0x2000 + u64::from(i) * u64::from(BUF);
            let mut msg = Vec::new();
            msg.extend_from_slice(&src.to_le_bytes());
            msg.extend_from_slice(&dst.to_le_bytes());
            msg.extend_from_slice(&0u32.to_le_bytes());
            msg.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            msg.extend_from_slice(&0u16.to_le_bytes());
            msg.extend_from_slice(payload);
            m.put(a, &msg);
            self.tx.desc(m, i, a, msg.len() as u32, 0, 0);
            self.tx.offer(m, i);
        }
        fn received(&mut self, m: &Ram) -> Vec<Vec<u8>> {
            let used = self.rx.take_used(m);
            used.into_iter()
                .map(|(id, len)| {
                    m.get(self.buf + u64::from(id) * u64::from(BUF), len as usize)
                        .to_vec()
                })
                .collect()
        }
    }

    fn pair() -> (Link, [Ram; 2], Side, Side) {
        let mut link = Link::new();
        let mut m = [
            Ram::new(0x4000_0000, 0x20000),
            Ram::new(0x5000_0000, 0x20000),
        ];
        let a = side(&mut link, 0, &mut m[0]);
        let b = side(&mut link, 1, &mut m[1]);
        (link, m, a, b)
    }

    #[test]
    fn a_message_crosses_intact_with_interrupts() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 4);
        a.send(&mut m[0], 1024, 53, b"rpmsg-raw announcement");
        let moved = link.pump(0, &mut m).unwrap();
        assert_eq!(
            moved,
            Moved {
                messages: 1,
                interrupt: [true, true],
                waiting: false,
                dropped_ns: 0
            }
        );
        let got = b.received(&m[1]);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][4..8], &53u32.to_le_bytes());
        assert_eq!(&got[0][16..], b"rpmsg-raw announcement");
        assert_eq!(a.tx.take_used(&m[0]), [(0, 0)]);
        assert_eq!(link.dev[1].read(0x060), 1);
    }

    #[test]
    fn without_receive_buffers_messages_wait_in_order() {
        let (mut link, mut m, mut a, mut b) = pair();
        for i in 0..5u8 {
            a.send(&mut m[0], 1, 2, &[i; 10]);
        }
        assert_eq!(
            link.pump(0, &mut m).unwrap(),
            Moved {
                waiting: true,
                ..Default::default()
            }
        );
        b.post_rx(&mut m[1], 2);
        assert_eq!(link.pump(0, &mut m).unwrap().messages, 2);
        b.post_rx(&mut m[1], 8);
        assert_eq!(link.pump(0, &mut m).unwrap().messages, 3);
        let got: Vec<u8> = b.received(&m[1]).iter().map(|msg| msg[16]).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn announcements_reach_only_a_receiver_with_the_name_service() {
        let mut link = Link::with_name_service([true, false]);
        let mut m = [
            Ram::new(0x4000_0000, 0x20000),
            Ram::new(0x5000_0000, 0x20000),
        ];
        let mut a = side(&mut link, 0, &mut m[0]);
        let mut b = side(&mut link, 1, &mut m[1]);
        assert_eq!(link.dev[1].negotiated() & F_NS, 0);
        b.post_rx(&mut m[1], 4);
        a.send(&mut m[0], 1024, 53, b"rpmsg-raw");
        a.send(&mut m[0], 1024, 1024, b"data");
        let moved = link.pump(0, &mut m).unwrap();
        assert_eq!((moved.messages, moved.dropped_ns), (1, 1));
        let got = b.received(&m[1]);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][16..], b"data");
        assert_eq!(a.tx.take_used(&m[0]).len(), 2);
    }

    #[test]
    fn faults_are_blamed_on_the_side_that_made_them() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 1);
        // Header claims more payload than the buffer carries.
        a.send(&mut m[0], 1, 2, b"x");
        m[0].put(a.buf + 0x2000 + 12, &400u16.to_le_bytes());
        let f = link.pump(0, &mut m).unwrap_err();
        assert_eq!(
            f,
            SideFault {
                side: 0,
                fault: Fault::BadLength { len: 416, room: 17 }
            }
        );
        // A receive buffer outside the receiver's memory.
        let (mut link, mut m, mut a, b) = pair();
        b.rx.desc(&mut m[1], 0, 0x4000_0000, BUF, 2, 0);
        let mut b = b;
        b.rx.offer(&mut m[1], 0);
        a.send(&mut m[0], 1, 2, b"y");
        assert_eq!(link.pump(0, &mut m).unwrap_err().side, 1);
    }

    #[test]
    fn a_side_going_down_and_up_is_seen_by_its_peer_and_nothing_is_lost() {
        let (mut link, mut m, mut a, b) = pair();
        assert_eq!(link.read(0, PEER_READY), 1);
        // b stops: its device is reset; a sees it and keeps sending.
        assert_eq!(link.side_changed(1, true), Some(0));
        assert_eq!(link.read(0, PEER_READY), 0);
        assert_eq!(link.dev[0].read(0x060) & 2, 2, "configuration change");
        for i in 0..3u8 {
            a.send(&mut m[0], 1, 2, &[i; 8]);
        }
        assert!(link.pump(0, &mut m).unwrap().waiting);
        // b's new instance sets up its device; a notify-free pump at
        // DRIVER_OK (what the binary does) delivers in order.
        let mut b = side(&mut link, 1, &mut m[1]);
        b.post_rx(&mut m[1], 4);
        assert_eq!(link.side_changed(1, false), Some(0));
        assert_eq!(link.read(0, PEER_READY), 1);
        assert_eq!(link.pump(0, &mut m).unwrap().messages, 3);
        let got: Vec<u8> = b.received(&m[1]).iter().map(|msg| msg[16]).collect();
        assert_eq!(got, [0, 1, 2]);
        // A peer whose driver is not live is not interrupted.
        link.dev[0].reset();
        assert_eq!(link.side_changed(1, false), None);
        let _ = b;
    }

    /// Arbitrary rings and buffers: the pump never panics, and a side's
    /// memory only changes through its own device (the Ram refuses any
    /// address outside it).
    #[test]
    fn arbitrary_rings_never_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let (mut link, mut m, _, _) = pair();
            for side in m.iter_mut() {
                for _ in 0..64 {
                    let off = (rand() % 0x2000) as usize;
                    let v = rand();
                    let n = 1 + (rand() % 8) as usize;
                    side.bytes[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
                }
            }
            for _ in 0..4 {
                let from = (rand() % 2) as usize;
                if let Err(f) = link.pump(from, &mut m) {
                    link.dev[f.side].fail();
                }
            }
            let _ = round;
        }
    }
}
