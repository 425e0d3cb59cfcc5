//! Interrupt scenarios: the virtual timer, SGIs between vCPUs, a passed-
//! through device's interrupt, and the isolation of other partitions'.

use crate::{gic, hvc, println, secondary_start, vcpu_index, PSCI_AFFINITY_INFO, PSCI_CPU_ON};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guest_common::counter;

const VTIMER: u32 = 27;
const PTIMER: u32 = 30;
const SGI: u32 = 1;
pub const TICKS: u32 = 1000;

static TICK_COUNT: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];
static SGI_COUNT: AtomicU32 = AtomicU32::new(0);
static RTC_COUNT: AtomicU32 = AtomicU32::new(0);
static RTC_BASE: AtomicU64 = AtomicU64::new(0);
static RTC_SPI: AtomicU32 = AtomicU32::new(0);
static READY: AtomicBool = AtomicBool::new(false);
static DONE: AtomicU32 = AtomicU32::new(0);

/// What a secondary vCPU does once started (bits 8 and up of its context).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Job {
    Timer = 1,
    Ipi = 2,
}

use guest_common::counter_freq as freq;

/// Which EL1 timer a timer scenario counts, and how its handler ends.
static PHYSICAL: AtomicBool = AtomicBool::new(false);
/// Each tick's EOI comes only after the next deadline has passed, so the
/// timer's line is high again while its interrupt is still active.
static LATE: AtomicBool = AtomicBool::new(false);

fn unmask() {
    // SAFETY: IRQs on at EL1; the vector table handles them.
    unsafe { asm!("msr daifclr, #2") };
}

/// Arms the scenario's timer `tval` ticks from now.
fn arm_timer(tval: u64) {
    // SAFETY: both EL1 timers belong to the guest.
    unsafe {
        if PHYSICAL.load(Ordering::Relaxed) {
            asm!("msr cntp_tval_el0, {}", "msr cntp_ctl_el0, {}", "isb", in(reg) tval, in(reg) 1u64)
        } else {
            asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) tval, in(reg) 1u64)
        }
    };
}

fn stop_timer() {
    // SAFETY: as above.
    unsafe {
        if PHYSICAL.load(Ordering::Relaxed) {
            asm!("msr cntp_ctl_el0, xzr", "isb")
        } else {
            asm!("msr cntv_ctl_el0, xzr", "isb")
        }
    };
}

/// The timer condition has been met (CNTx_CTL_EL0.ISTATUS).
fn timer_fired() -> bool {
    let ctl: u64;
    // SAFETY: reads a timer's control register.
    unsafe {
        if PHYSICAL.load(Ordering::Relaxed) {
            asm!("isb", "mrs {}, cntp_ctl_el0", out(reg) ctl)
        } else {
            asm!("isb", "mrs {}, cntv_ctl_el0", out(reg) ctl)
        }
    };
    ctl & 4 != 0
}

fn timer_name() -> &'static str {
    match (
        PHYSICAL.load(Ordering::Relaxed),
        LATE.load(Ordering::Relaxed),
    ) {
        (true, _) => "ptimer",
        (false, true) => "timer-late",
        (false, false) => "timer",
    }
}

fn timer_intid() -> u32 {
    if PHYSICAL.load(Ordering::Relaxed) {
        PTIMER
    } else {
        VTIMER
    }
}

/// Counts TICKS timer interrupts at 1 kHz on this vCPU, in WFI between
/// them as an idle OS would be (a lost interrupt hangs it, as it would an
/// OS). With late EOIs it polls instead and reports a stall.
pub fn timer_on_this_vcpu() {
    let me = vcpu_index();
    gic::init_cpu(me);
    gic::enable(timer_intid(), me);
    let start = counter();
    arm_timer(freq() / 1000);
    unmask();
    let late = LATE.load(Ordering::Relaxed);
    let (mut seen, mut since) = (0, counter());
    loop {
        let n = TICK_COUNT[me].load(Ordering::Acquire);
        if n >= TICKS {
            break;
        }
        if !late {
            // SAFETY: wait for the next interrupt.
            unsafe { asm!("wfi") };
            continue;
        }
        if n != seen {
            (seen, since) = (n, counter());
        } else if counter() - since > 2 * freq() {
            stop_timer();
            println!("{}: vcpu {me} stalled after {n} ticks", timer_name());
            return;
        }
        core::hint::spin_loop();
    }
    stop_timer();
    let us = (counter() - start) * 1_000_000 / freq();
    println!(
        "{}: vcpu {me} counted {TICKS} ticks in {us} us",
        timer_name()
    );
}

