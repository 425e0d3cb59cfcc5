//! The physical console, shared by the hypervisor's log and every
//! partition's emulated UART.
//!
//! Output: whole lines go into one ring (`partita_core::console::
//! OutputRing`) under a lock held only to copy them in; the UART's FIFO is
//! fed from it as far as it has room, by the CPU that appended and by the
//! UART's transmit interrupt, so no CPU waits on the UART. Lines that find
//! the ring full are dropped and counted, and the next line says so.
//! Lines of different sources never mix, and guest text is sanitised on
//! the way in (only the hypervisor writes prefixes, colours and line
//! starts). What a guest makes the hypervisor log goes through its
//! partition's rate limit (`guest_warn!`, `guest_info!`).
//!
//! Input: typed bytes go to the partition in focus (see
//! `partita_core::console` for the escape keys), into its emulated UART's
//! receive buffer.

use crate::arch::Mutex;
use crate::partition::Partition;
use crate::uart::Uart;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use partita_core::console::{self as keys, Input, InputRouter, OutputRing};
use partita_core::ratelimit::{self, RateLimit, Verdict};
use partita_core::sdt::UartKind;
use partita_core::vuart::RX_BUFFER;

/// Bytes of output waiting for the UART: about 1.4 s of a 115200-baud line.
const RING: usize = 16 << 10;

struct Console {
    uart: Option<Uart>,
    input: InputRouter,
    /// A partition whose line is on the console but not yet ended (a
    /// prompt), and how many columns its text has there (see
    /// `partita_core::console::sanitise`): anything else ends it first.
    open: Option<(usize, u32)>,
    ring: OutputRing<RING>,
    /// The UART's transmit interrupt is on (output waits in the ring).
    tx_interrupt: bool,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    uart: None,
    input: InputRouter::new(),
    open: None,
    ring: OutputRing::new(),
    tx_interrupt: false,
});
static COLOUR: AtomicBool = AtomicBool::new(false);
/// The partition that receives typed input.
static FOCUS: AtomicUsize = AtomicUsize::new(0);

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

/// Feeds the UART's FIFO from the ring as far as it has room, and keeps
/// the transmit interrupt on while anything is left.
fn feed(c: &mut Console) {
    let Some(u) = &c.uart else { return };
    while let Some(b) = c.ring.peek() {
        if !u.try_put(b) {
            break;
        }
        c.ring.pop();
    }
    let waiting = !c.ring.is_empty();
    if waiting != c.tx_interrupt {
        u.set_tx_interrupt(waiting);
        c.tx_interrupt = waiting;
    }
}

