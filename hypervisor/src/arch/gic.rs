//! The physical GIC, version 3 or 2 behind one interface: the hypervisor's
//! own interrupts, passed-through interrupts forwarded to guests, and the
//! virtual CPU interface's list registers.
//!
//! Interrupts are taken at EL2 with EOImode 1: the hypervisor's EOI only
//! drops priority. Its own interrupts it deactivates itself; forwarded ones
//! stay active until the guest's EOI deactivates them through the list
//! register's hardware bit.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use partita_core::vgic::lr;

/// The hypervisor's "look at your mailbox" SGI.
pub const SGI_KICK: u32 = 0;
/// The virtual CPU interface's maintenance interrupt (PPI 9).
pub const MAINTENANCE: u32 = 25;
/// EL2's own timer (CNTHP), which bounds how long held rpmsg messages wait.
pub const HOLD_TIMER: u32 = 26;
const PRIORITY: u32 = 0xa0;

// Distributor (both versions).
const GICD_CTLR: u64 = 0x000;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ICENABLER: u64 = 0x180;
const GICD_IGROUPR: u64 = 0x080;
const GICD_ISPENDR: u64 = 0x200;
const GICD_ICPENDR: u64 = 0x280;
const GICD_ICACTIVER: u64 = 0x380;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_SGIR: u64 = 0xf00;
const GICD_IROUTER: u64 = 0x6000;
// GICv3 redistributor frames.
const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const GICR_SGI: u64 = 0x10000;
const GICR_FRAME: u64 = 0x20000;
// GICv2 CPU interface and virtual interface control.
const GICC_CTLR: u64 = 0x000;
const GICC_PMR: u64 = 0x004;
const GICC_IAR: u64 = 0x00c;
const GICC_EOIR: u64 = 0x010;
const GICC_DIR: u64 = 0x1000;
const GICH_HCR: u64 = 0x000;
const GICH_VTR: u64 = 0x004;
const GICH_VMCR: u64 = 0x008;
const GICH_EISR0: u64 = 0x020;
const GICH_ELRSR0: u64 = 0x030;
const GICH_APR: u64 = 0x0f0;
const GICH_LR: u64 = 0x100;

fn rd(addr: u64) -> u32 {
    // SAFETY: every address passed here lies in a GIC frame from the SDT,
    // mapped Device in the EL2 identity map for the hypervisor's life.
    unsafe { (addr as *const u32).read_volatile() }
}

fn wr(addr: u64, v: u32) {
    // SAFETY: as in `rd`.
    unsafe { (addr as *mut u32).write_volatile(v) }
}

fn wr8(addr: u64, v: u8) {
    // SAFETY: as in `rd`; used only on byte-accessible registers.
    unsafe { (addr as *mut u8).write_volatile(v) }
}

fn wr64(addr: u64, v: u64) {
    // SAFETY: as in `rd`.
    unsafe { (addr as *mut u64).write_volatile(v) }
}

macro_rules! sysreg {
    (read $r:literal) => {{
        let v: u64;
        // SAFETY: a GIC system register read at EL2; no memory effects.
        unsafe { asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
        v
    }};
    (write $r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: a GIC system register write at EL2; no memory effects.
        unsafe { asm!(concat!("msr ", $r, ", {}"), in(reg) v, options(nomem, nostack)) };
    }};
}

macro_rules! ich_lr {
    ($op:ident, $n:expr $(, $v:expr)?) => {
        match $n {
            0 => sysreg!($op "S3_4_C12_C12_0" $(, $v)?),
            1 => sysreg!($op "S3_4_C12_C12_1" $(, $v)?),
            2 => sysreg!($op "S3_4_C12_C12_2" $(, $v)?),
            3 => sysreg!($op "S3_4_C12_C12_3" $(, $v)?),
            4 => sysreg!($op "S3_4_C12_C12_4" $(, $v)?),
            5 => sysreg!($op "S3_4_C12_C12_5" $(, $v)?),
            6 => sysreg!($op "S3_4_C12_C12_6" $(, $v)?),
            _ => sysreg!($op "S3_4_C12_C12_7" $(, $v)?),
        }
    };
}

