//! A virtio-mmio rpmsg device, driver side: one device, two queues of 16
//! buffers of 512 bytes in the guest's own memory. It speaks whichever
//! version the device reports at offset 4: 2, or the legacy 1 (GuestPageSize,
//! QueuePFN, no FEATURES_OK). A device that needs a reset (a fault of
//! ours, or a peer's message we could not take) is reset and set up again
//! the next time a `Sender` or `Receiver` is used.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const Q: u16 = 16;
pub const BUF: usize = 512;
pub const HDR: usize = 16;
pub const NS_ADDR: u32 = 53;
const RX: usize = 0;
const TX: usize = 1;
pub const STATUS_NEEDS_RESET: u32 = 64;
const PAGE: u64 = 4096;
const AVAIL_BYTES: usize = 2 * (3 + Q as usize);

/// One queue's rings in the legacy layout, which version 2 accepts as
/// well: the descriptor table and the available ring in one page, the used
/// ring on the next (QueueAlign 4096, as Linux and OpenAMP use).
#[repr(C, align(4096))]
struct Ring {
    desc: [Desc; Q as usize],
    avail: [u16; 3 + Q as usize],
    _pad: [u8; PAGE as usize - 16 * Q as usize - AVAIL_BYTES],
    used: [u32; 2 + 2 * Q as usize],
}

/// A descriptor (2.7.5), its fields in the guest's (little-endian) order.
#[derive(Clone, Copy)]
#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C, align(4096))]
struct Buffers([[u8; BUF]; Q as usize]);

static mut RINGS: [Ring; 2] = [const {
    Ring {
        desc: [Desc {
            addr: 0,
            len: 0,
            flags: 0,
            next: 0,
        }; Q as usize],
        avail: [0; 3 + Q as usize],
        _pad: [0; PAGE as usize - 16 * Q as usize - AVAIL_BYTES],
        used: [0; 2 + 2 * Q as usize],
    }
}; 2];
static mut RXB: Buffers = Buffers([[0; BUF]; Q as usize]);
static mut TXB: Buffers = Buffers([[0; BUF]; Q as usize]);
static BASE: AtomicU64 = AtomicU64::new(0);
static VERSION: AtomicU32 = AtomicU32::new(0);
/// The count of setups of the device, and `BROKEN` while it was seen in
/// DEVICE_NEEDS_RESET: `Sender` and `Receiver` compare it with what they
/// saw last (one load per call), recover the device if it is broken, and
/// start their counts again when it was set up anew.
static STATE: AtomicU32 = AtomicU32::new(0);
const BROKEN: u32 = 1 << 31;
static RECOVERIES: AtomicU32 = AtomicU32::new(0);
/// The length of the receive buffers posted: BUF, unless a scenario asks
/// for shorter ones until the next recovery.
static RX_LEN: AtomicU32 = AtomicU32::new(BUF as u32);

fn reg(off: u64) -> u32 {
    // SAFETY: the virtio-mmio window named by our device tree.
    unsafe { read_volatile((BASE.load(Ordering::Relaxed) + off) as *const u32) }
}

fn set(off: u64, v: u32) {
    // SAFETY: as above.
    unsafe { write_volatile((BASE.load(Ordering::Relaxed) + off) as *mut u32, v) }
}

fn ring(q: usize) -> *mut Ring {
    // SAFETY: one driver instance; no reference to the rings is ever made.
    unsafe { addr_of_mut!(RINGS[q]) }
}

pub fn put_desc(q: usize, i: u16, addr: u64, len: u32, flags: u16) {
    put_desc_next(q, i, addr, len, flags, 0);
}

#[inline(always)]
pub fn put_desc_next(q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let d = Desc {
        addr,
        len,
        flags,
        next,
    };
    // SAFETY: our own ring; volatile because the device reads it.
    unsafe { write_volatile(addr_of_mut!((*ring(q)).desc[i as usize]), d) };
}