/// `timer`, `ptimer`, `timer-late`: TICKS interrupts of the virtual or the
/// EL1 physical timer on every vCPU.
pub fn timer(cpus: usize, physical: bool, late: bool) {
    PHYSICAL.store(physical, Ordering::Relaxed);
    LATE.store(late, Ordering::Relaxed);
    for t in &TICK_COUNT {
        t.store(0, Ordering::Relaxed);
    }
    gic::init_distributor();
    for i in 1..cpus {
        hvc(
            PSCI_CPU_ON,
            i as u64,
            secondary_start as *const () as u64,
            (i as u64) | ((Job::Timer as u64) << 8),
        );
    }
    timer_on_this_vcpu();
    wait_secondaries(cpus);
}

/// A tick of the scenario's timer, in its handler.
fn tick(me: usize) {
    let n = TICK_COUNT[me].fetch_add(1, Ordering::AcqRel) + 1;
    let id = timer_intid();
    if n == TICKS / 2 {
        // Disabled and enabled again while active: nothing may be lost.
        gic::disable(id, me);
        gic::enable(id, me);
    }
    if n >= TICKS {
        stop_timer();
    } else if LATE.load(Ordering::Relaxed) {
        // The next deadline passes before this interrupt's EOI: its line
        // is high while it is still active, and only the deactivation
        // lets the GIC signal it again.
        arm_timer(freq() / 100_000);
        while !timer_fired() {
            core::hint::spin_loop();
        }
    } else {
        arm_timer(freq() / 1000);
    }
}

/// An interrupt `pending` expects, and how often it came.
static PROBE: AtomicU32 = AtomicU32::new(u32::MAX);
static PROBE_TAKEN: AtomicU32 = AtomicU32::new(0);
/// The running priority the probe's handler saw.
static PROBE_PRIORITY: AtomicU32 = AtomicU32::new(0);

/// `pending`: each EL1 timer fires with its interrupt disabled in the GIC;
/// its set-pending bit must read 1 while the line is high and 0 once the
/// timer is stopped, as on bare metal. Then the interrupt, enabled, is
/// made pending by a write to the set-pending register and must be taken
/// once.
pub fn pending() {
    gic::init_distributor();
    gic::init_cpu(0);
    for physical in [false, true] {
        PHYSICAL.store(physical, Ordering::Relaxed);
        let id = timer_intid();
        let bit = |w: u32| (w >> (id % 32)) & 1;
        gic::disable(id, 0);
        arm_timer(1);
        while !timer_fired() {
            core::hint::spin_loop();
        }
        let high = bit(gic::pending_word(id, 0));
        stop_timer();
        let low = bit(gic::pending_word(id, 0));
        PROBE.store(id, Ordering::Relaxed);
        PROBE_TAKEN.store(0, Ordering::Relaxed);
        gic::enable(id, 0);
        gic::set_pending(id, 0);
        unmask();
        let start = counter();
        while PROBE_TAKEN.load(Ordering::Acquire) == 0 && counter() - start < freq() / 10 {
            core::hint::spin_loop();
        }
        // SAFETY: IRQs off again at EL1.
        unsafe { asm!("msr daifset, #2") };
        gic::disable(id, 0);
        println!(
            "pending: {} line high reads {high}, low reads {low}; set-pending taken {} time(s)",
            if physical { "ptimer" } else { "vtimer" },
            PROBE_TAKEN.load(Ordering::Relaxed)
        );
    }
    PROBE.store(u32::MAX, Ordering::Relaxed);
}

/// The virtual timer armed `tval` ticks from now, its interrupt enabled
/// and expected: the handler stops the timer and counts it in the
/// returned flag. IRQs stay masked at EL1.
pub fn expect_vtimer(tval: u64) -> &'static AtomicU32 {
    PHYSICAL.store(false, Ordering::Relaxed);
    PROBE.store(VTIMER, Ordering::Relaxed);
    PROBE_TAKEN.store(0, Ordering::Relaxed);
    gic::enable(VTIMER, 0);
    arm_timer(tval);
    &PROBE_TAKEN
}

