//! A bare-metal test guest. It reads its device tree like any OS would,
//! prints through the console UART named there, and runs the scenarios its
//! bootargs list, each printing lines the regression tests look for:
//!
//! - `hello`: its view of the machine;
//! - `calls`: PSCI queries, and unknown HVC/SMC calls that must fail cleanly;
//! - `smp`: starts every other vCPU with PSCI CPU_ON, and stops them again;
//! - `abort`: reads outside its memory and expects a data abort;
//! - `iabort`: branches outside its memory and expects an instruction
//!   abort in its own handler, then goes on;
//! - `reset`: resets itself once with SYSTEM_RESET;
//! - `count=N`: prints N numbered lines, slowly;
//! - `jump-away`: branches outside its memory without expecting it: its
//!   handler reports a crash, and the hypervisor stops it;
//! - `timer`: 1,000 virtual-timer ticks at 1 kHz on every vCPU;
//! - `ptimer`: the same with the EL1 physical timer (CNTP, PPI 30);
//! - `timer-late`: 1,000 virtual-timer ticks, each EOId only after the
//!   next deadline passed (the line is high again while still active);
//! - `timer-priority`: the virtual timer taken at each priority written
//!   to it while running;
//! - `sgi-self`: SGIs to itself at each priority written, held while
//!   disabled;
//! - `pending`: both timers' pending state as the GIC shows it, and a
//!   set-pending write;
//! - `suspend`: PSCI CPU_SUSPEND waits for the timer's interrupt;
//! - `pmu`, `setway=ID`, `impdef`: the PMU, set/way cache maintenance and
//!   implementation-defined registers (see cpu.rs);
//! - `registers`: x1-x30 kept across calls, an emulated load, interrupts
//!   and CPU_SUSPEND (see registers.rs);
//! - `ipi=N`: N SGIs from vCPU 0 to vCPU 1, one after the other;
//! - `rtc`: two alarms of its passed-through PL031 (or two intervals of
//!   its Cadence TTC);
//! - `steal=INTID`: tries to enable another partition's SPI;
//! - `rpmsg=N[,slow|,chain|,burst]`, `rpmsg-late=MS,N`,
//!   `rpmsg-fault=overlong|small-rx,N`, `rpmsg-bad`, `rpmsg-client=N`: see
//!   rpmsg.rs;
//! - `echo=N`: echoes N typed lines (console receive interrupt);
//! - `spam=N`: N long lines as fast as possible;
//! - `bench-NAME=N`: N samples of timer, sgi, hvc or psci (see bench.rs);
//! - `many-sgis`: eight SGIs pending at once, more than list registers;
//! - `busy=MS`: hammers memory for MS milliseconds;
//! - `stay`: never powers off;
//! - `control=N`, `control-load`, `control-crash`, `control-refusals`,
//!   `control-denied=ID`: drive another partition (see control.rs);
//! - `reset-race=N`, `timer-off=N`, `rpmsg-restarts=N[,send]`: the
//!   lifecycle's races (see races.rs);
//! - `hostile=GROUP,...`: attacks on every boundary, counted (see
//!   hostile.rs); `flood=MS`: notifications, faults and console lines
//!   for MS ms; `watch-sgis`: reports any SGI that arrives.
//!
//! Without `stay` it ends with PSCI SYSTEM_OFF. An exception it does not
//! expect, or a panic, is reported to the hypervisor as a crash.
#![no_std]
#![no_main]

mod bench;
mod control;
mod cpu;
mod hostile;
mod irqs;
mod races;
mod registers;
mod rpmsg;

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
pub use guest_common::{
    gic, hvc, println, uart, PSCI_AFFINITY_INFO, PSCI_CPU_OFF, PSCI_CPU_ON, PSCI_FEATURES,
    PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET, PSCI_VERSION,
};

global_asm!(include_str!("start.S"));

fn smc(x0: u64) -> i64 {
    let r: u64;
    // SAFETY: as `hvc`; the hypervisor traps SMC from EL1.
    unsafe { asm!("smc #0", inout("x0") x0 => r, out("x1") _, out("x2") _, out("x3") _) };
    r as i64
}

