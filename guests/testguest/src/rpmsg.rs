//! A small virtio-mmio rpmsg driver (one device, polled, with its
//! interrupt counted): the other end of the hypervisor's rpmsg bridge.
//!
//! `rpmsg=N` sends N numbered messages of varying size (up to 496 bytes)
//! and checks that N arrive from the peer in order and intact; `,slow`
//! makes this side a slow receiver; `rpmsg-bad` corrupts its queue.

use crate::{gic, println};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const Q: u16 = 16;
const BUF: usize = 512;
const HDR: usize = 16;
const ADDR: u32 = 1024;
const NS_ADDR: u32 = 53;

#[repr(C, align(4096))]
struct Ring {
    desc: [[u8; 16]; Q as usize],
    avail: [u16; 3 + Q as usize],
    _pad: [u16; 5],
    used: [u32; 1 + 2 * Q as usize + 1],
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
static mut RX: Buffers = Buffers([[0; BUF]; Q as usize]);
static mut TX: Buffers = Buffers([[0; BUF]; Q as usize]);
static BASE: AtomicU64 = AtomicU64::new(0);
pub static SPI: AtomicU32 = AtomicU32::new(0);
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

fn reg(off: u64) -> u32 {
    // SAFETY: the virtio-mmio window named by our device tree.
    unsafe { read_volatile((BASE.load(Ordering::Relaxed) + off) as *const u32) }
}

fn set(off: u64, v: u32) {
    // SAFETY: as above.
    unsafe { write_volatile((BASE.load(Ordering::Relaxed) + off) as *mut u32, v) }
}

fn ring(q: usize) -> *mut Ring {
    // SAFETY: only vCPU 0 drives the device; the pointer is not aliased by a reference.
    unsafe { addr_of_mut!(RINGS[q]) }
}

fn put_desc(q: usize, i: u16, addr: u64, len: u32, flags: u16) {
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

fn offer(q: usize, id: u16) {
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

/// Finds the device, negotiates VERSION_1 and NS, sets up both queues and
/// posts every receive buffer.
pub fn init(fdt: &fdt::Fdt<'_>) -> bool {
    let Some(n) = fdt.find_compatible(&["virtio,mmio"]) else {
        println!("rpmsg: no virtio-mmio device");
        return false;
    };
    let base = n
        .reg()
        .and_then(|mut r| r.next())
        .map_or(0, |r| r.starting_address as u64);
    BASE.store(base, Ordering::Relaxed);
    let cells = n.property("interrupts").map(|p| p.value).unwrap_or(&[]);
    let spi = cells
        .get(4..8)
        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        + 32;
    SPI.store(spi, Ordering::Relaxed);
    if reg(0) != 0x7472_6976 || reg(4) != 2 || reg(8) != 7 {
        println!("rpmsg: not a virtio rpmsg device at {base:#x}");
        return false;
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
        println!("rpmsg: features refused");
        return false;
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
        let a = unsafe { addr_of!(RX.0[i as usize]) } as u64;
        put_desc(0, i, a, BUF as u32, 2);
        offer(0, i);
    }
    set(0x70, 15);
    set(0x50, 0);
    gic::init_distributor();
    gic::init_cpu(0);
    gic::enable(spi, 0);
    // SAFETY: IRQs on; the handler counts and acknowledges.
    unsafe { core::arch::asm!("msr daifclr, #2") };
    println!(
        "rpmsg: device at {base:#x}, irq {}, features {:#x}",
        spi - 32,
        reg(0x10)
    );
    true
}

pub fn on_irq() {
    set(0x64, reg(0x60));
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

struct Tx {
    sent: u16,
}

impl Tx {
    /// Queues one message; waits while all transmit buffers are in flight.
    fn send(&mut self, dst: u32, payload: &[u8]) -> bool {
        let mut spins = 0u64;
        while self.sent.wrapping_sub(used_idx(1)) >= Q {
            spins += 1;
            if spins > 200_000_000 || reg(0x70) & 64 != 0 {
                return false;
            }
        }
        let slot = self.sent % Q;
        // SAFETY: a transmit buffer the device has returned.
        let b = unsafe { &mut *addr_of_mut!(TX.0[slot as usize]) };
        b[0..4].copy_from_slice(&ADDR.to_le_bytes());
        b[4..8].copy_from_slice(&dst.to_le_bytes());
        b[8..12].fill(0);
        b[12..14].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        b[14..16].fill(0);
        b[HDR..HDR + payload.len()].copy_from_slice(payload);
        put_desc(1, slot, b.as_ptr() as u64, (HDR + payload.len()) as u32, 0);
        offer(1, slot);
        self.sent = self.sent.wrapping_add(1);
        set(0x50, 1);
        true
    }
}

fn message(seq: u32, out: &mut [u8; BUF - HDR]) -> usize {
    let len = 8 + (seq as usize * 37) % (BUF - HDR - 8);
    out[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in out[4..len].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    len
}

/// The exchange: announce, then N messages each way.
pub fn exchange(n: u32, slow: bool) {
    let mut tx = Tx { sent: 0 };
    let mut ns = [0u8; 40];
    ns[..9].copy_from_slice(b"rpmsg-raw");
    ns[32..36].copy_from_slice(&ADDR.to_le_bytes());
    if !tx.send(NS_ADDR, &ns) {
        println!("rpmsg: could not announce");
        return;
    }
    let (mut sent, mut received, mut seen) = (0u32, 0u32, 0u16);
    let mut bad = 0u32;
    let mut msg = [0u8; BUF - HDR];
    let mut idle = 0u64;
    while sent < n || received < n {
        let mut progress = false;
        if sent < n && tx.sent.wrapping_sub(used_idx(1)) < Q {
            let len = message(sent, &mut msg);
            if !tx.send(ADDR, &msg[..len]) {
                break;
            }
            sent += 1;
            progress = true;
        }
        let mut reposted = false;
        while seen != used_idx(0) {
            let (id, len) = used_entry(0, seen);
            seen = seen.wrapping_add(1);
            // SAFETY: a receive buffer the device filled and returned.
            let b = unsafe { &*addr_of!(RX.0[(id as usize) % Q as usize]) };
            let dst = u32::from_le_bytes(b[4..8].try_into().unwrap_or_default());
            let plen = u16::from_le_bytes([b[12], b[13]]) as usize;
            if dst == NS_ADDR {
                let name = core::str::from_utf8(&b[HDR..HDR + 32])
                    .unwrap_or("?")
                    .trim_end_matches('\0');
                let at = u32::from_le_bytes(b[HDR + 32..HDR + 36].try_into().unwrap_or_default());
                println!("rpmsg: peer announced {name} at {at}");
            } else {
                let len_ok = len as usize == HDR + plen && plen == message(received, &mut msg);
                if !len_ok || b[HDR..HDR + plen] != msg[..plen] {
                    bad += 1;
                }
                received += 1;
                if slow {
                    for _ in 0..3000 {
                        core::hint::spin_loop();
                    }
                }
            }
            offer(0, id as u16);
            reposted = true;
            progress = true;
        }
        if reposted {
            set(0x50, 0);
        }
        idle = if progress { 0 } else { idle + 1 };
        if idle > 50_000_000 || reg(0x70) & 64 != 0 {
            println!(
                "rpmsg: stuck after sending {sent} and receiving {received} (status {:#x})",
                reg(0x70)
            );
            return;
        }
    }
    // Let the peer's last acknowledgements arrive before powering off.
    while tx.sent != used_idx(1) && reg(0x70) & 64 == 0 {
        core::hint::spin_loop();
    }
    println!(
        "rpmsg: sent {sent}, received {received}, {bad} bad, interrupts {}",
        if INTERRUPTS.load(Ordering::Relaxed) > 0 {
            "yes"
        } else {
            "none"
        }
    );
}

/// Offers a transmit buffer outside its memory: the device must refuse it.
pub fn corrupt() {
    put_desc(1, 0, 0x1000, 64, 0);
    offer(1, 0);
    set(0x50, 1);
    println!(
        "rpmsg: after a bad descriptor the device status is {:#x}",
        reg(0x70)
    );
}
