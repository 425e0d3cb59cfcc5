//! The guests' stage-1 identity map, on from the first instructions.
//!
//! With its MMU off an EL1 guest's data accesses are Device-nGnRnE: they
//! bypass the caches while the hypervisor reads and writes the guest's
//! rings and buffers through its own cacheable mapping, which only QEMU
//! (with no caches to model) makes coherent. On a board the two would see
//! different bytes. Device memory would also fault on an unaligned access,
//! and its exclusives (every atomic on an Armv8.0 core) need a global
//! monitor that many systems do not give it. So the guest's
//! RAM (its device tree's `/memory`) is Normal write-back, inner shareable,
//! like the hypervisor's view of it, and everything else Device-nGnRE.
//!
//! Device ranges stay executable at stage 1, so that a wild fetch reaches
//! stage 2 and is reported as natively (an external abort); stage 2 keeps
//! every device execute-never and leaves the rest unmapped, so no
//! speculative fetch reaches a device.

use core::sync::atomic::{AtomicU64, Ordering};

const ENTRIES: usize = 512;
/// Tables beyond the root: one level-2 table per GiB that RAM touches and
/// a level-3 table per RAM end not 2 MiB-aligned. A range that finds the
/// pool empty stays Device: slower, never wrong.
const POOL: usize = 7;

const VALID: u64 = 1;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
/// MAIR_EL1 index 0: Normal write-back read/write-allocate; index 1:
/// Device-nGnRE.
const MAIR: u64 = 0x04 << 8 | 0xff;
const NORMAL: u64 = AF | SH_INNER;
const DEVICE: u64 = AF | (1 << 2);
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
/// 39-bit addresses from level 1 (T0SZ 25), 4 KiB granule, walks
/// write-back and inner shareable like the data, no TTBR1 walks (EPD1,
/// with TG1 a defined granule all the same), 40-bit output (IPS).
const TCR: u64 =
    25 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (0b10 << 30) | (0b010 << 32);
/// SCTLR_EL1's M, C and I.
const SCTLR_ON: u64 = 1 | (1 << 2) | (1 << 12);

#[repr(C, align(4096))]
struct Tables([[u64; ENTRIES]; 1 + POOL]);

static mut TABLES: Tables = Tables([[0; ENTRIES]; 1 + POOL]);

/// MAIR, TCR, TTBR0 and SCTLR as vCPU 0 set them, for the others
/// (`mmu_secondary` in boot.S, before their first store). Written before
/// any cache is on, so a vCPU reading it with its MMU off sees it.
#[no_mangle]
static MMU_CONFIG: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

extern "C" {
    static _start: u8;
    static __stacks_top: u8;
}

struct Builder {
    root: *mut [u64; ENTRIES],
    used: usize,
}

const fn entry_size(level: u32) -> u64 {
    1 << (12 + 9 * (3 - level))
}

impl Builder {
    fn table(&mut self, at: *mut [u64; ENTRIES], i: usize) -> &mut u64 {
        // SAFETY: `at` is one of TABLES' pages and i < 512; only vCPU 0
        // builds, before anything else runs.
        unsafe { &mut (*at)[i] }
    }

    /// Maps `[start, end)` (page-aligned) Normal at `level` of `table`,
    /// whose entries start at `base`; a block only partly inside becomes a
    /// table of the same attributes, one level down.
    fn map(&mut self, table: *mut [u64; ENTRIES], level: u32, base: u64, start: u64, end: u64) {
        let size = entry_size(level);
        let first = ((start - base) / size) as usize;
        let last = ((end - 1 - base) / size) as usize;
        for i in first..=last.min(ENTRIES - 1) {
            let lo = base + i as u64 * size;
            let hi = lo + size;
            let d = *self.table(table, i);
            if start <= lo && hi <= end {
                let kind = if level == 3 {
                    VALID | TABLE_OR_PAGE
                } else {
                    VALID
                };
                *self.table(table, i) = lo | NORMAL | kind;
                continue;
            }
            let next = if level < 3 && d & TABLE_OR_PAGE != 0 {
                (d & ADDR_MASK) as *mut [u64; ENTRIES]
            } else if self.used < POOL {
                self.used += 1;
                // SAFETY: a page of the pool nobody else uses.
                let t = unsafe { core::ptr::addr_of_mut!(TABLES.0[self.used]) };
                // Finer blocks (pages at level 3) with the old attributes.
                let kind = if level + 1 == 3 {
                    VALID | TABLE_OR_PAGE
                } else {
                    VALID
                };
                let step = entry_size(level + 1);
                for j in 0..ENTRIES {
                    *self.table(t, j) =
                        (lo + j as u64 * step) | (d & !ADDR_MASK & !TABLE_OR_PAGE) | kind;
                }
                *self.table(table, i) = t as u64 | VALID | TABLE_OR_PAGE;
                t
            } else {
                continue;
            };
            self.map(next, level + 1, lo, start.max(lo), end.min(hi));
        }
    }
}

