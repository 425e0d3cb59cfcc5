//! Each guest's device tree, generated from its domain's slice of the SDT:
//! its CPUs (numbered from 0), its memory, its devices, PSCI through HVC,
//! the timer, the interrupt controller and `chosen`.

use crate::layout::GuestLayout;
use crate::sdt::{Domain, GicVersion, SystemConfig};
use crate::tree::{Node, Property, Tree};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use vm_fdt::FdtWriter;

/// Space reserved for a guest's device tree.
pub const DTB_MAX: u64 = 64 << 10;

/// Properties not copied from a device node: they name hardware the guest
/// does not get (power domains, resets, pin control, DMA, IOMMUs) or are
/// replaced (the interrupt parent is the root's).
fn dropped(name: &[u8]) -> bool {
    matches!(
        name,
        b"interrupt-parent"
            | b"interrupts-extended"
            | b"phandle"
            | b"linux,phandle"
            | b"resets"
            | b"reset-names"
            | b"power-domains"
            | b"pinctrl-names"
            | b"dmas"
            | b"dma-names"
            | b"iommus"
            | b"phys"
            | b"phy-names"
    ) || name.starts_with(b"pinctrl-")
        || name.ends_with(b"-supply")
        || name.ends_with(b"-gpios")
}

/// Copies a property of the SDT into the guest's tree.
fn copy(w: &mut FdtWriter, p: &Property<'_>) -> Result<(), GuestFdtError> {
    // Cannot fail: the check let only ASCII names through.
    let name = core::str::from_utf8(p.name)
        .map_err(|_| GuestFdtError(String::from("SDT: a property name is not UTF-8")))?;
    Ok(w.property(name, p.value)?)
}

#[derive(Debug)]
pub struct GuestFdtError(pub String);

impl core::fmt::Display for GuestFdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<vm_fdt::Error> for GuestFdtError {
    fn from(e: vm_fdt::Error) -> Self {
        GuestFdtError(format!("writing the guest device tree: {e}"))
    }
}

fn be32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|c| c.to_be_bytes()).collect()
}

