//! The CPU as an unmodified guest's own tests see it:
//!
//! - `pmu`: the event counters (how many, instructions and cycles counted,
//!   the hypervisor's own execution left out);
//! - `setway=ID`: a whole DC CISW walk of every data cache level, which
//!   must trap (partition ID's trap count grows by the walk's length) and
//!   leave its memory intact;
//! - `impdef`: ACTLR_EL1 reads as zero and ignores writes; an
//!   implementation-defined register (the A53's L2CTLR_EL1, CPUACTLR_EL1)
//!   is UNDEFINED.

use crate::{hvc, println};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

const NULL_CALL: u64 = 0xc600_0000;
const STATUS: u64 = 0xc600_0010;
const INST_RETIRED: u64 = 0x08;
const CPU_CYCLES: u64 = 0x11;
/// PMEVTYPER<n>_EL0.NSH: count at EL2 too.
const NSH: u64 = 1 << 27;

macro_rules! mrs {
    ($r:literal) => {{
        let v: u64;
        // SAFETY: reads a system register the guest may read.
        unsafe { asm!(concat!("mrs {}, ", $r), out(reg) v) };
        v
    }};
}

macro_rules! msr {
    ($r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: writes a PMU or cache-selection register the guest owns.
        unsafe { asm!(concat!("msr ", $r, ", {}"), "isb", in(reg) v) };
    }};
}

/// Counter 0 counts `event0`, counter 1 CPU cycles; both reset and on.
fn pmu_start(event0: u64) {
    msr!("pmevtyper0_el0", event0);
    msr!("pmevtyper1_el0", CPU_CYCLES);
    msr!("pmcntenset_el0", 0b11);
    // E, and P: event counters reset.
    msr!("pmcr_el0", (mrs!("pmcr_el0") & !0x7f) | 0b011);
}

/// Counters 0 and 1, then off.
fn pmu_stop() -> (u64, u64) {
    // SAFETY: orders the counted code before the reads.
    unsafe { asm!("isb") };
    let r = (mrs!("pmevcntr0_el0"), mrs!("pmevcntr1_el0"));
    msr!("pmcntenclr_el0", 0b11);
    r
}

/// `n` iterations of a two-instruction loop.
fn spin(n: u64) {
    // SAFETY: a counted loop on a scratch register.
    unsafe {
        asm!("2:", "subs {n}, {n}, #1", "b.ne 2b", n = inout(reg) n => _, options(nomem, nostack))
    };
}

pub fn pmu() {
    let n = (mrs!("pmcr_el0") >> 11) & 0x1f;
    println!("pmu: PMCR_EL0.N = {n}");
    if n < 2 {
        return;
    }
    let ceid0 = mrs!("pmceid0_el0");
    let (inst, cycles) = (
        ceid0 & (1 << INST_RETIRED) != 0,
        ceid0 & (1 << CPU_CYCLES) != 0,
    );
    println!("pmu: PMCEID0 says instructions {inst}, cycles {cycles}");
    pmu_start(INST_RETIRED);
    spin(10_000);
    let (i, c) = pmu_stop();
    println!("pmu: 10000 iterations of 2 instructions: instructions {i}, cycles {c}");
    // The null call's path at EL2 is over a hundred instructions; counted
    // at EL1 and EL0 only, each call is the guest's few around it.
    pmu_start(INST_RETIRED);
    for _ in 0..1000 {
        hvc(NULL_CALL, 0, 0, 0);
    }
    let (i, c) = pmu_stop();
    println!("pmu: 1000 null calls: instructions {i}, cycles {c} (EL2 not counted)");
    // Asking for EL2 too (NSH): what the architecture leaves possible
    // where the PMU has no HPMD (Armv8.0, the A53).
    pmu_start(INST_RETIRED | NSH);
    for _ in 0..1000 {
        hvc(NULL_CALL, 0, 0, 0);
    }
    let (i, _) = pmu_stop();
    println!("pmu: 1000 null calls: instructions {i} with NSH set");
}

