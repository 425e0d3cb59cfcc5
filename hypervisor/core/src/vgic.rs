//! The virtual GIC of one partition: distributor and (GICv3) redistributor
//! registers as state, and the choice of what goes into the list registers.
//!
//! A partition sees and changes only its own interrupts: SGIs and PPIs of
//! its vCPUs, and the SPIs of its devices (passed through or emulated).
//! Every other interrupt reads as zero and ignores writes. Hardware effects
//! (enabling a passed-through interrupt, routing it, telling a vCPU it has
//! work) go through [`Backend`], so all of this runs in host tests.

use alloc::vec;
use alloc::vec::Vec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

/// Interrupt IDs below this are SGIs (0-15) and PPIs (16-31), banked per vCPU.
pub const SPI_BASE: u32 = 32;
/// The highest INTID plus one that a distributor can have.
pub const MAX_INTID: u32 = 1020;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Irq {
    owned: bool,
    /// Passed through: the physical interrupt with the same INTID backs it.
    hw: bool,
    enabled: bool,
    /// Waiting for a list register.
    pending: bool,
    edge: bool,
    group1: bool,
    priority: u8,
    /// SPIs: the vCPU it is routed to.
    target: u8,
}

impl Irq {
    /// Its list-register entry as `intid`, from vCPU `source` (GICv2 SGIs):
    /// the hardware bit for a passed-through interrupt, EOI maintenance for
    /// a level-sensitive emulated SPI, whose line is sampled again then.
    fn entry(&self, intid: u32, source: usize) -> LrEntry {
        LrEntry {
            intid,
            priority: self.priority,
            hw: self.hw,
            group1: self.group1,
            eoi_maintenance: !self.hw && !self.edge && intid >= SPI_BASE,
            source: source as u8,
        }
    }

    /// `entry` for an SGI, which is never passed through nor
    /// level-sensitive: known so, not tested, on the SGI fast paths.
    fn sgi_entry(&self, intid: u32, source: usize) -> LrEntry {
        LrEntry {
            hw: false,
            eoi_maintenance: false,
            ..self.entry(intid, source)
        }
    }
}

/// A virtual interrupt to put in a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LrEntry {
    pub intid: u32,
    pub priority: u8,
    /// The physical interrupt with the same INTID is deactivated at the
    /// guest's EOI: by the list register's hardware bit on GICv3, by the
    /// hypervisor at the EOI maintenance interrupt on GICv2 (see
    /// [`lr::encode_v2`]).
    pub hw: bool,
    pub group1: bool,
    /// Ask for a maintenance interrupt at EOI (level-sensitive emulated
    /// interrupts, whose line is sampled again then).
    pub eoi_maintenance: bool,
    /// GICv2 SGIs: the sending vCPU.
    pub source: u8,
}

/// What the vGIC needs done in hardware.
pub trait Backend {
    /// A passed-through SPI, or a PPI of `vcpu`, is enabled or disabled.
    fn hw_enable(&mut self, intid: u32, vcpu: usize, on: bool);
    /// A passed-through SPI now goes to `vcpu`'s physical CPU.
    fn hw_route(&mut self, intid: u32, vcpu: usize);
    /// `vcpu` has a new pending interrupt: load it now if it runs here,
    /// or signal its CPU.
    fn notify(&mut self, vcpu: usize);
    /// Whether the physical interrupt behind `intid` of `vcpu` is pending as
    /// the guest would see it natively: in the physical distributor (a
    /// level line that is high, even while disabled) or taken by the
    /// hypervisor and waiting in a list register for the guest to take it.
    fn hw_pending(&mut self, intid: u32, vcpu: usize) -> bool;
    /// A guest's write to GICD/GICR_I{S,C}PENDR for a hardware-backed
    /// interrupt, carried to the physical one.
    fn hw_set_pending(&mut self, intid: u32, vcpu: usize, on: bool);
}

/// GICv2's GICD_SGIR, the register a guest sends SGIs with.
pub const GICD_SGIR: u64 = 0xf00;

/// GICD_SGIR value `v` written by `vcpu` of a partition with `vcpus`
/// vCPUs: the vCPUs it names (a bitmap) and the SGI.
pub fn sgir_targets(v: u64, vcpu: usize, vcpus: usize) -> (u32, u32) {
    let all = (1u32 << vcpus) - 1;
    let targets = match (v >> 24) & 3 {
        0 => (v >> 16) as u32 & 0xff,
        1 => all & !(1 << vcpu),
        2 => 1 << vcpu,
        _ => 0,
    };
    (targets, v as u32 & 0xf)
}

/// A register access the vGIC does not implement (logged, read as zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unhandled;

pub struct Vgic {
    version: Version,
    vcpus: usize,
    /// Interrupt lines the distributor reports (a multiple of 32).
    lines: u32,
    ctlr: u32,
    spis: Vec<Irq>,
    banked: Vec<[Irq; 32]>,
    /// GICv2: sender of each pending SGI, per vCPU.
    sgi_source: Vec<[u8; 16]>,
    /// GICv3 GICR_WAKER.ProcessorSleep per vCPU.
    asleep: Vec<bool>,
    /// Per vCPU, a bit per INTID that is deliverable to it (pending,
    /// enabled, and for an SPI the distributor on): the list-register path
    /// looks at these few bits, never at every interrupt line, and a
    /// pending interrupt the guest disabled stays out of them until it is
    /// enabled (`requeue`).
    queued: Vec<[u64; 16]>,
    /// Per vCPU, bit w set when `queued` word w is not empty, so an idle
    /// vCPU costs one test.
    summary: Vec<u16>,
}

const PRIORITY_DEFAULT: u8 = 0xa0;

