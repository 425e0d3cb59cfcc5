//! Translation tables with a 4 KiB granule and a 39-bit input address,
//! starting at level 1: the EL2 stage-1 identity map and each partition's
//! stage-2 tables are built by the same code.
//!
//! Table memory is reached through [`TableMemory`], so the hypervisor backs
//! it with physical pages and the host tests with a vector.

use alloc::vec::Vec;
use core::ops::Range;

/// Bits of input address the tables translate (T0SZ = 64 - 39 = 25).
pub const INPUT_BITS: u32 = 39;
pub const PAGE_SIZE: u64 = 4096;
const ENTRIES: usize = 512;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Where translation tables live.
pub trait TableMemory {
    /// A zeroed, 4 KiB-aligned table, by physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, value: u64);
}

/// Which translation regime the descriptors are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// EL2's own stage 1; MAIR_EL2 index 0 is Normal WB, index 1 Device-nGnRE.
    El2,
    /// A partition's stage 2.
    Stage2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal memory, write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub mem: MemType,
    pub write: bool,
    pub exec: bool,
}

impl Attrs {
    pub const RAM: Attrs = Attrs {
        mem: MemType::Normal,
        write: true,
        exec: true,
    };
    pub const DEVICE: Attrs = Attrs {
        mem: MemType::Device,
        write: true,
        exec: false,
    };
    /// The hypervisor's code: executed, never written.
    pub const TEXT: Attrs = Attrs {
        mem: MemType::Normal,
        write: false,
        exec: true,
    };
    /// The hypervisor's constants and relocated pointers, written only by
    /// its relocation before the MMU is on.
    pub const READ_ONLY: Attrs = Attrs {
        mem: MemType::Normal,
        write: false,
        exec: false,
    };
    /// Everything else EL2 touches in RAM: data, stacks, heap, the boot
    /// package and the partitions' memory it copies into.
    pub const DATA: Attrs = Attrs {
        mem: MemType::Normal,
        write: true,
        exec: false,
    };
}

/// One range of an identity map and how it is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
    pub attrs: Attrs,
}

/// The hypervisor image as the linker laid it out (page-aligned bounds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    pub text: Range<u64>,
    /// Read-only after relocation: `.rodata`, `.data.rel.ro`, `.got`.
    pub read_only: Range<u64>,
}

/// `pieces` without `cut`.
fn subtract(pieces: Vec<Range<u64>>, cut: &Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::with_capacity(pieces.len() + 1);
    for p in pieces {
        if cut.end <= p.start || p.end <= cut.start {
            out.push(p);
            continue;
        }
        if p.start < cut.start {
            out.push(p.start..cut.start);
        }
        if cut.end < p.end {
            out.push(cut.end..p.end);
        }
    }
    out
}

/// RAM in the EL2 identity map, write-xor-execute: the image's text
/// read-only and executable, its read-only data read-only, the rest of
/// RAM writable and never executable; every page `reserved` touches
/// (firmware's) left out. A writable mapping of the text would let any
/// stray store rewrite the code every partition depends on, and an
/// executable heap would make one a place to run from.
pub fn el2_ram_map(
    ram: &[Range<u64>],
    reserved: &[Range<u64>],
    image: &ImageLayout,
) -> Vec<Region> {
    let page_out = |r: &Range<u64>| {
        r.start & !(PAGE_SIZE - 1)..r.end.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
    };
    let mut pieces: Vec<Range<u64>> = ram.iter().map(page_out).collect();
    for r in reserved {
        pieces = subtract(pieces, &page_out(r));
    }
    let mut out = Vec::new();
    for (part, attrs) in [
        (&image.text, Attrs::TEXT),
        (&image.read_only, Attrs::READ_ONLY),
    ] {
        for p in &pieces {
            let (start, end) = (p.start.max(part.start), p.end.min(part.end));
            if start < end {
                out.push(Region {
                    base: start,
                    size: end - start,
                    attrs,
                });
            }
        }
    }
    for p in subtract(subtract(pieces, &image.text), &image.read_only) {
        if p.start < p.end {
            out.push(Region {
                base: p.start,
                size: p.end - p.start,
                attrs: Attrs::DATA,
            });
        }
    }
    out.sort_by_key(|r| r.base);
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size are not page-aligned.
    Misaligned,
    /// The range leaves the 39-bit input address space or wraps.
    OutOfRange,
    /// Part of the range is mapped already.
    Overlap { addr: u64 },
    /// No memory left for tables.
    NoMemory,
}

