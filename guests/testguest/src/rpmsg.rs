//! rpmsg scenarios over the hypervisor's virtio rpmsg device.
//!
//! `rpmsg=N` sends N numbered messages of varying size (up to 496 bytes)
//! and checks that N arrive from the peer in order and intact; `,slow`
//! makes this side a slow receiver, `,chain` sends each message as a
//! chain of 5 descriptors, `,poll` takes messages with interrupts off
//! while busy and sleeps (WFI) when it has nothing to do, as a receiver
//! that lets the hypervisor coalesce does, `,burst` sends 16 at a time with one notify and
//! takes nothing before a whole burst has arrived (more than the
//! hypervisor moves in one trap: the rest must follow with no further
//! notify); `rpmsg-late=MS,N` starts MS ms late, brings its device up as
//! OpenAMP does (no notify), and must find the peer's announcement
//! waiting; `rpmsg-fault=overlong,N` sends a message longer than the
//! link allows and `rpmsg-fault=small-rx,N` posts receive buffers shorter
//! than it: either device needs a reset, the driver recovers, and the
//! exchange of N follows; `rpmsg-bad` corrupts its queue; `rpmsg-client=N`
//! talks to the RTOS's echo and jitter endpoints; `rpmsg-hand-off` and
//! `rpmsg-gather=N` leave a vCPU's held messages behind it (see
//! `hand_off`).

use crate::println;
use core::sync::atomic::{AtomicU32, Ordering};
use guest_common::virtio::{self, Receiver, Sender, Style, BUF, HDR, NS_ADDR};

const ADDR: u32 = 1024;
pub static SPI: AtomicU32 = AtomicU32::new(0);
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

/// How `init_as` brings the device up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Linux,
    OpenAmp,
    /// With receive buffers of this many bytes.
    Posting(u32),
}

/// Finds the device, starts it, and counts its interrupts.
pub fn init(fdt: &fdt::Fdt<'_>) -> bool {
    init_as(fdt, Start::Linux)
}

pub fn init_as(fdt: &fdt::Fdt<'_>, how: Start) -> bool {
    let Some(n) = fdt.find_compatible(&["virtio,mmio"]) else {
        println!("rpmsg: no virtio-mmio device");
        return false;
    };
    let base = n
        .reg()
        .and_then(|mut r| r.next())
        .map_or(0, |r| r.starting_address as u64);
    let spi = guest_common::spi_of(n).unwrap_or(0);
    SPI.store(spi, Ordering::Relaxed);
    let started = match how {
        Start::Linux => virtio::init(base),
        Start::OpenAmp => virtio::init_with(base, Style::OpenAmp),
        Start::Posting(len) => virtio::init_posting(base, len),
    };
    if let Err(e) = started {
        println!("rpmsg: {e} at {base:#x}");
        return false;
    }
    guest_common::listen(n);
    println!(
        "rpmsg: device at {base:#x}, irq {}, features {:#x}, virtio-mmio version {}",
        spi - 32,
        virtio::features(),
        virtio::version()
    );
    true
}

