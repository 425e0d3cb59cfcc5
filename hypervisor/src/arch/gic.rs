//! The physical GICv3: the hypervisor's own interrupts (inter-processor
//! requests) are taken at EL2 as Group 1 non-secure interrupts.

use core::arch::asm;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_structs! {
    Gicd {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => typer: ReadOnly<u32>),
        (0x0008 => _reserved0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => _reserved1),
        (0x10000 => @END),
    }
}

register_structs! {
    GicrRd {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64>),
        (0x0010 => _reserved0),
        (0x0014 => waker: ReadWrite<u32>),
        (0x0018 => _reserved1),
        (0x10000 => @END),
    }
}

register_structs! {
    GicrSgi {
        (0x0000 => _reserved0),
        (0x0080 => igroupr0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => isenabler0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0180 => icenabler0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        (0x0400 => ipriorityr: [ReadWrite<u32>; 8]),
        (0x0420 => _reserved4),
        (0x10000 => @END),
    }
}

const GICD_CTLR_RWP: u32 = 1 << 31;
const GICD_CTLR_ARE_NS: u32 = 1 << 4;
const GICD_CTLR_ENABLE_G1NS: u32 = 1 << 1;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_FRAME: u64 = 0x20000;

/// The hypervisor's software-generated interrupt: "look at your mailbox".
pub const SGI_KICK: u32 = 0;

pub struct GicV3 {
    gicd: u64,
    gicr: u64,
    gicr_size: u64,
}

fn gicd(base: u64) -> &'static Gicd {
    // SAFETY: `base` is the distributor from the SDT, mapped Device by the
    // EL2 identity map for the hypervisor's whole life.
    unsafe { &*(base as *const Gicd) }
}

impl GicV3 {
    pub const fn new(gicd: u64, gicr: u64, gicr_size: u64) -> Self {
        GicV3 {
            gicd,
            gicr,
            gicr_size,
        }
    }

    /// Once, on the boot CPU: affinity routing and Group 1 on.
    pub fn init_distributor(&self) {
        let d = gicd(self.gicd);
        d.ctlr.set(0);
        while d.ctlr.get() & GICD_CTLR_RWP != 0 {}
        d.ctlr.set(GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1NS);
        while d.ctlr.get() & GICD_CTLR_RWP != 0 {}
    }

    /// This CPU's redistributor, found by its affinity.
    fn redistributor(&self, mpidr: u64) -> Option<u64> {
        let aff = ((mpidr >> 8) & 0xff_0000_0000) | (mpidr & 0xff_ffff);
        let mut frame = self.gicr;
        while frame < self.gicr + self.gicr_size {
            // SAFETY: inside the redistributor region, mapped Device.
            let rd = unsafe { &*(frame as *const GicrRd) };
            let typer = rd.typer.get();
            if typer >> 32 == aff {
                return Some(frame);
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            frame += GICR_FRAME;
        }
        None
    }

    /// On every CPU: wake its redistributor, enable the kick SGI, and turn on
    /// the system-register CPU interface at EL2.
    pub fn init_cpu(&self, mpidr: u64) -> Result<(), &'static str> {
        let frame = self
            .redistributor(mpidr)
            .ok_or("no GICv3 redistributor for this CPU")?;
        // SAFETY: as in `redistributor`; the SGI frame follows RD_base.
        let (rd, sgi) = unsafe {
            (
                &*(frame as *const GicrRd),
                &*((frame + 0x10000) as *const GicrSgi),
            )
        };
        rd.waker.set(rd.waker.get() & !GICR_WAKER_PROCESSOR_SLEEP);
        while rd.waker.get() & GICR_WAKER_CHILDREN_ASLEEP != 0 {}
        sgi.icenabler0.set(u32::MAX);
        sgi.igroupr0.set(u32::MAX);
        for p in sgi.ipriorityr.iter() {
            p.set(0x8080_8080);
        }
        sgi.isenabler0.set(1 << SGI_KICK);
        // SAFETY: ICC_SRE_EL2 = SRE | Enable (lower ELs may use system
        // registers too); then priority mask open, EOI drops and deactivates,
        // Group 1 on. No memory effects.
        unsafe {
            asm!(
                "msr S3_4_C12_C9_5, {sre}",
                "isb",
                "msr S3_0_C4_C6_0, {pmr}",
                "msr S3_0_C12_C12_4, xzr",
                "msr S3_0_C12_C12_7, {one}",
                "isb",
                sre = in(reg) 0b1001u64,
                pmr = in(reg) 0xffu64,
                one = in(reg) 1u64,
                options(nostack)
            );
        }
        Ok(())
    }

    /// Sends SGI `intid` to the CPU with affinity `mpidr`.
    pub fn send_sgi(&self, mpidr: u64, intid: u32) {
        let aff0 = mpidr & 0xf;
        let aff1 = (mpidr >> 8) & 0xff;
        let aff2 = (mpidr >> 16) & 0xff;
        let aff3 = (mpidr >> 32) & 0xff;
        let v = (aff3 << 48) | (aff2 << 32) | (u64::from(intid) << 24) | (aff1 << 16) | (1 << aff0);
        // SAFETY: ICC_SGI1R_EL1 write; the dsb orders the mailbox stores before it.
        unsafe { asm!("dsb ishst", "msr S3_0_C12_C11_5, {}", "isb", in(reg) v, options(nostack)) };
    }

    /// Acknowledges the highest-priority pending interrupt, if any.
    pub fn ack(&self) -> Option<u32> {
        let iar: u64;
        // SAFETY: ICC_IAR1_EL1 read.
        unsafe { asm!("mrs {}, S3_0_C12_C12_0", out(reg) iar, options(nostack)) };
        let id = (iar & 0xff_ffff) as u32;
        (id < 1020).then_some(id)
    }

    pub fn eoi(&self, intid: u32) {
        // SAFETY: ICC_EOIR1_EL1 write of an acknowledged INTID.
        unsafe {
            asm!("msr S3_0_C12_C12_1, {}", "isb", in(reg) u64::from(intid), options(nostack))
        };
    }
}
