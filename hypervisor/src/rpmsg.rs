//! The virtio rpmsg devices of the partitions: trapped register accesses
//! go to the link's transport state; a QueueNotify moves messages on the
//! notifying CPU and raises the peer's interrupt (an IPI reaches its CPU).
//!
//! Work done for a partition is bounded per trap: a pump lets any CPU
//! that waits for the link's lock in between two messages (see
//! `LinkLock`), so a peer touching its own registers waits about one
//! message's copy; one trap moves at most
//! `PER_TRAP` messages, and the rest continue on the same CPU once it has
//! been back in its guest (a kick it sends itself, see `resume`): none is
//! dropped or reordered, and none waits for its sender to notify again.
//!
//! Coalescing: when a side's messages reach a receiver still busy with
//! earlier ones (`Moved::busy`), what that side sends next is held: its
//! transmit queue asks for no notify, and its CPU moves the messages
//! together at its guest's next WFI (trapped while it holds any) or when
//! EL2's timer fires, the link's `partita,coalesce-us` later. All of it
//! happens on the sender's CPU, as its notifies would have.

use crate::arch::CallFrame;
use crate::arch::Yield;
use crate::console::guest_warn;
use crate::cpu;
use crate::irq::Hw;
use crate::partition::Partition;
use crate::{system, System};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use log::debug;
use partita_core::control::ControlError;
use partita_core::pagetable::PAGE_SIZE;
use partita_core::rpmsg::{Link, Moved, RX, TX};
use partita_core::sdt::{Range, RpmsgLink, VIRTIO_WINDOW};
use partita_core::trap::MmioAccess;
use partita_core::virtio::{
    Effect, Fault, GuestMemory, RingAddr, Segment, INTERRUPT_ACK, INTERRUPT_STATUS, QUEUE_MAX,
    QUEUE_NOTIFY,
};
use spin::mutex::{SpinMutex, SpinMutexGuard};
use spin::RelaxStrategy;

type Guard = SpinMutexGuard<'static, Link, Yield>;

/// Messages one trap moves at most; the rest continue after the CPU has
/// returned to its guest.
const PER_TRAP: u32 = 8;

/// How long a pump, between two messages, leaves the lock to a CPU that
/// waits for it before it takes it again (spin-loop hints): long enough
/// for a waiting CPU to see it free, short enough that a waiter that is
/// not running (under an emulator) costs little.
const YIELD_SPINS: u32 = 256;

