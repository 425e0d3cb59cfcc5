//! `registers`: every general-purpose register a trap does not answer in
//! keeps its value across it, whatever part of the guest's registers the
//! hypervisor saves for that kind of trap (it saves only the caller-saved
//! ones for calls and interrupts). Each case loads x1-x30 with patterns,
//! traps, and compares.

use crate::{gic, irqs, println, PSCI_VERSION};
use core::arch::asm;
use core::sync::atomic::Ordering;

const NULL_CALL: u64 = 0xc600_0000;
const CPU_SUSPEND: u64 = 0xc400_0001;

/// Runs `$trap` with x0 = `regs[0]` and x1-x30 = `regs[1..]`, then leaves
/// every register's value in `regs` (x0 included). `$trap` may read x0 and
/// the stack (`[sp, #32]` is `regs`' address) and change x0 only.
macro_rules! with_registers {
    ($regs:expr, $($trap:literal),+) => {{
        let regs: &mut [u64; 31] = $regs;
        // SAFETY: the registers the compiler cannot be told about (x18,
        // x19, x29, x30) are saved on the stack and restored; every other
        // one is declared clobbered; the trap is one this scenario expects
        // to be handled and returned from.
        unsafe {
            asm!(
                "stp x18, x19, [sp, #-48]!",
                "stp x29, x30, [sp, #16]",
                "str x0, [sp, #32]",
                "ldp x1, x2, [x0, #8]", "ldp x3, x4, [x0, #24]", "ldp x5, x6, [x0, #40]",
                "ldp x7, x8, [x0, #56]", "ldp x9, x10, [x0, #72]", "ldp x11, x12, [x0, #88]",
                "ldp x13, x14, [x0, #104]", "ldp x15, x16, [x0, #120]",
                "ldp x17, x18, [x0, #136]", "ldp x19, x20, [x0, #152]",
                "ldp x21, x22, [x0, #168]", "ldp x23, x24, [x0, #184]",
                "ldp x25, x26, [x0, #200]", "ldp x27, x28, [x0, #216]",
                "ldp x29, x30, [x0, #232]",
                "ldr x0, [x0]",
                $($trap,)+
                "stp x0, x1, [sp, #-16]!",
                "ldr x1, [sp, #48]",
                "stp x2, x3, [x1, #16]", "stp x4, x5, [x1, #32]", "stp x6, x7, [x1, #48]",
                "stp x8, x9, [x1, #64]", "stp x10, x11, [x1, #80]", "stp x12, x13, [x1, #96]",
                "stp x14, x15, [x1, #112]", "stp x16, x17, [x1, #128]",
                "stp x18, x19, [x1, #144]", "stp x20, x21, [x1, #160]",
                "stp x22, x23, [x1, #176]", "stp x24, x25, [x1, #192]",
                "stp x26, x27, [x1, #208]", "stp x28, x29, [x1, #224]",
                "str x30, [x1, #240]",
                "ldp x2, x3, [sp], #16",
                "stp x2, x3, [x1]",
                "ldp x29, x30, [sp, #16]",
                "ldp x18, x19, [sp], #48",
                inout("x0") regs.as_mut_ptr() => _,
                out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
                out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
                out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _, out("x20") _, out("x21") _, out("x22") _,
                out("x23") _, out("x24") _, out("x25") _, out("x26") _, out("x27") _,
                out("x28") _,
            )
        }
    }};
}

/// x`n`'s pattern: its number in both halves and a marker on top.
fn pattern(n: usize) -> u64 {
    0x5a5a_0000_0000_0000 | (n as u64) << 32 | n as u64
}

/// Says which of x1-x30 differ from `want`, or that none does.
fn report(case: &str, got: &[u64; 31], want: &[u64; 31]) {
    let mut changed = 0;
    for n in 1..31 {
        if got[n] != want[n] {
            changed += 1;
            println!(
                "registers: {case}: x{n} is {:#x}, was {:#x}",
                got[n], want[n]
            );
        }
    }
    if changed == 0 {
        println!("registers: {case}: x1-x30 kept");
    }
}

