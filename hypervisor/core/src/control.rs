//! The control interface: Partita's SMCCC vendor-specific hypervisor calls
//! (function IDs 0xc600_xxxx, SMC64 fast calls) by which a partition the
//! SDT names as controller (lopper's `openamp,remoteproc-v1` relation)
//! queries, stops, starts and loads another. Every argument is an
//! allegation: the binary checks rights and memory before acting.
//!
//! | x0 | call | arguments | returns |
//! |---|---|---|---|
//! | 0xc600_0000 | NULL | | 0 |
//! | 0xc600_0010 | STATUS | x1 = partition id | x0 = state, x1 = restarts, x2 = uptime (counter ticks), x3 = traps, x4 = interrupts injected, x5 = rpmsg messages in, x6 = out, x7 = faults |
//! | 0xc600_0011 | START | x1 = id | 0 |
//! | 0xc600_0012 | STOP | x1 = id | 0 (the stop completes asynchronously; poll STATUS or take the control interrupt) |
//! | 0xc600_0013 | LOAD | x1 = id, x2 = address of an ELF in the caller's memory, x3 = its length | 0; the partition stays stopped and its next START enters the ELF |
//! | 0xc600_0014 | VDEV_READY | x1 = id, x2 = vring 0 (the caller receives), x3 = vring 1 (it sends), x4 = descriptors in each, x5 = alignment of their used rings | 0; the caller's side of the rpmsg link to the partition (`partita,remoteproc-vdev`) is live on these rings, in the caller's memory, in the legacy layout |
//! | 0xc600_0015 | VDEV_RESET | x1 = id | 0; once it returns the hypervisor no longer touches the rings |
//! | 0xc600_0016 | KICK | x1 = id, x2 = vring index | 0; the caller added buffers to that vring |
//! | 0xc600_0020 | CRASH | x1 = ESR_EL1, x2 = FAR_EL1, x3 = ELR_EL1 of the exception the caller could not handle (or 0) | does not return: the caller's partition stops and reads Crashed |
//!
//! Errors are negative in x0 ([`ControlError`]). The id is the domain's
//! `id` property in the SDT. CRASH needs no right and names no partition:
//! any guest may report its own crash (an OS's unexpected-exception or
//! panic path), which a controller then sees as it sees a fault the
//! hypervisor could not hand back. Its arguments are only logged.
//!
//! VDEV_READY, VDEV_RESET and KICK are the device side of Linux's
//! remoteproc virtio transport: the controller's driver allocates the
//! vrings, and the hypervisor raises its control interrupt when it has
//! used buffers; the same interrupt tells it of state changes.

use crate::sdt::Range;
use elf::abi;
use elf::endian::LittleEndian;
use elf::file::{Class, FileHeader};

pub const NULL: u32 = 0xc600_0000;
pub const STATUS: u32 = 0xc600_0010;
pub const START: u32 = 0xc600_0011;
pub const STOP: u32 = 0xc600_0012;
pub const LOAD: u32 = 0xc600_0013;
pub const VDEV_READY: u32 = 0xc600_0014;
pub const VDEV_RESET: u32 = 0xc600_0015;
pub const KICK: u32 = 0xc600_0016;
pub const CRASH: u32 = 0xc600_0020;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// Not a call of ours (SMCCC NOT_SUPPORTED).
    NotSupported = -1,
    /// No partition has that id.
    UnknownPartition = -2,
    /// The caller may not control that partition.
    Denied = -3,
    /// The partition is not in a state that allows the request.
    WrongState = -4,
    /// The image lies outside the caller's memory.
    BadAddress = -5,
    /// The image is not an ELF Partita can load, or a segment lies outside
    /// the target's memory or over its device tree.
    BadImage = -6,
    /// No link to that partition is the caller's remoteproc virtio device,
    /// or its rings are malformed (size, alignment) or the vring index is
    /// not 0 or 1.
    BadLink = -7,
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ControlError::NotSupported => "not supported",
            ControlError::UnknownPartition => "no partition has that id",
            ControlError::Denied => "the SDT gives the caller no control of that partition",
            ControlError::WrongState => "the partition is not in a state that allows it",
            ControlError::BadAddress => "the image is not inside the caller's memory",
            ControlError::BadImage => "the image cannot be loaded",
            ControlError::BadLink => {
                "no such remoteproc virtio device, or its rings or vring index are invalid"
            }
        })
    }
}

