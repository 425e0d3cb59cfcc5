//! A structural check of a flattened device tree (the DTB format, version
//! 17, of the Devicetree Specification), run before any parser walks it.
//!
//! The `fdt` crate trusts the blob it is given: an offset or a length out
//! of bounds makes it slice past the end, a name without NUL or not UTF-8
//! makes it unwrap, a property after a subnode or a NOP token in some
//! places makes it assert, and deep nesting overruns its fixed stack of
//! parents. [`check`] refuses all of that, so a blob either parses or is
//! refused with a [`DtbError`] saying where and why. It reads every byte at
//! most a bounded number of times, without recursion or allocation, so it
//! also runs at boot before there is a heap.
//!
//! What it accepts is stricter than the specification in two ways the
//! reader needs: no NOP tokens (the `fdt` crate does not skip them
//! everywhere) and at most [`MAX_DEPTH`] levels of nodes.

use core::fmt;

/// Bytes of a version-17 header: ten big-endian words.
pub const HEADER_SIZE: usize = 40;
pub const MAGIC: u32 = 0xd00d_feed;
/// Deepest node nesting accepted, the root being level 1. Real boards
/// use about 6; the `fdt` crate's own walker stops at 63.
pub const MAX_DEPTH: usize = 32;
/// Longest node or property name accepted, in bytes (the specification's
/// names are at most 31 characters, plus a unit address for nodes).
pub const MAX_NAME: usize = 255;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// The parts of a blob that the header places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    Header,
    Reservations,
    Structure,
    Strings,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Block::Header => "header",
            Block::Reservations => "memory reservation block",
            Block::Structure => "structure block",
            Block::Strings => "strings block",
        })
    }
}

/// What is wrong at one token of the structure block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFault {
    /// A word that is no token.
    Unknown(u32),
    /// FDT_NOP, which the reader does not skip everywhere.
    Nop,
    /// The block ends inside a token or before FDT_END.
    Truncated,
    /// A node name without its NUL inside the block (or longer than
    /// [`MAX_NAME`]).
    NameUnterminated,
    /// A node name that is empty or has a character the specification
    /// does not allow (`/` among them).
    BadNodeName,
    /// The first node (the root) has a name.
    RootNamed,
    /// A property whose value runs past the structure block.
    ValueBeyondBlock { len: u32 },
    /// A property name offset outside the strings block.
    NameOffset { nameoff: u32 },
    /// A property name without its NUL inside the strings block (or longer
    /// than [`MAX_NAME`]).
    PropertyNameUnterminated { nameoff: u32 },
    /// A property name that is empty or has a character the specification
    /// does not allow.
    BadPropertyName { nameoff: u32 },
    /// A property before the root node or after it ended.
    PropertyOutsideNode,
    /// A property after a subnode of the same node.
    PropertyAfterSubnode,
    /// A node more than [`MAX_DEPTH`] levels deep.
    TooDeep,
    /// FDT_END_NODE with no node open.
    EndWithoutNode,
    /// A second top-level node after the root ended.
    SecondRoot,
    /// FDT_END before any node.
    NoRoot,
    /// FDT_END with this many nodes still open.
    Unclosed { depth: u32 },
    /// Bytes of the structure block after FDT_END.
    AfterEnd,
}

/// A blob refused, with the byte offset (from the blob's start) where
/// the fault lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// Shorter than a header.
    Truncated {
        len: usize,
    },
    BadMagic {
        magic: u32,
    },
    /// Not version 17 (or later and readable as 17).
    Version {
        version: u32,
        last_comp: u32,
    },
    /// `totalsize` is smaller than a header or larger than the blob.
    TotalSize {
        totalsize: u32,
        len: usize,
    },
    /// A block outside `totalsize`, over the header, or misaligned.
    Block {
        block: Block,
        offset: u32,
        size: u32,
    },
    /// Two blocks share bytes.
    Overlap {
        a: Block,
        b: Block,
    },
    /// No terminating (0, 0) entry in the memory reservation block
    /// starting at `offset` before the end of the blob.
    Reservations {
        offset: u32,
    },
    Token {
        offset: u32,
        fault: TokenFault,
    },
}