/// The trap count of partition `id` (itself), from STATUS.
fn traps(id: u64) -> u64 {
    let x3: u64;
    // SAFETY: a control call; the hypervisor preserves all but x0-x7.
    unsafe {
        asm!("hvc #0", inout("x0") STATUS => _, inout("x1") id => _, out("x2") _,
             out("x3") x3, out("x4") _, out("x5") _, out("x6") _, out("x7") _)
    };
    x3
}

/// A data buffer the walk must leave as it was.
static mut BUF: [u64; 512] = [0; 512];

pub fn setway(id: u64) {
    // SAFETY: only this scenario touches the buffer.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(BUF) };
    for (i, w) in buf.iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let before = traps(id);
    let clidr = mrs!("clidr_el1");
    let loc = (clidr >> 24) & 7;
    let mut ops = 0u64;
    for level in 0..loc {
        if (clidr >> (3 * level)) & 7 < 2 {
            continue; // instruction cache only, or none
        }
        msr!("csselr_el1", level << 1);
        let ccsidr = mrs!("ccsidr_el1");
        let line_shift = (ccsidr & 7) + 4;
        let ways = ((ccsidr >> 3) & 0x3ff) + 1;
        let sets = ((ccsidr >> 13) & 0x7fff) + 1;
        let way_shift = (ways - 1).leading_zeros().saturating_sub(32);
        for way in (0..ways).rev() {
            for set in (0..sets).rev() {
                let v = (way << way_shift) | (set << line_shift) | (level << 1);
                // SAFETY: clean and invalidate by set/way (trapped).
                unsafe { asm!("dc cisw, {}", in(reg) v) };
                ops += 1;
            }
        }
    }
    // SAFETY: completes the maintenance.
    unsafe { asm!("dsb sy", "isb") };
    let trapped = traps(id) - before;
    let intact = buf
        .iter()
        .enumerate()
        .all(|(i, &w)| w == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    println!(
        "setway: {ops} DC CISW over {loc} level(s), {} trapped; memory intact: {intact}",
        if trapped > ops { "all" } else { "not all" }
    );
}

/// ESR of the UNDEFINED exception `impdef` expects, or 0.
pub static UNDEFINED: AtomicU64 = AtomicU64::new(0);
pub static EXPECTING: AtomicU64 = AtomicU64::new(0);

/// Whether `on_sync` takes this exception as the one `impdef` provoked.
pub fn expected_undefined(esr: u64) -> bool {
    if esr >> 26 == 0 && EXPECTING.swap(0, Ordering::Relaxed) != 0 {
        UNDEFINED.store(esr, Ordering::Relaxed);
        return true;
    }
    false
}

pub fn impdef() {
    let actlr = mrs!("actlr_el1");
    // SAFETY: ACTLR_EL1, written as a guest tuning its core would.
    unsafe { asm!("msr actlr_el1, {}", "isb", in(reg) u64::MAX) };
    println!(
        "impdef: ACTLR_EL1 reads {actlr:#x}, {:#x} after a write",
        mrs!("actlr_el1")
    );
    EXPECTING.store(1, Ordering::Relaxed);
    let l2ctlr: u64;
    // SAFETY: an implementation-defined register (Cortex-A53 L2CTLR_EL1);
    // an UNDEFINED exception resumes after it with the register unchanged.
    unsafe { asm!("mov {0}, #0x5a", "mrs {0}, S3_1_C11_C0_2", out(reg) l2ctlr) };
    let esr = UNDEFINED.swap(0, Ordering::Relaxed);
    println!("impdef: L2CTLR_EL1 read: ESR {esr:#x}, register {l2ctlr:#x}");
    EXPECTING.store(1, Ordering::Relaxed);
    // SAFETY: as above (Cortex-A53 CPUACTLR_EL1), a write.
    unsafe { asm!("msr S3_1_C15_C2_0, {}", in(reg) 0u64) };
    println!(
        "impdef: CPUACTLR_EL1 write: ESR {:#x}",
        UNDEFINED.swap(0, Ordering::Relaxed)
    );
}