fn avail_idx(q: usize) -> u16 {
    // SAFETY: our own ring.
    unsafe { read_volatile(addr_of!((*ring(q)).avail[1])) }
}

pub fn offer(q: usize, id: u16) {
    let idx = avail_idx(q);
    // SAFETY: our own ring: the entry first, then the index that publishes it.
    unsafe { write_volatile(addr_of_mut!((*ring(q)).avail[2 + (idx % Q) as usize]), id) };
    // The buffer, its descriptor and the entry before the index, for a
    // device on another CPU.
    core::sync::atomic::fence(Ordering::Release);
    // SAFETY: as above.
    unsafe { write_volatile(addr_of_mut!((*ring(q)).avail[1]), idx.wrapping_add(1)) };
}

/// The used index; what it publishes is read after it.
fn used_idx(q: usize) -> u16 {
    // SAFETY: our own ring, written by the device.
    let v = (unsafe { read_volatile(addr_of!((*ring(q)).used[0])) } >> 16) as u16;
    core::sync::atomic::fence(Ordering::Acquire);
    v
}

/// VRING_USED_F_NO_NOTIFY: the device needs no notify of new buffers.
const USED_F_NO_NOTIFY: u16 = 1;

fn used_flags(q: usize) -> u16 {
    // SAFETY: our own ring, written by the device.
    unsafe { read_volatile(addr_of!((*ring(q)).used[0])) as u16 }
}

fn used_entry(q: usize, n: u16) -> (u32, u32) {
    let i = 1 + 2 * (n % Q) as usize;
    // SAFETY: as above.
    unsafe {
        (
            read_volatile(addr_of!((*ring(q)).used[i])),
            read_volatile(addr_of!((*ring(q)).used[i + 1])),
        )
    }
}

/// The address of transmit buffer `i` (for scenarios that build their own
/// descriptors).
pub fn tx_buffer(i: usize) -> *mut u8 {
    // SAFETY: only the address is taken.
    unsafe { addr_of_mut!(TXB.0[i % Q as usize]) as *mut u8 }
}

/// Out of line, as Linux's `vm_notify` is: inlined, the queue index sat
/// in a register the compiler kept across the message's copy (w21), and
/// a hypervisor that saves only the registers a trapped store can name
/// took its slower path for it.
#[inline(never)]
pub fn notify(q: u32) {
    set(0x50, q);
}

/// The device status; one that needs a reset is noted for recovery.
pub fn status() -> u32 {
    let s = reg(0x70);
    if s & STATUS_NEEDS_RESET != 0 {
        STATE.fetch_or(BROKEN, Ordering::Relaxed);
    }
    s
}

/// Whether the other side's driver is ready (Partita's rpmsg
/// configuration word), and the configuration generation (0 on a legacy
/// device, which has none): every change of the word moves it on.
pub fn peer_ready() -> (bool, u32) {
    let generation = if version() == 1 { 0 } else { reg(0xfc) };
    (reg(0x100) != 0, generation)
}

/// The transport version the device reports: 2, or 1 (legacy).
pub fn version() -> u32 {
    VERSION.load(Ordering::Relaxed)
}

/// Resets the device: from here on the device touches none of our
/// buffers.
pub fn reset() {
    set(0x70, 0);
}

/// Acknowledges the device's interrupt. A configuration change may be
/// DEVICE_NEEDS_RESET (2.1.2): then the status is read, and a device that
/// needs it is reset and set up again by the next `Sender` or `Receiver`
/// call.
pub fn ack_interrupt() {
    let isr = reg(0x60);
    set(0x64, isr);
    if isr & 2 != 0 {
        status();
    }
}

/// How the driver brings the device up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// As Linux does: every status step, then a notify of the receive
    /// queue once it is live.
    Linux,
    /// As OpenAMP's driver (`virtio_mmio_drv.c`, `rpmsg_init_vdev`) does:
    /// no notify, so the device must find the receive buffers posted
    /// before DRIVER_OK by itself; and on a legacy device ACKNOWLEDGE,
    /// then DRIVER_OK alone.
    OpenAmp,
}

