//! `hostile=GROUP,...`: a partition that attacks every boundary the
//! hypervisor keeps, counting each attack it tries and whether it was
//! refused, and ends with one summary line. The regression tests
//! (`tests/tests/hostile.rs`) run it beside victims whose pace and rpmsg
//! exchange must not change.
//!
//! Groups:
//! - `memory`: reads and writes at every address of `victims=`, `hyp=`,
//!   `mmio=` and `gic=` (lists of addresses), and just past its own
//!   memory; each must take a data abort;
//! - `psci`: CPU_ON and AFFINITY_INFO of vCPUs it does not have, CPU_ON of
//!   its own second vCPU (if any) at entry points outside its memory,
//!   unknown SMCCC function IDs through HVC and SMC, Partita's control
//!   calls for the partitions in `ids=` (which it has no right to), for
//!   ids nobody has, and for itself;
//! - `gic`: every distributor register of every interrupt it does not own
//!   (set-enable, set-pending, set-active, clear-enable, priority,
//!   target or route, configuration, group), and LPI tables and power
//!   state in its redistributors; what it wrote must not read back;
//! - `sgi`: SGIs to vCPUs it does not have, to other affinities, Group 0
//!   and secure ones; none may arrive anywhere (victims run `watch-sgis`);
//! - `el2`: EL2 and EL3 system registers, EL2 TLB and address-translation
//!   instructions, an exception return to EL2; each must be undefined at
//!   EL1;
//! - `virtio`: every register of its virtio-mmio device at every width,
//!   offsets past the registers, read-only registers written, a queue
//!   selected that does not exist, status steps out of order, features it
//!   was not offered, queue sizes out of range, rings outside its memory
//!   or misaligned; reads must give nothing but its own registers' bytes,
//!   writes must change nothing, bad queues must be refused at
//!   QueueReady;
//! - `rings`: descriptors outside its memory, too long, looping, past the
//!   queue, indirect, of the wrong direction, headers longer than their
//!   buffer, avail indexes running ahead, receive buffers outside its
//!   memory or too small: each must put its device (only) in NEEDS_RESET;
//! - `storms`: 100,000 notifications, 2,000 refused queues, 2,000 data
//!   aborts and 2,000 console lines (some forging the hypervisor's
//!   prefix): the hypervisor must absorb them and log within its limit.

use crate::{gic, hvc, println};
use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Exceptions at EL1 are being provoked: `on_sync` counts them and skips
/// the instruction that took them.
pub static PROBING: AtomicBool = AtomicBool::new(false);
static TAKEN: AtomicU32 = AtomicU32::new(0);
static LAST_ESR: AtomicU64 = AtomicU64::new(0);
/// SGIs are being watched: any that arrives is counted (and, on a victim,
/// reported).
pub static WATCHING: AtomicBool = AtomicBool::new(false);
static SGIS_SEEN: AtomicU32 = AtomicU32::new(0);

const GROUPS: [&str; 8] = [
    "memory", "psci", "gic", "sgi", "el2", "virtio", "rings", "storms",
];
static TRIED: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];
static REFUSED: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];

/// A synchronous exception while probing: counted, and the instruction
/// skipped. An illegal exception return leaves PSTATE.IL set in SPSR_EL1,
/// which is cleared so that the return from here is legal.
pub fn on_sync(esr: u64, _far: u64, elr: u64) -> u64 {
    TAKEN.fetch_add(1, Ordering::AcqRel);
    LAST_ESR.store(esr, Ordering::Relaxed);
    if esr >> 26 == 0x0e {
        // SAFETY: clears IL (bit 20) in the state we return to.
        unsafe {
            asm!("mrs {t}, spsr_el1", "bic {t}, {t}, #(1 << 20)", "msr spsr_el1, {t}", t = out(reg) _)
        };
    }
    elr + 4
}

/// An SGI arrived at a partition that watches for them.
pub fn sgi_seen(id: u32) {
    SGIS_SEEN.fetch_add(1, Ordering::AcqRel);
    if !PROBING.load(Ordering::Relaxed) {
        println!("watch-sgis: unexpected SGI {id} arrived");
    }
}

/// `watch-sgis`: a victim that takes every SGI, so any that leaks from
/// another partition is reported.
pub fn watch_sgis(vcpu: usize) {
    gic::init_distributor();
    gic::init_cpu(vcpu);
    for sgi in 0..16 {
        gic::enable(sgi, vcpu);
    }
    WATCHING.store(true, Ordering::Release);
    // SAFETY: IRQs on; the vector table handles them.
    unsafe { asm!("msr daifclr, #2") };
}

/// Runs `f` (one access or instruction) and says whether it took an
/// exception, with its syndrome.
fn exception(f: impl FnOnce()) -> Option<u64> {
    let before = TAKEN.load(Ordering::Acquire);
    f();
    (TAKEN.load(Ordering::Acquire) != before).then(|| LAST_ESR.load(Ordering::Relaxed))
}

fn record(group: usize, refused: bool, what: core::fmt::Arguments<'_>) {
    TRIED[group].fetch_add(1, Ordering::Relaxed);
    if refused {
        REFUSED[group].fetch_add(1, Ordering::Relaxed);
    } else {
        println!("hostile: NOT REFUSED: {}: {what}", GROUPS[group]);
    }
}

