//! Partitions: a domain of the SDT brought to life with its own stage-2
//! tables, its images in its memory and its emulated devices.

use crate::arch::Mutex;
use crate::arch::{self, mmu::HeapTables};
use crate::rpmsg::RegisterPage;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use partita_core::guest_fdt;
use partita_core::layout::{self, GuestLayout};
use partita_core::lifecycle::Lifecycle;
use partita_core::package::Package;
use partita_core::pagetable::{Attrs, PageTable, PAGE_SIZE};
use partita_core::sdt::GicVersion;
use partita_core::sdt::{Domain, Range, SystemConfig};
use partita_core::tree::Tree;
use partita_core::vgic::{self, Vgic};
use partita_core::vuart::{LineBuffer, VirtualPl011};

/// The emulated console UART of one partition.
pub struct VirtualConsole {
    pub base: u64,
    /// Its interrupt, emulated (level-sensitive).
    pub spi: Option<u32>,
    pub state: Mutex<(VirtualPl011, LineBuffer)>,
}

pub struct Partition {
    pub index: usize,
    pub name: String,
    pub vmid: u16,
    pub stage2: u64,
    pub memory: Vec<Range>,
    /// Physical CPU of each vCPU.
    pub pcpus: Vec<usize>,
    /// Its state machine: every start, stop and vCPU power change.
    pub life: Mutex<Lifecycle>,
    pub layout: GuestLayout,
    pub dtb: Vec<u8>,
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    pub console: Option<VirtualConsole>,
    pub vgic: Mutex<Vgic>,
    /// Guest addresses of the emulated distributor and (GICv3) redistributors.
    pub gic_dist: u64,
    pub gic_redist: u64,
    /// Passed-through SPIs.
    pub hw_spis: Vec<u32>,
    /// Its side of each rpmsg link.
    pub virtio: Vec<crate::rpmsg::VirtioPort>,
    /// Interrupts the hypervisor raises in it: console, virtio, control.
    pub emulated_spis: Vec<u32>,
    pub gic_lines: u32,
    /// Since its last start (the per-CPU trap and injection counters,
    /// and its links' message counts, are the rest).
    pub faults: AtomicU64,
    /// What the guest may make the hypervisor log (`console::Class`);
    /// kept across restarts.
    pub log_limits: Mutex<[partita_core::ratelimit::RateLimit; 2]>,
}

/// A configuration the SDT allowed but the boot package or memory cannot
/// carry out; reported with the domain's path.
/// Copies `src` to `dst` in a stopped partition's memory, a MiB at a time,
/// taking interrupts in between: a Linux kernel takes a while, and this CPU
/// may be the one that serves console input.
fn copy_in(dst: u64, src: &[u8]) {
    for (i, chunk) in src.chunks(1 << 20).enumerate() {
        let at = dst + (i << 20) as u64;
        // SAFETY: `dst..dst + src.len()` lies in the partition's memory
        // (the layout planner checked it against its first memory range),
        // which the EL2 identity map covers; no vCPU of the partition runs
        // while it is loaded.
        unsafe { arch::copy_bulk(at as *mut u8, chunk.as_ptr(), chunk.len()) };
        arch::take_pending_interrupts();
    }
    arch::sync_guest_image(dst, src.len() as u64);
}

pub struct BuildError {
    pub path: String,
    pub reason: String,
}

fn fail(d: &Domain, reason: impl core::fmt::Display) -> BuildError {
    BuildError {
        path: d.path.clone(),
        reason: alloc::format!("{reason}"),
    }
}