/// What a line says after its prefix.
enum Body<'a> {
    /// The hypervisor's own text.
    Log(core::fmt::Arguments<'a>),
    /// A guest's bytes, sanitised on the way in.
    Guest(&'a [u8]),
}

/// Appends `body` behind `prefix`, or continues the open line of partition
/// `source`; ends the line unless `partial`. Then feeds the UART.
fn write(
    source: Option<usize>,
    start: &str,
    prefix: core::fmt::Arguments<'_>,
    body: Body<'_>,
    partial: bool,
) {
    let colour = COLOUR.load(Ordering::Relaxed);
    let mut c = CONSOLE.lock();
    if c.uart.is_none() {
        return;
    }
    let Console { ring, open, .. } = &mut *c;
    let dropped = ring.dropped();
    let continues = dropped == 0 && source.is_some() && open.map(|o| o.0) == source;
    let mut col = match *open {
        Some((_, col)) if continues => col,
        _ => 0,
    };
    let mut a = ring.append();
    if open.is_some() && !continues {
        a.raw(b"\r\n");
    }
    if dropped > 0 {
        prefix_into(&mut a, colour, keys::HYPERVISOR, format_args!("[partita] "));
        let _ = writeln!(
            a,
            "{dropped} console lines dropped: the output buffer was full"
        );
    }
    if !continues {
        prefix_into(&mut a, colour, start, prefix);
    }
    match body {
        Body::Log(args) => {
            let _ = a.write_fmt(args);
        }
        Body::Guest(text) => a.guest(text, &mut col),
    }
    if !partial {
        a.raw(b"\r\n");
    }
    if a.commit() {
        *open = match source {
            Some(s) if partial => Some((s, col)),
            _ => None,
        };
    }
    feed(&mut c);
}

fn prefix_into<const N: usize>(
    a: &mut partita_core::console::Append<'_, N>,
    colour: bool,
    start: &str,
    prefix: core::fmt::Arguments<'_>,
) {
    if colour {
        a.text(start);
        let _ = a.write_fmt(prefix);
        a.text(keys::RESET);
    } else {
        let _ = a.write_fmt(prefix);
    }
}

/// Writes a partition's line, its name in front; a `partial` one (a
/// prompt) stays open for the rest of it.
#[inline(never)]
#[cold]
pub fn guest_line(index: usize, name: &str, text: &[u8], partial: bool) {
    write(
        Some(index),
        keys::colour(index),
        format_args!("[{name}] "),
        Body::Guest(text),
        partial,
    );
}

/// Feeds the UART if the console is free: for CPUs with nothing else to
/// do, after each wake-up.
pub fn idle() {
    if let Some(mut c) = CONSOLE.try_lock() {
        if !c.ring.is_empty() {
            feed(&mut c);
        }
    }
}

/// Waits until everything queued has gone to the UART: before the
/// machine powers off, when no partition runs any more.
pub fn flush() {
    let mut c = CONSOLE.lock();
    let Console { uart, ring, .. } = &mut *c;
    if let Some(u) = uart {
        while let Some(b) = ring.pop() {
            u.put(b);
        }
    }
}

/// The partition that has the input.
pub fn focus() -> usize {
    FOCUS.load(Ordering::Relaxed)
}

/// Writes straight to the UART, waiting for room.
struct Direct<'a>(&'a Uart);

impl Write for Direct<'_> {
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

/// Last resort for panics: takes the console even if its lock is held,
/// sends what was queued, then writes `args` straight to the UART.
pub fn emergency(args: core::fmt::Arguments<'_>) {
    // SAFETY: only used when the system is going down; a torn line is
    // better than a silent hang on a lock the panicking CPU may own.
    unsafe { CONSOLE.force_unlock() };
    flush();
    let mut c = CONSOLE.lock();
    let open = c.open.take().is_some();
    let Some(u) = &c.uart else { return };
    let mut out = Direct(u);
    if open {
        let _ = out.write_str("\n");
    }
    let _ = writeln!(out, "[partita] {args}");
}

/// The console UART's interrupt: typed input, each byte routed, and room
/// in its transmit FIFO, which is fed again.
#[inline(never)]
#[cold]
pub fn interrupt() {
    {
        let mut c = CONSOLE.lock();
        let Some(u) = &c.uart else { return };
        // Acknowledged before the FIFOs are looked at: a byte that comes
        // after the last read raises the interrupt again, rather than
        // waiting unseen in the receive FIFO (a paste stalled so).
        u.ack_tx_interrupt();
        u.ack_rx_interrupt();
        feed(&mut c);
    }
    loop {
        let action = {
            let mut c = CONSOLE.lock();
            let Console { uart, input, .. } = &mut *c;
            let Some(u) = uart.as_ref() else { return };
            let Some(b) = u.get() else { return };
            input.feed(b)
        };
        match action {
            Input::Byte(b) => deliver(b),
            Input::FocusNext => focus_next(),
            Input::Status => status(),
            Input::Nothing => {}
        }
    }
}