/// A link's device state behind its lock, and how many CPUs are waiting
/// for it. A plain spin lock, not a ticket lock: a ticket lock makes a
/// CPU that takes it again wait for every waiter to run first, which
/// under QEMU's round-robin CPUs cost the rpmsg stream benchmark 12 times
/// its instructions; letting waiters in only between two messages of a
/// pump gives them their turn where it matters.
pub struct LinkLock {
    state: SpinMutex<Link, Yield>,
    waiting: AtomicU32,
    /// Each virtio-mmio side's registers as its partition reads them.
    regs: [Option<&'static Window>; 2],
}

impl LinkLock {
    /// `link`, whose virtio-mmio sides' partitions read their registers in
    /// `regs`.
    pub fn new(link: Link, regs: [Option<&'static Window>; 2]) -> Self {
        let l = LinkLock {
            state: SpinMutex::new(link),
            waiting: AtomicU32::new(0),
            regs,
        };
        l.publish(&l.state.lock());
        l
    }

    /// Writes both sides' registers where their partitions read them:
    /// after any change but the two of every message (`publish_status_of`);
    /// a side's own write changes its registers and, when it makes its
    /// driver ready or not, its peer's PEER_READY (`publish_side`).
    /// Under the lock, so what a driver reads is the state that lock last
    /// left.
    fn publish(&self, l: &Link) {
        self.publish_side(l, 0);
        self.publish_side(l, 1);
    }

    fn publish_side(&self, l: &Link, side: usize) {
        if let Some(w) = self.regs[side] {
            for off in Link::registers() {
                w.store(off, l.read(side, off));
            }
            crate::arch::clean_dcache(w.address(0), VIRTIO_WINDOW);
        }
    }

    /// The same for side `side`'s InterruptStatus alone, the one register
    /// that a message (its used buffers: either side's) or an acknowledge
    /// changes.
    /// The statuses a pump `changed`, and only those.
    #[inline(always)]
    fn publish_changed(&self, l: &Link, changed: [bool; 2]) {
        for side in (0..2).filter(|&s| changed[s]) {
            self.publish_status_of(l, side);
        }
    }

    fn publish_status_of(&self, l: &Link, side: usize) {
        if let Some(w) = self.regs[side] {
            w.store(INTERRUPT_STATUS, l.dev[side].interrupt_status);
            crate::arch::clean_dcache_line(w.address(INTERRUPT_STATUS));
        }
    }

    pub fn lock(&'static self) -> Guard {
        if let Some(g) = self.state.try_lock() {
            return g;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let g = self.state.lock();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        g
    }

    /// Messages side `side` has sent and received through this link since
    /// boot (`Link::counts`): counted by the pump under the lock, where a
    /// counter per partition, which any CPU may add to, took an
    /// exclusive-monitor loop each and cost every message 16 instructions.
    pub fn counts(&self, side: usize) -> [u64; 2] {
        self.state.lock().counts(side)
    }

    /// A CPU waits for the lock.
    fn waited_for(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) != 0
    }

    /// Releases `g` and takes the lock again, after a CPU that was waiting
    /// for it (if any) has had it.
    fn yield_to_waiters(&'static self, g: Guard) -> Guard {
        drop(g);
        if self.waiting.load(Ordering::Relaxed) != 0 {
            for _ in 0..YIELD_SPINS {
                if self.state.is_locked() || self.waiting.load(Ordering::Relaxed) == 0 {
                    break;
                }
                Yield::relax();
            }
        }
        self.lock()
    }
}

/// A virtio-mmio window's registers as its partition reads them (see
/// `RegisterPage`), each at its offset.
#[repr(transparent)]
pub struct Window([AtomicU32; (VIRTIO_WINDOW / 4) as usize]);

impl Window {
    /// Where the register at `off` is, for cache maintenance.
    fn address(&self, off: u64) -> u64 {
        &self.0[(off / 4) as usize] as *const AtomicU32 as u64
    }

    fn store(&self, off: u64, v: u32) {
        self.0[(off / 4) as usize].store(v, Ordering::Relaxed);
    }
}

/// A page of a partition's stage 2 that holds virtio-mmio windows, mapped
/// read-only: a register read is a load rather than a trap (a driver
/// reads InterruptStatus for every interrupt). Writes still trap, and the
/// hypervisor writes each register's value here as it changes. A driver
/// maps its device as Device memory, which its loads take from memory
/// itself, so each change is cleaned from EL2's cache.
#[repr(C, align(4096))]
pub struct RegisterPage([Window; (PAGE_SIZE / VIRTIO_WINDOW) as usize]);

impl RegisterPage {
    /// A page of zeroes, never freed: its partition's stage 2 maps it.
    pub fn new() -> &'static RegisterPage {
        // SAFETY: all zeroes is a valid `AtomicU32`, so a valid page.
        alloc::boxed::Box::leak(unsafe {
            alloc::boxed::Box::<RegisterPage>::new_zeroed().assume_init()
        })
    }