extern "C" {
    pub fn secondary_start();
}

/// Interrupts are being timed: the handler only notes when they came.
pub static BENCHING: AtomicBool = AtomicBool::new(false);
static ONLINE: AtomicUsize = AtomicUsize::new(0);
static ABORTS: AtomicU64 = AtomicU64::new(0);

#[no_mangle]
extern "C" fn guest_main(dtb: usize) -> ! {
    // SAFETY: the hypervisor put a valid device tree at x0.
    let fdt = match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        Ok(f) => f,
        Err(_) => loop {
            // No device tree means no console: nothing to say it on.
            core::hint::spin_loop()
        },
    };
    if let Some((base, _)) = guest_common::console(&fdt) {
        uart::init(base);
    }
    let args = fdt.chosen().bootargs().unwrap_or("").trim_end_matches('\0');
    println!("testguest: up on vcpu 0, bootargs \"{args}\"");
    gic::probe(&fdt);
    let mem = fdt
        .memory()
        .regions()
        .next()
        .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64));
    let cpus = fdt.cpus().count();
    for word in args.split_whitespace() {
        match word {
            "hello" => {
                let (base, size) = mem.unwrap_or((0, 0));
                println!(
                    "hello: {} with {cpus} vcpu(s), memory {base:#x}+{size:#x}",
                    fdt.root().model()
                );
                // Its RAM as Normal write-back (MAIR 0xff), the console as
                // Device-nGnRE (0x04): the map guest-common set up at boot.
                let attr = |va| guest_common::mmu::attributes(va).map_or(-1, i32::from);
                println!(
                    "hello: MMU and caches {}; memory attributes {:#x}, console {:#x}",
                    if guest_common::mmu::caches_on() {
                        "on"
                    } else {
                        "off"
                    },
                    attr(base),
                    attr(guest_common::console(&fdt).map_or(0, |c| c.0))
                );
                let memory = fdt.all_nodes().filter(|n| {
                    n.property("device_type").and_then(|p| p.as_str()) == Some("memory")
                });
                for r in memory.flat_map(|n| n.reg().into_iter().flatten()).skip(1) {
                    let (b, n) = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
                    println!(
                        "hello: memory {b:#x}+{n:#x} attributes {:#x} to {:#x}",
                        attr(b),
                        attr(b + n.saturating_sub(8))
                    );
                }
            }
            "calls" => calls(),
            "smp" => smp(cpus),
            "abort" => abort(),
            "iabort" => iabort(),
            "reset" => reset(mem.map_or(0, |m| m.0)),
            "jump-away" => {
                println!("jump-away: branching to 0x0");
                // SAFETY: deliberately not; our handler reports a crash.
                unsafe { asm!("br {}", in(reg) 0u64, options(noreturn)) }
            }
            "stay" => {}
            "watch-sgis" => hostile::watch_sgis(0),
            // Parameters of `hostile=` and `flood=`.
            w if ["victims=", "hyp=", "mmio=", "gic=", "ids=", "self="]
                .iter()
                .any(|k| w.starts_with(k)) => {}
            w if w.starts_with("hostile=") || w.starts_with("flood=") => {
                let virtio = fdt.find_compatible(&["virtio,mmio"]);
                let mut own_spis = [0u32; 4];
                own_spis[0] = guest_common::console(&fdt).and_then(|c| c.1).unwrap_or(0);
                own_spis[1] = virtio.and_then(guest_common::spi_of).unwrap_or(0);
                let gicr = fdt
                    .find_compatible(&["arm,gic-v3"])
                    .and_then(|n| n.reg()?.nth(1))
                    .map_or(0, |r| r.starting_address as u64);
                let me = hostile::Me {
                    mem: mem.unwrap_or((0, 0)),
                    cpus,
                    virtio: virtio
                        .and_then(|n| n.reg()?.next())
                        .map(|r| r.starting_address as u64),
                    gicr,
                    own_spis,
                };
                match w.strip_prefix("flood=") {
                    Some(ms) => hostile::flood(ms.parse().unwrap_or(1000), args, &me),
                    None => hostile::run(&w[8..], args, &me),
                }
            }
            "timer" => irqs::timer(cpus, false, false),
            "ptimer" => irqs::timer(cpus, true, false),
            "timer-late" => irqs::timer(cpus, false, true),
            "timer-priority" => irqs::timer_priority(),
            "sgi-self" => irqs::sgi_self(),
            "pending" => irqs::pending(),
            "suspend" => irqs::suspend(),
            "pmu" => cpu::pmu(),
            "impdef" => cpu::impdef(),
            "registers" => registers::registers(),
            w if w.starts_with("setway=") => cpu::setway(w[7..].parse().unwrap_or(1)),
            "many-sgis" => irqs::many_sgis(),
            w if w.starts_with("busy=") => busy(w[5..].parse().unwrap_or(1000)),
            "rtc" => irqs::rtc(&fdt),
            w if w.starts_with("ipi=") => irqs::ipi(w[4..].parse().unwrap_or(10), cpus),
            w if w.starts_with("bench-") => {
                let (name, n) = w[6..].split_once('=').unwrap_or((&w[6..], "1000"));
                let n = n.parse().unwrap_or(1000);
                BENCHING.store(true, Ordering::Relaxed);
                match name {
                    "timer" => bench::timer(n),
                    "sgi" => bench::sgi(n),
                    "hvc" => bench::null_hvc(n),
                    "psci" => bench::psci_version(n),
                    "mmio" => bench::mmio(&fdt, n),
                    "ipi" => bench::ipi(n),
                    "rpmsg" => rpmsg::bench(&fdt, n),
                    "restart" => control::bench_restart(&fdt, n),
                    _ => println!("bench: unknown benchmark `{name}`"),
                }
                BENCHING.store(false, Ordering::Relaxed);
            }
            w if w.starts_with("control=") => control::cycles(&fdt, w[8..].parse().unwrap_or(1)),
            "control-load" => control::load(&fdt),
            "control-crash" => control::crash(&fdt),
            "control-refusals" => control::refusals(&fdt),
            w if w.starts_with("control-denied=") => control::denied(w[15..].parse().unwrap_or(2)),
            w if w.starts_with("reset-race=") => {
                races::reset_race(mem.map_or(0, |m| m.0), w[11..].parse().unwrap_or(10))
            }
            w if w.starts_with("timer-off=") => races::timer_off(w[10..].parse().unwrap_or(10)),
            w if w.starts_with("rpmsg-restarts=") => {
                let (n, mode) = w[15..].split_once(',').unwrap_or((&w[15..], ""));
                races::stream_across_restarts(
                    &fdt,
                    mem.map_or(0, |m| m.0),
                    n.parse().unwrap_or(10),
                    mode,
                )
            }
            w if w.starts_with("rpmsg=") => {
                let (n, mode) = w[6..].split_once(',').unwrap_or((&w[6..], ""));
                if rpmsg::init(&fdt) {
                    rpmsg::exchange(n.parse().unwrap_or(100), rpmsg::Mode::from_word(mode));
                }
            }
            w if w.starts_with("rpmsg-gather=") => {
                if rpmsg::init(&fdt) {
                    rpmsg::gather(w[13..].parse().unwrap_or(12));
                }
            }
            "rpmsg-hand-off" => {
                if rpmsg::init(&fdt) {
                    rpmsg::hand_off();
                }
            }
            w if w.starts_with("rpmsg-late=") => {
                let (ms, n) = w[11..].split_once(',').unwrap_or((&w[11..], "100"));
                rpmsg::late(&fdt, ms.parse().unwrap_or(100), n.parse().unwrap_or(100));
            }
            w if w.starts_with("rpmsg-fault=") => {
                let (kind, n) = w[12..].split_once(',').unwrap_or((&w[12..], "100"));
                rpmsg::fault(&fdt, kind, n.parse().unwrap_or(100));
            }
            w if w.starts_with("rpmsg-client=") => {
                if rpmsg::init(&fdt) {
                    rpmsg::client(w[13..].parse().unwrap_or(100));
                }
            }
            "rpmsg-echo" => {
                if rpmsg::init(&fdt) {
                    rpmsg::echo_server();
                }
            }
            "rpmsg-bad" => {
                if rpmsg::init(&fdt) {
                    rpmsg::corrupt();
                }
            }
            w if w.starts_with("echo=") => irqs::echo(&fdt, w[5..].parse().unwrap_or(1)),
            w if w.starts_with("spam=") => spam(w[5..].parse().unwrap_or(100)),
            w if w.starts_with("steal=") => irqs::steal(w[6..].parse().unwrap_or(39)),
            w if w.starts_with("count=") => count(w[6..].parse().unwrap_or(10)),
            w => println!("testguest: unknown scenario `{w}`"),
        }
    }
    if args.split_whitespace().any(|w| w == "stay") {
        println!("testguest: staying up");
        loop {
            // SAFETY: waits for an interrupt, of which none are enabled.
            unsafe { asm!("wfi") };
        }
    }
    println!("testguest: done, powering off");
    hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
    println!("testguest: SYSTEM_OFF returned!");
    loop {
        core::hint::spin_loop()
    }
}

