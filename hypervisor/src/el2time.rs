//! The el2-time feature: counter ticks each CPU spends at EL2, from just
//! after a trap's registers are saved to just before they are restored,
//! summed by the exception vectors (`entry.S`) by kind (the guest's traps,
//! interrupts taken while it ran, anything else) and reported when a vCPU
//! leaves its CPU. Under QEMU's `-icount shift=0` a tick is an
//! instruction, so the figure is instructions at EL2 (approximately: QEMU
//! runs the vCPUs in turn, and a turn that ends while a CPU is at EL2 is
//! counted to it).

use crate::cpu::MAX_CPUS;
use crate::partition::Partition;
use core::sync::atomic::{AtomicU64, Ordering};

const KINDS: usize = 3;
/// Ticks and stays per CPU and kind.
static TICKS: [[AtomicU64; KINDS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; KINDS] }; MAX_CPUS];
static STAYS: [[AtomicU64; KINDS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; KINDS] }; MAX_CPUS];
/// The longest stay per CPU and kind: a total made of a few long waits
/// (a lock whose holder QEMU has stopped) reads differently from one of
/// many dear stays.
static LONGEST: [[AtomicU64; KINDS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; KINDS] }; MAX_CPUS];
/// The syndrome (ESR_EL2) of each CPU's longest trap, to say what it was.
static LONGEST_ESR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Called by the vectors after a handler returns, with the counter read
/// at entry and the kind of exception.
#[no_mangle]
extern "C" fn el2_time_account(start: u64, kind: usize) {
    let me = crate::arch::cpu_index();
    let now = crate::arch::counter();
    let kind = kind.min(KINDS - 1);
    // Only this CPU writes its own: a plain load and store.
    let add = |c: &AtomicU64, n: u64| c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    let stay = now.saturating_sub(start);
    add(&TICKS[me][kind], stay);
    add(&STAYS[me][kind], 1);
    if stay > LONGEST[me][kind].load(Ordering::Relaxed) {
        LONGEST[me][kind].store(stay, Ordering::Relaxed);
        if kind == 0 {
            // Still the trap's: the hypervisor takes no synchronous
            // exception of its own, and interrupts leave ESR_EL2 alone.
            LONGEST_ESR[me].store(crate::arch::esr(), Ordering::Relaxed);
        }
    }
}

/// CPU `me` parks: says how long it spent at EL2 since the last report,
/// by kind, over how long its partition ran, and starts again from zero.
pub fn report(me: usize, p: Option<&Partition>) {
    let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
    let ticks: [u64; KINDS] = core::array::from_fn(|k| take(&TICKS[me][k]));
    let stays: [u64; KINDS] = core::array::from_fn(|k| take(&STAYS[me][k]));
    let longest: [u64; KINDS] = core::array::from_fn(|k| take(&LONGEST[me][k]));
    let longest_esr = take(&LONGEST_ESR[me]);
    let total: u64 = ticks.iter().sum();
    let Some(p) = p else { return };
    let since = p.life.lock().started_at;
    if total == 0 || since == 0 {
        return;
    }
    let window = crate::arch::counter().saturating_sub(since).max(1);
    let freq = crate::arch::counter_frequency().max(1);
    let c = crate::cpu::get(me);
    // A vCPU leaves at its partition's will (CPU_OFF): within its limit.
    crate::console::guest_info!(
        p,
        "el2-time: cpu{me} ({}) {total} ticks at EL2 over {window} ticks: {} per second; traps {} in {}, interrupts {} in {}, other {} in {}; {} interrupts injected; longest trap {} (ESR {:#x}), interrupt {}",
        p.name,
        u128::from(total) * u128::from(freq) / u128::from(window),
        ticks[0],
        stays[0],
        ticks[1],
        stays[1],
        ticks[2],
        stays[2],
        c.injected.load(Ordering::Relaxed),
        longest[0],
        longest_esr,
        longest[1],
    );
}