    /// The window at `base`, in this page.
    pub fn window(&self, base: u64) -> &Window {
        &self.0[((base % PAGE_SIZE) / VIRTIO_WINDOW) as usize]
    }
}

/// One side of a link, as a partition sees it.
pub struct VirtioPort {
    pub base: u64,
    pub spi: u32,
    pub link: usize,
    pub side: usize,
    /// The other side's partition and interrupt, which every message
    /// this side sends reaches.
    pub peer: usize,
    pub peer_spi: u32,
    /// A virtio-mmio window at `base`; otherwise the partition's
    /// remoteproc virtio device, driven by control calls, whose interrupt
    /// `spi` is its control interrupt.
    pub mmio: bool,
    /// Where the partition reads the window's registers (virtio-mmio).
    pub regs: Option<&'static Window>,
    /// Messages from side `i` (this one or its peer) were left at a
    /// trap's budget by one of this partition's CPUs, which has kicked
    /// itself to continue.
    pub resume: [AtomicBool; 2],
    /// Its place among its partition's ports (`Partition::virtio`).
    pub index: usize,
    /// The link's counts (`LinkLock::counts`) at its partition's last
    /// start, which the partition's own are counted from.
    pub counted_from: [AtomicU64; 2],
    /// How long its messages may be held, in counter ticks; 0: never.
    pub hold: u64,
}

impl VirtioPort {
    /// Side `side` of `link`, one of the configuration's, the partition's
    /// port `index`.
    pub fn new(l: &RpmsgLink, link: usize, side: usize, index: usize) -> Self {
        // A CPU notes the ports it holds in a word.
        let hold = match index < 32 {
            true => u64::from(l.coalesce_us) * crate::arch::counter_frequency() / 1_000_000,
            false => 0,
        };
        VirtioPort {
            index,
            counted_from: [AtomicU64::new(0), AtomicU64::new(0)],
            hold,
            base: l.windows[side],
            spi: l.spis[side],
            link,
            side,
            peer: l.domains[1 - side],
            peer_spi: l.spis[1 - side],
            mmio: l.mmio(side),
            regs: None,
            resume: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }
}

/// A partition's memory, reached through the EL2 identity map after every
/// buffer is checked against it (its rings were, once, when their queue
/// was made ready).
struct PartitionMemory<'a> {
    /// Its first range, where its buffers nearly always lie: checked
    /// inline, in registers, before the rest (a check of each buffer of
    /// every message).
    first: Range,
    ranges: &'a [Range],
}

impl<'a> PartitionMemory<'a> {
    fn of(p: &'a Partition) -> Self {
        PartitionMemory {
            first: p.memory[0],
            ranges: &p.memory,
        }
    }
}

impl GuestMemory for PartitionMemory<'_> {
    #[inline(always)]
    fn check(&self, addr: u64, len: u64) -> Result<(), Fault> {
        if self.first.holds(addr, len) || partita_core::sdt::within(self.ranges, addr, len) {
            Ok(())
        } else {
            Err(Fault::OutsideMemory { addr, len })
        }
    }

    // A `Segment` is made only by a queue, which checked it against this
    // memory (`check`); the EL2 identity map covers that as normal memory
    // for the system's life.

    fn read(&self, s: Segment, buf: &mut [u8]) {
        let n = buf.len().min(s.len() as usize);
        // SAFETY: within `s` (a `Segment`).
        unsafe { core::ptr::copy_nonoverlapping(s.addr() as *const u8, buf.as_mut_ptr(), n) };
    }

    /// Two doubleword loads where the 16 bytes are aligned (an rpmsg
    /// header nearly always is), not a call to `memcpy`.
    #[inline(always)]
    fn read_pair(&self, s: Segment) -> [u64; 2] {
        if s.len() < 16 {
            let mut b = [0; 16];
            self.read(s, &mut b);
            return partita_core::virtio::pair_from_le(&b);
        }
        let p = s.addr() as *const u64;
        // SAFETY: 16 bytes within `s` (a `Segment`); aligned, or read
        // unaligned.
        unsafe {
            if s.addr().is_multiple_of(8) {
                [p.read_volatile(), p.add(1).read_volatile()]
            } else {
                [p.read_unaligned(), p.add(1).read_unaligned()]
            }
        }
    }

