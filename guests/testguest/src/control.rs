//! Controller scenarios: the test guest drives another partition's life
//! through Partita's control calls (see `partita_core::control`) and talks
//! to it over rpmsg between the steps.
//!
//! - `control=N`: stops and starts the controlled partition N times; after
//!   each start its echo endpoint must answer 100 messages intact;
//! - `control-load`: loads the ELF given to this guest as its initrd into
//!   the stopped partition and starts it;
//! - `control-crash`: asks the RTOS over rpmsg to crash, sees Crashed,
//!   restarts it and echoes again;
//! - `control-refusals`: every kind of bad request, each refused;
//! - `control-denied=ID`: a request for a partition it has no right to;
//! - `bench-restart=N`: stop request to the new instance's entry and to
//!   its announcement.

use crate::{println, rpmsg};
use core::sync::atomic::{AtomicU32, Ordering};
use guest_common::virtio::{self, Receiver, Sender, BUF, HDR, NS_ADDR};

const STATUS: u64 = 0xc600_0010;
const START: u64 = 0xc600_0011;
const STOP: u64 = 0xc600_0012;
const LOAD: u64 = 0xc600_0013;
const VDEV_READY: u64 = 0xc600_0014;
const KICK: u64 = 0xc600_0016;
const STOPPED: u64 = 0;
const RUNNING: u64 = 2;
const CRASHED: u64 = 4;
const ADDR: u32 = 1024;

/// Control interrupts taken.
pub static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
pub static SPI: AtomicU32 = AtomicU32::new(0);

fn call(x0: u64, x1: u64, x2: u64, x3: u64) -> [u64; 8] {
    let mut r = [0u64; 8];
    // SAFETY: an SMCCC call; the hypervisor answers in x0..x7.
    unsafe {
        core::arch::asm!("hvc #0",
            inout("x0") x0 => r[0], inout("x1") x1 => r[1], inout("x2") x2 => r[2],
            inout("x3") x3 => r[3], out("x4") r[4], out("x5") r[5], out("x6") r[6],
            out("x7") r[7])
    };
    r
}

fn status(id: u32) -> [u64; 8] {
    call(STATUS, u64::from(id), 0, 0)
}

/// Polls until the partition reads `want`; false after a long while.
fn wait_state(id: u32, want: u64) -> bool {
    let what: &str = match want {
        STOPPED => "state Stopped",
        RUNNING => "state Running",
        _ => "state Crashed",
    };
    wait_for(id, what, |s| s[0] == want)
}

/// Polls STATUS until `done` says so; false (and why) after a long while.
fn wait_for(id: u32, what: &str, done: impl Fn(&[u64; 8]) -> bool) -> bool {
    for _ in 0..200_000_000u64 {
        if done(&status(id)) {
            return true;
        }
        core::hint::spin_loop();
    }
    let s = status(id);
    println!(
        "control: partition {id} never showed {what} (state {}, restarts {})",
        s[0], s[1]
    );
    false
}

/// The first partition this guest controls: its id, from the device tree.
fn target(fdt: &fdt::Fdt<'_>) -> Option<u32> {
    let n = fdt.find_compatible(&["partita,partition"])?;
    let id = n.property("reg")?.as_usize()? as u32;
    if let Some(spi) = guest_common::spi_of(n) {
        // Stored first: the handler counts it from the moment it is on.
        SPI.store(spi, Ordering::Relaxed);
        guest_common::listen(n);
    }
    println!(
        "control: controls {} (id {id})",
        n.property("label").and_then(|p| p.as_str()).unwrap_or("?")
    );
    Some(id)
}

/// Waits for the RTOS's announcements: the addresses of its `rpmsg-raw`
/// (echo) and `rpmsg-jitter` (commands) endpoints.
fn announced(rx: &mut Receiver) -> Option<(u32, u32)> {
    let (mut raw, mut jitter) = (None, None);
    for _ in 0..100_000_000u64 {
        rx.poll(|_, dst, p, _| match (dst, virtio::parse_ns(p)) {
            (NS_ADDR, Some(("rpmsg-raw", a))) => raw = Some(a),
            (NS_ADDR, Some(("rpmsg-jitter", a))) => jitter = Some(a),
            _ => {}
        });
        if let (Some(r), Some(j)) = (raw, jitter) {
            return Some((r, j));
        }
    }
    None
}

