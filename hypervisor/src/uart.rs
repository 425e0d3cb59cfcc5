//! The physical console UART behind one small interface: PL011 on QEMU
//! virt, Cadence on ZynqMP. Line settings are left as the firmware chose.
//! Only `put` waits for room in the transmit FIFO (for panics); the
//! console feeds the FIFO with `try_put` as far as it has room.

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
        (0x00c => idr: WriteOnly<u32>),
        (0x010 => _reserved1),
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
const PL011_INT_TX: u32 = 1 << 5;
const CDNS_SR_TXFULL: u32 = 1 << 4;
const CDNS_SR_RXEMPTY: u32 = 1 << 1;
const CDNS_CR_ENABLE: u32 = (1 << 4) | (1 << 2); // TX_EN, RX_EN
const CDNS_INT_RX: u32 = 1 | (1 << 8); // RX trigger, RX timeout
const CDNS_INT_TXEMPTY: u32 = 1 << 3;

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
                self.pl011()
                    .imsc
                    .set(self.pl011().imsc.get() | PL011_INT_RX);
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

    /// Interrupts when the transmit FIFO runs low (PL011: at its level,
    /// 1/8 full; Cadence: empty), or no longer.
    pub fn set_tx_interrupt(&self, on: bool) {
        match self.kind {
            UartKind::Pl011 => {
                let imsc = self.pl011().imsc.get();
                self.pl011().imsc.set(if on {
                    imsc | PL011_INT_TX
                } else {
                    imsc & !PL011_INT_TX
                });
            }
            UartKind::Cadence if on => {
                self.cadence().isr.set(CDNS_INT_TXEMPTY);
                self.cadence().ier.set(CDNS_INT_TXEMPTY);
            }
            UartKind::Cadence => self.cadence().idr.set(CDNS_INT_TXEMPTY),
        }
    }

    /// Clears the transmit interrupt (the FIFO was fed, or nothing waits).
    pub fn ack_tx_interrupt(&self) {
        match self.kind {
            UartKind::Pl011 => self.pl011().icr.set(PL011_INT_TX),
            UartKind::Cadence => self.cadence().isr.set(CDNS_INT_TXEMPTY),
        }
    }

    fn tx_full(&self) -> bool {
        match self.kind {
            UartKind::Pl011 => self.pl011().fr.get() & PL011_FR_TXFF != 0,
            UartKind::Cadence => self.cadence().sr.get() & CDNS_SR_TXFULL != 0,
        }
    }

    /// Puts `byte` in the transmit FIFO if it has room; never waits.
    pub fn try_put(&self, byte: u8) -> bool {
        if self.tx_full() {
            return false;
        }
        match self.kind {
            UartKind::Pl011 => self.pl011().dr.set(u32::from(byte)),
            UartKind::Cadence => self.cadence().fifo.set(u32::from(byte)),
        }
        true
    }

    /// Waits for room, then puts `byte`: only for the last words of a
    /// CPU going down, and for output that must be out before power-off.
    pub fn put(&self, byte: u8) {
        while !self.try_put(byte) {
            core::hint::spin_loop();
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
