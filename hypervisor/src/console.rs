//! The physical console, shared by the hypervisor's log and every
//! partition's emulated UART. Whole lines are written under one lock, so
//! lines of different sources never mix.

use crate::uart::{Pl011, Uart};
use core::fmt::Write;
use spin::Mutex;

struct Console {
    uart: Option<Pl011>,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console { uart: None });

struct Out<'a>(&'a Pl011);

impl Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.put(b'\r');
            }
            self.0.put(b);
        }
        Ok(())
    }
}

/// Starts the console on the PL011 at `base`.
///
/// # Safety
/// `base` must be the board's console UART, mapped for the hypervisor's life.
pub unsafe fn init(base: u64) {
    // SAFETY: forwarded from the caller.
    let uart = unsafe { Pl011::new(base) };
    uart.enable();
    CONSOLE.lock().uart = Some(uart);
    log::set_logger(&LOGGER).ok();
    log::set_max_level(log::LevelFilter::Info);
}

/// Writes one line with a prefix, atomically with respect to other lines.
pub fn line(prefix: core::fmt::Arguments<'_>, text: core::fmt::Arguments<'_>) {
    let c = CONSOLE.lock();
    if let Some(u) = &c.uart {
        let _ = writeln!(Out(u), "{prefix}{text}");
    }
}

/// Writes a guest's line, its partition's name in front.
pub fn guest_line(name: &str, text: &[u8]) {
    let text = core::str::from_utf8(text).unwrap_or("<non-UTF-8 output>");
    line(format_args!("[{name}] "), format_args!("{text}"));
}

/// Last resort for panics: takes the console even if its lock is held.
pub fn emergency(args: core::fmt::Arguments<'_>) {
    // SAFETY: only used when the system is going down; a torn line is
    // better than a silent hang on a lock the panicking CPU may own.
    unsafe { CONSOLE.force_unlock() };
    line(format_args!("[partita] "), args);
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        let cpu = crate::arch::cpu_index();
        match r.level() {
            log::Level::Info => line(format_args!("[partita cpu{cpu}] "), *r.args()),
            l => line(format_args!("[partita cpu{cpu}] {l}: "), *r.args()),
        }
    }

    fn flush(&self) {}
}
