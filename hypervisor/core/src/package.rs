//! The boot package: the System Device Tree and every domain's images,
//! appended to the hypervisor image so one bootloader load brings all.
//!
//! Layout (little-endian): magic `PARTITA\0`, u32 version, u32 count, then
//! `count` entries of { name: 32 bytes NUL-padded, offset: u64 from the
//! package start, size: u64 }, then the blobs, each 4 KiB-aligned.

use alloc::vec::Vec;

pub const MAGIC: &[u8; 8] = b"PARTITA\0";
pub const VERSION: u32 = 1;
const HEADER: usize = 16;
const ENTRY: usize = 48;
const NAME: usize = 32;
/// The entry holding the System Device Tree.
pub const SDT: &str = "sdt";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageError {
    NoMagic,
    Version(u32),
    /// An entry's name, offset or size does not fit the package.
    BadEntry(usize),
    NameTooLong,
    /// At least this many bytes are needed to read the header and table.
    Truncated(usize),
}

impl core::fmt::Display for PackageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PackageError::NoMagic => write!(f, "no boot package after the hypervisor image"),
            PackageError::Version(v) => write!(f, "boot package version {v}, expected {VERSION}"),
            PackageError::BadEntry(i) => {
                write!(f, "boot package entry {i} lies outside the package")
            }
            PackageError::NameTooLong => write!(f, "entry names are at most {} bytes", NAME - 1),
            PackageError::Truncated(n) => write!(f, "boot package shorter than its {n}-byte table"),
        }
    }
}

/// How many bytes the package starting `prefix` spans, from its header and
/// entry table alone; `Truncated(n)` asks for a prefix of `n` bytes.
pub fn span(prefix: &[u8]) -> Result<usize, PackageError> {
    if prefix.len() < HEADER {
        return Err(PackageError::Truncated(HEADER));
    }
    if &prefix[..8] != MAGIC {
        return Err(PackageError::NoMagic);
    }
    let count = u32_at(prefix, 12) as usize;
    let table = count
        .checked_mul(ENTRY)
        .and_then(|t| t.checked_add(HEADER))
        .ok_or(PackageError::BadEntry(0))?;
    if prefix.len() < table {
        return Err(PackageError::Truncated(table));
    }
    let mut end = table;
    for i in 0..count {
        let e = HEADER + i * ENTRY;
        let (off, size) = (u64_at(prefix, e + NAME), u64_at(prefix, e + NAME + 8));
        let last = off
            .checked_add(size)
            .and_then(|x| usize::try_from(x).ok())
            .ok_or(PackageError::BadEntry(i))?;
        end = end.max(last);
    }
    Ok(end)
}

/// A parsed package borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Package<'a> {
    bytes: &'a [u8],
    count: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

impl<'a> Package<'a> {
    /// Checks the header and that every entry lies inside `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PackageError> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(PackageError::NoMagic);
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(PackageError::Version(version));
        }
        let count = u32_at(bytes, 12) as usize;
        let table_end = count.checked_mul(ENTRY).and_then(|t| t.checked_add(HEADER));
        if table_end.is_none_or(|e| e > bytes.len()) {
            return Err(PackageError::BadEntry(0));
        }
        let p = Package { bytes, count };
        for i in 0..count {
            let (off, size) = p.span(i);
            if off.checked_add(size).is_none_or(|e| e > bytes.len() as u64) {
                return Err(PackageError::BadEntry(i));
            }
        }
        Ok(p)
    }

    fn span(&self, i: usize) -> (u64, u64) {
        let e = HEADER + i * ENTRY;
        (
            u64_at(self.bytes, e + NAME),
            u64_at(self.bytes, e + NAME + 8),
        )
    }

    fn name(&self, i: usize) -> &'a [u8] {
        let e = HEADER + i * ENTRY;
        let n = &self.bytes[e..e + NAME];
        &n[..n.iter().position(|b| *b == 0).unwrap_or(NAME)]
    }

    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        (0..self.count)
            .find(|&i| self.name(i) == name.as_bytes())
            .map(|i| {
                let (off, size) = self.span(i);
                &self.bytes[off as usize..(off + size) as usize]
            })
    }

    /// Total bytes, table and blobs.
    pub fn len(&self) -> usize {
        (0..self.count)
            .map(|i| self.span(i))
            .map(|(o, s)| (o + s) as usize)
            .max()
            .unwrap_or(HEADER)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.count).map(|i| core::str::from_utf8(self.name(i)).unwrap_or("?"))
    }
}

/// Builds a package from (name, bytes) pairs.
pub fn build(entries: &[(&str, &[u8])]) -> Result<Vec<u8>, PackageError> {
    let align = |n: usize| (n + 4095) & !4095;
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let mut off = align(HEADER + entries.len() * ENTRY);
    for (name, data) in entries {
        if name.len() >= NAME {
            return Err(PackageError::NameTooLong);
        }
        let mut n = [0u8; NAME];
        n[..name.len()].copy_from_slice(name.as_bytes());
        out.extend_from_slice(&n);
        out.extend_from_slice(&(off as u64).to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        off = align(off + data.len());
    }
    for (_, data) in entries {
        out.resize(align(out.len()), 0);
        out.extend_from_slice(data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = build(&[("sdt", b"tree"), ("linux", &[7u8; 5000])]).unwrap();
        let q = Package::parse(&p).unwrap();
        assert_eq!(q.get("sdt"), Some(&b"tree"[..]));
        assert_eq!(q.get("linux").map(|l| l.len()), Some(5000));
        assert_eq!(q.get("rtos"), None);
        assert_eq!(q.names().collect::<Vec<_>>(), ["sdt", "linux"]);
        assert_eq!(q.len(), p.len());
        assert_eq!(span(&p[..4]), Err(PackageError::Truncated(16)));
        assert_eq!(span(&p[..16]), Err(PackageError::Truncated(16 + 2 * 48)));
        assert_eq!(span(&p[..200]), Ok(p.len()));
    }

    #[test]
    fn refuses_truncated_or_foreign_bytes() {
        let p = build(&[("sdt", &[1u8; 100])]).unwrap();
        assert_eq!(
            Package::parse(&p[..p.len() - 1]).unwrap_err(),
            PackageError::BadEntry(0)
        );
        assert_eq!(
            Package::parse(b"PARTITA").unwrap_err(),
            PackageError::NoMagic
        );
        let mut v = p.clone();
        v[8] = 9;
        assert_eq!(Package::parse(&v).unwrap_err(), PackageError::Version(9));
        let mut v = p.clone();
        v[12] = 0xff; // count far beyond the table
        assert_eq!(Package::parse(&v).unwrap_err(), PackageError::BadEntry(0));
        assert_eq!(
            build(&[(&"x".repeat(32), b"")]).unwrap_err(),
            PackageError::NameTooLong
        );
    }
}