/// Where the GIC's frames are, from the SDT.
pub enum Gic {
    V3 {
        gicd: u64,
        gicr: u64,
        gicr_size: u64,
    },
    V2 {
        gicd: u64,
        gicc: u64,
        gich: u64,
    },
}

/// GICv2's CPU interface and virtual interface control, where the guests'
/// interrupt vector (`entry.S`) finds them; zero on GICv3, whose
/// interfaces are system registers. Written once at boot, before any
/// guest runs.
#[no_mangle]
static GICV2_FRAMES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

impl Gic {
    /// Tells the guests' interrupt vector which GIC this is.
    pub fn publish_for_vectors(&self) {
        if let Gic::V2 { gicc, gich, .. } = *self {
            GICV2_FRAMES[0].store(gicc, Ordering::Relaxed);
            GICV2_FRAMES[1].store(gich, Ordering::Relaxed);
        }
    }

    /// Once, on the boot CPU: the distributor on, every SPI off.
    pub fn init_distributor(&self) {
        match *self {
            Gic::V3 { gicd, .. } => {
                wr(gicd + GICD_CTLR, 0);
                while rd(gicd + GICD_CTLR) & (1 << 31) != 0 {}
                for i in 1..32 {
                    wr(gicd + GICD_ICENABLER + 4 * i, u32::MAX);
                    wr(gicd + GICD_IGROUPR + 4 * i, u32::MAX);
                }
                // ARE_NS and EnableGrp1NS.
                wr(gicd + GICD_CTLR, (1 << 4) | (1 << 1));
                while rd(gicd + GICD_CTLR) & (1 << 31) != 0 {}
            }
            Gic::V2 { gicd, .. } => {
                wr(gicd + GICD_CTLR, 0);
                for i in 1..32 {
                    wr(gicd + GICD_ICENABLER + 4 * i, u32::MAX);
                }
                // Both groups: without security extensions (QEMU) interrupts
                // reset to Group 0; behind a secure monitor (ZynqMP) the
                // non-secure view has only bit 0.
                wr(gicd + GICD_CTLR, 0b11);
            }
        }
    }

    /// Interrupt lines the distributor implements (GICD_TYPER).
    pub fn lines(&self) -> u32 {
        let (Gic::V3 { gicd, .. } | Gic::V2 { gicd, .. }) = *self;
        ((rd(gicd + 0x004) & 0x1f) + 1) * 32
    }

    fn redistributor(&self, mpidr: u64) -> Option<u64> {
        let Gic::V3 {
            gicr, gicr_size, ..
        } = *self
        else {
            return None;
        };
        let aff = ((mpidr >> 8) & 0xff_0000_0000) | (mpidr & 0xff_ffff);
        let mut frame = gicr;
        while frame < gicr + gicr_size {
            // SAFETY: inside the redistributor region, mapped Device.
            let typer = unsafe { ((frame + GICR_TYPER) as *const u64).read_volatile() };
            if typer >> 32 == aff {
                return Some(frame);
            }
            if typer & (1 << 4) != 0 {
                break;
            }
            frame += GICR_FRAME;
        }
        None
    }

