//! Corrupt blobs: mutations of the shipped SDTs (flipped bytes, header
//! fields, truncation, property lengths and name offsets, strings without
//! NUL, tokens, deep nesting), a fixed number of cases from a fixed seed.
//! Nothing may panic, and every blob the structural check accepts must go
//! through the whole reader, the early reader and the guest device trees.

mod common;

use common::*;
use partita_core::sdt::{self, SystemConfig};
use partita_core::{dtb, guest_fdt, layout};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Cases per run: enough to reach every refusal of the check many times,
/// few enough for a debug build to finish in seconds.
const CASES: u32 = 4000;
const SEED: u64 = 0x5d7_0014;

/// The shipped configurations, and two-guests on a GICv2, compiled once.
fn bases() -> &'static [Vec<u8>] {
    static BASES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BASES.get_or_init(|| {
        let mut v: Vec<Vec<u8>> = all_shipped().iter().map(|(_, s)| compile(s)).collect();
        v.push(compile(&shipped("two-guests").replace(
            "/include/ \"board.dtsi\"",
            "/include/ \"board.dtsi\"\n/include/ \"gicv2.dtsi\"",
        )));
        v
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn set32(b: &mut [u8], at: usize, v: u32) {
    if at + 4 <= b.len() {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
}

/// Where the interesting bytes of a well-formed blob are.
#[derive(Default)]
struct Layout {
    /// Offsets of FDT_PROP tokens.
    props: Vec<usize>,
    /// Offsets of every token.
    tokens: Vec<usize>,
    /// Offsets of the NULs ending names (node names and strings).
    nuls: Vec<usize>,
}

/// A plain walk of a blob dtc made (no checks: its input is well formed).
fn layout(b: &[u8]) -> Layout {
    let (off_struct, off_strings) = (be32(b, 8) as usize, be32(b, 12) as usize);
    let (size_strings, size_struct) = (be32(b, 32) as usize, be32(b, 36) as usize);
    let mut l = Layout::default();
    let mut pos = off_struct;
    while pos < off_struct + size_struct {
        l.tokens.push(pos);
        match be32(b, pos) {
            1 => {
                let len = b[pos + 4..].iter().position(|&c| c == 0).unwrap();
                l.nuls.push(pos + 4 + len);
                pos = (pos + 4 + len + 1).next_multiple_of(4);
            }
            3 => {
                l.props.push(pos);
                pos = (pos + 12 + be32(b, pos + 4) as usize).next_multiple_of(4);
            }
            _ => pos += 4,
        }
    }
    l.nuls
        .extend((off_strings..off_strings + size_strings).filter(|&i| b[i] == 0));
    l
}

/// `depth` nested nodes inside the root, just before its FDT_END_NODE,
/// with the header moved to match (dtc puts the strings block last).
fn nest(b: &[u8], depth: usize) -> Vec<u8> {
    let (off_struct, size_struct) = (be32(b, 8) as usize, be32(b, 36) as usize);
    let root_end = off_struct + size_struct - 8;
    let mut chain = Vec::with_capacity(12 * depth);
    for _ in 0..depth {
        chain.extend_from_slice(&1u32.to_be_bytes());
        chain.extend_from_slice(b"n\0\0\0");
    }
    for _ in 0..depth {
        chain.extend_from_slice(&2u32.to_be_bytes());
    }
    let mut v = Vec::with_capacity(b.len() + chain.len());
    v.extend_from_slice(&b[..root_end]);
    v.extend_from_slice(&chain);
    v.extend_from_slice(&b[root_end..]);
    let n = chain.len() as u32;
    for (field, add) in [(4, n), (12, n), (36, n)] {
        let w = be32(&v, field) + add;
        set32(&mut v, field, w);
    }
    v
}

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte anywhere.
    Flip {
        at: usize,
        xor: u8,
    },
    /// A header word set outright, or nudged by a little.
    Header {
        field: usize,
        value: u32,
    },
    HeaderNudge {
        field: usize,
        delta: i32,
    },
    /// The blob cut short.
    Truncate {
        at: usize,
    },
    /// A property's length (`name_offset` false) or name offset.
    Prop {
        index: usize,
        name_offset: bool,
        value: u32,
    },
    PropNudge {
        index: usize,
        name_offset: bool,
        delta: i32,
    },
    /// A name's NUL overwritten.
    Unterminate {
        index: usize,
        with: u8,
    },
    /// A token word replaced (by another token, usually).
    Token {
        index: usize,
        value: u32,
    },
}

fn nudge(v: u32, d: i32) -> u32 {
    v.wrapping_add_signed(d)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge = prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(0x8000_0000),
        Just(0xd00d_feed),
        0u32..0x4000,
        any::<u32>(),
    ];
    prop_oneof![
        5 => (any::<usize>(), 1u8..).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        2 => (0usize..10, edge.clone()).prop_map(|(field, value)| Mutation::Header { field, value }),
        2 => (0usize..10, -64i32..64).prop_map(|(field, delta)| Mutation::HeaderNudge { field, delta }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<usize>(), any::<bool>(), edge).prop_map(|(index, name_offset, value)| Mutation::Prop { index, name_offset, value }),
        2 => (any::<usize>(), any::<bool>(), -16i32..16).prop_map(|(index, name_offset, delta)| Mutation::PropNudge { index, name_offset, delta }),
        1 => (any::<usize>(), prop_oneof![Just(b'A'), any::<u8>()]).prop_map(|(index, with)| Mutation::Unterminate { index, with }),
        2 => (any::<usize>(), prop_oneof![0u32..12, any::<u32>()]).prop_map(|(index, value)| Mutation::Token { index, value }),
    ]
}

/// One case: a base blob, how deep to nest inside it (usually not at
/// all), and a few mutations.
fn case() -> impl Strategy<Value = (usize, usize, Vec<Mutation>)> {
    (
        0..bases().len(),
        prop_oneof![
            40 => Just(0usize),
            10 => 1usize..80,
            1 => prop_oneof![Just(50_000usize), Just(200_000)],
        ],
        prop::collection::vec(mutation(), 0..5),
    )
}

fn apply(base: &[u8], depth: usize, muts: &[Mutation]) -> Vec<u8> {
    let mut b = if depth > 0 {
        nest(base, depth)
    } else {
        base.to_vec()
    };
    let l = layout(&b);
    for m in muts {
        match *m {
            Mutation::Flip { at, xor } => {
                let i = at % b.len().max(1);
                if let Some(x) = b.get_mut(i) {
                    *x ^= xor;
                }
            }
            Mutation::Header { field, value } => set32(&mut b, 4 * field, value),
            Mutation::HeaderNudge { field, delta } => {
                if b.len() >= 40 {
                    let v = nudge(be32(&b, 4 * field), delta);
                    set32(&mut b, 4 * field, v);
                }
            }
            Mutation::Truncate { at } => b.truncate(at % (b.len() + 1)),
            Mutation::Prop {
                index,
                name_offset,
                value,
            } => {
                let p = l.props[index % l.props.len()];
                set32(&mut b, p + if name_offset { 8 } else { 4 }, value);
            }
            Mutation::PropNudge {
                index,
                name_offset,
                delta,
            } => {
                let at = l.props[index % l.props.len()] + if name_offset { 8 } else { 4 };
                if at + 4 <= b.len() {
                    let v = nudge(be32(&b, at), delta);
                    set32(&mut b, at, v);
                }
            }
            Mutation::Unterminate { index, with } => {
                let i = l.nuls[index % l.nuls.len()];
                if let Some(x) = b.get_mut(i) {
                    *x = with;
                }
            }
            Mutation::Token { index, value } => {
                set32(&mut b, l.tokens[index % l.tokens.len()], value)
            }
        }
    }
    b
}

/// Everything that reads a blob, on one blob. Returns whether the
/// structural check accepted it and whether the whole reader did.
fn exercise(blob: &[u8]) -> (bool, bool) {
    let checked = dtb::check(blob);
    let read = SystemConfig::from_dtb(blob);
    let _ = sdt::hypervisor_memory(blob);
    if let Ok(t) = sdt::read_tree(blob) {
        let _ = sdt::console(&t);
    }
    let _ = sdt::stdout_uart(blob);
    let _ = sdt::bootargs(blob);
    if let Err(e) = checked {
        let e = e.to_string();
        assert!(read.is_err(), "the reader took what the check refused: {e}");
        return (false, false);
    }
    // The fdt crate walks all of it without panicking.
    let f = fdt::Fdt::new(blob).expect("the check accepted it");
    for n in f.all_nodes() {
        let props = n.properties().count();
        let children = n.children().count();
        let _ = (props, children, n.compatible().map(|c| c.all().count()));
    }
    let Ok(sys) = read else {
        return (true, false);
    };
    let _ = sys.check_interrupt_lines(288);
    let _ = sys.partition_table();
    for d in &sys.domains {
        let m = d.memory[0];
        let l = layout::GuestLayout {
            kernel: m.base,
            dtb: m.end().saturating_sub(guest_fdt::DTB_MAX),
            initrd: None,
        };
        if let Ok(g) = guest_fdt::build(blob, &sys, d, &l) {
            dtb::check(&g).expect("guest device trees are well formed");
        }
    }
    (true, true)
}

#[test]
fn mutated_sdts_are_read_or_refused_without_panic() {
    let config = Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(SEED),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let counts = std::cell::Cell::new([0u32; 3]);
    let start = Instant::now();
    runner
        .run(&case(), |(base, depth, muts)| {
            let blob = apply(&bases()[base], depth, &muts);
            let (checked, read) = exercise(&blob);
            let mut c = counts.get();
            c[usize::from(checked) + usize::from(read)] += 1;
            counts.set(c);
            Ok(())
        })
        .unwrap();
    let [refused, checked_only, read] = counts.get();
    println!(
        "{CASES} cases in {:?}: {refused} refused by the check, {checked_only} by the reader, {read} read",
        start.elapsed()
    );
    // The mutations reach all three outcomes.
    assert!(refused > 0 && checked_only > 0 && read > 0);
}

#[test]
fn deep_nesting_is_refused_at_once() {
    let base = &bases()[0];
    for depth in [40, 50_000, 200_000] {
        let blob = nest(base, depth);
        let start = Instant::now();
        let e = SystemConfig::from_dtb(&blob).unwrap_err().to_string();
        assert!(e.contains("nested more than 32 deep"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    // Within the limit, the reader takes it (the extra nodes mean nothing).
    SystemConfig::from_dtb(&nest(base, 20)).unwrap();
}
