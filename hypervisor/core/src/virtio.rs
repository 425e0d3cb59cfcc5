//! virtio-mmio (virtio 1.2, 4.2.2) with split virtqueues (2.7), device
//! side, in version 2 or, where a link side asks for it, the legacy
//! version 1 (4.2.4: GuestPageSize, QueuePFN and one block for the three
//! rings). Every address and length the driver gives is an allegation:
//! rings are checked against the domain's memory through [`GuestMemory`]
//! when their queue is made ready (and reached only at a [`RingAddr`]
//! inside them afterwards), buffers each time their descriptor is read
//! (and reached only as a [`Segment`] afterwards), in both versions alike;
//! descriptor walks are bounded by the queue size, and a malformed queue
//! yields a [`Fault`] that the caller turns into DEVICE_NEEDS_RESET for
//! that device alone.

/// The driver's memory, as the device may reach it.
pub trait GuestMemory {
    /// Whether all of `len` bytes at `addr` lie in the domain's memory.
    fn check(&self, addr: u64, len: u64) -> Result<(), Fault>;

    // Buffers, as `Segment`s: found inside the domain's memory when their
    // descriptor was read (`Queue::segment`), and not checked again.

    /// The first bytes of `s` into `buf`, as many as both hold.
    fn read(&self, s: Segment, buf: &mut [u8]);

    /// The first 16 bytes of `s` (an rpmsg header) as two little-endian
    /// doublewords; zeroes past its end.
    fn read_pair(&self, s: Segment) -> [u64; 2] {
        let mut b = [0; 16];
        self.read(s, &mut b);
        pair_from_le(&b)
    }

    // The rings' fields, at addresses only a ready queue makes (see
    // `RingAddr`): checked once, when the queue was made ready, not at
    // every access. Each is one access of its size, as the driver makes
    // its own: bytes one by one could take halves of two values (a receive
    // index going 255, 256, 257 read as 1 failed a link in a soak).

    /// A ring's index or flags.
    fn ring_u16(&self, a: RingAddr) -> u16;
    /// Stores a ring's index or flags.
    fn set_ring_u16(&mut self, a: RingAddr, v: u16);
    /// A descriptor, as two little-endian doublewords.
    fn descriptor(&self, a: RingAddr) -> [u64; 2];
    /// Stores a used-ring entry: a chain's head and the bytes written to
    /// it.
    fn set_used(&mut self, a: RingAddr, id: u32, len: u32);

    /// Copies segment `from` of `src` to the start of `to` in this
    /// memory, as many bytes as both hold, with no copy in between.
    fn copy_from(&mut self, to: Segment, src: &Self, from: Segment)
    where
        Self: Sized;
}

/// The address of a field of a ready queue's rings: an index or flags (2
/// bytes, 2-aligned), an available entry (2 bytes), a descriptor (16,
/// 16-aligned) or a used entry (8, 4-aligned). Only a ready [`Queue`]
/// makes one, inside the rings `Queue::validate` found in its domain's
/// memory and aligned, which cannot move or grow until the queue is
/// stopped: a [`GuestMemory`] may access it without checking it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAddr(u64);

impl RingAddr {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What a driver did wrong, for the log line and the reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An access outside the domain's memory.
    OutsideMemory { addr: u64, len: u64 },
    /// A ring address is misaligned for its part (2.7.2).
    Misaligned { addr: u64 },
    /// The queue size is zero or larger than the device offers.
    BadQueueSize(u32),
    /// A legacy GuestPageSize that is not a power of two.
    BadPageSize(u32),
    /// A legacy QueueAlign that is not a power of two.
    BadQueueAlign(u32),
    /// A descriptor index at or beyond the queue size.
    DescriptorIndex(u16),
    /// More descriptors in a chain than the queue has (a loop).
    ChainTooLong,
    /// Indirect descriptors were not negotiated.
    Indirect,
    /// A used ring written before its queue was made ready (never by
    /// the pump, which returns only what `peek` found).
    NotReady,
    /// The driver published more available entries than the queue holds.
    AvailOverrun { idx: u16, last: u16 },
    /// A buffer of the wrong direction (device-readable where the device
    /// must write, or the reverse).
    Direction,
    /// A message that does not fit the buffer that carries it (its
    /// header claims more than the sender's buffer holds, or the chain
    /// changed under the device).
    BadLength { len: u32, room: u32 },
    /// A message longer than the link's buffer size: the sender's fault.
    TooLong { len: u32, max: u32 },
    /// A receive buffer smaller than the link's buffer size: the
    /// receiver's fault, whatever the message it was meant for.
    SmallBuffer { room: u32, need: u32 },
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Fault::OutsideMemory { addr, len } => {
                write!(f, "buffer {addr:#x}+{len:#x} is outside its memory")
            }
            Fault::Misaligned { addr } => write!(f, "ring address {addr:#x} is misaligned"),
            Fault::BadQueueSize(n) => {
                write!(f, "queue size {n} is not a power of two up to {QUEUE_MAX}")
            }
            Fault::BadPageSize(n) => write!(f, "guest page size {n:#x} is not a power of two"),
            Fault::BadQueueAlign(n) => write!(f, "queue alignment {n:#x} is not a power of two"),
            Fault::DescriptorIndex(i) => write!(f, "descriptor index {i} is beyond the queue"),
            Fault::ChainTooLong => write!(f, "descriptor chain longer than the queue (a loop)"),
            Fault::Indirect => write!(f, "indirect descriptor, which was not negotiated"),
            Fault::NotReady => write!(f, "queue used before it was made ready"),
            Fault::AvailOverrun { idx, last } => write!(
                f,
                "available index {idx} runs more than a queue ahead of {last}"
            ),
            Fault::Direction => write!(f, "buffer of the wrong direction"),
            Fault::BadLength { len, room } => {
                write!(f, "message of {len} bytes in a buffer of {room}")
            }
            Fault::TooLong { len, max } => {
                write!(f, "message of {len} bytes, longer than the link's {max}")
            }
            Fault::SmallBuffer { room, need } => write!(
                f,
                "receive buffer of {room} bytes, smaller than the link's {need}"
            ),
        }
    }
}

/// 16 bytes as two little-endian doublewords, as `GuestMemory::read_pair`
/// gives them.
pub fn pair_from_le(b: &[u8; 16]) -> [u64; 2] {
    let (lo, hi) = b.split_at(8);
    [lo, hi].map(|h| u64::from_le_bytes(h.try_into().unwrap_or_default()))
}