/// `n` messages to the echo endpoint at `echo`: how many came back intact.
fn echo(tx: &mut Sender, rx: &mut Receiver, echo: u32, n: u32) -> u32 {
    let (mut sent, mut back, mut good) = (0u32, 0u32, 0u32);
    let mut msg = [0u8; BUF - HDR];
    let mut idle = 0u64;
    while back < n && idle < 50_000_000 {
        if sent < n && sent - back < 8 && tx.can_send() {
            let len = 8 + (sent as usize * 53) % (BUF - HDR - 8);
            for (i, b) in msg[..len].iter_mut().enumerate() {
                *b = (sent as usize + i) as u8;
            }
            tx.send(ADDR, echo, &msg[..len]);
            sent += 1;
        }
        let got = rx.poll(|src, dst, p, _| {
            if dst == NS_ADDR {
                return;
            }
            let len = 8 + (back as usize * 53) % (BUF - HDR - 8);
            let intact = src == echo
                && p.len() == len
                && p.iter()
                    .enumerate()
                    .all(|(i, &b)| b == (back as usize + i) as u8);
            good += u32::from(intact);
            back += 1;
        });
        idle = if got > 0 { 0 } else { idle + 1 };
    }
    good
}

pub fn cycles(fdt: &fdt::Fdt<'_>, n: u32) {
    let Some(id) = target(fdt) else {
        println!("control: no partition to control");
        return;
    };
    if !rpmsg::init(fdt) {
        return;
    }
    let (mut tx, mut rx) = (Sender::new(), Receiver::new());
    let Some((at, _)) = announced(&mut rx) else {
        println!("control: no announcement");
        return;
    };
    println!(
        "control: first instance echoed {}/100 intact",
        echo(&mut tx, &mut rx, at, 100)
    );
    for i in 1..=n {
        let r = call(STOP, u64::from(id), 0, 0)[0] as i64;
        if r != 0 || !wait_state(id, STOPPED) {
            println!("control: stop {i} failed ({r})");
            return;
        }
        let r = call(START, u64::from(id), 0, 0)[0] as i64;
        if r != 0 || !wait_state(id, RUNNING) {
            println!("control: start {i} failed ({r})");
            return;
        }
        let Some((at, _)) = announced(&mut rx) else {
            println!("control: restart {i}: no announcement");
            return;
        };
        let good = echo(&mut tx, &mut rx, at, 100);
        println!("control: restart {i}: echoed {good}/100 intact");
    }
    let s = status(id);
    stop_for_good(id);
    println!(
        "control: status state {} restarts {} rpmsg in {} out {} faults {}; control interrupts {}",
        s[0],
        s[1],
        s[5],
        s[6],
        s[7],
        if INTERRUPTS.load(Ordering::Relaxed) > 0 {
            "yes"
        } else {
            "none"
        }
    );
}

/// The ELF this guest was given as its initrd: (address, length).
fn initrd(fdt: &fdt::Fdt<'_>) -> Option<(u64, u64)> {
    let c = fdt.find_node("/chosen")?;
    let get = |name| {
        let v = c.property(name)?.value;
        Some(u64::from_be_bytes(v.try_into().ok()?))
    };
    let (s, e) = (get("linux,initrd-start")?, get("linux,initrd-end")?);
    Some((s, e - s))
}

pub fn load(fdt: &fdt::Fdt<'_>) {
    let (Some(id), Some((elf, len))) = (target(fdt), initrd(fdt)) else {
        println!("control: no target or no ELF");
        return;
    };
    // The target may still be loading when we start: partitions boot in
    // parallel.
    if !wait_state(id, RUNNING) {
        return;
    }
    let r = call(LOAD, u64::from(id), elf, len)[0] as i64;
    println!("control: load while running = {r}");
    call(STOP, u64::from(id), 0, 0);
    if !wait_state(id, STOPPED) {
        return;
    }
    println!(
        "control: truncated ELF = {}",
        call(LOAD, u64::from(id), elf, 60)[0] as i64
    );
    println!(
        "control: ELF outside my memory = {}",
        call(LOAD, u64::from(id), 0x1000, len)[0] as i64
    );
    let r = call(LOAD, u64::from(id), elf, len)[0] as i64;
    println!("control: load of {len} bytes = {r}");
    let restarts = status(id)[1];
    let r = call(START, u64::from(id), 0, 0)[0] as i64;
    println!("control: start = {r}");
    // The loaded image (the test guest, with the target's own bootargs)
    // runs, then powers its partition off, within a few milliseconds: a
    // poll for Running could miss it, the restart count cannot.
    let ran = |s: &[u64; 8]| s[1] > restarts && s[0] == STOPPED;
    if wait_for(id, "a run and a stop", ran) {
        println!("control: the loaded image ran and stopped");
    }
    println!("control: the loaded image did not run and stop");
}

