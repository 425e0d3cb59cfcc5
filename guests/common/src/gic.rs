//! A GIC driver for the test guest, version 3 (system registers) or 2
//! (memory-mapped CPU interface), as its device tree says.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

static VERSION: AtomicU8 = AtomicU8::new(0);
static GICD: AtomicU64 = AtomicU64::new(0);
/// GICv3: the redistributor region; GICv2: the CPU interface.
static SECOND: AtomicU64 = AtomicU64::new(0);

fn rd(a: u64) -> u32 {
    // SAFETY: a GIC register named by the device tree.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}

fn wr(a: u64, v: u32) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}

pub fn probe(fdt: &fdt::Fdt<'_>) -> Option<u8> {
    for (compat, v) in [
        ("arm,gic-v3", 3u8),
        ("arm,cortex-a15-gic", 2),
        ("arm,gic-400", 2),
    ] {
        if let Some(n) = fdt.find_compatible(&[compat]) {
            let mut regs = n.reg()?;
            GICD.store(regs.next()?.starting_address as u64, Ordering::Relaxed);
            SECOND.store(regs.next()?.starting_address as u64, Ordering::Relaxed);
            VERSION.store(v, Ordering::Relaxed);
            return Some(v);
        }
    }
    None
}

pub fn version() -> u8 {
    VERSION.load(Ordering::Relaxed)
}

pub fn gicd() -> u64 {
    GICD.load(Ordering::Relaxed)
}

/// Once: the distributor on.
pub fn init_distributor() {
    wr(gicd(), if version() == 3 { 0x12 } else { 1 });
}

/// On each vCPU: its CPU interface and redistributor.
pub fn init_cpu(vcpu: usize) {
    if version() == 3 {
        let rd_base = SECOND.load(Ordering::Relaxed) + 0x20000 * vcpu as u64;
        wr(rd_base + 0x14, rd(rd_base + 0x14) & !0b10);
        while rd(rd_base + 0x14) & 0b100 != 0 {}
        // Group 1 for SGIs and PPIs (they reset to Group 0 on bare metal).
        wr(rd_base + 0x10080, u32::MAX);
        // SAFETY: GICv3 CPU interface system registers at EL1.
        unsafe {
            asm!("mrs {t}, S3_0_C12_C12_5", "orr {t}, {t}, #1", "msr S3_0_C12_C12_5, {t}", "isb", t = out(reg) _);
            asm!("msr S3_0_C4_C6_0, {}", in(reg) 0xffu64); // PMR
            asm!("msr S3_0_C12_C12_7, {}", in(reg) 1u64); // IGRPEN1
            asm!("isb");
        }
    } else {
        let gicc = SECOND.load(Ordering::Relaxed);
        wr(gicc + 0x4, 0xff);
        wr(gicc, 1);
    }
}

fn enable_reg(intid: u32, vcpu: usize, set: bool) -> u64 {
    let off = if set { 0x100 } else { 0x180 };
    if version() == 3 && intid < 32 {
        SECOND.load(Ordering::Relaxed) + 0x20000 * vcpu as u64 + 0x10000 + off
    } else {
        gicd() + off + 4 * u64::from(intid / 32)
    }
}

pub fn enable(intid: u32, vcpu: usize) {
    if version() == 3 && intid >= 32 {
        let grp = gicd() + 0x80 + 4 * u64::from(intid / 32);
        wr(grp, rd(grp) | (1 << (intid % 32)));
    }
    wr(enable_reg(intid, vcpu, true), 1 << (intid % 32));
}

/// An SPI's trigger (GICD_ICFGR<n>).
pub fn set_edge(intid: u32, edge: bool) {
    let a = gicd() + 0xc00 + 4 * u64::from(intid / 16);
    let bit = 2 << (2 * (intid % 16));
    wr(a, if edge { rd(a) | bit } else { rd(a) & !bit });
}

pub fn disable(intid: u32, vcpu: usize) {
    wr(enable_reg(intid, vcpu, false), 1 << (intid % 32));
}

/// Makes `intid` pending (GICD/GICR_ISPENDR).
pub fn set_pending(intid: u32, vcpu: usize) {
    wr(enable_reg(intid, vcpu, true) + 0x100, 1 << (intid % 32));
}

/// The set-pending word (GICD/GICR_ISPENDR) holding `intid`.
pub fn pending_word(intid: u32, vcpu: usize) -> u32 {
    rd(enable_reg(intid, vcpu, true) + 0x100)
}

pub fn enabled_word(intid: u32, vcpu: usize) -> u32 {
    rd(enable_reg(intid, vcpu, true))
}

/// `intid`'s priority (GICR_IPRIORITYR for a GICv3 SGI or PPI, else
/// GICD_IPRIORITYR, banked per CPU on GICv2).
pub fn set_priority(intid: u32, vcpu: usize, priority: u8) {
    let base = if version() == 3 && intid < 32 {
        SECOND.load(Ordering::Relaxed) + 0x20000 * vcpu as u64 + 0x10000
    } else {
        gicd()
    };
    let a = base + 0x400 + u64::from(intid & !3);
    let shift = 8 * (intid % 4);
    wr(a, (rd(a) & !(0xff << shift)) | u32::from(priority) << shift);
}

/// The CPU interface's running priority (ICC_RPR_EL1, GICC_RPR).
pub fn running_priority() -> u32 {
    if version() == 3 {
        let v: u64;
        // SAFETY: ICC_RPR_EL1, read-only.
        unsafe { asm!("mrs {}, S3_0_C12_C11_3", out(reg) v) };
        v as u32 & 0xff
    } else {
        rd(SECOND.load(Ordering::Relaxed) + 0x14) & 0xff
    }
}

pub fn ack() -> Option<u32> {
    let id = if version() == 3 {
        let v: u64;
        // SAFETY: ICC_IAR1_EL1.
        unsafe { asm!("mrs {}, S3_0_C12_C12_0", out(reg) v) };
        v as u32 & 0xff_ffff
    } else {
        rd(SECOND.load(Ordering::Relaxed) + 0xc)
    };
    (id & 0x3ff < 1020).then_some(id)
}

pub fn eoi(iar: u32) {
    if version() == 3 {
        // SAFETY: ICC_EOIR1_EL1.
        unsafe { asm!("msr S3_0_C12_C12_1, {}", in(reg) u64::from(iar)) };
    } else {
        wr(SECOND.load(Ordering::Relaxed) + 0x10, iar);
    }
}

/// An SGI to this vCPU by GICD_SGIR's "itself" filter (GICv2), or by
/// `send_sgi` to `me` (GICv3, which has no such filter but IRM's "all
/// but self").
pub fn send_sgi_to_self(intid: u32, me: usize) {
    if version() == 3 {
        send_sgi(intid, me);
    } else {
        wr(gicd() + 0xf00, (2 << 24) | intid);
    }
}

pub fn send_sgi(intid: u32, target: usize) {
    if version() == 3 {
        let v = (u64::from(intid) << 24) | (1 << target);
        // SAFETY: ICC_SGI1R_EL1; the hypervisor traps and delivers it.
        unsafe { asm!("msr S3_0_C12_C11_5, {}", "isb", in(reg) v) };
    } else {
        wr(gicd() + 0xf00, (1 << (16 + target)) | intid);
    }
}