pub const QUEUE_MAX: u16 = 256;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// One descriptor's buffer, `len` bytes at `addr`. Only a queue makes
/// one (`Queue::segment`), after checking that it lies in its domain's
/// memory, whose ranges never change: a [`GuestMemory`] reads and writes
/// it, or any part of it, without checking it again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    addr: u64,
    len: u32,
}

impl Segment {
    pub fn addr(self) -> u64 {
        self.addr
    }

    pub fn len(self) -> u32 {
        self.len
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// Its first `len` bytes, or all of it if it is shorter.
    #[inline(always)]
    pub fn prefix(self, len: u32) -> Segment {
        Segment {
            addr: self.addr,
            len: len.min(self.len),
        }
    }

    /// Its `len` bytes from `off`, or as many as it has there.
    #[inline(always)]
    pub fn part(self, off: u32, len: u32) -> Segment {
        let off = off.min(self.len);
        Segment {
            addr: self.addr + u64::from(off),
            len: len.min(self.len - off),
        }
    }
}

/// A descriptor chain, walked and checked whole when it is taken, but
/// kept small: its first buffer (which carries rpmsg's header, and is the
/// whole chain for rpmsg as Linux and OpenAMP send it), where the rest
/// continues, how many descriptors and how many bytes. The copy reads the
/// rest again as it reaches it (see [`Queue::segment`]), so a chain may be
/// as long as the queue without an array of that size built per message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub first: Segment,
    /// The descriptor after the first (when `n` > 1).
    pub next: u16,
    /// Descriptors in the chain, 1 to the queue size.
    pub n: u16,
    /// Bytes over all of them.
    pub len: u32,
}

/// A split virtqueue as the driver configured it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    // Private: while the queue is live, the rings these place were
    // checked in the domain's memory (`validate`), which the ring
    // accessors rely on.
    size: u16,
    /// The size while the queue is ready, 0 while it is not: what every
    /// ring index is checked against (and the one check of readiness).
    live: u16,
    desc: u64,
    avail: u64,
    used: u64,
    last_avail: u16,
    used_idx: u16,
    /// VRING_USED_F_NO_NOTIFY as last written to the used ring.
    no_notify: bool,
}

impl Queue {
    /// Whether the driver made the queue ready (and its rings passed).
    pub fn ready(&self) -> bool {
        self.live != 0
    }

    /// Checks the configuration when the driver makes the queue ready
    /// (QueueReady, or a legacy QueuePFN): size (a power of two, 2.7; as
    /// Linux's and OpenAMP's drivers make it), ring alignment (2.7: 16,
    /// 2, 4) and every ring inside the domain's memory.
    pub fn validate(&self, m: &impl GuestMemory) -> Result<(), Fault> {
        let n = u64::from(self.size);
        if !self.size.is_power_of_two() || self.size > QUEUE_MAX {
            return Err(Fault::BadQueueSize(u32::from(self.size)));
        }
        for (addr, align, len) in [
            (self.desc, 16, 16 * n),
            (self.avail, 2, 6 + 2 * n),
            (self.used, 4, 6 + 8 * n),
        ] {
            if addr % align != 0 {
                return Err(Fault::Misaligned { addr });
            }
            m.check(addr, len)?;
        }
        Ok(())
    }

    /// Buffers the driver made available that the device has not taken
    /// (0 while the queue is not ready; an index past the queue's size is
    /// the next `peek`'s fault).
    #[inline(always)]
    pub fn available(&self, m: &impl GuestMemory) -> u16 {
        match self.live {
            0 => 0,
            _ => m
                .ring_u16(RingAddr(self.avail + 2))
                .wrapping_sub(self.last_avail),
        }
    }

    /// Buffers the driver holds: its queue's size, less those it made
    /// available and the device has not taken. A receiver that posts all
    /// its buffers (as Linux's and OpenAMP's do) holds the messages it has
    /// not yet read.
    #[inline(always)]
    pub fn held_by_driver(&self, m: &impl GuestMemory) -> u16 {
        self.live.saturating_sub(self.available(m))
    }

    /// The head of the next available chain, without taking it.
    #[inline(always)]
    pub fn peek(&self, m: &impl GuestMemory) -> Result<Option<u16>, Fault> {
        if self.live == 0 {
            return Ok(None);
        }
        let idx = m.ring_u16(RingAddr(self.avail + 2));
        if idx == self.last_avail {
            return Ok(None);
        }
        if idx.wrapping_sub(self.last_avail) > self.live {
            return Err(Fault::AvailOverrun {
                idx,
                last: self.last_avail,
            });
        }
        // The entry and its descriptors are read after the index that
        // published them.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        // `live` is a power of two (`validate`): no division.
        let slot = self.avail + 4 + 2 * u64::from(self.last_avail & (self.live - 1));
        let head = m.ring_u16(RingAddr(slot));
        if head >= self.live {
            return Err(Fault::DescriptorIndex(head));
        }
        Ok(Some(head))
    }

    /// Descriptor `i`, checked: inside the queue, not indirect, of the
    /// direction `device_writes`, its buffer inside the domain's memory.
    /// Returns its buffer and the index of the next one, if it chains.
    #[inline(always)]
    pub fn segment(
        &self,
        m: &impl GuestMemory,
        i: u16,
        device_writes: bool,
    ) -> Result<(Segment, Option<u16>), Fault> {
        // Beyond every index while the queue is not ready.
        if i >= self.live {
            return Err(Fault::DescriptorIndex(i));
        }
        // addr (8 bytes), len (4), flags (2), next (2).
        let [addr, d] = m.descriptor(RingAddr(self.desc + 16 * u64::from(i)));
        let (len, flags, next) = (d as u32, (d >> 32) as u16, (d >> 48) as u16);
        if flags & DESC_F_INDIRECT != 0 {
            return Err(Fault::Indirect);
        }
        if (flags & DESC_F_WRITE != 0) != device_writes {
            return Err(Fault::Direction);
        }
        m.check(addr, len.into())?;
        Ok((
            Segment { addr, len },
            (flags & DESC_F_NEXT != 0).then_some(next),
        ))
    }

    /// Walks the chain at `head`, checking every descriptor (each of the
    /// direction `device_writes`). A chain may hold up to the queue size
    /// descriptors; one that goes on longer revisits one of them: a loop.
    #[inline(always)]
    pub fn chain(
        &self,
        m: &impl GuestMemory,
        head: u16,
        device_writes: bool,
    ) -> Result<Chain, Fault> {
        let (first, next) = self.segment(m, head, device_writes)?;
        let (n, len) = match next {
            None => (1, first.len),
            Some(i) => self.chain_rest(m, i, first.len, device_writes)?,
        };
        Ok(Chain {
            head,
            first,
            next: next.unwrap_or(0),
            n,
            len,
        })
    }

