//! Partita's RTOS: a small preemptive real-time kernel (kernel.rs) and the
//! services that show the system:
//!
//! - `rpmsg`: announces `rpmsg-raw` (address 1024, echo) and
//!   `rpmsg-jitter` (1025) and hands received messages to their endpoints;
//! - `echo`: answers every message to `rpmsg-raw` with the same bytes;
//! - `periodic`: the highest-priority task, released every period
//!   (`period-us=`, 1,000 by default); it measures how late each release
//!   is, and `rpmsg-jitter` reports it;
//! - `demo` (bootarg): two equal low-priority workers sharing the CPU
//!   round-robin, preempted by a higher-priority one;
//! - `run-for=MS` (bootarg): report and power off after MS milliseconds;
//! - `rpmsg-jitter` takes commands too: `off` powers off, `crash` crashes.
#![no_std]
#![no_main]

mod kernel;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use guest_common::virtio::{self, Receiver, Sender, BUF, HDR, NS_ADDR};
use guest_common::{counter, counter_freq, gic, hvc, println, uart, PSCI_SYSTEM_OFF};
use kernel::{delay_us, sleep_until, spawn, Queue, Semaphore};

core::arch::global_asm!(include_str!("vectors.S"));

const ECHO_ADDR: u32 = 1024;
const JITTER_ADDR: u32 = 1025;

#[derive(Clone, Copy)]
struct Msg {
    src: u32,
    len: usize,
    data: [u8; BUF - HDR],
}

static mut ECHO: Option<Queue<Msg, 4>> = None;
static RPMSG_SEM: AtomicUsize = AtomicUsize::new(usize::MAX);
static mut TX: Sender = Sender::new();
static PERIOD: AtomicU64 = AtomicU64::new(0);
static RELEASES: AtomicU64 = AtomicU64::new(0);
static LATE_SUM: AtomicU64 = AtomicU64::new(0);
static LATE_MAX: AtomicU64 = AtomicU64::new(0);
/// Releases by lateness, bin k holding [2^k, 2^(k+1)) ticks (bin 0 also 0).
static LATE_BINS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
static RUN_FOR_MS: AtomicU64 = AtomicU64::new(0);

fn echo_queue() -> &'static Queue<Msg, 4> {
    // SAFETY: set once in `guest_main` before any task runs, read-only after.
    unsafe { (*core::ptr::addr_of!(ECHO)).as_ref() }
        .unwrap_or_else(|| unreachable!("queue set up at boot"))
}

/// Sends through the one transmit queue, waiting for a free buffer.
fn send(src: u32, dst: u32, payload: &[u8]) {
    loop {
        let sent = {
            let daif: u64;
            // SAFETY: masks IRQs: tasks share the one Sender.
            unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif) };
            // SAFETY: only reached with interrupts masked on our one vCPU.
            let ok = unsafe { (*core::ptr::addr_of_mut!(TX)).send(src, dst, payload) };
            // SAFETY: restores the mask.
            unsafe { core::arch::asm!("msr daif, {}", in(reg) daif) };
            ok
        };
        if sent {
            return;
        }
        delay_us(50);
    }
}

fn virtio_irq() {
    virtio::ack_interrupt();
    let id = RPMSG_SEM.load(Ordering::Relaxed);
    if id != usize::MAX {
        kernel_sem(id).give();
    }
}

fn kernel_sem(id: usize) -> Semaphore {
    Semaphore::from_id(id)
}

fn report(buf: &mut [u8]) -> usize {
    let n = RELEASES.load(Ordering::Relaxed);
    let mean = LATE_SUM.load(Ordering::Relaxed) / n.max(1);
    let max = LATE_MAX.load(Ordering::Relaxed);
    let period_us = PERIOD.load(Ordering::Relaxed) * 1_000_000 / counter_freq();
    let mut w = guest_common::BufWriter::new(buf);
    let _ = core::fmt::write(
        &mut w,
        format_args!(
            "jitter: {n} releases every {period_us} us, lateness mean {mean} max {max} ticks"
        ),
    );
    w.at
}

fn announce() {
    send(
        ECHO_ADDR,
        NS_ADDR,
        &virtio::ns_message("rpmsg-raw", ECHO_ADDR),
    );
    send(
        JITTER_ADDR,
        NS_ADDR,
        &virtio::ns_message("rpmsg-jitter", JITTER_ADDR),
    );
    println!("rtos: endpoints announced at counter {}", counter());
}

fn rpmsg_task(sem: usize) {
    let sem = kernel_sem(sem);
    let mut rx = Receiver::new();
    // The endpoints are announced each time the peer's driver comes up:
    // a peer that restarted lost them with its old driver, and a peer
    // that is not up yet would only get them with a queue of stale ones.
    let mut announced: Option<u32> = None;
    loop {
        match virtio::peer_ready() {
            (true, generation) if announced != Some(generation) => {
                announce();
                announced = Some(generation);
            }
            (false, _) => announced = None,
            _ => {}
        }
        sem.take();
        rx.poll(|src, dst, p, _| match dst {
            ECHO_ADDR => {
                let mut m = Msg {
                    src,
                    len: p.len(),
                    data: [0; BUF - HDR],
                };
                m.data[..p.len()].copy_from_slice(p);
                echo_queue().push(m);
            }
            JITTER_ADDR if p == b"off" => power_off(format_args!("as asked over rpmsg")),
            JITTER_ADDR if p == b"crash" => crash(),
            JITTER_ADDR => {
                let mut b = [0u8; 160];
                let n = report(&mut b);
                send(JITTER_ADDR, src, &b[..n]);
            }
            other => println!("rtos: message for unknown endpoint {other} dropped"),
        });
    }
}