/// The device at `base`: its version's features (NS if offered) and
/// queues set up, every receive buffer posted, DRIVER_OK. Err says what
/// went wrong.
pub fn init(base: u64) -> Result<(), &'static str> {
    init_with(base, Style::Linux)
}

/// As `init`, posting receive buffers of `rx_len` bytes (at most `BUF`)
/// until the next recovery: shorter than the link's buffer size, they are
/// this driver's fault, for the scenarios that test it.
pub fn init_posting(base: u64, rx_len: u32) -> Result<(), &'static str> {
    RX_LEN.store(rx_len.min(BUF as u32), Ordering::Relaxed);
    init_with(base, Style::Linux)
}

pub fn init_with(base: u64, style: Style) -> Result<(), &'static str> {
    BASE.store(base, Ordering::Relaxed);
    let version = reg(4);
    if reg(0) != 0x7472_6976 || reg(8) != 7 {
        return Err("not a virtio rpmsg device");
    }
    if version != 1 && version != 2 {
        return Err("a virtio-mmio version other than 1 or 2");
    }
    VERSION.store(version, Ordering::Relaxed);
    setup(style)
}

/// Resets the device and sets it up again, as after `init`: what either
/// side had in flight on it is gone.
pub fn recover() -> Result<(), &'static str> {
    let daif: u64;
    // SAFETY: masks IRQs (restored below), so no handler of ours touches
    // the device or its rings while they are rebuilt.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif) };
    RECOVERIES.fetch_add(1, Ordering::Relaxed);
    RX_LEN.store(BUF as u32, Ordering::Relaxed);
    let r = setup(Style::Linux);
    // SAFETY: restores the caller's mask.
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif) };
    r
}

/// Whether the device was seen to need a reset (by a configuration
/// interrupt or a status read) and is not yet recovered.
pub fn needs_recovery() -> bool {
    STATE.load(Ordering::Relaxed) & BROKEN != 0
}

/// How many times the device was reset after it needed it.
pub fn recoveries() -> u32 {
    RECOVERIES.load(Ordering::Relaxed)
}