fn ldr(a: u64) -> u64 {
    let v: u64;
    // SAFETY: may fault; `on_sync` skips the instruction.
    unsafe { asm!("ldr {v}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack)) };
    v
}

fn ldr32(a: u64) -> u32 {
    let v: u32;
    // SAFETY: as `ldr`.
    unsafe { asm!("ldr {v:w}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack)) };
    v
}

fn ldrh(a: u64) -> u32 {
    let v: u32;
    // SAFETY: as `ldr`.
    unsafe { asm!("ldrh {v:w}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack)) };
    v
}

fn ldrb(a: u64) -> u32 {
    let v: u32;
    // SAFETY: as `ldr`.
    unsafe { asm!("ldrb {v:w}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack)) };
    v
}

fn str64(a: u64, v: u64) {
    // SAFETY: as `ldr`.
    unsafe { asm!("str {v}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack)) };
}

fn str32(a: u64, v: u32) {
    // SAFETY: as `ldr`.
    unsafe { asm!("str {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack)) };
}

fn strh(a: u64, v: u32) {
    // SAFETY: as `ldr`.
    unsafe { asm!("strh {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack)) };
}

fn strb(a: u64, v: u32) {
    // SAFETY: as `ldr`.
    unsafe { asm!("strb {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack)) };
}

/// Up to 16 numbers from `key=a,b,c` in the bootargs (hex with 0x).
fn list(args: &str, key: &str) -> ([u64; 16], usize) {
    let mut out = ([0u64; 16], 0);
    let Some(v) = args
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    else {
        return out;
    };
    for item in v.split(',').take(16) {
        let n = match item.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => item.parse(),
        };
        if let Ok(n) = n {
            out.0[out.1] = n;
            out.1 += 1;
        }
    }
    out
}

/// Where this partition is: its memory, its vCPUs, its GIC and virtio
/// device, as its device tree says.
pub struct Me {
    pub mem: (u64, u64),
    pub cpus: usize,
    pub virtio: Option<u64>,
    /// GICv3: its first redistributor frame.
    pub gicr: u64,
    /// The SPIs its device tree gives it (console, virtio).
    pub own_spis: [u32; 4],
}

impl Me {
    fn owns(&self, intid: u32) -> bool {
        intid >= 32 && self.own_spis.contains(&intid)
    }
}

/// The first victim and hypervisor address of the bootargs, for attacks
/// written as plain functions.
static VICTIM: AtomicU64 = AtomicU64::new(0);
static HYP: AtomicU64 = AtomicU64::new(0);

pub fn run(groups: &str, args: &str, me: &Me) {
    println!("hostile: attacking with {groups}");
    VICTIM.store(list(args, "victims").0[0], Ordering::Relaxed);
    HYP.store(list(args, "hyp").0[0], Ordering::Relaxed);
    for g in groups.split(',') {
        PROBING.store(true, Ordering::Release);
        match g {
            "memory" => memory(args, me),
            "psci" => psci(args, me),
            "gic" => gic_attacks(me),
            "sgi" => sgis(me),
            "el2" => el2(),
            "virtio" => match me.virtio {
                Some(base) => virtio_registers(base, me),
                None => println!("hostile: no virtio device for `virtio`"),
            },
            "rings" => match me.virtio {
                Some(base) => rings(base, args, me),
                None => println!("hostile: no virtio device for `rings`"),
            },
            "storms" => storms(me),
            other => println!("hostile: unknown group `{other}`"),
        }
        PROBING.store(false, Ordering::Release);
        if let Some(i) = GROUPS.iter().position(|&n| n == g) {
            println!(
                "hostile: {g}: {} tried, {} refused",
                TRIED[i].load(Ordering::Relaxed),
                REFUSED[i].load(Ordering::Relaxed)
            );
        }
    }
    if let Some(base) = me.virtio {
        stop_peer(base);
    }
    let tried: u32 = TRIED.iter().map(|t| t.load(Ordering::Relaxed)).sum();
    let refused: u32 = REFUSED.iter().map(|t| t.load(Ordering::Relaxed)).sum();
    println!(
        "hostile: {tried} attacks tried, {refused} refused, {} not refused",
        tried - refused
    );
}

// --- memory ---------------------------------------------------------------

fn memory(args: &str, me: &Me) {
    const G: usize = 0;
    let end_of_mine = me.mem.0 + me.mem.1;
    for key in ["victims", "hyp", "mmio", "gic"] {
        let (addrs, n) = list(args, key);
        for &a in &addrs[..n] {
            let r = exception(|| {
                ldr(a);
            });
            record(G, r.is_some(), format_args!("read of {key} {a:#x}"));
            let w = exception(|| str64(a, 0x6861_636b_6564_2121));
            record(G, w.is_some(), format_args!("write to {key} {a:#x}"));
            let b = exception(|| strb(a + 1, 0x41));
            record(G, b.is_some(), format_args!("byte write to {key} {a:#x}"));
        }
    }
    // Just past its own memory, and a straddling access at its end.
    for a in [end_of_mine, end_of_mine + 0x1000, end_of_mine - 4] {
        let r = exception(|| {
            ldr(a);
        });
        record(
            G,
            r.is_some(),
            format_args!("read at {a:#x}, its memory's end"),
        );
    }
    // Far beyond RAM and beyond the 39-bit space stage 2 translates.
    for a in [0x7f_ffff_f000u64, 0x80_0000_0000, 0xff_ffff_f000] {
        let r = exception(|| {
            ldr(a);
        });
        record(G, r.is_some(), format_args!("read of {a:#x}"));
    }
}

// --- PSCI and SMCCC -------------------------------------------------------

const CPU_ON64: u64 = 0xc400_0003;
const AFFINITY_INFO64: u64 = 0xc400_0004;
const NOT_SUPPORTED: i64 = -1;
const INVALID_PARAMETERS: i64 = -2;
const DENIED: i64 = -3;
const INVALID_ADDRESS: i64 = -9;

fn call(x0: u64, x1: u64, x2: u64, x3: u64, via_smc: bool) -> i64 {
    if !via_smc {
        return hvc(x0, x1, x2, x3);
    }
    let r: u64;
    // SAFETY: an SMCCC call, trapped by the hypervisor.
    unsafe {
        asm!("smc #0", inout("x0") x0 => r, inout("x1") x1 => _, inout("x2") x2 => _, inout("x3") x3 => _)
    };
    r as i64
}

fn psci(args: &str, me: &Me) {
    const G: usize = 1;
    let (base, size) = me.mem;
    for smc in [false, true] {
        let how = if smc { "smc" } else { "hvc" };
        // vCPUs it does not have: other Aff0 values, other clusters.
        let foreign = [
            me.cpus as u64,
            me.cpus as u64 + 1,
            15,
            16,
            0xff,
            0x100,
            0x1_0000,
            0xff_0000_0000,
            0x8000_0000 | me.cpus as u64,
            u64::MAX,
        ];
        for t in foreign {
            let r = call(CPU_ON64, t, base, 0, smc);
            record(
                G,
                r == INVALID_PARAMETERS,
                format_args!("{how} CPU_ON of vCPU {t:#x} = {r}"),
            );
            let r = call(AFFINITY_INFO64, t, 0, 0, smc);
            record(
                G,
                r == INVALID_PARAMETERS,
                format_args!("{how} AFFINITY_INFO of {t:#x} = {r}"),
            );
        }
        let r = call(AFFINITY_INFO64, 0, 1, 0, smc);
        record(
            G,
            r == INVALID_PARAMETERS,
            format_args!("{how} AFFINITY_INFO at level 1 = {r}"),
        );
        // Its own second vCPU, at entry points outside its memory.
        if me.cpus > 1 {
            let (victims, n) = list(args, "victims");
            let (hyp, m) = list(args, "hyp");
            let mut entries = [0u64; 40];
            let mut k = 0;
            for e in [0, base + size, base - 4, u64::MAX - 3, 1 << 40]
                .iter()
                .chain(&victims[..n])
                .chain(&hyp[..m])
            {
                entries[k] = *e;
                k += 1;
            }
            for &e in &entries[..k] {
                let r = call(CPU_ON64, 1, e, 0, smc);
                record(
                    G,
                    r == INVALID_ADDRESS,
                    format_args!("{how} CPU_ON of vCPU 1 at {e:#x} = {r}"),
                );
                // The 32-bit call sees only the low half of the entry.
                let r = call(0x8400_0003, 1, e, 0, smc);
                let low = e & 0xffff_ffff;
                let inside = low >= base && low < base + size;
                record(
                    G,
                    inside || r == INVALID_ADDRESS,
                    format_args!("{how} CPU_ON32 of vCPU 1 at {e:#x} = {r}"),
                );
                if r == 0 {
                    // It started (inside after truncation): let it land.
                    wait_off(1);
                }
            }
        }
        // Function IDs nobody implements (CPU_SUSPEND is PSCI 1.1's now), in
        // every owner's range, and real ones with their upper half set.
        let unknown: [u64; 23] = [
            0x8000_0000,
            0x8000_0001,
            0x8000_8000,
            0x8000_7fff,
            0x8400_0005,
            0x8400_0007,
            0x8400_000c,
            0x8400_000e,
            0x8400_0012,
            0x8400_00ff,
            0xc400_0012,
            0xc200_0000,
            0xc300_0001,
            0xc500_0000,
            0xc600_0001,
            0xc600_0017,
            0xc600_ffff,
            0xc700_0000,
            0xbf00_0000,
            0xf200_0000,
            0xffff_ffff,
            0x1_8400_0000,
            0xffff_ffff_8400_0008,
        ];
        for id in unknown {
            let r = call(id, 0, 0, 0, smc);
            record(
                G,
                r == NOT_SUPPORTED,
                format_args!("{how} unknown function {id:#x} = {r}"),
            );
        }
    }
    // Control calls: partitions it has no right to, ids nobody has, and
    // itself (only STATUS of itself is allowed).
    let (ids, n) = list(args, "ids");
    let (own, _) = list(args, "self");
    let (victims, _) = list(args, "victims");
    for &id in &ids[..n] {
        for (name, fid) in [
            ("STATUS", 0xc600_0010u64),
            ("START", 0xc600_0011),
            ("STOP", 0xc600_0012),
            ("LOAD", 0xc600_0013),
            ("VDEV_READY", 0xc600_0014),
            ("VDEV_RESET", 0xc600_0015),
            ("KICK", 0xc600_0016),
        ] {
            let r = hvc(fid, id, base, 0x1000);
            record(
                G,
                r == DENIED,
                format_args!("{name} of partition {id} = {r}"),
            );
        }
        let r = hvc(0xc600_0013, id, victims[0], 0x1000);
        record(
            G,
            r == DENIED,
            format_args!("LOAD into {id} from a victim's memory = {r}"),
        );
    }
    for id in [0u64, 999, 0xffff_ffff, 1 << 32, u64::MAX] {
        let r = hvc(0xc600_0012, id, 0, 0);
        record(
            G,
            r == INVALID_PARAMETERS,
            format_args!("STOP of unknown id {id:#x} = {r}"),
        );
    }
    for (name, fid) in [("START", 0xc600_0011u64), ("STOP", 0xc600_0012)] {
        let r = hvc(fid, own[0], 0, 0);
        record(G, r == DENIED, format_args!("{name} of itself = {r}"));
    }
}

/// Waits until vCPU `v` is off again (it powers itself off at once).
fn wait_off(v: u64) {
    for _ in 0..10_000_000u64 {
        if hvc(AFFINITY_INFO64, v, 0, 0) == 1 {
            return;
        }
        core::hint::spin_loop();
    }
}

// --- the distributor and redistributors ----------------------------------

fn rd(a: u64) -> u32 {
    // SAFETY: a GIC register of our own (emulated) distributor.
    unsafe { read_volatile(a as *const u32) }
}

fn wr(a: u64, v: u32) {
    // SAFETY: as `rd`.
    unsafe { write_volatile(a as *mut u32, v) }
}

fn gic_attacks(me: &Me) {
    const G: usize = 2;
    let d = gic::gicd();
    let lines = ((rd(d + 4) & 0x1f) + 1) * 32;
    // Every SPI its device tree does not give it is another's (or
    // nobody's). One attack per register word; what it wrote must not
    // read back, except for its own interrupts.
    for (name, set, bits) in [
        ("set-enable", 0x100u64, 1u32),
        ("set-pending", 0x200, 1),
        ("set-active", 0x300, 1),
        ("group", 0x080, 1),
        ("priority", 0x400, 8),
        ("configuration", 0xc00, 2),
    ] {
        let per_word = 32 / bits;
        for word in (32 / per_word)..(lines / per_word) {
            let first = word * per_word;
            let own = (0..per_word)
                .filter(|i| me.owns(first + i))
                .fold(0u32, |m, i| m | (((1u64 << bits) - 1) as u32) << (i * bits));
            let a = d + set + 4 * u64::from(word);
            wr(a, u32::MAX);
            let back = rd(a) & !own;
            record(
                G,
                back == 0,
                format_args!("{name} of interrupts {first}.. reads {back:#x}"),
            );
        }
    }
    // Routing: GICv3 IROUTER (to any CPU), GICv2 ITARGETSR (to every CPU
    // interface).
    for intid in (32..lines).filter(|&i| !me.owns(i)) {
        let back = if gic::version() == 3 {
            let a = d + 0x6000 + 8 * u64::from(intid);
            wr(a + 4, 0);
            wr(a, 0x8000_0000);
            rd(a)
        } else {
            let a = d + 0x800 + u64::from(intid);
            // SAFETY: a byte of our own distributor's ITARGETSR.
            unsafe { write_volatile(a as *mut u8, 0xff) };
            // SAFETY: as above.
            u32::from(unsafe { read_volatile(a as *const u8) })
        };
        record(
            G,
            back == 0,
            format_args!("route of interrupt {intid} reads {back:#x}"),
        );
    }
    // Clear-enable, clear-pending and clear-active on every SPI: nothing
    // to read back; the victims' interrupts must keep coming. (This also
    // takes back what the writes above did to its own.)
    for clear in [0x180u64, 0x280, 0x380] {
        for word in 1..lines / 32 {
            wr(d + clear + 4 * u64::from(word), u32::MAX);
        }
    }
    // GICv3 redistributors: LPIs (tables pointed at a victim's memory) in
    // its own frame.
    if gic::version() == 3 {
        let victim = VICTIM.load(Ordering::Relaxed);
        let r = me.gicr;
        for (name, off) in [("PROPBASER", 0x70u64), ("PENDBASER", 0x78)] {
            wr(r + off, victim as u32);
            wr(r + off + 4, (victim >> 32) as u32);
            let back = u64::from(rd(r + off)) | u64::from(rd(r + off + 4)) << 32;
            record(
                G,
                back == 0,
                format_args!("{name} at a victim's memory reads {back:#x}"),
            );
        }
        wr(r, 1); // GICR_CTLR.EnableLPIs
        let back = rd(r) & 1;
        record(G, back == 0, format_args!("EnableLPIs reads {back}"));
        // SETLPIR, CLRLPIR, INVLPIR, INVALLR: ignored, never a fault.
        for off in [0x40u64, 0x48, 0xa0, 0xb0] {
            let e = exception(|| str64(r + off, 8192));
            record(
                G,
                e.is_none(),
                format_args!("redistributor write at {off:#x}"),
            );
        }
    }
}

// --- SGIs -----------------------------------------------------------------

fn sgis(me: &Me) {
    const G: usize = 3;
    gic::init_distributor();
    gic::init_cpu(0);
    for sgi in 0..16 {
        gic::enable(sgi, 0);
    }
    WATCHING.store(true, Ordering::Release);
    // SAFETY: IRQs on; arriving SGIs are counted.
    unsafe { asm!("msr daifclr, #2") };
    let before = SGIS_SEEN.load(Ordering::Acquire);
    let mut sent = 0u32;
    if gic::version() == 3 {
        let n = me.cpus as u64;
        let mut values = [0u64; 40];
        let mut k = 0;
        for sgi in [0u64, 1, 7, 15] {
            // Target list bits of vCPUs it does not have.
            values[k] = sgi << 24 | (0xffff & !((1 << n) - 1));
            // Other Aff1, Aff2, Aff3 with every target bit.
            values[k + 1] = sgi << 24 | 1 << 16 | 0xffff;
            values[k + 2] = sgi << 24 | 1 << 32 | 0xffff;
            values[k + 3] = sgi << 24 | 1 << 48 | 0xffff;
            // RS (range selector) past the first 16 vCPUs.
            values[k + 4] = sgi << 24 | 1 << 44 | 0xffff;
            k += 5;
        }
        for &v in &values[..k] {
            // ICC_SGI1R_EL1. (Not ICC_ASGI1R_EL1 or ICC_SGI0R_EL1: the
            // hypervisor does not recognise their encodings yet and stops
            // the partition as for an unknown system register.)
            // SAFETY: trapped and emulated by the hypervisor.
            unsafe { asm!("msr S3_0_C12_C11_5, {}", "isb", in(reg) v) };
            sent += 1;
        }
    } else {
        let d = gic::gicd();
        let n = me.cpus as u32;
        for sgi in [0u32, 1, 7, 15] {
            // CPU target list bits of vCPUs it does not have.
            wr(d + 0xf00, (0xff & !((1 << n) - 1)) << 16 | sgi);
            // Reserved filter, with every target.
            wr(d + 0xf00, 3 << 24 | 0xff << 16 | sgi);
            // NSATT (Group 1 only) with foreign targets.
            wr(d + 0xf00, (0xff & !((1 << n) - 1)) << 16 | 1 << 15 | sgi);
            sent += 3;
        }
    }
    // Let anything that was wrongly delivered arrive.
    for _ in 0..2_000_000 {
        core::hint::spin_loop();
    }
    let arrived = SGIS_SEEN.load(Ordering::Acquire) - before;
    for _ in 0..sent {
        record(
            G,
            arrived == 0,
            format_args!("an SGI arrived ({arrived} in all)"),
        );
    }
    // SAFETY: IRQs off again.
    unsafe { asm!("msr daifset, #2") };
    WATCHING.store(false, Ordering::Release);
}

// --- EL2 and EL3 system registers -------------------------------------

macro_rules! undefined {
    ($($insn:literal),+ $(,)?) => {
        [$(
            ($insn, (|| {
                // SAFETY: undefined at EL1; `on_sync` skips it.
                unsafe { asm!($insn, out("x0") _, options(nostack)) }
            }) as fn()),
        )+]
    };
}

fn el2() {
    const G: usize = 4;
    let attempts = undefined![
        "mrs x0, hcr_el2",
        "msr hcr_el2, xzr",
        "mrs x0, vttbr_el2",
        "msr vttbr_el2, xzr",
        "mrs x0, vtcr_el2",
        "msr vtcr_el2, xzr",
        "mrs x0, vbar_el2",
        "msr vbar_el2, xzr",
        "mrs x0, sctlr_el2",
        "msr sctlr_el2, xzr",
        "mrs x0, ttbr0_el2",
        "msr ttbr0_el2, xzr",
        "mrs x0, tcr_el2",
        "mrs x0, mair_el2",
        "mrs x0, esr_el2",
        "mrs x0, far_el2",
        "mrs x0, hpfar_el2",
        "mrs x0, elr_el2",
        "msr elr_el2, xzr",
        "mrs x0, spsr_el2",
        "msr spsr_el2, xzr",
        "mrs x0, tpidr_el2",
        "msr tpidr_el2, xzr",
        "mrs x0, sp_el1",
        "mrs x0, cptr_el2",
        "msr cptr_el2, xzr",
        "mrs x0, mdcr_el2",
        "msr mdcr_el2, xzr",
        "mrs x0, cnthctl_el2",
        "msr cnthctl_el2, xzr",
        "mrs x0, cntvoff_el2",
        "msr cntvoff_el2, xzr",
        "mrs x0, cnthp_ctl_el2",
        "msr cnthp_ctl_el2, xzr",
        "mrs x0, vmpidr_el2",
        "msr vmpidr_el2, xzr",
        "mrs x0, vpidr_el2",
        "msr vpidr_el2, xzr",
        "mrs x0, S3_4_C12_C11_0", // ICH_HCR_EL2
        "msr S3_4_C12_C11_0, xzr",
        "mrs x0, S3_4_C12_C11_1", // ICH_VTR_EL2
        "mrs x0, S3_4_C12_C12_0", // ICH_LR0_EL2
        "msr S3_4_C12_C12_0, xzr",
        "mrs x0, S3_4_C12_C9_5", // ICC_SRE_EL2
        "msr S3_4_C12_C9_5, xzr",
        "mrs x0, scr_el3",
        "msr scr_el3, xzr",
        "mrs x0, vbar_el3",
        "mrs x0, sctlr_el3",
        "tlbi alle2",
        "tlbi alle1",
        "tlbi vmalls12e1",
        "at s1e2r, x0",
        "at s12e1r, x0",
    ];
    for (insn, f) in attempts {
        let r = exception(f);
        // Undefined at EL1: Unknown reason (EC 0).
        record(
            G,
            r.is_some_and(|esr| esr >> 26 == 0),
            format_args!("`{insn}` took {r:x?}"),
        );
    }
    // An exception return to EL2 is illegal from EL1: PSTATE.IL, and the
    // next instruction takes an Illegal Execution State exception (EC 0xe).
    let r = exception(|| {
        // SAFETY: returns to the label with SPSR saying EL2h; the
        // exception that follows is skipped by `on_sync`.
        unsafe {
            asm!(
                "adr {t}, 1f",
                "msr elr_el1, {t}",
                "mov {t}, #0x3c9",
                "msr spsr_el1, {t}",
                "eret",
                "1: nop",
                t = out(reg) _,
                options(nostack)
            )
        }
    });
    record(
        G,
        r.is_some_and(|esr| esr >> 26 == 0x0e),
        format_args!("an exception return to EL2 took {r:x?}"),
    );
    // CurrentEL still says EL1.
    let el: u64;
    // SAFETY: reads CurrentEL.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) el) };
    record(
        G,
        el >> 2 == 1,
        format_args!("CurrentEL reads EL{}", el >> 2),
    );
}

// --- virtio registers -----------------------------------------------------

const MAGIC: u64 = 0x000;
const STATUS: u64 = 0x070;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_ACK: u64 = 0x064;
const NEEDS_RESET: u32 = 64;
const RX: u32 = 0;
const TX: u32 = 1;
const Q: u16 = 16;

struct Dev(u64);

impl Dev {
    fn get(&self, off: u64) -> u32 {
        ldr32(self.0 + off)
    }

    fn set(&self, off: u64, v: u32) {
        str32(self.0 + off, v)
    }

    fn status(&self) -> u32 {
        self.get(STATUS)
    }

    fn reset(&self) {
        self.set(STATUS, 0);
    }

    /// Up to FEATURES_OK with VERSION_1 (and NS if offered).
    fn negotiate(&self) -> bool {
        self.reset();
        self.set(STATUS, 1);
        self.set(STATUS, 3);
        self.set(0x014, 0);
        let ns = self.get(0x010) & 1;
        self.set(0x024, 0);
        self.set(0x020, ns);
        self.set(0x024, 1);
        self.set(0x020, 1);
        self.set(STATUS, 11);
        self.status() & 8 != 0
    }

    fn queue(&self, q: u32, size: u32, desc: u64, avail: u64, used: u64) {
        self.set(QUEUE_SEL, q);
        self.set(QUEUE_NUM, size);
        for (off, a) in [(0x80u64, desc), (0x90, avail), (0xa0, used)] {
            self.set(off, a as u32);
            self.set(off + 4, (a >> 32) as u32);
        }
    }

    fn ready(&self, q: u32) -> u32 {
        self.set(QUEUE_SEL, q);
        self.set(QUEUE_READY, 1);
        self.get(QUEUE_READY)
    }

    fn needs_reset(&self) -> bool {
        self.status() & NEEDS_RESET != 0
    }

    /// Waits a while for NEEDS_RESET (a fault found by a pump that another
    /// partition's action started).
    fn wait_needs_reset(&self) -> bool {
        for _ in 0..20_000_000u64 {
            if self.needs_reset() {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }
}

/// This partition's own rings and buffers, laid out by hand so that any
/// of it can be made wrong.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut RINGS: [Page; 2] = [const { Page([0; 4096]) }; 2];
static mut BUFS: [Page; 4] = [const { Page([0; 4096]) }; 4];

fn ring(q: u32) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { addr_of!(RINGS[q as usize]) as u64 }
}

fn buf(i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { addr_of!(BUFS[i % 4]) as u64 + (i / 4 % 8) as u64 * 512 }
}

fn zero_rings() {
    // SAFETY: our own memory; the device was reset and touches none of it.
    unsafe {
        for p in [addr_of_mut!(RINGS[0]), addr_of_mut!(RINGS[1])] {
            write_volatile(p, Page([0; 4096]));
        }
    }
}

/// Descriptor table at +0, available ring at +256, used ring at +512.
fn put_desc(q: u32, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let a = ring(q) + 16 * u64::from(i % 256);
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    // SAFETY: inside our own ring page.
    unsafe { write_volatile(a as *mut [u8; 16], d) };
}

fn avail_idx(q: u32) -> u16 {
    // SAFETY: our own ring.
    unsafe { read_volatile((ring(q) + 256 + 2) as *const u16) }
}

fn set_avail_idx(q: u32, idx: u16) {
    // SAFETY: our own ring.
    unsafe { write_volatile((ring(q) + 256 + 2) as *mut u16, idx) };
}

fn offer(q: u32, head: u16) {
    let idx = avail_idx(q);
    // SAFETY: our own ring: the entry, then the index that publishes it.
    unsafe {
        write_volatile(
            (ring(q) + 256 + 4 + 2 * u64::from(idx % Q)) as *mut u16,
            head,
        )
    };
    set_avail_idx(q, idx.wrapping_add(1));
}

/// Sets up both queues well (16 entries each) and reaches DRIVER_OK;
/// `rx` decides what receive buffers are posted.
fn live(dev: &Dev, rx: impl Fn(u16) -> (u64, u32, u16)) -> bool {
    zero_rings();
    if !dev.negotiate() {
        return false;
    }
    for q in [RX, TX] {
        let r = ring(q);
        dev.queue(q, u32::from(Q), r, r + 256, r + 512);
        if dev.ready(q) != 1 {
            return false;
        }
    }
    for i in 0..Q {
        let (a, len, flags) = rx(i);
        put_desc(RX, i, a, len, flags, 0);
        offer(RX, i);
    }
    dev.set(STATUS, 15);
    dev.set(QUEUE_NOTIFY, RX);
    dev.status() & 4 != 0 && !dev.needs_reset()
}

/// The receive buffer posted in slot `i`: address, length, flags.
type RxBuffers = fn(u16) -> (u64, u32, u16);

fn good_rx(i: u16) -> (u64, u32, u16) {
    (buf(8 + usize::from(i)), 512, 2)
}

/// A message to the peer's echo endpoint in buffer `i`, `len` bytes of
/// payload claimed in its header.
fn message(i: usize, claimed: u16) -> u64 {
    let b = buf(i);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&1024u32.to_le_bytes());
    h[4..8].copy_from_slice(&1024u32.to_le_bytes());
    h[12..14].copy_from_slice(&claimed.to_le_bytes());
    // SAFETY: our own buffer page.
    unsafe { write_volatile(b as *mut [u8; 16], h) };
    b
}

fn virtio_registers(base: u64, me: &Me) {
    const G: usize = 5;
    let dev = Dev(base);
    let victims = VICTIM.load(Ordering::Relaxed);
    let hyp = HYP.load(Ordering::Relaxed);
    // Reads of every word of the window: registers that exist answer;
    // the rest read as zero.
    let known = [
        0x000u64, 0x004, 0x008, 0x00c, 0x010, 0x034, 0x038, 0x044, 0x060, 0x070, 0x080, 0x084,
        0x090, 0x094, 0x0a0, 0x0a4, 0x0fc, 0x100,
    ];
    for off in (0..0x200u64).step_by(4).filter(|o| !known.contains(o)) {
        let v = dev.get(off);
        record(G, v == 0, format_args!("read of {off:#x} = {v:#x}"));
    }
    // Every width but 4 bytes, on registers that matter: a read is a load
    // from the device's register page, so it gives that register's own
    // bytes, as its word reads them, and nothing else. (InterruptStatus
    // and PEER_READY may change meanwhile: either word's bytes will do.)
    for off in [MAGIC, 0x008, 0x010, QUEUE_NUM_MAX, STATUS, 0x060, 0x100] {
        let at = off & !7;
        let before = (u64::from(dev.get(at + 4)) << 32) | u64::from(dev.get(at));
        let reads = [
            (1, 0, ldrb(base + off) as u64),
            (1, 3, ldrb(base + off + 3) as u64),
            (2, 0, ldrh(base + off) as u64),
            (2, 2, ldrh(base + off + 2) as u64),
            // An 8-byte read at a word that is not 8-aligned (0x34) is an
            // alignment fault at stage 1 (Device memory), which this
            // guest takes itself, as on hardware: it never reaches the
            // hypervisor, so the aligned doubleword holding it stands in.
            (8, 0, ldr(base + at)),
        ];
        let after = (u64::from(dev.get(at + 4)) << 32) | u64::from(dev.get(at));
        for (w, by, v) in reads {
            let shift = if w == 8 { 0 } else { 8 * (off - at + by) };
            let mask = if w == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * w)) - 1
            };
            let own = |d: u64| (d >> shift) & mask;
            record(
                G,
                v == own(before) || v == own(after),
                format_args!("{w}-byte read of {off:#x}+{by} = {v:#x}"),
            );
        }
    }
    dev.reset();
    for (w, f) in [
        (1, (|a: u64| strb(a, 0x0f)) as fn(u64)),
        (2, |a| strh(a, 0x0f)),
        (8, |a| str64(a, 0x0f)),
    ] {
        f(base + STATUS);
        let s = dev.status();
        record(
            G,
            s == 0,
            format_args!("{w}-byte status write: status {s:#x}"),
        );
    }
    // Read-only registers and offsets past the registers, written: they
    // keep their values.
    // (Not InterruptStatus, ConfigGeneration or PEER_READY: the peer's
    // driver may change those at any time.)
    for off in [MAGIC, 0x004, 0x008, 0x00c, 0x010, QUEUE_NUM_MAX] {
        let before = dev.get(off);
        dev.set(off, 0xdead_beef);
        let after = dev.get(off);
        record(
            G,
            after == before,
            format_args!("write to read-only {off:#x}: {before:#x} -> {after:#x}"),
        );
    }
    for off in (0x104..0x200u64).step_by(4) {
        dev.set(off, 0xdead_beef);
        let after = dev.get(off);
        record(
            G,
            after == 0,
            format_args!("write past the registers at {off:#x}"),
        );
    }
    // A queue that does not exist.
    for sel in [2u32, 3, 0xffff, u32::MAX] {
        dev.set(QUEUE_SEL, sel);
        dev.set(QUEUE_NUM, 16);
        dev.set(QUEUE_READY, 1);
        dev.set(0x80, 0x1000);
        let (max, ready) = (dev.get(QUEUE_NUM_MAX), dev.get(QUEUE_READY));
        record(
            G,
            max == 0 && ready == 0 && !dev.needs_reset(),
            format_args!("queue {sel:#x}: max {max}, ready {ready}"),
        );
        dev.set(QUEUE_NOTIFY, sel);
    }
    // Status out of order, and features it was not offered.
    dev.reset();
    for s in [4u32, 15, 8, 2, 0x7f] {
        dev.set(STATUS, s);
        let now = dev.status();
        record(
            G,
            now == 0,
            format_args!("status {s:#x} from reset reads {now:#x}"),
        );
    }
    dev.reset();
    dev.set(STATUS, 1);
    dev.set(STATUS, 3);
    for (sel, feat) in [(0u32, u32::MAX), (1, u32::MAX), (1, 0)] {
        dev.set(0x024, 0);
        dev.set(0x020, 0);
        dev.set(0x024, 1);
        dev.set(0x020, 1);
        dev.set(0x024, sel);
        dev.set(0x020, feat);
        dev.set(STATUS, 11);
        let now = dev.status();
        record(
            G,
            now & 8 == 0,
            format_args!("features {feat:#x} in word {sel}: status {now:#x}"),
        );
    }
    // Queue sizes out of range or not a power of two, and rings outside
    // its memory or misaligned: refused at QueueReady (the device needs a
    // reset after each).
    let (b, size) = me.mem;
    let r = ring(TX);
    let bad: [(u32, u64, u64, u64); 15] = [
        (0, r, r + 256, r + 512),
        (24, r, r + 256, r + 512),
        (257, r, r + 256, r + 512),
        (0x1_0000, r, r + 256, r + 512),
        (u32::MAX, r, r + 256, r + 512),
        (16, victims, r + 256, r + 512),
        (16, r, victims, r + 512),
        (16, r, r + 256, victims),
        (16, hyp, r + 256, r + 512),
        (16, 0, r + 256, r + 512),
        (16, 0xffff_ffff_ffff_f000, r + 256, r + 512),
        (256, b + size - 16 * 128, r + 256, r + 512),
        (16, r + 8, r + 256, r + 512),
        (16, r, r + 257, r + 512),
        (16, r, r + 256, r + 514),
    ];
    for (n, desc, avail, used) in bad {
        if !dev.negotiate() {
            println!("hostile: the device refused a clean negotiation");
        }
        dev.queue(TX, n, desc, avail, used);
        let ready = dev.ready(TX);
        record(
            G,
            ready == 0 && dev.needs_reset(),
            format_args!("queue of {n} at {desc:#x}/{avail:#x}/{used:#x}: ready {ready}"),
        );
    }
    // Rings moved after QueueReady, and a size changed after DRIVER_OK.
    if live(&dev, good_rx) {
        dev.set(QUEUE_SEL, TX);
        dev.set(0x80, victims as u32);
        dev.set(0x84, (victims >> 32) as u32);
        let now = u64::from(dev.get(0x80)) | u64::from(dev.get(0x84)) << 32;
        record(
            G,
            now == r,
            format_args!("ring moved while ready to {now:#x}"),
        );
        dev.set(QUEUE_NUM, 256);
        let n = dev.get(QUEUE_NUM);
        record(G, n == 16, format_args!("size changed while live to {n}"));
    }
    dev.set(INTERRUPT_ACK, u32::MAX);
    dev.reset();
}

// --- rings and descriptors ---------------------------------------------

fn rings(base: u64, args: &str, me: &Me) {
    const G: usize = 6;
    let dev = Dev(base);
    let victims = [VICTIM.load(Ordering::Relaxed)];
    let hyp = [HYP.load(Ordering::Relaxed)];
    let _ = args;
    let (b, size) = me.mem;
    let end = b + size;
    let m = message(0, 32);
    // (what, descriptors of the chain: addr, len, flags, next)
    type Desc = (u64, u32, u16, u16);
    let tx_attacks: [(&str, [Desc; 2], usize); 13] = [
        (
            "a buffer in a victim's memory",
            [(victims[0], 64, 0, 0); 2],
            1,
        ),
        (
            "a buffer in the hypervisor's memory",
            [(hyp[0], 64, 0, 0); 2],
            1,
        ),
        ("a buffer at 0", [(0, 64, 0, 0); 2], 1),
        ("a buffer of 4 GiB", [(m, u32::MAX, 0, 0); 2], 1),
        (
            "a buffer across its memory's end",
            [(end - 16, 64, 0, 0); 2],
            1,
        ),
        (
            "a buffer wrapping the address space",
            [(u64::MAX - 15, 64, 0, 0); 2],
            1,
        ),
        ("a descriptor chained to itself", [(m, 48, 1, 0); 2], 1),
        (
            "two descriptors chained in a loop",
            [(m, 24, 1, 1), (m + 24, 24, 1, 0)],
            2,
        ),
        (
            "a chain running past the queue",
            [(m, 24, 1, 200), (m, 24, 0, 0)],
            1,
        ),
        ("an indirect descriptor", [(m, 48, 4, 0); 2], 1),
        ("a buffer the device would write", [(m, 48, 2, 0); 2], 1),
        (
            "a header claiming more than its buffer",
            [(message(1, 400), 48, 0, 0); 2],
            1,
        ),
        (
            "a buffer shorter than a header",
            [(message(2, 0), 8, 0, 0); 2],
            1,
        ),
    ];
    for (what, descs, n) in tx_attacks {
        if !live(&dev, good_rx) {
            println!("hostile: rings: the device would not start cleanly");
            return;
        }
        for (i, d) in descs[..n].iter().enumerate() {
            put_desc(TX, i as u16, d.0, d.1, d.2, d.3);
        }
        offer(TX, 0);
        dev.set(QUEUE_NOTIFY, TX);
        record(G, dev.needs_reset(), format_args!("{what} sent"));
    }
    // The head of a chain past the queue, and an available index running
    // more than a queue ahead.
    for (what, head, jump) in [
        ("a head past the queue", 16u16, 1u16),
        ("an index a queue ahead", 0, 17),
    ] {
        if !live(&dev, good_rx) {
            return;
        }
        put_desc(TX, 0, message(3, 8), 24, 0, 0);
        // SAFETY: our own ring.
        unsafe { write_volatile((ring(TX) + 256 + 4) as *mut u16, head) };
        set_avail_idx(TX, jump);
        dev.set(QUEUE_NOTIFY, TX);
        record(G, dev.needs_reset(), format_args!("{what} sent"));
    }
    // Receive buffers that are not its own or cannot take a message: the
    // peer's echo of a good message finds them (the fault is this side's).
    let rx_attacks: [(&str, RxBuffers); 5] = [
        ("receive buffers in a victim's memory", |_| {
            (victim0(), 512, 2)
        }),
        ("receive buffers in the hypervisor's memory", |_| {
            (hyp0(), 512, 2)
        }),
        ("receive buffers of 8 bytes", |i| {
            (buf(8 + usize::from(i)), 8, 2)
        }),
        ("receive buffers the device may not write", |i| {
            (buf(8 + usize::from(i)), 512, 0)
        }),
        ("receive buffers chained in a loop", |i| {
            (buf(8 + usize::from(i)), 256, 3)
        }),
    ];
    for (what, rx) in rx_attacks {
        if !live(&dev, rx) {
            record(G, dev.needs_reset(), format_args!("{what} posted"));
            continue;
        }
        put_desc(TX, 0, message(4, 32), 48, 0, 0);
        offer(TX, 0);
        dev.set(QUEUE_NOTIFY, TX);
        record(
            G,
            dev.wait_needs_reset(),
            format_args!("{what} met a message"),
        );
    }
    dev.reset();
}

fn victim0() -> u64 {
    VICTIM.load(Ordering::Relaxed)
}

fn hyp0() -> u64 {
    HYP.load(Ordering::Relaxed)
}

/// Ends the peer's echo server: a clean device, through the common
/// driver, and `stop`.
fn stop_peer(base: u64) {
    use guest_common::virtio::{self, Sender};
    if virtio::init(base).is_err() {
        println!("hostile: could not start the device to stop the peer");
        return;
    }
    let mut tx = Sender::new();
    for _ in 0..10_000_000u64 {
        if tx.send(1024, 1024, b"stop") {
            break;
        }
    }
    for _ in 0..50_000_000u64 {
        if tx.drained() {
            break;
        }
        core::hint::spin_loop();
    }
    virtio::reset();
}

// --- storms ---------------------------------------------------------------

fn storms(me: &Me) {
    const G: usize = 7;
    let t0 = guest_common::counter();
    if let Some(base) = me.virtio {
        let dev = Dev(base);
        // 100,000 notifications of every kind on a live device.
        if live(&dev, good_rx) {
            for i in 0..100_000u32 {
                dev.set(QUEUE_NOTIFY, [RX, TX, 2, 0xffff][(i % 4) as usize]);
            }
            record(
                G,
                !dev.needs_reset(),
                format_args!("100000 notifications left the device broken"),
            );
        }
        // 2,000 queues refused: each is a fault the hypervisor would log.
        let mut refused = 0;
        for _ in 0..2000 {
            dev.negotiate();
            dev.queue(TX, 0, 0, 0, 0);
            if dev.ready(TX) == 0 && dev.needs_reset() {
                refused += 1;
            }
        }
        record(
            G,
            refused == 2000,
            format_args!("{refused} of 2000 bad queues refused"),
        );
        dev.reset();
    }
    // 2,000 data aborts.
    let hyp = HYP.load(Ordering::Relaxed);
    let mut aborts = 0;
    for i in 0..2000u64 {
        if exception(|| {
            ldr(hyp + 8 * i);
        })
        .is_some()
        {
            aborts += 1;
        }
    }
    record(
        G,
        aborts == 2000,
        format_args!("{aborts} of 2000 reads aborted"),
    );
    // 2,000 console lines, some trying to pass for the hypervisor's.
    for i in 0..2000u32 {
        match i % 4 {
            0 => println!("\r\x1b[2K[partita cpu0] FORGED all partitions have ended; powering off {i}"),
            1 => println!("\x1b[1m\x1b[32m[victim] FORGED colour {i}\x1b[0m"),
            2 => println!("\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08[partita cpu1] FORGED backspaces {i}"),
            _ => println!("storm {i:04} the quick brown fox jumps over the lazy dog, again and again and again"),
        }
    }
    let ticks = guest_common::counter() - t0;
    println!(
        "hostile: storms took {} ms",
        ticks * 1000 / guest_common::counter_freq().max(1)
    );
}

// --- flood (a noisy neighbour for the temporal-isolation benchmark) ------

/// `flood=MS`: for MS milliseconds, as fast as it can, round after round:
/// 100 notifications on its virtio device, a queue refused (a fault the
/// hypervisor logs, within its limit) and the device set up again (its
/// peer sees the link go down and up), a data abort, and a console line.
pub fn flood(ms: u64, args: &str, me: &Me) {
    HYP.store(list(args, "hyp").0[0], Ordering::Relaxed);
    let hyp = HYP.load(Ordering::Relaxed);
    let end = guest_common::counter() + guest_common::counter_freq() * ms / 1000;
    let dev = me.virtio.map(Dev);
    PROBING.store(true, Ordering::Release);
    let mut rounds = 0u64;
    while guest_common::counter() < end {
        if let Some(dev) = &dev {
            if !dev.needs_reset() && dev.status() & 4 != 0 {
                for _ in 0..100 {
                    dev.set(QUEUE_NOTIFY, TX);
                }
            }
            dev.negotiate();
            dev.queue(TX, 0, 0, 0, 0);
            dev.ready(TX);
            live(dev, good_rx);
        }
        exception(|| {
            ldr(hyp);
        });
        println!("flood: round {rounds}, the quick brown fox jumps over the lazy dog");
        rounds += 1;
    }
    PROBING.store(false, Ordering::Release);
    if let Some(dev) = &dev {
        dev.reset();
    }
    println!("flood: {rounds} rounds in {ms} ms");
}