/// After `expect_vtimer`: the timer's interrupt disabled again.
pub fn end_probe() {
    PROBE.store(u32::MAX, Ordering::Relaxed);
    gic::disable(VTIMER, 0);
}

/// `timer-priority`: each priority written to the virtual timer's
/// interrupt while the partition runs is the one its next interrupt is
/// taken at. (The hypervisor injects the timer from its interrupt vector
/// with a list-register value it publishes after every vGIC write: a stale
/// one would show the old priority here.)
pub fn timer_priority() {
    gic::init_distributor();
    gic::init_cpu(0);
    for priority in [0xa0u8, 0x40, 0xc8] {
        // The priority last: `expect_vtimer` enables the interrupt, and
        // only the priority's own write may tell the hypervisor.
        let taken = expect_vtimer(freq() / 1000);
        gic::set_priority(VTIMER, 0, priority);
        unmask();
        while taken.load(Ordering::Acquire) == 0 {
            // SAFETY: waits for the timer's interrupt.
            unsafe { asm!("wfi") };
        }
        // SAFETY: IRQs off again.
        unsafe { asm!("msr daifset, #2") };
        println!(
            "timer-priority: set {priority:#x}, taken at {:#x}",
            PROBE_PRIORITY.load(Ordering::Relaxed)
        );
        end_probe();
    }
}

/// `sgi-self`: an SGI this vCPU sends itself is taken at the priority
/// last written to it, is not taken while disabled, and is taken once
/// enabled again; sent by target list and (GICv2) by the "itself" filter.
/// (The hypervisor's vectors load such an SGI themselves, with a value
/// they publish after every vGIC write, when nothing else waits.)
pub fn sgi_self() {
    const S: u32 = 3;
    gic::init_distributor();
    gic::init_cpu(0);
    let take = |send: &dyn Fn()| {
        PROBE.store(S, Ordering::Relaxed);
        PROBE_TAKEN.store(0, Ordering::Relaxed);
        send();
        unmask();
        let t0 = counter();
        while PROBE_TAKEN.load(Ordering::Acquire) == 0 && counter() - t0 < freq() / 100 {
            core::hint::spin_loop();
        }
        // SAFETY: IRQs off again.
        unsafe { asm!("msr daifset, #2") };
        PROBE_TAKEN.load(Ordering::Acquire)
    };
    gic::enable(S, 0);
    for (priority, filter) in [(0xa0u8, false), (0x40, true), (0xc8, false)] {
        gic::set_priority(S, 0, priority);
        let n = if filter {
            take(&|| gic::send_sgi_to_self(S, 0))
        } else {
            take(&|| gic::send_sgi(S, 0))
        };
        println!(
            "sgi-self: set {priority:#x}, taken {n} time(s) at {:#x}",
            PROBE_PRIORITY.load(Ordering::Relaxed)
        );
    }
    // GICv2's SGIs cannot be disabled (their enable bits read as one and
    // ignore writes, as on the GIC-400).
    gic::disable(S, 0);
    let n = take(&|| gic::send_sgi(S, 0));
    println!("sgi-self: after a disable, taken {n} time(s)");
    PROBE_TAKEN.store(0, Ordering::Relaxed);
    gic::enable(S, 0);
    let n = take(&|| {});
    println!("sgi-self: enabled again, taken {n} more time(s)");
    PROBE.store(u32::MAX, Ordering::Relaxed);
}