impl fmt::Display for TokenFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TokenFault::Unknown(t) => write!(f, "unknown token {t:#x}"),
            TokenFault::Nop => f.write_str("FDT_NOP token (not supported)"),
            TokenFault::Truncated => f.write_str("structure block ends before FDT_END"),
            TokenFault::NameUnterminated => write!(
                f,
                "node name without NUL inside the block (or over {MAX_NAME} bytes)"
            ),
            TokenFault::BadNodeName => f.write_str("node name empty or with a character not allowed"),
            TokenFault::RootNamed => f.write_str("the root node has a name"),
            TokenFault::ValueBeyondBlock { len } => {
                write!(f, "property value of {len} bytes runs past the structure block")
            }
            TokenFault::NameOffset { nameoff } => {
                write!(f, "property name offset {nameoff:#x} is outside the strings block")
            }
            TokenFault::PropertyNameUnterminated { nameoff } => write!(
                f,
                "property name at strings offset {nameoff:#x} has no NUL inside the block (or is over {MAX_NAME} bytes)"
            ),
            TokenFault::BadPropertyName { nameoff } => write!(
                f,
                "property name at strings offset {nameoff:#x} is empty or has a character not allowed"
            ),
            TokenFault::PropertyOutsideNode => f.write_str("property outside the root node"),
            TokenFault::PropertyAfterSubnode => f.write_str("property after a subnode"),
            TokenFault::TooDeep => write!(f, "nodes nested more than {MAX_DEPTH} deep"),
            TokenFault::EndWithoutNode => f.write_str("FDT_END_NODE with no node open"),
            TokenFault::SecondRoot => f.write_str("a second root node"),
            TokenFault::NoRoot => f.write_str("FDT_END before any node"),
            TokenFault::Unclosed { depth } => write!(f, "FDT_END with {depth} node(s) still open"),
            TokenFault::AfterEnd => f.write_str("bytes after FDT_END"),
        }
    }
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DtbError::Truncated { len } => {
                write!(f, "{len} bytes, shorter than a {HEADER_SIZE}-byte header")
            }
            DtbError::BadMagic { magic } => {
                write!(f, "at offset 0x0: magic {magic:#010x}, not {MAGIC:#010x}")
            }
            DtbError::Version { version, last_comp } => write!(
                f,
                "at offset 0x14: version {version} (compatible with {last_comp}); version 17 is read"
            ),
            DtbError::TotalSize { totalsize, len } => write!(
                f,
                "at offset 0x4: totalsize {totalsize:#x} for a blob of {len:#x} bytes"
            ),
            DtbError::Block {
                block,
                offset,
                size,
            } => write!(
                f,
                "{block} at offset {offset:#x}, {size:#x} bytes, is misaligned, over the header or beyond totalsize"
            ),
            DtbError::Overlap { a, b } => write!(f, "{a} and {b} overlap"),
            DtbError::Reservations { offset } => write!(
                f,
                "memory reservation block at offset {offset:#x} has no terminating entry"
            ),
            DtbError::Token { offset, fault } => write!(f, "at offset {offset:#x}: {fault}"),
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    // One bounds check and one load: the check reads a word per token.
    let mut w = [0; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

/// The blob's `totalsize`, from its header alone: how much to read of a
/// tree known only by its address.
pub fn total_size(header: &[u8]) -> Result<usize, DtbError> {
    if header.len() < HEADER_SIZE {
        return Err(DtbError::Truncated { len: header.len() });
    }
    let magic = be32(header, 0);
    if magic != MAGIC {
        return Err(DtbError::BadMagic { magic });
    }
    Ok(be32(header, 4) as usize)
}

/// The bytes of `extra` and every ASCII letter and digit, as a table:
/// names are most of what the check reads, a lookup per byte.
const fn name_chars(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

const NODE_NAME_CHARS: [bool; 256] = name_chars(b",._+-@");
const PROPERTY_NAME_CHARS: [bool; 256] = name_chars(b",._+?#-");

/// Property names already found good, by offset, so that the names every
/// node shares (`compatible`, `reg`, `phandle`) are read once:
/// direct-mapped, on the stack (the check allocates nothing).
struct GoodNames<'a>([(u32, &'a [u8]); 64]);

