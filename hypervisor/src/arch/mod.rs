//! Everything that touches AArch64 system registers or runs as assembly.
//! The rest of the hypervisor calls these small functions and stays safe.

pub mod gic;
pub mod mmu;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::arch::{asm, global_asm};
use partita_core::trap::Syndrome;

/// `entry.S`, with the per-CPU layout its interrupt vector reads.
macro_rules! entry_asm {
    ($($prefix:literal)?) => {
        global_asm!(
            $($prefix,)?
            ".equ PERCPU_SHIFT, {shift}",
            ".equ PERCPU_INJECTED, {injected}",
            ".equ PERCPU_TRAPS, {traps}",
            ".equ PERCPU_SGIR_HPFAR, {sgir}",
            ".equ PERCPU_SGI_SELF, {sgi_self}",
            ".equ PERCPU_SGI, {sgi}",
            ".equ PERCPU_REQUESTS, {requests}",
            ".equ PERCPU_FLUSH, {flush}",
            ".equ PERCPU_POSTED, {posted}",
            ".equ GICD_SGIR, {gicd_sgir}",
            ".equ CONTROL_NULL, {null}",
            ".equ DIRECT_FIRST_PPI, {first}",
            ".equ MAX_CPUS, {cpus}",
            ".equ SGI_KICK, {kick}",
            include_str!("entry.S"),
            shift = const crate::cpu::SIZE_SHIFT,
            injected = const crate::cpu::OFFSET_INJECTED,
            traps = const crate::cpu::OFFSET_TRAPS,
            sgir = const crate::cpu::OFFSET_SGIR_HPFAR,
            sgi_self = const crate::cpu::OFFSET_SGI_SELF,
            sgi = const crate::cpu::OFFSET_SGI,
            requests = const crate::cpu::OFFSET_REQUESTS,
            flush = const crate::cpu::OFFSET_FLUSH,
            posted = const crate::cpu::OFFSET_POSTED,
            gicd_sgir = const partita_core::vgic::GICD_SGIR,
            null = const partita_core::control::NULL,
            first = const crate::cpu::DIRECT_FIRST_PPI,
            cpus = const crate::cpu::MAX_CPUS,
            kick = const crate::arch::gic::SGI_KICK,
        );
    };
}
#[cfg(not(feature = "el2-time"))]
entry_asm!();
#[cfg(feature = "el2-time")]
entry_asm!(".set PARTITA_EL2_TIME, 1");

/// What every exception vector saves (`entry.S`): the registers a Rust
/// handler may change, x0-x18 and x30 (AAPCS64 makes the compiler keep
/// x19-x29 for its caller), and the return state. It is the whole frame
/// of a call (HVC, SMC), whose handlers read x0-x3 and write x0-x7, and
/// of an interrupt, whose handlers touch no guest register: there, the
/// slots of x19-x29 hold nothing (only x19's is written, pairing with x18).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallFrame {
    pub x: [u64; 19],
    /// x19-x30: x30 always saved, x19 with x18, the others only when the
    /// frame is a `TrapFrame` or an access names them.
    rest: [u64; 12],
    pub elr: u64,
    pub spsr: u64,
    _pad: u64,
}

/// The guest's registers, all of them: the frame of a trap whose handler
/// may name any register (an emulated load or store, a system register
/// access) and of a fatal exception, and the state a vCPU starts from.
/// The same layout as `CallFrame`, every slot saved.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == core::mem::size_of::<CallFrame>());
const _: () =
    assert!(core::mem::offset_of!(TrapFrame, elr) == core::mem::offset_of!(CallFrame, elr));
const _: () = assert!(core::mem::offset_of!(CallFrame, rest) == 19 * 8);

impl CallFrame {
    /// Reads the register an emulated load or store names (`SRT`; 31 is
    /// the zero register). The vectors save it whichever it is: x0-x19
    /// and x30 are in every frame, x20-x29 are saved for an access that
    /// names one of them (`entry.S`, `sync_data_abort`).
    pub fn access_reg(&self, n: u8) -> u64 {
        let n = usize::from(n);
        match n {
            0..=18 => self.x[n],
            19..=30 => self.rest[n - 19],
            _ => 0,
        }
    }

    /// Writes that register; a load into the zero register is lost.
    pub fn set_access_reg(&mut self, n: u8, v: u64) {
        let n = usize::from(n);
        match n {
            0..=18 => self.x[n] = v,
            19..=30 => self.rest[n - 19] = v,
            _ => {}
        }
    }
}

