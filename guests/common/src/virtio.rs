//! A virtio-mmio rpmsg device, driver side: one device, two queues of 16
//! buffers of 512 bytes in the guest's own memory.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

pub const Q: u16 = 16;
pub const BUF: usize = 512;
pub const HDR: usize = 16;
pub const NS_ADDR: u32 = 53;
const RX: usize = 0;
const TX: usize = 1;
pub const STATUS_NEEDS_RESET: u32 = 64;

#[repr(C, align(4096))]
struct Ring {
    desc: [[u8; 16]; Q as usize],
    avail: [u16; 3 + Q as usize],
    _pad: [u16; 5],
    used: [u32; 2 + 2 * Q as usize],
}

#[repr(C, align(4096))]
struct Buffers([[u8; BUF]; Q as usize]);

static mut RINGS: [Ring; 2] = [const {
    Ring {
        desc: [[0; 16]; Q as usize],
        avail: [0; 3 + Q as usize],
        _pad: [0; 5],
        used: [0; 2 + 2 * Q as usize],
    }
}; 2];
static mut RXB: Buffers = Buffers([[0; BUF]; Q as usize]);
static mut TXB: Buffers = Buffers([[0; BUF]; Q as usize]);
static BASE: AtomicU64 = AtomicU64::new(0);

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
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
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
    unsafe {
        write_volatile(addr_of_mut!((*ring(q)).avail[2 + (idx % Q) as usize]), id);
        write_volatile(addr_of_mut!((*ring(q)).avail[1]), idx.wrapping_add(1));
    }
}

fn used_idx(q: usize) -> u16 {
    // SAFETY: our own ring, written by the device.
    (unsafe { read_volatile(addr_of!((*ring(q)).used[0])) } >> 16) as u16
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

pub fn notify(q: u32) {
    set(0x50, q);
}

pub fn status() -> u32 {
    reg(0x70)
}

/// Resets the device: from here on the device touches none of our
/// buffers.
pub fn reset() {
    set(0x70, 0);
}

/// Acknowledges the device's interrupt.
pub fn ack_interrupt() {
    set(0x64, reg(0x60));
}

/// The device at `base`: VERSION_1 and NS negotiated, both queues set up,
/// every receive buffer posted, DRIVER_OK. Err says what went wrong.
pub fn init(base: u64) -> Result<(), &'static str> {
    BASE.store(base, Ordering::Relaxed);
    if reg(0) != 0x7472_6976 || reg(4) != 2 || reg(8) != 7 {
        return Err("not a virtio rpmsg device");
    }
    set(0x70, 0);
    set(0x70, 1);
    set(0x70, 3);
    set(0x24, 0);
    set(0x20, reg(0x10) & 1); // VIRTIO_RPMSG_F_NS, if offered
    set(0x24, 1);
    set(0x20, 1); // VIRTIO_F_VERSION_1
    set(0x70, 11);
    if reg(0x70) & 8 == 0 {
        return Err("features refused");
    }
    for q in 0..2 {
        let r = ring(q) as u64;
        set(0x30, q as u32);
        set(0x38, u32::from(Q));
        for (off, a) in [
            (0x80, r),
            (0x90, r + 16 * u64::from(Q)),
            (0xa0, r + 16 * u64::from(Q) + 48),
        ] {
            set(off, a as u32);
            set(off + 4, (a >> 32) as u32);
        }
        set(0x44, 1);
    }
    for i in 0..Q {
        // SAFETY: our receive buffers, handed to the device.
        let a = unsafe { addr_of!(RXB.0[i as usize]) } as u64;
        put_desc(RX, i, a, BUF as u32, 2);
        offer(RX, i);
    }
    // Sent buffers are reclaimed by looking at the used ring when sending,
    // so no interrupt is wanted for them (Linux's virtio_rpmsg_bus does the
    // same): VRING_AVAIL_F_NO_INTERRUPT.
    // SAFETY: our own ring, before the device is live.
    unsafe { write_volatile(addr_of_mut!((*ring(TX)).avail[0]), 1) };
    set(0x70, 15);
    notify(RX as u32);
    Ok(())
}

pub fn features() -> u32 {
    reg(0x10)
}

/// Transmit side: buffers go out in order and come back in order.
pub struct Sender {
    sent: u16,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    pub const fn new() -> Self {
        Sender { sent: 0 }
    }

    /// A transmit buffer is free.
    pub fn can_send(&self) -> bool {
        self.sent.wrapping_sub(used_idx(TX)) < Q
    }

    /// All sent buffers came back.
    pub fn drained(&self) -> bool {
        self.sent == used_idx(TX)
    }

    /// Queues one message; false if no buffer is free.
    pub fn send(&mut self, src: u32, dst: u32, payload: &[u8]) -> bool {
        if !self.can_send() || payload.len() > BUF - HDR {
            return false;
        }
        let slot = self.sent % Q;
        // SAFETY: a transmit buffer the device has returned.
        let b = unsafe { &mut *addr_of_mut!(TXB.0[slot as usize]) };
        b[0..4].copy_from_slice(&src.to_le_bytes());
        b[4..8].copy_from_slice(&dst.to_le_bytes());
        b[8..12].fill(0);
        b[12..14].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        b[14..16].fill(0);
        b[HDR..HDR + payload.len()].copy_from_slice(payload);
        put_desc(TX, slot, b.as_ptr() as u64, (HDR + payload.len()) as u32, 0);
        offer(TX, slot);
        self.sent = self.sent.wrapping_add(1);
        notify(TX as u32);
        true
    }
}

/// Receive side.
pub struct Receiver {
    seen: u16,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub const fn new() -> Self {
        Receiver { seen: 0 }
    }

    /// Hands each received message (src, dst, payload, buffer length) to
    /// `f` and posts its buffer again; returns how many there were.
    pub fn poll(&mut self, mut f: impl FnMut(u32, u32, &[u8], u32)) -> u32 {
        let mut n = 0;
        while self.seen != used_idx(RX) {
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
            notify(RX as u32);
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