const VALID: u64 = 1;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;

fn leaf_bits(regime: Regime, a: Attrs) -> u64 {
    let sh = if a.mem == MemType::Normal {
        SH_INNER
    } else {
        0
    };
    match regime {
        Regime::El2 => {
            let attr_index = if a.mem == MemType::Normal { 0 } else { 1 };
            let ap_ro = if a.write { 0 } else { 1 << 7 };
            let xn = if a.exec { 0 } else { 1 << 54 };
            (attr_index << 2) | ap_ro | sh | AF | xn
        }
        Regime::Stage2 => {
            // MemAttr: 0b1111 Normal outer/inner WB; 0b0001 Device-nGnRE.
            let mem_attr = if a.mem == MemType::Normal {
                0b1111
            } else {
                0b0001
            };
            let s2ap = if a.write { 0b11 } else { 0b01 };
            let xn = if a.exec { 0 } else { 0b10 << 53 };
            (mem_attr << 2) | (s2ap << 6) | sh | AF | xn
        }
    }
}

fn attrs_of(regime: Regime, d: u64) -> Attrs {
    match regime {
        Regime::El2 => Attrs {
            mem: if (d >> 2) & 7 == 0 {
                MemType::Normal
            } else {
                MemType::Device
            },
            write: d & (1 << 7) == 0,
            exec: d & (1 << 54) == 0,
        },
        Regime::Stage2 => Attrs {
            mem: if (d >> 2) & 0xf == 0b1111 {
                MemType::Normal
            } else {
                MemType::Device
            },
            write: (d >> 7) & 1 == 1,
            exec: (d >> 53) & 3 == 0,
        },
    }
}

/// Size covered by one entry at `level` (1, 2 or 3).
const fn entry_size(level: u32) -> u64 {
    1 << (12 + 9 * (3 - level))
}

fn index(addr: u64, level: u32) -> usize {
    ((addr >> (12 + 9 * (3 - level))) & (ENTRIES as u64 - 1)) as usize
}

/// One set of tables, identified by its level-1 table.
#[derive(Clone, Copy, Debug)]
pub struct PageTable {
    root: u64,
    regime: Regime,
}

