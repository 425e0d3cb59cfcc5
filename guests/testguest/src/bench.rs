//! Benchmarks, read from the guest's own counter: under QEMU with
//! `-icount shift=0` and a 1 GHz counter, one tick is one instruction.
//! Each prints `bench: NAME min M median M p99 P max X (N samples)`.

use crate::{gic, hvc, println, vcpu_index, PSCI_VERSION};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

const MAX_SAMPLES: usize = 4096;
const HVC_NULL: u64 = 0xc600_0000;
const VTIMER: u32 = 27;
const SGI: u32 = 2;

/// Counter value at the last interrupt's entry, for latency measurements.
pub static IRQ_AT: AtomicU64 = AtomicU64::new(0);
static mut SAMPLES: [u64; MAX_SAMPLES] = [0; MAX_SAMPLES];

use guest_common::counter;

/// `report` for a benchmark with a size: NAME-SIZE.
pub fn report_named(name: &str, size: usize, n: usize, sample: impl FnMut() -> u64) {
    let mut label = [0u8; 40];
    let mut w = guest_common::BufWriter::new(&mut label);
    let _ = core::fmt::write(&mut w, format_args!("{name}-{size}"));
    report(w.as_str(), n, sample);
}

fn report(name: &str, n: usize, mut sample: impl FnMut() -> u64) {
    let n = n.clamp(1, MAX_SAMPLES);
    // SAFETY: only vCPU 0 runs benchmarks, one at a time.
    let s = unsafe { &mut *core::ptr::addr_of_mut!(SAMPLES) };
    for slot in s.iter_mut().take(n) {
        *slot = sample();
    }
    let s = &mut s[..n];
    s.sort_unstable();
    let p99 = s[(n * 99 / 100).min(n - 1)];
    println!(
        "bench: {name} min {} median {} p99 {p99} max {} ({n} samples)",
        s[0],
        s[n / 2],
        s[n - 1]
    );
    histogram(name, s);
}

/// The distribution of sorted samples `s` for the plots, as lines of
/// `bench: NAME hist LO-HI:COUNT ...` (a few bins each, so that no line
/// outgrows the console's), each distinct value its own bin when there
/// are few (LO = HI), else bins of powers of two.
fn histogram(name: &str, s: &[u64]) {
    let distinct = 1 + s.windows(2).filter(|p| p[0] != p[1]).count();
    let bin = |v: u64| -> (u64, u64) {
        if distinct <= 16 || v < 2 {
            (v, v)
        } else {
            let lo = 1u64 << (63 - v.leading_zeros());
            (lo, 2 * lo - 1)
        }
    };
    let mut i = 0;
    while i < s.len() {
        let mut line = [0u8; 160];
        let mut w = guest_common::BufWriter::new(&mut line);
        let _ = core::fmt::write(&mut w, format_args!("bench: {name} hist"));
        for _ in 0..4 {
            let Some(&v) = s.get(i) else { break };
            let (lo, hi) = bin(v);
            let count = s[i..].iter().take_while(|&&v| v <= hi).count();
            let _ = core::fmt::write(&mut w, format_args!(" {lo}-{hi}:{count}"));
            i += count;
        }
        println!("{}", w.as_str());
    }
}

/// Waits for the interrupt; IRQ_AT was cleared before it was provoked.
fn wait_irq() -> u64 {
    loop {
        let t = IRQ_AT.load(Ordering::Acquire);
        if t != 0 {
            return t;
        }
        // SAFETY: sleeps until the interrupt.
        unsafe { asm!("wfi") };
    }
}

/// From the virtual timer's deadline to the first instruction of the handler.
pub fn timer(n: usize) {
    gic::init_distributor();
    gic::init_cpu(vcpu_index());
    gic::enable(VTIMER, vcpu_index());
    // SAFETY: IRQs on; the vector table handles them.
    unsafe { asm!("msr daifclr, #2") };
    report("timer-latency", n, || {
        IRQ_AT.store(0, Ordering::Release);
        let deadline = counter() + 20_000;
        // SAFETY: the virtual timer belongs to the guest.
        unsafe {
            asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) deadline, in(reg) 1u64)
        };
        let at = wait_irq();
        at.saturating_sub(deadline)
    });
}

