//! An emulated ARM PL011 (DDI 0183G): enough for Linux's `amba-pl011`
//! driver, `earlycon=pl011` and bare-metal drivers. Transmission is
//! instantaneous, so the transmit FIFO is always empty.
//!
//! Received bytes wait in a buffer of [`RX_BUFFER`] bytes, far deeper than
//! a PL011's 32-byte FIFO: the FIFO the driver sees is the front of it,
//! refilled as the driver drains it, so a pasted line arrives whole even
//! when the guest takes its interrupt late. Only a full buffer drops bytes
//! (an overrun, flagged in RSR and DR as on the hardware).

/// The registers, decoded from their offset in the 4 KiB window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pl011Reg {
    Dr,
    Rsr,
    Fr,
    Ilpr,
    Ibrd,
    Fbrd,
    LcrH,
    Cr,
    Ifls,
    Imsc,
    Ris,
    Mis,
    Icr,
    Dmacr,
    /// PeriphID0..3 and PCellID0..3, which the AMBA bus probes.
    Id(usize),
}

impl Pl011Reg {
    pub fn from_offset(off: u64) -> Option<Self> {
        Some(match off {
            0x000 => Pl011Reg::Dr,
            0x004 => Pl011Reg::Rsr,
            0x018 => Pl011Reg::Fr,
            0x020 => Pl011Reg::Ilpr,
            0x024 => Pl011Reg::Ibrd,
            0x028 => Pl011Reg::Fbrd,
            0x02c => Pl011Reg::LcrH,
            0x030 => Pl011Reg::Cr,
            0x034 => Pl011Reg::Ifls,
            0x038 => Pl011Reg::Imsc,
            0x03c => Pl011Reg::Ris,
            0x040 => Pl011Reg::Mis,
            0x044 => Pl011Reg::Icr,
            0x048 => Pl011Reg::Dmacr,
            0xfe0..=0xffc => Pl011Reg::Id(((off - 0xfe0) / 4) as usize),
            _ => return None,
        })
    }
}

/// PeriphID 0x00341011 (PL011 r1p5, ARM) and the PrimeCell ID 0xb105f00d.
const ID: [u32; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
const FR_TXFE: u32 = 1 << 7;
const FR_RXFF: u32 = 1 << 6;
const FR_RXFE: u32 = 1 << 4;
pub const INT_RX: u32 = 1 << 4;
pub const INT_TX: u32 = 1 << 5;
pub const INT_RT: u32 = 1 << 6;
/// Overrun error: in RSR, and in DR beside the first byte read after it.
const OE: u32 = 1 << 3;
const DR_OE: u32 = 1 << 11;
/// The FIFO a PL011 has: FR says full once this many bytes wait.
const RX_FIFO: usize = 32;
/// Bytes of typed input a partition's console holds before dropping any.
pub const RX_BUFFER: usize = 4096;

#[derive(Clone, Debug)]
pub struct VirtualPl011 {
    /// On the heap: a partition is built once and moved into place, and
    /// 4 KiB inside it cost the boot a copy of it each move.
    rx: alloc::boxed::Box<[u8]>,
    rx_head: usize,
    rx_len: usize,
    /// RSR: overrun since the driver last cleared it.
    rsr: u32,
    /// The next byte read carries DR's overrun flag.
    dr_overrun: bool,
    /// Bytes dropped on a full buffer, since the partition started.
    pub rx_dropped: u64,
    ris: u32,
    imsc: u32,
    cr: u32,
    lcr_h: u32,
    ibrd: u32,
    fbrd: u32,
    ifls: u32,
    dmacr: u32,
    ilpr: u32,
}

impl Default for VirtualPl011 {
    fn default() -> Self {
        Self::new()
    }
}

/// What a guest access did, beyond its register effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// A byte to put on the console.
    Transmit(u8),
}

impl VirtualPl011 {
    /// The reset state (TRM 3.2): UART enabled for transmit and receive, as
    /// firmware leaves a console.
    pub fn new() -> Self {
        VirtualPl011 {
            rx: alloc::vec![0; RX_BUFFER].into_boxed_slice(),
            rx_head: 0,
            rx_len: 0,
            rsr: 0,
            dr_overrun: false,
            rx_dropped: 0,
            ris: INT_TX,
            imsc: 0,
            cr: 0x301,
            lcr_h: 0,
            ibrd: 0,
            fbrd: 0,
            ifls: 0x12,
            dmacr: 0,
            ilpr: 0,
        }
    }

