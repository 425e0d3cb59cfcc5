//! Reading a System Device Tree into a validated [`SystemConfig`].
//!
//! The SDT describes the whole board (CPUs, memory, interrupt controller,
//! devices) and, under `/domains`, one `openamp,domain-v1` node per domain
//! (lopper's binding). Every fault is refused with the node's path and the
//! reason. Nothing here touches hardware, so the host command
//! `partita-tool check` runs the very same code.

use crate::tree::{Node, Tree};
use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use fdt::Fdt;

/// A physical (and, for guests, identical intermediate physical) range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

impl Range {
    pub const fn new(base: u64, size: u64) -> Self {
        Range { base, size }
    }

    /// One past the last byte; saturates so a wrapping range still compares.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    pub fn overlaps(&self, o: &Range) -> bool {
        self.base < o.end() && o.base < self.end()
    }

    pub fn contains(&self, o: &Range) -> bool {
        o.base >= self.base && o.end() <= self.end()
    }

    /// Whether `[addr, addr + len)` lies wholly inside this range, which
    /// does not wrap (the SDT's check refuses one that does): the check on
    /// every address a guest hands over, so it is a subtraction and two
    /// comparisons. The address's offset in the range (below it, the
    /// offset wraps past the size) must leave room for `len`; nothing is
    /// added that could overflow.
    #[inline(always)]
    pub fn holds(&self, addr: u64, len: u64) -> bool {
        let off = addr.wrapping_sub(self.base);
        off <= self.size && len <= self.size - off
    }

    /// The whole 4 KiB pages the range touches.
    pub fn pages(&self) -> Range {
        let base = self.base & !(PAGE - 1);
        Range::new(
            base,
            (self.end().saturating_add(PAGE - 1) & !(PAGE - 1)) - base,
        )
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.base, self.end())
    }
}

/// An SDT refused: the node and what is wrong with it. Built once, at boot
/// or in the host tool, so it may own its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdtError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for SdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

fn fault(path: &str, reason: impl Into<String>) -> SdtError {
    SdtError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn err<T>(path: &str, reason: impl Into<String>) -> Result<T, SdtError> {
    Err(fault(path, reason))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

impl fmt::Display for GicVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GicVersion::V2 => "GICv2",
            GicVersion::V3 => "GICv3",
        })
    }
}

/// The interrupt controller: distributor plus redistributors (GICv3), or
/// CPU interface, hypervisor control and virtual CPU interface (GICv2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gic {
    pub path: String,
    pub version: GicVersion,
    pub phandle: u32,
    /// All `reg` entries, in binding order.
    pub regs: Vec<Range>,
    /// The maintenance interrupt's INTID, if given.
    pub maintenance: Option<u32>,
}

/// A physical CPU: its MPIDR affinity and node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub mpidr: u64,
    pub path: String,
}

/// A device some domain was given with `access`, or the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub path: String,
    pub compatible: Vec<String>,
    pub regs: Vec<Range>,
    /// Shared peripheral interrupts, as INTIDs (32 and up).
    pub spis: Vec<u32>,
    /// The board's console UART: every domain that accesses it gets an
    /// emulated one at the same address instead.
    pub is_console: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub path: String,
    pub id: u32,
    pub os_type: String,
    /// Indices into [`SystemConfig::cpus`]; vCPU n runs on `cpus[n]`.
    pub cpus: Vec<usize>,
    pub memory: Vec<Range>,
    /// Indices into [`SystemConfig::devices`].
    pub devices: Vec<usize>,
    pub bootargs: Option<String>,
    /// The boot-package entry holding the domain's kernel.
    pub kernel: String,
    /// An optional initial ramdisk from the boot package.
    pub initrd: Option<String>,
}

impl Domain {
    /// Index of the console device, if the domain has one.
    pub fn console(&self, sys: &SystemConfig) -> Option<usize> {
        self.devices
            .iter()
            .copied()
            .find(|&d| sys.devices[d].is_console)
    }
}

/// Whether `[addr, addr + len)` lies wholly inside one of `ranges` (and does
/// not wrap): the check on every address a guest hands over.
pub fn within(ranges: &[Range], addr: u64, len: u64) -> bool {
    // The question `Range::holds` asks (both are checked against 128-bit
    // arithmetic in tests/sdt.rs), in the form with a sum (`end - base`
    // cannot wrap once `addr >= base`): as the rpmsg pump's inlined
    // fallback past the first range, `holds` made its hot path longer.
    match addr.checked_add(len) {
        Some(end) => ranges
            .iter()
            .any(|m| addr >= m.base && end - m.base <= m.size),
        None => false,
    }
}

/// An rpmsg link between two domains (lopper's `openamp,rpmsg-v1`
/// relation): each side gets a virtio rpmsg device at its own window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpmsgLink {
    pub path: String,
    /// Domain indices: the host (where the relation is written) and the remote.
    pub domains: [usize; 2],
    /// Each side's virtio-mmio window (`VIRTIO_WINDOW` bytes).
    pub windows: [u64; 2],
    /// Each side's interrupt, as an INTID.
    pub spis: [u32; 2],
    /// Whether each side's device offers the name service (VIRTIO_RPMSG_F_NS).
    pub name_service: [bool; 2],
    /// Each side's virtio-mmio version: 2, or 1 for the legacy interface.
    pub versions: [u32; 2],
    /// The longest message (header included) and the smallest receive
    /// buffer the link allows.
    pub buffer_size: u32,
    /// How long, in microseconds, a side's messages may wait while their
    /// receiver polls (0: never), to move several in one trap
    /// (`partita,coalesce-us`).
    pub coalesce_us: u32,
    /// The host reaches the link through its remoteproc of the remote
    /// (`partita,remoteproc-vdev`): its side is that remoteproc's virtio
    /// device, set up and notified by control calls, not a virtio-mmio
    /// window. `windows[0]` is then 0 and `spis[0]` the host's control
    /// interrupt, which also tells it of used buffers.
    pub remoteproc: bool,
}

impl RpmsgLink {
    /// The device model's setup of this link. A remoteproc side is a
    /// legacy device: remoteproc's vrings have the legacy layout and no
    /// VIRTIO_F_VERSION_1.
    pub fn config(&self) -> crate::rpmsg::LinkConfig {
        let mut version = self.versions;
        if self.remoteproc {
            version[0] = 1;
        }
        crate::rpmsg::LinkConfig {
            name_service: self.name_service,
            version,
            buffer_size: self.buffer_size,
        }
    }

    /// Whether side `side` is a virtio-mmio device (with a window and an
    /// interrupt of its own).
    pub fn mmio(&self, side: usize) -> bool {
        side == 1 || !self.remoteproc
    }
}

/// A domain's right to control another's life (lopper's
/// `openamp,remoteproc-v1` or `-v2` relation, written in the controller's
/// `domain-to-domain` node with `remote = <&target>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub path: String,
    pub controller: usize,
    pub target: usize,
    /// The controller's interrupt (INTID) raised when the target's state
    /// changes (`partita,control-interrupt`, an SPI number), if any.
    pub spi: Option<u32>,
}

/// Bytes of one virtio-mmio register window.
pub const VIRTIO_WINDOW: u64 = 0x200;
/// A link's buffer size: room for a name-service announcement (a header
/// and 40 bytes) at least, and no more than the longest message rpmsg's
/// 16-bit length can describe.
pub const BUFFER_SIZE_MIN: u32 = 64;
pub const BUFFER_SIZE_MAX: u32 = 16 + 0xffff;
/// A link's `partita,coalesce-us` unless set, and its largest.
pub const COALESCE_US: u32 = 20;
pub const COALESCE_US_MAX: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    pub model: String,
    pub cpus: Vec<Cpu>,
    pub ram: Vec<Range>,
    /// Where the hypervisor, its boot package and its heap live.
    pub hypervisor: Range,
    /// Memory firmware keeps (`/reserved-memory` nodes other than the
    /// hypervisor's, and the tree's `/memreserve/` entries): never mapped
    /// at EL2 or in any stage 2.
    pub reserved: Vec<Reserved>,
    pub gic: Gic,
    /// Index into `devices` of the hypervisor's console (`/chosen/stdout-path`).
    pub console: usize,
    /// The architected timer's interrupts, as 3-cell GIC specifiers.
    pub timer_interrupts: Vec<[u32; 3]>,
    pub devices: Vec<Device>,
    pub domains: Vec<Domain>,
    pub links: Vec<RpmsgLink>,
    pub controls: Vec<Control>,
}