impl Vgic {
    /// A vGIC with `vcpus` vCPUs and `lines` interrupt lines. SGIs and PPIs
    /// are owned; SPIs are added with [`Vgic::own_spi`].
    pub fn new(version: Version, vcpus: usize, lines: u32) -> Self {
        let lines = lines.clamp(64, MAX_INTID + 4).next_multiple_of(32);
        let ppi = Irq {
            owned: true,
            group1: version == Version::V3,
            priority: PRIORITY_DEFAULT,
            ..Default::default()
        };
        let mut banked = [ppi; 32];
        for sgi in banked.iter_mut().take(16) {
            sgi.enabled = version == Version::V2; // GICv2 SGIs are always enabled
            sgi.edge = true;
        }
        Vgic {
            version,
            vcpus,
            lines,
            ctlr: 0,
            spis: vec![Irq::default(); (lines - SPI_BASE) as usize],
            banked: vec![banked; vcpus],
            sgi_source: vec![[0; 16]; vcpus],
            asleep: vec![true; vcpus],
            queued: vec![[0; 16]; vcpus],
            summary: vec![0; vcpus],
        }
    }

    /// Gives the partition SPI `intid`; `hw` if a physical one backs it.
    pub fn own_spi(&mut self, intid: u32, hw: bool) {
        if let Some(i) = self.spis.get_mut((intid.wrapping_sub(SPI_BASE)) as usize) {
            *i = Irq {
                owned: true,
                hw,
                priority: PRIORITY_DEFAULT,
                group1: self.version == Version::V3,
                ..Default::default()
            };
        }
    }

    /// Marks PPI `intid` as backed by the physical PPI of each vCPU's CPU
    /// (the virtual timer).
    pub fn own_hw_ppi(&mut self, intid: u32) {
        for b in &mut self.banked {
            if let Some(i) = b.get_mut(intid as usize) {
                i.hw = true;
            }
        }
    }

    pub fn vcpus(&self) -> usize {
        self.vcpus
    }

    fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        let i = if intid < SPI_BASE {
            self.banked.get(vcpu)?.get(intid as usize)?
        } else {
            self.spis.get((intid - SPI_BASE) as usize)?
        };
        i.owned.then_some(i)
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        let i = if intid < SPI_BASE {
            self.banked.get_mut(vcpu)?.get_mut(intid as usize)?
        } else {
            self.spis.get_mut((intid - SPI_BASE) as usize)?
        };
        i.owned.then_some(i)
    }

    fn target_of(&self, vcpu: usize, intid: u32) -> usize {
        if intid < SPI_BASE {
            vcpu
        } else {
            self.irq(vcpu, intid).map_or(0, |i| usize::from(i.target))
        }
    }

    fn enabled(&self) -> bool {
        self.ctlr
            & if self.version == Version::V3 {
                0b10
            } else {
                0b1
            }
            != 0
    }

    /// Makes `intid` pending for `vcpu` (SGIs, PPIs) or its target (SPIs):
    /// a physical interrupt that arrived, or an emulated device's.
    pub fn raise(&mut self, vcpu: usize, intid: u32, be: &mut impl Backend) {
        let dist_on = self.enabled() || intid < SPI_BASE;
        let Some(irq) = self.irq_mut(vcpu, intid) else {
            return;
        };
        irq.pending = true;
        let t = if intid < SPI_BASE {
            vcpu
        } else {
            usize::from(irq.target)
        };
        if irq.enabled && dist_on {
            self.queue(t, intid, true);
            be.notify(t);
        }
    }

    /// Puts `intid` in its target's queued set when it is deliverable and
    /// takes it out when it is not: after its enable, its target or the
    /// distributor's enable changed.
    fn requeue(&mut self, vcpu: usize, intid: u32) {
        let t = self.target_of(vcpu, intid);
        let on = self.deliverable(t, intid);
        self.queue(t, intid, on);
    }

    fn queue(&mut self, vcpu: usize, intid: u32, on: bool) {
        let (Some(q), Some(sum)) = (self.queued.get_mut(vcpu), self.summary.get_mut(vcpu)) else {
            return;
        };
        let (w, b) = ((intid / 64) as usize, intid % 64);
        if on {
            q[w] |= 1 << b;
        } else {
            q[w] &= !(1 << b);
        }
        if q[w] == 0 {
            *sum &= !(1 << w);
        } else {
            *sum |= 1 << w;
        }
    }

    /// The list-register entry for a hardware interrupt of `vcpu` that just
    /// arrived, if it can go straight in (owned, enabled, distributor on):
    /// the fast path that skips the pending set.
    pub fn direct_entry(&self, vcpu: usize, intid: u32) -> Option<LrEntry> {
        let i = self.irq(vcpu, intid)?;
        (i.hw && i.enabled && (intid < SPI_BASE || self.enabled())).then(|| i.entry(intid, 0))
    }

    /// The list-register entry for SGI `intid` that `vcpu` sends itself, if
    /// it can go straight in: enabled, and nothing else waiting for `vcpu`
    /// that it could overtake. The caller still checks the list registers
    /// for an earlier copy of it.
    pub fn direct_sgi(&mut self, vcpu: usize, intid: u32) -> Option<LrEntry> {
        self.direct_sgi_from(vcpu, vcpu, intid)
    }

    /// The same for SGI `intid` from `from` to `to`, which may be another
    /// vCPU: the entry that vCPU's CPU can load without the pending set.
    pub fn direct_sgi_from(&mut self, from: usize, to: usize, intid: u32) -> Option<LrEntry> {
        if intid >= 16 || from >= self.vcpus || *self.summary.get(to)? != 0 {
            return None;
        }
        let i = self.irq(to, intid)?;
        let e = i.enabled.then(|| i.sgi_entry(intid, from))?;
        self.sgi_source[to][intid as usize] = from as u8;
        Some(e)
    }

    /// Emulated SPI `intid` raised: its target vCPU and list-register
    /// entry, if it may go straight into a list register there (the
    /// distributor and the SPI enabled, the SPI not already pending,
    /// nothing else waiting for that vCPU), as `next_for_lr` would give
    /// it; `None` to raise it through the pending set.
    pub fn direct_spi(&self, intid: u32) -> Option<(usize, LrEntry)> {
        if intid < SPI_BASE || !self.enabled() {
            return None;
        }
        let i = self.irq(0, intid)?;
        let t = usize::from(i.target);
        if i.hw || !i.enabled || i.pending || *self.summary.get(t)? != 0 {
            return None;
        }
        Some((t, i.entry(intid, 0)))
    }

    /// The list-register entry of SGI `intid` that `vcpu` sends itself,
    /// while it is enabled, whatever else waits: what the vectors load
    /// themselves when they see nothing else wait (no entry in a list
    /// register, no underflow interrupt asked for). The source of a GICv2
    /// SGI is `vcpu` itself, in the entry; what `direct_sgi_from` records
    /// for later queued copies is left as it was.
    pub fn self_sgi_entry(&self, vcpu: usize, intid: u32) -> Option<LrEntry> {
        if intid >= 16 {
            return None;
        }
        let i = self.irq(vcpu, intid)?;
        i.enabled.then(|| i.sgi_entry(intid, vcpu))
    }

    /// Whether `intid` of `vcpu` is backed by a physical interrupt, which
    /// the hypervisor deactivates itself when a GICv2 guest EOIs it.
    pub fn hw_backed(&self, vcpu: usize, intid: u32) -> bool {
        self.irq(vcpu, intid).is_some_and(|i| i.hw)
    }

    /// A level-sensitive emulated line went low before it was taken.
    pub fn lower(&mut self, vcpu: usize, intid: u32) {
        if let Some(irq) = self.irq_mut(vcpu, intid) {
            irq.pending = false;
            let t = self.target_of(vcpu, intid);
            self.queue(t, intid, false);
        }
    }

    /// An SGI from `from` to every vCPU in `targets` (a bitmap).
    pub fn send_sgi(&mut self, from: usize, targets: u32, intid: u32, be: &mut impl Backend) {
        if intid >= 16 {
            return;
        }
        for t in (0..self.vcpus).filter(|t| targets & (1 << t) != 0) {
            self.sgi_source[t][intid as usize] = from as u8;
            self.raise(t, intid, be);
        }
    }

    fn deliverable(&self, vcpu: usize, intid: u32) -> bool {
        self.irq(vcpu, intid)
            .is_some_and(|i| i.pending && i.enabled)
            && (self.enabled() || intid < SPI_BASE)
    }

    /// The highest-priority interrupt ready for `vcpu`, taken off the
    /// pending set to go into a list register.
    pub fn next_for_lr(&mut self, vcpu: usize) -> Option<LrEntry> {
        let words = *self.summary.get(vcpu)?;
        let queued = self.queued.get(vcpu)?;
        let first = words.trailing_zeros() as usize;
        let bits = *queued.get(first)?;
        // Only one interrupt queued (an SGI, a device's: the common case):
        // nothing to compare its priority with.
        let intid = if words.is_power_of_two() && bits.is_power_of_two() {
            (first * 64) as u32 + bits.trailing_zeros()
        } else {
            self.highest_queued(vcpu)?
        };
        let i = self.irq(vcpu, intid)?;
        // Queued means deliverable; the test only guards that invariant.
        if !i.enabled || !(intid < SPI_BASE || self.enabled()) {
            self.queue(vcpu, intid, false);
            return None;
        }
        let source = match intid {
            0..=15 => self.sgi_source[vcpu][intid as usize],
            _ => 0,
        };
        let e = i.entry(intid, usize::from(source));
        self.queue(vcpu, intid, false);
        if let Some(i) = self.irq_mut(vcpu, intid) {
            i.pending = false;
        }
        Some(e)
    }

    /// Of the interrupts queued for `vcpu`, the one of highest priority
    /// (the lowest value; the lowest INTID among equals).
    fn highest_queued(&self, vcpu: usize) -> Option<u32> {
        let dist_on = self.enabled();
        let mut best: Option<(u32, u8)> = None;
        let mut words = *self.summary.get(vcpu)?;
        let queued = self.queued.get(vcpu)?;
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            let mut bits = queued[w];
            while bits != 0 {
                let intid = (w * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                let Some(i) = self.irq(vcpu, intid) else {
                    continue;
                };
                if i.enabled
                    && (dist_on || intid < SPI_BASE)
                    && best.is_none_or(|(_, p)| i.priority < p)
                {
                    best = Some((intid, i.priority));
                }
            }
        }
        best.map(|(intid, _)| intid)
    }

    /// Whether `vcpu` still has interrupts waiting for a list register:
    /// one test, as only deliverable interrupts are queued.
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.summary.get(vcpu).is_some_and(|&s| s != 0)
    }

    /// Distributor access by `vcpu` at `off` (GICD, 64 KiB).
    pub fn dist_access(
        &mut self,
        vcpu: usize,
        off: u64,
        width: u8,
        write: Option<u64>,
        be: &mut impl Backend,
    ) -> Result<u64, Unhandled> {
        let v3 = self.version == Version::V3;
        match off {
            0x000 => match write {
                Some(v) => {
                    let was = self.enabled();
                    // GICv3: EnableGrp1A (bit 1) and ARE_NS (bit 4, fixed on).
                    self.ctlr = if v3 {
                        (v as u32 & 0b10) | 0x10
                    } else {
                        v as u32 & 1
                    };
                    if was != self.enabled() {
                        for intid in SPI_BASE..self.lines {
                            if self.irq(vcpu, intid).is_some_and(|i| i.pending) {
                                self.requeue(vcpu, intid);
                            }
                        }
                    }
                    if !was && self.enabled() {
                        for t in 0..self.vcpus {
                            if self.has_pending(t) {
                                be.notify(t);
                            }
                        }
                    }
                    Ok(0)
                }
                None => Ok(u64::from(if v3 { self.ctlr | 0x10 } else { self.ctlr })),
            },
            0x004 => {
                let it_lines = u64::from(self.lines / 32 - 1);
                Ok(if v3 {
                    it_lines | (9 << 19)
                } else {
                    it_lines | ((self.vcpus as u64 - 1) << 5)
                })
            }
            0x008 => Ok(0x43b), // IIDR: implementer ARM
            0x080..=0x0ff => self.bits(vcpu, off - 0x080, write, v3, |i| &mut i.group1),
            0x100..=0x17f => self.enable_bits(vcpu, off - 0x100, write.map(|v| (v, true)), v3, be),
            0x180..=0x1ff => self.enable_bits(vcpu, off - 0x180, write.map(|v| (v, false)), v3, be),
            0x200..=0x27f => self.pend_bits(vcpu, off - 0x200, write.map(|v| (v, true)), v3, be),
            0x280..=0x2ff => self.pend_bits(vcpu, off - 0x280, write.map(|v| (v, false)), v3, be),
            // Active state lives in the list registers; the set reads as
            // zero and writes are ignored.
            0x300..=0x3ff => Ok(0),
            0x400..=0x7fb => self.bytes(vcpu, off - 0x400, width, write, v3, be, Field::Priority),
            0x800..=0xbfb if !v3 => {
                self.bytes(vcpu, off - 0x800, width, write, false, be, Field::Target)
            }
            0xc00..=0xcff => self.config(vcpu, off - 0xc00, write, v3),
            GICD_SGIR if !v3 => {
                if let Some(v) = write {
                    let (targets, intid) = sgir_targets(v, vcpu, self.vcpus);
                    self.send_sgi(vcpu, targets, intid, be);
                }
                Ok(0)
            }
            0xf10..=0xf2f if !v3 => Ok(0),
            0x6100..=0x7fd8 if v3 => self.router(vcpu, off - 0x6000, write, be),
            0xffe8 => Ok(if v3 { 0x3b } else { 0x2b }), // PIDR2: architecture revision
            0xffd0..=0xfffc => Ok(0),
            _ => Err(Unhandled),
        }
    }

    /// Redistributor access to the frame of `vcpu` at `off` (GICv3: RD_base
    /// then SGI_base, 128 KiB per vCPU).
    pub fn redist_access(
        &mut self,
        vcpu: usize,
        off: u64,
        width: u8,
        write: Option<u64>,
        be: &mut impl Backend,
    ) -> Result<u64, Unhandled> {
        if vcpu >= self.vcpus {
            return Err(Unhandled);
        }
        match off {
            0x0000 => Ok(0),     // CTLR: no LPIs
            0x0004 => Ok(0x43b), // IIDR
            0x0008 => {
                let last = if vcpu + 1 == self.vcpus { 1 << 4 } else { 0 };
                let typer = ((vcpu as u64) << 32) | ((vcpu as u64) << 8) | last;
                Ok(if width == 4 {
                    typer & 0xffff_ffff
                } else {
                    typer
                })
            }
            0x000c => Ok(vcpu as u64), // upper half of TYPER: affinity
            0x0014 => {
                if let Some(v) = write {
                    self.asleep[vcpu] = v & 0b10 != 0;
                }
                let s = u64::from(self.asleep[vcpu]);
                Ok((s << 1) | (s << 2))
            }
            0xffe8 => Ok(0x3b),
            0xffd0..=0xfffc => Ok(0),
            0x10080 => self.bits(vcpu, 0, write, false, |i| &mut i.group1),
            0x10100 => self.enable_bits(vcpu, 0, write.map(|v| (v, true)), false, be),
            0x10180 => self.enable_bits(vcpu, 0, write.map(|v| (v, false)), false, be),
            0x10200 => self.pend_bits(vcpu, 0, write.map(|v| (v, true)), false, be),
            0x10280 => self.pend_bits(vcpu, 0, write.map(|v| (v, false)), false, be),
            0x10300..=0x1037f => Ok(0),
            0x10400..=0x1041f => self.bytes(
                vcpu,
                off - 0x10400,
                width,
                write,
                false,
                be,
                Field::Priority,
            ),
            0x10c00..=0x10c07 => self.config(vcpu, off - 0x10c00, write, false),
            0x10d00 => Ok(0), // IGRPMODR0
            _ => Err(Unhandled),
        }
    }

    /// Registers with one bit per interrupt, starting at INTID `32 * (off / 4)`.
    /// With `spi_only` (GICv3 distributor) the banked first word is RAZ/WI.
    fn bits(
        &mut self,
        vcpu: usize,
        off: u64,
        write: Option<u64>,
        spi_only: bool,
        field: fn(&mut Irq) -> &mut bool,
    ) -> Result<u64, Unhandled> {
        let base = (off / 4) as u32 * 32;
        if spi_only && base < SPI_BASE {
            return Ok(0);
        }
        let mut r = 0u64;
        for bit in 0..32 {
            if let Some(irq) = self.irq_mut(vcpu, base + bit) {
                if let Some(v) = write {
                    *field(irq) = v & (1 << bit) != 0;
                }
                r |= u64::from(*field(irq)) << bit;
            }
        }
        Ok(r)
    }

    fn enable_bits(
        &mut self,
        vcpu: usize,
        off: u64,
        write: Option<(u64, bool)>,
        spi_only: bool,
        be: &mut impl Backend,
    ) -> Result<u64, Unhandled> {
        let base = (off / 4) as u32 * 32;
        if spi_only && base < SPI_BASE {
            return Ok(0);
        }
        let mut r = 0u64;
        for bit in 0..32 {
            let intid = base + bit;
            let target = self.target_of(vcpu, intid);
            let v2_sgi = self.version == Version::V2 && intid < 16;
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            if let Some((v, set)) = write {
                if v & (1 << bit) != 0 && !v2_sgi && irq.enabled != set {
                    irq.enabled = set;
                    if irq.hw {
                        be.hw_enable(intid, target, set);
                    }
                    self.requeue(vcpu, intid);
                    if set && self.deliverable(target, intid) {
                        be.notify(target);
                    }
                }
            }
            r |= u64::from(self.irq(vcpu, intid).is_some_and(|i| i.enabled)) << bit;
        }
        Ok(r)
    }

    fn pend_bits(
        &mut self,
        vcpu: usize,
        off: u64,
        write: Option<(u64, bool)>,
        spi_only: bool,
        be: &mut impl Backend,
    ) -> Result<u64, Unhandled> {
        let base = (off / 4) as u32 * 32;
        if spi_only && base < SPI_BASE {
            return Ok(0);
        }
        let mut r = 0u64;
        for bit in 0..32 {
            let intid = base + bit;
            let Some(irq) = self.irq(vcpu, intid) else {
                continue;
            };
            // Pending state of passed-through interrupts is the hardware's.
            let hw = irq.hw;
            let target = self.target_of(vcpu, intid);
            if let Some((_, set)) = write.filter(|(v, _)| v & (1 << bit) != 0) {
                match (hw, set) {
                    (true, _) => be.hw_set_pending(intid, target, set),
                    (false, true) => self.raise(vcpu, intid, be),
                    (false, false) => self.lower(vcpu, intid),
                }
            }
            let pending = self.irq(vcpu, intid).is_some_and(|i| i.pending)
                || (hw && be.hw_pending(intid, target));
            r |= u64::from(pending) << bit;
        }
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn bytes(
        &mut self,
        vcpu: usize,
        off: u64,
        width: u8,
        write: Option<u64>,
        spi_only: bool,
        be: &mut impl Backend,
        f: Field,
    ) -> Result<u64, Unhandled> {
        let mut r = 0u64;
        for b in 0..u64::from(width.min(8)) {
            let intid = (off + b) as u32;
            if spi_only && intid < SPI_BASE {
                continue;
            }
            let Some(irq) = self.irq(vcpu, intid).copied() else {
                continue;
            };
            let cur = match f {
                Field::Priority => irq.priority,
                Field::Target if intid < SPI_BASE => 1 << vcpu,
                Field::Target => 1 << irq.target,
            };
            let mut now = cur;
            if let Some(v) = write {
                let byte = (v >> (8 * b)) as u8;
                match f {
                    Field::Priority => now = byte,
                    // A GICv2 target mask: its lowest vCPU that exists.
                    Field::Target if intid >= SPI_BASE && byte != 0 => {
                        let t = byte.trailing_zeros() as usize;
                        if t < self.vcpus {
                            now = 1 << t;
                            self.retarget(vcpu, intid, t, be);
                        }
                    }
                    Field::Target => {}
                }
                if let (Field::Priority, Some(i)) = (f, self.irq_mut(vcpu, intid)) {
                    i.priority = now;
                }
            }
            r |= u64::from(now) << (8 * b);
        }
        Ok(r)
    }

    fn retarget(&mut self, vcpu: usize, intid: u32, t: usize, be: &mut impl Backend) {
        let Some(irq) = self.irq_mut(vcpu, intid) else {
            return;
        };
        if usize::from(irq.target) == t {
            return;
        }
        let old = usize::from(irq.target);
        irq.target = t as u8;
        if irq.hw {
            be.hw_route(intid, t);
        }
        self.queue(old, intid, false);
        self.requeue(vcpu, intid);
        if self.deliverable(t, intid) {
            be.notify(t);
        }
    }

    fn config(
        &mut self,
        vcpu: usize,
        off: u64,
        write: Option<u64>,
        spi_only: bool,
    ) -> Result<u64, Unhandled> {
        let base = (off / 4) as u32 * 16;
        if spi_only && base < SPI_BASE {
            // SGIs are edge-triggered, PPIs as configured by the hardware.
            return Ok(if base == 0 { 0xaaaa_aaaa } else { 0 });
        }
        let mut r = 0u64;
        for i in 0..16 {
            let intid = base + i;
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            if let Some(v) = write.filter(|_| intid >= 16) {
                irq.edge = v & (2 << (2 * i)) != 0;
            }
            r |= u64::from(irq.edge) << (2 * i + 1);
        }
        Ok(r)
    }

    /// GICD_IROUTER<n>: Aff0 is the vCPU.
    fn router(
        &mut self,
        vcpu: usize,
        off: u64,
        write: Option<u64>,
        be: &mut impl Backend,
    ) -> Result<u64, Unhandled> {
        let intid = (off / 8) as u32;
        let Some(irq) = self.irq(vcpu, intid) else {
            return Ok(0);
        };
        let cur = irq.target;
        if let Some(v) = write.filter(|_| off.is_multiple_of(8)) {
            let t = (v & 0xff) as usize;
            if v & (1 << 31) == 0 && t < self.vcpus {
                self.retarget(vcpu, intid, t, be);
            }
        }
        Ok(u64::from(self.irq(vcpu, intid).map_or(cur, |i| i.target)))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Priority,
    Target,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[derive(Default)]
    struct Rec {
        enables: Vec<(u32, usize, bool)>,
        routes: Vec<(u32, usize)>,
        notified: Vec<usize>,
        /// Physical interrupts pending, (INTID, vCPU).
        hw_lines: Vec<(u32, usize)>,
    }

    impl Backend for Rec {
        fn hw_enable(&mut self, intid: u32, vcpu: usize, on: bool) {
            self.enables.push((intid, vcpu, on));
        }
        fn hw_route(&mut self, intid: u32, vcpu: usize) {
            self.routes.push((intid, vcpu));
        }
        fn notify(&mut self, vcpu: usize) {
            self.notified.push(vcpu);
        }
        fn hw_pending(&mut self, intid: u32, vcpu: usize) -> bool {
            self.hw_lines.contains(&(intid, vcpu))
        }
        fn hw_set_pending(&mut self, intid: u32, vcpu: usize, on: bool) {
            self.hw_lines.retain(|&l| l != (intid, vcpu));
            if on {
                self.hw_lines.push((intid, vcpu));
            }
        }
    }

    fn v3() -> (Vgic, Rec) {
        let mut g = Vgic::new(Version::V3, 2, 288);
        g.own_spi(34, true);
        g.own_spi(33, false);
        g.own_hw_ppi(27);
        (g, Rec::default())
    }

    #[test]
    fn a_partition_cannot_touch_interrupts_it_does_not_own() {
        let (mut g, mut be) = v3();
        // SPI 39 (word 1, bit 7) belongs to someone else.
        assert_eq!(g.dist_access(0, 0x104, 4, Some(1 << 7), &mut be), Ok(0));
        assert_eq!(g.dist_access(0, 0x104, 4, None, &mut be), Ok(0));
        assert_eq!(g.dist_access(0, 0x400 + 39, 1, Some(0x10), &mut be), Ok(0));
        assert_eq!(
            g.dist_access(0, 0x6000 + 8 * 39, 8, Some(1), &mut be),
            Ok(0)
        );
        assert!(be.enables.is_empty() && be.routes.is_empty());
        g.raise(0, 39, &mut be);
        assert_eq!(g.next_for_lr(0), None);
    }

    #[test]
    fn enabling_a_passed_through_spi_enables_the_physical_one() {
        let (mut g, mut be) = v3();
        g.dist_access(0, 0x104, 4, Some(1 << 2), &mut be).unwrap();
        assert_eq!(be.enables, [(34, 0, true)]);
        assert_eq!(g.dist_access(0, 0x104, 4, None, &mut be), Ok(1 << 2));
        g.dist_access(0, 0x184, 4, Some(1 << 2), &mut be).unwrap();
        assert_eq!(be.enables[1], (34, 0, false));
        g.dist_access(0, 0x6000 + 8 * 34, 8, Some(1), &mut be)
            .unwrap();
        assert_eq!(be.routes, [(34, 1)]);
        assert_eq!(g.dist_access(0, 0x6000 + 8 * 34, 8, None, &mut be), Ok(1));
    }

    #[test]
    fn pending_interrupts_wait_for_enable_and_distributor() {
        let (mut g, mut be) = v3();
        g.raise(0, 33, &mut be);
        assert!(be.notified.is_empty());
        g.dist_access(0, 0x104, 4, Some(1 << 1), &mut be).unwrap();
        assert_eq!(g.next_for_lr(0), None, "distributor still disabled");
        g.dist_access(0, 0x000, 4, Some(0b10), &mut be).unwrap();
        assert_eq!(be.notified, [0]);
        let e = g.next_for_lr(0).unwrap();
        assert_eq!((e.intid, e.hw, e.eoi_maintenance), (33, false, true));
        assert_eq!(g.next_for_lr(0), None);
        assert!(!g.has_pending(0));
    }

    #[test]
    fn highest_priority_first_and_sgis_reach_their_targets() {
        let (mut g, mut be) = v3();
        g.redist_access(1, 0x10100, 4, Some(0b11 | (1 << 27)), &mut be)
            .unwrap();
        assert_eq!(be.enables, [(27, 1, true)]);
        g.redist_access(1, 0x10400, 1, Some(0x80), &mut be).unwrap();
        g.redist_access(1, 0x10401, 1, Some(0x40), &mut be).unwrap();
        g.send_sgi(0, 0b10, 0, &mut be);
        g.send_sgi(0, 0b10, 1, &mut be);
        g.send_sgi(0, 0b01, 1, &mut be); // vCPU 0 has SGI 1 disabled
        assert_eq!(be.notified, [1, 1]);
        assert_eq!(g.next_for_lr(1).map(|e| e.intid), Some(1));
        assert_eq!(g.next_for_lr(1).map(|e| e.intid), Some(0));
        assert_eq!(g.next_for_lr(0), None);
        g.raise(1, 27, &mut be);
        let e = g.next_for_lr(1).unwrap();
        assert!(e.hw && !e.eoi_maintenance && e.intid == 27);
    }

    #[test]
    fn direct_entries_only_for_enabled_hardware_interrupts() {
        let (mut g, mut be) = v3();
        assert_eq!(g.direct_entry(0, 27), None, "not enabled yet");
        g.redist_access(0, 0x10100, 4, Some(1 << 27), &mut be)
            .unwrap();
        let e = g.direct_entry(0, 27).unwrap();
        assert!(e.hw && e.group1 && e.intid == 27 && !g.has_pending(0));
        assert_eq!(g.direct_entry(0, 33), None, "emulated, not hardware");
        assert_eq!(g.direct_entry(0, 40), None, "not owned");
    }

    #[test]
    fn direct_sgis_only_when_enabled_and_nothing_waits() {
        let (mut g, mut be) = v3();
        assert_eq!(g.direct_sgi(0, 3), None, "not enabled yet");
        g.redist_access(0, 0x10100, 4, Some(0b1001), &mut be)
            .unwrap();
        let e = g.direct_sgi(0, 3).unwrap();
        assert!(e.intid == 3 && e.group1 && !e.hw && !g.has_pending(0));
        assert_eq!(g.direct_sgi(0, 16), None, "a PPI is no SGI");
        g.send_sgi(0, 1, 0, &mut be);
        assert_eq!(g.direct_sgi(0, 3), None, "SGI 0 waits: no overtaking");
        assert_eq!(g.next_for_lr(0).map(|e| e.intid), Some(0));
        assert!(g.direct_sgi(0, 3).is_some());
    }

    #[test]
    fn direct_sgis_to_another_vcpu_carry_their_source() {
        let (mut g, mut be) = v3();
        g.redist_access(1, 0x10100, 4, Some(0b1000), &mut be)
            .unwrap();
        assert_eq!(g.direct_sgi_from(0, 1, 2), None, "SGI 2 is disabled");
        let e = g.direct_sgi_from(0, 1, 3).unwrap();
        assert!(e.intid == 3 && e.source == 0 && !g.has_pending(1));
        assert_eq!(g.direct_sgi_from(0, 9, 3), None, "no vCPU 9");
        assert_eq!(g.direct_sgi_from(9, 1, 3), None, "no vCPU 9");
    }

    #[test]
    fn direct_spis_only_when_deliverable_and_nothing_waits_for_their_target() {
        let (mut g, mut be) = v3();
        assert_eq!(g.direct_spi(33), None, "not enabled yet");
        g.dist_access(0, 0x104, 4, Some(1 << 1), &mut be).unwrap();
        assert_eq!(g.direct_spi(33), None, "distributor disabled");
        g.dist_access(0, 0x000, 4, Some(0b10), &mut be).unwrap();
        // Routed to vCPU 1: the entry goes there, level-sensitive (EOI
        // maintenance) until configured edge.
        g.dist_access(0, 0x6000 + 8 * 33, 8, Some(1), &mut be)
            .unwrap();
        let (t, e) = g.direct_spi(33).unwrap();
        assert!(t == 1 && e.intid == 33 && !e.hw && e.eoi_maintenance && !g.has_pending(1));
        g.dist_access(0, 0xc08, 4, Some(0b10 << 2), &mut be)
            .unwrap();
        assert!(!g.direct_spi(33).unwrap().1.eoi_maintenance, "edge");
        assert_eq!(g.direct_spi(34), None, "passed through");
        assert_eq!(g.direct_spi(40), None, "not owned");
        assert_eq!(g.direct_spi(27), None, "a PPI is no SPI");
        // Another interrupt waiting for vCPU 1: no overtaking.
        g.redist_access(1, 0x10100, 4, Some(1), &mut be).unwrap();
        g.send_sgi(0, 0b10, 0, &mut be);
        assert_eq!(g.direct_spi(33), None);
        assert_eq!(g.next_for_lr(1).map(|e| e.intid), Some(0));
        // Already pending: through the pending set.
        g.raise(0, 33, &mut be);
        assert_eq!(g.direct_spi(33), None);
    }

    #[test]
    fn hardware_backed_pending_state_is_the_hardware_s() {
        let (mut g, mut be) = v3();
        // A disabled timer whose line is high reads pending, as natively.
        be.hw_lines.push((27, 1));
        assert_eq!(g.redist_access(1, 0x10200, 4, None, &mut be), Ok(1 << 27));
        assert_eq!(g.redist_access(0, 0x10200, 4, None, &mut be), Ok(0));
        // Set- and clear-pending of a passed-through SPI reach the physical
        // one (routed to vCPU 0) and nothing is queued in the vGIC.
        g.dist_access(1, 0x204, 4, Some(1 << 2), &mut be).unwrap();
        assert!(be.hw_lines.contains(&(34, 0)) && !g.has_pending(0));
        assert_eq!(g.dist_access(0, 0x204, 4, None, &mut be), Ok(1 << 2));
        g.dist_access(0, 0x284, 4, Some(1 << 2), &mut be).unwrap();
        assert_eq!(g.dist_access(0, 0x204, 4, None, &mut be), Ok(0));
        // An emulated SPI stays the vGIC's.
        g.dist_access(0, 0x204, 4, Some(1 << 1), &mut be).unwrap();
        assert_eq!(g.dist_access(0, 0x204, 4, None, &mut be), Ok(1 << 1));
        assert!(!be.hw_lines.contains(&(33, 0)));
    }

    #[test]
    fn only_deliverable_interrupts_are_queued() {
        let (mut g, mut be) = v3();
        g.redist_access(0, 0x10100, 4, Some(1 << 3), &mut be)
            .unwrap();
        g.dist_access(0, 0x000, 4, Some(0b10), &mut be).unwrap();
        // Pending but disabled: nothing waits, and a self-SGI goes direct.
        g.raise(0, 33, &mut be);
        assert!(!g.has_pending(0) && g.direct_sgi(0, 3).is_some());
        // Enabled, it waits; disabled again, it no longer does.
        g.dist_access(0, 0x104, 4, Some(1 << 1), &mut be).unwrap();
        assert!(g.has_pending(0) && g.direct_sgi(0, 3).is_none());
        g.dist_access(0, 0x184, 4, Some(1 << 1), &mut be).unwrap();
        assert!(!g.has_pending(0));
        // The distributor's enable does the same for every SPI.
        g.dist_access(0, 0x104, 4, Some(1 << 1), &mut be).unwrap();
        g.dist_access(0, 0x000, 4, Some(0), &mut be).unwrap();
        assert!(!g.has_pending(0));
        g.dist_access(0, 0x000, 4, Some(0b10), &mut be).unwrap();
        assert_eq!(g.next_for_lr(0).map(|e| e.intid), Some(33));
        // A retargeted SPI waits for its new vCPU only.
        g.raise(0, 33, &mut be);
        g.dist_access(0, 0x6000 + 8 * 33, 8, Some(1), &mut be)
            .unwrap();
        assert!(!g.has_pending(0) && g.has_pending(1));
    }

    #[test]
    fn redistributors_describe_one_frame_per_vcpu() {
        let (mut g, mut be) = v3();
        assert_eq!(g.redist_access(0, 0x8, 8, None, &mut be), Ok(0));
        assert_eq!(
            g.redist_access(1, 0x8, 8, None, &mut be),
            Ok((1 << 32) | (1 << 8) | (1 << 4))
        );
        assert_eq!(g.redist_access(2, 0x8, 8, None, &mut be), Err(Unhandled));
        assert_eq!(g.redist_access(0, 0x14, 4, None, &mut be), Ok(0b110));
        g.redist_access(0, 0x14, 4, Some(0), &mut be).unwrap();
        assert_eq!(g.redist_access(0, 0x14, 4, None, &mut be), Ok(0));
        assert_eq!(g.dist_access(0, 0x1234, 4, None, &mut be), Err(Unhandled));
    }

    #[test]
    fn gicd_sgir_names_its_targets() {
        assert_eq!(sgir_targets(0x0003_0005, 0, 2), (0b11, 5), "a list");
        assert_eq!(sgir_targets((1 << 24) | 2, 0, 3), (0b110, 2), "all others");
        assert_eq!(sgir_targets((2 << 24) | 0x17, 1, 2), (0b10, 7), "itself");
        assert_eq!(sgir_targets(3 << 24, 0, 2).0, 0, "reserved filter");
    }

    #[test]
    fn gicv2_targets_sgir_and_typer() {
        let mut g = Vgic::new(Version::V2, 2, 96);
        g.own_spi(40, true);
        let mut be = Rec::default();
        assert_eq!(g.dist_access(0, 0x004, 4, None, &mut be), Ok(2 | (1 << 5)));
        assert_eq!(g.dist_access(1, 0x800, 4, None, &mut be), Ok(0x0202_0202));
        g.dist_access(0, 0x828, 1, Some(0b10), &mut be).unwrap();
        assert_eq!(be.routes, [(40, 1)]);
        assert_eq!(g.dist_access(0, 0x828, 1, None, &mut be), Ok(0b10));
        // SGIR: SGI 3 to "all but self".
        g.dist_access(0, 0x000, 4, Some(1), &mut be).unwrap();
        g.dist_access(0, 0xf00, 4, Some((1 << 24) | 3), &mut be)
            .unwrap();
        let e = g.next_for_lr(1).unwrap();
        assert_eq!((e.intid, e.source, e.group1), (3, 0, false));
    }
}

/// List-register encodings (GICv3 ICH_LR<n>_EL2, GICv2 GICH_LR<n>).
pub mod lr {
    use super::LrEntry;

    pub const PENDING: u64 = 0b01;
    pub const ACTIVE: u64 = 0b10;

    pub fn encode_v3(e: &LrEntry) -> u64 {
        let mut v = (PENDING << 62) | (u64::from(e.priority) << 48) | u64::from(e.intid);
        if e.group1 {
            v |= 1 << 60;
        }
        if e.hw {
            v |= (1 << 61) | (u64::from(e.intid) << 32);
        } else if e.eoi_maintenance {
            v |= 1 << 41;
        }
        v
    }

    pub fn state_v3(v: u64) -> u64 {
        v >> 62
    }

    pub fn with_state_v3(v: u64, s: u64) -> u64 {
        (v & !(3 << 62)) | (s << 62)
    }

    pub fn intid_v3(v: u64) -> u32 {
        v as u32
    }

    /// A GICv2 entry never carries the hardware bit: QEMU's GICv2, when a
    /// guest deactivates a HW entry, clears the physical interrupt's active
    /// state without signalling it again if its line rose meanwhile (a
    /// timer re-armed before the EOI whose deadline passed before it), so
    /// the interrupt would stay pending at EL2, unseen. A hardware-backed
    /// interrupt is a software entry asking for the EOI maintenance
    /// interrupt instead, at which the hypervisor deactivates the physical
    /// one through GICC_DIR, a CPU-interface write after which every GIC
    /// signals what is pending.
    pub fn encode_v2(e: &LrEntry) -> u64 {
        let mut v =
            (PENDING << 28) | (u64::from(e.priority >> 3) << 23) | u64::from(e.intid & 0x3ff);
        if e.group1 {
            v |= 1 << 30;
        }
        if e.eoi_maintenance || e.hw {
            v |= 1 << 19;
        }
        if e.intid < 16 {
            v |= u64::from(e.source & 7) << 10;
        }
        v
    }

    pub fn state_v2(v: u64) -> u64 {
        (v >> 28) & 3
    }

    pub fn with_state_v2(v: u64, s: u64) -> u64 {
        (v & !(3 << 28)) | (s << 28)
    }

    pub fn intid_v2(v: u64) -> u32 {
        (v & 0x3ff) as u32
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn encodings_match_the_gic_architecture() {
            let timer = LrEntry {
                intid: 27,
                priority: 0xa0,
                hw: true,
                group1: true,
                eoi_maintenance: false,
                source: 0,
            };
            assert_eq!(
                encode_v3(&timer),
                (1 << 62) | (1 << 61) | (1 << 60) | (0xa0 << 48) | (27 << 32) | 27
            );
            let uart = LrEntry {
                intid: 33,
                priority: 0x80,
                hw: false,
                group1: false,
                eoi_maintenance: true,
                source: 0,
            };
            assert_eq!(encode_v2(&uart), (1 << 28) | (0x10 << 23) | (1 << 19) | 33);
            let sgi = LrEntry {
                intid: 2,
                priority: 0,
                hw: false,
                group1: false,
                eoi_maintenance: false,
                source: 3,
            };
            assert_eq!(encode_v2(&sgi), (1 << 28) | (3 << 10) | 2);
            assert_eq!(state_v3(with_state_v3(encode_v3(&timer), 3)), 3);
            // GICv2: no hardware bit, an EOI maintenance interrupt instead.
            assert_eq!(
                encode_v2(&timer),
                (1 << 30) | (1 << 28) | (0x14 << 23) | (1 << 19) | 27
            );
            assert_eq!(intid_v2(with_state_v2(encode_v2(&uart), 2)), 33);
        }
    }
}