    /// The rest of `chain` after a first descriptor of `len` bytes that
    /// chains to `i`: the chain's descriptors and bytes in all. Out of
    /// line, as Linux and OpenAMP send and post one buffer each.
    #[inline(never)]
    fn chain_rest(
        &self,
        m: &impl GuestMemory,
        i: u16,
        mut len: u32,
        device_writes: bool,
    ) -> Result<(u16, u32), Fault> {
        let (mut n, mut next) = (1, Some(i));
        while let Some(i) = next {
            if n == self.live {
                return Err(Fault::ChainTooLong);
            }
            let (s, after) = self.segment(m, i, device_writes)?;
            len = len.checked_add(s.len).ok_or(Fault::BadLength {
                len: u32::MAX,
                room: len,
            })?;
            n += 1;
            next = after;
        }
        Ok((n, len))
    }

    /// Takes the chain `peek` returned.
    pub fn advance(&mut self) {
        self.last_avail = self.last_avail.wrapping_add(1);
    }

    /// Returns chain `head` to the driver, `len` bytes written.
    #[inline(always)]
    pub fn push_used(
        &mut self,
        m: &mut impl GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<(), Fault> {
        if self.live == 0 {
            return Err(Fault::NotReady);
        }
        // A power of two (`validate`): no division.
        let at = self.used_idx & (self.live - 1);
        let slot = self.used + 4 + 8 * u64::from(at);
        m.set_used(RingAddr(slot), u32::from(head), len);
        self.used_idx = self.used_idx.wrapping_add(1);
        // The buffer's bytes and the entry are seen before the index that
        // publishes them, by a driver on another CPU too.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        m.set_ring_u16(RingAddr(self.used + 2), self.used_idx);
        Ok(())
    }

    /// Tells the driver whether to notify when it adds buffers
    /// (VRING_USED_F_NO_NOTIFY clear or set, 2.7.10), writing the used
    /// ring's flags only when that changes. A driver that zeroes its
    /// rings again only notifies more than it needs to.
    #[inline(always)]
    pub fn want_notify(&mut self, m: &mut impl GuestMemory, want: bool) {
        if self.no_notify == want {
            self.set_notify(m, want);
        }
    }

    /// The same, written whatever was written before: a ring a driver
    /// reuses without zeroing may still hold an old NO_NOTIFY. Nothing to
    /// write for a queue that is not ready.
    pub fn set_notify(&mut self, m: &mut impl GuestMemory, want: bool) {
        if self.live == 0 {
            return;
        }
        let flags = if want { 0 } else { USED_F_NO_NOTIFY };
        m.set_ring_u16(RingAddr(self.used), flags);
        self.no_notify = !want;
    }

    /// Whether the driver wants an interrupt for used buffers (none
    /// before its queue is ready).
    #[inline(always)]
    pub fn wants_interrupt(&self, m: &impl GuestMemory) -> bool {
        self.live != 0 && m.ring_u16(RingAddr(self.avail)) & AVAIL_F_NO_INTERRUPT == 0
    }
}

/// Where a legacy queue's rings lie (4.2.4 and 2.7.2's legacy layout):
/// the descriptor table at page `pfn` of `page_size` bytes, the available
/// ring right after it, the used ring at the next multiple of `align`.
pub fn legacy_rings(pfn: u32, page_size: u32, align: u32, size: u16) -> Result<[u64; 3], Fault> {
    if !page_size.is_power_of_two() {
        return Err(Fault::BadPageSize(page_size));
    }
    // At most (2^32 - 1)^2: no overflow.
    vring_at(u64::from(pfn) * u64::from(page_size), align, size)
}

/// The rings of a queue in the legacy layout whose descriptor table is at
/// `desc` (Linux's `vring_init`, as remoteproc lays out its vrings).
pub fn vring_at(desc: u64, align: u32, size: u16) -> Result<[u64; 3], Fault> {
    if !align.is_power_of_two() {
        return Err(Fault::BadQueueAlign(align));
    }
    let n = u64::from(size);
    let outside = Fault::OutsideMemory {
        addr: desc,
        len: 16 * n,
    };
    let avail = desc.checked_add(16 * n).ok_or(outside)?;
    let used = (avail.checked_add(6 + 2 * n))
        .and_then(|a| a.checked_next_multiple_of(u64::from(align)))
        .ok_or(outside)?;
    Ok([desc, avail, used])
}

/// Device status bits (2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

pub const F_VERSION_1: u64 = 1 << 32;
const MAGIC: u32 = 0x7472_6976; // "virt"
const INT_USED: u32 = 1;
const INT_CONFIG: u32 = 2;

/// What a register write asks of the device model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// QueueNotify for this queue.
    Notify(u16),
    /// Status 0: the device was reset.
    Reset,
    /// The driver set DRIVER_OK: the device is live.
    DriverOk,
    /// This queue became ready (QueueReady, or a legacy QueuePFN), its
    /// rings checked.
    QueueReady(u16),
    /// A write that the state machine refused, for the log.
    Refused,
    /// A queue made ready whose rings are invalid.
    Invalid(Fault),
}

/// Every register offset `VirtioMmio::read` may answer with a value other
/// than zero, in either version.
pub const REGISTERS: [u64; 19] = [
    0x000, 0x004, 0x008, 0x00c, 0x010, 0x034, 0x038, 0x03c, 0x040, 0x044, 0x060, 0x070, 0x080,
    0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0fc,
];

/// InterruptStatus, the one register a driver reads for every interrupt.
pub const INTERRUPT_STATUS: u64 = 0x060;
/// InterruptACK.
pub const INTERRUPT_ACK: u64 = 0x064;
/// QueueNotify.
pub const QUEUE_NOTIFY: u64 = 0x050;

/// The legacy transport's per-queue registers.
#[derive(Clone, Copy, Debug, Default)]
struct LegacyQueue {
    align: u32,
    pfn: u32,
}