/// A range of RAM firmware keeps, and the node that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub path: String,
    pub range: Range,
}

/// Most vCPUs in one domain (its PSCI numbering uses Aff0 only).
pub const MAX_DOMAIN_CPUS: usize = crate::psci::MAX_VCPUS;
const PAGE: u64 = 4096;
/// Guest addresses stage 2 translates (see [`crate::pagetable`]).
const IPA_BITS: u32 = crate::pagetable::INPUT_BITS;
const IPA_LIMIT: u64 = 1 << IPA_BITS;
/// The `os,type` values lopper's design-rule checks accept.
pub const OS_TYPES: [&str; 5] = ["linux", "zephyr", "baremetal", "xen", "freertos"];

fn cells(v: &[u8]) -> impl Iterator<Item = u32> + '_ {
    v.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

fn read_cells(it: &mut impl Iterator<Item = u32>, n: usize) -> Option<u64> {
    (0..n).try_fold(0u64, |acc, _| Some((acc << 32) | u64::from(it.next()?)))
}

fn as_str(v: &[u8]) -> Option<&str> {
    core::str::from_utf8(v.strip_suffix(&[0]).unwrap_or(v)).ok()
}

fn prop_str<'a>(n: &Node<'a>, name: &str) -> Option<&'a str> {
    as_str(n.property(name)?)
}