/// `suspend`: PSCI CPU_SUSPEND to standby with IRQs masked returns once
/// the armed virtual timer's interrupt is pending, and bad requests are
/// refused.
pub fn suspend() {
    const CPU_SUSPEND: u64 = 0xc400_0001;
    PHYSICAL.store(false, Ordering::Relaxed);
    gic::init_distributor();
    gic::init_cpu(0);
    gic::enable(VTIMER, 0);
    PROBE.store(VTIMER, Ordering::Relaxed);
    PROBE_TAKEN.store(0, Ordering::Relaxed);
    let deadline = counter() + freq() / 500;
    arm_timer(freq() / 500);
    let r = hvc(CPU_SUSPEND, 0, 0, 0);
    let woke_after = counter() >= deadline;
    unmask();
    let start = counter();
    while PROBE_TAKEN.load(Ordering::Acquire) == 0 && counter() - start < freq() / 10 {
        core::hint::spin_loop();
    }
    // SAFETY: IRQs off again.
    unsafe { asm!("msr daifset, #2") };
    PROBE.store(u32::MAX, Ordering::Relaxed);
    gic::disable(VTIMER, 0);
    let reserved = hvc(CPU_SUSPEND, 1 << 20, 0, 0);
    let outside = hvc(CPU_SUSPEND, 1 << 16, 0x10, 0);
    println!(
        "suspend: standby returned {r} after the deadline: {woke_after}, interrupt taken {}; reserved bits {reserved}, power-down entry outside memory {outside}",
        PROBE_TAKEN.load(Ordering::Relaxed)
    );
}

fn wait_secondaries(cpus: usize) {
    for i in 1..cpus {
        while hvc(PSCI_AFFINITY_INFO, i as u64, 0, 0) != 1 {
            core::hint::spin_loop();
        }
    }
}

/// vCPU 0 sends `n` SGIs to vCPU 1, each after the previous one arrived.
pub fn ipi(n: u32, cpus: usize) {
    if cpus < 2 {
        println!("ipi: needs 2 vcpus");
        return;
    }
    gic::init_distributor();
    gic::init_cpu(0);
    hvc(
        PSCI_CPU_ON,
        1,
        secondary_start as *const () as u64,
        1 | ((Job::Ipi as u64) << 8),
    );
    while !READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let start = counter();
    for i in 0..n {
        gic::send_sgi(SGI, 1);
        let mut spins = 0u64;
        while SGI_COUNT.load(Ordering::Acquire) <= i {
            spins += 1;
            if spins > 50_000_000 {
                println!("ipi: SGI {} lost", i + 1);
                break;
            }
        }
    }
    let per = (counter() - start) / u64::from(n.max(1));
    let received = SGI_COUNT.load(Ordering::Relaxed);
    DONE.store(1, Ordering::Release);
    // SAFETY: wakes vCPU 1 from its WFE.
    unsafe { asm!("dsb sy", "sev") };
    wait_secondaries(cpus);
    println!("ipi: sent {n}, received {received} ({per} ticks per round trip)");
}

pub fn ipi_receiver() {
    gic::init_cpu(1);
    gic::enable(SGI, 1);
    unmask();
    READY.store(true, Ordering::Release);
    while DONE.load(Ordering::Acquire) == 0 {
        // SAFETY: waits for an interrupt or vCPU 0's SEV.
        unsafe { asm!("wfe") };
    }
}

static SEEN_SGIS: AtomicU32 = AtomicU32::new(0);
static SGI8_TAKEN: AtomicU32 = AtomicU32::new(0);

/// Eight different SGIs made pending at once, more than the list registers
/// hold: every one must still be delivered.
pub fn many_sgis() {
    gic::init_distributor();
    gic::init_cpu(0);
    for sgi in 8..16 {
        gic::enable(sgi, 0);
    }
    // Masked while they are sent, so all eight wait together. SGI 8 is
    // sent twice: the second finds the first still pending and merges
    // with it, as on a GIC.
    gic::send_sgi(8, 0);
    for sgi in 8..16 {
        gic::send_sgi(sgi, 0);
    }
    unmask();
    let start = counter();
    while SEEN_SGIS.load(Ordering::Acquire) != 0xff00 && counter() - start < freq() {
        core::hint::spin_loop();
    }
    println!(
        "many-sgis: delivered mask {:#x}, SGI 8 taken {} time(s)",
        SEEN_SGIS.load(Ordering::Relaxed),
        SGI8_TAKEN.load(Ordering::Relaxed)
    );
}

/// Set when the `rtc` scenario's device is a Cadence TTC, not a PL031.
static RTC_IS_TTC: AtomicBool = AtomicBool::new(false);

