//! The EL2 stage-1 identity map and the MMU switch.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicU64, Ordering};
use partita_core::pagetable::{ImageLayout, PageTable, TableMemory, PAGE_SIZE};

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __read_only_end: u8;
}

/// Where the linker put the text and the read-only data, as this image
/// runs (PC-relative, so after relocation as before).
pub fn image_layout() -> ImageLayout {
    // Only the symbols' addresses are taken, never their bytes.
    let (start, text_end, ro_end) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__text_end) as u64,
        core::ptr::addr_of!(__read_only_end) as u64,
    );
    ImageLayout {
        text: start..text_end,
        read_only: text_end..ro_end,
    }
}

/// MAIR_EL2, TCR_EL2, TTBR0_EL2 and SCTLR_EL2 as the boot CPU set them;
/// secondary CPUs load them in `secondary_entry` before their first store.
#[no_mangle]
static MMU_CONFIG: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Tables on the hypervisor heap, which the identity map makes physical
/// addresses of.
pub struct HeapTables;

impl TableMemory for HeapTables {
    fn alloc_table(&mut self) -> Option<u64> {
        let layout =
            core::alloc::Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!p.is_null()).then_some(p as u64)
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` came from alloc_table and index < 512 (the
        // page-table code computes it from 9 address bits).
        unsafe { (table as *const u64).add(index).read_volatile() }
    }

    fn write(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: as in `read`. The table walker is coherent with the data
        // cache (TCR_EL2/VTCR_EL2 say inner write-back), so a barrier
        // before use suffices.
        unsafe { (table as *mut u64).add(index).write_volatile(value) }
    }
}

/// Turns on the MMU with `table` and the data and instruction caches.
/// SCTLR_EL2.WXN makes every writable page execute-never whatever its
/// entry says, so a mistake in the map cannot make one executable.
pub fn enable(table: &PageTable) {
    let mair = 0x04 << 8 | 0xff; // index 1 Device-nGnRE, index 0 Normal WB RAWA
    let tcr = (1 << 31) | (1 << 23) // RES1
        | (0b010 << 16)              // PS: 40 bits
        | (0b11 << 12) | (0b01 << 10) | (0b01 << 8) // inner shareable, WB RAWA walks
        | (64 - u64::from(partita_core::pagetable::INPUT_BITS));
    let sctlr = 0x30c5_0830 | (1 << 19) | (1 << 12) | (1 << 3) | (1 << 2) | 1; // RES1, WXN, I, SA, C, M
    barrier::dsb(barrier::ISHST);
    MAIR_EL2.set(mair);
    TCR_EL2.set(tcr);
    TTBR0_EL2.set(table.root());
    barrier::isb(barrier::SY);
    // SAFETY: invalidates stale EL2 translations; no memory effects.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", "isb", options(nostack)) };
    SCTLR_EL2.set(sctlr);
    barrier::isb(barrier::SY);
    for (slot, v) in MMU_CONFIG.iter().zip([mair, tcr, table.root(), sctlr]) {
        slot.store(v, Ordering::Relaxed);
    }
    super::clean_dcache(
        MMU_CONFIG.as_ptr() as u64,
        core::mem::size_of_val(&MMU_CONFIG) as u64,
    );
}

/// Whether the MMU, walking the live tables, lets EL2 write `va`
/// (AT S1E2W): a check of the map as the hardware reads it, not as the
/// builder meant it.
pub fn writable(va: u64) -> bool {
    let par: u64;
    // SAFETY: an address translation has no memory effects; PAR_EL1 is
    // read at once, with nothing between that could translate again.
    unsafe {
        core::arch::asm!("at s1e2w, {va}", "isb", "mrs {par}, par_el1",
            va = in(reg) va, par = out(reg) par, options(nostack))
    };
    par & 1 == 0
}

/// Makes the table entries this CPU wrote visible to every CPU's table
/// walker (the walks are coherent with the data cache, so no clean).
pub fn publish_tables() {
    barrier::dsb(barrier::ISHST);
}

/// Cleans and invalidates `[start, start + len)` to the point of coherency
/// in every cache of the inner shareable domain. For whole partitions
/// (tens of MiB to GiB), so eight lines per loop turn: under QEMU each
/// instruction counts, and on a board the loop stays out of the way of
/// the memory traffic it causes. `start` and `len` are page-aligned, so
/// whole turns cover it exactly for any line size up to 512 bytes.
pub fn clean_invalidate_pages(start: u64, len: u64) {
    debug_assert!((start | len).is_multiple_of(PAGE_SIZE));
    let ctr: u64;
    // SAFETY: reads an ID register.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    if len == 0 {
        return;
    }
    // SAFETY: cache maintenance by address has no memory effects beyond
    // writing back what the caches hold for those addresses.
    unsafe {
        core::arch::asm!(
            "2:",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "dc civac, {a}", "add {a}, {a}, {line}",
            "cmp {a}, {end}",
            "b.lo 2b",
            "dsb ish",
            a = inout(reg) start => _,
            line = in(reg) line,
            end = in(reg) start + len,
            options(nostack)
        )
    };
}