fn strings(n: &Node<'_>, name: &str) -> Vec<String> {
    n.property(name)
        .map(|v| {
            v.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .filter_map(|s| core::str::from_utf8(s).ok().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn is_enabled(n: &Node<'_>) -> bool {
    prop_str(n, "status").is_none_or(|s| s == "okay" || s == "ok")
}

/// A tree's nodes with their paths, which every error names.
fn paths<'s, 'a: 's>(
    nodes: impl Iterator<Item = &'s Node<'a>> + 's,
) -> impl Iterator<Item = (&'s str, &'s Node<'a>)> + 's {
    nodes.map(|n| (n.path.as_str(), n))
}

/// The SDT `blob`, checked and read ([`Tree::new`]).
pub fn read_tree(blob: &[u8]) -> Result<Tree<'_>, SdtError> {
    Tree::new(blob).map_err(|e| fault("/", format!("not a device tree: {e}")))
}

/// Reads `name` as <address size> pairs with the given cell counts.
fn ranges(path: &str, v: &[u8], name: &str, ac: usize, sc: usize) -> Result<Vec<Range>, SdtError> {
    if !(1..=2).contains(&ac)
        || !(1..=2).contains(&sc)
        || v.is_empty()
        || !v.len().is_multiple_of((ac + sc) * 4)
    {
        return err(
            path,
            format!("`{name}` is not a list of <address size> with {ac}+{sc} cells"),
        );
    }
    let mut it = cells(v);
    let mut out = Vec::new();
    while let (Some(base), Some(size)) = (read_cells(&mut it, ac), read_cells(&mut it, sc)) {
        if size == 0 || base.checked_add(size).is_none() {
            return err(
                path,
                format!("`{name}` range {base:#x}+{size:#x} is empty or wraps"),
            );
        }
        out.push(Range::new(base, size));
    }
    Ok(out)
}

fn reg(path: &str, n: &Node<'_>) -> Result<Vec<Range>, SdtError> {
    match n.property("reg") {
        Some(v) => ranges(path, v, "reg", n.addr_cells, n.size_cells),
        None => err(path, "missing property `reg`"),
    }
}

/// The SPIs among a node's GIC interrupt specifiers, as INTIDs.
fn spis(path: &str, n: &Node<'_>) -> Result<Vec<u32>, SdtError> {
    let Some(v) = n.property("interrupts") else {
        return Ok(Vec::new());
    };
    if v.len() % 12 != 0 {
        return err(path, "`interrupts` is not a list of 3-cell GIC specifiers");
    }
    let c: Vec<u32> = cells(v).collect();
    let mut out = Vec::new();
    for s in c.chunks_exact(3) {
        match (s[0], s[1]) {
            (0, n) if n < 988 => out.push(n + 32),
            (0, n) => return err(path, format!("SPI {n} is beyond the GIC's last (987)")),
            // PPIs are per CPU and belong to whoever runs there.
            (1, _) => {}
            (t, _) => {
                return err(
                    path,
                    format!("interrupt type {t} is neither SPI (0) nor PPI (1)"),
                )
            }
        }
    }
    Ok(out)
}

impl SystemConfig {
    /// Reads and validates an SDT blob.
    pub fn from_dtb(blob: &[u8]) -> Result<SystemConfig, SdtError> {
        Self::from_tree(&read_tree(blob)?)
    }

    /// Reads and validates the SDT `tree` holds, which stays for building
    /// each partition's device tree from it ([`crate::guest_fdt`]).
    pub fn from_tree(tree: &Tree<'_>) -> Result<SystemConfig, SdtError> {
        let root = tree.root();
        let model = prop_str(root, "model")
            .unwrap_or("unnamed board")
            .to_owned();

        let ram = read_ram(tree)?;
        let hypervisor = read_hypervisor(tree, &ram)?;
        let reserved = read_reserved(tree, hypervisor)?;
        let gic = read_gic(tree)?;
        let timer_interrupts = read_timer(tree)?;
        let console = read_console(tree)?;

        let mut sys = SystemConfig {
            model,
            cpus: read_cpus(tree)?,
            ram,
            hypervisor,
            reserved,
            gic,
            console: 0,
            timer_interrupts,
            devices: alloc::vec![console],
            domains: Vec::new(),
            links: Vec::new(),
            controls: Vec::new(),
        };
        read_domains(tree, &mut sys)?;
        // Controls first: a link may be reached through one.
        read_controls(tree, &mut sys)?;
        read_links(tree, &mut sys)?;
        sys.validate()?;
        Ok(sys)
    }

    fn validate(&self) -> Result<(), SdtError> {
        if self.domains.is_empty() {
            return err("/domains", "no `openamp,domain-v1` domain to start");
        }
        for (i, d) in self.domains.iter().enumerate() {
            for (j, m) in d.memory.iter().enumerate() {
                if m.base % PAGE != 0 || m.size % PAGE != 0 {
                    return err(&d.path, format!("memory {m} is not 4 KiB-aligned"));
                }
                if !self.ram.iter().any(|r| r.contains(m)) {
                    return err(&d.path, format!("memory {m} is not inside the board's RAM"));
                }
                if m.overlaps(&self.hypervisor) {
                    return err(
                        &d.path,
                        format!("memory {m} overlaps the hypervisor's {}", self.hypervisor),
                    );
                }
                if d.memory[..j].iter().any(|o| o.overlaps(m)) {
                    return err(&d.path, format!("memory {m} is listed twice"));
                }
                if let Some(r) = self.reserved.iter().find(|r| r.range.pages().overlaps(m)) {
                    return err(
                        &d.path,
                        format!(
                            "memory {m} overlaps {} of {}, which firmware keeps",
                            r.range, r.path
                        ),
                    );
                }
                if m.end() > IPA_LIMIT {
                    return err(&d.path, format!("memory {m} is beyond the {IPA_BITS}-bit guest address space stage 2 translates"));
                }
                if let Some((g, what)) = self.kept_devices().find(|(g, _)| g.pages().overlaps(m)) {
                    return err(
                        &d.path,
                        format!("memory {m} overlaps {g} of {what}, which the hypervisor keeps"),
                    );
                }
            }
            for o in &self.domains[..i] {
                if o.id == d.id {
                    return err(&d.path, format!("id {} is also the id of {}", d.id, o.path));
                }
                if o.name == d.name {
                    return err(
                        &d.path,
                        format!("name `{}` is also the name of {}", d.name, o.path),
                    );
                }
                if let Some(c) = d.cpus.iter().find(|c| o.cpus.contains(c)) {
                    return err(
                        &d.path,
                        format!("CPU {} is also given to {}", self.cpus[*c].path, o.path),
                    );
                }
                for m in &d.memory {
                    if let Some(om) = o.memory.iter().find(|om| om.overlaps(m)) {
                        return err(&d.path, format!("memory {m} overlaps {om} of {}", o.path));
                    }
                }
                let shared = |x: &&usize| o.devices.contains(x) && !self.devices[**x].is_console;
                if let Some(&dev) = d.devices.iter().find(shared) {
                    return err(
                        &d.path,
                        format!(
                            "device {} is also given to {}",
                            self.devices[dev].path, o.path
                        ),
                    );
                }
            }
        }
        self.check_device_addresses()?;
        // Stage 2 maps devices by page, so two devices must not share one.
        for (i, a) in self.devices.iter().enumerate() {
            for b in &self.devices[..i] {
                if a.regs
                    .iter()
                    .any(|ra| b.regs.iter().any(|rb| ra.pages().overlaps(&rb.pages())))
                {
                    return err(
                        &a.path,
                        format!("registers share a 4 KiB page with {}", b.path),
                    );
                }
            }
        }
        self.check_interrupt_owners()?;
        Ok(())
    }

    /// The register ranges the hypervisor drives itself and keeps from
    /// every guest: the interrupt controller's frames and the console's.
    fn kept_devices(&self) -> impl Iterator<Item = (&Range, &str)> + '_ {
        let console = &self.devices[self.console];
        self.gic
            .regs
            .iter()
            .map(|g| (g, self.gic.path.as_str()))
            .chain(console.regs.iter().map(|r| (r, console.path.as_str())))
    }

    /// Every page of every passed-through device's registers, against all
    /// the hypervisor keeps (interrupt controller, console, its own and
    /// every domain's memory, virtio windows) and the 39-bit guest address
    /// space. Compared by address: a node's name or path proves nothing.
    fn check_device_addresses(&self) -> Result<(), SdtError> {
        for dev in self.devices.iter().filter(|d| !d.is_console) {
            for r in &dev.regs {
                let p = r.pages();
                if p.end() > IPA_LIMIT {
                    return err(&dev.path, format!("registers {r} are beyond the {IPA_BITS}-bit guest address space stage 2 translates"));
                }
                if let Some((g, what)) = self.kept_devices().find(|(g, _)| g.pages().overlaps(&p)) {
                    return err(&dev.path, format!("registers {r} share a page with {g} of {what}, which the hypervisor keeps"));
                }
                if p.overlaps(&self.hypervisor) {
                    return err(
                        &dev.path,
                        format!(
                            "registers {r} overlap the hypervisor's memory {}",
                            self.hypervisor
                        ),
                    );
                }
                if let Some(m) = self.ram.iter().find(|m| m.overlaps(&p)) {
                    return err(
                        &dev.path,
                        format!(
                            "registers {r} overlap RAM {m}; that is not a device to pass through"
                        ),
                    );
                }
                for l in &self.links {
                    for side in (0..2).filter(|&s| l.mmio(s)) {
                        let w = Range::new(l.windows[side], VIRTIO_WINDOW);
                        if w.pages().overlaps(&p) {
                            return err(&dev.path, format!("registers {r} share a page with the virtio window {w} of {} ({})", self.domains[l.domains[side]].name, l.path));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One owner for every SPI across the whole system: the hypervisor
    /// (its console's), one passed-through device, or one side of one
    /// rpmsg link. Ownership at run time is a table by INTID, so a second
    /// owner would take the first one's interrupts.
    fn check_interrupt_owners(&self) -> Result<(), SdtError> {
        let console = &self.devices[self.console];
        // (INTID, owning node, how to name the owner)
        let mut owners: Vec<(u32, String, String)> = Vec::new();
        let mut claim = |spi: u32, path: &str, whose: String, what: &str| match owners
            .iter()
            .find(|(i, p, _)| *i == spi && p != path)
        {
            Some((_, _, other)) => err(path, format!("{what} is also {other}")),
            None => {
                owners.push((spi, path.to_owned(), whose));
                Ok(())
            }
        };
        for &spi in &console.spis {
            let whose = format!("the console {}'s, which the hypervisor keeps", console.path);
            claim(spi, &console.path, whose, &format!("SPI {}", spi - 32))?;
        }
        for d in &self.domains {
            for dev in d
                .devices
                .iter()
                .map(|&i| &self.devices[i])
                .filter(|v| !v.is_console)
            {
                for &spi in &dev.spis {
                    let whose = format!("{}'s, given to {}", dev.path, d.path);
                    claim(spi, &dev.path, whose, &format!("SPI {}", spi - 32))?;
                }
            }
        }
        // A remoteproc side's interrupt is its host's control interrupt,
        // claimed below.
        for l in &self.links {
            for side in (0..2).filter(|&s| l.mmio(s)) {
                let (spi, name) = (l.spis[side], &self.domains[l.domains[side]].name);
                let whose = format!("{name}'s side of {}", l.path);
                let what = format!("interrupt {} of {name}", spi - 32);
                claim(spi, &l.path, whose, &what)?;
            }
        }
        for (c, spi) in self.controls.iter().filter_map(|c| Some((c, c.spi?))) {
            let name = &self.domains[c.controller].name;
            let whose = format!("{name}'s control interrupt ({})", c.path);
            claim(
                spi,
                &c.path,
                whose,
                &format!("control interrupt {}", spi - 32),
            )?;
        }
        Ok(())
    }

    /// Every SPI the configuration uses against the interrupt lines the
    /// GIC implements (GICD_TYPER), known only at boot.
    pub fn check_interrupt_lines(&self, lines: u32) -> Result<(), SdtError> {
        let passed = self
            .domains
            .iter()
            .flat_map(|d| d.devices.iter().map(|&i| &self.devices[i]))
            .chain(core::iter::once(&self.devices[self.console]));
        for dev in passed {
            if let Some(spi) = dev.spis.iter().find(|&&s| s >= lines) {
                return err(
                    &dev.path,
                    format!(
                        "SPI {} (INTID {spi}) is beyond this GIC's {lines} interrupt lines",
                        spi - 32
                    ),
                );
            }
        }
        for l in &self.links {
            if let Some(side) = (0..2).find(|&s| l.mmio(s) && l.spis[s] >= lines) {
                return err(
                    &l.path,
                    format!(
                        "interrupt {} of {} is beyond this GIC's {lines} interrupt lines",
                        l.spis[side] - 32,
                        self.domains[l.domains[side]].name
                    ),
                );
            }
        }
        for (c, spi) in self.controls.iter().filter_map(|c| Some((c, c.spi?))) {
            if spi >= lines {
                return err(
                    &c.path,
                    format!(
                        "control interrupt {} is beyond this GIC's {lines} interrupt lines",
                        spi - 32
                    ),
                );
            }
        }
        Ok(())
    }

    /// The rpmsg links a domain takes part in: (link index, its side).
    pub fn links_of(&self, domain: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.links
            .iter()
            .enumerate()
            .filter_map(move |(i, l)| l.domains.iter().position(|&d| d == domain).map(|s| (i, s)))
    }

    /// The right by which `controller` controls `target`, if it has one.
    pub fn control(&self, controller: usize, target: usize) -> Option<&Control> {
        self.controls
            .iter()
            .find(|c| c.controller == controller && c.target == target)
    }

    /// The partitions, one line each, for the boot log and `check`.
    pub fn partition_table(&self) -> String {
        let mut s = String::new();
        for d in &self.domains {
            let cpus: Vec<String> = d.cpus.iter().map(|c| format!("{c}")).collect();
            let mem: Vec<String> = d.memory.iter().map(|m| format!("{m}")).collect();
            let devs: Vec<&str> = d
                .devices
                .iter()
                .map(|&i| self.devices[i].path.rsplit('/').next().unwrap_or(""))
                .collect();
            s += &format!(
                "  {:<8} id {:<2} {:<9} cpus [{}]  memory {}  devices [{}]  kernel {}{}\n",
                d.name,
                d.id,
                d.os_type,
                cpus.join(","),
                mem.join(" "),
                devs.join(", "),
                d.kernel,
                d.initrd
                    .as_ref()
                    .map(|r| format!(" initrd {r}"))
                    .unwrap_or_default(),
            );
        }
        for l in &self.links {
            // Versions and buffer size only where they are not the default.
            let mut extra = String::new();
            if l.remoteproc && l.versions[1] != 2 {
                extra += &format!("  virtio -/{}", l.versions[1]);
            } else if !l.remoteproc && l.versions != [2, 2] {
                extra += &format!("  virtio {}/{}", l.versions[0], l.versions[1]);
            }
            if l.buffer_size != crate::rpmsg::BUFFER_SIZE {
                extra += &format!("  buffers {} bytes", l.buffer_size);
            }
            if l.coalesce_us != COALESCE_US {
                extra += &format!("  coalesce {} us", l.coalesce_us);
            }
            let sides = match l.remoteproc {
                true => format!(
                    "its remoteproc's vdev / virtio-mmio {:#x} (irq {})",
                    l.windows[1], l.spis[1]
                ),
                false => format!(
                    "virtio-mmio {:#x} (irq {}) / {:#x} (irq {})",
                    l.windows[0], l.spis[0], l.windows[1], l.spis[1]
                ),
            };
            s += &format!(
                "  rpmsg    {} <-> {}  {sides}{extra}\n",
                self.domains[l.domains[0]].name, self.domains[l.domains[1]].name,
            );
        }
        for c in &self.controls {
            s += &format!(
                "  control  {} -> {}{}\n",
                self.domains[c.controller].name,
                self.domains[c.target].name,
                c.spi
                    .map(|i| format!("  interrupt {}", i - 32))
                    .unwrap_or_default()
            );
        }
        for r in &self.reserved {
            s += &format!("  firmware {}  {}, never mapped\n", r.range, r.path);
        }
        s
    }
}

fn read_ram(tree: &Tree<'_>) -> Result<Vec<Range>, SdtError> {
    let mut ram = Vec::new();
    for (path, n) in paths(tree.children_of("/")) {
        if prop_str(n, "device_type") == Some("memory") && is_enabled(n) {
            ram.extend(reg(path, n)?);
        }
    }
    if ram.is_empty() {
        return err("/", "no memory node (device_type = \"memory\")");
    }
    Ok(ram)
}

fn read_hypervisor(tree: &Tree<'_>, ram: &[Range]) -> Result<Range, SdtError> {
    let Some((path, n)) = paths(tree.children_of("/reserved-memory"))
        .find(|(_, n)| n.is_compatible("partita,hypervisor"))
    else {
        return err(
            "/reserved-memory",
            "no node with compatible = \"partita,hypervisor\" (where the hypervisor lives)",
        );
    };
    let [h] = reg(path, n)?[..] else {
        return err(path, "`reg` must be one range");
    };
    if !ram.iter().any(|m| m.contains(&h)) {
        return err(path, format!("{h} is not inside the board's RAM"));
    }
    Ok(h)
}

/// Every range firmware keeps: `/reserved-memory` children with a `reg`
/// other than the hypervisor's (a node with only a `size` asks an OS to
/// allocate, which no partition does), and `/memreserve/` entries. The
/// hypervisor's own region may not overlap one: its heap would be
/// firmware's memory.
fn read_reserved(tree: &Tree<'_>, hypervisor: Range) -> Result<Vec<Reserved>, SdtError> {
    let mut out = Vec::new();
    for (path, n) in paths(tree.children_of("/reserved-memory")) {
        if n.is_compatible("partita,hypervisor") || !is_enabled(n) || n.property("reg").is_none() {
            continue;
        }
        for range in reg(path, n)? {
            out.push(Reserved {
                path: path.to_owned(),
                range,
            });
        }
    }
    for &(base, size) in &tree.reservations {
        let range = Range::new(base, size);
        if range.size == 0 {
            continue;
        }
        out.push(Reserved {
            path: "/memreserve/".to_owned(),
            range,
        });
    }
    for r in &out {
        if r.range.base.checked_add(r.range.size).is_none() {
            return err(&r.path, format!("{} wraps around", r.range));
        }
        if r.range.pages().overlaps(&hypervisor) {
            return err(
                &r.path,
                format!("{} overlaps the hypervisor's memory {hypervisor}", r.range),
            );
        }
    }
    Ok(out)
}

fn read_gic(tree: &Tree<'_>) -> Result<Gic, SdtError> {
    for (path, n) in paths(tree.nodes.iter()) {
        let version = if n.is_compatible("arm,gic-v3") {
            GicVersion::V3
        } else if n.is_compatible("arm,gic-400") || n.is_compatible("arm,cortex-a15-gic") {
            GicVersion::V2
        } else {
            continue;
        };
        let regs = reg(path, n)?;
        let need = if version == GicVersion::V3 { 2 } else { 4 };
        if regs.len() < need {
            return err(
                path,
                format!("`reg` has {} ranges; this GIC needs {need}", regs.len()),
            );
        }
        let phandle = n.u32("phandle").ok_or_else(|| {
            fault(
                path,
                "no phandle, so no device can name it as interrupt-parent",
            )
        })?;
        let maintenance = n.property("interrupts").and_then(|v| {
            let c: Vec<u32> = cells(v).collect();
            (c.len() >= 2 && c[0] == 1 && c[1] < 16).then_some(c[1] + 16)
        });
        return Ok(Gic {
            path: path.to_owned(),
            version,
            phandle,
            regs,
            maintenance,
        });
    }
    err(
        "/",
        "no interrupt controller with compatible \"arm,gic-v3\" or \"arm,gic-400\"",
    )
}

fn read_timer(tree: &Tree<'_>) -> Result<Vec<[u32; 3]>, SdtError> {
    let Some((path, n)) =
        paths(tree.nodes.iter()).find(|(_, n)| n.is_compatible("arm,armv8-timer"))
    else {
        return err("/", "no architected timer (compatible \"arm,armv8-timer\")");
    };
    let v = n.property("interrupts").unwrap_or(&[]);
    if v.is_empty() || !v.len().is_multiple_of(12) {
        return err(
            path,
            "`interrupts` must list the timer's PPIs as 3-cell GIC specifiers",
        );
    }
    let c: Vec<u32> = cells(v).collect();
    Ok(c.chunks_exact(3).map(|s| [s[0], s[1], s[2]]).collect())
}

fn read_console(tree: &Tree<'_>) -> Result<Device, SdtError> {
    let chosen = tree
        .get("/chosen")
        .ok_or_else(|| fault("/chosen", "missing node"))?;
    let stdout = prop_str(chosen, "stdout-path").ok_or_else(|| {
        fault(
            "/chosen",
            "missing property `stdout-path` (the hypervisor's console)",
        )
    })?;
    let stdout = stdout.split(':').next().unwrap_or(stdout);
    let path = if stdout.starts_with('/') {
        stdout
    } else {
        tree.get("/aliases")
            .and_then(|a| prop_str(a, stdout))
            .unwrap_or(stdout)
    };
    let n = tree
        .get(path)
        .ok_or_else(|| fault("/chosen", format!("stdout-path `{stdout}` names no node")))?;
    Ok(Device {
        path: path.to_owned(),
        compatible: strings(n, "compatible"),
        regs: reg(path, n)?,
        spis: spis(path, n)?,
        is_console: true,
    })
}

/// Physical CPUs: every `device_type = "cpu"` node, in tree order.
fn read_cpus(tree: &Tree<'_>) -> Result<Vec<Cpu>, SdtError> {
    let mut cpus = Vec::new();
    for (path, n) in paths(tree.nodes.iter()) {
        if prop_str(n, "device_type") != Some("cpu") || path.starts_with("/domains") {
            continue;
        }
        let v = n
            .property("reg")
            .ok_or_else(|| fault(path, "missing property `reg` (the CPU's MPIDR)"))?;
        let mpidr = read_cells(&mut cells(v), n.addr_cells.clamp(1, 2))
            .ok_or_else(|| fault(path, "`reg` is too short"))?;
        check_mpidr(path, mpidr, &cpus)?;
        cpus.push(Cpu {
            mpidr,
            path: path.to_owned(),
        });
    }
    if cpus.is_empty() {
        return err("/cpus", "no CPU nodes");
    }
    Ok(cpus)
}

/// MPIDR bits that name a CPU: Aff3 (39:32) and Aff2..Aff0 (23:0).
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// A CPU's `reg` must be an affinity PSCI can start, and no other CPU's.
fn check_mpidr(path: &str, mpidr: u64, earlier: &[Cpu]) -> Result<(), SdtError> {
    if mpidr & !MPIDR_AFFINITY != 0 {
        return err(
            path,
            format!("`reg` {mpidr:#x} is not an MPIDR affinity (bits 39:32 and 23:0 only)"),
        );
    }
    if let Some(o) = earlier.iter().find(|c| c.mpidr == mpidr) {
        return err(
            path,
            format!("MPIDR {mpidr:#x} is also the MPIDR of {}", o.path),
        );
    }
    Ok(())
}

/// Every `openamp,domain-v1` node must be a child of `/domains`: one
/// anywhere else would be read by lopper and silently ignored here.
fn check_domain_nodes(tree: &Tree<'_>) -> Result<(), SdtError> {
    for (path, n) in paths(tree.nodes.iter()) {
        if !n.is_compatible("openamp,domain-v1") {
            continue;
        }
        match path.rsplit_once('/') {
            Some(("/domains", _)) => {}
            _ if path.starts_with("/domains/") => {
                return err(
                    path,
                    "a domain nested in another node: domains are children of /domains",
                );
            }
            _ => {
                return err(
                    path,
                    "a domain outside /domains: domains are children of /domains",
                );
            }
        }
    }
    Ok(())
}

fn read_domains(tree: &Tree<'_>, sys: &mut SystemConfig) -> Result<(), SdtError> {
    check_domain_nodes(tree)?;
    let domains = tree
        .get("/domains")
        .ok_or_else(|| fault("/domains", "missing node"))?;
    // `memory` is read with the cell sizes of /domains, which lopper's checks
    // expect to equal the root's; memory flag cells are not supported.
    let ac = domains.u32("#address-cells").map_or(2, |v| v as usize);
    let sc = domains.u32("#size-cells").map_or(1, |v| v as usize);
    for (path, n) in paths(tree.children_of("/domains")) {
        if !n.is_compatible("openamp,domain-v1") || !is_enabled(n) {
            continue;
        }
        let domain = read_domain(tree, sys, path, n, ac, sc)?;
        sys.domains.push(domain);
    }
    Ok(())
}

fn read_domain(
    tree: &Tree<'_>,
    sys: &mut SystemConfig,
    path: &str,
    n: &Node<'_>,
    ac: usize,
    sc: usize,
) -> Result<Domain, SdtError> {
    let need = |name: &str| {
        n.property(name)
            .ok_or_else(|| fault(path, format!("missing property `{name}`")))
    };
    let id = n
        .u32("id")
        .ok_or_else(|| fault(path, "missing property `id`"))?;
    let name =
        prop_str(n, "name").unwrap_or_else(|| n.name().split('@').next().unwrap_or_default());
    let os_type = prop_str(n, "os,type").unwrap_or("baremetal");
    if !OS_TYPES.contains(&os_type) {
        return err(
            path,
            format!(
                "`os,type` is \"{os_type}\"; lopper knows {}",
                OS_TYPES.join(", ")
            ),
        );
    }
    let cpus = read_domain_cpus(tree, sys, path, need("cpus")?)?;
    let memory = ranges(path, need("memory")?, "memory", ac, sc)?;
    let devices = read_access(tree, sys, path, n)?;
    let bootargs = tree
        .get(&format!("{path}/chosen"))
        .and_then(|c| prop_str(c, "bootargs"))
        .map(String::from);
    // Named after `xen,kernel` and `xen,initrd` in lopper's Xen flow.
    let kernel = prop_str(n, "partita,kernel").ok_or_else(|| {
        fault(
            path,
            "missing property `partita,kernel` (the boot-package entry with its kernel)",
        )
    })?;
    let initrd = prop_str(n, "partita,initrd").map(String::from);
    Ok(Domain {
        name: name.to_owned(),
        path: path.to_owned(),
        id,
        os_type: os_type.to_owned(),
        cpus,
        memory,
        devices,
        bootargs,
        kernel: kernel.to_owned(),
        initrd,
    })
}

/// `cpus = <&cluster cpu-mask execution-level>`, one triplet per cluster;
/// bit i of the mask is the cluster's i-th CPU.
fn read_domain_cpus(
    tree: &Tree<'_>,
    sys: &SystemConfig,
    path: &str,
    v: &[u8],
) -> Result<Vec<usize>, SdtError> {
    let c: Vec<u32> = cells(v).collect();
    if c.is_empty() || !c.len().is_multiple_of(3) {
        return err(
            path,
            "`cpus` must be <&cluster cpu-mask execution-level> triplets",
        );
    }
    let mut cpus = Vec::new();
    for t in c.chunks_exact(3) {
        let (cluster, mask, level) = (t[0], t[1], t[2]);
        let (cluster_path, cn) = tree
            .by_phandle(cluster)
            .map(|n| (n.path.as_str(), n))
            .ok_or_else(|| {
                fault(
                    path,
                    format!("`cpus` names phandle {cluster:#x}, which no node has"),
                )
            })?;
        if !cn.is_compatible("cpus,cluster") {
            return err(
                path,
                format!("`cpus` names {cluster_path}, which is not a \"cpus,cluster\""),
            );
        }
        // Bit 31 means secure, bits 1:0 the exception level; guests run
        // non-secure at EL1, and nothing else is accepted.
        if level != 0x1 {
            return err(
                path,
                format!("`cpus` execution level {level:#x}: domains run non-secure at EL1 (0x1)"),
            );
        }
        let in_cluster: Vec<usize> = (0..sys.cpus.len())
            .filter(|&i| {
                sys.cpus[i]
                    .path
                    .strip_prefix(cluster_path)
                    .is_some_and(|r| r.starts_with('/'))
            })
            .collect();
        if mask == 0 {
            return err(path, "`cpus` mask names no CPU");
        }
        if u64::from(mask)
            .checked_shr(in_cluster.len() as u32)
            .unwrap_or(0)
            != 0
        {
            return err(
                path,
                format!(
                    "`cpus` mask {mask:#x} names CPUs that {cluster_path} does not have ({} CPUs)",
                    in_cluster.len()
                ),
            );
        }
        for (_, &c) in in_cluster
            .iter()
            .enumerate()
            .take(32)
            .filter(|&(i, _)| mask & (1 << i) != 0)
        {
            if cpus.contains(&c) {
                return err(path, format!("`cpus` names {} twice", sys.cpus[c].path));
            }
            cpus.push(c);
        }
    }
    if cpus.len() > MAX_DOMAIN_CPUS {
        return err(
            path,
            format!(
                "{} CPUs; a domain has at most {MAX_DOMAIN_CPUS}",
                cpus.len()
            ),
        );
    }
    Ok(cpus)
}

/// `access = <&device flags...>` with `#access-flags-cells` flag cells. Flag
/// bit 0 marks a device shared, which only the console may be: each domain
/// that shares it gets an emulated one.
fn read_access(
    tree: &Tree<'_>,
    sys: &mut SystemConfig,
    path: &str,
    n: &Node<'_>,
) -> Result<Vec<usize>, SdtError> {
    let flag_cells = n.u32("#access-flags-cells").unwrap_or(0) as usize;
    let access: Vec<u32> = n
        .property("access")
        .map(|v| cells(v).collect())
        .unwrap_or_default();
    if !access.len().is_multiple_of(1 + flag_cells) {
        return err(
            path,
            format!("`access` is not a list of <&device> with {flag_cells} flag cells"),
        );
    }
    let mut devices = Vec::new();
    for entry in access.chunks_exact(1 + flag_cells) {
        let (ph, shared) = (entry[0], entry.get(1).is_some_and(|f| f & 1 != 0));
        let (dpath, dn) = tree
            .by_phandle(ph)
            .map(|n| (n.path.as_str(), n))
            .ok_or_else(|| {
                fault(
                    path,
                    format!("`access` names phandle {ph:#x}, which no node has"),
                )
            })?;
        let idx = match sys.devices.iter().position(|d| d.path == dpath) {
            Some(i) => i,
            None => {
                if dpath == sys.gic.path || sys.cpus.iter().any(|c| c.path.starts_with(dpath)) {
                    return err(
                        path,
                        format!("`access` names {dpath}, which the hypervisor keeps"),
                    );
                }
                let dev = Device {
                    path: dpath.to_owned(),
                    compatible: strings(dn, "compatible"),
                    regs: reg(dpath, dn)?,
                    spis: spis(dpath, dn)?,
                    is_console: false,
                };
                if let Some(r) = dev
                    .regs
                    .iter()
                    .find(|r| sys.ram.iter().any(|m| m.overlaps(r)))
                {
                    return err(
                        dpath,
                        format!("registers {r} overlap RAM; that is not a device to pass through"),
                    );
                }
                sys.devices.push(dev);
                sys.devices.len() - 1
            }
        };
        if sys.devices[idx].is_console && !shared {
            return err(path, format!("`access` to the console {dpath} must be flagged shared (0x1): each domain gets an emulated one"));
        }
        if !sys.devices[idx].is_console && shared {
            return err(
                path,
                format!("`access` flags {dpath} shared (0x1); only the console may be shared"),
            );
        }
        if !devices.contains(&idx) {
            devices.push(idx);
        }
    }
    Ok(devices)
}

/// The console UARTs the hypervisor drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// ARM PL011 (QEMU virt).
    Pl011,
    /// Cadence UART (Xilinx ZynqMP).
    Cadence,
}

impl UartKind {
    pub fn from_compatible<'a>(mut c: impl Iterator<Item = &'a str>) -> Option<Self> {
        c.find_map(|c| match c {
            "arm,pl011" => Some(UartKind::Pl011),
            "cdns,uart-r1p12" | "cdns,uart-r1p8" | "xlnx,xuartps" => Some(UartKind::Cadence),
            _ => None,
        })
    }
}

/// Why the SDT gave the hypervisor nothing to start with: no memory for
/// its heap ([`hypervisor_memory`]) or no console ([`console`],
/// [`stdout_uart`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyError {
    /// The blob is not a well-formed device tree.
    Blob(crate::dtb::DtbError),
    /// No `/reserved-memory` node compatible with "partita,hypervisor"
    /// with a `reg` the hypervisor can read.
    NoHypervisorMemory,
    /// `/chosen/stdout-path` names no UART the hypervisor drives.
    NoConsole,
}

impl fmt::Display for EarlyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EarlyError::Blob(e) => write!(f, "/: not a device tree: {e}"),
            EarlyError::NoHypervisorMemory => f.write_str(
                "/reserved-memory: no node with compatible = \"partita,hypervisor\" and a `reg`",
            ),
            EarlyError::NoConsole => {
                f.write_str("/chosen: `stdout-path` names no PL011 or Cadence UART with a `reg`")
            }
        }
    }
}

/// The first entry of `reg`, read with a parent's `#address-cells` and
/// `#size-cells` (absent: 2 and 1).
fn first_reg(address_cells: Option<&[u8]>, size_cells: Option<&[u8]>, reg: &[u8]) -> Option<Range> {
    let ac = address_cells
        .and_then(|v| cells(v).next())
        .map_or(2, |v| v as usize);
    let sc = size_cells
        .and_then(|v| cells(v).next())
        .map_or(1, |v| v as usize);
    if !(1..=2).contains(&ac) || sc > 2 {
        return None;
    }
    let mut it = cells(reg);
    Some(Range::new(
        read_cells(&mut it, ac)?,
        read_cells(&mut it, sc)?,
    ))
}

/// Where the hypervisor's heap may go: the `reg` of the first child of
/// `/reserved-memory` compatible with "partita,hypervisor". Read without
/// allocating (there is no heap yet), in the structural check's own pass
/// over the whole blob.
pub fn hypervisor_memory(blob: &[u8]) -> Result<Range, EarlyError> {
    #[derive(Default)]
    struct Find<'a> {
        depth: usize,
        /// In the first `/reserved-memory` (not in a child of it).
        in_reserved: bool,
        reserved_seen: bool,
        /// Its `#address-cells` and `#size-cells`.
        cells: [Option<&'a [u8]>; 2],
        /// The child being read: its `compatible` and `reg`.
        child: [Option<&'a [u8]>; 2],
        /// The first child compatible with "partita,hypervisor": its `reg`.
        found: Option<Option<&'a [u8]>>,
    }
    impl<'a> crate::dtb::Visit<'a> for Find<'a> {
        fn begin_node(&mut self, name: &'a [u8]) {
            self.depth += 1;
            if self.depth == 2 && !self.reserved_seen {
                self.in_reserved =
                    name == b"reserved-memory" || name.starts_with(b"reserved-memory@");
                self.reserved_seen = self.in_reserved;
            }
            if self.depth == 3 {
                self.child = [None; 2];
            }
        }
        fn property(&mut self, name: &'a [u8], value: &'a [u8]) {
            // The first property of a name, as a lookup by name finds it.
            let slot = match (self.in_reserved, self.depth, name) {
                (true, 2, b"#address-cells") => &mut self.cells[0],
                (true, 2, b"#size-cells") => &mut self.cells[1],
                (true, 3, b"compatible") => &mut self.child[0],
                (true, 3, b"reg") => &mut self.child[1],
                _ => return,
            };
            slot.get_or_insert(value);
        }
        fn end_node(&mut self) {
            let [compatible, reg] = self.child;
            let hypervisor = || {
                compatible?
                    .split(|b| *b == 0)
                    .find(|c| *c == b"partita,hypervisor")
            };
            if self.in_reserved && self.depth == 3 && self.found.is_none() && hypervisor().is_some()
            {
                self.found = Some(reg);
            }
            if self.depth == 2 {
                self.in_reserved = false;
            }
            self.depth -= 1;
        }
    }
    let mut find = Find::default();
    crate::dtb::walk(blob, &mut find).map_err(EarlyError::Blob)?;
    let [ac, sc] = find.cells;
    find.found
        .flatten()
        .and_then(|reg| first_reg(ac, sc, reg))
        .filter(|r| r.size != 0 && r.base.checked_add(r.size).is_some())
        .ok_or(EarlyError::NoHypervisorMemory)
}

/// The console the SDT names (`/chosen/stdout-path`).
pub fn console(tree: &Tree<'_>) -> Result<(u64, UartKind), EarlyError> {
    uart_of(|path, name| tree.get(path)?.property(name)).ok_or(EarlyError::NoConsole)
}

/// The UART `/chosen/stdout-path` names in any device tree: the
/// bootloader's, when the SDT cannot be read. Reads without allocating,
/// after the structural check.
pub fn stdout_uart(blob: &[u8]) -> Result<(u64, UartKind), EarlyError> {
    crate::dtb::check(blob).map_err(EarlyError::Blob)?;
    let fdt = Fdt::new(blob).map_err(|_| EarlyError::NoConsole)?;
    uart_of(|path, name| Some(fdt.find_node(path)?.property(name)?.value))
        .ok_or(EarlyError::NoConsole)
}

/// The UART `/chosen/stdout-path` names, aliases resolved, in a tree read
/// through `prop(node path, property name)`.
fn uart_of<'a>(prop: impl Fn(&str, &str) -> Option<&'a [u8]>) -> Option<(u64, UartKind)> {
    let stdout = as_str(prop("/chosen", "stdout-path")?)?;
    let stdout = stdout.split(':').next()?;
    let path = if stdout.starts_with('/') {
        stdout
    } else {
        as_str(prop("/aliases", stdout)?)?
    };
    // Absolute paths only: the `fdt` crate would try them as aliases again.
    let parent = match path.strip_prefix('/')?.rfind('/') {
        Some(i) => &path[..i + 1],
        None => "/",
    };
    let compatible = prop(path, "compatible")?
        .split(|b| *b == 0)
        .map_while(|c| core::str::from_utf8(c).ok());
    let kind = UartKind::from_compatible(compatible)?;
    let reg = first_reg(
        prop(parent, "#address-cells"),
        prop(parent, "#size-cells"),
        prop(path, "reg")?,
    )?;
    Some((reg.base, kind))
}

/// `/chosen/bootargs` of any device tree, read as the structural check
/// passes it: QEMU's tree is large, and a lookup after the check cost
/// about 30,000 instructions at boot.
pub fn bootargs(blob: &[u8]) -> Option<&str> {
    /// The first `bootargs` of the first `chosen` child of the root.
    #[derive(Default)]
    struct Find<'a> {
        depth: usize,
        in_chosen: bool,
        chosen_seen: bool,
        found: Option<&'a [u8]>,
    }
    impl<'a> crate::dtb::Visit<'a> for Find<'a> {
        fn begin_node(&mut self, name: &'a [u8]) {
            self.depth += 1;
            let chosen = name == b"chosen" || name.starts_with(b"chosen@");
            self.in_chosen = self.depth == 2 && chosen && !self.chosen_seen;
            self.chosen_seen |= self.in_chosen;
        }
        fn property(&mut self, name: &'a [u8], value: &'a [u8]) {
            if self.in_chosen && name == b"bootargs" && self.found.is_none() {
                self.found = Some(value);
            }
        }
        fn end_node(&mut self) {
            self.depth -= 1;
            self.in_chosen = false;
        }
    }
    let mut find = Find::default();
    crate::dtb::walk(blob, &mut find).ok()?;
    as_str(find.found?)
}