impl core::ops::Deref for TrapFrame {
    type Target = CallFrame;
    fn deref(&self) -> &CallFrame {
        // SAFETY: the two are `repr(C)` structs of u64s with the same
        // layout (checked above); a TrapFrame is a CallFrame whose every
        // slot is saved.
        unsafe { &*(self as *const TrapFrame).cast::<CallFrame>() }
    }
}

impl core::ops::DerefMut for TrapFrame {
    fn deref_mut(&mut self) -> &mut CallFrame {
        // SAFETY: as in `deref`.
        unsafe { &mut *(self as *mut TrapFrame).cast::<CallFrame>() }
    }
}

impl TrapFrame {
    /// A vCPU at its first instruction: EL1h, interrupts masked, MMU off,
    /// x0 = `arg` (the Linux arm64 boot protocol).
    pub fn boot(entry: u64, arg: u64) -> Self {
        let mut f = TrapFrame::default();
        f.x[0] = arg;
        f.elr = entry;
        f.spsr = 0x3c5; // D, A, I, F masked; EL1h
        f
    }

    /// Reads register `n`, where 31 is the zero register.
    pub fn reg(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes register `n`; a write to the zero register is lost.
    pub fn set_reg(&mut self, n: u8, v: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = v;
        }
    }
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    fn secondary_entry();
    fn enter_guest(stack_top: u64, frame: *const TrapFrame) -> !;
    fn park_on(stack_top: u64) -> !;
}

/// The hypervisor image in memory, BSS included: `[start, end)`.
pub fn image_range() -> (u64, u64) {
    // SAFETY: linker symbols; only their addresses are taken.
    unsafe {
        (
            &__image_start as *const u8 as u64,
            &__image_end as *const u8 as u64,
        )
    }
}

pub fn secondary_entry_point() -> u64 {
    secondary_entry as *const () as u64
}

/// Loads `frame` and erets into the guest on this CPU.
pub fn run_guest(stack_top: u64, frame: &TrapFrame) -> ! {
    // SAFETY: the stack top is this CPU's own; the frame is copied before
    // the stack is reused.
    unsafe { enter_guest(stack_top, frame) }
}

/// Discards this CPU's stack and waits for work in `park_loop`.
pub fn park(stack_top: u64) -> ! {
    // SAFETY: nothing on the stack is used again.
    unsafe { park_on(stack_top) }
}

/// The syndrome of the exception being handled.
pub fn syndrome() -> Syndrome {
    syndrome_with(ESR_EL2.get())
}

/// The same, with the ESR the vectors read.
/// The syndrome of the last synchronous exception taken to EL2.
#[cfg(feature = "el2-time")]
pub fn esr() -> u64 {
    ESR_EL2.get()
}

pub fn syndrome_with(esr: u64) -> Syndrome {
    Syndrome {
        esr,
        far: FAR_EL2.get(),
        hpfar: HPFAR_EL2.get(),
    }
}

pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

pub fn set_cpu_index(i: usize) {
    TPIDR_EL2.set(i as u64);
}

pub fn cpu_index() -> usize {
    TPIDR_EL2.get() as usize
}

/// An SMC to the firmware following SMCCC: function ID and three arguments.
pub fn smc(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let mut r0 = u64::from(fid);
    // SAFETY: SMCCC calls clobber x0-x17 at most; the firmware owns nothing of ours.
    unsafe {
        asm!("smc #0",
            inout("x0") r0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
            out("x15") _, out("x16") _, out("x17") _, options(nostack));
    }
    r0
}