impl ControlError {
    pub fn code(self) -> u64 {
        self as i64 as u64
    }
}

/// A control call decoded from x0..x5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status {
        id: u32,
    },
    Start {
        id: u32,
    },
    Stop {
        id: u32,
    },
    Load {
        id: u32,
        addr: u64,
        len: u64,
    },
    VdevReady {
        id: u32,
        rings: [u64; 2],
        size: u64,
        align: u64,
    },
    VdevReset {
        id: u32,
    },
    Kick {
        id: u32,
        vring: u64,
    },
}

impl Request {
    /// `None` for a function ID that is not a control call.
    pub fn decode(x: [u64; 6]) -> Option<Result<Request, ControlError>> {
        if x[0] >> 32 != 0 || !(STATUS..=KICK).contains(&(x[0] as u32)) {
            return None;
        }
        // Ids are 32-bit in the SDT; anything wider names no partition.
        let Ok(id) = u32::try_from(x[1]) else {
            return Some(Err(ControlError::UnknownPartition));
        };
        Some(Ok(match x[0] as u32 {
            STATUS => Request::Status { id },
            START => Request::Start { id },
            STOP => Request::Stop { id },
            LOAD => Request::Load {
                id,
                addr: x[2],
                len: x[3],
            },
            VDEV_READY => Request::VdevReady {
                id,
                rings: [x[2], x[3]],
                size: x[4],
                align: x[5],
            },
            VDEV_RESET => Request::VdevReset { id },
            _ => Request::Kick { id, vring: x[2] },
        }))
    }

    pub fn id(&self) -> u32 {
        match *self {
            Request::Status { id }
            | Request::Start { id }
            | Request::Stop { id }
            | Request::Load { id, .. }
            | Request::VdevReady { id, .. }
            | Request::VdevReset { id }
            | Request::Kick { id, .. } => id,
        }
    }
}

/// Why an ELF was refused, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than its headers say, or not an ELF at all.
    Truncated,
    /// An ELF, but not a 64-bit little-endian AArch64 executable.
    Foreign,
    /// The program headers do not lie in the first [`HEAD_MAX`] bytes.
    Headers,
    TooManySegments,
    NoSegments,
    /// A segment's file bytes run past the image, or memsz < filesz.
    BadSegment {
        index: usize,
    },
    /// A segment outside the target's memory.
    Outside {
        addr: u64,
        len: u64,
    },
    /// A segment over the target's device tree.
    OverDeviceTree {
        addr: u64,
        len: u64,
    },
    /// The entry point is in no loaded segment.
    Entry(u64),
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ImageError::Truncated => f.write_str("not an ELF, or shorter than its headers"),
            ImageError::Foreign => f.write_str("not a 64-bit little-endian AArch64 executable"),
            ImageError::Headers => write!(f, "program headers beyond its first {HEAD_MAX} bytes"),
            ImageError::TooManySegments => {
                write!(f, "more than {SEGMENTS_MAX} loadable segments")
            }
            ImageError::NoSegments => f.write_str("no loadable segment"),
            ImageError::BadSegment { index } => {
                write!(f, "segment {index} runs past the file or its memory size")
            }
            ImageError::Outside { addr, len } => {
                write!(
                    f,
                    "segment {addr:#x}+{len:#x} is outside the partition's memory"
                )
            }
            ImageError::OverDeviceTree { addr, len } => {
                write!(
                    f,
                    "segment {addr:#x}+{len:#x} overlaps the partition's device tree"
                )
            }
            ImageError::Entry(e) => write!(f, "entry point {e:#x} is in no loaded segment"),
        }
    }
}