/// rpmsg relations: `domain-to-domain` (`openamp,domain-to-domain-v1`) /
/// `rpmsg-relation` (`openamp,rpmsg-v1`) / one node per link with
/// `remote = <&domain>`, and Partita's `partita,virtio-mmio = <host-window
/// remote-window>` (two 2-cell addresses) and `partita,virtio-interrupts =
/// <host-spi remote-spi>` (SPI numbers, as in `interrupts`). Relations with
/// `host = <...>` describe the same link from the other side and are skipped.
/// With `partita,remoteproc-vdev` (the host controls the remote, with a
/// control interrupt) the host's side is its remoteproc's virtio device,
/// and those two properties give the remote's window and interrupt alone.
fn read_links(tree: &Tree<'_>, sys: &mut SystemConfig) -> Result<(), SdtError> {
    for host in 0..sys.domains.len() {
        let dpath = sys.domains[host].path.clone();
        for (d2d, n) in paths(tree.children_of(&dpath)) {
            if !n.is_compatible("openamp,domain-to-domain-v1") {
                continue;
            }
            for (rel, rn) in paths(tree.children_of(d2d)) {
                if !rn.is_compatible("openamp,rpmsg-v1") {
                    continue;
                }
                for (path, l) in paths(tree.children_of(rel)) {
                    let Some(remote) = l.u32("remote") else {
                        continue;
                    };
                    let link = read_link(tree, sys, host, path, l, remote)?;
                    sys.links.push(link);
                }
            }
        }
    }
    Ok(())
}