/// Hammers its memory for `ms` milliseconds of counter time: a noisy
/// neighbour for the others' benchmarks.
fn busy(ms: u64) {
    static mut BUF: [u64; 4096] = [0; 4096];
    let end = guest_common::counter() + guest_common::counter_freq() * ms / 1000;
    let mut i = 0usize;
    while guest_common::counter() < end {
        // SAFETY: our own buffer; volatile so the stores happen.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(BUF[i % 4096]), i as u64) };
        i = i.wrapping_add(67);
    }
    println!("busy: done after {ms} ms");
}

/// `n` long lines as fast as the console takes them.
fn spam(n: u32) {
    for i in 1..=n {
        println!("spam {i:05} the quick brown fox jumps over the lazy dog, the quick brown fox jumps over the lazy dog, the quick brown fox {i:05}");
    }
}

fn calls() {
    let v = hvc(PSCI_VERSION, 0, 0, 0);
    println!("calls: psci version {}.{}", v >> 16, v & 0xffff);
    println!(
        "calls: features(CPU_ON) = {}",
        hvc(PSCI_FEATURES, PSCI_CPU_ON, 0, 0)
    );
    println!(
        "calls: features(CPU_SUSPEND) = {}",
        hvc(PSCI_FEATURES, 0x8400_0001, 0, 0)
    );
    println!("calls: unknown hvc returned {}", hvc(0x8600_1234, 0, 0, 0));
    println!("calls: unknown smc returned {}", smc(0xc200_0042));
    println!("calls: smc psci version {:#x}", smc(PSCI_VERSION));
    println!("calls: still running");
}