/// A typed byte into the receive buffer of the partition in focus; a full
/// buffer drops it, and says so once per overrun (within the partition's
/// log limit).
fn deliver(b: u8) {
    let sys = crate::system();
    let Some(p) = sys.partitions.get(FOCUS.load(Ordering::Relaxed)) else {
        return;
    };
    let Some(con) = &p.console else { return };
    let refused = {
        let mut st = con.state.lock();
        let first = !st.0.overrun();
        (!st.0.push_rx(b) && first).then_some(st.0.rx_dropped)
    };
    p.resample_console();
    if let Some(total) = refused {
        limited(
            p,
            Class::Event,
            log::Level::Warn,
            format_args!(
                "{}: console input dropped: its {RX_BUFFER}-byte buffer is full ({total} bytes dropped since it started)",
                p.name
            ),
        );
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
    let dropped = CONSOLE.lock().ring.total_dropped;
    log::info!(
        "status: {} partitions; console lines dropped {dropped}",
        parts.len()
    );
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
        let (rpmsg_in, rpmsg_out) = p.rpmsg_counts();
        let cut: u64 = p.log_limits.lock().iter().map(|l| l.total_suppressed).sum();
        log::info!(
            "  {:<8} {:<8} vcpus on {on}/{vcpus}  up {up} s  restarts {restarts}  traps {traps}  irqs {injected}  rpmsg in {} out {}  faults {}  log lines cut {cut}{}",
            p.name,
            state.name(),
            rpmsg_in,
            rpmsg_out,
            p.faults.load(Ordering::Relaxed),
            if p.index == focus { "  (input)" } else { "" }
        );
    }
}

/// Which of a partition's log limits a line counts against.
#[derive(Clone, Copy)]
pub enum Class {
    /// The guest did something wrong.
    Fault = 0,
    /// The guest did something ordinary it may repeat at will.
    Event = 1,
}

/// A partition's log limits, one per `Class`.
pub fn new_limits() -> [RateLimit; 2] {
    [
        RateLimit::new(ratelimit::FAULTS),
        RateLimit::new(ratelimit::EVENTS),
    ]
}

/// Logs a line that something partition `p` did caused, within its limit:
/// past it, lines are counted instead, and the next line about `p` that
/// passes, of either class, says how many were cut.
#[inline(never)]
#[cold]
pub fn limited(p: &Partition, class: Class, level: log::Level, args: core::fmt::Arguments<'_>) {
    if level > log::max_level() {
        return;
    }
    let verdict = {
        let mut limits = p.log_limits.lock();
        let now = crate::arch::counter();
        match limits[class as usize].check(now, crate::arch::counter_frequency()) {
            Verdict::Print { suppressed } => Verdict::Print {
                suppressed: limits
                    .iter_mut()
                    .fold(suppressed, |n, l| n.saturating_add(l.take_pending())),
            },
            v => v,
        }
    };
    if let Verdict::Print { suppressed } = verdict {
        if suppressed > 0 {
            log::log!(
                level,
                "{}: {suppressed} more lines about it suppressed (log limit)",
                p.name
            );
        }
        log::log!(level, "{args}");
    }
}

/// `warn!` for what a guest did wrong, charged to its partition `$p`.
macro_rules! guest_warn {
    ($p:expr, $($arg:tt)+) => {
        $crate::console::limited(
            $p,
            $crate::console::Class::Fault,
            log::Level::Warn,
            format_args!($($arg)+),
        )
    };
}

/// `info!` for what a guest did and may repeat at will, charged to its
/// partition `$p`.
macro_rules! guest_info {
    ($p:expr, $($arg:tt)+) => {
        $crate::console::limited(
            $p,
            $crate::console::Class::Event,
            log::Level::Info,
            format_args!($($arg)+),
        )
    };
}

/// `info!` for an access the hypervisor does not emulate (an unknown
/// register: read as zero, write ignored), within the partition's fault
/// limit.
macro_rules! guest_note {
    ($p:expr, $($arg:tt)+) => {
        $crate::console::limited(
            $p,
            $crate::console::Class::Fault,
            log::Level::Info,
            format_args!($($arg)+),
        )
    };
}

pub(crate) use {guest_info, guest_note, guest_warn};

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        let cpu = crate::arch::cpu_index();
        match r.level() {
            log::Level::Info => write(
                None,
                keys::HYPERVISOR,
                format_args!("[partita cpu{cpu}] "),
                Body::Log(*r.args()),
                false,
            ),
            l => write(
                None,
                keys::HYPERVISOR,
                format_args!("[partita cpu{cpu}] {l}: "),
                Body::Log(*r.args()),
                false,
            ),
        }
    }

    fn flush(&self) {}
}