/// The transport registers of one virtio-mmio device with two queues.
#[derive(Clone, Debug)]
pub struct VirtioMmio {
    /// 2, or 1 for the legacy interface.
    version: u32,
    device_id: u32,
    features: u64,
    features_sel: u32,
    driver_features: u64,
    driver_sel: u32,
    pub status: u32,
    queue_sel: u32,
    pub queues: [Queue; 2],
    pub interrupt_status: u32,
    config_generation: u32,
    /// Legacy only: GuestPageSize, and each queue's QueueAlign and PFN.
    page_size: u32,
    legacy: [LegacyQueue; 2],
}

/// Whether the driver may move from status `from` to `to` (3.1.1): one
/// step at a time, in order, and never back except by reset (0).
fn legal(from: u32, to: u32) -> bool {
    use status::*;
    let steps = [
        ACKNOWLEDGE,
        ACKNOWLEDGE | DRIVER,
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    ];
    let from = from & !NEEDS_RESET;
    to & FAILED != 0
        || to == from
        || steps
            .iter()
            .zip(core::iter::once(&0).chain(steps.iter()))
            .any(|(&next, &prev)| prev == from && next == to)
}

/// The same for a legacy driver, which has no FEATURES_OK (3.1.2) and
/// whose status is a value it writes rather than steps it takes:
/// OpenAMP's driver writes ACKNOWLEDGE, then DRIVER_OK alone. Only the
/// driver's own bits, and DRIVER_OK kept once set (or FAILED), until a
/// reset.
fn legal_legacy(from: u32, to: u32) -> bool {
    use status::*;
    to & !(ACKNOWLEDGE | DRIVER | DRIVER_OK | FAILED) == 0
        && (from & DRIVER_OK == 0 || to & (DRIVER_OK | FAILED) != 0)
}

impl VirtioMmio {
    /// A version 2 device.
    pub fn new(device_id: u32, features: u64) -> Self {
        Self::with_version(device_id, features, 2)
    }

