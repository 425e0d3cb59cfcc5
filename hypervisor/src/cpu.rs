//! Per-CPU state: each physical CPU's stack, the vCPU it runs, the flags
//! by which other CPUs ask it to look at its partition's lifecycle, and its
//! counters.

use crate::arch;
use crate::arch::gic::SGI_KICK;
use crate::partition::Partition;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

pub const MAX_CPUS: usize = 8;
/// The kick's requests.
pub const STOP: u32 = 1;
pub const RESUME: u32 = 2;
const STACK_SIZE: usize = 64 << 10;

/// Whole cache lines each: no CPU's stores to its own state disturb
/// another's, and finding this CPU's is a shift. The first fields are read
/// by the interrupt vector's direct path (`entry.S`), at the offsets
/// checked below.
#[repr(C, align(64))]
pub struct PerCpu {
    /// List-register values for PPIs 27 to 30 (`irq::VTIMER` and
    /// `irq::PTIMER` only; 28 and 29 stay 0) of the vCPU running here, as
    /// its vGIC configures them (`irq::publish_direct`); 0 sends that
    /// interrupt through the whole handler.
    direct: [AtomicU64; 4],
    /// GICv2: the page of the running partition's GICD_SGIR in
    /// HPFAR_EL2's form (IPA >> 12 << 4), whose stores the synchronous
    /// vector sends to `vcpu::guest_sgir`; `NO_PAGE` otherwise.
    sgir_hpfar: AtomicU64,
    /// Virtual interrupts injected and guest traps handled here since the
    /// partition's last start; only this CPU writes them.
    pub injected: AtomicU64,
    pub traps: AtomicU64,
    /// What the GIC's SGI register takes to reach this CPU
    /// (`Gic::sgi_target`), set at boot.
    sgi_target: AtomicU64,
    /// The ICC_SGI1R_EL1 (GICv2: GICD_SGIR) value, SGI number aside, by
    /// which the vCPU running here names itself alone (`NO_SGI` if it
    /// cannot), and the
    /// list-register value of each SGI it may send itself (0 while
    /// disabled), published as `direct` is: the synchronous vector loads
    /// such an SGI itself when nothing else waits.
    sgi_self: AtomicU64,
    sgi: [AtomicU64; 16],
    /// What the kick SGI asks of this CPU, one bit each (one load on
    /// every kick when there is nothing): `STOP`, another CPU asked it to
    /// leave its vCPU (the partition is stopping; a hint: the lifecycle,
    /// under its lock, decides); `RESUME`, an rpmsg pump stopped at its
    /// budget here and the kick this CPU sent itself continues it
    /// (`rpmsg::resume`).
    requests: AtomicU32,
    /// (partition + 1) << 8 | vcpu while a vCPU runs here; 0 when parked.
    running: AtomicUsize,
    /// That partition, for a trap's handler (`guest`): one load where its
    /// index would be checked against the partitions and scaled.
    partition: AtomicPtr<Partition>,
    /// The running vCPU has new pending virtual interrupts to load into
    /// list registers before it resumes.
    flush: AtomicBool,
    /// A list-register value another CPU posted for the vCPU running here
    /// (an SGI to it with nothing else waiting, `irq::post_sgi`), loaded
    /// by the kick that follows; 0 when empty.
    posted: AtomicU64,
    /// The running partition's virtio ports (bit i: its `virtio[i]`) whose
    /// messages this CPU holds (`rpmsg::hold`); only this CPU touches it.
    held: AtomicU32,
}

/// The layout `entry.S` relies on (its `.equ`s come from these).
pub const DIRECT_FIRST_PPI: u32 = 27;
pub const OFFSET_INJECTED: usize = core::mem::offset_of!(PerCpu, injected);
pub const OFFSET_TRAPS: usize = core::mem::offset_of!(PerCpu, traps);
pub const OFFSET_SGIR_HPFAR: usize = core::mem::offset_of!(PerCpu, sgir_hpfar);
pub const OFFSET_SGI_SELF: usize = core::mem::offset_of!(PerCpu, sgi_self);
pub const OFFSET_SGI: usize = core::mem::offset_of!(PerCpu, sgi);
pub const OFFSET_REQUESTS: usize = core::mem::offset_of!(PerCpu, requests);
pub const OFFSET_FLUSH: usize = core::mem::offset_of!(PerCpu, flush);
pub const OFFSET_POSTED: usize = core::mem::offset_of!(PerCpu, posted);
/// No ICC_SGI1R_EL1 value names only this vCPU.
pub const NO_SGI: u64 = u64::MAX;
/// No trap's page: bits HPFAR_EL2 never sets.
pub const NO_PAGE: u64 = u64::MAX;
pub const SIZE_SHIFT: u32 = core::mem::size_of::<PerCpu>().trailing_zeros();
const _: () = assert!(core::mem::offset_of!(PerCpu, direct) == 0);
const _: () = assert!(core::mem::size_of::<PerCpu>() == 1 << SIZE_SHIFT);
const _: () = assert!(MAX_CPUS.is_power_of_two());