/// The physical counter (one tick per instruction under QEMU's icount).
pub fn counter() -> u64 {
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

/// What every lock of the hypervisor does while it waits: YIELD, as
/// Linux's `cpu_relax` does on arm64, where Rust's `spin_loop` emits ISB.
/// On the A53 both only pass time; an emulator that runs one CPU at a
/// time (QEMU under `-icount`) switches to another CPU at a YIELD, so the
/// holder runs, where at an ISB the waiter spins out its whole turn (up
/// to 25 million instructions, which made the rpmsg stream benchmark on
/// GICv2 4 times slower).
pub struct Yield;

impl spin::RelaxStrategy for Yield {
    #[inline(always)]
    fn relax() {
        // SAFETY: a hint; no memory, register or flag changes.
        unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// The hypervisor's locks.
pub type Mutex<T> = spin::mutex::Mutex<T, Yield>;
pub type MutexGuard<'a, T> = spin::mutex::MutexGuard<'a, T, Yield>;

pub fn wait_for_event() {
    aarch64_cpu::asm::wfe();
}

pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// Lets interrupts pending at EL2 be taken, then masks them again.
pub fn take_pending_interrupts() {
    // SAFETY: the EL2 vectors handle IRQs; the ISB makes the unmask take
    // effect before the mask.
    unsafe {
        asm!(
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            options(nomem, nostack)
        )
    };
}

/// CTR_EL0, which aarch64-cpu does not provide: cache line sizes.
fn dcache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reads an ID register.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans `[start, start + len)` to the point of coherency, so a CPU with
/// its MMU off sees what this one wrote through its cache.
pub fn clean_dcache(start: u64, len: u64) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    while a < start + len {
        // SAFETY: cache maintenance by address has no memory effects.
        unsafe { asm!("dc cvac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    barrier::dsb(barrier::SY);
}

/// Cleans the cache line holding `addr` to the point of coherency, for a
/// reader in the inner shareable domain that does not look in caches (a
/// partition reading a register page as Device memory).
pub fn clean_dcache_line(addr: u64) {
    // SAFETY: cache maintenance by address has no memory effects.
    unsafe { asm!("dc cvac, {}", in(reg) addr, options(nostack)) };
    barrier::dsb(barrier::ISH);
}

/// Cleans (and with `invalidate`, invalidates) `[start, start + len)` to
/// the point of coherency in every cache of the inner shareable domain:
/// what a partition's set/way maintenance becomes (by VA, so no other
/// partition's lines are touched).
pub fn maintain_dcache(start: u64, len: u64, invalidate: bool) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    while a < start + len {
        // SAFETY: cache maintenance by address has no memory effects.
        unsafe {
            if invalidate {
                asm!("dc civac, {}", in(reg) a, options(nostack))
            } else {
                asm!("dc cvac, {}", in(reg) a, options(nostack))
            }
        };
        a += line;
    }
    barrier::dsb(barrier::SY);
}

/// Copies `len` bytes from `src` to `dst`, 64 bytes per iteration of
/// load and store pairs, then the rest 16 bytes at a time and by halves: for
/// guest images, where the compiler's `memcpy` moved 8 bytes per
/// iteration (81,000 more instructions of QEMU's boot, which loads two
/// partitions of 116 KiB).
///
/// # Safety
///
/// As for `core::ptr::copy_nonoverlapping`; both ranges are normal memory
/// (the loads and stores may be unaligned).
pub unsafe fn copy_bulk(dst: *mut u8, src: *const u8, len: usize) {
    let bulk = len & !63;
    if bulk != 0 {
        // SAFETY: reads `src..src + bulk` and writes `dst..dst + bulk`,
        // within what the caller vouches for.
        unsafe {
            asm!(
                "2:",
                "ldp {a}, {b}, [{src}], #16",
                "ldp {c}, {d}, [{src}], #16",
                "stp {a}, {b}, [{dst}], #16",
                "stp {c}, {d}, [{dst}], #16",
                "ldp {a}, {b}, [{src}], #16",
                "ldp {c}, {d}, [{src}], #16",
                "stp {a}, {b}, [{dst}], #16",
                "stp {c}, {d}, [{dst}], #16",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                src = inout(reg) src => _,
                dst = inout(reg) dst => _,
                n = inout(reg) bulk => _,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                d = out(reg) _,
                options(nostack),
            )
        };
    }
    // The tail: 16 bytes at a time, then at most one access of each
    // smaller size (an rpmsg header and a short message are all tail,
    // which `memcpy` took a call and a setup for).
    let (mut src, mut dst) = (src.wrapping_add(bulk), dst.wrapping_add(bulk));
    let pairs = (len - bulk) & !15;
    if pairs != 0 {
        // SAFETY: within the same ranges, after the bulk.
        unsafe {
            asm!(
                "2:",
                "ldp {a}, {b}, [{src}], #16",
                "stp {a}, {b}, [{dst}], #16",
                "subs {n}, {n}, #16",
                "b.ne 2b",
                src = inout(reg) src,
                dst = inout(reg) dst,
                n = inout(reg) pairs => _,
                a = out(reg) _,
                b = out(reg) _,
                options(nostack),
            )
        };
    }
    let rest = len & 15;
    // SAFETY: the last `rest` bytes of the same ranges, one access of
    // each size at most; unaligned accesses are allowed in normal memory.
    unsafe {
        if rest & 8 != 0 {
            (dst as *mut u64).write_unaligned((src as *const u64).read_unaligned());
            (src, dst) = (src.add(8), dst.add(8));
        }
        if rest & 4 != 0 {
            (dst as *mut u32).write_unaligned((src as *const u32).read_unaligned());
            (src, dst) = (src.add(4), dst.add(4));
        }
        if rest & 2 != 0 {
            (dst as *mut u16).write_unaligned((src as *const u16).read_unaligned());
            (src, dst) = (src.add(2), dst.add(2));
        }
        if rest & 1 != 0 {
            *dst = *src;
        }
    }
}

/// Cleans and invalidates to the point of unification for instruction
/// fetches: after copying a guest image, which the guest fetches with its
/// MMU (and so its caches) off.
pub fn sync_guest_image(start: u64, len: u64) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    while a < start + len {
        // SAFETY: as above.
        unsafe { asm!("dc civac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    barrier::dsb(barrier::ISH);
    // SAFETY: invalidates all instruction caches; no memory effects.
    unsafe { asm!("ic ialluis", options(nostack)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// The EL2 and stage-2 state of one vCPU, programmed on its CPU before the
/// first entry. Everything else of EL1 keeps its architectural reset value
/// or what the guest writes: a pinned vCPU never shares its CPU.
pub struct VcpuSetup {
    pub vttbr: u64,
    pub vmpidr: u64,
}

pub fn configure_vcpu(v: &VcpuSetup) {
    // Guests see a MIDR of the real core and the MPIDR of their own numbering.
    // SAFETY: VPIDR_EL2 (absent from aarch64-cpu) only affects what EL1 reads.
    unsafe { asm!("msr vpidr_el2, {}", in(reg) MIDR_EL1.get(), options(nomem, nostack)) };
    VMPIDR_EL2.set(v.vmpidr);
    VTCR_EL2.write(
        VTCR_EL2::RES1::SET
            + VTCR_EL2::PS::PA_40B_1TB
            + VTCR_EL2::TG0::Granule4KB
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::SL0::Granule4KBLevel1
            + VTCR_EL2::T0SZ.val(64 - u64::from(partita_core::pagetable::INPUT_BITS)),
    );
    VTTBR_EL2.set(v.vttbr);
    HCR_EL2.write(
        HCR_EL2::RW::EL1IsAarch64
            + HCR_EL2::VM::Enable
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::FB::SET
            + HCR_EL2::BSU.val(1)
            // Set/way maintenance reaches caches other partitions share;
            // implementation-defined and auxiliary control registers reach
            // cluster-wide controls (the A53's L2CTLR, L2ACTLR): all trap.
            + HCR_EL2::TSW::SET
            + HCR_EL2::TIDCP::SET
            + HCR_EL2::TACR::SET,
    );
    // The guest owns the EL1 physical counter and timer as on bare metal,
    // and its virtual counter equals the physical one.
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCEN::SET + CNTHCTL_EL2::EL1PCTEN::SET);
    CNTVOFF_EL2.set(0);
    // MMU and caches off, as the boot protocol requires; RES1 bits set.
    SCTLR_EL1.set(0x30d0_0800);
    // No debug or PMU traps: their state belongs to the guest, and so do
    // every event counter (see `guest_cpu::mdcr_el2`).
    let pmcr: u64;
    // SAFETY: reads PMCR_EL0 at EL2, where N is the implemented count.
    unsafe { asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nomem, nostack)) };
    MDCR_EL2.set(partita_core::guest_cpu::mdcr_el2(
        pmcr,
        ID_AA64DFR0_EL1.get(),
    ));
    barrier::isb(barrier::SY);
    // This CPU may have run another VMID before (a restarted partition).
    // SAFETY: TLB maintenance has no memory effects.
    unsafe { asm!("tlbi vmalls12e1", "dsb nsh", "isb", options(nostack)) };
}

/// Physical interrupts are taken at EL2 on this CPU from now on, before it
/// runs any vCPU (`configure_vcpu` keeps IMO): without it, a CPU that no
/// partition uses would never take the interrupts routed to it (the
/// console's).
pub fn take_interrupts_at_el2() {
    HCR_EL2.write(HCR_EL2::RW::EL1IsAarch64 + HCR_EL2::IMO::EnableVirtualIRQ);
    barrier::isb(barrier::SY);
}

/// Injects a synchronous external abort into the guest at EL1, as the
/// hardware would deliver a data abort to the guest's own vectors.
pub fn inject_data_abort(frame: &mut CallFrame, far: u64, write: bool) {
    let e = partita_core::trap::abort_entry(frame.spsr, VBAR_EL1.get());
    let esr = partita_core::trap::injected_data_abort_esr(e.from_lower_el, write);
    inject(frame, &e, esr, far);
}

/// Injects a synchronous external instruction abort on a fetch from `far`,
/// unless the guest's vector for it lies in that page (see
/// `trap::instruction_abort_entry`); returns whether it did.
pub fn inject_instruction_abort(frame: &mut TrapFrame, far: u64) -> bool {
    let Some(e) = partita_core::trap::instruction_abort_entry(frame.spsr, VBAR_EL1.get(), far)
    else {
        return false;
    };
    let esr = partita_core::trap::injected_instruction_abort_esr(e.from_lower_el);
    inject(frame, &e, esr, far);
    true
}

/// Injects an UNDEFINED exception for the instruction at the guest's PC.
pub fn inject_undefined(frame: &mut TrapFrame) {
    let e = partita_core::trap::abort_entry(frame.spsr, VBAR_EL1.get());
    ESR_EL1.set(partita_core::guest_cpu::UNDEFINED_ESR);
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    frame.elr = e.vector;
    frame.spsr = e.spsr;
}

/// Takes a synchronous exception to the guest's EL1 as the hardware would:
/// syndrome, fault address, return state, then its vector.
fn inject(frame: &mut CallFrame, e: &partita_core::trap::AbortEntry, esr: u64, far: u64) {
    ESR_EL1.set(esr);
    FAR_EL1.set(far);
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    frame.elr = e.vector;
    frame.spsr = e.spsr;
}

/// Disarms the guest's EL1 timers on this CPU, so their level-sensitive
/// PPIs fall quiet once its vCPU has left.
pub fn disarm_guest_timers() {
    CNTV_CTL_EL0.set(0);
    CNTP_CTL_EL0.set(0);
    barrier::isb(barrier::SY);
}

/// Invalidates every stage-1 and stage-2 TLB entry of the VMID in `vttbr`
/// on every CPU of the cluster, before the partition's memory is written
/// for its next instance.
pub fn invalidate_guest_tlb(vttbr: u64) {
    VTTBR_EL2.set(vttbr);
    barrier::isb(barrier::SY);
    // SAFETY: TLB maintenance has no memory effects.
    unsafe { asm!("tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
}

/// EL2's own timer (CNTHP) fires `ticks` from now on this CPU, or at
/// the deadline it already had if that is sooner: the bound on how long
/// held rpmsg messages wait (`rpmsg::hold`), the shortest of the links
/// held.
pub fn arm_hold_timer(ticks: u64) {
    let mut at = CNTPCT_EL0.get().saturating_add(ticks);
    if CNTHP_CTL_EL2.is_set(CNTHP_CTL_EL2::ENABLE) {
        let was: u64;
        // SAFETY: reads CNTHP_CVAL_EL2 (absent from aarch64-cpu).
        unsafe { asm!("mrs {}, cnthp_cval_el2", out(reg) was, options(nomem, nostack)) };
        at = at.min(was);
    }
    // SAFETY: CNTHP_CVAL_EL2 sets only when EL2's timer fires.
    unsafe { asm!("msr cnthp_cval_el2, {}", in(reg) at, options(nomem, nostack)) };
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET);
}

/// Stops EL2's timer on this CPU; its interrupt, level-sensitive, drops.
pub fn disarm_hold_timer() {
    CNTHP_CTL_EL2.set(0);
    barrier::isb(barrier::SY);
}

/// Whether the guest's WFI traps on this CPU (HCR_EL2.TWI): while it holds
/// rpmsg messages, which move before its vCPU sleeps. Takes effect at the
/// return to the guest.
pub fn trap_wfi(on: bool) {
    HCR_EL2.modify(if on {
        HCR_EL2::TWI::SET
    } else {
        HCR_EL2::TWI::CLEAR
    });
}

/// Ticks per second of the generic counter.
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}
