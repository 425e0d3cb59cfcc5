//! virtio-mmio version 2 (virtio 1.2, 4.2.2) with split virtqueues (2.7),
//! device side. Every address and length the driver gives is an allegation:
//! rings and buffers are checked against the domain's memory through
//! [`GuestMemory`] before they are touched, descriptor walks are bounded,
//! and a malformed queue yields a [`Fault`] that the caller turns into
//! DEVICE_NEEDS_RESET for that device alone.

/// The driver's memory, as the device may reach it.
pub trait GuestMemory {
    /// Whether all of `len` bytes at `addr` lie in the domain's memory.
    fn check(&self, addr: u64, len: u64) -> Result<(), Fault>;
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Fault>;
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault>;
    /// Copies `len` bytes at `from` in `src` to `to` in this memory, with
    /// no copy in between. A fault says whose range was bad: `(0, _)` the
    /// source's, `(1, _)` this memory's.
    fn copy_from(
        &mut self,
        to: u64,
        src: &Self,
        from: u64,
        len: usize,
    ) -> Result<(), (usize, Fault)>
    where
        Self: Sized;
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
    /// A descriptor index at or beyond the queue size.
    DescriptorIndex(u16),
    /// More descriptors in a chain than the queue has (a loop).
    ChainTooLong,
    /// Indirect descriptors were not negotiated.
    Indirect,
    /// The driver published more available entries than the queue holds.
    AvailOverrun { idx: u16, last: u16 },
    /// A buffer of the wrong direction (device-readable where the device
    /// must write, or the reverse).
    Direction,
    /// A message that does not fit the buffer that carries it.
    BadLength { len: u32, room: u32 },
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Fault::OutsideMemory { addr, len } => {
                write!(f, "buffer {addr:#x}+{len:#x} is outside its memory")
            }
            Fault::Misaligned { addr } => write!(f, "ring address {addr:#x} is misaligned"),
            Fault::BadQueueSize(n) => write!(f, "queue size {n} is not between 1 and {QUEUE_MAX}"),
            Fault::DescriptorIndex(i) => write!(f, "descriptor index {i} is beyond the queue"),
            Fault::ChainTooLong => write!(f, "descriptor chain longer than the queue (a loop)"),
            Fault::Indirect => write!(f, "indirect descriptor, which was not negotiated"),
            Fault::AvailOverrun { idx, last } => write!(
                f,
                "available index {idx} runs more than a queue ahead of {last}"
            ),
            Fault::Direction => write!(f, "buffer of the wrong direction"),
            Fault::BadLength { len, room } => {
                write!(f, "message of {len} bytes in a buffer of {room}")
            }
        }
    }
}

pub const QUEUE_MAX: u16 = 256;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