impl PageTable {
    pub fn new(mem: &mut impl TableMemory, regime: Regime) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::NoMemory)?;
        Ok(PageTable { root, regime })
    }

    /// Physical address of the level-1 table, for TTBR0_EL2 or VTTBR_EL2.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)` with the largest blocks
    /// the alignment allows.
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        va: u64,
        pa: u64,
        size: u64,
        attrs: Attrs,
    ) -> Result<(), MapError> {
        if (va | pa | size) & (PAGE_SIZE - 1) != 0 {
            return Err(MapError::Misaligned);
        }
        let end = va.checked_add(size).ok_or(MapError::OutOfRange)?;
        if end > 1 << INPUT_BITS || pa.checked_add(size).is_none_or(|e| e > 1 << 48) {
            return Err(MapError::OutOfRange);
        }
        let leaf = leaf_bits(self.regime, attrs);
        let (mut va, mut pa) = (va, pa);
        while va < end {
            // Level 1 blocks only at EL2, whose map is built once: in a
            // stage 2, a 1 GiB block would make later holes (emulated
            // devices) impossible to punch in RAM-sized maps. At EL2 they
            // save filling (and, for the write-xor-execute check, reading)
            // 512 entries for each whole GiB of RAM.
            let fits = |level| (va | pa) % entry_size(level) == 0 && end - va >= entry_size(level);
            let level = match self.regime {
                Regime::El2 if fits(1) => 1,
                _ if fits(2) => 2,
                _ => 3,
            };
            let table = self.walk_create(mem, va, level)?;
            let i = index(va, level);
            if mem.read(table, i) & VALID != 0 {
                return Err(MapError::Overlap { addr: va });
            }
            let kind = if level == 3 {
                VALID | TABLE_OR_PAGE
            } else {
                VALID
            };
            mem.write(table, i, (pa & ADDR_MASK) | leaf | kind);
            va += entry_size(level);
            pa += entry_size(level);
        }
        Ok(())
    }

    /// The table at `level` that holds `va`'s entry, creating the tables above it.
    fn walk_create(
        &self,
        mem: &mut impl TableMemory,
        va: u64,
        level: u32,
    ) -> Result<u64, MapError> {
        let mut table = self.root;
        for l in 1..level {
            let i = index(va, l);
            let d = mem.read(table, i);
            table = if d & VALID == 0 {
                let t = mem.alloc_table().ok_or(MapError::NoMemory)?;
                mem.write(table, i, t | VALID | TABLE_OR_PAGE);
                t
            } else if d & TABLE_OR_PAGE == 0 {
                return Err(MapError::Overlap { addr: va });
            } else {
                d & ADDR_MASK
            };
        }
        Ok(table)
    }

    /// Every valid leaf, in address order: (input address, size, attributes).
    pub fn leaves(&self, mem: &impl TableMemory) -> Vec<(u64, u64, Attrs)> {
        let mut out = Vec::new();
        self.collect(mem, self.root, 1, 0, &mut out);
        out
    }

    fn collect(
        &self,
        mem: &impl TableMemory,
        table: u64,
        level: u32,
        base: u64,
        out: &mut Vec<(u64, u64, Attrs)>,
    ) {
        for i in 0..ENTRIES {
            let d = mem.read(table, i);
            if d & VALID == 0 {
                continue;
            }
            let va = base + i as u64 * entry_size(level);
            if level == 3 || d & TABLE_OR_PAGE == 0 {
                out.push((va, entry_size(level), attrs_of(self.regime, d)));
            } else {
                self.collect(mem, d & ADDR_MASK, level + 1, va, out);
            }
        }
    }

    /// The first leaf that is both writable and executable, if any. Run
    /// at every boot over all of RAM, so it walks without allocating.
    pub fn writable_and_executable(&self, mem: &impl TableMemory) -> Option<u64> {
        self.find_leaf(mem, self.root, 1, 0, &|a| a.write && a.exec)
    }

    fn find_leaf(
        &self,
        mem: &impl TableMemory,
        table: u64,
        level: u32,
        base: u64,
        bad: &impl Fn(Attrs) -> bool,
    ) -> Option<u64> {
        (0..ENTRIES).find_map(|i| {
            let d = mem.read(table, i);
            let va = base + i as u64 * entry_size(level);
            if d & VALID == 0 {
                None
            } else if level == 3 || d & TABLE_OR_PAGE == 0 {
                bad(attrs_of(self.regime, d)).then_some(va)
            } else {
                self.find_leaf(mem, d & ADDR_MASK, level + 1, va, bad)
            }
        })
    }

    /// Looks `va` up the way the MMU would: its output address and attributes.
    pub fn translate(&self, mem: &impl TableMemory, va: u64) -> Option<(u64, Attrs)> {
        if va >= 1 << INPUT_BITS {
            return None;
        }
        let mut table = self.root;
        for level in 1..=3 {
            let d = mem.read(table, index(va, level));
            if d & VALID == 0 {
                return None;
            }
            if level == 3 || d & TABLE_OR_PAGE == 0 {
                let size = entry_size(level);
                let pa = (d & ADDR_MASK & !(size - 1)) | (va & (size - 1));
                return Some((pa, attrs_of(self.regime, d)));
            }
            table = d & ADDR_MASK;
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::vec::Vec;

    /// Tables in a vector; "physical" addresses start at 0x1000_0000.
    #[derive(Default)]
    pub struct VecTables {
        pub tables: Vec<[u64; ENTRIES]>,
        pub limit: Option<usize>,
    }

    const BASE: u64 = 0x1000_0000;

    impl TableMemory for VecTables {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|l| self.tables.len() >= l) {
                return None;
            }
            self.tables.push([0; ENTRIES]);
            Some(BASE + (self.tables.len() as u64 - 1) * PAGE_SIZE)
        }
        fn read(&self, t: u64, i: usize) -> u64 {
            self.tables[((t - BASE) / PAGE_SIZE) as usize][i]
        }
        fn write(&mut self, t: u64, i: usize, v: u64) {
            self.tables[((t - BASE) / PAGE_SIZE) as usize][i] = v;
        }
    }

    #[test]
    fn ram_uses_2m_blocks_and_translates() {
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2).unwrap();
        t.map(&mut m, 0x4000_0000, 0x8000_0000, 0x40_0000, Attrs::RAM)
            .unwrap();
        // root + one level-2 table, no level-3 tables.
        assert_eq!(m.tables.len(), 2);
        assert_eq!(
            t.translate(&m, 0x4012_3456),
            Some((0x8012_3456, Attrs::RAM))
        );
        assert_eq!(t.translate(&m, 0x4040_0000), None);
        assert_eq!(t.translate(&m, 0x3fff_ffff), None);
    }

    #[test]
    fn unaligned_ends_fall_back_to_pages() {
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::El2).unwrap();
        t.map(&mut m, 0x0900_0000, 0x0900_0000, 0x1000, Attrs::DEVICE)
            .unwrap();
        t.map(&mut m, 0x401f_f000, 0x401f_f000, 0x20_2000, Attrs::RAM)
            .unwrap();
        assert_eq!(
            t.translate(&m, 0x0900_0ffc),
            Some((0x0900_0ffc, Attrs::DEVICE))
        );
        assert_eq!(t.translate(&m, 0x0900_1000), None);
        assert_eq!(
            t.translate(&m, 0x4040_0fff),
            Some((0x4040_0fff, Attrs::RAM))
        );
        assert_eq!(t.translate(&m, 0x4040_1000), None);
    }

    #[test]
    fn descriptor_bits_match_the_arm_arm() {
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2).unwrap();
        t.map(&mut m, 0x1000, 0x1000, 0x1000, Attrs::DEVICE)
            .unwrap();
        let l2 = m.read(t.root(), 0) & ADDR_MASK;
        let l3 = m.read(l2, 0) & ADDR_MASK;
        let d = m.read(l3, 1);
        // page, MemAttr=0001, S2AP=RW, AF, XN=10
        assert_eq!(
            d,
            0x1000 | 0b11 | (0b0001 << 2) | (0b11 << 6) | (1 << 10) | (0b10 << 53)
        );
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::El2).unwrap();
        t.map(&mut m, 0x20_0000, 0x20_0000, 0x20_0000, Attrs::RAM)
            .unwrap();
        let l2 = m.read(t.root(), 0) & ADDR_MASK;
        // block, AttrIndx=0, AP=RW, SH=inner, AF
        assert_eq!(m.read(l2, 1), 0x20_0000 | 0b01 | (0b11 << 8) | (1 << 10));
    }

    /// A whole GiB is one level-1 block at EL2, and 2 MiB blocks in a
    /// stage 2 (where holes are punched later).
    #[test]
    fn only_el2_maps_a_gib_with_one_block() {
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::El2).unwrap();
        t.map(&mut m, 0x4000_0000, 0x4000_0000, 0x8000_0000, Attrs::DATA)
            .unwrap();
        let leaves = t.leaves(&m);
        assert_eq!(
            leaves,
            [
                (0x4000_0000, 0x4000_0000, Attrs::DATA),
                (0x8000_0000, 0x4000_0000, Attrs::DATA)
            ]
        );
        assert_eq!(
            t.translate(&m, 0xbfff_fff8).map(|(pa, _)| pa),
            Some(0xbfff_fff8)
        );
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2).unwrap();
        t.map(&mut m, 0x4000_0000, 0x4000_0000, 0x4000_0000, Attrs::RAM)
            .unwrap();
        assert!(t.leaves(&m).iter().all(|&(_, size, _)| size == 0x20_0000));
    }

    /// The EL2 map of a board like virt's: no entry both writable and
    /// executable, the text executable and read-only, the constants
    /// read-only, firmware's memory (rounded out to whole pages) absent.
    #[test]
    fn el2_map_is_write_xor_execute_and_skips_firmware() {
        let ram = [0x4000_0000..0x8000_0000, 0x8000_0000..0xc000_0000];
        let reserved = [0x6000_0800..0x6100_0000, 0xbfff_f000..0xc000_0000];
        let image = ImageLayout {
            text: 0x4020_0000..0x4024_3000,
            read_only: 0x4024_3000..0x4025_1000,
        };
        let plan = el2_ram_map(&ram, &reserved, &image);
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::El2).unwrap();
        for r in &plan {
            t.map(&mut m, r.base, r.base, r.size, r.attrs).unwrap();
        }
        t.map(&mut m, 0x0900_0000, 0x0900_0000, 0x1000, Attrs::DEVICE)
            .unwrap();
        assert_eq!(t.writable_and_executable(&m), None);
        let at = |va| t.translate(&m, va).map(|(_, a)| a);
        assert_eq!(at(0x4020_0000), Some(Attrs::TEXT));
        assert_eq!(at(0x4024_2ffc), Some(Attrs::TEXT));
        assert_eq!(at(0x4024_3000), Some(Attrs::READ_ONLY));
        assert_eq!(at(0x4025_0fff), Some(Attrs::READ_ONLY));
        assert_eq!(at(0x4025_1000), Some(Attrs::DATA));
        assert_eq!(at(0x401f_ffff), Some(Attrs::DATA));
        assert_eq!(at(0x5fff_ffff), Some(Attrs::DATA));
        assert_eq!(at(0x6000_0000), None);
        assert_eq!(at(0x60ff_ffff), None);
        assert_eq!(at(0x6100_0000), Some(Attrs::DATA));
        assert_eq!(at(0xbfff_f000), None);
        // Every leaf's permissions, as the MMU reads them.
        for (va, _, a) in t.leaves(&m) {
            assert!(!(a.write && a.exec), "{va:#x}");
            if a.exec {
                assert!(image.text.contains(&va), "{va:#x} executable");
            }
        }
        // A writable, executable entry is found.
        t.map(&mut m, 0x1000, 0x1000, 0x1000, Attrs::RAM).unwrap();
        assert_eq!(t.writable_and_executable(&m), Some(0x1000));
    }

    #[test]
    fn refusals() {
        let mut m = VecTables::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2).unwrap();
        assert_eq!(
            t.map(&mut m, 0x1001, 0, 0x1000, Attrs::RAM),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            t.map(&mut m, 1 << 39, 0, 0x1000, Attrs::RAM),
            Err(MapError::OutOfRange)
        );
        assert_eq!(
            t.map(&mut m, !0xfff, 0, 0x2000, Attrs::RAM),
            Err(MapError::OutOfRange)
        );
        t.map(&mut m, 0x20_0000, 0, 0x20_0000, Attrs::RAM).unwrap();
        assert_eq!(
            t.map(&mut m, 0x20_1000, 0, 0x1000, Attrs::RAM),
            Err(MapError::Overlap { addr: 0x20_1000 })
        );
        let mut m = VecTables {
            limit: Some(2),
            ..Default::default()
        };
        let mut t = PageTable::new(&mut m, Regime::Stage2).unwrap();
        assert_eq!(
            t.map(&mut m, 0x1000, 0x1000, 0x1000, Attrs::RAM),
            Err(MapError::NoMemory)
        );
    }
}