// Cadence TTC, counter 1: control, interval, interrupt status (cleared
// by reading it) and interrupt enable.
const TTC_CLOCK_CONTROL: u64 = 0x00;
const TTC_COUNTER_CONTROL: u64 = 0x0c;
const TTC_INTERVAL: u64 = 0x24;
const TTC_ISR: u64 = 0x54;
const TTC_IER: u64 = 0x60;
/// Interval mode, counter reset, waveform output off; bit 0 stops it.
const TTC_RUN_INTERVAL: u32 = 0x32;
const TTC_STOP: u32 = 0x21;

/// A passed-through device interrupt taken twice; the handler disables
/// and re-enables it while it is active. The device is the domain's PL031
/// (its alarm; QEMU virt) or else its Cadence TTC (counter 1's interval;
/// ZynqMP), printed as `rtc: alarm N` or `ttc: interval N`.
pub fn rtc(fdt: &fdt::Fdt<'_>) {
    let (node, ttc) = match fdt.find_compatible(&["arm,pl031"]) {
        Some(n) => (n, false),
        None => match fdt.find_compatible(&["cdns,ttc"]) {
            Some(n) => (n, true),
            None => {
                println!("rtc: no pl031 or cdns,ttc in the device tree");
                return;
            }
        },
    };
    let base = node
        .reg()
        .and_then(|mut r| r.next())
        .map_or(0, |r| r.starting_address as u64);
    // <type number flags>: the fdt crate reads only 1- or 2-cell specifiers.
    let cells = node.property("interrupts").map(|p| p.value).unwrap_or(&[]);
    let spi = cells
        .get(4..8)
        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        + 32;
    RTC_BASE.store(base, Ordering::Relaxed);
    RTC_SPI.store(spi, Ordering::Relaxed);
    RTC_IS_TTC.store(ttc, Ordering::Relaxed);
    gic::init_distributor();
    gic::init_cpu(0);
    gic::enable(spi, 0);
    if ttc {
        ttc_start(base);
    } else {
        rtc_arm(base);
    }
    unmask();
    let start = counter();
    let (dev, what) = if ttc {
        ("ttc", "interval")
    } else {
        ("rtc", "alarm")
    };
    while RTC_COUNT.load(Ordering::Acquire) < 2 {
        if counter() - start > 10 * freq() {
            println!("{dev}: {what} lost");
            return;
        }
        core::hint::spin_loop();
    }
    println!("{dev}: 2 {what}s taken (spi {spi})");
}

fn rtc_arm(base: u64) {
    // SAFETY: the PL031 our domain was given: data, match, mask registers.
    unsafe {
        let now = core::ptr::read_volatile(base as *const u32);
        core::ptr::write_volatile((base + 0x4) as *mut u32, now + 1);
        core::ptr::write_volatile((base + 0x10) as *mut u32, 1);
    }
}

fn ttc_write(base: u64, offset: u64, v: u32) {
    // SAFETY: a register of the TTC our domain was given.
    unsafe { core::ptr::write_volatile((base + offset) as *mut u32, v) }
}

fn ttc_start(base: u64) {
    ttc_write(base, TTC_COUNTER_CONTROL, TTC_STOP);
    // The clock divided by 256 (prescaler on, 2^(7+1)): an interval of a
    // few milliseconds at the ZynqMP's 100-150 MHz.
    ttc_write(base, TTC_CLOCK_CONTROL, 1 | (7 << 1));
    ttc_write(base, TTC_INTERVAL, 2_000);
    ttc_write(base, TTC_IER, 1);
    ttc_write(base, TTC_COUNTER_CONTROL, TTC_RUN_INTERVAL);
}

/// The device's interrupt: cleared at the device; the `n`th taken.
fn rtc_taken(base: u64) {
    let ttc = RTC_IS_TTC.load(Ordering::Relaxed);
    if ttc {
        // SAFETY: reading the TTC's interrupt status clears it.
        unsafe { core::ptr::read_volatile((base + TTC_ISR) as *const u32) };
    } else {
        // SAFETY: clear the PL031 interrupt (RTCICR).
        unsafe { core::ptr::write_volatile((base + 0x1c) as *mut u32, 1) };
    }
    let n = RTC_COUNT.fetch_add(1, Ordering::AcqRel) + 1;
    if n > 2 {
        return;
    }
    if ttc {
        println!("ttc: interval {n} taken");
        if n == 2 {
            ttc_write(base, TTC_IER, 0);
            ttc_write(base, TTC_COUNTER_CONTROL, TTC_STOP);
        }
    } else {
        println!("rtc: alarm {n} taken");
        if n < 2 {
            rtc_arm(base);
        }
    }
}