/// Crashes as asked (for the recovery tests): a jump outside its memory,
/// whose instruction abort its fault handler turns into a crash report.
fn crash() -> ! {
    println!("rtos: crashing as asked over rpmsg");
    // SAFETY: deliberately not; the fault handler reports the crash.
    unsafe { core::arch::asm!("br {}", in(reg) 0u64, options(noreturn)) }
}

fn echo_task(_: usize) {
    loop {
        let m = echo_queue().pop();
        send(ECHO_ADDR, m.src, &m.data[..m.len]);
    }
}

fn periodic_task(_: usize) {
    let period = PERIOD.load(Ordering::Relaxed);
    let mut next = counter();
    loop {
        next += period;
        sleep_until(next);
        let late = counter().saturating_sub(next);
        RELEASES.fetch_add(1, Ordering::Relaxed);
        LATE_SUM.fetch_add(late, Ordering::Relaxed);
        LATE_MAX.fetch_max(late, Ordering::Relaxed);
        LATE_BINS[63 - (late | 1).leading_zeros() as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Work that takes several time slices of actually running (not of time
/// passing while the host runs something else).
fn busy_work() {
    for i in 0..1_000_000u32 {
        core::hint::black_box(i);
    }
}

fn worker(which: usize) {
    let name = if which == 0 { "a" } else { "b" };
    for k in 1..=3 {
        busy_work();
        println!("rr: worker {name} step {k}");
    }
    println!("rr: worker {name} done after {} turns", kernel::turns());
}

fn urgent(_: usize) {
    delay_us(4000);
    println!("prio: urgent preempts the workers");
}

fn supervisor(_: usize) {
    let ms = RUN_FOR_MS.load(Ordering::Relaxed);
    delay_us(ms * 1000);
    power_off(format_args!("after {ms} ms"));
}

/// Prints the jitter report and ends the partition.
fn power_off(why: core::fmt::Arguments<'_>) {
    let mut b = [0u8; 160];
    let n = report(&mut b);
    println!("rtos: {}", core::str::from_utf8(&b[..n]).unwrap_or("?"));
    // A few bins a line, so that no line outgrows the console's.
    let bins = LATE_BINS
        .iter()
        .enumerate()
        .map(|(k, b)| (k, b.load(Ordering::Relaxed)));
    let mut bins = bins.filter(|&(_, c)| c > 0).peekable();
    while bins.peek().is_some() {
        let mut h = [0u8; 160];
        let mut w = guest_common::BufWriter::new(&mut h);
        for (k, c) in bins.by_ref().take(4) {
            let lo = if k == 0 { 0 } else { 1u64 << k };
            let _ = core::fmt::write(&mut w, format_args!(" {lo}-{}:{c}", (2u64 << k) - 1));
        }
        println!("rtos: jitter histogram (ticks:releases){}", w.as_str());
    }
    println!("rtos: powering off {why}");
    hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
}

#[no_mangle]
extern "C" fn guest_main(dtb: usize) -> ! {
    // SAFETY: the hypervisor put a valid device tree at x0.
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }) else {
        loop {
            core::hint::spin_loop()
        }
    };
    if let Some((base, _)) = guest_common::console(&fdt) {
        uart::init(base);
    }
    let args = fdt.chosen().bootargs().unwrap_or("").trim_end_matches('\0');
    let arg = |k: &str| {
        args.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<u64>().ok())
    };
    PERIOD.store(
        counter_freq() * arg("period-us=").unwrap_or(1000) / 1_000_000,
        Ordering::Relaxed,
    );
    println!(
        "rtos: Partita RTOS on 1 vCPU, counter at {} Hz, bootargs \"{args}\"",
        counter_freq()
    );
    gic::probe(&fdt);
    gic::init_distributor();
    gic::init_cpu(0);
    // SAFETY: before any task runs.
    unsafe { *core::ptr::addr_of_mut!(ECHO) = Some(Queue::new()) };

    spawn("periodic", 6, periodic_task, 0);
    if let Some(n) = fdt.find_compatible(&["virtio,mmio"]) {
        let base = n
            .reg()
            .and_then(|mut r| r.next())
            .map_or(0, |r| r.starting_address as u64);
        match virtio::init(base) {
            Ok(()) => {
                let sem = Semaphore::new(1);
                let id = sem.id();
                RPMSG_SEM.store(id, Ordering::Relaxed);
                if let Some(spi) = guest_common::spi_of(n) {
                    guest_common::configure_trigger(n);
                    kernel::on_interrupt(spi, virtio_irq);
                }
                spawn("rpmsg", 4, rpmsg_task, id);
                spawn("echo", 3, echo_task, 0);
                println!(
                    "rtos: endpoint rpmsg-raw at {ECHO_ADDR} (echo), rpmsg-jitter at {JITTER_ADDR}"
                );
            }
            Err(e) => println!("rtos: virtio device at {base:#x}: {e}"),
        }
    }
    if args.split_whitespace().any(|w| w == "demo") {
        spawn("worker-a", 1, worker, 0);
        spawn("worker-b", 1, worker, 1);
        spawn("urgent", 2, urgent, 0);
    }
    if let Some(ms) = arg("run-for=") {
        RUN_FOR_MS.store(ms, Ordering::Relaxed);
        spawn("supervisor", 7, supervisor, 0);
    }
    for (name, prio) in kernel::tasks().iter().filter(|t| !t.0.is_empty()) {
        println!("rtos: task {name} priority {prio}");
    }
    kernel::start(1000)
}

#[no_mangle]
extern "C" fn guest_secondary(_: usize) -> ! {
    loop {
        core::hint::spin_loop()
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("rtos: panic: {info}");
    guest_common::report_crash(0, 0, 0)
}