    // A `RingAddr` is made only by a ready queue, inside rings that
    // `Queue::validate` found aligned in its partition's memory, which the
    // EL2 identity map covers as normal memory for the system's life.

    #[inline(always)]
    fn ring_u16(&self, a: RingAddr) -> u16 {
        // SAFETY: a ring field (`RingAddr`), 2-aligned.
        unsafe { core::ptr::read_volatile(a.get() as *const u16) }
    }

    #[inline(always)]
    fn set_ring_u16(&mut self, a: RingAddr, v: u16) {
        // SAFETY: as in `ring_u16`.
        unsafe { core::ptr::write_volatile(a.get() as *mut u16, v) }
    }

    #[inline(always)]
    fn descriptor(&self, a: RingAddr) -> [u64; 2] {
        let p = a.get() as *const u64;
        // SAFETY: a descriptor (`RingAddr`), 16-aligned.
        unsafe { [p.read_volatile(), p.add(1).read_volatile()] }
    }

    /// Two word stores: the used ring is 4-aligned.
    #[inline(always)]
    fn set_used(&mut self, a: RingAddr, id: u32, len: u32) {
        let p = a.get() as *mut u32;
        // SAFETY: a used entry (`RingAddr`), 4-aligned.
        unsafe {
            p.write_volatile(id);
            p.add(1).write_volatile(len);
        }
    }

    #[inline(always)]
    /// `_src` only says whose memory `from` is: the identity map reaches
    /// both.
    fn copy_from(&mut self, to: Segment, _src: &Self, from: Segment) {
        let len = to.len().min(from.len()) as usize;
        let (s, d) = (from.addr() as *const u8, to.addr() as *mut u8);
        // SAFETY: within two `Segment`s, each in its partition's memory,
        // mapped at EL2 as normal memory. Two partitions never overlap,
        // but nothing stops a link joining a partition to itself: then
        // `copy`, which allows overlap (and is slower, copying backwards
        // when the destination lies above).
        unsafe {
            if from.addr().abs_diff(to.addr()) >= len as u64 {
                crate::arch::copy_bulk(d, s, len)
            } else {
                core::ptr::copy(s, d, len)
            }
        };
    }
}

/// The partitions on the two sides of `link`, in side order.
fn ends(link: usize) -> [&'static Partition; 2] {
    let sys = system();
    let d = sys.config.links[link].domains;
    [&sys.partitions[d[0]], &sys.partitions[d[1]]]
}

/// The same, where partition `p` is known to be `port`'s side: only its
/// peer is looked up, in `sys`.
fn ends_from(
    sys: &'static System,
    p: &'static Partition,
    port: &VirtioPort,
) -> [&'static Partition; 2] {
    let peer = &sys.partitions[port.peer];
    match port.side {
        0 => [p, peer],
        _ => [peer, p],
    }
}

fn partition_of(link: usize, side: usize) -> &'static Partition {
    let sys = system();
    &sys.partitions[sys.config.links[link].domains[side]]
}

fn raise(link: usize, side: usize) {
    let p = partition_of(link, side);
    if let Some(port) = p.virtio.iter().find(|v| v.link == link && v.side == side) {
        raise_spi(system(), p, port.spi);
    }
}