/// vCPU 0, at boot with the MMU off: builds the map of `fdt`'s memory and
/// turns on the MMU and both caches.
///
/// # Safety
/// Called once, from boot.S, before any other vCPU runs.
#[no_mangle]
pub unsafe extern "C" fn mmu_init(dtb: *const u8) {
    // SAFETY: only vCPU 0 runs; the pool is in BSS, zeroed.
    let root = unsafe { core::ptr::addr_of_mut!(TABLES.0[0]) };
    let mut b = Builder { root, used: 0 };
    for i in 0..ENTRIES {
        *b.table(root, i) = (i as u64 * entry_size(1)) | DEVICE | VALID;
    }
    // SAFETY: the hypervisor (or the bootloader) passes a device tree.
    if let Ok(fdt) = unsafe { fdt::Fdt::from_ptr(dtb) } {
        let memory = fdt
            .all_nodes()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"));
        for region in memory.flat_map(|n| n.reg().into_iter().flatten()) {
            let base = region.starting_address as u64;
            let start = base.saturating_add(0xfff) & !0xfff;
            let end = base.saturating_add(region.size.unwrap_or(0) as u64) & !0xfff;
            if start < end && end <= 1 << 39 {
                b.map(b.root, 1, 0, start, end);
            }
        }
    }
    let sctlr: u64;
    // SAFETY: reads this CPU's SCTLR_EL1.
    unsafe { core::arch::asm!("mrs {}, sctlr_el1", out(reg) sctlr) };
    for (slot, v) in MMU_CONFIG
        .iter()
        .zip([MAIR, TCR, root as u64, sctlr | SCTLR_ON])
    {
        slot.store(v, Ordering::Relaxed);
    }
    // The whole image with its stacks is ours; only addresses are taken.
    let (lo, hi) = (
        core::ptr::addr_of!(_start) as u64,
        core::ptr::addr_of!(__stacks_top) as u64,
    );
    let ctr: u64;
    // SAFETY: reads an ID register.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr) };
    let line = 4 << ((ctr >> 16) & 0xf);
    // SAFETY: invalidates our own image's lines (anything cached there is
    // older than the uncached writes made since boot: relocations, BSS,
    // tables, stack), then turns the MMU on; no store in between.
    unsafe {
        core::arch::asm!(
            "dsb sy",
            "2: dc ivac, {a}",
            "add {a}, {a}, {line}",
            "cmp {a}, {hi}",
            "b.lo 2b",
            "dsb sy",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "ic iallu",
            "dsb nsh",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            a = inout(reg) lo & !(line - 1) => _,
            line = in(reg) line,
            hi = in(reg) hi,
            mair = in(reg) MAIR,
            tcr = in(reg) TCR,
            ttbr = in(reg) root as u64,
            sctlr = in(reg) sctlr | SCTLR_ON,
            options(nostack)
        )
    };
}

/// The memory attributes (MAIR encoding) stage 1 gives `va` as the MMU
/// reads its tables now (AT S1E1R), or None if it does not translate.
pub fn attributes(va: u64) -> Option<u8> {
    let par: u64;
    // SAFETY: an address translation has no memory effects; PAR_EL1 is read
    // before anything could translate again.
    unsafe {
        core::arch::asm!("at s1e1r, {va}", "isb", "mrs {par}, par_el1",
            va = in(reg) va, par = out(reg) par, options(nostack))
    };
    (par & 1 == 0).then_some((par >> 56) as u8)
}

/// Whether this vCPU runs with its MMU and data cache on.
pub fn caches_on() -> bool {
    let sctlr: u64;
    // SAFETY: reads SCTLR_EL1.
    unsafe { core::arch::asm!("mrs {}, sctlr_el1", out(reg) sctlr) };
    sctlr & (1 | 1 << 2) == (1 | 1 << 2)
}