fn reg_cells(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<u64> {
    ranges.flat_map(|(b, s)| [b, s]).collect()
}

fn leaf(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The console a domain shares is an emulated PL011 at the physical
/// console's address, whatever that UART is (a Cadence on ZynqMP): every
/// guest has a PL011 driver. Its node says so: PL011 and PrimeCell, the
/// console's `reg` and first interrupt, and its first clock (a fixed
/// clock, checked by the caller) as both of the PL011's clocks. Returns
/// that clock's phandle.
fn emulated_console(w: &mut FdtWriter, dn: &Node<'_>) -> Result<Option<u32>, GuestFdtError> {
    w.property("compatible", b"arm,pl011\0arm,primecell\0")?;
    if let Some(r) = dn.property("reg") {
        w.property("reg", r)?;
    }
    if let Some(i) = dn.property("interrupts") {
        w.property("interrupts", &i[..i.len().min(12)])?;
    }
    let clock = dn
        .property("clocks")
        .and_then(|c| c.get(..4))
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    if let Some(c) = clock {
        w.property("clocks", &be32(&[c, c]))?;
        w.property("clock-names", b"uartclk\0apb_pclk\0")?;
    }
    Ok(clock)
}

/// Builds the device tree for `domain` of `sys`, read from `sdt`.
pub fn build(
    sdt: &[u8],
    sys: &SystemConfig,
    domain: &Domain,
    layout: &GuestLayout,
) -> Result<Vec<u8>, GuestFdtError> {
    let tree = Tree::new(sdt).map_err(|e| GuestFdtError(format!("SDT: {e}")))?;
    build_from_tree(&tree, sys, domain, layout)
}

/// `build` from the SDT as read for `sys` ([`SystemConfig::from_tree`]):
/// the hypervisor reads the SDT once and builds every partition's tree
/// from that.
pub fn build_from_tree(
    tree: &Tree<'_>,
    sys: &SystemConfig,
    domain: &Domain,
    layout: &GuestLayout,
) -> Result<Vec<u8>, GuestFdtError> {
    let node = |path: &str| {
        tree.get(path)
            .ok_or_else(|| GuestFdtError(format!("SDT node {path} vanished")))
    };
    let root = tree.root();
    // Constant strings go in as bytes with their NUL: `property_string`
    // copies each into a `CString` of its own first.
    let mut w = FdtWriter::new()?;
    let r = w.begin_node("")?;
    w.property_string(
        "model",
        &format!("Partita domain {} on {}", domain.name, sys.model),
    )?;
    if let Some(c) = root.property("compatible") {
        w.property("compatible", c)?;
    }
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", sys.gic.phandle)?;

    // Devices sit at the root of the guest's tree, whatever bus holds them
    // in the SDT.
    let console_path = domain
        .console(sys)
        .map(|c| format!("/{}", leaf(&sys.devices[c].path)));
    let console = console_path.as_deref();
    let n = w.begin_node("chosen")?;
    if let Some(args) = &domain.bootargs {
        w.property_string("bootargs", args)?;
    }
    if let Some(c) = console {
        w.property_string("stdout-path", c)?;
    }
    if let Some(i) = layout.initrd {
        w.property_u64("linux,initrd-start", i.base)?;
        w.property_u64("linux,initrd-end", i.end())?;
    }
    w.end_node(n)?;
    if let Some(c) = console {
        let n = w.begin_node("aliases")?;
        w.property_string("serial0", c)?;
        w.end_node(n)?;
    }

    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for (v, &p) in domain.cpus.iter().enumerate() {
        let c = w.begin_node(&format!("cpu@{v:x}"))?;
        w.property("device_type", b"cpu\0")?;
        if let Some(compat) = node(&sys.cpus[p].path)?.property("compatible") {
            w.property("compatible", compat)?;
        }
        w.property_u32("reg", v as u32)?;
        w.property("enable-method", b"psci\0")?;
        w.end_node(c)?;
    }
    w.end_node(cpus)?;

    let n = w.begin_node("psci")?;
    w.property("compatible", b"arm,psci-1.0\0arm,psci-0.2\0")?;
    w.property("method", b"hvc\0")?;
    w.end_node(n)?;

    for m in &domain.memory {
        let n = w.begin_node(&format!("memory@{:x}", m.base))?;
        w.property("device_type", b"memory\0")?;
        w.property_array_u64("reg", &[m.base, m.size])?;
        w.end_node(n)?;
    }

    // The guest's interrupt controller: the distributor where the board has
    // it, and one redistributor (GICv3) per vCPU; accesses are emulated.
    let gic = &sys.gic;
    let n = w.begin_node(leaf(&gic.path))?;
    w.property(
        "compatible",
        node(&gic.path)?.property("compatible").unwrap_or_default(),
    )?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_null("interrupt-controller")?;
    let regs = match gic.version {
        GicVersion::V3 => reg_cells(
            [
                (gic.regs[0].base, gic.regs[0].size),
                (gic.regs[1].base, 0x20000 * domain.cpus.len() as u64),
            ]
            .into_iter(),
        ),
        GicVersion::V2 => reg_cells(gic.regs[..2].iter().map(|r| (r.base, r.size))),
    };
    w.property_array_u64("reg", &regs)?;
    w.property_phandle(gic.phandle)?;
    w.end_node(n)?;

    let n = w.begin_node("timer")?;
    w.property("compatible", b"arm,armv8-timer\0")?;
    let irqs: Vec<u32> = sys.timer_interrupts.iter().flatten().copied().collect();
    w.property("interrupts", &be32(&irqs))?;
    w.property_null("always-on")?;
    w.end_node(n)?;

    // Devices, copied property by property; fixed clocks they name come along.
    let mut clocks: Vec<u32> = Vec::new();
    for &i in &domain.devices {
        let dev = &sys.devices[i];
        let dn = node(&dev.path)?;
        let n = w.begin_node(leaf(&dev.path))?;
        if dev.is_console {
            clocks.extend(emulated_console(&mut w, dn)?);
            w.end_node(n)?;
            continue;
        }
        for p in dn.properties.iter().filter(|p| !dropped(p.name)) {
            if p.name == b"clocks" {
                clocks.extend(
                    p.value
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            copy(&mut w, p)?;
        }
        w.end_node(n)?;
    }
    // One virtio rpmsg device per link the domain takes part in, except
    // one it reaches through its remoteproc of the peer (below).
    let me = sys.domains.iter().position(|d| d.path == domain.path);
    for (l, side) in me
        .into_iter()
        .flat_map(|i| sys.links_of(i))
        .filter(|&(l, side)| sys.links[l].mmio(side))
    {
        let (base, spi) = (sys.links[l].windows[side], sys.links[l].spis[side]);
        let n = w.begin_node(&format!("virtio_mmio@{base:x}"))?;
        w.property("compatible", b"virtio,mmio\0")?;
        w.property_array_u64("reg", &[base, crate::sdt::VIRTIO_WINDOW])?;
        w.property("interrupts", &be32(&[0, spi - 32, 1]))?;
        // True: the "device" is the hypervisor, which reads and writes the
        // rings and buffers through its Normal write-back, inner shareable
        // identity map, coherent with a guest mapping its RAM the same way
        // (Linux; the bundled guests from their first instructions,
        // guest_common::mmu). Without it Linux would make them uncached
        // and the two views would differ on a board.
        w.property_null("dma-coherent")?;
        w.end_node(n)?;
    }
    // The partitions it controls, for its control driver.
    let controls: Vec<_> = sys
        .controls
        .iter()
        .filter(|c| Some(c.controller) == me)
        .collect();
    if !controls.is_empty() {
        let h = w.begin_node("hypervisor")?;
        w.property("compatible", b"partita,hypervisor\0")?;
        // Its remoteproc vrings are allocated on this device; the
        // hypervisor reaches them through cacheable mappings.
        w.property_null("dma-coherent")?;
        w.property_u32("#address-cells", 1)?;
        w.property_u32("#size-cells", 0)?;
        for c in controls {
            let t = &sys.domains[c.target];
            let n = w.begin_node(&format!("partition@{:x}", t.id))?;
            w.property("compatible", b"partita,partition\0")?;
            w.property_u32("reg", t.id)?;
            w.property_string("label", &t.name)?;
            w.property_array_u64(
                "partita,memory",
                &reg_cells(t.memory.iter().map(|m| (m.base, m.size))),
            )?;
            if let Some(spi) = c.spi {
                w.property("interrupts", &be32(&[0, spi - 32, 1]))?;
            }
            // The rpmsg link to it is this remoteproc's virtio device.
            if sys
                .links
                .iter()
                .any(|l| l.remoteproc && l.domains == [c.controller, c.target])
            {
                w.property_null("partita,rpmsg-vdev")?;
            }
            w.end_node(n)?;
        }
        w.end_node(h)?;
    }
    clocks.sort_unstable();
    clocks.dedup();
    for ph in clocks {
        let Some(cn) = tree.by_phandle(ph) else {
            continue;
        };
        if !cn.is_compatible("fixed-clock") {
            return Err(GuestFdtError(format!(
                "clock {} is not a fixed-clock; only fixed clocks are given to guests",
                cn.name()
            )));
        }
        let n = w.begin_node(cn.name())?;
        for p in cn.properties.iter().filter(|p| p.name != b"phandle") {
            copy(&mut w, p)?;
        }
        w.property_phandle(ph)?;
        w.end_node(n)?;
    }

    w.end_node(r)?;
    let blob = w.finish()?;
    if blob.len() as u64 > DTB_MAX {
        return Err(GuestFdtError(format!(
            "device tree of {} bytes exceeds {DTB_MAX}",
            blob.len()
        )));
    }
    Ok(blob)
}