#[no_mangle]
static PER_CPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        direct: [const { AtomicU64::new(0) }; 4],
        sgir_hpfar: AtomicU64::new(NO_PAGE),
        requests: AtomicU32::new(0),
        running: AtomicUsize::new(0),
        partition: AtomicPtr::new(core::ptr::null_mut()),
        flush: AtomicBool::new(false),
        posted: AtomicU64::new(0),
        held: AtomicU32::new(0),
        traps: AtomicU64::new(0),
        sgi_target: AtomicU64::new(0),
        sgi_self: AtomicU64::new(NO_SGI),
        sgi: [const { AtomicU64::new(0) }; 16],
        injected: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Stack tops, read by `secondary_entry` before a stack exists.
#[no_mangle]
static STACK_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

pub fn get(cpu: usize) -> &'static PerCpu {
    &PER_CPU[cpu]
}

/// Allocates CPU `cpu`'s stack (the boot CPU's is in BSS and given here).
pub fn prepare(cpu: usize, stack_top: Option<u64>) {
    let top = stack_top.unwrap_or_else(|| {
        // Left unwritten: zeroing 64 KiB per CPU cost about 25,000
        // instructions each at boot.
        let stack = alloc::boxed::Box::<[u8]>::new_uninit_slice(STACK_SIZE);
        alloc::boxed::Box::leak(stack).as_ptr() as u64 + STACK_SIZE as u64
    });
    STACK_TOPS[cpu].store(top, Ordering::Release);
}

pub fn stack_top(cpu: usize) -> u64 {
    STACK_TOPS[cpu].load(Ordering::Acquire)
}

impl PerCpu {
    /// Takes the kick's requests (`STOP`, `RESUME`).
    pub fn take_requests(&self) -> u32 {
        match self.requests.load(Ordering::Acquire) {
            0 => 0,
            _ => self.requests.swap(0, Ordering::Acquire),
        }
    }