/// An SGI to itself, from the write of the SGI register to the handler.
pub fn sgi(n: usize) {
    gic::init_distributor();
    gic::init_cpu(vcpu_index());
    gic::enable(SGI, vcpu_index());
    // SAFETY: as above.
    unsafe { asm!("msr daifclr, #2") };
    report("sgi-latency", n, || {
        IRQ_AT.store(0, Ordering::Release);
        let t0 = counter();
        gic::send_sgi(SGI, vcpu_index());
        let at = wait_irq();
        at - t0
    });
}

pub fn null_hvc(n: usize) {
    report("null-hypercall", n, || {
        let t0 = counter();
        hvc(HVC_NULL, 0, 0, 0);
        counter() - t0
    });
}

pub fn psci_version(n: usize) {
    report("psci-version", n, || {
        let t0 = counter();
        hvc(PSCI_VERSION, 0, 0, 0);
        counter() - t0
    });
}

/// Called first thing in the IRQ handler: stops the timer and notes the time.
pub fn on_irq_entry(t: u64, id: u32) {
    if id == SGI && vcpu_index() == 1 {
        on_ipi(t);
        return;
    }
    if id == VTIMER {
        // SAFETY: masks the timer until the next sample arms it.
        unsafe { asm!("msr cntv_ctl_el0, xzr", "isb") };
    }
    IRQ_AT.store(t, Ordering::Release);
}

/// MMIO reads: the virtio device's MagicValue register (under Partita a
/// load from its register page, without a trap), and the console UART's
/// flag register (under Partita trapped and emulated).
pub fn mmio(fdt: &fdt::Fdt<'_>, n: usize) {
    let reg = |compatible: &str| {
        fdt.find_compatible(&[compatible])
            .and_then(|d| d.reg()?.next())
            .map(|r| r.starting_address as u64)
    };
    let read = |at: u64| {
        let t0 = counter();
        // SAFETY: a read-only register of our own device, without side
        // effects.
        unsafe { core::ptr::read_volatile(at as *const u32) };
        counter() - t0
    };
    match reg("virtio,mmio") {
        Some(base) => report("mmio-read", n, || read(base)),
        None => println!("bench: no virtio-mmio device for the mmio benchmark"),
    }
    match reg("arm,pl011") {
        // UARTFR.
        Some(base) => report("uart-read", n, || read(base + 0x18)),
        None => println!("bench: no PL011 for the mmio benchmark"),
    }
}

static SGI_AT: AtomicU64 = AtomicU64::new(0);
static RECEIVER_UP: AtomicU64 = AtomicU64::new(0);

/// An SGI from vCPU 0 to vCPU 1, from the write to vCPU 1's handler.
pub fn ipi(n: usize) {
    gic::init_distributor();
    gic::init_cpu(0);
    crate::hvc(
        crate::PSCI_CPU_ON,
        1,
        crate::secondary_start as *const () as u64,
        1 | (3 << 8),
    );
    while RECEIVER_UP.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    report("ipi-latency", n, || {
        SGI_AT.store(0, Ordering::Release);
        let t0 = counter();
        gic::send_sgi(SGI, 1);
        // WFE, not a spin: under icount QEMU runs one vCPU at a time, and
        // a spinning sender would only measure its own time slice.
        loop {
            let t = SGI_AT.load(Ordering::Acquire);
            if t != 0 {
                return t.saturating_sub(t0);
            }
            // SAFETY: waits for vCPU 1's SEV.
            unsafe { asm!("wfe") };
        }
    });
    RECEIVER_UP.store(2, Ordering::Release);
    // SAFETY: wakes vCPU 1 from WFE to power itself off.
    unsafe { asm!("dsb sy", "sev") };
    while crate::hvc(crate::PSCI_AFFINITY_INFO, 1, 0, 0) != 1 {
        core::hint::spin_loop();
    }
}

/// vCPU 1's side of `ipi`: notes when each SGI arrives.
pub fn ipi_receiver() {
    gic::init_cpu(1);
    gic::enable(SGI, 1);
    // SAFETY: IRQs on; the handler records the time.
    unsafe { asm!("msr daifclr, #2") };
    RECEIVER_UP.store(1, Ordering::Release);
    while RECEIVER_UP.load(Ordering::Acquire) == 1 {
        // SAFETY: waits for an SGI or the final SEV.
        unsafe { asm!("wfe") };
    }
}

/// Called by vCPU 1's IRQ handler.
pub fn on_ipi(t: u64) {
    SGI_AT.store(t, Ordering::Release);
    // SAFETY: wakes vCPU 0 from its WFE.
    unsafe { asm!("dsb sy", "sev") };
}