/// Raises `p`'s interrupt `spi`, one of its links' (posted, when that
/// finds its vCPU running on another CPU).
fn raise_spi(sys: &System, p: &Partition, spi: u32) {
    let mut g = p.vgic.lock();
    if !crate::irq::post_spi(&sys.gic, p, &mut g, spi) {
        g.raise(0, spi, &mut Hw { p });
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
    system().links[link].publish(l);
    p.faults.fetch_add(1, Ordering::Relaxed);
    raise(link, side);
}

/// Moves what side `from` has queued, one message per hold of the link's
/// lock (`l` holds it for the first), at most `PER_TRAP` of them; if more
/// wait, `port` (the side this CPU's partition trapped on) notes them and
/// the CPU kicks itself to go on after it has been back in its guest.
/// Raises whichever interrupts the drivers asked for. `lock` is the
/// link's (`port.link`) and `ends` its partitions (`ends`), which the
/// callers have at hand. True if messages reached a receiver busy with
/// earlier ones (`Moved::busy`): the sender's next ones may be held.
fn pump(
    sys: &'static System,
    lock: &'static LinkLock,
    mut l: Guard,
    from: usize,
    port: &VirtioPort,
    ends: [&'static Partition; 2],
) -> bool {
    let link = port.link;
    // The sender's and the receiver's, apart: two registers, where the
    // pair would be indexed by `from` again at each use.
    let (sender, receiver) = if from == 0 {
        (ends[0], ends[1])
    } else {
        (ends[1], ends[0])
    };
    let mut sm = PartitionMemory::of(sender);
    let mut dm = PartitionMemory::of(receiver);
    // One message, or none, is the common case: the loop for more is
    // kept out of line, where what it keeps across messages costs nothing
    // here.
    let mut total = match l.pump(from, &mut sm, &mut dm, 1) {
        Ok(m) => m,
        Err(f) => {
            fail(link, &mut l, f.side, f.fault);
            Moved::default()
        }
    };
    if total.more {
        let (g, more) = pump_more(lock, l, from, port, (sender, receiver), total.status);
        l = g;
        total.messages += more.messages;
        total.interrupt[0] |= more.interrupt[0];
        total.interrupt[1] |= more.interrupt[1];
        total.busy = more.busy;
    } else {
        // Only a status that changed: a cause set for an interrupt its
        // driver has not yet acknowledged is not written again.
        lock.publish_changed(&l, total.status);
    }
    drop(l);
    for side in (0..2).filter(|&s| total.interrupt[s]) {
        let spi = if side == port.side {
            port.spi
        } else {
            port.peer_spi
        };
        raise_spi(sys, if side == from { sender } else { receiver }, spi);
    }
    total.busy
}

/// The rest of `pump` after its first message, whose changes of the
/// statuses (`status`) are not yet published: what it moved.
#[inline(never)]
fn pump_more(
    lock: &'static LinkLock,
    mut l: Guard,
    from: usize,
    port: &VirtioPort,
    (sender, receiver): (&Partition, &Partition),
    status: [bool; 2],
) -> (Guard, Moved) {
    let mut total = Moved::default();
    let mut sm = PartitionMemory::of(sender);
    let mut dm = PartitionMemory::of(receiver);
    // Statuses changed and not yet published: the first message's, then
    // each one's (only the first of a run of messages changes one).
    let publish = |l: &Guard, changed: &mut [bool; 2]| {
        lock.publish_changed(l, core::mem::take(changed));
    };
    let mut changed = status;
    // Messages moved or dropped, the first one's included.
    let mut done = 1;
    while done < PER_TRAP {
        // Let a waiting peer in between two messages, with the registers
        // as the last one left them.
        publish(&l, &mut changed);
        l = lock.yield_to_waiters(l);
        // As many as the budget leaves, unless a CPU comes to wait.
        match l.pump_unless(from, &mut sm, &mut dm, PER_TRAP - done, || {
            lock.waited_for()
        }) {
            Ok(m) => {
                done += m.messages + m.dropped_ns;
                total.messages += m.messages;
                total.interrupt[0] |= m.interrupt[0];
                total.interrupt[1] |= m.interrupt[1];
                total.busy = m.busy;
                changed = m.status;
                if !m.more {
                    publish(&l, &mut changed);
                    return (l, total);
                }
            }
            Err(f) => {
                fail(port.link, &mut l, f.side, f.fault);
                return (l, total);
            }
        }
    }
    publish(&l, &mut changed);
    port.resume[from].store(true, Ordering::Relaxed);
    let me = crate::arch::cpu_index();
    cpu::get(me).request_resume();
    cpu::kick(me);
    (l, total)
}

/// After a pump of the messages `p` sent on `port` that reached a busy
/// receiver: this CPU holds what `p` sends next there, until
/// its guest's WFI or its timer (`release`). Nothing for a link that does
/// not coalesce.
#[inline(never)]
fn hold(lock: &'static LinkLock, p: &Partition, port: &VirtioPort) {
    if port.hold == 0 {
        return;
    }
    lock.lock()
        .hold(port.side, &mut PartitionMemory::of(p), true);
    if cpu::this().hold(port.index) {
        crate::arch::arm_hold_timer(port.hold);
        crate::arch::trap_wfi(true);
    }
}

/// What ends a hold (`release`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// EL2's timer: the hold goes on where more came and the receiver is
    /// still busy.
    Timer,
    /// The guest's WFI or CPU_SUSPEND: every hold ends; what a pump
    /// leaves at its budget continues at the kick the CPU sends itself.
    Sleep,
    /// The vCPU leaves its CPU: every hold ends and its queues are
    /// drained here, since a parked CPU resumes no pump.
    Leave,
}

/// The messages this CPU holds for `p` move, as `why` says. A hold that
/// ends asks each queue for notifies again and looks at it once more,
/// for what its driver queued before it saw that.
pub fn release(p: &Partition, why: Release) {
    let held = cpu::this().take_held();
    crate::arch::trap_wfi(false);
    crate::arch::disarm_hold_timer();
    if held == 0 {
        return;
    }
    let sys = system();
    let p = &sys.partitions[p.index];
    // Only the first 32 ports are ever held (`VirtioPort::hold`).
    for port in p
        .virtio
        .iter()
        .filter(|v| v.index < 32 && held & (1 << v.index) != 0)
    {
        let lock = &sys.links[port.link];
        let ends = ends_from(sys, p, port);
        if why == Release::Timer && pump(sys, lock, lock.lock(), port.side, port, ends) {
            hold(lock, p, port);
            continue;
        }
        let mut l = lock.lock();
        l.hold(port.side, &mut PartitionMemory::of(p), false);
        // The flag's store before the index's load; the driver stores its
        // index before it loads the flag.
        core::sync::atomic::fence(Ordering::SeqCst);
        pump(sys, lock, l, port.side, port, ends);
        // At most a queue's worth was queued without a notify.
        let mut turns = u32::from(QUEUE_MAX).div_ceil(PER_TRAP);
        while why == Release::Leave
            && turns > 0
            && port.resume[port.side].swap(false, Ordering::Relaxed)
        {
            pump(sys, lock, lock.lock(), port.side, port, ends);
            turns -= 1;
        }
    }
}

/// Continues the pumps this CPU left at their budget: its kick arrived,
/// after its guest ran again.
pub fn resume() {
    let Some((p, _)) = cpu::current() else {
        return;
    };
    for port in &system().partitions[p].virtio {
        for from in 0..2 {
            if port.resume[from].load(Ordering::Relaxed)
                && port.resume[from].swap(false, Ordering::Relaxed)
            {
                let lock = &system().links[port.link];
                pump(system(), lock, lock.lock(), from, port, ends(port.link));
            }
        }
    }
}

/// Side `side` of `link` went down or came up: the other side sees it in
/// its PEER_READY word and a configuration-change interrupt.
fn changed(link: usize, l: &mut Link, side: usize, reset: bool) {
    let peer = l.side_changed(side, reset);
    system().links[link].publish(l);
    if let Some(peer) = peer {
        raise(link, peer);
    }
}

/// `p` has stopped: each of its devices is reset under its link's lock,
/// so no peer's message moves into its memory while it is rewritten.
/// What the peers send meanwhile waits in their transmit queues until
/// its driver is ready again.
pub fn quiesce(p: &Partition) {
    for port in &p.virtio {
        // A pump its CPU left at a budget has nothing left to move: its
        // own messages go with the reset, its peer's wait for its driver.
        for r in &port.resume {
            r.store(false, Ordering::Relaxed);
        }
        changed(
            port.link,
            &mut system().links[port.link].lock(),
            port.side,
            true,
        );
    }
}

/// A trapped write to one of the partition's virtio-mmio windows; false
/// when the address is in none of them. Reads do not trap: a window's
/// page is a `RegisterPage`, which its partition reads as memory.
#[inline(always)]
pub fn emulate(frame: &mut CallFrame, p: &'static Partition, a: MmioAccess) -> bool {
    let Some(port) = p
        .virtio
        .iter()
        .find(|v| v.mmio && a.ipa >= v.base && a.ipa - v.base < VIRTIO_WINDOW)
    else {
        return false;
    };
    match (a.ipa - port.base, a.width()) {
        (QUEUE_NOTIFY, 4) => notify(frame, p, port, a),
        (INTERRUPT_ACK, 4) => acknowledge(frame, port, a),
        (off, _) => write(frame, p, port, off, a),
    }
    true
}

/// An InterruptACK, the second trap of every interrupt a driver takes:
/// nothing but its own status changes. Apart from `write`, whose frame
/// is larger.
#[inline(never)]
fn acknowledge(frame: &mut CallFrame, port: &VirtioPort, a: MmioAccess) {
    let lock = &system().links[port.link];
    let mut l = lock.lock();
    // A word's store: the register's low half, whatever its upper bits.
    l.dev[port.side].acknowledge(frame.access_reg(a.reg()) as u32);
    lock.publish_status_of(&l, port.side);
}

/// A QueueNotify, the trap of every message sent: its queue's messages
/// move (transmit: this side's; receive buffers posted: the other side's
/// waiting ones). A notify changes no register. Apart from `write`, with
/// the system looked up once for the whole pump.
#[inline(never)]
fn notify(frame: &mut CallFrame, p: &'static Partition, port: &VirtioPort, a: MmioAccess) {
    let sys = system();
    let lock = &sys.links[port.link];
    let l = lock.lock();
    // The queue's index is the low half of the word stored (the device's
    // `Notify`): the register's low half, whatever its upper bits.
    let from = match usize::from(frame.access_reg(a.reg()) as u16) {
        TX => port.side,
        _ => 1 - port.side,
    };
    if pump(sys, lock, l, from, port, ends_from(sys, p, port)) && from == port.side {
        hold(lock, p, port);
    }
}

/// The rest of `emulate`: any other register write; one of another width
/// than a word is ignored.
#[inline(never)]
fn write(frame: &mut CallFrame, p: &'static Partition, port: &VirtioPort, off: u64, a: MmioAccess) {
    if a.width() != 4 {
        debug!(
            "{}: {}-byte write to virtio register {off:#x} ignored",
            p.name,
            a.width()
        );
        return;
    }
    let lock = &system().links[port.link];
    let mut l = lock.lock();
    let v = a.store_value(frame.access_reg(a.reg())) as u32;
    // The device sees its own partition's memory (to check rings made
    // ready); the peer is looked up only for a pump.
    let mut own = PartitionMemory::of(p);
    let was_ok = l.dev[port.side].driver_ok();
    let effect = l.dev[port.side].write(off, v, &own);
    lock.publish_side(&l, port.side);
    // The peer reads whether this driver is ready in its PEER_READY.
    if l.dev[port.side].driver_ok() != was_ok {
        lock.publish_side(&l, 1 - port.side);
    }
    match effect {
        // A word's notify went to `notify`; `emulate` sends none here.
        Effect::Notify(_) => {}
        // Messages that waited for this side's driver move now, without
        // waiting for its first notify: the buffers it posted before
        // DRIVER_OK are enough (OpenAMP's driver notifies no sooner than
        // it has received).
        Effect::DriverOk => {
            changed(port.link, &mut l, port.side, false);
            pump_waiting(lock, l, p, port);
        }
        // The same when its receive queue becomes ready after DRIVER_OK.
        Effect::QueueReady(q) if usize::from(q) == RX && l.dev[port.side].driver_ok() => {
            pump_waiting(lock, l, p, port)
        }
        // A transmit queue starts out asking for notifies, whatever its
        // rings (not zeroed, perhaps) kept from an earlier hold.
        Effect::QueueReady(q) if usize::from(q) == TX => l.hold(port.side, &mut own, false),
        Effect::QueueReady(_) | Effect::None => {}
        Effect::Reset => changed(port.link, &mut l, port.side, false),
        Effect::Invalid(f) => fail(port.link, &mut l, port.side, f),
        Effect::Refused => debug!("{}: virtio write {v:#x} to {off:#x} refused", p.name),
    }
}

/// What the peer of `p`'s `port` has queued moves to `p`, whose driver
/// is now ready for it (`l` holds the link's `lock`).
fn pump_waiting(lock: &'static LinkLock, l: Guard, p: &'static Partition, port: &VirtioPort) {
    let sys = system();
    pump(sys, lock, l, 1 - port.side, port, ends_from(sys, p, port));
}

/// `p`'s side of the link it reaches through its remoteproc of partition
/// `target` (the control calls below are refused without one).
fn vdev_port(p: &Partition, target: usize) -> Result<&VirtioPort, ControlError> {
    p.virtio
        .iter()
        .find(|v| !v.mmio && system().config.links[v.link].domains[1 - v.side] == target)
        .ok_or(ControlError::BadLink)
}

/// VDEV_READY: `p`'s remoteproc virtio device for `target` is live on the
/// vrings its driver allocated; messages that waited for it move.
pub fn vdev_ready(
    p: &Partition,
    target: usize,
    rings: [u64; 2],
    size: u64,
    align: u64,
) -> Result<(), ControlError> {
    let port = vdev_port(p, target)?;
    let size = u16::try_from(size)
        .ok()
        .filter(|s| (1..=QUEUE_MAX).contains(s))
        .ok_or(ControlError::BadLink)?;
    let align = u32::try_from(align).map_err(|_| ControlError::BadLink)?;
    let lock = &system().links[port.link];
    let mut l = lock.lock();
    let was_live = l.dev[port.side].driver_ok();
    let ends = ends(port.link);
    let mut own = PartitionMemory::of(ends[port.side]);
    if let Err(f) = l.dev[port.side].attach(rings, size, align, &own) {
        // Its old rings are gone with the reset: the peer sees it down.
        if was_live {
            changed(port.link, &mut l, port.side, false);
        }
        return Err(match f {
            Fault::OutsideMemory { .. } => ControlError::BadAddress,
            _ => ControlError::BadLink,
        });
    }
    // As a transmit queue made ready over the window (see `write`).
    l.hold(port.side, &mut own, false);
    changed(port.link, &mut l, port.side, false);
    pump(system(), lock, l, 1 - port.side, port, ends);
    Ok(())
}

/// VDEV_RESET: the device goes down; once this returns no pump touches
/// its rings, which its driver may then free.
pub fn vdev_reset(p: &Partition, target: usize) -> Result<(), ControlError> {
    let port = vdev_port(p, target)?;
    changed(
        port.link,
        &mut system().links[port.link].lock(),
        port.side,
        true,
    );
    Ok(())
}

/// KICK: the driver added buffers to vring `vring`: messages to send
/// (its transmit ring), or room for the peer's (its receive ring).
pub fn kick(p: &Partition, target: usize, vring: u64) -> Result<(), ControlError> {
    let port = vdev_port(p, target)?;
    let from = match vring {
        v if v == TX as u64 => port.side,
        v if v == RX as u64 => 1 - port.side,
        _ => return Err(ControlError::BadLink),
    };
    let lock = &system().links[port.link];
    pump(system(), lock, lock.lock(), from, port, ends(port.link));
    Ok(())
}