/// How much of an image is read to find its program headers.
pub const HEAD_MAX: usize = 4096;
pub const SEGMENTS_MAX: usize = 16;
/// An ELF64 program header.
const PHDR_SIZE: usize = 56;

/// One loadable segment: `file_len` bytes from `offset` in the image to
/// `dest`, then zeros up to `mem_len`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub file_len: u64,
    pub dest: u64,
    pub mem_len: u64,
}

/// Where an ELF's segments go and where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    pub entry: u64,
    segs: [Segment; SEGMENTS_MAX],
    n: usize,
}

impl LoadPlan {
    pub fn segments(&self) -> &[Segment] {
        &self.segs[..self.n]
    }
}

/// Plans loading an ELF of `len` bytes whose first bytes are `head` (at
/// most [`HEAD_MAX`], copied out of the caller's memory so that nothing
/// the caller changes later can alter what was checked) into a partition
/// with `memory`, whose device tree occupies `dtb`. A position-independent
/// image (ET_DYN) is placed at `base`; an executable (ET_EXEC) at its
/// physical addresses.
pub fn plan_elf(
    head: &[u8],
    len: u64,
    base: u64,
    memory: &[Range],
    dtb: Range,
) -> Result<LoadPlan, ImageError> {
    let ident = head.get(..abi::EI_NIDENT).ok_or(ImageError::Truncated)?;
    let ident = elf::file::parse_ident::<LittleEndian>(ident).map_err(|e| match e {
        elf::ParseError::UnsupportedElfEndianness(_) | elf::ParseError::UnsupportedElfClass(_) => {
            ImageError::Foreign
        }
        _ => ImageError::Truncated,
    })?;
    if ident.1 != Class::ELF64 {
        return Err(ImageError::Foreign);
    }
    let tail = head
        .get(abi::EI_NIDENT..abi::EI_NIDENT + elf::file::ELF64_EHDR_TAILSIZE)
        .ok_or(ImageError::Truncated)?;
    let ehdr = FileHeader::parse_tail(ident, tail).map_err(|_| ImageError::Truncated)?;
    if ehdr.e_machine != abi::EM_AARCH64 || !matches!(ehdr.e_type, abi::ET_EXEC | abi::ET_DYN) {
        return Err(ImageError::Foreign);
    }
    let table = ehdr
        .e_phoff
        .checked_add(u64::from(ehdr.e_phnum) * u64::from(ehdr.e_phentsize))
        .filter(|&end| end <= head.len() as u64 && end <= len)
        .ok_or(ImageError::Headers)?;
    if usize::from(ehdr.e_phentsize) != PHDR_SIZE {
        return Err(ImageError::Headers);
    }
    let phdrs = &head[ehdr.e_phoff as usize..table as usize];
    let shift = if ehdr.e_type == abi::ET_DYN { base } else { 0 };
    let mut plan = LoadPlan {
        entry: ehdr
            .e_entry
            .checked_add(shift)
            .ok_or(ImageError::Entry(ehdr.e_entry))?,
        segs: [Segment::default(); SEGMENTS_MAX],
        n: 0,
    };
    let table = elf::segment::SegmentTable::new(LittleEndian, Class::ELF64, phdrs);
    let mut entry_found = false;
    for (index, ph) in table
        .iter()
        .enumerate()
        .filter(|(_, p)| p.p_type == abi::PT_LOAD)
    {
        if plan.n == SEGMENTS_MAX {
            return Err(ImageError::TooManySegments);
        }
        let file_end = ph.p_offset.checked_add(ph.p_filesz);
        if ph.p_filesz > ph.p_memsz || file_end.is_none_or(|e| e > len) {
            return Err(ImageError::BadSegment { index });
        }
        let at = if shift != 0 { ph.p_vaddr } else { ph.p_paddr };
        let dest = at.checked_add(shift).ok_or(ImageError::Outside {
            addr: at,
            len: ph.p_memsz,
        })?;
        let seg = Range::new(dest, ph.p_memsz);
        if ph.p_memsz == 0 {
            continue;
        }
        if !crate::sdt::within(memory, dest, ph.p_memsz) {
            return Err(ImageError::Outside {
                addr: dest,
                len: ph.p_memsz,
            });
        }
        if seg.overlaps(&dtb) {
            return Err(ImageError::OverDeviceTree {
                addr: dest,
                len: ph.p_memsz,
            });
        }
        entry_found |= plan.entry >= dest && plan.entry - dest < ph.p_memsz;
        plan.segs[plan.n] = Segment {
            offset: ph.p_offset,
            file_len: ph.p_filesz,
            dest,
            mem_len: ph.p_memsz,
        };
        plan.n += 1;
    }
    if plan.n == 0 {
        return Err(ImageError::NoSegments);
    }
    if !entry_found {
        return Err(ImageError::Entry(plan.entry));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A minimal AArch64 ELF64 with the given (type, vaddr/paddr, filesz,
    /// memsz) load segments and entry.
    fn elf(e_type: u16, entry: u64, segs: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        b.extend_from_slice(&e_type.to_le_bytes());
        b.extend_from_slice(&abi::EM_AARCH64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&entry.to_le_bytes());
        b.extend_from_slice(&64u64.to_le_bytes()); // phoff
        b.extend_from_slice(&0u64.to_le_bytes()); // shoff
        b.extend_from_slice(&0u32.to_le_bytes()); // flags
        b.extend_from_slice(&64u16.to_le_bytes()); // ehsize
        b.extend_from_slice(&56u16.to_le_bytes()); // phentsize
        b.extend_from_slice(&(segs.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
        let data = 64 + 56 * segs.len() as u64;
        for &(addr, filesz, memsz) in segs {
            b.extend_from_slice(&abi::PT_LOAD.to_le_bytes());
            b.extend_from_slice(&5u32.to_le_bytes());
            for v in [data, addr, addr, filesz, memsz, 0x1000] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b.resize(
            b.len() + segs.iter().map(|s| s.1 as usize).max().unwrap_or(0),
            0xaa,
        );
        b
    }

    const MEM: [Range; 1] = [Range::new(0x4800_0000, 0x400_0000)];
    const DTB: Range = Range::new(0x4a00_0000, 0x20_0000);

    fn plan(b: &[u8]) -> Result<LoadPlan, ImageError> {
        plan_elf(
            &b[..b.len().min(HEAD_MAX)],
            b.len() as u64,
            0x4800_0000,
            &MEM,
            DTB,
        )
    }

    #[test]
    fn executables_load_at_their_addresses_and_pies_at_the_base() {
        let p = plan(&elf(
            abi::ET_EXEC,
            0x4810_0000,
            &[(0x4810_0000, 0x100, 0x2000)],
        ))
        .unwrap();
        assert_eq!(p.entry, 0x4810_0000);
        assert_eq!(
            p.segments(),
            [Segment {
                offset: 120,
                file_len: 0x100,
                dest: 0x4810_0000,
                mem_len: 0x2000
            }]
        );
        let p = plan(&elf(abi::ET_DYN, 0x40, &[(0, 0x100, 0x100)])).unwrap();
        assert_eq!((p.entry, p.segments()[0].dest), (0x4800_0040, 0x4800_0000));
    }

    #[test]
    fn bad_images_are_refused_with_their_reason() {
        let ok = elf(abi::ET_EXEC, 0x4810_0000, &[(0x4810_0000, 0x100, 0x100)]);
        assert_eq!(plan(&ok[..40]), Err(ImageError::Truncated));
        assert_eq!(plan(b"#!/bin/sh\n"), Err(ImageError::Truncated));
        let mut foreign = ok.clone();
        foreign[18] = 62; // x86-64
        assert_eq!(plan(&foreign), Err(ImageError::Foreign));
        let mut big_endian = ok.clone();
        big_endian[5] = 2;
        assert_eq!(plan(&big_endian), Err(ImageError::Foreign));
        // The segment's bytes run past a truncated file.
        assert_eq!(
            plan(&ok[..ok.len() - 1]),
            Err(ImageError::BadSegment { index: 0 })
        );
        assert_eq!(
            plan(&elf(abi::ET_EXEC, 0x1000, &[(0x1000, 0x10, 0x10)])),
            Err(ImageError::Outside {
                addr: 0x1000,
                len: 0x10
            })
        );
        assert_eq!(
            plan(&elf(
                abi::ET_EXEC,
                0x4bff_fff0,
                &[(0x4bff_fff0, 0x10, 0x20)]
            )),
            Err(ImageError::Outside {
                addr: 0x4bff_fff0,
                len: 0x20
            })
        );
        assert_eq!(
            plan(&elf(
                abi::ET_EXEC,
                0x49ff_f000,
                &[(0x49ff_f000, 0x10, 0x2000)]
            )),
            Err(ImageError::OverDeviceTree {
                addr: 0x49ff_f000,
                len: 0x2000
            })
        );
        assert_eq!(
            plan(&elf(
                abi::ET_EXEC,
                0x4900_0000,
                &[(0x4810_0000, 0x10, 0x10)]
            )),
            Err(ImageError::Entry(0x4900_0000))
        );
        assert_eq!(
            plan(&elf(abi::ET_EXEC, u64::MAX, &[(u64::MAX - 4, 0x10, 0x10)])),
            Err(ImageError::Outside {
                addr: u64::MAX - 4,
                len: 0x10
            })
        );
        assert_eq!(
            plan(&elf(abi::ET_EXEC, 0, &[])),
            Err(ImageError::NoSegments)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let base = elf(abi::ET_EXEC, 0x4810_0000, &[(0x4810_0000, 0x100, 0x100); 3]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % b.len() as u64) as usize;
                b[i] = (seed >> 32) as u8;
            }
            let len = (seed >> 40) as usize % (b.len() + 1);
            let _ = plan(&b[..len]);
        }
    }

    #[test]
    fn calls_decode_and_wide_ids_name_no_partition() {
        assert_eq!(
            Request::decode([u64::from(LOAD), 2, 0x4800_0000, 0x1000, 0, 0]),
            Some(Ok(Request::Load {
                id: 2,
                addr: 0x4800_0000,
                len: 0x1000
            }))
        );
        assert_eq!(
            Request::decode([
                u64::from(VDEV_READY),
                2,
                0x5000_0000,
                0x5000_4000,
                256,
                4096
            ]),
            Some(Ok(Request::VdevReady {
                id: 2,
                rings: [0x5000_0000, 0x5000_4000],
                size: 256,
                align: 4096
            }))
        );
        assert_eq!(
            Request::decode([u64::from(KICK), 2, 1, 0, 0, 0]),
            Some(Ok(Request::Kick { id: 2, vring: 1 }))
        );
        assert_eq!(
            Request::decode([u64::from(STOP), 1 << 32, 0, 0, 0, 0]),
            Some(Err(ControlError::UnknownPartition))
        );
        assert_eq!(Request::decode([u64::from(NULL), 0, 0, 0, 0, 0]), None);
        assert_eq!(Request::decode([0xc600_0017, 0, 0, 0, 0, 0]), None);
        assert_eq!(Request::decode([0x8400_0000, 0, 0, 0, 0, 0]), None);
        assert_eq!(ControlError::WrongState.code() as i64, -4);
        assert_eq!(ControlError::BadLink.code() as i64, -7);
    }
}