impl Partition {
    pub fn build(
        index: usize,
        sys: &SystemConfig,
        sdt: &Tree<'_>,
        package: &Package<'static>,
        gic_lines: u32,
    ) -> Result<Partition, BuildError> {
        let d = &sys.domains[index];
        let kernel = package.get(&d.kernel).ok_or_else(|| {
            fail(
                d,
                alloc::format!("kernel `{}` is not in the boot package", d.kernel),
            )
        })?;
        let initrd = match &d.initrd {
            Some(name) => Some(package.get(name).ok_or_else(|| {
                fail(
                    d,
                    alloc::format!("initrd `{name}` is not in the boot package"),
                )
            })?),
            None => None,
        };
        let layout = layout::plan(
            &d.memory[0],
            kernel,
            guest_fdt::DTB_MAX,
            initrd.map(|i| i.len() as u64),
        )
        .map_err(|e| fail(d, e))?;
        let dtb = guest_fdt::build_from_tree(sdt, sys, d, &layout).map_err(|e| fail(d, e))?;

        let mut tables = HeapTables;
        let mut s2 = PageTable::new(&mut tables, partita_core::pagetable::Regime::Stage2)
            .map_err(|e| fail(d, alloc::format!("{e:?}")))?;
        for m in &d.memory {
            s2.map(&mut tables, m.base, m.base, m.size, Attrs::RAM)
                .map_err(|e| fail(d, alloc::format!("mapping memory {m}: {e:?}")))?;
        }
        let version = match sys.gic.version {
            GicVersion::V3 => vgic::Version::V3,
            GicVersion::V2 => vgic::Version::V2,
        };
        let mut vgic = crate::irq::new_vgic(d.cpus.len(), version, gic_lines);
        let (gic_dist, gic_redist) = match sys.gic.version {
            GicVersion::V3 => (sys.gic.regs[0].base, sys.gic.regs[1].base),
            GicVersion::V2 => {
                // The guest's CPU interface is the hardware's virtual one.
                let (gicc, gicv) = (sys.gic.regs[1], sys.gic.regs[3]);
                let size = gicc.size.min(gicv.size) & !0xfff;
                s2.map(&mut tables, gicc.base, gicv.base, size, Attrs::DEVICE)
                    .map_err(|e| {
                        fail(
                            d,
                            alloc::format!("mapping the virtual CPU interface: {e:?}"),
                        )
                    })?;
                (sys.gic.regs[0].base, 0)
            }
        };
        let mut console = None;
        let mut hw_spis = Vec::new();
        let mut emulated_spis = Vec::new();
        for &i in &d.devices {
            let dev = &sys.devices[i];
            if dev.is_console {
                // Left unmapped: every access traps and is emulated.
                let spi = dev.spis.first().copied();
                emulated_spis.extend(spi);
                console = Some(VirtualConsole {
                    base: dev.regs[0].base,
                    spi,
                    state: Mutex::new(Default::default()),
                });
                continue;
            }
            for &spi in &dev.spis {
                vgic.own_spi(spi, true);
                hw_spis.push(spi);
            }
            for r in &dev.regs {
                let p = r.pages();
                s2.map(&mut tables, p.base, p.base, p.size, Attrs::DEVICE)
                    .map_err(|e| fail(d, alloc::format!("mapping {} {r}: {e:?}", dev.path)))?;
            }
        }
        // Each page of virtio-mmio windows is a register page, mapped
        // read-only: reads are loads, writes trap.
        let mut virtio: Vec<crate::rpmsg::VirtioPort> = sys
            .links_of(index)
            .enumerate()
            .map(|(i, (link, side))| crate::rpmsg::VirtioPort::new(&sys.links[link], link, side, i))
            .collect();
        let mut pages: Vec<(u64, &'static RegisterPage)> = Vec::new();
        for port in virtio.iter_mut().filter(|v| v.mmio) {
            let at = port.base & !(PAGE_SIZE - 1);
            let page = match pages.iter().find(|(b, _)| *b == at) {
                Some(&(_, page)) => page,
                None => {
                    let page = RegisterPage::new();
                    let pa = page as *const RegisterPage as u64;
                    s2.map(&mut tables, at, pa, PAGE_SIZE, Attrs::READ_ONLY)
                        .map_err(|e| {
                            fail(
                                d,
                                alloc::format!("mapping virtio window {:#x}: {e:?}", port.base),
                            )
                        })?;
                    pages.push((at, page));
                    page
                }
            };
            port.regs = Some(page.window(port.base));
        }
        // A remoteproc device's interrupt is the control interrupt (below).
        emulated_spis.extend(virtio.iter().filter(|v| v.mmio).map(|v| v.spi));
        emulated_spis.extend(
            sys.controls
                .iter()
                .filter(|c| c.controller == index)
                .filter_map(|c| c.spi),
        );
        for &spi in &emulated_spis {
            vgic.own_spi(spi, false);
        }
        // Its tables are never changed after this (see "Translation
        // tables and TLBs" in docs/ARCHITECTURE.md); their stores are
        // complete before any CPU's walker can use them.
        arch::mmu::publish_tables();
        let p = Partition {
            index,
            name: d.name.clone(),
            vmid: index as u16 + 1,
            stage2: s2.root(),
            memory: d.memory.clone(),
            pcpus: d.cpus.clone(),
            life: Mutex::new(Lifecycle::new(d.cpus.len())),
            layout,
            dtb,
            kernel,
            initrd,
            console,
            vgic: Mutex::new(vgic),
            gic_dist,
            gic_redist,
            gic_lines,
            hw_spis,
            virtio,
            emulated_spis,
            faults: AtomicU64::new(0),
            log_limits: Mutex::new(crate::console::new_limits()),
        };
        Ok(p)
    }

    /// Copies the boot package's kernel and initrd into the partition's
    /// memory, on its home CPU while it is stopped.
    pub fn load_package(&self) {
        copy_in(self.layout.kernel, self.kernel);
        if let (Some(r), Some(i)) = (self.layout.initrd, self.initrd) {
            copy_in(r.base, i);
        }
    }

    /// Writes its device tree afresh (the guest may have changed it).
    /// Cleans and invalidates the partition's memory to the point of
    /// coherency, a MiB at a time with interrupts taken in between: the
    /// instance that stopped ran with its caches on, and a dirty line of
    /// it written back later would overwrite what the next instance
    /// writes with its MMU off (relocations, BSS, page tables) or what is
    /// copied in.
    pub fn clean_memory(&self) {
        for m in &self.memory {
            let mut at = m.base;
            while at < m.end() {
                let n = (m.end() - at).min(1 << 20);
                arch::mmu::clean_invalidate_pages(at, n);
                arch::take_pending_interrupts();
                at += n;
            }
        }
    }

    pub fn load_dtb(&self) {
        copy_in(self.layout.dtb, &self.dtb);
    }

    /// Zeroes the counters the control interface reports, at a start.
    pub fn reset_counters(&self) {
        self.faults.store(0, Ordering::Relaxed);
        // Nothing moves on its links now: its devices were reset, and a
        // message moves only between two ready drivers.
        let sys = crate::system();
        for port in &self.virtio {
            let now = sys.links[port.link].counts(port.side);
            for (from, n) in port.counted_from.iter().zip(now) {
                from.store(n, Ordering::Relaxed);
            }
        }
        for &c in &self.pcpus {
            let cpu = crate::cpu::get(c);
            cpu.traps.store(0, Ordering::Relaxed);
            cpu.injected.store(0, Ordering::Relaxed);
        }
    }

    /// Messages it has received and sent through its links since its last
    /// start.
    pub fn rpmsg_counts(&self) -> (u64, u64) {
        let sys = crate::system();
        self.virtio.iter().fold((0, 0), |(i, o), port| {
            let [out, into] = sys.links[port.link].counts(port.side);
            let from = |k: usize| port.counted_from[k].load(Ordering::Relaxed);
            (
                i + into.wrapping_sub(from(1)),
                o + out.wrapping_sub(from(0)),
            )
        })
    }

    /// Traps handled and interrupts injected since its last start.
    pub fn cpu_counters(&self) -> (u64, u64) {
        self.pcpus.iter().fold((0, 0), |(t, i), &c| {
            let cpu = crate::cpu::get(c);
            (
                t + cpu.traps.load(Ordering::Relaxed),
                i + cpu.injected.load(Ordering::Relaxed),
            )
        })
    }

    /// Raises or lowers the emulated console's interrupt to match its state.
    pub fn resample_console(&self) {
        let Some(con) = &self.console else { return };
        let Some(spi) = con.spi else { return };
        let level = con.state.lock().0.irq_pending();
        let mut g = self.vgic.lock();
        if level {
            g.raise(0, spi, &mut crate::irq::Hw { p: self });
        } else {
            g.lower(0, spi);
        }
    }

    /// Back to the state of a fresh boot, after every vCPU has left:
    /// passed-through interrupts disabled and neither active nor pending
    /// (an active one held with the hardware bit would never be
    /// deactivated by the guest now), a new virtual GIC, a quiet console.
    pub fn reset_interrupts(&self) {
        let mut g = self.vgic.lock();
        let gic = &crate::system().gic;
        let version = match crate::system().config.gic.version {
            GicVersion::V3 => vgic::Version::V3,
            GicVersion::V2 => vgic::Version::V2,
        };
        let mut fresh = crate::irq::new_vgic(self.pcpus.len(), version, self.gic_lines);
        for &spi in &self.hw_spis {
            gic.set_enabled(spi, 0, false);
            gic.clear_spi(spi);
            fresh.own_spi(spi, true);
        }
        for &spi in &self.emulated_spis {
            fresh.own_spi(spi, false);
        }
        *g = fresh;
        if let Some(con) = &self.console {
            *con.state.lock() = Default::default();
        }
    }

    pub fn owns(&self, addr: u64, len: u64) -> bool {
        partita_core::sdt::within(&self.memory, addr, len)
    }

    pub fn vttbr(&self) -> u64 {
        (u64::from(self.vmid) << 48) | self.stage2
    }
}
