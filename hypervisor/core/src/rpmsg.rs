//! The rpmsg link between two partitions: each side has a virtio rpmsg
//! device (ID 7) whose driver receives on queue 0 and transmits on queue 1;
//! the hypervisor is the device side of both and moves each message from
//! one side's transmit buffer into a receive buffer the other side posted:
//! one copy, no memory shared. A message whose receiver has no free buffer
//! stays in its sender's queue until one is posted, so none is lost and
//! order is kept. Name-service messages (to address 53) pass like any other.
//!
//! Each link has one buffer size (512 bytes unless its SDT node says
//! otherwise): a message longer than it is its sender's fault, a receive
//! buffer shorter than it its receiver's, whatever the message, so that
//! what one side sends can never put the other side's device in
//! DEVICE_NEEDS_RESET.

use crate::virtio::{Chain, Fault, GuestMemory, Queue, Segment, VirtioMmio};

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
/// A link's buffer size unless its SDT node sets `partita,buffer-size`:
/// Linux's virtio_rpmsg_bus and OpenAMP's default.
pub const BUFFER_SIZE: u32 = 512;

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
    /// Each side's interrupt status changed (its used-buffer cause was
    /// clear): the register to publish again.
    pub status: [bool; 2],
    /// Messages still waiting for a receive buffer.
    pub waiting: bool,
    /// Name-service messages not delivered: the receiver did not
    /// negotiate VIRTIO_RPMSG_F_NS.
    pub dropped_ns: u32,
    /// The pump stopped at its budget with more messages queued.
    pub more: bool,
    /// The receiver is busy: it polls, or has not yet acknowledged an
    /// earlier interrupt, and holds messages from before this pump that
    /// it has not read (not yet posted their buffers again). What the
    /// sender sends next may wait to move with more.
    pub busy: bool,
}