fn read_u16(m: &impl GuestMemory, a: u64) -> Result<u16, Fault> {
    let mut b = [0; 2];
    m.read(a, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// One descriptor of a chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

/// A descriptor chain, bounded: rpmsg buffers are one descriptor each (in
/// Linux too), and longer chains are accepted up to this many. Kept small,
/// since a chain is built on every message.
pub const CHAIN_MAX: usize = 4;

#[derive(Clone, Copy, Debug, Default)]
pub struct Chain {
    pub head: u16,
    pub segs: [Segment; CHAIN_MAX],
    pub n: u8,
}

impl Chain {
    pub fn segments(&self) -> &[Segment] {
        &self.segs[..usize::from(self.n)]
    }

    /// Total bytes, if every segment has the direction `device_writes`.
    pub fn len(&self, device_writes: bool) -> Result<u32, Fault> {
        self.segments().iter().try_fold(0u32, |acc, s| {
            if s.device_writes != device_writes {
                return Err(Fault::Direction);
            }
            acc.checked_add(s.len).ok_or(Fault::BadLength {
                len: u32::MAX,
                room: acc,
            })
        })
    }
}

/// A split virtqueue as the driver configured it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    last_avail: u16,
    used_idx: u16,
}

impl Queue {
    /// Checks the configuration when the driver sets QueueReady: size, ring
    /// alignment (2.7: 16, 2, 4) and every ring inside the domain's memory.
    pub fn validate(&self, m: &impl GuestMemory) -> Result<(), Fault> {
        let n = u64::from(self.size);
        if self.size == 0 || self.size > QUEUE_MAX {
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

    /// The head of the next available chain, without taking it.
    pub fn peek(&self, m: &impl GuestMemory) -> Result<Option<u16>, Fault> {
        if !self.ready {
            return Ok(None);
        }
        let idx = read_u16(m, self.avail + 2)?;
        if idx == self.last_avail {
            return Ok(None);
        }
        if idx.wrapping_sub(self.last_avail) > self.size {
            return Err(Fault::AvailOverrun {
                idx,
                last: self.last_avail,
            });
        }
        let slot = self.avail + 4 + 2 * u64::from(self.last_avail % self.size);
        let head = read_u16(m, slot)?;
        if head >= self.size {
            return Err(Fault::DescriptorIndex(head));
        }
        Ok(Some(head))
    }

    /// Walks the chain at `head`, checking every descriptor. Inlined so
    /// the chain is built where the caller keeps it, not copied out.
    #[inline(always)]
    pub fn chain(&self, m: &impl GuestMemory, head: u16) -> Result<Chain, Fault> {
        let mut c = Chain {
            head,
            ..Default::default()
        };
        let mut i = head;
        for _ in 0..self.size {
            if i >= self.size {
                return Err(Fault::DescriptorIndex(i));
            }
            let mut d = [0u8; 16];
            m.read(self.desc + 16 * u64::from(i), &mut d)?;
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
            if flags & DESC_F_INDIRECT != 0 {
                return Err(Fault::Indirect);
            }
            if usize::from(c.n) == CHAIN_MAX {
                return Err(Fault::ChainTooLong);
            }
            m.check(addr, len.into())?;
            c.segs[usize::from(c.n)] = Segment {
                addr,
                len,
                device_writes: flags & DESC_F_WRITE != 0,
            };
            c.n += 1;
            if flags & DESC_F_NEXT == 0 {
                return Ok(c);
            }
            i = next;
        }
        Err(Fault::ChainTooLong)
    }

    /// Takes the chain `peek` returned.
    pub fn advance(&mut self) {
        self.last_avail = self.last_avail.wrapping_add(1);
    }

    /// Returns chain `head` to the driver, `len` bytes written.
    pub fn push_used(
        &mut self,
        m: &mut impl GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<(), Fault> {
        let slot = self.used + 4 + 8 * u64::from(self.used_idx % self.size);
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        m.write(slot, &e)?;
        self.used_idx = self.used_idx.wrapping_add(1);
        // The entry is written before the index that publishes it; the
        // caller's memory is coherent and in program order at EL2.
        m.write(self.used + 2, &self.used_idx.to_le_bytes())
    }

    /// Whether the driver wants an interrupt for used buffers.
    pub fn wants_interrupt(&self, m: &impl GuestMemory) -> Result<bool, Fault> {
        Ok(read_u16(m, self.avail)? & AVAIL_F_NO_INTERRUPT == 0)
    }
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
    /// A write that the state machine refused, for the log.
    Refused,
    /// QueueReady on a queue whose rings are invalid.
    Invalid(Fault),
}

/// The transport registers of one virtio-mmio device with two queues.
#[derive(Clone, Debug)]
pub struct VirtioMmio {
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

impl VirtioMmio {
    pub fn new(device_id: u32, features: u64) -> Self {
        VirtioMmio {
            device_id,
            features: features | F_VERSION_1,
            features_sel: 0,
            driver_features: 0,
            driver_sel: 0,
            status: 0,
            queue_sel: 0,
            queues: [Queue::default(); 2],
            interrupt_status: 0,
            config_generation: 0,
        }
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
            q.ready = false;
        }
    }

    /// Signals a change of the device-specific configuration (2.1.2,
    /// 4.2.2.1: the interrupt status bit and a new generation).
    pub fn config_changed(&mut self) {
        self.interrupt_status |= INT_CONFIG;
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    /// Back to the state after power-on, as a driver's reset (status 0)
    /// leaves it; the configuration generation moves on.
    pub fn reset(&mut self) {
        let generation = self.config_generation.wrapping_add(1);
        *self = VirtioMmio::new(self.device_id, self.features);
        self.config_generation = generation;
    }

    /// Notes used buffers for the interrupt status.
    pub fn signal_used(&mut self) {
        self.interrupt_status |= INT_USED;
    }

    pub fn read(&self, off: u64) -> u32 {
        let q = self.queues.get(self.queue_sel as usize);
        match off {
            0x000 => MAGIC,
            0x004 => 2,
            0x008 => self.device_id,
            0x00c => 0x554d_4551, // vendor "QEMU", as Linux's tools expect none in particular
            0x010 => match self.features_sel {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
                _ => 0,
            },
            0x034 => q.map_or(0, |_| u32::from(QUEUE_MAX)),
            0x038 => q.map_or(0, |q| u32::from(q.size)),
            0x044 => q.map_or(0, |q| u32::from(q.ready)),
            0x060 => self.interrupt_status,
            0x070 => self.status,
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

    /// A 32-bit register write (the transport allows no other width).
    pub fn write(&mut self, off: u64, v: u32, m: &impl GuestMemory) -> Effect {
        let setting_up = self.status & status::DRIVER_OK == 0;
        let set_lo = |x: &mut u64| *x = (*x & !0xffff_ffff) | u64::from(v);
        let set_hi = |x: &mut u64| *x = (*x & 0xffff_ffff) | (u64::from(v) << 32);
        match off {
            0x014 => self.features_sel = v,
            0x020 if self.status & status::FEATURES_OK == 0 => match self.driver_sel {
                0 => set_lo(&mut self.driver_features),
                1 => set_hi(&mut self.driver_features),
                _ => {}
            },
            0x024 => self.driver_sel = v,
            0x030 => self.queue_sel = v,
            0x038 if setting_up => match self.queue() {
                Some(q) if !q.ready => q.size = v.min(u32::from(u16::MAX)) as u16,
                _ => return Effect::Refused,
            },
            0x044 => {
                let Some(q) = self.queue() else {
                    return Effect::Refused;
                };
                if v == 0 {
                    q.ready = false;
                } else if let Err(f) = q.validate(m) {
                    return Effect::Invalid(f);
                } else {
                    q.ready = true;
                    q.last_avail = 0;
                    q.used_idx = 0;
                }
            }
            0x050 => return Effect::Notify(v as u16),
            0x064 => self.interrupt_status &= !v,
            0x070 => {
                if v == 0 {
                    self.reset();
                    return Effect::Reset;
                }
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
                let was_ok = self.driver_ok();
                self.status = v | (self.status & status::NEEDS_RESET);
                if !was_ok && self.driver_ok() {
                    return Effect::DriverOk;
                }
            }
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                let Some(q) = self.queue().filter(|q| !q.ready) else {
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

    /// Guest memory for tests: one range, and a record of every write.
    pub struct Ram {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl Ram {
        pub fn new(base: u64, size: usize) -> Self {
            Ram {
                base,
                bytes: vec![0; size],
            }
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
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
            buf.copy_from_slice(&self.bytes[self.range(addr, buf.len())?]);
            Ok(())
        }
        fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
            let r = self.range(addr, data.len())?;
            self.bytes[r].copy_from_slice(data);
            Ok(())
        }
        fn copy_from(
            &mut self,
            to: u64,
            src: &Self,
            from: u64,
            len: usize,
        ) -> Result<(), (usize, Fault)> {
            let s = src.range(from, len).map_err(|f| (0, f))?;
            let d = self.range(to, len).map_err(|f| (1, f))?;
            self.bytes[d].copy_from_slice(&src.bytes[s]);
            Ok(())
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
        assert_eq!(Driver::at(0x10000, 16).setup(&mut d, 0, &m), Effect::None);
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
    }

    #[test]
    fn chains_are_bounded_and_checked() {
        let mut m = Ram::new(0x10000, 0x8000);
        let mut d = ready_device(&m);
        let mut drv = Driver::at(0x10000, 8);
        drv.setup(&mut d, 0, &m);
        let q = d.queues[0];
        // A loop: 0 -> 1 -> 0.
        drv.desc(&mut m, 0, 0x14000, 16, DESC_F_NEXT, 1);
        drv.desc(&mut m, 1, 0x14100, 16, DESC_F_NEXT, 0);
        drv.offer(&mut m, 0);
        assert_eq!(q.peek(&m), Ok(Some(0)));
        assert_eq!(q.chain(&m, 0).unwrap_err(), Fault::ChainTooLong);
        drv.desc(&mut m, 1, 0x14100, 16, DESC_F_NEXT, 9);
        assert_eq!(q.chain(&m, 0).unwrap_err(), Fault::DescriptorIndex(9));
        drv.desc(&mut m, 0, 0x17ff0, 32, 0, 0);
        assert_eq!(
            q.chain(&m, 0).unwrap_err(),
            Fault::OutsideMemory {
                addr: 0x17ff0,
                len: 32
            }
        );
        drv.desc(&mut m, 0, 0x14000, 16, DESC_F_INDIRECT, 0);
        assert_eq!(q.chain(&m, 0).unwrap_err(), Fault::Indirect);
        drv.desc(&mut m, 0, 0x14000, 16, DESC_F_WRITE, 0);
        let c = q.chain(&m, 0).unwrap();
        assert_eq!(c.len(true), Ok(16));
        assert_eq!(c.len(false), Err(Fault::Direction));
        // An available index a whole queue ahead is refused.
        m.put(drv.avail + 2, &100u16.to_le_bytes());
        assert_eq!(q.peek(&m), Err(Fault::AvailOverrun { idx: 100, last: 0 }));
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
        assert_eq!(q.wants_interrupt(&m), Ok(true));
        m.put(drv.avail, &1u16.to_le_bytes());
        assert_eq!(q.wants_interrupt(&m), Ok(false));
    }
}