    fn reg_value(&self, r: Pl011Reg) -> u32 {
        match r {
            Pl011Reg::Dr => 0,
            Pl011Reg::Rsr => self.rsr,
            Pl011Reg::Fr => {
                let mut fr = FR_TXFE;
                if self.rx_len == 0 {
                    fr |= FR_RXFE;
                }
                if self.rx_len >= RX_FIFO {
                    fr |= FR_RXFF;
                }
                fr
            }
            Pl011Reg::Ilpr => self.ilpr,
            Pl011Reg::Ibrd => self.ibrd,
            Pl011Reg::Fbrd => self.fbrd,
            Pl011Reg::LcrH => self.lcr_h,
            Pl011Reg::Cr => self.cr,
            Pl011Reg::Ifls => self.ifls,
            Pl011Reg::Imsc => self.imsc,
            Pl011Reg::Ris => self.ris,
            Pl011Reg::Mis => self.ris & self.imsc,
            Pl011Reg::Icr => 0,
            Pl011Reg::Dmacr => self.dmacr,
            Pl011Reg::Id(i) => ID[i],
        }
    }

    /// Whether a read at `off` changes the device: only UARTDR's, which
    /// takes a byte from the receive FIFO (and may lower the interrupt).
    pub fn read_changes(off: u64) -> bool {
        Pl011Reg::from_offset(off & !3) == Some(Pl011Reg::Dr)
    }

    /// A guest read of `width` bytes at `off`. Unknown offsets read as zero
    /// (`None` tells the caller to log it).
    pub fn read(&mut self, off: u64, width: u8) -> Option<u32> {
        let reg = Pl011Reg::from_offset(off & !3)?;
        let v = if reg == Pl011Reg::Dr {
            self.pop_rx()
        } else {
            self.reg_value(reg)
        };
        // A driver's word read, the whole register: nothing to cut.
        if width >= 4 && off & 3 == 0 {
            return Some(v);
        }
        let shift = (off & 3) * 8;
        let mask = if width >= 4 {
            u32::MAX
        } else {
            (1u32 << (u32::from(width) * 8)) - 1
        };
        Some((v >> shift) & mask)
    }

    /// A guest write. Narrow writes merge into the register they fall in.
    pub fn write(&mut self, off: u64, width: u8, value: u32) -> Option<Effect> {
        let reg = Pl011Reg::from_offset(off & !3)?;
        let shift = (off & 3) * 8;
        let mask = if width >= 4 {
            u32::MAX
        } else {
            ((1u32 << (u32::from(width) * 8)) - 1) << shift
        };
        let merge = |old: u32| (old & !mask) | ((value << shift) & mask);
        match reg {
            Pl011Reg::Dr => {
                self.ris |= INT_TX;
                return Some(Effect::Transmit(value as u8));
            }
            Pl011Reg::Ilpr => self.ilpr = merge(self.ilpr) & 0xff,
            Pl011Reg::Ibrd => self.ibrd = merge(self.ibrd) & 0xffff,
            Pl011Reg::Fbrd => self.fbrd = merge(self.fbrd) & 0x3f,
            Pl011Reg::LcrH => self.lcr_h = merge(self.lcr_h) & 0xff,
            Pl011Reg::Cr => self.cr = merge(self.cr) & 0xff87,
            Pl011Reg::Ifls => self.ifls = merge(self.ifls) & 0x3f,
            Pl011Reg::Imsc => self.imsc = merge(self.imsc) & 0x7ff,
            Pl011Reg::Icr => self.ris &= !merge(0),
            Pl011Reg::Dmacr => self.dmacr = merge(self.dmacr) & 0x7,
            // ECR: any write clears the errors.
            Pl011Reg::Rsr => self.rsr = 0,
            // Read-only registers ignore writes, as the hardware does.
            Pl011Reg::Fr | Pl011Reg::Ris | Pl011Reg::Mis | Pl011Reg::Id(_) => {}
        }
        Some(Effect::None)
    }

    fn pop_rx(&mut self) -> u32 {
        if self.rx_len == 0 {
            return 0;
        }
        let b = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % RX_BUFFER;
        self.rx_len -= 1;
        if self.rx_len == 0 {
            self.ris &= !(INT_RX | INT_RT);
        }
        let oe = if core::mem::take(&mut self.dr_overrun) {
            DR_OE
        } else {
            0
        };
        u32::from(b) | oe
    }