pub fn crash(fdt: &fdt::Fdt<'_>) {
    let Some(id) = target(fdt) else {
        return;
    };
    if !rpmsg::init(fdt) {
        return;
    }
    let (mut tx, mut rx) = (Sender::new(), Receiver::new());
    let Some((_, commands)) = announced(&mut rx) else {
        println!("control: no announcement");
        return;
    };
    tx.send(ADDR, commands, b"crash");
    if !wait_state(id, CRASHED) {
        return;
    }
    // The state changes first, then the interrupt that says so is raised.
    for _ in 0..50_000_000u64 {
        if INTERRUPTS.load(Ordering::Relaxed) > 0 {
            break;
        }
        core::hint::spin_loop();
    }
    let s = status(id);
    println!(
        "control: partition {id} crashed (faults {}); interrupts {}",
        s[7],
        INTERRUPTS.load(Ordering::Relaxed)
    );
    let r = call(START, u64::from(id), 0, 0)[0] as i64;
    let Some((at, _)) = (r == 0).then(|| announced(&mut rx)).flatten() else {
        println!("control: restart after the crash failed ({r})");
        return;
    };
    println!(
        "control: after the crash, echoed {}/100 intact",
        echo(&mut tx, &mut rx, at, 100)
    );
    stop_for_good(id);
}

/// Stops the partition at the end of a scenario, so that the machine
/// powers off when this guest does.
fn stop_for_good(id: u32) {
    call(STOP, u64::from(id), 0, 0);
    wait_state(id, STOPPED);
}

pub fn refusals(fdt: &fdt::Fdt<'_>) {
    let Some(id) = target(fdt) else {
        return;
    };
    let id = u64::from(id);
    wait_state(id as u32, RUNNING);
    println!(
        "control: start while running = {}",
        call(START, id, 0, 0)[0] as i64
    );
    println!(
        "control: stop of id 999 = {}",
        call(STOP, 999, 0, 0)[0] as i64
    );
    println!(
        "control: stop of id 2^32+id = {}",
        call(STOP, id | 1 << 32, 0, 0)[0] as i64
    );
    println!(
        "control: unknown call = {}",
        call(0xc600_0017, id, 0, 0)[0] as i64
    );
    // Our link to it is virtio-mmio, not its remoteproc's virtio device.
    println!(
        "control: vdev ready without a remoteproc link = {}",
        call(VDEV_READY, id, 0x4800_0000, 0x4800_4000)[0] as i64
    );
    println!(
        "control: kick without a remoteproc link = {}",
        call(KICK, id, 1, 0)[0] as i64
    );
    call(STOP, id, 0, 0);
    wait_state(id as u32, STOPPED);
    println!(
        "control: stop while stopped = {}",
        call(STOP, id, 0, 0)[0] as i64
    );
}

pub fn denied(id: u64) {
    println!(
        "control: stop of id {id} = {}",
        call(STOP, id, 0, 0)[0] as i64
    );
    println!(
        "control: status of id {id} = {}",
        call(STATUS, id, 0, 0)[0] as i64
    );
}

/// A condition to wait for.
type Check<'a> = &'a mut dyn FnMut() -> bool;

/// From a stop request to the restarted partition's entry (the
/// hypervisor's timestamp, read back as counter minus uptime) and to its
/// `rpmsg-raw` announcement, `n` times each.
pub fn bench_restart(fdt: &fdt::Fdt<'_>, n: usize) {
    let Some(id) = target(fdt) else {
        return;
    };
    if !rpmsg::init(fdt) {
        return;
    }
    let mut rx = Receiver::new();
    if announced(&mut rx).is_none() {
        return;
    }
    // Sleeps between looks, woken by the control and virtio interrupts:
    // under icount a spinning vCPU would keep the others waiting for
    // their turn, and that wait is QEMU's, not Partita's.
    let sleep_until = |done: Check<'_>| loop {
        // SAFETY: masks IRQs so that none slips in between look and sleep;
        // WFI wakes on a pending one, taken once unmasked.
        unsafe { core::arch::asm!("msr daifset, #2") };
        if done() {
            unsafe { core::arch::asm!("msr daifclr, #2", "isb") };
            return;
        }
        unsafe { core::arch::asm!("wfi", "msr daifclr, #2", "isb") };
    };
    let restart = |rx: &mut Receiver| {
        let t0 = guest_common::counter();
        call(STOP, u64::from(id), 0, 0);
        sleep_until(&mut || status(id)[0] == STOPPED);
        call(START, u64::from(id), 0, 0);
        let mut entry = 0;
        sleep_until(&mut || {
            let s = status(id);
            entry = guest_common::counter() - s[2];
            s[0] == RUNNING
        });
        let mut up = false;
        sleep_until(&mut || {
            rx.poll(|_, dst, p, _| {
                up |= dst == NS_ADDR && virtio::parse_ns(p).is_some_and(|(n, _)| n == "rpmsg-raw")
            });
            up
        });
        (entry - t0, guest_common::counter() - t0)
    };
    crate::bench::report_named("restart-to-entry", 0, n, || restart(&mut rx).0);
    crate::bench::report_named("restart-to-announcement", 0, n, || restart(&mut rx).1);
    stop_for_good(id);
}
