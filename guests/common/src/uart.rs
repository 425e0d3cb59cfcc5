//! A polling PL011 console, found through the device tree. Lines are
//! printed whole: callers on several vCPUs (or tasks) take turns.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static BASE: AtomicU64 = AtomicU64::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

pub struct Uart(u64);

pub fn init(base: u64) {
    BASE.store(base, Ordering::Relaxed);
}

impl Uart {
    pub fn put(&mut self, b: u8) {
        // SAFETY: the PL011 the device tree names; FR at 0x18, DR at 0.
        unsafe {
            while core::ptr::read_volatile((self.0 + 0x18) as *const u32) & (1 << 5) != 0 {}
            core::ptr::write_volatile(self.0 as *mut u32, u32::from(b));
        }
    }
}

/// Prints one line; vCPUs take turns so lines stay whole. Interrupts are
/// masked meanwhile, so a preempting task or handler never spins on a
/// lock its own CPU holds.
pub fn print(args: core::fmt::Arguments<'_>) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    let daif: u64;
    // SAFETY: saves the interrupt mask and masks IRQs.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif) };
    while LOCK.swap(true, Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let mut u = Uart(base);
    let _ = u.write_fmt(args);
    let _ = u.write_str("\n");
    LOCK.store(false, Ordering::Release);
    // SAFETY: restores the interrupt mask saved above.
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif) };
}

/// Interrupts on received bytes (RX and RX timeout).
pub fn enable_rx_interrupt() {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: IMSC of our PL011.
    unsafe { core::ptr::write_volatile((base + 0x38) as *mut u32, (1 << 4) | (1 << 6)) };
}

/// A received byte, if any.
pub fn get() -> Option<u8> {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: FR and DR of our PL011.
    unsafe {
        (core::ptr::read_volatile((base + 0x18) as *const u32) & (1 << 4) == 0)
            .then(|| core::ptr::read_volatile(base as *const u32) as u8)
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            self.put(b);
        }
        Ok(())
    }
}