    /// Queues a received byte; false when the buffer is full: the byte is
    /// dropped and counted, and the driver sees an overrun.
    pub fn push_rx(&mut self, b: u8) -> bool {
        if self.rx_len == RX_BUFFER {
            self.rx_dropped = self.rx_dropped.saturating_add(1);
            self.rsr |= OE;
            self.dr_overrun = true;
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_BUFFER] = b;
        self.rx_len += 1;
        self.ris |= INT_RX | INT_RT;
        true
    }

    /// Whether bytes were dropped since the driver last read one.
    pub fn overrun(&self) -> bool {
        self.dr_overrun
    }

    /// Whether the interrupt line is asserted.
    pub fn irq_pending(&self) -> bool {
        self.ris & self.imsc != 0
    }
}

/// Assembles a guest's output into lines, so lines of different
/// partitions never interleave on the shared console.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    buf: [u8; LINE_MAX],
    len: usize,
    /// The start of a UTF-8 character that a full line cut in two: it
    /// begins the next line instead.
    carry: [u8; 3],
    carry_len: usize,
}

pub const LINE_MAX: usize = 200;

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    pub const fn new() -> Self {
        LineBuffer {
            buf: [0; LINE_MAX],
            len: 0,
            carry: [0; 3],
            carry_len: 0,
        }
    }

    /// Adds a byte; returns a complete line (without its newline) when one
    /// ends or the buffer is full. Carriage returns are dropped. A full
    /// line is cut between characters, not inside one.
    pub fn push(&mut self, b: u8) -> Option<&[u8]> {
        if self.carry_len > 0 {
            let n = core::mem::take(&mut self.carry_len);
            self.buf[..n].copy_from_slice(&self.carry[..n]);
            self.len = n;
        }
        match b {
            b'\r' => None,
            b'\n' => Some(self.take()),
            _ => {
                self.buf[self.len] = b;
                self.len += 1;
                if self.len < LINE_MAX {
                    return None;
                }
                let cut = LINE_MAX - incomplete_tail(&self.buf);
                self.carry_len = LINE_MAX - cut;
                self.carry[..self.carry_len].copy_from_slice(&self.buf[cut..]);
                self.len = 0;
                Some(&self.buf[..cut])
            }
        }
    }

    fn take(&mut self) -> &[u8] {
        let n = core::mem::take(&mut self.len);
        &self.buf[..n]
    }

    pub fn pending(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Takes the unfinished line, to show it before its newline comes.
    pub fn take_pending(&mut self) -> &[u8] {
        self.take()
    }
}

