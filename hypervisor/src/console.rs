//! The physical console, shared by the hypervisor's log and every
//! partition's emulated UART. Whole lines are written under one lock, so
//! lines of different sources never mix; typed input goes to the partition
//! in focus (see `partita_core::console` for the escape keys).

use crate::uart::Uart;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use partita_core::console::{self as keys, Input, InputRouter};
use partita_core::sdt::UartKind;
use spin::Mutex;

struct Console {
    uart: Option<Uart>,
    input: InputRouter,
    /// A partition whose line is on the console but not yet ended (a
    /// prompt): anything else ends it first.
    open: Option<usize>,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    uart: None,
    input: InputRouter::new(),
    open: None,
});
static COLOUR: AtomicBool = AtomicBool::new(false);
/// The partition that receives typed input.
static FOCUS: AtomicUsize = AtomicUsize::new(0);

struct Out<'a>(&'a Uart);

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

/// Starts the console on the UART at `base`.
///
/// # Safety
/// `base` must be the board's console UART, mapped for the hypervisor's life.
pub unsafe fn init(kind: UartKind, base: u64) {
    // SAFETY: forwarded from the caller.
    let uart = unsafe { Uart::new(kind, base) };
    uart.enable();
    CONSOLE.lock().uart = Some(uart);
    log::set_logger(&LOGGER).ok();
    log::set_max_level(log::LevelFilter::Info);
}

/// Interrupts on typed input (the caller routes the UART's SPI here).
pub fn enable_input() {
    if let Some(u) = &CONSOLE.lock().uart {
        u.enable_rx_interrupt();
    }
}

/// Colours line prefixes: asked for on the hypervisor's command line
/// (`colour`), which `scripts/run` does when it runs in a terminal.
pub fn set_colour(on: bool) {
    COLOUR.store(on, Ordering::Relaxed);
}

/// Writes `text` behind `prefix`, or continues the open line of partition
/// `source`; ends the line unless `partial`.
fn write(
    source: Option<usize>,
    start: &str,
    prefix: core::fmt::Arguments<'_>,
    text: core::fmt::Arguments<'_>,
    partial: bool,
) {
    let mut c = CONSOLE.lock();
    let open = c.open;
    let Some(u) = &c.uart else { return };
    let mut out = Out(u);
    if open.is_some() && open != source {
        let _ = out.write_str("\n");
    }
    if open.is_none() || open != source {
        if COLOUR.load(Ordering::Relaxed) {
            let _ = write!(out, "{start}{prefix}{}", keys::RESET);
        } else {
            let _ = write!(out, "{prefix}");
        }
    }
    let _ = out.write_fmt(text);
    if !partial {
        let _ = out.write_str("\n");
    }
    c.open = if partial { source } else { None };
}

fn write_line(start: &str, prefix: core::fmt::Arguments<'_>, text: core::fmt::Arguments<'_>) {
    write(None, start, prefix, text, false);
}

/// Writes a partition's line, its name in front; a `partial` one (a
/// prompt) stays open for the rest of it.
pub fn guest_line(index: usize, name: &str, text: &[u8], partial: bool) {
    let text = core::str::from_utf8(text).unwrap_or("<non-UTF-8 output>");
    write(
        Some(index),
        keys::colour(index),
        format_args!("[{name}] "),
        format_args!("{text}"),
        partial,
    );
}

/// The partition that has the input.
pub fn focus() -> usize {
    FOCUS.load(Ordering::Relaxed)
}

/// Last resort for panics: takes the console even if its lock is held.
pub fn emergency(args: core::fmt::Arguments<'_>) {
    // SAFETY: only used when the system is going down; a torn line is
    // better than a silent hang on a lock the panicking CPU may own.
    unsafe { CONSOLE.force_unlock() };
    write_line(keys::HYPERVISOR, format_args!("[partita] "), args);
}

/// The console UART's receive interrupt: drains it and routes each byte.
pub fn receive() {
    loop {
        let (byte, action) = {
            let mut c = CONSOLE.lock();
            let Console { uart, input, .. } = &mut *c;
            let Some(u) = uart.as_ref() else { return };
            let Some(b) = u.get() else {
                u.ack_rx_interrupt();
                return;
            };
            (b, input.feed(b))
        };
        let _ = byte;
        match action {
            Input::Byte(b) => {
                let sys = crate::system();
                if let Some(p) = sys.partitions.get(FOCUS.load(Ordering::Relaxed)) {
                    if let Some(con) = &p.console {
                        con.state.lock().0.push_rx(b);
                        p.resample_console();
                    }
                }
            }
            Input::FocusNext => focus_next(),
            Input::Status => status(),
            Input::Nothing => {}
        }
    }
}

/// The partition with a console after the one in focus.
fn focus_next() {
    let parts = &crate::system().partitions;
    let now = FOCUS.load(Ordering::Relaxed);
    let next = (1..=parts.len())
        .map(|i| (now + i) % parts.len())
        .find(|&i| parts[i].console.is_some());
    if let Some(n) = next {
        FOCUS.store(n, Ordering::Relaxed);
        log::info!("input now goes to {}", parts[n].name);
    }
}

pub fn announce_focus() {
    let parts = &crate::system().partitions;
    if let Some(p) = parts.iter().find(|p| p.console.is_some()) {
        FOCUS.store(p.index, Ordering::Relaxed);
        log::info!("input goes to {}; Ctrl-\\ n moves it to the next partition, Ctrl-\\ s shows their status", p.name);
    }
}

fn status() {
    let parts = &crate::system().partitions;
    let focus = FOCUS.load(Ordering::Relaxed);
    let freq = crate::arch::counter_frequency().max(1);
    log::info!("status: {} partitions", parts.len());
    for p in parts {
        let (state, on, vcpus, restarts, since) = {
            let l = p.life.lock();
            let on = (0..l.power().count())
                .filter(|&v| l.power().get(v) != partita_core::psci::Power::Off)
                .count();
            (l.state(), on, l.power().count(), l.restarts, l.started_at)
        };
        let up = match state {
            partita_core::lifecycle::State::Running => {
                crate::arch::counter().saturating_sub(since) / freq
            }
            _ => 0,
        };
        let (traps, injected) = p.cpu_counters();
        log::info!(
            "  {:<8} {:<8} vcpus on {on}/{vcpus}  up {up} s  restarts {restarts}  traps {traps}  irqs {injected}  rpmsg in {} out {}  faults {}{}",
            p.name,
            state.name(),
            p.rpmsg_in.load(Ordering::Relaxed),
            p.rpmsg_out.load(Ordering::Relaxed),
            p.faults.load(Ordering::Relaxed),
            if p.index == focus { "  (input)" } else { "" }
        );
    }
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
            log::Level::Info => write_line(
                keys::HYPERVISOR,
                format_args!("[partita cpu{cpu}] "),
                *r.args(),
            ),
            l => write_line(
                keys::HYPERVISOR,
                format_args!("[partita cpu{cpu}] {l}: "),
                *r.args(),
            ),
        }
    }

    fn flush(&self) {}
}