    /// A device of version 2, or 1 (legacy) when `version` is 1. A legacy
    /// device offers no VIRTIO_F_VERSION_1.
    pub fn with_version(device_id: u32, features: u64, version: u32) -> Self {
        let legacy = version == 1;
        VirtioMmio {
            version: if legacy { 1 } else { 2 },
            device_id,
            features: if legacy {
                features & !F_VERSION_1
            } else {
                features | F_VERSION_1
            },
            features_sel: 0,
            driver_features: 0,
            driver_sel: 0,
            status: 0,
            queue_sel: 0,
            queues: [Queue::default(); 2],
            interrupt_status: 0,
            config_generation: 0,
            page_size: 0,
            legacy: [LegacyQueue::default(); 2],
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    fn legacy(&self) -> bool {
        self.version == 1
    }

    pub fn driver_ok(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & (status::NEEDS_RESET | status::FAILED) == 0
    }

    pub fn negotiated(&self) -> u64 {
        self.driver_features
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Puts the device in DEVICE_NEEDS_RESET and signals a configuration
    /// change, as 2.1.2 asks after an error the driver must handle.
    pub fn fail(&mut self) {
        self.status |= status::NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG;
        for q in &mut self.queues {
            q.live = 0;
        }
    }

    /// Signals a change of the device-specific configuration (2.1.2,
    /// 4.2.2.1: the interrupt status bit and a new generation).
    pub fn config_changed(&mut self) {
        self.interrupt_status |= INT_CONFIG;
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    /// Back to the state after power-on, as a driver's reset (status 0)
    /// leaves it; the version stays and the configuration generation
    /// moves on.
    pub fn reset(&mut self) {
        let generation = self.config_generation.wrapping_add(1);
        *self = VirtioMmio::with_version(self.device_id, self.features, self.version);
        self.config_generation = generation;
    }

    /// Makes this a remoteproc's virtio device (Linux's remoteproc_virtio
    /// transport): no registers, the driver's two vrings at `rings` in
    /// the legacy layout, `size` descriptors each. The device is live at
    /// once with every feature it offers, as there is nothing to
    /// negotiate through (virtio_rpmsg_bus accepts VIRTIO_RPMSG_F_NS, the
    /// only one). On a fault the device stays reset.
    pub fn attach(
        &mut self,
        rings: [u64; 2],
        size: u16,
        align: u32,
        m: &impl GuestMemory,
    ) -> Result<(), Fault> {
        self.reset();
        let mut queues = [Queue::default(); 2];
        for (q, &desc) in queues.iter_mut().zip(&rings) {
            let [d, a, u] = vring_at(desc, align, size)?;
            *q = Queue {
                size,
                live: size,
                desc: d,
                avail: a,
                used: u,
                ..Queue::default()
            };
            q.validate(m)?;
        }
        self.queues = queues;
        self.driver_features = self.features & !F_VERSION_1;
        use status::*;
        self.status = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
        Ok(())
    }

    /// An InterruptACK write: the interrupt causes `v` names are handled.
    pub fn acknowledge(&mut self, v: u32) {
        self.interrupt_status &= !v;
    }

    /// Notes used buffers for the interrupt status; whether that changed
    /// it (a driver that takes no interrupt for them never clears it).
    pub fn signal_used(&mut self) -> bool {
        let was = self.interrupt_status;
        self.interrupt_status |= INT_USED;
        self.interrupt_status != was
    }

    /// A register's value as the driver reads it: zero at every offset
    /// outside [`REGISTERS`].
    pub fn read(&self, off: u64) -> u32 {
        let sel = self.queue_sel as usize;
        let q = self.queues.get(sel);
        let legacy = || self.legacy().then(|| self.legacy.get(sel)).flatten();
        match off {
            0x000 => MAGIC,
            0x004 => self.version,
            0x008 => self.device_id,
            0x00c => 0x554d_4551, // vendor "QEMU", as Linux's tools expect none in particular
            0x010 => match self.features_sel {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
                _ => 0,
            },
            0x034 => q.map_or(0, |_| u32::from(QUEUE_MAX)),
            0x038 => q.map_or(0, |q| u32::from(q.size)),
            0x03c => legacy().map_or(0, |l| l.align),
            0x040 => legacy().map_or(0, |l| l.pfn),
            INTERRUPT_STATUS => self.interrupt_status,
            0x070 => self.status,
            // What follows is version 2's alone.
            _ if self.legacy() => 0,
            0x044 => q.map_or(0, |q| u32::from(q.ready())),
            0x080 => q.map_or(0, |q| q.desc as u32),
            0x084 => q.map_or(0, |q| (q.desc >> 32) as u32),
            0x090 => q.map_or(0, |q| q.avail as u32),
            0x094 => q.map_or(0, |q| (q.avail >> 32) as u32),
            0x0a0 => q.map_or(0, |q| q.used as u32),
            0x0a4 => q.map_or(0, |q| (q.used >> 32) as u32),
            0x0fc => self.config_generation,
            _ => 0,
        }
    }

    /// Makes the selected queue ready after checking its rings.
    fn make_ready(&mut self, m: &impl GuestMemory) -> Effect {
        let sel = self.queue_sel as u16;
        let Some(q) = self.queue() else {
            return Effect::Refused;
        };
        if let Err(f) = q.validate(m) {
            return Effect::Invalid(f);
        }
        q.live = q.size;
        q.last_avail = 0;
        q.used_idx = 0;
        q.no_notify = false;
        Effect::QueueReady(sel)
    }

    /// A legacy QueuePFN write: 0 stops the queue; another page places
    /// its rings (at most once until it is stopped).
    fn write_pfn(&mut self, v: u32, m: &impl GuestMemory) -> Effect {
        let sel = self.queue_sel as usize;
        let (Some(q), Some(l)) = (self.queues.get_mut(sel), self.legacy.get_mut(sel)) else {
            return Effect::Refused;
        };
        if v == 0 {
            q.live = 0;
            l.pfn = 0;
            return Effect::None;
        }
        if q.ready() {
            return Effect::Refused;
        }
        match legacy_rings(v, self.page_size, l.align, q.size) {
            Ok([desc, avail, used]) => {
                (q.desc, q.avail, q.used) = (desc, avail, used);
                l.pfn = v;
            }
            Err(f) => return Effect::Invalid(f),
        }
        let e = self.make_ready(m);
        if e != Effect::QueueReady(sel as u16) {
            self.legacy[sel].pfn = 0;
        }
        e
    }

    /// A 32-bit register write (the transport allows no other width).
    pub fn write(&mut self, off: u64, v: u32, m: &impl GuestMemory) -> Effect {
        // The two writes of every message, before the rest.
        match off {
            QUEUE_NOTIFY => return Effect::Notify(v as u16),
            INTERRUPT_ACK => {
                self.acknowledge(v);
                return Effect::None;
            }
            _ => {}
        }
        let setting_up = self.status & status::DRIVER_OK == 0;
        let legacy = self.legacy();
        let set_lo = |x: &mut u64| *x = (*x & !0xffff_ffff) | u64::from(v);
        let set_hi = |x: &mut u64| *x = (*x & 0xffff_ffff) | (u64::from(v) << 32);
        match off {
            0x014 => self.features_sel = v,
            // A legacy driver has 32 feature bits and no FEATURES_OK: it
            // takes what it writes before DRIVER_OK, within what we offer.
            0x020 if legacy && setting_up => {
                if self.driver_sel == 0 {
                    self.driver_features = u64::from(v) & self.features;
                }
            }
            0x020 if !legacy && self.status & status::FEATURES_OK == 0 => match self.driver_sel {
                0 => set_lo(&mut self.driver_features),
                1 => set_hi(&mut self.driver_features),
                _ => {}
            },
            0x024 => self.driver_sel = v,
            0x028 if legacy => self.page_size = v,
            0x030 => self.queue_sel = v,
            0x038 if setting_up => match self.queue() {
                Some(q) if !q.ready() => q.size = v.min(u32::from(u16::MAX)) as u16,
                _ => return Effect::Refused,
            },
            0x03c if legacy => {
                let sel = self.queue_sel as usize;
                match (self.queues.get(sel), self.legacy.get_mut(sel)) {
                    (Some(q), Some(l)) if !q.ready() => l.align = v,
                    _ => return Effect::Refused,
                }
            }
            0x040 if legacy => return self.write_pfn(v, m),
            0x044 if !legacy => {
                if v != 0 {
                    return self.make_ready(m);
                }
                match self.queue() {
                    Some(q) => q.live = 0,
                    None => return Effect::Refused,
                }
            }
            0x070 => {
                if v == 0 {
                    self.reset();
                    return Effect::Reset;
                }
                if legacy {
                    if !legal_legacy(self.status, v) {
                        return Effect::Refused;
                    }
                } else {
                    if !legal(self.status, v) {
                        return Effect::Refused;
                    }
                    // FEATURES_OK only for a subset of ours that includes VERSION_1.
                    if v & status::FEATURES_OK != 0
                        && (self.driver_features & !self.features != 0
                            || self.driver_features & F_VERSION_1 == 0)
                    {
                        return Effect::Refused;
                    }
                }
                let was_ok = self.driver_ok();
                self.status = v | (self.status & status::NEEDS_RESET);
                if !was_ok && self.driver_ok() {
                    return Effect::DriverOk;
                }
            }
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 if !legacy => {
                let Some(q) = self.queue().filter(|q| !q.ready()) else {
                    return Effect::Refused;
                };
                match off {
                    0x080 => set_lo(&mut q.desc),
                    0x084 => set_hi(&mut q.desc),
                    0x090 => set_lo(&mut q.avail),
                    0x094 => set_hi(&mut q.avail),
                    0x0a0 => set_lo(&mut q.used),
                    _ => set_hi(&mut q.used),
                }
            }
            _ => return Effect::Refused,
        }
        Effect::None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Guest memory for tests: one range, and a record of every ring
    /// access (address, length), to hold against the rings they must lie
    /// in.
    pub struct Ram {
        pub base: u64,
        pub bytes: Vec<u8>,
        pub ring_accesses: core::cell::RefCell<Vec<(u64, u64)>>,
    }

    impl Ram {
        pub fn new(base: u64, size: usize) -> Self {
            Ram {
                base,
                bytes: vec![0; size],
                ring_accesses: Default::default(),
            }
        }
        /// A ring access: recorded, and checked against the memory (the
        /// tests' stand-in for the hypervisor's, which does not check).
        fn ring<const N: usize>(&self, a: RingAddr) -> core::ops::Range<usize> {
            let addr = a.get();
            self.ring_accesses.borrow_mut().push((addr, N as u64));
            assert!(
                addr.is_multiple_of(N.min(4) as u64),
                "misaligned ring access {addr:#x}"
            );
            self.range(addr, N)
                .expect("a ring access outside the memory")
        }
        fn range(&self, addr: u64, len: usize) -> Result<core::ops::Range<usize>, Fault> {
            let off = addr.checked_sub(self.base).ok_or(Fault::OutsideMemory {
                addr,
                len: len as u64,
            })? as usize;
            let end = off.checked_add(len).filter(|&e| e <= self.bytes.len());
            end.map(|e| off..e).ok_or(Fault::OutsideMemory {
                addr,
                len: len as u64,
            })
        }
        pub fn put(&mut self, addr: u64, data: &[u8]) {
            let r = self.range(addr, data.len()).unwrap();
            self.bytes[r].copy_from_slice(data);
        }
        pub fn get(&self, addr: u64, len: usize) -> &[u8] {
            &self.bytes[self.range(addr, len).unwrap()]
        }
    }

    impl GuestMemory for Ram {
        fn check(&self, addr: u64, len: u64) -> Result<(), Fault> {
            self.range(addr, len as usize).map(|_| ())
        }
        // A segment outside the memory is a bug of the queue's: a panic.
        fn read(&self, s: Segment, buf: &mut [u8]) {
            let n = buf.len().min(s.len as usize);
            buf[..n].copy_from_slice(self.get(s.addr, n));
        }
        fn copy_from(&mut self, to: Segment, src: &Self, from: Segment) {
            let n = to.len.min(from.len) as usize;
            let d = self.range(to.addr, n).unwrap();
            self.bytes[d].copy_from_slice(src.get(from.addr, n));
        }
        fn ring_u16(&self, a: RingAddr) -> u16 {
            let r = self.ring::<2>(a);
            u16::from_le_bytes(self.bytes[r].try_into().unwrap())
        }
        fn set_ring_u16(&mut self, a: RingAddr, v: u16) {
            let r = self.ring::<2>(a);
            self.bytes[r].copy_from_slice(&v.to_le_bytes());
        }
        fn descriptor(&self, a: RingAddr) -> [u64; 2] {
            let r = self.ring::<16>(a);
            pair_from_le(self.bytes[r].as_ref().try_into().unwrap())
        }
        fn set_used(&mut self, a: RingAddr, id: u32, len: u32) {
            let r = self.ring::<8>(a);
            self.bytes[r.start..r.start + 4].copy_from_slice(&id.to_le_bytes());
            self.bytes[r.start + 4..r.end].copy_from_slice(&len.to_le_bytes());
        }
    }

    /// A driver's view of a queue in `Ram`, to play the guest in tests.
    pub struct Driver {
        pub size: u16,
        pub desc: u64,
        pub avail: u64,
        pub used: u64,
        pub avail_idx: u16,
        pub used_seen: u16,
    }

    impl Driver {
        pub fn at(base: u64, size: u16) -> Self {
            let n = u64::from(size);
            Driver {
                size,
                desc: base,
                avail: base + 16 * n,
                used: (base + 16 * n + 6 + 2 * n + 3) & !3,
                avail_idx: 0,
                used_seen: 0,
            }
        }
        pub fn setup(&self, dev: &mut VirtioMmio, q: u32, m: &Ram) -> Effect {
            dev.write(0x030, q, m);
            dev.write(0x038, u32::from(self.size), m);
            dev.write(0x080, self.desc as u32, m);
            dev.write(0x084, (self.desc >> 32) as u32, m);
            dev.write(0x090, self.avail as u32, m);
            dev.write(0x094, 0, m);
            dev.write(0x0a0, self.used as u32, m);
            dev.write(0x0a4, 0, m);
            dev.write(0x044, 1, m)
        }
        /// The legacy way: GuestPageSize 4096, QueueAlign 4 (so the used
        /// ring lies where `at` put it), QueuePFN; `desc` page-aligned.
        pub fn setup_legacy(&self, dev: &mut VirtioMmio, q: u32, m: &Ram) -> Effect {
            dev.write(0x028, 4096, m);
            dev.write(0x030, q, m);
            dev.write(0x038, u32::from(self.size), m);
            dev.write(0x03c, 4, m);
            dev.write(0x040, (self.desc / 4096) as u32, m)
        }
        pub fn desc(&self, m: &mut Ram, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&next.to_le_bytes());
            m.put(self.desc + 16 * u64::from(i), &d);
        }
        pub fn offer(&mut self, m: &mut Ram, head: u16) {
            m.put(
                self.avail + 4 + 2 * u64::from(self.avail_idx % self.size),
                &head.to_le_bytes(),
            );
            self.avail_idx = self.avail_idx.wrapping_add(1);
            m.put(self.avail + 2, &self.avail_idx.to_le_bytes());
        }
        /// Used entries since last time: (id, len).
        pub fn take_used(&mut self, m: &Ram) -> Vec<(u32, u32)> {
            let idx = u16::from_le_bytes(m.get(self.used + 2, 2).try_into().unwrap());
            let mut out = Vec::new();
            while self.used_seen != idx {
                let e = m.get(self.used + 4 + 8 * u64::from(self.used_seen % self.size), 8);
                out.push((
                    u32::from_le_bytes(e[..4].try_into().unwrap()),
                    u32::from_le_bytes(e[4..].try_into().unwrap()),
                ));
                self.used_seen = self.used_seen.wrapping_add(1);
            }
            out
        }
    }

    pub fn ready_device(m: &Ram) -> VirtioMmio {
        ready_device_with(1, m)
    }

    /// A device offering `features`, driven to FEATURES_OK by a driver
    /// that takes all of them.
    pub fn ready_device_with(features: u64, m: &Ram) -> VirtioMmio {
        let mut d = VirtioMmio::new(7, features);
        for s in [1, 3] {
            assert_eq!(d.write(0x070, s, m), Effect::None);
        }
        d.write(0x024, 1, m);
        d.write(0x020, 1, m);
        d.write(0x024, 0, m);
        d.write(0x020, d.read(0x010) & 1, m);
        assert_eq!(d.write(0x070, 11, m), Effect::None);
        d
    }

    /// A legacy device driven as Linux's legacy driver does, up to (not
    /// including) DRIVER_OK, taking every feature offered.
    pub fn legacy_device_with(features: u64, m: &Ram) -> VirtioMmio {
        let mut d = VirtioMmio::with_version(7, features, 1);
        for s in [1, 3] {
            assert_eq!(d.write(0x070, s, m), Effect::None);
        }
        d.write(0x020, d.read(0x010), m);
        d
    }

    #[test]
    fn identification_and_features() {
        let m = Ram::new(0x1000, 0x1000);
        let mut d = VirtioMmio::new(7, 1);
        assert_eq!((d.read(0), d.read(4), d.read(8)), (0x7472_6976, 2, 7));
        assert_eq!(d.read(0x10), 1);
        d.write(0x14, 1, &m);
        assert_eq!(d.read(0x10), 1); // VERSION_1 is bit 32
    }

    #[test]
    fn status_walks_forward_only_and_needs_version_1() {
        let m = Ram::new(0x1000, 0x1000);
        let mut d = VirtioMmio::new(7, 1);
        assert_eq!(d.write(0x070, 4, &m), Effect::Refused, "DRIVER_OK first");
        d.write(0x070, 1, &m);
        d.write(0x070, 3, &m);
        d.write(0x020, 1, &m); // no VERSION_1
        assert_eq!(d.write(0x070, 11, &m), Effect::Refused);
        d.write(0x024, 1, &m);
        d.write(0x020, 1, &m);
        assert_eq!(d.write(0x070, 11, &m), Effect::None);
        assert_eq!(d.write(0x070, 15, &m), Effect::DriverOk);
        assert!(d.driver_ok());
        assert_eq!(
            d.write(0x070, 3, &m),
            Effect::Refused,
            "no way back but reset"
        );
        assert_eq!(d.write(0x070, 0, &m), Effect::Reset);
        assert_eq!((d.read(0x070), d.read(0x0fc)), (0, 1));
    }

    #[test]
    fn queue_setup_is_checked_against_memory() {
        let m = Ram::new(0x10000, 0x4000);
        let mut d = ready_device(&m);
        assert_eq!(
            Driver::at(0x10000, 16).setup(&mut d, 0, &m),
            Effect::QueueReady(0)
        );
        assert_eq!(d.read(0x044), 1);
        // Its descriptor table fits; its available ring starts past the end.
        assert_eq!(
            Driver::at(0x13f00, 16).setup(&mut d, 1, &m),
            Effect::Invalid(Fault::OutsideMemory {
                addr: 0x14000,
                len: 6 + 2 * 16
            })
        );
        assert_eq!(d.read(0x044), 0);
        d.write(0x030, 1, &m);
        d.write(0x038, 1000, &m);
        assert_eq!(
            d.write(0x044, 1, &m),
            Effect::Invalid(Fault::BadQueueSize(1000))
        );
        // Within the maximum but not a power of two (2.7).
        let mut d = ready_device(&m);
        d.write(0x030, 1, &m);
        d.write(0x038, 24, &m);
        assert_eq!(
            d.write(0x044, 1, &m),
            Effect::Invalid(Fault::BadQueueSize(24))
        );
        assert_eq!(
            Fault::BadQueueSize(24).to_string(),
            "queue size 24 is not a power of two up to 256"
        );
    }

    #[test]
    fn chains_are_bounded_and_checked() {
        let mut m = Ram::new(0x10000, 0x8000);
        let mut d = ready_device(&m);
        let mut drv = Driver::at(0x10000, 8);
        drv.setup(&mut d, 0, &m);
        let q = d.queues[0];
        const W: u16 = DESC_F_WRITE;
        // A loop: 0 -> 1 -> 0.
        drv.desc(&mut m, 0, 0x14000, 16, W | DESC_F_NEXT, 1);
        drv.desc(&mut m, 1, 0x14100, 16, W | DESC_F_NEXT, 0);
        drv.offer(&mut m, 0);
        assert_eq!(q.peek(&m), Ok(Some(0)));
        assert_eq!(q.chain(&m, 0, true).unwrap_err(), Fault::ChainTooLong);
        drv.desc(&mut m, 1, 0x14100, 16, W | DESC_F_NEXT, 9);
        assert_eq!(q.chain(&m, 0, true).unwrap_err(), Fault::DescriptorIndex(9));
        drv.desc(&mut m, 0, 0x17ff0, 32, W, 0);
        assert_eq!(
            q.chain(&m, 0, true).unwrap_err(),
            Fault::OutsideMemory {
                addr: 0x17ff0,
                len: 32
            }
        );
        drv.desc(&mut m, 0, 0x14000, 16, DESC_F_INDIRECT, 0);
        assert_eq!(q.chain(&m, 0, true).unwrap_err(), Fault::Indirect);
        drv.desc(&mut m, 0, 0x14000, 16, W, 0);
        let c = q.chain(&m, 0, true).unwrap();
        assert_eq!(
            (c.n, c.len, c.first),
            (
                1,
                16,
                Segment {
                    addr: 0x14000,
                    len: 16
                }
            )
        );
        assert_eq!(q.chain(&m, 0, false), Err(Fault::Direction));
        // A direction that changes along the chain.
        drv.desc(&mut m, 0, 0x14000, 16, W | DESC_F_NEXT, 1);
        drv.desc(&mut m, 1, 0x14100, 16, 0, 0);
        assert_eq!(q.chain(&m, 0, true), Err(Fault::Direction));
        // An available index a whole queue ahead is refused.
        m.put(drv.avail + 2, &100u16.to_le_bytes());
        assert_eq!(q.peek(&m), Err(Fault::AvailOverrun { idx: 100, last: 0 }));
    }

    /// Any chain that fits the queue is legal, five descriptors as well as
    /// all eight of a queue of eight; the ninth link can only revisit one.
    #[test]
    fn chains_may_be_as_long_as_the_queue() {
        let mut m = Ram::new(0x10000, 0x8000);
        let mut d = ready_device(&m);
        let drv = Driver::at(0x10000, 8);
        drv.setup(&mut d, 0, &m);
        let q = d.queues[0];
        for i in 0..8u16 {
            drv.desc(
                &mut m,
                i,
                0x14000 + 0x100 * u64::from(i),
                100,
                DESC_F_NEXT,
                i + 1,
            );
        }
        drv.desc(&mut m, 4, 0x14400, 100, 0, 0);
        let c = q.chain(&m, 0, false).unwrap();
        assert_eq!((c.n, c.len, c.next), (5, 500, 1));
        drv.desc(&mut m, 4, 0x14400, 100, DESC_F_NEXT, 5);
        drv.desc(&mut m, 7, 0x14700, 100, 0, 0);
        assert_eq!(q.chain(&m, 0, false).map(|c| (c.n, c.len)), Ok((8, 800)));
        // The last one back to the first: a ninth descriptor is a loop.
        drv.desc(&mut m, 7, 0x14700, 100, DESC_F_NEXT, 0);
        assert_eq!(q.chain(&m, 3, false), Err(Fault::ChainTooLong));
    }

    #[test]
    fn legacy_identification_and_status_without_features_ok() {
        let m = Ram::new(0x10000, 0x4000);
        let mut d = VirtioMmio::with_version(7, 1, 1);
        assert_eq!((d.read(0), d.read(4), d.read(8)), (0x7472_6976, 1, 7));
        d.write(0x14, 1, &m);
        assert_eq!(d.read(0x10), 0, "no VIRTIO_F_VERSION_1");
        assert_eq!(d.write(0x070, 1, &m), Effect::None);
        assert_eq!(d.write(0x070, 3, &m), Effect::None);
        assert_eq!(d.write(0x070, 11, &m), Effect::Refused, "no FEATURES_OK");
        assert_eq!(
            d.write(0x070, 3 | 64, &m),
            Effect::Refused,
            "not the driver's bit"
        );
        d.write(0x020, 0xffff_ffff, &m);
        assert_eq!(d.negotiated(), 1, "within what is offered");
        assert_eq!(d.write(0x070, 7, &m), Effect::DriverOk);
        d.write(0x020, 0, &m);
        assert_eq!(d.negotiated(), 1, "fixed at DRIVER_OK");
        assert_eq!(
            d.write(0x070, 3, &m),
            Effect::Refused,
            "no way back but reset"
        );
        // Version 2's registers are not there.
        for off in [0x044, 0x080, 0x090, 0x0a0] {
            assert_eq!(d.write(off, 1, &m), Effect::Refused);
            assert_eq!(d.read(off), 0);
        }
        assert_eq!(d.write(0x070, 0, &m), Effect::Reset);
        assert_eq!((d.read(4), d.read(0x070), d.negotiated()), (1, 0, 0));
    }

    /// OpenAMP's own driver, register by register (`virtio_mmio_drv.c`
    /// and `rpmsg_init_vdev`): ACKNOWLEDGE, GuestPageSize, then per queue
    /// QueueNum, QueueAlign 4096 and QueuePFN, and DRIVER_OK written alone.
    #[test]
    fn openamps_legacy_sequence_is_accepted() {
        let m = Ram::new(0x4000_0000, 0x10000);
        let mut d = VirtioMmio::with_version(7, 1, 1);
        assert_eq!(d.write(0x070, 1, &m), Effect::None);
        assert_eq!(d.write(0x028, 4096, &m), Effect::None);
        d.write(0x014, 0, &m);
        d.write(0x020, d.read(0x010) & 1, &m);
        for q in 0..2u32 {
            d.write(0x030, q, &m);
            assert_eq!(d.read(0x034), 256);
            d.write(0x038, 16, &m);
            d.write(0x03c, 4096, &m);
            let pfn = 0x4000_0000 / 4096 + 2 * q;
            assert_eq!(d.write(0x040, pfn, &m), Effect::QueueReady(q as u16));
            assert_eq!(d.read(0x040), pfn);
            let base = u64::from(pfn) * 4096;
            let qu = d.queues[q as usize];
            // The legacy layout: avail after the table, used on the next page.
            assert_eq!(
                (qu.desc, qu.avail, qu.used),
                (base, base + 256, base + 4096)
            );
        }
        assert_eq!(d.write(0x070, 4, &m), Effect::DriverOk);
        assert!(d.driver_ok());
        assert_eq!(d.negotiated(), 1);
    }

    /// The legacy rings are checked exactly as version 2's: size,
    /// alignment, and every byte inside the domain's memory.
    #[test]
    fn legacy_queues_are_checked_against_memory() {
        let m = Ram::new(0x10000, 0x4000);
        let mut d = legacy_device_with(1, &m);
        let setup = |d: &mut VirtioMmio, page: u32, num: u32, align: u32, pfn: u32| {
            d.write(0x028, page, &m);
            d.write(0x030, 0, &m);
            d.write(0x040, 0, &m);
            d.write(0x038, num, &m);
            d.write(0x03c, align, &m);
            d.write(0x040, pfn, &m)
        };
        assert_eq!(setup(&mut d, 4096, 16, 4096, 0x10), Effect::QueueReady(0));
        // Its used ring would start at 0x14000, past the end.
        assert_eq!(
            setup(&mut d, 4096, 16, 4096, 0x13),
            Effect::Invalid(Fault::OutsideMemory {
                addr: 0x14000,
                len: 6 + 8 * 16
            })
        );
        assert_eq!((d.read(0x040), d.queues[0].ready()), (0, false));
        assert_eq!(
            setup(&mut d, 4096, 0, 4096, 0x10),
            Effect::Invalid(Fault::BadQueueSize(0))
        );
        assert_eq!(
            setup(&mut d, 4096, 300, 4096, 0x10),
            Effect::Invalid(Fault::BadQueueSize(300))
        );
        assert_eq!(
            setup(&mut d, 4096, 24, 4096, 0x10),
            Effect::Invalid(Fault::BadQueueSize(24))
        );
        assert_eq!(
            setup(&mut d, 0, 16, 4096, 0x10),
            Effect::Invalid(Fault::BadPageSize(0))
        );
        assert_eq!(
            setup(&mut d, 4096, 16, 3000, 0x10),
            Effect::Invalid(Fault::BadQueueAlign(3000))
        );
        // A used ring aligned to 2 only.
        assert_eq!(
            setup(&mut d, 16, 2, 2, 0x1000),
            Effect::Invalid(Fault::Misaligned { addr: 0x1002a })
        );
        // The largest page number and page size: far outside, no overflow.
        assert!(matches!(
            setup(&mut d, 0x8000_0000, 256, 0x8000_0000, u32::MAX),
            Effect::Invalid(Fault::OutsideMemory { .. })
        ));
        // A live queue is not moved; PFN 0 stops it first.
        assert_eq!(setup(&mut d, 4096, 16, 4096, 0x10), Effect::QueueReady(0));
        assert_eq!(d.write(0x040, 0x11, &m), Effect::Refused);
        assert_eq!(d.write(0x038, 8, &m), Effect::Refused);
        assert_eq!(d.write(0x03c, 64, &m), Effect::Refused);
        assert_eq!(d.write(0x040, 0, &m), Effect::None);
        assert!(!d.queues[0].ready());
    }

    #[test]
    fn used_ring_and_interrupt_suppression() {
        let mut m = Ram::new(0x10000, 0x8000);
        let mut d = ready_device(&m);
        let mut drv = Driver::at(0x10000, 4);
        drv.setup(&mut d, 0, &m);
        let mut q = d.queues[0];
        q.push_used(&mut m, 3, 40).unwrap();
        assert_eq!(drv.take_used(&m), [(3, 40)]);
        assert!(q.wants_interrupt(&m));
        m.put(drv.avail, &1u16.to_le_bytes());
        assert!(!q.wants_interrupt(&m));
    }
}