pub fn registers() {
    let patterns: [u64; 31] = core::array::from_fn(pattern);

    for (case, fid) in [("null hvc", NULL_CALL), ("psci hvc", PSCI_VERSION)] {
        let mut regs = patterns;
        regs[0] = fid;
        with_registers!(&mut regs, "hvc #0");
        report(case, &regs, &patterns);
    }
    // The vector answers the null call by HVC itself; by SMC it goes to
    // the handler, which must also step past the SMC.
    for (case, trap) in [("null hvc", 0), ("null smc", 1)] {
        let mut regs = patterns;
        regs[0] = NULL_CALL;
        match trap {
            0 => with_registers!(&mut regs, "hvc #0"),
            _ => with_registers!(&mut regs, "smc #0"),
        }
        println!("registers: {case} returned {}", regs[0]);
        if trap == 1 {
            report(case, &regs, &patterns);
        }
    }
    let mut regs = patterns;
    regs[0] = PSCI_VERSION;
    with_registers!(&mut regs, "smc #0");
    report("psci smc", &regs, &patterns);

    // An SGI sent to no vCPU, from a caller-saved register (GICv3: the
    // vector's short path for ICC_SGI1R_EL1) and from a callee-saved one
    // (the whole trap path); on GICv2 by GICD_SGIR, an emulated store.
    // SGI 1 with an empty target list, in each GIC's form.
    let sgi_value = if gic::version() == 3 { 1 << 24 } else { 1 };
    for (case, from_x25) in [("sgi from x5", false), ("sgi from x25", true)] {
        let mut regs = patterns;
        if gic::version() == 3 {
            regs[5] = sgi_value;
            regs[25] = sgi_value;
            match from_x25 {
                false => with_registers!(&mut regs, "msr S3_0_C12_C11_5, x5"),
                true => with_registers!(&mut regs, "msr S3_0_C12_C11_5, x25"),
            }
        } else {
            regs[0] = gic::gicd() + 0xf00;
            regs[5] = sgi_value;
            regs[25] = sgi_value;
            match from_x25 {
                false => with_registers!(&mut regs, "str w5, [x0]"),
                true => with_registers!(&mut regs, "str w25, [x0]"),
            }
        }
        let mut want = patterns;
        want[5] = sgi_value;
        want[25] = sgi_value;
        report(case, &regs, &want);
    }

    // Emulated loads of the distributor's GICD_TYPER into registers the
    // vector saves in every frame (w5, w19, w30), into ones it saves only
    // for such an access (w20-w29), and into the zero register; a store
    // of the zero register (to GICD_ISENABLER1: enables nothing).
    let typer_at = gic::gicd() + 4;
    let typer: u32;
    // SAFETY: a read-only register of our own distributor, with a load
    // whose syndrome the hypervisor can emulate (no writeback).
    unsafe { asm!("ldr {0:w}, [{1}]", out(reg) typer, in(reg) typer_at) };
    for (case, n) in [
        ("mmio load into w5", 5),
        ("mmio load into w19", 19),
        ("mmio load into w20", 20),
        ("mmio load into w25", 25),
        ("mmio load into w29", 29),
        ("mmio load into w30", 30),
        ("mmio load into wzr", 31),
        ("mmio store of wzr", 32),
    ] {
        let mut regs = patterns;
        regs[0] = typer_at;
        match n {
            5 => with_registers!(&mut regs, "ldr w5, [x0]"),
            19 => with_registers!(&mut regs, "ldr w19, [x0]"),
            20 => with_registers!(&mut regs, "ldr w20, [x0]"),
            25 => with_registers!(&mut regs, "ldr w25, [x0]"),
            29 => with_registers!(&mut regs, "ldr w29, [x0]"),
            30 => with_registers!(&mut regs, "ldr w30, [x0]"),
            31 => with_registers!(&mut regs, "ldr wzr, [x0]"),
            _ => with_registers!(&mut regs, "str wzr, [x0, #0x100]"),
        }
        let mut want = patterns;
        if n <= 30 {
            want[n] = u64::from(typer);
        }
        report(case, &regs, &want);
    }

    // Interrupts taken at EL2 while every register holds its pattern:
    // the timer's, and on GICv2 its maintenance interrupt, then the
    // guest's own handler. The loop reads the flag the handler sets,
    // through x0 alone.
    gic::init_distributor();
    gic::init_cpu(0);
    let taken = irqs::expect_vtimer(1000);
    let mut regs = patterns;
    regs[0] = taken.as_ptr() as u64;
    with_registers!(
        &mut regs,
        "msr daifclr, #2",
        "2: ldr x0, [sp, #32]",
        "ldr x0, [x0]",
        "ldr w0, [x0]",
        "cbz w0, 2b",
        "msr daifset, #2"
    );
    irqs::end_probe();
    report("timer interrupt", &regs, &patterns);

    // CPU_SUSPEND waits at EL2, taking the timer's interrupt there, inside
    // the call (x1-x3: a standby state, no entry point or context).
    let taken = irqs::expect_vtimer(1000);
    let mut regs = patterns;
    regs[..4].copy_from_slice(&[CPU_SUSPEND, 0, 0, 0]);
    let want = regs;
    with_registers!(&mut regs, "hvc #0");
    // The interrupt it waited for, taken.
    // SAFETY: IRQs on at EL1 until it is.
    unsafe { asm!("msr daifclr, #2") };
    while taken.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    // SAFETY: IRQs off again.
    unsafe { asm!("msr daifset, #2") };
    irqs::end_probe();
    println!("registers: cpu suspend returned {}", regs[0] as i64);
    report("cpu suspend", &regs, &want);
}