/// How a link is set up, from its SDT node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// Whether each side's device offers the name service.
    pub name_service: [bool; 2],
    /// Each side's virtio-mmio version: 2, or 1 (legacy).
    pub version: [u32; 2],
    /// The longest message, header included, and the smallest receive
    /// buffer.
    pub buffer_size: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            name_service: [true, true],
            version: [2, 2],
            buffer_size: BUFFER_SIZE,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Link {
    pub dev: [VirtioMmio; 2],
    pub buffer_size: u32,
    /// Messages each side has sent that reached the other.
    sent: [u64; 2],
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a walk through a chain stands: its current buffer, the offset in
/// it, and the descriptors still to come.
struct Cursor {
    seg: Segment,
    off: u32,
    next: Option<u16>,
    left: u16,
}

impl Cursor {
    fn new(c: &Chain) -> Self {
        Cursor {
            seg: c.first,
            off: 0,
            next: (c.n > 1).then_some(c.next),
            left: c.n - 1,
        }
    }

    /// Bytes left in the current buffer, moving on to the next descriptor
    /// (read and checked again: the driver may have rewritten it since the
    /// chain was taken) when it is used up; 0 at the end of the chain,
    /// which is never walked further than when it was taken.
    fn room(&mut self, q: &Queue, m: &impl GuestMemory, device_writes: bool) -> Result<u32, Fault> {
        while self.off == self.seg.len() {
            let Some(i) = self.next.filter(|_| self.left > 0) else {
                return Ok(0);
            };
            let (seg, next) = q.segment(m, i, device_writes)?;
            (self.seg, self.off, self.next, self.left) = (seg, 0, next, self.left - 1);
        }
        Ok(self.seg.len() - self.off)
    }
}

/// Reads the first `buf.len()` bytes of a device-readable chain whose
/// first buffer is shorter than that.
fn read_prefix(q: &Queue, c: &Chain, m: &impl GuestMemory, buf: &mut [u8]) -> Result<(), Fault> {
    let mut cur = Cursor::new(c);
    let mut at = 0;
    while at < buf.len() {
        let n = cur.room(q, m, false)? as usize;
        if n == 0 {
            return Err(Fault::BadLength {
                len: buf.len() as u32,
                room: at as u32,
            });
        }
        let k = n.min(buf.len() - at);
        m.read(cur.seg.part(cur.off, k as u32), &mut buf[at..at + k]);
        (cur.off, at) = (cur.off + k as u32, at + k);
    }
    Ok(())
}

/// Copies `len` bytes from the sender's chain `tx` (in queue `tq`, memory
/// `sm`) to the receiver's `rx` (`rq`, `dm`), straight from one memory to
/// the other, a contiguous run at a time. Both chains were found long
/// enough when taken; one that shrank since is its driver's fault. A
/// fault names the side whose buffer it found short: 0 the sender, 1 the
/// receiver.
/// For chains of more than one buffer: the pump copies one to one itself.
#[inline(never)]
fn copy<M: GuestMemory>(
    (tq, tx, sm): (&Queue, Chain, &M),
    (rq, rx, dm): (&Queue, Chain, &mut M),
    len: u32,
) -> Result<(), (usize, Fault)> {
    let (mut s, mut d) = (Cursor::new(&tx), Cursor::new(&rx));
    let mut left = len;
    while left > 0 {
        let a = s.room(tq, sm, false).map_err(|f| (0, f))?;
        let b = d.room(rq, &*dm, true).map_err(|f| (1, f))?;
        if a == 0 || b == 0 {
            let short = Fault::BadLength {
                len,
                room: len - left,
            };
            return Err((usize::from(a != 0), short));
        }
        let n = left.min(a).min(b);
        dm.copy_from(d.seg.part(d.off, n), sm, s.seg.part(s.off, n));
        (s.off, d.off, left) = (s.off + n, d.off + n, left - n);
    }
    Ok(())
}

impl Link {
    pub fn new() -> Self {
        Self::configured(LinkConfig::default())
    }

    /// A link whose devices offer VIRTIO_RPMSG_F_NS only where `ns` says.
    pub fn with_name_service(ns: [bool; 2]) -> Self {
        Self::configured(LinkConfig {
            name_service: ns,
            ..LinkConfig::default()
        })
    }

    pub fn configured(c: LinkConfig) -> Self {
        let dev = |side: usize| {
            VirtioMmio::with_version(
                DEVICE_ID,
                if c.name_service[side] { F_NS } else { 0 },
                c.version[side],
            )
        };
        Link {
            dev: [dev(0), dev(1)],
            buffer_size: c.buffer_size,
            sent: [0; 2],
        }
    }

    /// Every offset of a side's window that may read other than zero
    /// (`read`).
    pub fn registers() -> impl Iterator<Item = u64> {
        crate::virtio::REGISTERS.into_iter().chain([PEER_READY])
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

    /// Messages side `side` has sent and received through the link.
    pub fn counts(&self, side: usize) -> [u64; 2] {
        [self.sent[side], self.sent[1 - side]]
    }

    /// Side `from`'s messages are held (`on`): its transmit queue asks its
    /// driver for no notify (VRING_USED_F_NO_NOTIFY), and what it queues
    /// waits for the next pump of the CPU that holds it. Released, a
    /// driver notifies again; the caller then looks at the queue once more
    /// (a pump), after a barrier, for what was queued before the driver
    /// saw the flag change. The release writes the flag whatever it was:
    /// a queue made ready again on rings a driver did not zero may still
    /// say NO_NOTIFY from an earlier hold. Nothing to do for a queue that
    /// is not ready.
    pub fn hold<M: GuestMemory>(&mut self, from: usize, sm: &mut M, on: bool) {
        let q = &mut self.dev[from].queues[TX];
        match on {
            true => q.want_notify(sm, false),
            false => q.set_notify(sm, true),
        }
    }

    /// Moves up to `budget` messages side `from` has queued, in order, into
    /// receive buffers of the other side, until either runs out. `sm` is
    /// the sender's memory, `dm` the receiver's. A fault is blamed on the
    /// side whose queue or buffer caused it; the messages moved before it
    /// stay moved. Inlined: the hypervisor's trap path is measured in
    /// instructions, and the two memories, passed apart, can stay in
    /// registers.
    #[inline(always)]
    pub fn pump<M: GuestMemory>(
        &mut self,
        from: usize,
        sm: &mut M,
        dm: &mut M,
        budget: u32,
    ) -> Result<Moved, SideFault> {
        self.pump_unless(from, sm, dm, budget, || false)
    }

    /// The same, stopping early (`Moved::more`) when `wanted` says,
    /// between two messages, that someone waits for the caller's lock.
    #[inline(always)]
    pub fn pump_unless<M: GuestMemory>(
        &mut self,
        from: usize,
        sm: &mut M,
        dm: &mut M,
        budget: u32,
        wanted: impl Fn() -> bool,
    ) -> Result<Moved, SideFault> {
        let to = 1 - from;
        let buffer_size = self.buffer_size;
        // Each side's device is taken once, by reference.
        let [d0, d1] = &mut self.dev;
        let (src, dst) = if from == 0 { (d0, d1) } else { (d1, d0) };
        let sender = |fault| SideFault { side: from, fault };
        let receiver = |fault| SideFault { side: to, fault };
        let mut moved = Moved::default();
        if !src.driver_ok() {
            return Ok(moved);
        }
        let receiver_ok = dst.driver_ok();
        let receiver_ns = dst.negotiated() & F_NS != 0;
        let (tq, rq) = (&mut src.queues[TX], &mut dst.queues[RX]);
        // The sender's message is checked first, whether or not the
        // receiver is ready: a malformed queue is found at its notify.
        while let Some(tx_head) = tq.peek(sm).map_err(sender)? {
            let done = moved.messages + moved.dropped_ns;
            if done >= budget || (done > 0 && wanted()) {
                moved.more = true;
                break;
            }
            let tx = tq.chain(sm, tx_head, false).map_err(sender)?;
            // src, dst (4 bytes each); reserved (4), len, flags (2 each).
            let [addrs, rest] = header(tq, tx, sm).map_err(sender)?;
            let len = HEADER + u32::from((rest >> 32) as u16);
            if len > buffer_size {
                return Err(sender(Fault::TooLong {
                    len,
                    max: buffer_size,
                }));
            }
            if len > tx.len {
                return Err(sender(Fault::BadLength { len, room: tx.len }));
            }
            if !receiver_ok {
                moved.waiting = true;
                break;
            }
            // A receiver without the name service gets no announcements
            // (5.12.3: F_NS); the sender's buffer is returned all the same.
            if (addrs >> 32) as u32 == NS_ADDR && !receiver_ns {
                tq.push_used(sm, tx_head, 0).map_err(sender)?;
                tq.advance();
                moved.dropped_ns += 1;
                continue;
            }
            let rx_head = match rq.peek(dm).map_err(receiver)? {
                Some(h) => h,
                None => match ask_for_buffers(rq, dm).map_err(receiver)? {
                    Some(h) => h,
                    None => {
                        moved.waiting = true;
                        break;
                    }
                },
            };
            let rx = rq.chain(dm, rx_head, true).map_err(receiver)?;
            if rx.len < buffer_size {
                return Err(receiver(Fault::SmallBuffer {
                    room: rx.len,
                    need: buffer_size,
                }));
            }
            // One buffer each, as Linux and OpenAMP send and post them:
            // both hold `len` bytes (checked above).
            if tx.n == 1 && rx.n == 1 {
                dm.copy_from(rx.first, sm, tx.first.prefix(len));
            } else {
                copy((tq, tx, sm), (rq, rx, dm), len).map_err(|(side, fault)| SideFault {
                    side: if side == 0 { from } else { to },
                    fault,
                })?;
            }
            rq.push_used(dm, rx_head, len).map_err(receiver)?;
            rq.advance();
            tq.push_used(sm, tx_head, 0).map_err(sender)?;
            tq.advance();
            moved.messages += 1;
        }
        // Nothing waits for the receiver's buffers: it need not notify
        // when it posts more (one trap less for each it posts).
        if !moved.waiting && receiver_ok {
            rq.want_notify(dm, false);
        }
        // Used buffers: the receiver's when messages arrived, the sender's
        // when any of its buffers came back.
        // The used index's store before the flag's load: a driver that
        // turns interrupts on stores its flag before it loads the index.
        if moved.messages + moved.dropped_ns > 0 {
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        }
        // The status's cause goes with an interrupt (2.7.7): a driver that
        // asked for none has nothing to acknowledge.
        if moved.messages > 0 {
            self.sent[from] += u64::from(moved.messages);
            moved.interrupt[to] = rq.wants_interrupt(dm);
            moved.status[to] = moved.interrupt[to] && dst.signal_used();
            // A receiver that polls, or has not yet acknowledged an
            // earlier interrupt, and still holds earlier messages.
            moved.busy =
                !moved.status[to] && u32::from(dst.queues[RX].held_by_driver(dm)) > moved.messages;
        }
        if moved.messages + moved.dropped_ns > 0 {
            moved.interrupt[from] = tq.wants_interrupt(sm);
            moved.status[from] = moved.interrupt[from] && src.signal_used();
        }
        Ok(moved)
    }
}

/// A message's rpmsg header, from the sender's chain `c`, as
/// `GuestMemory::read_pair` gives it.
#[inline(always)]
fn header<M: GuestMemory>(q: &Queue, c: Chain, m: &M) -> Result<[u64; 2], Fault> {
    if c.first.len() >= HEADER {
        Ok(m.read_pair(c.first))
    } else {
        split_header(q, c, m)
    }
}

/// The same for a header split across descriptors.
#[cold]
fn split_header<M: GuestMemory>(q: &Queue, c: Chain, m: &M) -> Result<[u64; 2], Fault> {
    if c.len < HEADER {
        return Err(Fault::BadLength {
            len: HEADER,
            room: c.len,
        });
    }
    let mut hdr = [0u8; HEADER as usize];
    read_prefix(q, &c, m, &mut hdr)?;
    Ok(crate::virtio::pair_from_le(&hdr))
}

/// A receiver has no buffer for a message that waits: asks its driver to
/// notify when it posts one, then looks again, since a buffer it posted
/// before it saw the request came with no notify.
#[cold]
fn ask_for_buffers<M: GuestMemory>(q: &mut Queue, m: &mut M) -> Result<Option<u16>, Fault> {
    q.set_notify(m, true);
    // The flag's store before the index's load; the driver orders its
    // index's store before its load of the flag the same way.
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    q.peek(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::tests::{legacy_device_with, ready_device_with, Driver, Ram};
    use crate::virtio::Effect;
    use std::vec::Vec;

    const BUF: u32 = 512;

    impl Link {
        /// The pump with both memories in side order, as the tests keep
        /// them.
        fn pump_sides(
            &mut self,
            from: usize,
            m: &mut [Ram; 2],
            budget: u32,
        ) -> Result<Moved, SideFault> {
            let [m0, m1] = m;
            let (sm, dm) = if from == 0 { (m0, m1) } else { (m1, m0) };
            self.pump(from, sm, dm, budget)
        }
    }
    const ALL: u32 = u32::MAX;
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    /// One side: its memory, its two queues, its buffers.
    struct Side {
        rx: Driver,
        tx: Driver,
        buf: u64,
        tx_next: u16,
    }

    /// Drives side `i`'s device up to DRIVER_OK in its own version, with
    /// two queues of 16 in `m`; `ok` false stops before DRIVER_OK.
    fn side_with(link: &mut Link, i: usize, m: &mut Ram, ok: bool) -> Side {
        let base = m.base;
        let features = u64::from(link.dev[i].read(0x010));
        let legacy = link.dev[i].version() == 1;
        link.dev[i] = if legacy {
            legacy_device_with(features, m)
        } else {
            ready_device_with(features, m)
        };
        let rx = Driver::at(base, 16);
        let tx = Driver::at(base + 0x1000, 16);
        for (q, d) in [(0, &rx), (1, &tx)] {
            let e = if legacy {
                d.setup_legacy(&mut link.dev[i], q, m)
            } else {
                d.setup(&mut link.dev[i], q, m)
            };
            assert_eq!(e, Effect::QueueReady(q as u16));
        }
        if ok {
            go(link, i, m);
        }
        Side {
            rx,
            tx,
            buf: base + 0x4000,
            tx_next: 0,
        }
    }

    fn side(link: &mut Link, i: usize, m: &mut Ram) -> Side {
        side_with(link, i, m, true)
    }

    /// DRIVER_OK, as each version's driver writes it.
    fn go(link: &mut Link, i: usize, m: &Ram) {
        let s = if link.dev[i].version() == 1 { 7 } else { 15 };
        assert_eq!(link.dev[i].write(0x070, s, m), Effect::DriverOk);
        assert!(link.dev[i].driver_ok());
    }

    impl Side {
        fn post_rx(&mut self, m: &mut Ram, n: u16) {
            self.post_rx_of(m, n, BUF);
        }
        fn post_rx_of(&mut self, m: &mut Ram, n: u16, size: u32) {
            for _ in 0..n {
                let i = self.rx.avail_idx % 16;
                self.rx.desc(
                    m,
                    i,
                    self.buf + u64::from(i) * u64::from(BUF),
                    size,
                    WRITE,
                    0,
                );
                self.rx.offer(m, i);
            }
        }
        fn message(src: u32, dst: u32, payload: &[u8]) -> Vec<u8> {
            let mut msg = Vec::new();
            msg.extend_from_slice(&src.to_le_bytes());
            msg.extend_from_slice(&dst.to_le_bytes());
            msg.extend_from_slice(&0u32.to_le_bytes());
            msg.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            msg.extend_from_slice(&0u16.to_le_bytes());
            msg.extend_from_slice(payload);
            msg
        }
        fn send(&mut self, m: &mut Ram, src: u32, dst: u32, payload: &[u8]) {
            let msg = Self::message(src, dst, payload);
            let i = self.tx_next % 16;
            self.tx_next += 1;
            let a = self.buf + 0x2000 + u64::from(i) * u64::from(BUF);
            m.put(a, &msg);
            self.tx.desc(m, i, a, msg.len() as u32, 0, 0);
            self.tx.offer(m, i);
        }
        /// One message cut into the descriptors `cuts` lengths say
        /// (the last takes the rest), at 0x100 apart from 0x3000.
        fn send_chain(&mut self, m: &mut Ram, payload: &[u8], cuts: &[usize]) {
            let msg = Self::message(1, 2, payload);
            let mut at = 0;
            for (k, &c) in cuts.iter().enumerate() {
                let last = k + 1 == cuts.len();
                let n = if last { msg.len() - at } else { c };
                let a = self.buf + 0x3000 + 0x100 * k as u64;
                m.put(a, &msg[at..at + n]);
                let flags = if last { 0 } else { NEXT };
                self.tx.desc(m, k as u16, a, n as u32, flags, k as u16 + 1);
                at += n;
            }
            self.tx.offer(m, 0);
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

    /// A queue's used-ring flags (VRING_USED_F_NO_NOTIFY), as its driver
    /// reads them.
    fn flags(m: &Ram, d: &Driver) -> u16 {
        u16::from_le_bytes(m.get(d.used, 2).try_into().unwrap())
    }

    fn mems() -> [Ram; 2] {
        [
            Ram::new(0x4000_0000, 0x20000),
            Ram::new(0x5000_0000, 0x20000),
        ]
    }

    fn pair_of(config: LinkConfig) -> (Link, [Ram; 2], Side, Side) {
        let mut link = Link::configured(config);
        let mut m = mems();
        let a = side(&mut link, 0, &mut m[0]);
        let b = side(&mut link, 1, &mut m[1]);
        (link, m, a, b)
    }

    fn pair() -> (Link, [Ram; 2], Side, Side) {
        pair_of(LinkConfig::default())
    }

    #[test]
    fn a_message_crosses_intact_with_interrupts() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 4);
        a.send(&mut m[0], 1024, 53, b"rpmsg-raw announcement");
        let moved = link.pump_sides(0, &mut m, ALL).unwrap();
        assert_eq!(
            moved,
            Moved {
                messages: 1,
                interrupt: [true, true],
                status: [true, true],
                ..Default::default()
            }
        );
        let got = b.received(&m[1]);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][4..8], &53u32.to_le_bytes());
        assert_eq!(&got[0][16..], b"rpmsg-raw announcement");
        assert_eq!(a.tx.take_used(&m[0]), [(0, 0)]);
        assert_eq!(link.dev[1].read(0x060), 1);
    }

    /// A side's interrupt status changes, and is published again, only
    /// where its used-buffer cause was clear: not for a driver that has
    /// not acknowledged the last one, as a sender that takes no interrupt
    /// for its transmit buffers never does.
    #[test]
    fn a_status_is_changed_only_where_the_cause_was_clear() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 4);
        a.send(&mut m[0], 1, 2, b"one");
        assert_eq!(
            link.pump_sides(0, &mut m, ALL).unwrap().status,
            [true, true]
        );
        a.send(&mut m[0], 1, 2, b"two");
        assert_eq!(
            link.pump_sides(0, &mut m, ALL).unwrap().status,
            [false, false]
        );
        link.dev[1].acknowledge(1);
        a.send(&mut m[0], 1, 2, b"three");
        assert_eq!(
            link.pump_sides(0, &mut m, ALL).unwrap().status,
            [false, true]
        );
        assert_eq!((link.dev[0].read(0x060), link.dev[1].read(0x060)), (1, 1));
    }

    /// A driver that asks for no interrupt (VRING_AVAIL_F_NO_INTERRUPT)
    /// gets no status cause to acknowledge; a receiver is busy while it
    /// polls or has not acknowledged, and holds buffers of earlier
    /// messages it has not read.
    #[test]
    fn only_an_interrupt_sets_a_status_and_a_receiver_behind_is_busy() {
        let (mut link, mut m, mut a, mut b) = pair();
        m[0].put(a.tx.avail, &[1, 0]);
        // Every buffer, as Linux's and OpenAMP's drivers post them.
        b.post_rx(&mut m[1], 16);
        a.send(&mut m[0], 1, 2, b"one");
        let one = link.pump_sides(0, &mut m, ALL).unwrap();
        assert_eq!(
            (one.status, one.interrupt, one.busy),
            ([false, true], [false, true], false)
        );
        assert_eq!(link.dev[0].read(0x060), 0, "no interrupt, no cause");
        // Not yet acknowledged, and "one" not read: busy.
        a.send(&mut m[0], 1, 2, b"two");
        let two = link.pump_sides(0, &mut m, ALL).unwrap();
        assert_eq!((two.status, two.busy), ([false, false], true));
        // Acknowledged: not busy, whatever it holds.
        link.dev[1].acknowledge(1);
        a.send(&mut m[0], 1, 2, b"three");
        assert!(!link.pump_sides(0, &mut m, ALL).unwrap().busy);
        // Polling (no interrupts): busy while it holds earlier messages.
        m[1].put(b.rx.avail, &[1, 0]);
        a.send(&mut m[0], 1, 2, b"four");
        let four = link.pump_sides(0, &mut m, ALL).unwrap();
        assert_eq!((four.interrupt[1], four.busy), (false, true));
        // Every buffer read and posted again: not busy.
        b.received(&m[1]);
        b.post_rx(&mut m[1], 4);
        a.send(&mut m[0], 1, 2, b"five");
        assert!(!link.pump_sides(0, &mut m, ALL).unwrap().busy);
    }

    /// Legacy on both sides, and one side of each version: the same
    /// messages, both ways, in order.
    #[test]
    fn legacy_and_mixed_links_carry_messages_both_ways() {
        for version in [[1, 1], [1, 2], [2, 1]] {
            let (mut link, mut m, mut a, mut b) = pair_of(LinkConfig {
                version,
                ..LinkConfig::default()
            });
            assert_eq!((link.read(0, 4), link.read(1, 4)), (version[0], version[1]));
            a.post_rx(&mut m[0], 16);
            b.post_rx(&mut m[1], 16);
            for i in 0..10u8 {
                a.send(&mut m[0], 1, 2, &[i; 100]);
                b.send(&mut m[1], 2, 1, &[i + 100; 200]);
            }
            assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 10);
            assert_eq!(link.pump_sides(1, &mut m, ALL).unwrap().messages, 10);
            let at_b: Vec<u8> = b.received(&m[1]).iter().map(|x| x[16]).collect();
            let at_a: Vec<u8> = a.received(&m[0]).iter().map(|x| x[16]).collect();
            assert_eq!(at_b, (0..10).collect::<Vec<u8>>());
            assert_eq!(at_a, (100..110).collect::<Vec<u8>>());
        }
    }

    /// A remoteproc side: no registers, its rings handed over whole (in
    /// the legacy layout), live at once with the name service; messages
    /// both ways as over virtio-mmio, and bad rings refused with the
    /// device left down.
    #[test]
    fn a_remoteproc_side_carries_messages_and_announcements() {
        let mut link = Link::configured(LinkConfig {
            version: [1, 2],
            ..LinkConfig::default()
        });
        let mut m = mems();
        let mut b = side(&mut link, 1, &mut m[1]);
        let mut a = Side {
            rx: Driver::at(0x4000_0000, 16),
            tx: Driver::at(0x4000_1000, 16),
            buf: 0x4000_4000,
            tx_next: 0,
        };
        // B's announcement waits for A's device.
        b.send(&mut m[1], 1024, NS_ADDR, b"rpmsg-raw");
        assert!(link.pump_sides(1, &mut m, ALL).unwrap().waiting);
        let rings = [a.rx.desc, a.tx.desc];
        link.dev[0].attach(rings, 16, 4, &m[0]).unwrap();
        assert!(link.dev[0].driver_ok());
        assert_eq!(link.dev[0].negotiated(), F_NS);
        assert_eq!(link.read(1, PEER_READY), 1);
        a.post_rx(&mut m[0], 4);
        assert_eq!(link.pump_sides(1, &mut m, ALL).unwrap().messages, 1);
        assert_eq!(&a.received(&m[0])[0][16..], b"rpmsg-raw");
        a.send(&mut m[0], 1025, 1024, b"hello");
        b.post_rx(&mut m[1], 4);
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 1);
        assert_eq!(&b.received(&m[1])[0][16..], b"hello");
        // Rings outside its memory, a misaligned table, a bad alignment.
        for (rings, align) in [
            ([0x4000_0000, 0x6000_0000], 4),
            ([0x4000_0008, 0x4000_1000], 4),
            ([0x4000_0000, 0x4000_1000], 3),
            ([u64::MAX - 0xff, 0x4000_1000], 4),
        ] {
            assert!(link.dev[0].attach(rings, 16, align, &m[0]).is_err());
            assert!(!link.dev[0].driver_ok());
        }
        // A size that is not a power of two (2.7).
        let rings = [0x4000_0000, 0x4000_1000];
        assert_eq!(
            link.dev[0].attach(rings, 24, 4, &m[0]),
            Err(Fault::BadQueueSize(24))
        );
        assert!(!link.dev[0].driver_ok());
    }

    /// VRING_USED_F_NO_NOTIFY on a receive queue: set while nothing waits
    /// for its buffers (posting more needs no trap), cleared while a
    /// message does.
    #[test]
    fn a_receiver_is_asked_to_notify_only_while_a_message_waits() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 1);
        a.send(&mut m[0], 1, 2, b"one");
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 1);
        assert_eq!(flags(&m[1], &b.rx), 1, "nothing waits: no notify");
        a.send(&mut m[0], 1, 2, b"two");
        assert!(link.pump_sides(0, &mut m, ALL).unwrap().waiting);
        assert_eq!(flags(&m[1], &b.rx), 0, "a message waits: notify");
        b.post_rx(&mut m[1], 1);
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 1);
        assert_eq!(flags(&m[1], &b.rx), 1);
        let got: Vec<Vec<u8>> = b
            .received(&m[1])
            .into_iter()
            .map(|x| x[16..].to_vec())
            .collect();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }

    /// A held transmit queue asks for no notify; what its driver queues
    /// meanwhile moves at the next pump, in order, and released, the
    /// queue asks for notifies again.
    #[test]
    fn a_held_sender_is_asked_not_to_notify_until_released() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 4);
        a.send(&mut m[0], 1, 2, b"one");
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 1);
        assert_eq!(flags(&m[0], &a.tx), 0);
        link.hold(0, &mut m[0], true);
        assert_eq!(flags(&m[0], &a.tx), 1, "held: no notify");
        a.send(&mut m[0], 1, 2, b"two");
        a.send(&mut m[0], 1, 2, b"three");
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 2);
        assert_eq!(flags(&m[0], &a.tx), 1, "a pump leaves the hold as it is");
        link.hold(0, &mut m[0], false);
        assert_eq!(flags(&m[0], &a.tx), 0, "released: notify");
        let got: Vec<Vec<u8>> = b
            .received(&m[1])
            .into_iter()
            .map(|x| x[16..].to_vec())
            .collect();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        // A queue that is not ready has no flags to write.
        link.dev[0].reset();
        link.hold(0, &mut m[0], true);
        assert_eq!(flags(&m[0], &a.tx), 0);
    }

    #[test]
    fn without_receive_buffers_messages_wait_in_order() {
        let (mut link, mut m, mut a, mut b) = pair();
        for i in 0..5u8 {
            a.send(&mut m[0], 1, 2, &[i; 10]);
        }
        assert_eq!(
            link.pump_sides(0, &mut m, ALL).unwrap(),
            Moved {
                waiting: true,
                ..Default::default()
            }
        );
        b.post_rx(&mut m[1], 2);
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 2);
        b.post_rx(&mut m[1], 8);
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 3);
        let got: Vec<u8> = b.received(&m[1]).iter().map(|msg| msg[16]).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    /// What waited for a receiver whose driver was not ready moves once
    /// it is (the hypervisor pumps at its DRIVER_OK), in either version.
    #[test]
    fn a_late_receiver_gets_what_waited() {
        for version in [1, 2] {
            let mut link = Link::configured(LinkConfig {
                version: [2, version],
                ..LinkConfig::default()
            });
            let mut m = mems();
            let mut a = side(&mut link, 0, &mut m[0]);
            let mut b = side_with(&mut link, 1, &mut m[1], false);
            a.send(&mut m[0], 1024, NS_ADDR, b"rpmsg-raw");
            b.post_rx(&mut m[1], 16);
            let moved = link.pump_sides(0, &mut m, ALL).unwrap();
            assert_eq!((moved.messages, moved.waiting), (0, true));
            go(&mut link, 1, &m[1]);
            assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 1);
            assert_eq!(&b.received(&m[1])[0][16..], b"rpmsg-raw");
        }
    }

    /// A budget bounds one pump; the rest stays queued, in order, for the
    /// next.
    #[test]
    fn a_pump_stops_at_its_budget_and_the_rest_follows() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 16);
        for i in 0..5u8 {
            a.send(&mut m[0], 1, 2, &[i; 10]);
        }
        let first = link.pump_sides(0, &mut m, 2).unwrap();
        assert_eq!((first.messages, first.more), (2, true));
        let second = link.pump_sides(0, &mut m, 2).unwrap();
        assert_eq!((second.messages, second.more), (2, true));
        let last = link.pump_sides(0, &mut m, 2).unwrap();
        assert_eq!((last.messages, last.more), (1, false));
        let got: Vec<u8> = b.received(&m[1]).iter().map(|msg| msg[16]).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn announcements_reach_only_a_receiver_with_the_name_service() {
        let mut link = Link::with_name_service([true, false]);
        let mut m = mems();
        let mut a = side(&mut link, 0, &mut m[0]);
        let mut b = side(&mut link, 1, &mut m[1]);
        assert_eq!(link.dev[1].negotiated() & F_NS, 0);
        b.post_rx(&mut m[1], 4);
        a.send(&mut m[0], 1024, 53, b"rpmsg-raw");
        a.send(&mut m[0], 1024, 1024, b"data");
        let moved = link.pump_sides(0, &mut m, ALL).unwrap();
        assert_eq!((moved.messages, moved.dropped_ns), (1, 1));
        let got = b.received(&m[1]);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][16..], b"data");
        assert_eq!(a.tx.take_used(&m[0]).len(), 2);
    }

    /// Chains of several descriptors on either side, as long as the queue
    /// allows, and a header cut across two of them.
    #[test]
    fn chained_buffers_carry_messages_intact() {
        let payload: Vec<u8> = (0..480u32).map(|i| (i * 7) as u8).collect();
        for cuts in [&[16, 100, 100, 100][..], &[8, 8, 64, 300], &[16; 15]] {
            let (mut link, mut m, mut a, mut b) = pair();
            // Receive buffers: one chain of 3 (200 + 200 + 112 bytes).
            for (k, len) in [(0u16, 200u32), (1, 200), (2, 112)] {
                let flags = if k < 2 { WRITE | NEXT } else { WRITE };
                b.rx.desc(
                    &mut m[1],
                    k,
                    b.buf + 0x200 * u64::from(k),
                    len,
                    flags,
                    k + 1,
                );
            }
            b.rx.offer(&mut m[1], 0);
            a.send_chain(&mut m[0], &payload, cuts);
            assert_eq!(
                link.pump_sides(0, &mut m, ALL).unwrap().messages,
                1,
                "{cuts:?}"
            );
            let got = b.rx.take_used(&m[1]);
            assert_eq!(got, [(0, 496)]);
            let mut whole = Vec::new();
            for (k, len) in [(0u64, 200), (1, 200), (2, 96)] {
                whole.extend_from_slice(m[1].get(b.buf + 0x200 * k, len));
            }
            assert_eq!(whole, Side::message(1, 2, &payload));
        }
    }

    #[test]
    fn faults_are_blamed_on_the_side_that_made_them() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 1);
        // Header claims more payload than the buffer carries.
        a.send(&mut m[0], 1, 2, b"x");
        m[0].put(a.buf + 0x2000 + 12, &400u16.to_le_bytes());
        let f = link.pump_sides(0, &mut m, ALL).unwrap_err();
        assert_eq!(
            f,
            SideFault {
                side: 0,
                fault: Fault::BadLength { len: 416, room: 17 }
            }
        );
        // A receive buffer outside the receiver's memory.
        let (mut link, mut m, mut a, mut b) = pair();
        b.rx.desc(&mut m[1], 0, 0x4000_0000, BUF, WRITE, 0);
        b.rx.offer(&mut m[1], 0);
        a.send(&mut m[0], 1, 2, b"y");
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap_err().side, 1);
    }

    #[test]
    fn a_side_going_down_and_up_is_seen_by_its_peer_and_nothing_is_lost() {
        let (mut link, mut m, mut a, _) = pair();
        assert_eq!(link.read(0, PEER_READY), 1);
        // b stops: its device is reset; a sees it and keeps sending.
        assert_eq!(link.side_changed(1, true), Some(0));
        assert_eq!(link.read(0, PEER_READY), 0);
        assert_eq!(link.dev[0].read(0x060) & 2, 2, "configuration change");
        for i in 0..3u8 {
            a.send(&mut m[0], 1, 2, &[i; 8]);
        }
        assert!(link.pump_sides(0, &mut m, ALL).unwrap().waiting);
        // b's new instance sets up its device; a notify-free pump at
        // DRIVER_OK (what the binary does) delivers in order.
        let mut b = side(&mut link, 1, &mut m[1]);
        b.post_rx(&mut m[1], 4);
        assert_eq!(link.side_changed(1, false), Some(0));
        assert_eq!(link.read(0, PEER_READY), 1);
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 3);
        let got: Vec<u8> = b.received(&m[1]).iter().map(|msg| msg[16]).collect();
        assert_eq!(got, [0, 1, 2]);
        // A peer whose driver is not live is not interrupted.
        link.dev[0].reset();
        assert_eq!(link.side_changed(1, false), None);
    }

    /// A message longer than the link's buffer size is its sender's fault,
    /// even in a buffer that holds it and towards a receiver whose buffer
    /// would: the receiver's device stays live. Once was the receiver's.
    #[test]
    fn an_over_long_message_is_the_senders_fault() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 4);
        a.send_chain(&mut m[0], &[7; 600], &[512]);
        assert_eq!(
            link.pump_sides(0, &mut m, ALL),
            Err(SideFault {
                side: 0,
                fault: Fault::TooLong { len: 616, max: 512 }
            })
        );
        // A link with 1 KiB buffers takes it.
        let (mut link, mut m, mut a, mut b) = pair_of(LinkConfig {
            buffer_size: 1024,
            ..LinkConfig::default()
        });
        b.rx.desc(&mut m[1], 0, b.buf, 1024, WRITE, 0);
        b.rx.offer(&mut m[1], 0);
        a.send_chain(&mut m[0], &[7; 600], &[512]);
        assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 1);
        assert_eq!(b.rx.take_used(&m[1]), [(0, 616)]);
    }

    /// A receive buffer smaller than the link's buffer size is its
    /// receiver's fault, even for a message that would fit it.
    #[test]
    fn a_small_receive_buffer_is_the_receivers_fault() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx_of(&mut m[1], 1, 256);
        a.send(&mut m[0], 1, 2, b"short");
        assert_eq!(
            link.pump_sides(0, &mut m, ALL),
            Err(SideFault {
                side: 1,
                fault: Fault::SmallBuffer {
                    room: 256,
                    need: 512
                }
            })
        );
        // The message stays queued for the receiver's next life.
        assert_eq!(a.tx.take_used(&m[0]), []);
    }

    /// A chain rewritten between its walk and its copy: the copy walks it
    /// again and blames its driver when it comes up short.
    #[test]
    fn a_chain_that_shrinks_under_the_copy_is_its_drivers_fault() {
        let (link, mut m, mut a, b) = pair();
        for (k, flags) in [(0u16, WRITE | NEXT), (1, WRITE)] {
            b.rx.desc(&mut m[1], k, b.buf + 0x200 * u64::from(k), 300, flags, 1);
        }
        a.send_chain(&mut m[0], &[1; 400], &[200, 0]);
        let (tq, rq) = (&link.dev[0].queues[TX], &link.dev[1].queues[RX]);
        let tx = tq.chain(&m[0], 0, false).unwrap();
        let rx = rq.chain(&m[1], 0, true).unwrap();
        assert_eq!((tx.n, tx.len, rx.n, rx.len), (2, 416, 2, 600));
        // The receiver's second buffer now holds 50 bytes.
        b.rx.desc(&mut m[1], 1, b.buf + 0x200, 50, WRITE, 0);
        let (m0, m1) = m.split_at_mut(1);
        assert_eq!(
            copy((tq, tx, &m0[0]), (rq, rx, &mut m1[0]), 416),
            Err((
                1,
                Fault::BadLength {
                    len: 416,
                    room: 350
                }
            ))
        );
        // The sender's second buffer now points outside its memory.
        b.rx.desc(&mut m1[0], 1, b.buf + 0x200, 300, WRITE, 0);
        a.tx.desc(&mut m0[0], 1, 0x1000, 216, 0, 0);
        assert_eq!(
            copy((tq, tx, &m0[0]), (rq, rx, &mut m1[0]), 416),
            Err((
                0,
                Fault::OutsideMemory {
                    addr: 0x1000,
                    len: 216
                }
            ))
        );
    }

    /// Arbitrary rings and buffers, on devices of both versions: the pump
    /// never panics, and a side's memory only changes through its own
    /// device (the Ram refuses any address outside it).
    /// Every word of a window outside `registers()` reads as zero, in
    /// every state a device passes through, in both versions: a copy of
    /// the registers needs no more than those.
    #[test]
    fn only_the_listed_registers_read_other_than_zero() {
        let quiet = |link: &Link| {
            for side in 0..2 {
                for off in (0..crate::sdt::VIRTIO_WINDOW).step_by(4) {
                    if Link::registers().all(|r| r != off) {
                        assert_eq!(link.read(side, off), 0, "side {side} offset {off:#x}");
                    }
                }
            }
        };
        for version in [[2, 2], [1, 2]] {
            let mut link = Link::configured(LinkConfig {
                version,
                ..LinkConfig::default()
            });
            let mut m = mems();
            quiet(&link);
            let mut a = side(&mut link, 0, &mut m[0]);
            let mut b = side(&mut link, 1, &mut m[1]);
            quiet(&link);
            b.post_rx(&mut m[1], 2);
            a.send(&mut m[0], 1, 2, b"hello");
            link.pump_sides(0, &mut m, ALL).unwrap();
            quiet(&link);
            link.dev[1].fail();
            quiet(&link);
            link.side_changed(0, true);
            quiet(&link);
        }
    }

    /// Whether each ring access recorded in `m` lay inside the rings of
    /// the queues `drivers` set up.
    fn ring_accesses_inside(m: &Ram, drivers: [&Driver; 2]) -> bool {
        let n = 16;
        m.ring_accesses.borrow().iter().all(|&(addr, len)| {
            drivers.iter().any(|d| {
                [(d.desc, 16 * n), (d.avail, 6 + 2 * n), (d.used, 6 + 8 * n)]
                    .iter()
                    .any(|&(at, size)| addr >= at && addr + len <= at + size)
            })
        })
    }

    /// Through every slot of every ring, the indices wrapping round
    /// more than once, the device's ring accesses stay inside the rings.
    #[test]
    fn ring_accesses_stay_inside_the_rings_as_indices_wrap() {
        let (mut link, mut m, mut a, mut b) = pair();
        b.post_rx(&mut m[1], 16);
        for round in 0..5u8 {
            for i in 0..11u8 {
                a.send(&mut m[0], 1, 2, &[round, i]);
            }
            assert_eq!(link.pump_sides(0, &mut m, ALL).unwrap().messages, 11);
            assert_eq!(b.received(&m[1]).len(), 11);
            assert_eq!(a.tx.take_used(&m[0]).len(), 11);
            b.post_rx(&mut m[1], 11);
        }
        assert!(ring_accesses_inside(&m[0], [&a.rx, &a.tx]));
        assert!(ring_accesses_inside(&m[1], [&b.rx, &b.tx]));
        assert!(m[1].ring_accesses.borrow().len() > 100);
    }

    /// Whatever a driver writes in its rings and buffers, the device's
    /// ring accesses, which nothing checks at EL2 but the queue's own
    /// arithmetic (see `RingAddr`), stay inside the rings made ready.
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
            let version = [1 + (round & 1) as u32, 1 + ((round >> 1) & 1) as u32];
            let (mut link, mut m, a, b) = pair_of(LinkConfig {
                version,
                ..LinkConfig::default()
            });
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
                let budget = 1 + (rand() % 4) as u32;
                if let Err(f) = link.pump_sides(from, &mut m, budget) {
                    link.dev[f.side].fail();
                }
            }
            for (mem, s) in m.iter().zip([&a, &b]) {
                assert!(ring_accesses_inside(mem, [&s.rx, &s.tx]), "round {round}");
            }
        }
    }
}