fn smp(cpus: usize) {
    println!("smp: {cpus} vcpus in the device tree");
    for i in 1..cpus {
        let r = hvc(
            PSCI_CPU_ON,
            i as u64,
            secondary_start as *const () as u64,
            i as u64,
        );
        println!("smp: cpu_on({i}) = {r}");
    }
    while ONLINE.load(Ordering::Acquire) < cpus - 1 {
        core::hint::spin_loop();
    }
    for i in 1..cpus {
        while hvc(PSCI_AFFINITY_INFO, i as u64, 0, 0) != 1 {
            core::hint::spin_loop();
        }
    }
    println!("smp: cpu_on(0) = {}", hvc(PSCI_CPU_ON, 0, 0, 0));
    println!(
        "smp: cpu_on({}) = {}",
        cpus + 7,
        hvc(PSCI_CPU_ON, cpus as u64 + 7, 0, 0)
    );
    println!(
        "smp: all {} secondary vcpus ran and are off again",
        cpus - 1
    );
}

/// This vCPU's number: Aff0 of its (virtual) MPIDR.
pub fn vcpu_index() -> usize {
    let mpidr: u64;
    // SAFETY: reads an ID register (virtualized by VMPIDR_EL2).
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr) };
    (mpidr & 0xff) as usize
}