    /// A counter only this CPU writes: a plain load and store, no atomic
    /// read-modify-write on the trap path.
    pub fn count(c: &AtomicU64) {
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub fn request_flush(&self) {
        self.flush.store(true, Ordering::Relaxed);
    }

    /// Takes the flush request: a plain load when there is none (every
    /// trap asks), the atomic swap only when there is.
    pub fn take_flush(&self) -> bool {
        self.flush.load(Ordering::Relaxed) && self.flush.swap(false, Ordering::Relaxed)
    }

    /// Posts list-register value `lr` (nonzero) for this CPU's vCPU;
    /// false while an earlier one waits.
    pub fn post(&self, lr: u64) -> bool {
        self.posted
            .compare_exchange(0, lr, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the posted list-register value (0 if none). Called on this
    /// CPU alone (as the kick's direct path in `entry.S` takes it): a
    /// poster writes only an empty slot (`post`), so nothing can come
    /// between the load and the store that empties it.
    pub fn take_posted(&self) -> u64 {
        let v = self.posted.load(Ordering::Acquire);
        if v != 0 {
            self.posted.store(0, Ordering::Relaxed);
        }
        v
    }

    /// Notes that this CPU holds the messages of its partition's port
    /// `index` (below 32); true if it did not already.
    pub fn hold(&self, index: usize) -> bool {
        let was = self.held.load(Ordering::Relaxed);
        self.held.store(was | 1 << index, Ordering::Relaxed);
        was & 1 << index == 0
    }

    /// The ports whose messages this CPU held, holding none from now on.
    pub fn take_held(&self) -> u32 {
        let held = self.held.load(Ordering::Relaxed);
        self.held.store(0, Ordering::Relaxed);
        held
    }

    pub fn request_resume(&self) {
        self.requests.fetch_or(RESUME, Ordering::Relaxed);
    }

    pub fn running(&self) -> Option<(usize, usize)> {
        match self.running.load(Ordering::Acquire) {
            0 => None,
            v => Some(((v >> 8) - 1, v & 0xff)),
        }
    }

    /// The partition and vCPU running here, for a trap's handler.
    pub fn guest(&self) -> Option<(&'static Partition, usize)> {
        let v = self.running.load(Ordering::Acquire);
        let p = self.partition.load(Ordering::Relaxed);
        // SAFETY: `set_running` stores only `&'static Partition`s, and
        // stores it before `running` (Release), read above (Acquire).
        (v != 0).then(|| (unsafe { &*p }, v & 0xff))
    }

    /// Records the vCPU this CPU runs. Its direct list-register values are
    /// published after an entry (`irq::publish_direct`) and forgotten here
    /// at a leave (a publisher that saw the vCPU still running may store
    /// them again, harmlessly: nothing reads them before the next entry
    /// publishes its own).
    pub fn set_running(&self, r: Option<(&'static Partition, usize)>) {
        if let Some((p, _)) = r {
            self.partition
                .store(core::ptr::from_ref(p).cast_mut(), Ordering::Relaxed);
        }
        self.running.store(
            r.map_or(0, |(p, v)| ((p.index + 1) << 8) | v),
            Ordering::Release,
        );
        if r.is_none() {
            for d in &self.direct {
                d.store(0, Ordering::Relaxed);
            }
            self.sgir_hpfar.store(NO_PAGE, Ordering::Relaxed);
            self.sgi_self.store(NO_SGI, Ordering::Relaxed);
        }
    }

    /// GICv2: where the running partition's GICD_SGIR is (None on
    /// GICv3), for the synchronous vector.
    pub fn set_sgir(&self, ipa: Option<u64>) {
        let page = ipa.map_or(NO_PAGE, |a| a >> 12 << 4);
        self.sgir_hpfar.store(page, Ordering::Relaxed);
    }

    /// How the vCPU running here names itself alone in ICC_SGI1R_EL1 or
    /// GICD_SGIR (None: the vector leaves its SGIs to the handler), and
    /// the list-register value of each SGI it sends itself.
    pub fn set_self_sgis(&self, me: Option<u64>, lrs: impl Fn(u32) -> u64) {
        for (intid, s) in (0..).zip(&self.sgi) {
            s.store(lrs(intid), Ordering::Relaxed);
        }
        self.sgi_self.store(me.unwrap_or(NO_SGI), Ordering::Relaxed);
    }

    /// Interrupts this CPU (see `kick`) through `gic`.
    pub fn kick(&self, gic: &arch::gic::Gic) {
        gic.send_sgi(self.sgi_target.load(Ordering::Relaxed), SGI_KICK);
    }

    /// The list-register value the direct path injects for `ppi` (27..=30)
    /// of the vCPU running here; 0 for the whole handler.
    pub fn set_direct(&self, ppi: u32, lr: u64) {
        self.direct[(ppi - DIRECT_FIRST_PPI) as usize].store(lr, Ordering::Relaxed);
    }
}

/// This CPU's state. The index is below MAX_CPUS (checked at boot); the
/// mask lets the compiler drop the bounds check on the trap path.
pub fn this() -> &'static PerCpu {
    &PER_CPU[arch::cpu_index() % MAX_CPUS]
}

/// The partition and vCPU this CPU runs.
pub fn current() -> Option<(usize, usize)> {
    this().running()
}

/// Interrupts CPU `cpu`, wherever it is: it looks at its lifecycle work
/// (when parked) or loads list registers (when running).
pub fn kick(cpu: usize) {
    get(cpu).kick(&crate::system().gic);
}

/// Records, at boot, how the GIC reaches each CPU.
pub fn set_sgi_targets(gic: &arch::gic::Gic, mpidrs: impl Iterator<Item = u64>) {
    for (i, mpidr) in mpidrs.enumerate().take(MAX_CPUS) {
        get(i)
            .sgi_target
            .store(gic.sgi_target(mpidr, i), Ordering::Relaxed);
    }
}

/// Asks CPU `cpu` to leave its vCPU.
pub fn ask_stop(cpu: usize) {
    get(cpu).requests.fetch_or(STOP, Ordering::Release);
    kick(cpu);
}