/// How many bytes at the end of `b` are the start of a UTF-8 character
/// whose other bytes have not come yet (0 if none).
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xc0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match c {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amba_id_registers() {
        let mut u = VirtualPl011::new();
        let id: u32 = (0..4)
            .map(|i| u.read(0xfe0 + 4 * i, 4).unwrap() << (8 * i))
            .sum();
        assert_eq!(id, 0x0034_1011);
        let cell: u32 = (0..4)
            .map(|i| u.read(0xff0 + 4 * i, 4).unwrap() << (8 * i))
            .sum();
        assert_eq!(cell, 0xb105_f00d);
    }

    #[test]
    fn transmit_and_flags() {
        let mut u = VirtualPl011::new();
        assert_eq!(u.write(0, 4, u32::from(b'A')), Some(Effect::Transmit(b'A')));
        assert_eq!(u.read(0x18, 4), Some(FR_TXFE | FR_RXFE));
        assert_eq!(u.read(0x18, 2), Some(FR_TXFE | FR_RXFE));
        assert_eq!(u.read(0x400, 4), None);
        assert_eq!(u.write(0x400, 4, 0), None);
    }

    /// Every read but UARTDR's leaves the device as it was, so its
    /// interrupt line need not be looked at again after one.
    #[test]
    fn only_a_data_register_read_changes_the_device() {
        // Every register and the bytes beyond them, each ID register.
        for off in (0..0x60).chain(0xfe0..0x1000) {
            for width in [1, 2, 4] {
                let mut u = VirtualPl011::new();
                u.write(0x38, 2, INT_RX | INT_RT).unwrap();
                assert!(u.push_rx(b'x'));
                let before = format!("{u:?}");
                let _ = u.read(off, width);
                let changed = format!("{u:?}") != before;
                assert_eq!(changed, VirtualPl011::read_changes(off), "offset {off:#x}");
            }
        }
    }

    #[test]
    fn receive_raises_and_clears_the_interrupt() {
        let mut u = VirtualPl011::new();
        u.write(0x38, 2, INT_RX | INT_RT).unwrap();
        assert!(!u.irq_pending());
        assert!(u.push_rx(b'x') && u.push_rx(b'y'));
        assert!(u.irq_pending());
        assert_eq!(u.read(0x18, 4).unwrap() & FR_RXFE, 0);
        assert_eq!(u.read(0, 4), Some(u32::from(b'x')));
        assert_eq!(u.read(0, 1), Some(u32::from(b'y')));
        assert!(!u.irq_pending());
        for _ in 0..RX_FIFO {
            assert!(u.push_rx(b'z'));
        }
        assert_ne!(u.read(0x18, 4).unwrap() & FR_RXFF, 0);
    }

    #[test]
    fn a_pasted_burst_waits_whole_and_only_a_full_buffer_drops() {
        let mut u = VirtualPl011::new();
        let text: Vec<u8> = (0..RX_BUFFER).map(|i| b'a' + (i % 26) as u8).collect();
        for &b in &text {
            assert!(u.push_rx(b));
        }
        // The driver drains what FR shows, a FIFO at a time, and finds
        // every byte in order.
        let mut got = Vec::new();
        while u.read(0x18, 4).unwrap() & FR_RXFE == 0 {
            got.push(u.read(0, 4).unwrap() as u8);
        }
        assert_eq!(got, text);
        assert!(!u.irq_pending());
        // Overrun: the byte is dropped and counted, RSR and the next DR
        // read say so, and a write to ECR clears it.
        for _ in 0..RX_BUFFER {
            u.push_rx(b'x');
        }
        assert!(!u.push_rx(b'!'));
        assert_eq!(u.rx_dropped, 1);
        assert_eq!(u.read(0x4, 4), Some(OE));
        assert_eq!(u.read(0, 4), Some(DR_OE | u32::from(b'x')));
        assert_eq!(u.read(0, 4), Some(u32::from(b'x')));
        u.write(0x4, 4, 0).unwrap();
        assert_eq!(u.read(0x4, 4), Some(0));
    }

    #[test]
    fn byte_writes_merge_and_icr_clears() {
        let mut u = VirtualPl011::new();
        u.write(0x30, 4, 0).unwrap();
        u.write(0x31, 1, 0x03).unwrap();
        assert_eq!(u.read(0x30, 4), Some(0x300));
        u.write(0x38, 4, INT_TX).unwrap();
        assert!(u.irq_pending());
        u.write(0x44, 4, INT_TX).unwrap();
        assert!(!u.irq_pending());
    }

    #[test]
    fn lines_are_assembled_and_bounded() {
        let mut l = LineBuffer::new();
        assert_eq!(l.push(b'h'), None);
        assert_eq!(l.push(b'\r'), None);
        assert_eq!(l.push(b'i'), None);
        assert_eq!(l.push(b'\n'), Some(&b"hi"[..]));
        for _ in 0..LINE_MAX - 1 {
            assert!(l.push(b'x').is_none());
        }
        assert_eq!(l.push(b'x').map(|s| s.len()), Some(LINE_MAX));
        assert!(l.pending().is_empty());
    }

    #[test]
    fn a_full_line_is_cut_between_characters() {
        let mut l = LineBuffer::new();
        // LINE_MAX - 1 ASCII bytes, then a 3-byte character across the cut.
        for _ in 0..LINE_MAX - 1 {
            assert!(l.push(b'x').is_none());
        }
        let snow = "\u{2603}".as_bytes();
        assert_eq!(l.push(snow[0]).map(|s| s.len()), Some(LINE_MAX - 1));
        assert!(l.push(snow[1]).is_none());
        assert!(l.push(snow[2]).is_none());
        assert_eq!(l.push(b'\n'), Some(snow));
        for (tail, cut) in [
            (&b"ab"[..], 0),
            (b"\xc3", 1),
            (b"\xe2\x98", 2),
            (b"\xe2\x98\x83", 0),
            (b"\xf0\x9f\x98", 3),
            (b"\x98\x83", 0),
        ] {
            assert_eq!(incomplete_tail(tail), cut, "{tail:?}");
        }
    }
}
