//! The physical console UART behind one small interface: PL011 on QEMU
//! virt, Cadence on ZynqMP. Line settings are left as the firmware chose.

use partita_core::sdt::UartKind;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    Pl011Regs {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32>),
        (0x01c => _reserved1),
        (0x030 => cr: ReadWrite<u32>),
        (0x034 => ifls: ReadWrite<u32>),
        (0x038 => imsc: ReadWrite<u32>),
        (0x03c => _reserved2),
        (0x044 => icr: WriteOnly<u32>),
        (0x048 => _reserved3),
        (0x1000 => @END),
    }
}

register_structs! {
    CadenceRegs {
        (0x000 => cr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x008 => ier: WriteOnly<u32>),
        (0x00c => _reserved1),
        (0x014 => isr: ReadWrite<u32>),
        (0x018 => _reserved2),
        (0x01c => rxtout: ReadWrite<u32>),
        (0x020 => rxwm: ReadWrite<u32>),
        (0x024 => _reserved3),
        (0x02c => sr: ReadOnly<u32>),
        (0x030 => fifo: ReadWrite<u32>),
        (0x034 => _reserved4),
        (0x1000 => @END),
    }
}

const PL011_FR_TXFF: u32 = 1 << 5;
const PL011_FR_RXFE: u32 = 1 << 4;
const PL011_CR_ENABLE: u32 = 1 | (1 << 8) | (1 << 9); // UARTEN, TXE, RXE
const PL011_INT_RX: u32 = (1 << 4) | (1 << 6); // RX and RX timeout
const CDNS_SR_TXFULL: u32 = 1 << 4;
const CDNS_SR_RXEMPTY: u32 = 1 << 1;
const CDNS_CR_ENABLE: u32 = (1 << 4) | (1 << 2); // TX_EN, RX_EN
const CDNS_INT_RX: u32 = 1 | (1 << 8); // RX trigger, RX timeout

pub struct Uart {
    kind: UartKind,
    base: u64,
}

impl Uart {
    /// # Safety
    /// `base` must be a UART of `kind` the hypervisor owns, mapped Device
    /// for as long as the value lives.
    pub const unsafe fn new(kind: UartKind, base: u64) -> Self {
        Uart { kind, base }
    }

    fn pl011(&self) -> &Pl011Regs {
        // SAFETY: guaranteed by `new`'s caller.
        unsafe { &*(self.base as *const Pl011Regs) }
    }

    fn cadence(&self) -> &CadenceRegs {
        // SAFETY: guaranteed by `new`'s caller.
        unsafe { &*(self.base as *const CadenceRegs) }
    }

    pub fn enable(&self) {
        match self.kind {
            UartKind::Pl011 => self.pl011().cr.set(self.pl011().cr.get() | PL011_CR_ENABLE),
            UartKind::Cadence => self
                .cadence()
                .cr
                .set((self.cadence().cr.get() & !0x3c) | CDNS_CR_ENABLE),
        }
    }

    /// Interrupts on received bytes (and on a receive timeout).
    pub fn enable_rx_interrupt(&self) {
        match self.kind {
            UartKind::Pl011 => {
                self.pl011().ifls.set(0); // interrupt at 1/8 full
                self.pl011().imsc.set(PL011_INT_RX);
            }
            UartKind::Cadence => {
                self.cadence().rxwm.set(1);
                self.cadence().rxtout.set(10);
                self.cadence().ier.set(CDNS_INT_RX);
            }
        }
    }

    /// Clears the receive interrupt once the FIFO is drained.
    pub fn ack_rx_interrupt(&self) {
        match self.kind {
            UartKind::Pl011 => self.pl011().icr.set(PL011_INT_RX),
            UartKind::Cadence => self.cadence().isr.set(CDNS_INT_RX),
        }
    }

    pub fn put(&self, byte: u8) {
        match self.kind {
            UartKind::Pl011 => {
                while self.pl011().fr.get() & PL011_FR_TXFF != 0 {}
                self.pl011().dr.set(u32::from(byte));
            }
            UartKind::Cadence => {
                while self.cadence().sr.get() & CDNS_SR_TXFULL != 0 {}
                self.cadence().fifo.set(u32::from(byte));
            }
        }
    }

    pub fn get(&self) -> Option<u8> {
        match self.kind {
            UartKind::Pl011 => {
                (self.pl011().fr.get() & PL011_FR_RXFE == 0).then(|| self.pl011().dr.get() as u8)
            }
            UartKind::Cadence => (self.cadence().sr.get() & CDNS_SR_RXEMPTY == 0)
                .then(|| self.cadence().fifo.get() as u8),
        }
    }
}