/// Control relations: `domain-to-domain` / a node with compatible
/// `openamp,remoteproc-v1` (or `-v2`) and `remote = <&target ...>`, with an
/// optional `partita,control-interrupt = <spi ...>`, one per target. A
/// domain controls nobody unless such a relation says so, and each domain
/// has at most one controller.
fn read_controls(tree: &Tree<'_>, sys: &mut SystemConfig) -> Result<(), SdtError> {
    for controller in 0..sys.domains.len() {
        let dpath = sys.domains[controller].path.clone();
        for (d2d, n) in paths(tree.children_of(&dpath)) {
            if !n.is_compatible("openamp,domain-to-domain-v1") {
                continue;
            }
            for (path, rn) in paths(tree.children_of(d2d)) {
                if !rn.is_compatible("openamp,remoteproc-v1")
                    && !rn.is_compatible("openamp,remoteproc-v2")
                {
                    continue;
                }
                let remotes: Vec<u32> = rn
                    .property("remote")
                    .map(|v| cells(v).collect())
                    .unwrap_or_default();
                if remotes.is_empty() {
                    return err(path, "`remote` must name the domains it controls");
                }
                let irqs: Option<Vec<u32>> = rn
                    .property("partita,control-interrupt")
                    .map(|v| cells(v).collect());
                if irqs.as_ref().is_some_and(|i| i.len() != remotes.len()) {
                    return err(
                        path,
                        "`partita,control-interrupt` must give one SPI per `remote`",
                    );
                }
                for (k, &ph) in remotes.iter().enumerate() {
                    let target = domain_by_phandle(tree, sys, path, ph)?;
                    if target == controller {
                        return err(path, "`remote` names the domain itself");
                    }
                    if let Some(o) = sys.controls.iter().find(|c| c.target == target) {
                        return err(
                            path,
                            format!(
                                "{} is already controlled by {}",
                                sys.domains[target].path, o.path
                            ),
                        );
                    }
                    let spi = match irqs.as_ref().map(|i| i[k]) {
                        Some(n) if n >= 988 => {
                            return err(
                                path,
                                format!("control interrupt {n} is beyond the GIC's last SPI"),
                            )
                        }
                        n => n.map(|n| n + 32),
                    };
                    sys.controls.push(Control {
                        path: path.to_owned(),
                        controller,
                        target,
                        spi,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The domain a `remote` phandle of the relation at `path` names.
fn domain_by_phandle(
    tree: &Tree<'_>,
    sys: &SystemConfig,
    path: &str,
    ph: u32,
) -> Result<usize, SdtError> {
    let (rpath, _) = tree
        .by_phandle(ph)
        .map(|n| (n.path.as_str(), n))
        .ok_or_else(|| {
            fault(
                path,
                format!("`remote` names phandle {ph:#x}, which no node has"),
            )
        })?;
    sys.domains
        .iter()
        .position(|d| d.path == rpath)
        .ok_or_else(|| {
            fault(
                path,
                format!("`remote` names {rpath}, which is not a domain"),
            )
        })
}

fn read_link(
    tree: &Tree<'_>,
    sys: &SystemConfig,
    host: usize,
    path: &str,
    n: &Node<'_>,
    remote: u32,
) -> Result<RpmsgLink, SdtError> {
    let other = domain_by_phandle(tree, sys, path, remote)?;
    if other == host {
        return err(path, "`remote` names the domain itself");
    }
    // With `partita,remoteproc-vdev` the host's side is its remoteproc's
    // virtio device, and the per-side properties below that belong to a
    // virtio-mmio device name the remote's alone.
    let remoteproc = n.property("partita,remoteproc-vdev").is_some();
    let control_spi = if remoteproc {
        match sys.control(host, other) {
            Some(Control { spi: Some(spi), .. }) => *spi,
            _ => {
                return err(
                    path,
                    format!(
                        "`partita,remoteproc-vdev` needs a remoteproc relation from {} to {} with a `partita,control-interrupt`",
                        sys.domains[host].name, sys.domains[other].name
                    ),
                )
            }
        }
    } else {
        0
    };
    let (mmio_sides, which) = match remoteproc {
        true => (1, "remote"),
        false => (2, "host remote"),
    };
    let w: Vec<u32> = n
        .property("partita,virtio-mmio")
        .map(|v| cells(v).collect())
        .unwrap_or_default();
    if w.len() != 2 * mmio_sides {
        return err(
            path,
            format!("`partita,virtio-mmio` must be <{which}>, each window a 2-cell address"),
        );
    }
    let window = |i: usize| (u64::from(w[2 * i]) << 32) | u64::from(w[2 * i + 1]);
    let windows = match remoteproc {
        true => [0, window(0)],
        false => [window(0), window(1)],
    };
    let i: Vec<u32> = n
        .property("partita,virtio-interrupts")
        .map(|v| cells(v).collect())
        .unwrap_or_default();
    let (hs, rs) = match (remoteproc, &i[..]) {
        (true, &[rs]) => (control_spi - 32, rs),
        (false, &[hs, rs]) => (hs, rs),
        _ => {
            return err(
                path,
                format!("`partita,virtio-interrupts` must be <{which}>, SPI numbers"),
            )
        }
    };
    for (n, d) in [(hs, host), (rs, other)] {
        if n >= 988 {
            return err(
                path,
                format!(
                    "interrupt {n} of {} is beyond the GIC's last SPI (987)",
                    sys.domains[d].name
                ),
            );
        }
    }
    // Optional `partita,name-service = <host remote>`: 0 keeps the name
    // service from a side (Linux handles announcements in hard-IRQ context
    // over virtio-mmio, where creating a channel device cannot sleep).
    let ns: Vec<u32> = n
        .property("partita,name-service")
        .map(|v| cells(v).collect())
        .unwrap_or_else(|| alloc::vec![1, 1]);
    let [nh, nr] = ns[..] else {
        return err(
            path,
            "`partita,name-service` must be <host remote>, each 0 or 1",
        );
    };
    // Optional `partita,virtio-version = <host remote>`: 1 gives that side
    // the legacy interface (OpenAMP's own virtio-mmio driver speaks no
    // other), 2 (the default) the current one.
    let v: Vec<u32> = n
        .property("partita,virtio-version")
        .map(|v| cells(v).collect())
        .unwrap_or_else(|| alloc::vec![2; mmio_sides]);
    let versions = match (remoteproc, &v[..]) {
        (true, &[r]) if (1..=2).contains(&r) => [1, r],
        (false, &[h, r]) if [h, r].iter().all(|x| (1..=2).contains(x)) => [h, r],
        _ => {
            return err(
                path,
                format!("`partita,virtio-version` must be <{which}>, each 1 or 2"),
            )
        }
    };
    // Optional `partita,buffer-size = <bytes>`: the longest message, header
    // included, and the smallest receive buffer, on both sides.
    let b: Vec<u32> = n
        .property("partita,buffer-size")
        .map(|v| cells(v).collect())
        .unwrap_or_else(|| alloc::vec![crate::rpmsg::BUFFER_SIZE]);
    let buffer_size = match b[..] {
        [b] if (BUFFER_SIZE_MIN..=BUFFER_SIZE_MAX).contains(&b) => b,
        _ => {
            return err(
                path,
                format!("`partita,buffer-size` must be one number of bytes from {BUFFER_SIZE_MIN} to {BUFFER_SIZE_MAX}"),
            )
        }
    };
    // Optional `partita,coalesce-us = <microseconds>`: the bound on how
    // long a message may wait for its sender's CPU to move it with others.
    let c: Vec<u32> = n
        .property("partita,coalesce-us")
        .map(|v| cells(v).collect())
        .unwrap_or_else(|| alloc::vec![COALESCE_US]);
    let coalesce_us = match c[..] {
        [c] if c <= COALESCE_US_MAX => c,
        _ => {
            return err(
                path,
                format!("`partita,coalesce-us` must be one number of microseconds from 0 to {COALESCE_US_MAX}"),
            )
        }
    };
    let link = RpmsgLink {
        path: path.to_owned(),
        domains: [host, other],
        windows,
        spis: [hs + 32, rs + 32],
        name_service: [nh != 0, nr != 0],
        versions,
        buffer_size,
        coalesce_us,
        remoteproc,
    };
    if remoteproc && !link.name_service[0] {
        return err(
            path,
            "`partita,name-service` must keep the host's name service with `partita,remoteproc-vdev`: its remoteproc's vdev offers it",
        );
    }
    if remoteproc
        && sys
            .links
            .iter()
            .any(|l| l.remoteproc && l.domains == link.domains)
    {
        return err(
            path,
            format!(
                "a second `partita,remoteproc-vdev` link from {} to {}: its remoteproc has one vdev",
                sys.domains[host].name, sys.domains[other].name
            ),
        );
    }
    // Linux's remoteproc virtio device posts 512-byte receive buffers
    // (virtio_rpmsg_bus): a larger size would fault every one of them.
    if remoteproc && buffer_size > crate::rpmsg::BUFFER_SIZE {
        return err(
            path,
            format!(
                "`partita,buffer-size` {buffer_size} is larger than the {} bytes of a remoteproc's rpmsg buffers",
                crate::rpmsg::BUFFER_SIZE
            ),
        );
    }
    for side in (0..2).filter(|&s| link.mmio(s)) {
        let d = &sys.domains[link.domains[side]];
        let win = Range::new(link.windows[side], VIRTIO_WINDOW);
        let spi = link.spis[side];
        if !win.base.is_multiple_of(VIRTIO_WINDOW) {
            return err(
                path,
                format!(
                    "virtio window {win} of {} is not {VIRTIO_WINDOW:#x}-aligned",
                    d.name
                ),
            );
        }
        if win.end() > IPA_LIMIT {
            return err(
                path,
                format!("virtio window {win} of {} is beyond the {IPA_BITS}-bit guest address space stage 2 translates", d.name),
            );
        }
        if let Some(m) = d.memory.iter().find(|m| m.overlaps(&win.pages())) {
            return err(
                path,
                format!("virtio window {win} of {} overlaps its memory {m}", d.name),
            );
        }
        if let Some(m) = sys.ram.iter().find(|m| m.overlaps(&win.pages())) {
            return err(
                path,
                format!("virtio window {win} of {} overlaps RAM {m}", d.name),
            );
        }
        if let Some(g) = sys
            .gic
            .regs
            .iter()
            .find(|g| g.pages().overlaps(&win.pages()))
        {
            return err(
                path,
                format!(
                    "virtio window {win} of {} shares a page with {g} of the interrupt controller {}",
                    d.name, sys.gic.path
                ),
            );
        }
        // Any device of any domain, and the console: guest addresses are
        // physical ones, so a window is kept clear of every device.
        if let Some(dv) = sys
            .devices
            .iter()
            .find(|dv| dv.regs.iter().any(|r| r.pages().overlaps(&win.pages())))
        {
            return err(
                path,
                format!(
                    "virtio window {win} of {} shares a page with {}",
                    d.name, dv.path
                ),
            );
        }
        for &dev in &d.devices {
            let dv = &sys.devices[dev];
            if dv.spis.contains(&spi) {
                return err(
                    path,
                    format!("interrupt {} of {} is also {}'s", spi - 32, d.name, dv.path),
                );
            }
        }
        for (_, (li, ls)) in sys.links.iter().enumerate().flat_map(|(i, l)| {
            l.domains
                .iter()
                .enumerate()
                .filter(|&(s, &x)| x == link.domains[side] && l.mmio(s))
                .map(move |(s, _)| (i, (l, s)))
        }) {
            if li.windows[ls] == win.base || li.spis[ls] == spi {
                return err(
                    path,
                    format!(
                        "window {win} or interrupt {} of {} is also used by {}",
                        spi - 32,
                        d.name,
                        li.path
                    ),
                );
            }
        }
    }
    Ok(link)
}
