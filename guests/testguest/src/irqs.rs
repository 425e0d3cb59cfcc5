//! Interrupt scenarios: the virtual timer, SGIs between vCPUs, a passed-
//! through device's interrupt, and the isolation of other partitions'.

use crate::{gic, hvc, println, secondary_start, vcpu_index, PSCI_AFFINITY_INFO, PSCI_CPU_ON};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guest_common::counter;

const VTIMER: u32 = 27;
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

fn unmask() {
    // SAFETY: IRQs on at EL1; the vector table handles them.
    unsafe { asm!("msr daifclr, #2") };
}

fn arm_timer() {
    let tval = freq() / 1000;
    // SAFETY: the virtual timer belongs to the guest.
    unsafe {
        asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) tval, in(reg) 1u64)
    };
}

fn stop_timer() {
    // SAFETY: as above.
    unsafe { asm!("msr cntv_ctl_el0, xzr", "isb") };
}

/// Counts TICKS virtual-timer interrupts at 1 kHz on this vCPU.
pub fn timer_on_this_vcpu() {
    let me = vcpu_index();
    gic::init_cpu(me);
    gic::enable(VTIMER, me);
    let start = counter();
    arm_timer();
    unmask();
    while TICK_COUNT[me].load(Ordering::Acquire) < TICKS {
        // SAFETY: wait for the next interrupt.
        unsafe { asm!("wfi") };
    }
    stop_timer();
    let us = (counter() - start) * 1_000_000 / freq();
    println!("timer: vcpu {me} counted {TICKS} ticks in {us} us");
}

pub fn timer(cpus: usize) {
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
            VTIMER => {
                let n = TICK_COUNT[me].fetch_add(1, Ordering::AcqRel) + 1;
                if n == TICKS / 2 {
                    // Disabled and enabled again while active: nothing may be lost.
                    gic::disable(VTIMER, me);
                    gic::enable(VTIMER, me);
                }
                if n < TICKS {
                    arm_timer();
                } else {
                    stop_timer();
                }
            }
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