fn setup(style: Style) -> Result<(), &'static str> {
    let legacy = version() == 1;
    let openamp_legacy = style == Style::OpenAmp && legacy;
    set(0x70, 0);
    // Tried once per sighting: a device that cannot be set up again is
    // not reset over and over.
    STATE.fetch_and(!BROKEN, Ordering::Relaxed);
    // The device starts from index 0 again; so do our rings.
    for q in 0..2 {
        // SAFETY: our own rings, which the reset device no longer reads.
        unsafe {
            write_volatile(addr_of_mut!((*ring(q)).avail[0]), 0);
            write_volatile(addr_of_mut!((*ring(q)).avail[1]), 0);
            write_volatile(addr_of_mut!((*ring(q)).used[0]), 0);
        }
    }
    set(0x70, 1);
    if !openamp_legacy {
        set(0x70, 3);
    }
    set(0x14, 0);
    set(0x24, 0);
    set(0x20, reg(0x10) & 1); // VIRTIO_RPMSG_F_NS, if offered
    if legacy {
        set(0x28, PAGE as u32); // GuestPageSize
    } else {
        set(0x24, 1);
        set(0x20, 1); // VIRTIO_F_VERSION_1
        set(0x70, 11);
        if reg(0x70) & 8 == 0 {
            return Err("features refused");
        }
    }
    for q in 0..2 {
        let r = ring(q) as u64;
        set(0x30, q as u32);
        set(0x38, u32::from(Q));
        if legacy {
            set(0x3c, PAGE as u32); // QueueAlign
            set(0x40, (r / PAGE) as u32); // QueuePFN
        } else {
            for (off, a) in [(0x80, r), (0x90, r + 16 * u64::from(Q)), (0xa0, r + PAGE)] {
                set(off, a as u32);
                set(off + 4, (a >> 32) as u32);
            }
            set(0x44, 1);
        }
    }
    // Checked before DRIVER_OK: from then on, a device that needs a reset
    // may be a fault at run time (a message that waited for us finding
    // our receive buffers too short), which recovery handles.
    if reg(0x70) & STATUS_NEEDS_RESET != 0 {
        return Err("the device refused its queues");
    }
    for i in 0..Q {
        // SAFETY: our receive buffers, handed to the device.
        let a = unsafe { addr_of!(RXB.0[i as usize]) } as u64;
        put_desc(RX, i, a, RX_LEN.load(Ordering::Relaxed), 2);
        offer(RX, i);
    }
    // Sent buffers are reclaimed by looking at the used ring when sending,
    // so no interrupt is wanted for them (Linux's virtio_rpmsg_bus does the
    // same): VRING_AVAIL_F_NO_INTERRUPT.
    // SAFETY: our own ring, before the device is live.
    unsafe { write_volatile(addr_of_mut!((*ring(TX)).avail[0]), 1) };
    set(
        0x70,
        match (openamp_legacy, legacy) {
            (true, _) => 4,
            (false, true) => 7,
            (false, false) => 15,
        },
    );
    let next = STATE.load(Ordering::Relaxed).wrapping_add(1) & !BROKEN;
    STATE.store(next, Ordering::Relaxed);
    if style == Style::Linux {
        notify(RX as u32);
    }
    Ok(())
}

/// The device state a `Sender` or `Receiver` must take when it moved on
/// since they last looked: a broken device is recovered first. Out of line: it is
/// reached only when the state moved on.
#[cold]
#[inline(never)]
fn catch_up() -> u32 {
    if STATE.load(Ordering::Relaxed) & BROKEN != 0 {
        let _ = recover();
    }
    STATE.load(Ordering::Relaxed)
}

pub fn features() -> u32 {
    reg(0x10)
}

/// Transmit side: buffers go out in order and come back in order.
pub struct Sender {
    sent: u16,
    generation: u32,
    /// Messages sent without a notify: the device asked for none.
    unnotified: u32,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    pub const fn new() -> Self {
        Sender {
            sent: 0,
            generation: 0,
            unnotified: 0,
        }
    }

    /// A sender that goes on from another's `sent` messages on the same
    /// queue (another vCPU's, which stops sending).
    pub fn continuing(sent: u16) -> Self {
        Sender {
            sent,
            generation: STATE.load(Ordering::Relaxed),
            unnotified: 0,
        }
    }

    /// After a recovery the transmit queue starts empty.
    #[inline(always)]
    fn sync(&mut self) {
        if STATE.load(Ordering::Relaxed) != self.generation {
            (self.sent, self.generation) = (0, catch_up());
        }
    }

    #[inline(always)]
    fn free(&mut self) -> bool {
        self.sync();
        self.sent.wrapping_sub(used_idx(TX)) < Q
    }

    /// A transmit buffer is free.
    pub fn can_send(&mut self) -> bool {
        self.free()
    }

    /// All sent buffers came back.
    pub fn drained(&mut self) -> bool {
        self.sync();
        self.sent == used_idx(TX)
    }

    /// Queues one message and notifies, unless the device asked for no
    /// notify (it moves the message itself, soon: see the hypervisor's
    /// coalescing); false if no buffer is free.
    pub fn send(&mut self, src: u32, dst: u32, payload: &[u8]) -> bool {
        if !self.put(src, dst, payload, 1) {
            return false;
        }
        // The index's store before the flag's load: a device that clears
        // the flag then looks at the index again (Linux's
        // virtqueue_kick_prepare orders them the same way).
        core::sync::atomic::fence(Ordering::SeqCst);
        if used_flags(TX) & USED_F_NO_NOTIFY == 0 {
            notify(TX as u32);
        } else {
            self.unnotified += 1;
        }
        true
    }

