//! Partitions: a domain of the SDT brought to life with its own stage-2
//! tables, its images in its memory and its emulated devices.

use crate::arch::{self, mmu::HeapTables};
use alloc::string::String;
use alloc::vec::Vec;
use partita_core::guest_fdt;
use partita_core::layout::{self, GuestLayout};
use partita_core::package::Package;
use partita_core::pagetable::{Attrs, PageTable};
use partita_core::psci::PowerStates;
use partita_core::sdt::{Domain, Range, SystemConfig};
use partita_core::vuart::{LineBuffer, VirtualPl011};
use spin::Mutex;

/// The emulated console UART of one partition.
pub struct VirtualConsole {
    pub base: u64,
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
    pub power: Mutex<PowerStates>,
    pub layout: GuestLayout,
    pub dtb: Vec<u8>,
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    pub console: Option<VirtualConsole>,
}

/// A configuration the SDT allowed but the boot package or memory cannot
/// carry out; reported with the domain's path.
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
        sdt: &[u8],
        package: &Package<'static>,
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
        let dtb = guest_fdt::build(sdt, sys, d, &layout).map_err(|e| fail(d, e))?;

        let mut tables = HeapTables;
        let mut s2 = PageTable::new(&mut tables, partita_core::pagetable::Regime::Stage2)
            .map_err(|e| fail(d, alloc::format!("{e:?}")))?;
        for m in &d.memory {
            s2.map(&mut tables, m.base, m.base, m.size, Attrs::RAM)
                .map_err(|e| fail(d, alloc::format!("mapping memory {m}: {e:?}")))?;
        }
        let mut console = None;
        for &i in &d.devices {
            let dev = &sys.devices[i];
            if dev.is_console {
                // Left unmapped: every access traps and is emulated.
                console = Some(VirtualConsole {
                    base: dev.regs[0].base,
                    state: Mutex::new(Default::default()),
                });
                continue;
            }
            for r in &dev.regs {
                let p = r.pages();
                s2.map(&mut tables, p.base, p.base, p.size, Attrs::DEVICE)
                    .map_err(|e| fail(d, alloc::format!("mapping {} {r}: {e:?}", dev.path)))?;
            }
        }
        let p = Partition {
            index,
            name: d.name.clone(),
            vmid: index as u16 + 1,
            stage2: s2.root(),
            memory: d.memory.clone(),
            pcpus: d.cpus.clone(),
            power: Mutex::new(PowerStates::new(d.cpus.len())),
            layout,
            dtb,
            kernel,
            initrd,
            console,
        };
        p.load();
        Ok(p)
    }

    /// Copies the kernel, initrd and device tree into the partition's
    /// memory: at first boot and again at each SYSTEM_RESET.
    pub fn load(&self) {
        let copy = |dst: u64, src: &[u8]| {
            // SAFETY: `dst..dst + len` lies in the partition's memory (the
            // layout planner checked it against the first memory range),
            // which the EL2 identity map covers and no vCPU of this
            // partition runs while it is loaded.
            unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
            arch::sync_guest_image(dst, src.len() as u64);
        };
        copy(self.layout.kernel, self.kernel);
        if let (Some(r), Some(i)) = (self.layout.initrd, self.initrd) {
            copy(r.base, i);
        }
        copy(self.layout.dtb, &self.dtb);
    }

    pub fn owns(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len).is_some()
            && self
                .memory
                .iter()
                .any(|m| m.contains(&Range::new(addr, len)))
    }

    pub fn vttbr(&self) -> u64 {
        (u64::from(self.vmid) << 48) | self.stage2
    }
}