impl<'a> GoodNames<'a> {
    /// An empty entry holds `u32::MAX`, which no name in a block
    /// `totalsize` (a `u32`) bounds can start at.
    fn new() -> Self {
        GoodNames([(u32::MAX, &[]); 64])
    }

    fn get(&self, nameoff: u32) -> Option<&'a [u8]> {
        let (off, name) = self.0[nameoff as usize % 64];
        (off == nameoff).then_some(name)
    }

    fn insert(&mut self, nameoff: u32, name: &'a [u8]) {
        self.0[nameoff as usize % 64] = (nameoff, name);
    }
}

/// What a [`walk`] reports, in the blob's order, each item only after it
/// passed the check. Names are the blob's own bytes (without NUL), every
/// one of them a character the specification allows, so ASCII: a visitor
/// that needs a `str` converts only those it keeps (a UTF-8 check of every
/// name at boot was about a sixth of the checks' instructions).
pub trait Visit<'a> {
    fn reservation(&mut self, _base: u64, _size: u64) {}
    fn begin_node(&mut self, _name: &'a [u8]) {}
    fn property(&mut self, _name: &'a [u8], _value: &'a [u8]) {}
    fn end_node(&mut self) {}
}

/// The check alone.
struct Nothing;
impl Visit<'_> for Nothing {}

/// What is wrong with a name.
enum NameFault {
    /// No NUL within [`MAX_NAME`] bytes and inside the block.
    Unterminated,
    /// A NUL ends it, but a character before is not in the table.
    BadCharacter,
}

/// The name at `from` in `b`, without its NUL, if a NUL ends it within
/// [`MAX_NAME`] bytes and inside `b` and every character before is in
/// `allowed` (which has no NUL).
fn name<'a>(b: &'a [u8], from: usize, allowed: &[bool; 256]) -> Result<&'a [u8], NameFault> {
    let rest = b.get(from..).unwrap_or_default();
    let rest = &rest[..rest.len().min(MAX_NAME + 1)];
    // One pass over a good name, the usual case: the first character not
    // allowed is its NUL. (A search for the NUL and then a pass over the
    // characters was almost half of a check.)
    match rest.iter().position(|&c| !allowed[usize::from(c)]) {
        Some(n) if rest[n] == 0 => Ok(&rest[..n]),
        _ if rest.contains(&0) => Err(NameFault::BadCharacter),
        _ => Err(NameFault::Unterminated),
    }
}

/// Checks the whole blob: header, block placement, memory reservations
/// and the token stream. See the module's text for what it accepts.
pub fn check(blob: &[u8]) -> Result<(), DtbError> {
    walk(blob, &mut Nothing)
}

/// [`check`], telling `v` of each reservation, node and property as the
/// check passes it: one pass both checks a blob and reads it. On an error
/// `v` has seen a prefix of the blob.
pub fn walk<'a>(blob: &'a [u8], v: &mut impl Visit<'a>) -> Result<(), DtbError> {
    let totalsize = total_size(blob)?;
    let h = |i: usize| be32(blob, 4 * i);
    let (version, last_comp) = (h(5), h(6));
    if version < 17 || last_comp > 17 {
        return Err(DtbError::Version { version, last_comp });
    }
    if totalsize < HEADER_SIZE || totalsize > blob.len() {
        return Err(DtbError::TotalSize {
            totalsize: totalsize as u32,
            len: blob.len(),
        });
    }
    let blob = &blob[..totalsize];
    let (off_struct, off_strings, off_rsv) = (h(2), h(3), h(4));
    let (size_strings, size_struct) = (h(8), h(9));

    // Blocks inside totalsize, after the header, aligned as the
    // specification says (the structure block's tokens are 4-aligned
    // relative to the blob).
    let place = |block, offset: u32, size: u32, align: u32| {
        let end = u64::from(offset) + u64::from(size);
        if (offset as usize) < HEADER_SIZE
            || end > totalsize as u64
            || !offset.is_multiple_of(align)
            || !size.is_multiple_of(align.min(4))
        {
            return Err(DtbError::Block {
                block,
                offset,
                size,
            });
        }
        Ok((offset as usize, end as usize))
    };
    let strings = place(Block::Strings, off_strings, size_strings, 1)?;
    let structure = place(Block::Structure, off_struct, size_struct, 4)?;
    let rsv_start = place(Block::Reservations, off_rsv, 0, 8)?.0;

    // Reservations: 16-byte (address, size) entries up to a (0, 0) one.
    let mut at = rsv_start;
    let rsv = loop {
        if at + 16 > totalsize {
            return Err(DtbError::Reservations { offset: off_rsv });
        }
        if blob[at..at + 16].iter().all(|&b| b == 0) {
            break (rsv_start, at + 16);
        }
        at += 16;
    };

    let blocks = [
        (Block::Reservations, rsv),
        (Block::Structure, structure),
        (Block::Strings, strings),
    ];
    for (i, &(a, ra)) in blocks.iter().enumerate() {
        for &(b, rb) in &blocks[i + 1..] {
            let nonempty = ra.0 < ra.1 && rb.0 < rb.1;
            if nonempty && ra.0 < rb.1 && rb.0 < ra.1 {
                return Err(DtbError::Overlap { a, b });
            }
        }
    }

    // Told only now that the blocks are known apart; an empty entry says
    // nothing and the reader skips it.
    for e in blob[rsv.0..rsv.1 - 16].chunks_exact(16) {
        let word = |i: usize| (u64::from(be32(e, i)) << 32) | u64::from(be32(e, i + 4));
        v.reservation(word(0), word(8));
    }
    tokens(
        &blob[structure.0..structure.1],
        structure.0,
        &blob[strings.0..strings.1],
        v,
    )
}

