//! The physical console UART behind one small interface: PL011 on QEMU
//! virt (and Cadence on ZynqMP, to come).

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_structs! {
    Pl011Regs {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32>),
        (0x01c => _reserved1),
        (0x030 => cr: ReadWrite<u32>),
        (0x034 => _reserved2),
        (0x1000 => @END),
    }
}

const FR_TXFF: u32 = 1 << 5;
const CR_UARTEN: u32 = 1;
const CR_TXE: u32 = 1 << 8;
const CR_RXE: u32 = 1 << 9;

pub trait Uart: Send + Sync {
    fn put(&self, byte: u8);
}

pub struct Pl011 {
    base: u64,
}

impl Pl011 {
    /// # Safety
    /// `base` must be a PL011 the hypervisor owns, mapped Device for as
    /// long as the value lives.
    pub const unsafe fn new(base: u64) -> Self {
        Pl011 { base }
    }

    fn regs(&self) -> &Pl011Regs {
        // SAFETY: guaranteed by `new`'s caller.
        unsafe { &*(self.base as *const Pl011Regs) }
    }

    /// Turns the UART on without touching its line settings, which the
    /// firmware (or QEMU) chose.
    pub fn enable(&self) {
        let r = self.regs();
        r.cr.set(r.cr.get() | CR_UARTEN | CR_TXE | CR_RXE);
    }
}

impl Uart for Pl011 {
    fn put(&self, byte: u8) {
        let r = self.regs();
        while r.fr.get() & FR_TXFF != 0 {}
        r.dr.set(u32::from(byte));
    }
}