static UART_SPI: AtomicU32 = AtomicU32::new(0);
static ECHOED: AtomicU32 = AtomicU32::new(0);
static mut LINE: ([u8; 128], usize) = ([0; 128], 0);

/// Echoes `n` lines typed on the console, read with its receive interrupt.
pub fn echo(fdt: &fdt::Fdt<'_>, n: u32) {
    let Some(spi) = guest_common::console(fdt).and_then(|c| c.1) else {
        println!("echo: the console has no interrupt");
        return;
    };
    UART_SPI.store(spi, Ordering::Relaxed);
    gic::init_distributor();
    gic::init_cpu(0);
    gic::enable(spi, 0);
    crate::uart::enable_rx_interrupt();
    unmask();
    println!("echo: ready for {n} lines");
    while ECHOED.load(Ordering::Acquire) < n {
        // SAFETY: wait for the next interrupt.
        unsafe { asm!("wfi") };
    }
}

fn uart_rx() {
    while let Some(b) = crate::uart::get() {
        // SAFETY: only the IRQ handler of vCPU 0 touches the line buffer.
        let (buf, len) = unsafe { &mut *core::ptr::addr_of_mut!(LINE) };
        if b == b'\r' || b == b'\n' {
            if *len > 0 {
                println!(
                    "echo: {}",
                    core::str::from_utf8(&buf[..*len]).unwrap_or("?")
                );
                *len = 0;
                ECHOED.fetch_add(1, Ordering::AcqRel);
            }
        } else if *len < buf.len() {
            buf[*len] = b;
            *len += 1;
        }
    }
}

/// Tries to take over an SPI of another partition.
pub fn steal(intid: u32) {
    gic::init_distributor();
    gic::enable(intid, 0);
    let word = gic::enabled_word(intid, 0);
    println!(
        "steal: enable bit of SPI {intid} reads {}",
        (word >> (intid % 32)) & 1
    );
}

#[no_mangle]
extern "C" fn on_irq() {
    let entry = counter();
    let mut first = true;
    while let Some(iar) = gic::ack() {
        let id = iar & 0x3ff;
        let me = vcpu_index();
        if crate::BENCHING.load(Ordering::Relaxed) {
            // The first interrupt was signalled at entry; later ones in
            // this loop came while it was being handled.
            let t = if first { entry } else { counter() };
            first = false;
            crate::bench::on_irq_entry(t, id);
            gic::eoi(iar);
            continue;
        }
        match id {
            id if id < 16 && crate::hostile::WATCHING.load(Ordering::Acquire) => {
                crate::hostile::sgi_seen(id)
            }
            id if id == PROBE.load(Ordering::Relaxed) => {
                if id == VTIMER || id == PTIMER {
                    // Its line stays high until the timer is stopped.
                    stop_timer();
                }
                PROBE_PRIORITY.store(gic::running_priority(), Ordering::Relaxed);
                PROBE_TAKEN.fetch_add(1, Ordering::AcqRel);
            }
            VTIMER | PTIMER if id == timer_intid() => tick(me),
            SGI => {
                SGI_COUNT.fetch_add(1, Ordering::AcqRel);
            }
            8..=15 => {
                if id == 8 {
                    SGI8_TAKEN.fetch_add(1, Ordering::Relaxed);
                }
                SEEN_SGIS.fetch_or(1 << id, Ordering::AcqRel);
            }
            id if id == UART_SPI.load(Ordering::Relaxed) => uart_rx(),
            id if id == crate::rpmsg::SPI.load(Ordering::Relaxed) => crate::rpmsg::on_irq(),
            id if id == crate::control::SPI.load(Ordering::Relaxed) => {
                crate::control::INTERRUPTS.fetch_add(1, Ordering::Relaxed);
            }
            id if id == RTC_SPI.load(Ordering::Relaxed) => {
                gic::disable(id, 0);
                gic::enable(id, 0);
                rtc_taken(RTC_BASE.load(Ordering::Relaxed));
            }
            other => println!("irq: unexpected interrupt {other}"),
        }
        gic::eoi(iar);
    }
}
