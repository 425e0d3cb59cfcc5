//! The virtio rpmsg devices of the partitions: trapped register accesses
//! go to the link's transport state; a QueueNotify moves messages on the
//! notifying CPU and raises the peer's interrupt (an IPI reaches its CPU).

use crate::arch::TrapFrame;
use crate::console::guest_warn;
use crate::irq::Hw;
use crate::partition::Partition;
use crate::system;
use core::sync::atomic::Ordering;
use log::debug;
use partita_core::rpmsg::{Link, TX};
use partita_core::sdt::Range;
use partita_core::trap::MmioAccess;
use partita_core::virtio::{Effect, Fault, GuestMemory};

/// One side of a link, as a partition sees it.
pub struct VirtioPort {
    pub base: u64,
    pub spi: u32,
    pub link: usize,
    pub side: usize,
}

/// A partition's memory, reached through the EL2 identity map after every
/// range is checked against it.
struct PartitionMemory<'a> {
    ranges: &'a [Range],
}

impl GuestMemory for PartitionMemory<'_> {
    fn check(&self, addr: u64, len: u64) -> Result<(), Fault> {
        if partita_core::sdt::within(self.ranges, addr, len) {
            Ok(())
        } else {
            Err(Fault::OutsideMemory { addr, len })
        }
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        self.check(addr, buf.len() as u64)?;
        // SAFETY: checked to lie in the partition's memory, which the EL2
        // identity map covers as normal memory.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        self.check(addr, data.len() as u64)?;
        // SAFETY: as in `read`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }

    fn copy_from(
        &mut self,
        to: u64,
        src: &Self,
        from: u64,
        len: usize,
    ) -> Result<(), (usize, Fault)> {
        src.check(from, len as u64).map_err(|f| (0, f))?;
        self.check(to, len as u64).map_err(|f| (1, f))?;
        let (s, d) = (from as *const u8, to as *mut u8);
        // SAFETY: both ranges were checked to lie in their partitions'
        // memories, mapped at EL2 as normal memory. Two partitions never
        // overlap, but nothing stops a link joining a partition to itself:
        // then `copy`, which allows overlap (and is slower, copying
        // backwards when the destination lies above).
        unsafe {
            if from.abs_diff(to) >= len as u64 {
                core::ptr::copy_nonoverlapping(s, d, len)
            } else {
                core::ptr::copy(s, d, len)
            }
        };
        Ok(())
    }
}

fn memories(link: usize) -> [PartitionMemory<'static>; 2] {
    let sys = system();
    let d = sys.config.links[link].domains;
    [
        PartitionMemory {
            ranges: &sys.partitions[d[0]].memory,
        },
        PartitionMemory {
            ranges: &sys.partitions[d[1]].memory,
        },
    ]
}

fn partition_of(link: usize, side: usize) -> &'static Partition {
    let sys = system();
    &sys.partitions[sys.config.links[link].domains[side]]
}

fn raise(link: usize, side: usize) {
    let p = partition_of(link, side);
    if let Some(port) = p.virtio.iter().find(|v| v.link == link && v.side == side) {
        p.vgic.lock().raise(0, port.spi, &mut Hw { p });
    }
}

fn fail(link: usize, l: &mut Link, side: usize, f: Fault) {
    let p = partition_of(link, side);
    guest_warn!(
        p,
        "{}: rpmsg device of {}: {f}; it needs a reset",
        p.name,
        system().config.links[link].path
    );
    l.dev[side].fail();
    p.faults.fetch_add(1, Ordering::Relaxed);
    raise(link, side);
}

/// Moves what side `from` has queued; raises whichever interrupts the
/// drivers asked for.
fn pump(link: usize, l: &mut Link, from: usize) {
    let mut mem = memories(link);
    match l.pump(from, &mut mem) {
        Ok(moved) => {
            if moved.messages > 0 {
                let n = u64::from(moved.messages);
                partition_of(link, from)
                    .rpmsg_out
                    .fetch_add(n, Ordering::Relaxed);
                partition_of(link, 1 - from)
                    .rpmsg_in
                    .fetch_add(n, Ordering::Relaxed);
            }
            for side in (0..2).filter(|&s| moved.interrupt[s]) {
                raise(link, side);
            }
        }
        Err(f) => fail(link, l, f.side, f.fault),
    }
}

/// Side `side` of `link` went down or came up: the other side sees it in
/// its PEER_READY word and a configuration-change interrupt.
fn changed(link: usize, l: &mut Link, side: usize, reset: bool) {
    let peer = l.side_changed(side, reset);
    raise(link, peer);
}

/// `p` has stopped: each of its devices is reset under its link's lock,
/// so no peer's message moves into its memory while it is rewritten.
/// What the peers send meanwhile waits in their transmit queues until
/// its driver is ready again.
pub fn quiesce(p: &Partition) {
    for port in &p.virtio {
        changed(
            port.link,
            &mut system().links[port.link].lock(),
            port.side,
            true,
        );
    }
}

/// A trapped access to one of the partition's virtio-mmio windows; false
/// when the address is in none of them.
pub fn emulate(frame: &mut TrapFrame, p: &Partition, a: &MmioAccess) -> bool {
    let Some(port) = p
        .virtio
        .iter()
        .find(|v| a.ipa >= v.base && a.ipa - v.base < partita_core::sdt::VIRTIO_WINDOW)
    else {
        return false;
    };
    let off = a.ipa - port.base;
    let mut l = system().links[port.link].lock();
    if a.width != 4 {
        debug!(
            "{}: {}-byte access to virtio register {off:#x} ignored",
            p.name, a.width
        );
        if !a.write {
            frame.set_reg(a.reg, 0);
        }
        return true;
    }
    if !a.write {
        let v = l.read(port.side, off);
        frame.set_reg(a.reg, a.load_result(u64::from(v)));
        return true;
    }
    let v = a.store_value(frame.reg(a.reg)) as u32;
    let mem = &memories(port.link)[port.side];
    match l.dev[port.side].write(off, v, mem) {
        // Transmit: this side's messages move. Receive buffers posted: the
        // other side's waiting messages can move.
        Effect::Notify(q) => pump(
            port.link,
            &mut l,
            if usize::from(q) == TX {
                port.side
            } else {
                1 - port.side
            },
        ),
        // Messages that waited for this side's driver move now, without
        // waiting for its first notify.
        Effect::DriverOk => {
            changed(port.link, &mut l, port.side, false);
            pump(port.link, &mut l, 1 - port.side);
        }
        Effect::Reset => changed(port.link, &mut l, port.side, false),
        Effect::Invalid(f) => fail(port.link, &mut l, port.side, f),
        Effect::Refused => debug!("{}: virtio write {v:#x} to {off:#x} refused", p.name),
        Effect::None => {}
    }
    true
}