    /// Messages `send` sent without a notify, at the device's request.
    pub fn unnotified(&self) -> u32 {
        self.unnotified
    }

    /// Queues one message without notifying (see `kick`); false if no
    /// buffer is free.
    pub fn queue(&mut self, src: u32, dst: u32, payload: &[u8]) -> bool {
        self.put(src, dst, payload, 1)
    }

    /// Notifies the device of every message queued.
    pub fn kick(&self) {
        notify(TX as u32);
    }

    /// Queues one message as a chain of `parts` descriptors (the header in
    /// the first) over buffer 0, once every earlier message is back, and
    /// notifies; false until then. The hypervisor must take chains as long
    /// as the queue.
    pub fn send_chained(&mut self, src: u32, dst: u32, payload: &[u8], parts: u16) -> bool {
        if !self.drained() || !(2..=Q).contains(&parts) || !self.put(src, dst, payload, parts) {
            return false;
        }
        notify(TX as u32);
        true
    }

    /// Writes the message into the next free buffer (buffer 0 for a
    /// chain), describes it in `parts` descriptors and offers it.
    #[inline(always)]
    fn put(&mut self, src: u32, dst: u32, payload: &[u8], parts: u16) -> bool {
        if !self.free() || payload.len() > BUF - HDR {
            return false;
        }
        let slot = if parts > 1 { 0 } else { self.sent % Q };
        // SAFETY: a transmit buffer the device has returned.
        let b = unsafe { &mut *addr_of_mut!(TXB.0[slot as usize]) };
        b[0..4].copy_from_slice(&src.to_le_bytes());
        b[4..8].copy_from_slice(&dst.to_le_bytes());
        b[8..12].fill(0);
        b[12..14].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        b[14..16].fill(0);
        crate::copy(&mut b[HDR..], payload);
        let (base, len) = (b.as_ptr() as u64, HDR + payload.len());
        if parts > 1 {
            chain_descriptors(base, len, parts);
        } else {
            put_desc(TX, slot, base, len as u32, 0);
        }
        offer(TX, slot);
        self.sent = self.sent.wrapping_add(1);
        true
    }
}

/// Describes the message of `len` bytes at `base` with transmit
/// descriptors 0 to `parts` - 1: the header alone, then the payload in
/// `parts` - 1 pieces.
#[cold]
fn chain_descriptors(base: u64, len: usize, parts: u16) {
    let piece = (len - HDR).div_ceil(usize::from(parts) - 1);
    let mut at = 0;
    for k in 0..parts {
        let last = k + 1 == parts;
        let n = match k {
            0 => HDR,
            _ if last => len - at,
            _ => piece.min(len - at),
        };
        put_desc_next(TX, k, base + at as u64, n as u32, u16::from(!last), k + 1);
        at += n;
    }
}

/// Receive side.
pub struct Receiver {
    seen: u16,
    generation: u32,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub const fn new() -> Self {
        Receiver {
            seen: 0,
            generation: 0,
        }
    }

    /// Messages received and not yet polled.
    pub fn pending(&self) -> u16 {
        if self.generation != STATE.load(Ordering::Relaxed) {
            return used_idx(RX);
        }
        used_idx(RX).wrapping_sub(self.seen)
    }