    /// On every CPU: its banked interrupts, its CPU interface at EL2 with
    /// EOImode 1, and the virtual CPU interface's maintenance interrupt.
    pub fn init_cpu(&self, mpidr: u64) -> Result<(), &'static str> {
        let banked = match *self {
            Gic::V3 { .. } => {
                let f = self
                    .redistributor(mpidr)
                    .ok_or("no GICv3 redistributor for this CPU")?;
                wr(f + GICR_WAKER, rd(f + GICR_WAKER) & !0b10);
                while rd(f + GICR_WAKER) & 0b100 != 0 {}
                let sgi = f + GICR_SGI;
                wr(sgi + GICD_ICENABLER, u32::MAX);
                wr(sgi + GICD_IGROUPR, u32::MAX);
                sgi
            }
            Gic::V2 { gicd, .. } => {
                wr(gicd + GICD_ICENABLER, u32::MAX);
                gicd
            }
        };
        for i in 0..8 {
            wr(banked + GICD_IPRIORITYR + 4 * i, PRIORITY * 0x0101_0101);
        }
        wr(
            banked + GICD_ISENABLER,
            (1 << SGI_KICK) | (1 << MAINTENANCE) | (1 << HOLD_TIMER),
        );
        match *self {
            Gic::V3 { .. } => {
                // ICC_SRE_EL2: SRE, and Enable so EL1 may use its system registers.
                sysreg!(write "S3_4_C12_C9_5", 0b1001);
                // SAFETY: synchronises the SRE change.
                unsafe { asm!("isb", options(nomem, nostack)) };
                sysreg!(write "S3_0_C4_C6_0", 0xff); // ICC_PMR_EL1
                sysreg!(write "S3_0_C12_C12_4", 0b10); // ICC_CTLR_EL1.EOImode
                sysreg!(write "S3_0_C12_C12_7", 1); // ICC_IGRPEN1_EL1
            }
            Gic::V2 { gicc, .. } => {
                wr(gicc + GICC_PMR, 0xff);
                // Enable, and EOImode for both groups (bits 9 and 10 without
                // security extensions; the non-secure view has bit 9 only).
                wr(gicc + GICC_CTLR, 0b11 | (1 << 9) | (1 << 10));
            }
        }
        Ok(())
    }

    /// Sends SGI `intid` to the CPU with affinity `mpidr` (GICv3) or CPU
    /// interface number `index` (GICv2).
    pub fn send_sgi(&self, target: u64, intid: u32) {
        // SAFETY: orders the mailbox stores before the SGI.
        unsafe { asm!("dsb ishst", options(nostack)) };
        match *self {
            Gic::V3 { .. } => sysreg!(write "S3_0_C12_C11_5", target | u64::from(intid) << 24), // ICC_SGI1R_EL1
            Gic::V2 { gicd, .. } => wr(gicd + GICD_SGIR, target as u32 | intid),
        }
    }

    /// Orders this CPU's reads after the acknowledge of an SGI after the
    /// stores its sender made before sending it (`send_sgi`'s barrier),
    /// as Linux's GIC drivers do: on GICv3, whose acknowledge is a system
    /// register, the branch on its value and an ISB; on GICv2, a device
    /// load, a DMB.
    pub fn after_sgi_acknowledge(&self) {
        // SAFETY: barriers only.
        match *self {
            Gic::V3 { .. } => unsafe { asm!("isb", options(nostack)) },
            Gic::V2 { .. } => unsafe { asm!("dmb ishld", options(nostack)) },
        }
    }

    /// What `send_sgi` writes to reach the CPU with affinity `mpidr` and
    /// interface number `index` (GICv2), the SGI's number aside; worked
    /// out once per CPU (`cpu::PerCpu`), not on every kick.
    pub fn sgi_target(&self, mpidr: u64, index: usize) -> u64 {
        match *self {
            Gic::V3 { .. } => {
                (((mpidr >> 32) & 0xff) << 48)
                    | (((mpidr >> 16) & 0xff) << 32)
                    | (((mpidr >> 8) & 0xff) << 16)
                    | (1 << (mpidr & 0xf))
            }
            Gic::V2 { .. } => 1 << (16 + index),
        }
    }

    /// Acknowledges the highest-priority pending interrupt: the
    /// acknowledge register's value, which `priority_drop` takes (the
    /// guests' interrupt vector reads it in `entry.S` itself).
    pub fn read_iar(&self) -> u32 {
        match *self {
            Gic::V3 { .. } => sysreg!(read "S3_0_C12_C12_0") as u32,
            Gic::V2 { gicc, .. } => rd(gicc + GICC_IAR),
        }
    }

    /// Drops the running priority of acknowledged `iar` and returns its
    /// INTID; None for a spurious one. `iar` is what the hypervisor hands
    /// back to `deactivate`: on GICv2 an SGI's EOI and deactivation must
    /// name its source CPU as the acknowledge did.
    pub fn priority_drop(&self, iar: u32) -> Option<u32> {
        let (id, iar) = match *self {
            Gic::V3 { .. } => (iar & 0xff_ffff, iar & 0xff_ffff),
            Gic::V2 { .. } => (iar & 0x3ff, iar & 0x1fff),
        };
        if id >= 1020 {
            return None;
        }
        match *self {
            Gic::V3 { .. } => sysreg!(write "S3_0_C12_C12_1", u64::from(iar)),
            Gic::V2 { gicc, .. } => wr(gicc + GICC_EOIR, iar),
        }
        Some(id)
    }

    /// Drops the priority of and deactivates a valid acknowledge value
    /// `iar` (an SGI's: the kick's), whose interrupt needs nothing else of
    /// the GIC: `priority_drop` and `deactivate` in one.
    pub fn complete(&self, iar: u32) {
        match *self {
            Gic::V3 { .. } => {
                sysreg!(write "S3_0_C12_C12_1", u64::from(iar & 0xff_ffff));
                sysreg!(write "S3_0_C12_C11_1", u64::from(iar & 0xff_ffff));
            }
            Gic::V2 { gicc, .. } => {
                wr(gicc + GICC_EOIR, iar & 0x1fff);
                wr(gicc + GICC_DIR, iar & 0x1fff);
            }
        }
    }

    /// Deactivates an interrupt the hypervisor handled itself (by INTID,
    /// or for an SGI by its acknowledge value).
    pub fn deactivate(&self, id: u32) {
        match *self {
            Gic::V3 { .. } => sysreg!(write "S3_0_C12_C11_1", u64::from(id)), // ICC_DIR_EL1
            Gic::V2 { gicc, .. } => wr(gicc + GICC_DIR, id),
        }
    }

    /// Enables or disables a physical SPI, or the PPI of the CPU `mpidr`.
    pub fn set_enabled(&self, intid: u32, mpidr: u64, on: bool) {
        let reg = if on { GICD_ISENABLER } else { GICD_ICENABLER };
        let bit = 1 << (intid % 32);
        match *self {
            Gic::V3 { gicd, .. } if intid >= 32 => {
                wr(
                    gicd + GICD_IPRIORITYR + u64::from(intid & !3),
                    PRIORITY * 0x0101_0101,
                );
                wr(gicd + reg + 4 * u64::from(intid / 32), bit);
            }
            Gic::V3 { .. } => {
                if let Some(f) = self.redistributor(mpidr) {
                    wr(f + GICR_SGI + reg, bit);
                }
            }
            // GICv2 PPIs are banked: only the CPU itself can reach its own.
            Gic::V2 { gicd, .. } => {
                if intid >= 32 {
                    wr(
                        gicd + GICD_IPRIORITYR + u64::from(intid & !3),
                        PRIORITY * 0x0101_0101,
                    );
                }
                wr(gicd + reg + 4 * u64::from(intid / 32), bit);
            }
        }
    }

    /// The set-pending word holding `intid`: the distributor's for an SPI
    /// (and for a GICv2 PPI, banked: this CPU's own), the redistributor
    /// of the CPU `mpidr` for a GICv3 PPI.
    fn pending_word(&self, intid: u32, mpidr: u64) -> Option<u64> {
        let base = match *self {
            Gic::V3 { .. } if intid < 32 => self.redistributor(mpidr)? + GICR_SGI,
            Gic::V3 { gicd, .. } | Gic::V2 { gicd, .. } => gicd,
        };
        Some(base + GICD_ISPENDR + 4 * u64::from(intid / 32))
    }

    /// Whether a physical SPI, or the PPI of the CPU `mpidr`, is pending
    /// (a level-sensitive line that is high reads pending, enabled or not).
    pub fn is_pending(&self, intid: u32, mpidr: u64) -> bool {
        self.pending_word(intid, mpidr)
            .is_some_and(|a| rd(a) & (1 << (intid % 32)) != 0)
    }

    /// Sets or clears the pending state of a physical SPI, or of the PPI
    /// of the CPU `mpidr`.
    pub fn set_pending(&self, intid: u32, mpidr: u64, on: bool) {
        if let Some(a) = self.pending_word(intid, mpidr) {
            let a = if on {
                a
            } else {
                a + (GICD_ICPENDR - GICD_ISPENDR)
            };
            wr(a, 1 << (intid % 32));
        }
    }

    /// Clears a physical SPI's pending and active state: after its
    /// partition stopped, no guest EOI will deactivate it.
    pub fn clear_spi(&self, intid: u32) {
        let (Gic::V3 { gicd, .. } | Gic::V2 { gicd, .. }) = *self;
        let (word, bit) = (4 * u64::from(intid / 32), 1 << (intid % 32));
        wr(gicd + GICD_ICACTIVER + word, bit);
        wr(gicd + GICD_ICPENDR + word, bit);
    }

    /// Clears this CPU's PPI `intid` (pending and active), as `clear_spi`.
    pub fn clear_local(&self, intid: u32, mpidr: u64) {
        let banked = match *self {
            Gic::V3 { .. } => match self.redistributor(mpidr) {
                Some(f) => f + GICR_SGI,
                None => return,
            },
            Gic::V2 { gicd, .. } => gicd,
        };
        wr(banked + GICD_ICACTIVER, 1 << intid);
        wr(banked + GICD_ICPENDR, 1 << intid);
    }

    /// Routes a physical SPI to the CPU `mpidr` (GICv3) or interface `index`.
    pub fn route(&self, intid: u32, mpidr: u64, index: usize) {
        match *self {
            Gic::V3 { gicd, .. } => wr64(
                gicd + GICD_IROUTER + 8 * u64::from(intid),
                mpidr & 0xff_00ff_ffff,
            ),
            // GICD_ITARGETSR is byte-accessible: one byte per interrupt, so
            // two CPUs routing SPIs of two partitions that share a word
            // never race on a read-modify-write of it.
            Gic::V2 { gicd, .. } => {
                wr8(gicd + GICD_ITARGETSR + u64::from(intid), 1u8 << (index & 7))
            }
        }
    }

    // The virtual CPU interface of this CPU.

    /// List registers of this CPU's virtual interface.
    pub fn lr_count(&self) -> usize {
        self.lr_mask().count_ones() as usize
    }

    /// A bit per list register: read from the hardware once (the same on
    /// every CPU of the cluster), then one load on every path that loads
    /// list registers.
    pub fn lr_mask(&self) -> u32 {
        static MASK: AtomicU32 = AtomicU32::new(0);
        match MASK.load(Ordering::Relaxed) {
            0 => {
                let n = match *self {
                    Gic::V3 { .. } => (sysreg!(read "S3_4_C12_C11_1") & 0x1f) as u32 + 1,
                    Gic::V2 { gich, .. } => (rd(gich + GICH_VTR) & 0x3f) + 1,
                }
                .min(8);
                MASK.store((1 << n) - 1, Ordering::Relaxed);
                (1 << n) - 1
            }
            m => m,
        }
    }

    pub fn read_lr(&self, i: usize) -> u64 {
        match *self {
            Gic::V3 { .. } => ich_lr!(read, i),
            Gic::V2 { gich, .. } => u64::from(rd(gich + GICH_LR + 4 * i as u64)),
        }
    }

    pub fn write_lr(&self, i: usize, v: u64) {
        match *self {
            Gic::V3 { .. } => ich_lr!(write, i, v),
            Gic::V2 { gich, .. } => wr(gich + GICH_LR + 4 * i as u64, v as u32),
        }
    }

    /// Bitmap of list registers that hold nothing.
    pub fn empty_lrs(&self) -> u32 {
        match *self {
            Gic::V3 { .. } => sysreg!(read "S3_4_C12_C11_5") as u32,
            Gic::V2 { gich, .. } => rd(gich + GICH_ELRSR0),
        }
    }

    /// Bitmap of list registers whose interrupt the guest EOId and that
    /// asked for a maintenance interrupt then.
    pub fn eoi_lrs(&self) -> u32 {
        match *self {
            Gic::V3 { .. } => sysreg!(read "S3_4_C12_C11_3") as u32,
            Gic::V2 { gich, .. } => rd(gich + GICH_EISR0),
        }
    }

    /// Turns the virtual CPU interface on, optionally with the underflow
    /// maintenance interrupt (more pending than list registers).
    pub fn set_virtual_interface(&self, underflow: bool) {
        let hcr = 1 | (u64::from(underflow) << 1);
        match *self {
            Gic::V3 { .. } => sysreg!(write "S3_4_C12_C11_0", hcr),
            Gic::V2 { gich, .. } => wr(gich + GICH_HCR, hcr as u32),
        }
    }

    /// Writes the virtual CPU interface's control register again, on, with
    /// its underflow interrupt as it was: after a list register was loaded
    /// outside a flush, which alone knows whether others still wait (QEMU
    /// did not always signal a list register's interrupt without a write
    /// here after it).
    pub fn refresh_virtual_interface(&self) {
        match *self {
            Gic::V3 { .. } => {
                let hcr = sysreg!(read "S3_4_C12_C11_0");
                sysreg!(write "S3_4_C12_C11_0", hcr | 1);
            }
            Gic::V2 { gich, .. } => wr(gich + GICH_HCR, rd(gich + GICH_HCR) | 1),
        }
    }

    /// A clean, disabled virtual CPU interface: nothing of a vCPU that
    /// left this CPU carries over to the next one.
    pub fn reset_virtual_interface(&self) {
        for i in 0..self.lr_count() {
            self.write_lr(i, 0);
        }
        match *self {
            Gic::V3 { .. } => {
                sysreg!(write "S3_4_C12_C9_0", 0); // ICH_AP1R0_EL2
                sysreg!(write "S3_4_C12_C8_0", 0); // ICH_AP0R0_EL2
                sysreg!(write "S3_4_C12_C11_7", 0); // ICH_VMCR_EL2
            }
            Gic::V2 { gich, .. } => {
                wr(gich + GICH_APR, 0);
                wr(gich + GICH_VMCR, 0);
            }
        }
        match *self {
            Gic::V3 { .. } => sysreg!(write "S3_4_C12_C11_0", 0),
            Gic::V2 { gich, .. } => wr(gich + GICH_HCR, 0),
        }
    }

    pub fn lr_encode(&self, e: &partita_core::vgic::LrEntry) -> u64 {
        match self {
            Gic::V3 { .. } => lr::encode_v3(e),
            Gic::V2 { .. } => lr::encode_v2(e),
        }
    }

    pub fn lr_intid(&self, v: u64) -> u32 {
        match self {
            Gic::V3 { .. } => lr::intid_v3(v),
            Gic::V2 { .. } => lr::intid_v2(v),
        }
    }

    pub fn lr_state(&self, v: u64) -> u64 {
        match self {
            Gic::V3 { .. } => lr::state_v3(v),
            Gic::V2 { .. } => lr::state_v2(v),
        }
    }

    pub fn lr_with_state(&self, v: u64, s: u64) -> u64 {
        match self {
            Gic::V3 { .. } => lr::with_state_v3(v, s),
            Gic::V2 { .. } => lr::with_state_v2(v, s),
        }
    }
}
