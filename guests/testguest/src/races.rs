//! Races of the partition lifecycle, from inside a partition.
//!
//! - `reset-race=N`: both vCPUs call SYSTEM_RESET at the same moment, N
//!   times; a boot count outside the image survives the reloads;
//! - `timer-off=N`: vCPU 1 calls CPU_OFF with its virtual timer armed and
//!   its interrupt asserted, and is started again, N times;
//! - `rpmsg-restarts=N[,send]`: the receiver restarts N times while its
//!   peer (`,send`) streams numbered messages; each must arrive once, in
//!   order.

use crate::{gic, hvc, println, secondary_start, vcpu_index};
use crate::{PSCI_AFFINITY_INFO, PSCI_CPU_OFF, PSCI_CPU_ON, PSCI_SYSTEM_RESET};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};
use guest_common::virtio::{self, Receiver, Sender, BUF, HDR};

/// Jobs of secondary vCPUs (bits 8 and up of their context).
pub const JOB_RESET: usize = 4;
pub const JOB_TIMER_OFF: usize = 5;
pub const JOB_HAND_OFF: usize = 6;

static READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);

/// A word of memory 1 MiB into the partition, past the image: it survives
/// the image being loaded again.
fn slot(mem_base: u64, i: u64) -> *mut u64 {
    (mem_base + (1 << 20) + 64 + 8 * i) as *mut u64
}

fn get(mem_base: u64, i: u64) -> u64 {
    // SAFETY: our own memory, outside the image.
    unsafe { slot(mem_base, i).read_volatile() }
}

fn put(mem_base: u64, i: u64, v: u64) {
    // SAFETY: as above.
    unsafe { slot(mem_base, i).write_volatile(v) }
}

const MAGIC: u64 = 0x5041_5254_4954_4100;

pub fn reset_race(mem_base: u64, n: u64) {
    let boots = if get(mem_base, 0) == MAGIC {
        get(mem_base, 1)
    } else {
        put(mem_base, 0, MAGIC);
        0
    };
    if boots == n {
        put(mem_base, 0, 0);
        println!("reset-race: came back after all {n} double resets");
        return;
    }
    put(mem_base, 1, boots + 1);
    hvc(
        PSCI_CPU_ON,
        1,
        secondary_start as *const () as u64,
        1 | ((JOB_RESET as u64) << 8),
    );
    while !READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    GO.store(true, Ordering::Release);
    hvc(PSCI_SYSTEM_RESET, 0, 0, 0);
    println!("reset-race: SYSTEM_RESET returned on vcpu 0!");
}

/// vCPU 1 of `reset-race`.
pub fn reset_now() {
    READY.store(true, Ordering::Release);
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    hvc(PSCI_SYSTEM_RESET, 0, 0, 0);
    println!("reset-race: SYSTEM_RESET returned on vcpu 1!");
}

pub fn timer_off(n: u32) {
    gic::init_distributor();
    for i in 1..=n {
        let r = hvc(
            PSCI_CPU_ON,
            1,
            secondary_start as *const () as u64,
            1 | ((JOB_TIMER_OFF as u64) << 8),
        );
        if r != 0 {
            println!("timer-off: cpu_on {i} = {r}");
            return;
        }
        // Back off: AFFINITY_INFO says OFF only once it has left.
        let mut spins = 0u64;
        while hvc(PSCI_AFFINITY_INFO, 1, 0, 0) != 1 {
            spins += 1;
            if spins > 100_000_000 {
                println!("timer-off: vcpu 1 never went off after start {i}");
                return;
            }
        }
    }
    println!("timer-off: vcpu 1 went off with its timer firing and started again {n} times");
}

/// vCPU 1 of `timer-off`: enables its timer's interrupt, lets the timer
/// fire (interrupts masked, so it stays asserted), then CPU_OFF.
pub fn timer_then_off() {
    let me = vcpu_index();
    gic::init_cpu(me);
    gic::enable(27, me);
    // SAFETY: the virtual timer belongs to the guest; IRQs stay masked.
    unsafe {
        asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) 100u64, in(reg) 1u64)
    };
    loop {
        let ctl: u64;
        // SAFETY: reads the timer's status.
        unsafe { asm!("mrs {}, cntv_ctl_el0", out(reg) ctl) };
        if ctl & 4 != 0 {
            break;
        }
    }
    hvc(PSCI_CPU_OFF, 0, 0, 0);
}

/// Messages of the stream: a sequence number, then bytes derived from it.
fn fill(seq: u32, out: &mut [u8]) -> usize {
    let len = 8 + (seq as usize * 29) % (out.len() - 8);
    out[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in out[4..len].iter_mut().enumerate() {
        *b = (seq as usize ^ i) as u8;
    }
    len
}

/// Messages per receiver instance.
const PER_BOOT: u64 = 300;

pub fn stream_across_restarts(fdt: &fdt::Fdt<'_>, mem_base: u64, restarts: u64, mode: &str) {
    if !crate::rpmsg::init(fdt) {
        return;
    }
    // An instance may take a few more than PER_BOOT before it restarts:
    // one more instance's worth keeps the last restart inside the stream.
    let total = PER_BOOT * (restarts + 2);
    let mut msg = [0u8; BUF - HDR];
    if mode == "send" {
        let mut tx = Sender::new();
        for seq in 0..total as u32 {
            let len = fill(seq, &mut msg);
            while !tx.send(1024, 1024, &msg[..len]) {
                core::hint::spin_loop();
            }
        }
        while !tx.drained() {
            core::hint::spin_loop();
        }
        println!("stream: sent {total}");
        return;
    }
    // Receiver: next expected, duplicates, gaps and boots survive resets.
    if get(mem_base, 8) != MAGIC {
        for i in 8..13 {
            put(mem_base, i, 0);
        }
        put(mem_base, 8, MAGIC);
    }
    let boots = get(mem_base, 9);
    let mut rx = Receiver::new();
    let mut want = [0u8; BUF - HDR];
    // Checks one message against the next expected number.
    let mut account = |p: &[u8]| {
        let seq = u32::from_le_bytes(p[..4].try_into().unwrap_or_default());
        let next = get(mem_base, 10);
        let len = fill(seq, &mut want);
        match u64::from(seq).cmp(&next) {
            core::cmp::Ordering::Less => put(mem_base, 11, get(mem_base, 11) + 1),
            core::cmp::Ordering::Greater => put(mem_base, 12, get(mem_base, 12) + 1),
            _ if p != &want[..len] => put(mem_base, 12, get(mem_base, 12) + 1),
            _ => {}
        }
        put(mem_base, 10, next.max(u64::from(seq) + 1));
    };
    let mut here = 0u64;
    let mut idle = 0u64;
    loop {
        let got = rx.poll(|_, _, p, _| {
            account(p);
            here += 1;
        });
        idle = if got > 0 { 0 } else { idle + 1 };
        if get(mem_base, 10) >= total {
            println!(
                "stream: received {total} across {boots} restarts, {} duplicated, {} missing or damaged",
                get(mem_base, 11),
                get(mem_base, 12)
            );
            put(mem_base, 8, 0);
            return;
        }
        if here >= PER_BOOT && boots < restarts {
            // The device is reset first, so nothing more arrives; what
            // arrived before is taken, then the partition resets.
            virtio::reset();
            rx.poll(|_, _, p, _| account(p));
            put(mem_base, 9, boots + 1);
            hvc(PSCI_SYSTEM_RESET, 0, 0, 0);
        }
        if idle > 200_000_000 {
            println!(
                "stream: stuck at {} after {boots} restarts",
                get(mem_base, 10)
            );
            return;
        }
    }
}