/// Walks the structure block `s` (at `base` in the blob) once.
fn tokens<'a>(
    s: &'a [u8],
    base: usize,
    strings: &'a [u8],
    v: &mut impl Visit<'a>,
) -> Result<(), DtbError> {
    let fail = |pos: usize, fault| {
        Err(DtbError::Token {
            offset: (base + pos) as u32,
            fault,
        })
    };
    let (mut pos, mut depth, mut seen_root) = (0usize, 0usize, false);
    let mut good = GoodNames::new();
    // Whether the open node already had a subnode (its properties are over).
    let mut after_subnode = false;
    loop {
        if pos + 4 > s.len() {
            return fail(pos, TokenFault::Truncated);
        }
        match be32(s, pos) {
            FDT_BEGIN_NODE => {
                if depth == 0 && seen_root {
                    return fail(pos, TokenFault::SecondRoot);
                }
                let name = match name(s, pos + 4, &NODE_NAME_CHARS) {
                    Err(NameFault::Unterminated) => return fail(pos, TokenFault::NameUnterminated),
                    Err(NameFault::BadCharacter) if depth == 0 => {
                        return fail(pos, TokenFault::RootNamed)
                    }
                    Ok(name) if depth == 0 && !name.is_empty() => {
                        return fail(pos, TokenFault::RootNamed)
                    }
                    Ok(name) if depth == 0 || !name.is_empty() => name,
                    _ => return fail(pos, TokenFault::BadNodeName),
                };
                let len = name.len();
                depth += 1;
                if depth > MAX_DEPTH {
                    return fail(pos, TokenFault::TooDeep);
                }
                seen_root = true;
                after_subnode = false;
                v.begin_node(name);
                pos = (pos + 4 + len + 1).next_multiple_of(4);
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return fail(pos, TokenFault::EndWithoutNode);
                }
                depth -= 1;
                after_subnode = true;
                v.end_node();
                pos += 4;
            }
            FDT_PROP => {
                if depth == 0 {
                    return fail(pos, TokenFault::PropertyOutsideNode);
                }
                if after_subnode {
                    return fail(pos, TokenFault::PropertyAfterSubnode);
                }
                if pos + 12 > s.len() {
                    return fail(pos, TokenFault::Truncated);
                }
                let (len, nameoff) = (be32(s, pos + 4), be32(s, pos + 8));
                let value_end = (pos + 12) as u64 + u64::from(len);
                if value_end > s.len() as u64 {
                    return fail(pos, TokenFault::ValueBeyondBlock { len });
                }
                if nameoff as usize >= strings.len() {
                    return fail(pos, TokenFault::NameOffset { nameoff });
                }
                let name = match good.get(nameoff) {
                    Some(name) => name,
                    None => {
                        let name = match name(strings, nameoff as usize, &PROPERTY_NAME_CHARS) {
                            Ok(name) if !name.is_empty() => name,
                            Err(NameFault::Unterminated) => {
                                return fail(pos, TokenFault::PropertyNameUnterminated { nameoff })
                            }
                            _ => return fail(pos, TokenFault::BadPropertyName { nameoff }),
                        };
                        good.insert(nameoff, name);
                        name
                    }
                };
                v.property(name, &s[pos + 12..value_end as usize]);
                pos = (value_end as usize).next_multiple_of(4);
            }
            FDT_NOP => return fail(pos, TokenFault::Nop),
            FDT_END => {
                if !seen_root {
                    return fail(pos, TokenFault::NoRoot);
                }
                if depth != 0 {
                    return fail(
                        pos,
                        TokenFault::Unclosed {
                            depth: depth as u32,
                        },
                    );
                }
                if pos + 4 != s.len() {
                    return fail(pos + 4, TokenFault::AfterEnd);
                }
                return Ok(());
            }
            t => return fail(pos, TokenFault::Unknown(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn word(s: &mut Vec<u8>, w: u32) {
        s.extend_from_slice(&w.to_be_bytes());
    }

    fn pad(s: &mut Vec<u8>) {
        while !s.len().is_multiple_of(4) {
            s.push(0);
        }
    }

    fn begin(s: &mut Vec<u8>, name: &str) {
        word(s, FDT_BEGIN_NODE);
        s.extend_from_slice(name.as_bytes());
        s.push(0);
        pad(s);
    }

    fn prop(s: &mut Vec<u8>, nameoff: u32, value: &[u8]) {
        word(s, FDT_PROP);
        word(s, value.len() as u32);
        word(s, nameoff);
        s.extend_from_slice(value);
        pad(s);
    }

    /// Strings block of the trees below: "compatible" at 0, "reg" at 11.
    const STRINGS: &[u8] = b"compatible\0reg\0";

    /// `/ { compatible = "a"; cpu@0 { reg = <0>; }; };`
    fn structure() -> Vec<u8> {
        let mut s = Vec::new();
        begin(&mut s, "");
        prop(&mut s, 0, b"a\0");
        begin(&mut s, "cpu@0");
        prop(&mut s, 11, &[0; 4]);
        word(&mut s, FDT_END_NODE);
        word(&mut s, FDT_END_NODE);
        word(&mut s, FDT_END);
        s
    }

    /// Header, an empty reservation block, the structure and strings
    /// blocks, as dtc lays them out.
    fn blob(structure: &[u8], strings: &[u8]) -> Vec<u8> {
        let off_struct = (HEADER_SIZE + 16) as u32;
        let off_strings = off_struct + structure.len() as u32;
        let total = off_strings + strings.len() as u32;
        let mut b = Vec::new();
        for w in [
            MAGIC,
            total,
            off_struct,
            off_strings,
            HEADER_SIZE as u32,
            17,
            16,
            0,
            strings.len() as u32,
            structure.len() as u32,
        ] {
            word(&mut b, w);
        }
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(structure);
        b.extend_from_slice(strings);
        b
    }

    fn set(b: &mut [u8], at: usize, w: u32) {
        b[at..at + 4].copy_from_slice(&w.to_be_bytes());
    }

    /// Names found good are remembered by offset: a bad name at an offset
    /// sharing the cache slot of a good one is still found bad.
    #[test]
    fn a_remembered_good_name_vouches_only_for_its_own_offset() {
        let mut strings = b"compatible\0".to_vec();
        strings.resize(64, b'a');
        strings.extend_from_slice(b"b/d\0");
        let mut s = Vec::new();
        begin(&mut s, "");
        prop(&mut s, 0, b"a\0");
        prop(&mut s, 0, b"b\0");
        prop(&mut s, 64, &[]);
        word(&mut s, FDT_END_NODE);
        word(&mut s, FDT_END);
        assert_eq!(
            token_fault(&blob(&s, &strings)),
            TokenFault::BadPropertyName { nameoff: 64 }
        );
        s.truncate(s.len() - 8 - 12);
        word(&mut s, FDT_END_NODE);
        word(&mut s, FDT_END);
        assert_eq!(check(&blob(&s, &strings)), Ok(()));
    }

    fn token_fault(b: &[u8]) -> TokenFault {
        match check(b) {
            Err(DtbError::Token { fault, .. }) => fault,
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn a_well_formed_tree_passes_and_the_fdt_crate_reads_it() {
        let b = blob(&structure(), STRINGS);
        assert_eq!(check(&b), Ok(()));
        let f = fdt::Fdt::new(&b).unwrap();
        assert!(f.find_node("/cpu@0").unwrap().property("reg").is_some());
        // Trailing bytes beyond totalsize are not the tree's.
        let mut longer = b.clone();
        longer.extend_from_slice(&[0xff; 7]);
        assert_eq!(check(&longer), Ok(()));
        assert_eq!(total_size(&b), Ok(b.len()));
    }

    #[test]
    fn refuses_bad_headers() {
        let b = blob(&structure(), STRINGS);
        assert_eq!(check(&b[..39]), Err(DtbError::Truncated { len: 39 }));
        let mut v = b.clone();
        v[0] = 0;
        assert_eq!(check(&v), Err(DtbError::BadMagic { magic: 0x000d_feed }));
        let mut v = b.clone();
        set(&mut v, 20, 16);
        assert!(matches!(
            check(&v),
            Err(DtbError::Version { version: 16, .. })
        ));
        let mut v = b.clone();
        set(&mut v, 24, 18);
        assert!(matches!(
            check(&v),
            Err(DtbError::Version { last_comp: 18, .. })
        ));
        assert!(matches!(
            check(&b[..b.len() - 1]),
            Err(DtbError::TotalSize { .. })
        ));
        let mut v = b.clone();
        set(&mut v, 4, 8);
        assert!(matches!(
            check(&v),
            Err(DtbError::TotalSize { totalsize: 8, .. })
        ));
    }

    #[test]
    fn refuses_blocks_out_of_place() {
        let b = blob(&structure(), STRINGS);
        let block = |v: &[u8]| match check(v) {
            Err(DtbError::Block { block, .. }) => block,
            r => panic!("{r:?}"),
        };
        let mut v = b.clone();
        set(&mut v, 8, 0xffff_fff0); // structure offset
        assert_eq!(block(&v), Block::Structure);
        let mut v = b.clone();
        set(&mut v, 36, 0xffff_fffc); // structure size: offset + size wraps u32
        assert_eq!(block(&v), Block::Structure);
        let mut v = b.clone();
        set(&mut v, 8, 58); // misaligned
        assert_eq!(block(&v), Block::Structure);
        let mut v = b.clone();
        set(&mut v, 12, 8); // strings over the header
        assert_eq!(block(&v), Block::Strings);
        let mut v = b.clone();
        set(&mut v, 32, 0x1000); // strings size
        assert_eq!(block(&v), Block::Strings);
        let mut v = b.clone();
        set(&mut v, 16, 44); // reservations misaligned
        assert_eq!(block(&v), Block::Reservations);
        let mut v = b.clone();
        set(&mut v, 12, 60); // strings inside the structure block
        assert_eq!(
            check(&v),
            Err(DtbError::Overlap {
                a: Block::Structure,
                b: Block::Strings
            })
        );
        let mut v = b.clone();
        v[40] = 1; // reservation entry not (0, 0): runs into the structure
        assert!(matches!(
            check(&v),
            Err(DtbError::Overlap { .. } | DtbError::Reservations { .. })
        ));
        let mut v = b.clone();
        let near_end = ((v.len() - 8) & !7) as u32;
        set(&mut v, 16, near_end);
        assert_eq!(check(&v), Err(DtbError::Reservations { offset: near_end }));
    }

    #[test]
    fn refuses_malformed_token_streams() {
        let s = structure();
        let at = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = s.clone();
            f(&mut v);
            token_fault(&blob(&v, STRINGS))
        };
        // Offsets into `structure()`: root BEGIN_NODE 0, its name 4, the
        // compatible PROP 8 (len 12, nameoff 16, value 20), cpu@0 BEGIN_NODE
        // 24 (name 28..34), reg PROP 36 (nameoff 44), END_NODEs 52 and
        // 56, END 60.
        assert_eq!(at(&|v| set(v, 8, 7)), TokenFault::Unknown(7));
        assert_eq!(at(&|v| set(v, 8, FDT_NOP)), TokenFault::Nop);
        assert_eq!(at(&|v| v[4] = b'x'), TokenFault::RootNamed);
        assert_eq!(at(&|v| v[31] = b'/'), TokenFault::BadNodeName);
        assert_eq!(at(&|v| v[28] = 0), TokenFault::BadNodeName);
        assert_eq!(
            at(&|v| set(v, 12, 0x100)),
            TokenFault::ValueBeyondBlock { len: 0x100 }
        );
        assert_eq!(
            at(&|v| set(v, 12, u32::MAX)),
            TokenFault::ValueBeyondBlock { len: u32::MAX }
        );
        assert_eq!(
            at(&|v| set(v, 16, 15)),
            TokenFault::NameOffset { nameoff: 15 }
        );
        assert_eq!(
            at(&|v| set(v, 16, 10)),
            TokenFault::BadPropertyName { nameoff: 10 }
        );
        assert_eq!(
            at(&|v| set(v, 60, FDT_END_NODE)),
            TokenFault::EndWithoutNode
        );
        assert_eq!(
            at(&|v| set(v, 56, FDT_END)),
            TokenFault::Unclosed { depth: 1 }
        );
        assert_eq!(at(&|v| v.extend_from_slice(&[0; 4])), TokenFault::AfterEnd);
        assert_eq!(at(&|v| v.truncate(56)), TokenFault::Truncated);
        assert_eq!(at(&|v| set(v, 0, FDT_END)), TokenFault::NoRoot);
        assert_eq!(
            at(&|v| {
                v.truncate(60);
                begin(v, "");
                word(v, FDT_END_NODE);
                word(v, FDT_END);
            }),
            TokenFault::SecondRoot
        );
        assert_eq!(
            at(&|v| {
                v.truncate(60);
                prop(v, 0, b"");
                word(v, FDT_END);
            }),
            TokenFault::PropertyOutsideNode
        );
        assert_eq!(
            at(&|v| {
                v.truncate(56);
                prop(v, 0, b"");
                word(v, FDT_END_NODE);
                word(v, FDT_END);
            }),
            TokenFault::PropertyAfterSubnode
        );
        // A name whose NUL lies beyond the block.
        let mut v = Vec::new();
        word(&mut v, FDT_BEGIN_NODE);
        v.extend_from_slice(b"abcd");
        assert_eq!(
            token_fault(&blob(&v, STRINGS)),
            TokenFault::NameUnterminated
        );
        // Property names: no NUL in the strings block.
        assert_eq!(
            token_fault(&blob(&s, b"compatible\0reg")),
            TokenFault::PropertyNameUnterminated { nameoff: 11 }
        );
    }

    #[test]
    fn refuses_deep_nesting_at_once() {
        let nest = |depth: usize| {
            let mut v = Vec::new();
            begin(&mut v, "");
            for _ in 1..depth {
                begin(&mut v, "n");
            }
            for _ in 0..depth {
                word(&mut v, FDT_END_NODE);
            }
            word(&mut v, FDT_END);
            blob(&v, STRINGS)
        };
        assert_eq!(check(&nest(MAX_DEPTH)), Ok(()));
        let f = nest(MAX_DEPTH);
        assert_eq!(fdt::Fdt::new(&f).unwrap().all_nodes().count(), MAX_DEPTH);
        assert_eq!(
            check(&nest(MAX_DEPTH + 1)),
            Err(DtbError::Token {
                offset: (HEADER_SIZE + 16 + 8 * MAX_DEPTH) as u32,
                fault: TokenFault::TooDeep
            })
        );
        let start = std::time::Instant::now();
        assert_eq!(token_fault(&nest(200_000)), TokenFault::TooDeep);
        assert!(start.elapsed().as_secs() < 2);
    }

    #[test]
    fn errors_say_where() {
        let mut s = structure();
        set(&mut s, 8, 7);
        let e = check(&blob(&s, STRINGS)).unwrap_err();
        assert_eq!(e.to_string(), "at offset 0x40: unknown token 0x7");
        let e = check(b"not a device tree at all, not at all").unwrap_err();
        assert_eq!(e.to_string(), "36 bytes, shorter than a 40-byte header");
    }
}