/// Entry of vCPUs started with CPU_ON; the context says which job to do.
#[no_mangle]
extern "C" fn guest_secondary(context: usize) -> ! {
    let index = context & 0xff;
    match context >> 8 {
        1 => irqs::timer_on_this_vcpu(),
        2 => irqs::ipi_receiver(),
        3 => bench::ipi_receiver(),
        races::JOB_RESET => races::reset_now(),
        races::JOB_TIMER_OFF => races::timer_then_off(),
        races::JOB_HAND_OFF => rpmsg::hand_off_holder(),
        _ => {
            println!("smp: vcpu {index} online, mpidr {:#x}", vcpu_index());
            ONLINE.fetch_add(1, Ordering::Release);
        }
    }
    hvc(PSCI_CPU_OFF, 0, 0, 0);
    println!("smp: CPU_OFF returned!");
    loop {
        core::hint::spin_loop()
    }
}

fn abort() {
    // Flash at 0 on QEMU virt: a device no domain is given.
    let v = unsafe { core::ptr::read_volatile(0x1000 as *const u32) };
    println!(
        "abort: read returned {v:#x}, aborts taken: {}",
        ABORTS.load(Ordering::Relaxed)
    );
}

/// Boot count, kept in the guest's memory outside its image so that it
/// survives the image being reloaded at reset.
fn reset(mem_base: u64) {
    const MAGIC: u64 = 0x5245_5345_5400_0000;
    let slot = (mem_base + (1 << 20)) as *mut u64;
    // SAFETY: 1 MiB into our own memory, past this small image.
    let seen = unsafe { slot.read_volatile() };
    if seen == MAGIC {
        unsafe { slot.write_volatile(0) };
        println!("reset: second boot, after SYSTEM_RESET");
    } else {
        unsafe { slot.write_volatile(MAGIC) };
        println!("reset: first boot, resetting");
        hvc(PSCI_SYSTEM_RESET, 0, 0, 0);
        println!("reset: SYSTEM_RESET returned!");
    }
}

fn count(n: u32) {
    for i in 1..=n {
        for _ in 0..200_000 {
            core::hint::spin_loop();
        }
        println!("count {i}/{n}");
    }
}

/// Where `iabort` resumes after the instruction abort it provokes (0:
/// none expected).
static RESUME: AtomicU64 = AtomicU64::new(0);

/// Branches to flash at 0x1000 (a device no domain is given) and expects
/// the instruction abort in its own handler, which resumes it.
fn iabort() {
    let target = 0x1000u64;
    // SAFETY: the branch faults; `on_sync` resumes at label 2 with every
    // register the handler clobbers restored by the vector code.
    unsafe {
        asm!(
            "adr {r}, 2f",
            "str {r}, [{slot}]",
            "br {t}",
            "2:",
            r = out(reg) _,
            slot = in(reg) RESUME.as_ptr(),
            t = in(reg) target,
        )
    };
    println!(
        "iabort: resumed after {} instruction abort(s)",
        ABORTS.load(Ordering::Relaxed)
    );
}

/// Synchronous exception at EL1: a data abort or an instruction abort we
/// provoked is counted and skipped; anything else is a crash.
#[no_mangle]
extern "C" fn on_sync(esr: u64, far: u64, elr: u64) -> u64 {
    if hostile::PROBING.load(Ordering::Acquire) {
        return hostile::on_sync(esr, far, elr);
    }
    let ec = esr >> 26;
    if ec == 0x25 {
        ABORTS.fetch_add(1, Ordering::Relaxed);
        println!("abort: caught data abort, ESR {esr:#x} FAR {far:#x}");
        return elr + 4;
    }
    if cpu::expected_undefined(esr) {
        return elr + 4;
    }
    let resume = RESUME.swap(0, Ordering::Relaxed);
    if ec == 0x21 && resume != 0 {
        ABORTS.fetch_add(1, Ordering::Relaxed);
        println!("iabort: caught instruction abort, ESR {esr:#x} FAR {far:#x} ELR {elr:#x}");
        return resume;
    }
    on_unexpected(esr, far, elr)
}

#[no_mangle]
extern "C" fn on_unexpected(esr: u64, far: u64, elr: u64) -> ! {
    println!("testguest: unexpected exception ESR {esr:#x} FAR {far:#x} ELR {elr:#x}");
    guest_common::report_crash(esr, far, elr)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("testguest: panic: {info}");
    guest_common::report_crash(0, 0, 0)
}