    /// Shows the first message received and not yet polled (src, dst,
    /// payload) to `f`, leaving it for `poll`; false if there is none.
    pub fn peek(&self, f: impl FnOnce(u32, u32, &[u8])) -> bool {
        if self.pending() == 0 {
            return false;
        }
        let seen = if self.generation == STATE.load(Ordering::Relaxed) {
            self.seen
        } else {
            0
        };
        let (id, _) = used_entry(RX, seen);
        // SAFETY: a receive buffer the device filled and returned.
        let b = unsafe { &*addr_of!(RXB.0[(id as usize) % Q as usize]) };
        let src = u32::from_le_bytes(b[0..4].try_into().unwrap_or_default());
        let dst = u32::from_le_bytes(b[4..8].try_into().unwrap_or_default());
        let plen = (u16::from_le_bytes([b[12], b[13]]) as usize).min(BUF - HDR);
        f(src, dst, &b[HDR..HDR + plen]);
        true
    }

    /// Whether the device interrupts for messages that arrive
    /// (VRING_AVAIL_F_NO_INTERRUPT clear on the receive queue): a
    /// receiver that polls turns them off while it is busy, and `sleep`
    /// turns them on again only while it waits.
    pub fn interrupts(&self, on: bool) {
        // SAFETY: our own ring; the device only reads its flags.
        unsafe { write_volatile(addr_of_mut!((*ring(RX)).avail[0]), u16::from(!on)) };
    }

    /// Waits for a message, the caller's IRQs masked (the one that wakes
    /// us is taken once it unmasks them): interrupts on, a last look, WFI,
    /// interrupts off again.
    pub fn sleep(&self) {
        self.interrupts(true);
        // Our flag's store before our look at the index; the device
        // stores the index before it loads the flag.
        core::sync::atomic::fence(Ordering::SeqCst);
        if self.pending() == 0 {
            // SAFETY: waits for an interrupt, masked or not.
            unsafe { core::arch::asm!("wfi") };
        }
        self.interrupts(false);
    }

    /// Hands each received message (src, dst, payload, buffer length) to
    /// `f` and posts its buffer again; returns how many there were. At
    /// most a queue's worth per call: a peer that sends as fast as this
    /// side takes would otherwise keep one call going for ever.
    pub fn poll(&mut self, mut f: impl FnMut(u32, u32, &[u8], u32)) -> u32 {
        if STATE.load(Ordering::Relaxed) != self.generation {
            (self.seen, self.generation) = (0, catch_up());
        }
        let mut n = 0;
        while n < u32::from(Q) && self.seen != used_idx(RX) {
            let (id, len) = used_entry(RX, self.seen);
            self.seen = self.seen.wrapping_add(1);
            // SAFETY: a receive buffer the device filled and returned.
            let b = unsafe { &*addr_of!(RXB.0[(id as usize) % Q as usize]) };
            let src = u32::from_le_bytes(b[0..4].try_into().unwrap_or_default());
            let dst = u32::from_le_bytes(b[4..8].try_into().unwrap_or_default());
            let plen = (u16::from_le_bytes([b[12], b[13]]) as usize).min(BUF - HDR);
            f(src, dst, &b[HDR..HDR + plen], len);
            offer(RX, id as u16);
            n += 1;
        }
        if n > 0 {
            // The index's store before the flag's load (the device orders
            // them the other way round): a device that asked for a notify
            // after we looked is one that also looks again itself.
            core::sync::atomic::fence(Ordering::SeqCst);
            if used_flags(RX) & USED_F_NO_NOTIFY == 0 {
                notify(RX as u32);
            }
        }
        n
    }
}

/// A name-service announcement (struct rpmsg_ns_msg: name[32], addr, flags).
pub fn ns_message(name: &str, addr: u32) -> [u8; 40] {
    let mut m = [0u8; 40];
    let n = name.len().min(31);
    m[..n].copy_from_slice(&name.as_bytes()[..n]);
    m[32..36].copy_from_slice(&addr.to_le_bytes());
    m
}

/// Reads an announcement back: (name, addr).
pub fn parse_ns(p: &[u8]) -> Option<(&str, u32)> {
    let name = core::str::from_utf8(p.get(..32)?)
        .ok()?
        .trim_end_matches('\0');
    Some((name, u32::from_le_bytes(p.get(32..36)?.try_into().ok()?)))
}