pub fn on_irq() {
    virtio::ack_interrupt();
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

fn message(seq: u32, out: &mut [u8; BUF - HDR]) -> usize {
    let len = 8 + (seq as usize * 37) % (BUF - HDR - 8);
    out[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in out[4..len].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    len
}

fn stuck(idle: &mut u64, progress: bool) -> bool {
    *idle = if progress { 0 } else { *idle + 1 };
    *idle > 50_000_000 || virtio::status() & virtio::STATUS_NEEDS_RESET != 0
}

/// How `exchange` sends and receives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Slow,
    Chain,
    Burst,
    Poll,
}

impl Mode {
    pub fn from_word(w: &str) -> Mode {
        match w {
            "slow" => Mode::Slow,
            "chain" => Mode::Chain,
            "burst" => Mode::Burst,
            "poll" => Mode::Poll,
            _ => Mode::Plain,
        }
    }
}

/// Messages per burst: a whole queue, more than one trap moves.
const BURST: u32 = virtio::Q as u32;

/// The exchange: announce (except in bursts, which count every buffer),
/// then N messages each way.
pub fn exchange(n: u32, mode: Mode) {
    let (mut tx, mut rx) = (Sender::new(), Receiver::new());
    if mode != Mode::Burst {
        tx.send(ADDR, NS_ADDR, &virtio::ns_message("rpmsg-raw", ADDR));
    }
    let (mut sent, mut received, mut bad, mut idle) = (0u32, 0u32, 0u32, 0u64);
    let mut msg = [0u8; BUF - HDR];
    let mut expect = [0u8; BUF - HDR];
    rx.interrupts(mode != Mode::Poll);
    while sent < n || received < n {
        let mut progress = false;
        match mode {
            Mode::Burst if sent < n && tx.drained() => {
                let k = BURST.min(n - sent);
                for _ in 0..k {
                    let len = message(sent, &mut msg);
                    tx.queue(ADDR, ADDR, &msg[..len]);
                    sent += 1;
                }
                tx.kick();
                progress = true;
            }
            Mode::Burst => {}
            Mode::Chain if sent < n => {
                let len = message(sent, &mut msg);
                if tx.send_chained(ADDR, ADDR, &msg[..len], 5) {
                    sent += 1;
                    progress = true;
                }
            }
            _ if sent < n && tx.can_send() => {
                let len = message(sent, &mut msg);
                tx.send(ADDR, ADDR, &msg[..len]);
                sent += 1;
                progress = true;
            }
            _ => {}
        }
        // A burst is taken whole or not at all: what the hypervisor did
        // not move in the notify's trap must arrive without another.
        if mode == Mode::Burst && u32::from(rx.pending()) < BURST.min(n - received) {
            if stuck(&mut idle, progress) {
                println!(
                    "rpmsg: stuck after sending {sent} and receiving {received} (a burst of {} of {})",
                    rx.pending(),
                    BURST.min(n - received)
                );
                return;
            }
            continue;
        }
        if mode == Mode::Poll {
            mask();
        }
        progress |= rx.poll(|_, dst, p, len| {
            if dst == NS_ADDR {
                if let Some((name, at)) = virtio::parse_ns(p) {
                    println!("rpmsg: peer announced {name} at {at}");
                }
                return;
            }
            let want = message(received, &mut expect);
            if p.len() != want || len as usize != HDR + want || p != &expect[..want] {
                bad += 1;
            }
            received += 1;
            if mode == Mode::Slow {
                for _ in 0..3000 {
                    core::hint::spin_loop();
                }
            }
        }) > 0;
        if mode == Mode::Poll {
            // Nothing to send or take: wait for a message (with IRQs
            // masked since the poll, none slips in before the WFI).
            if !progress && received < n {
                rx.sleep();
            }
            unmask();
        }
        if stuck(&mut idle, progress) {
            println!(
                "rpmsg: stuck after sending {sent} and receiving {received} (status {:#x})",
                virtio::status()
            );
            return;
        }
    }
    // Let the peer's last acknowledgements arrive before powering off.
    while !tx.drained() && virtio::status() & virtio::STATUS_NEEDS_RESET == 0 {
        core::hint::spin_loop();
    }
    let irqs = if INTERRUPTS.load(Ordering::Relaxed) > 0 {
        "yes"
    } else {
        "none"
    };
    rx.interrupts(true);
    println!(
        "rpmsg: sent {sent}, received {received}, {bad} bad, interrupts {irqs}, {} sent without a notify",
        tx.unnotified()
    );
}

/// `rpmsg-hand-off`'s messages: HAND_OFF in all, the first two from
/// vCPU 1.
const HAND_OFF: u32 = 12;
/// vCPU 1 has sent its two; vCPU 0 has queued the rest.
static HELD: AtomicU32 = AtomicU32::new(0);
static QUEUED: AtomicU32 = AtomicU32::new(0);

/// vCPU 1 sends two messages to a peer that reads nothing before all
/// have come (`gather`): the second finds it busy, and vCPU 1's CPU holds
/// the link. vCPU 0 queues the rest, which the device asks it not to
/// notify, and vCPU 1 goes off (CPU_OFF) still holding them: its CPU
/// must move them before it parks. Then vCPU 0 waits for every buffer
/// to come back.
pub fn hand_off() {
    let mut rx = Receiver::new();
    let mut up = false;
    let mut idle = 0u64;
    while !up {
        let got = rx.poll(|_, dst, _, _| up |= dst == NS_ADDR);
        if stuck(&mut idle, got > 0) {
            println!("hand-off: no announcement from the peer");
            return;
        }
    }
    let r = crate::hvc(
        crate::PSCI_CPU_ON,
        1,
        crate::secondary_start as *const () as u64,
        1 | ((crate::races::JOB_HAND_OFF as u64) << 8),
    );
    if r != 0 {
        println!("hand-off: cpu_on = {r}");
        return;
    }
    while HELD.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    let mut tx = Sender::continuing(2);
    let mut msg = [0u8; 64];
    for seq in 2..HAND_OFF {
        msg[..4].copy_from_slice(&seq.to_le_bytes());
        while !tx.send(ADDR, ADDR, &msg) {}
    }
    let quiet = tx.unnotified();
    QUEUED.store(1, Ordering::Release);
    while crate::hvc(crate::PSCI_AFFINITY_INFO, 1, 0, 0) != 1 {
        core::hint::spin_loop();
    }
    let mut idle = 0u64;
    while !tx.drained() {
        if stuck(&mut idle, false) {
            println!(
                "hand-off: vcpu 1 went off; {quiet} of {} queued here without a notify; stuck",
                HAND_OFF - 2
            );
            return;
        }
    }
    println!(
        "hand-off: vcpu 1 went off holding the link; {quiet} of {} queued here without a notify; all {HAND_OFF} moved",
        HAND_OFF - 2
    );
}

/// vCPU 1 of `hand_off`: its two messages, then CPU_OFF once vCPU 0 has
/// queued the rest.
pub fn hand_off_holder() {
    let mut tx = Sender::new();
    let mut msg = [0u8; 64];
    for seq in 0..2u32 {
        msg[..4].copy_from_slice(&seq.to_le_bytes());
        while !tx.send(ADDR, ADDR, &msg) {}
    }
    HELD.store(1, Ordering::Release);
    while QUEUED.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
}

/// The other side of `hand_off`: announces itself, reads nothing until
/// `n` messages have come (it polls, interrupts off: a busy receiver),
/// then checks they came in order.
pub fn gather(n: u32) {
    let (mut tx, mut rx) = (Sender::new(), Receiver::new());
    rx.interrupts(false);
    tx.send(ADDR, NS_ADDR, &virtio::ns_message("rpmsg-raw", ADDR));
    let mut idle = 0u64;
    while u32::from(rx.pending()) < n {
        if stuck(&mut idle, false) {
            println!("gather: stuck with {} of {n}", rx.pending());
            return;
        }
    }
    let (mut next, mut bad) = (0u32, 0u32);
    rx.poll(|_, _, p, _| {
        let seq = u32::from_le_bytes(p[..4].try_into().unwrap_or_default());
        if seq != next {
            bad += 1;
        }
        next += 1;
    });
    println!("gather: {next} of {n}, {bad} out of order");
}

/// Starts `ms` ms late and as OpenAMP's driver does (no notify after
/// DRIVER_OK): the announcement the peer sent meanwhile must be waiting in
/// a receive buffer before this side has notified anything. Then the
/// exchange of `n`.
pub fn late(fdt: &fdt::Fdt<'_>, ms: u64, n: u32) {
    let until = guest_common::counter() + guest_common::counter_freq() * ms / 1000;
    while guest_common::counter() < until {
        core::hint::spin_loop();
    }
    if !init_as(fdt, Start::OpenAmp) {
        return;
    }
    let rx = Receiver::new();
    let mut waited = 0u64;
    // Only the used ring is read until the announcement is there: this
    // side makes no trap that could move it.
    while rx.pending() == 0 && waited < 100_000_000 {
        waited += 1;
        core::hint::spin_loop();
    }
    let mut found = None;
    rx.peek(|_, dst, p| {
        if dst == NS_ADDR {
            found = virtio::parse_ns(p).map(|(name, at)| (name == "rpmsg-raw", at));
        }
    });
    match found {
        Some((true, at)) => println!(
            "rpmsg: late receiver found rpmsg-raw at {at} first of {} waiting, before notifying",
            rx.pending()
        ),
        _ => println!("rpmsg: late receiver found no announcement waiting"),
    }
    // The exchange takes the announcement again, and what followed it.
    exchange(n, Mode::Plain);
}

/// Makes this side's device need a reset, as `kind` says, then lets the
/// driver recover it and exchanges `n` messages with the peer, whose
/// device must never have needed one.
pub fn fault(fdt: &fdt::Fdt<'_>, kind: &str, n: u32) {
    let how = if kind == "small-rx" {
        Start::Posting(256)
    } else {
        Start::Linux
    };
    if !init_as(fdt, how) {
        return;
    }
    if kind == "overlong" {
        // 600 bytes of payload in one buffer that holds them (transmit
        // buffers 0 and 1 are contiguous): longer than the link's 512.
        let b = virtio::tx_buffer(0);
        // SAFETY: our own transmit buffers, 1 KiB from `b`, not yet offered.
        unsafe {
            core::ptr::write_bytes(b, 0, 2 * BUF);
            core::ptr::copy_nonoverlapping(ADDR.to_le_bytes().as_ptr(), b, 4);
            core::ptr::copy_nonoverlapping(ADDR.to_le_bytes().as_ptr(), b.add(4), 4);
            core::ptr::copy_nonoverlapping(600u16.to_le_bytes().as_ptr(), b.add(12), 2);
        }
        virtio::put_desc(1, 0, b as u64, HDR as u32 + 600, 0);
        virtio::offer(1, 0);
        virtio::notify(1);
    }
    // The hypervisor tells us with a configuration interrupt.
    let mut waited = 0u64;
    while !virtio::needs_recovery() && waited < 200_000_000 {
        waited += 1;
        core::hint::spin_loop();
    }
    if !virtio::needs_recovery() {
        println!("rpmsg: {kind}: no configuration interrupt");
        return;
    }
    println!(
        "rpmsg: {kind}: my device needs a reset (status {:#x})",
        virtio::status()
    );
    exchange(n, Mode::Plain);
    println!("rpmsg: {kind}: recovered {} time(s)", virtio::recoveries());
}

/// Offers a transmit buffer outside its memory: the device must refuse it.
pub fn corrupt() {
    virtio::put_desc(1, 0, 0x1000, 64, 0);
    virtio::offer(1, 0);
    virtio::notify(1);
    println!(
        "rpmsg: after a bad descriptor the device status is {:#x}",
        virtio::status()
    );
}

/// Talks to the RTOS: waits for its `rpmsg-raw` and `rpmsg-jitter`
/// announcements, sends N messages to the echo endpoint and checks every
/// answer, then asks for the jitter report.
pub fn client(n: u32) {
    let (mut tx, mut rx) = (Sender::new(), Receiver::new());
    let (mut echo, mut jitter) = (None, None);
    let mut idle = 0u64;
    while echo.is_none() || jitter.is_none() {
        let got = rx.poll(|_, dst, p, _| {
            if let (NS_ADDR, Some((name, at))) = (dst, virtio::parse_ns(p)) {
                println!("client: found {name} at {at}");
                match name {
                    "rpmsg-raw" => echo = Some(at),
                    "rpmsg-jitter" => jitter = Some(at),
                    _ => {}
                }
            }
        });
        if stuck(&mut idle, got > 0) {
            println!("client: no announcement from the RTOS");
            return;
        }
    }
    let (echo, jitter) = (echo.unwrap_or(0), jitter.unwrap_or(0));
    let (mut sent, mut answered, mut bad) = (0u32, 0u32, 0u32);
    let mut msg = [0u8; BUF - HDR];
    let mut expect = [0u8; BUF - HDR];
    while answered < n {
        let mut progress = false;
        if sent < n && sent - answered < 8 && tx.can_send() {
            let len = message(sent, &mut msg);
            tx.send(ADDR, echo, &msg[..len]);
            sent += 1;
            progress = true;
        }
        progress |= rx.poll(|src, _, p, _| {
            let want = message(answered, &mut expect);
            if src != echo || p != &expect[..want] {
                bad += 1;
            }
            answered += 1;
        }) > 0;
        if stuck(&mut idle, progress) {
            println!("client: stuck after {sent} sent, {answered} answered");
            return;
        }
    }
    println!("client: {n} messages echoed, {bad} bad");
    tx.send(ADDR, jitter, b"report");
    let mut done = false;
    while !done {
        let got = rx.poll(|_, _, p, _| {
            println!("client: {}", core::str::from_utf8(p).unwrap_or("?"));
            done = true;
        });
        if stuck(&mut idle, got > 0) {
            println!("client: no jitter report");
            return;
        }
    }
}

/// An echo server for benchmarks: returns every message to its sender with
/// the time it arrived in bytes 8..16, until one says `stop`.
pub fn echo_server() {
    let (mut tx, mut rx) = (Sender::new(), Receiver::new());
    tx.send(ADDR, NS_ADDR, &virtio::ns_message("rpmsg-raw", ADDR));
    // Interrupts only while it sleeps: busy, it polls.
    rx.interrupts(false);
    let mut stop = false;
    let mut buf = [0u8; BUF - HDR];
    while !stop {
        // Checked with interrupts masked, so the one that would wake us
        // cannot slip in before the WFI.
        mask();
        let n = rx.poll(|src, dst, p, _| {
            let now = guest_common::counter();
            if dst == NS_ADDR {
                return;
            }
            if p == b"stop" {
                stop = true;
                return;
            }
            guest_common::copy(&mut buf, p);
            if p.len() >= 16 {
                buf[8..16].copy_from_slice(&now.to_le_bytes());
            }
            while !tx.send(ADDR, src, &buf[..p.len()]) {
                core::hint::spin_loop();
            }
        });
        if n == 0 {
            rx.sleep();
        }
        unmask();
    }
    rx.interrupts(true);
    println!("rpmsg: echo server stopped");
}

/// Round trips and one-way latencies per size, then a stream, against a
/// peer running `echo_server`.
pub fn bench(fdt: &fdt::Fdt<'_>, n: usize) {
    if !init(fdt) {
        return;
    }
    let (mut tx, mut rx) = (Sender::new(), Receiver::new());
    // The peer's announcement says it is up.
    let mut up = false;
    while !up {
        rx.poll(|_, dst, _, _| up |= dst == NS_ADDR);
    }
    let mut msg = [0u8; BUF - HDR];
    let mut exchange = |len: usize| -> (u64, u64) {
        let t0 = guest_common::counter();
        msg[..8].copy_from_slice(&t0.to_le_bytes());
        while !tx.send(ADDR, ADDR, &msg[..len]) {}
        let mut got = None;
        while got.is_none() {
            mask();
            let n = rx.poll(|_, _, p, _| {
                let arrived = u64::from_le_bytes(p[8..16].try_into().unwrap_or_default());
                got = Some((guest_common::counter() - t0, arrived.saturating_sub(t0)));
            });
            if n == 0 {
                wfi();
            }
            unmask();
        }
        got.unwrap_or_default()
    };
    for len in [16usize, 64, 256, 496] {
        crate::bench::report_named("rpmsg-rtt", len, n, || exchange(len).0);
        crate::bench::report_named("rpmsg-oneway", len, n, || exchange(len).1);
    }
    // A stream of 496-byte messages, up to a queue's worth in flight,
    // taken by polling: interrupts only while it sleeps.
    let total = 2000u64;
    let (mut sent, mut back) = (0u64, 0u64);
    rx.interrupts(false);
    let t0 = guest_common::counter();
    while back < total {
        if sent < total && sent - back < 15 && tx.send(ADDR, ADDR, &msg[..496]) {
            sent += 1;
            continue;
        }
        mask();
        let n = rx.poll(|_, _, _, _| {});
        if n == 0 {
            rx.sleep();
        }
        unmask();
        back += u64::from(n);
    }
    rx.interrupts(true);
    let ticks = guest_common::counter() - t0;
    let per_k = total * 496 * 1000 / ticks.max(1);
    println!("bench: rpmsg-stream-bytes-per-kinstr min {per_k} median {per_k} p99 {per_k} max {per_k} (1 samples)");
    while !tx.send(ADDR, ADDR, b"stop") {}
}

fn mask() {
    // SAFETY: masks IRQs; `unmask` takes any that came meanwhile.
    unsafe { core::arch::asm!("msr daifset, #2") };
}

fn unmask() {
    // SAFETY: the vector table handles IRQs.
    unsafe { core::arch::asm!("msr daifclr, #2", "isb") };
}

/// Sleeps until an interrupt is pending (masked or not).
fn wfi() {
    // SAFETY: waits for an interrupt.
    unsafe { core::arch::asm!("wfi") };
}
