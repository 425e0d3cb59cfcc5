//! Partita: a static partitioning hypervisor for AArch64, at EL2.
//!
//! `primary_main` brings the machine up from the System Device Tree in the
//! boot package; every CPU then waits in `park_loop` for a vCPU to run.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod console;
mod cpu;
#[cfg(feature = "el2-time")]
mod el2time;
mod irq;
mod life;
mod partition;
mod rpmsg;
mod uart;
mod vcpu;

use alloc::vec::Vec;
use arch::gic::Gic;
use log::{error, info, warn};
use partita_core::dtb;
use partita_core::package::{self, Package};
use partita_core::pagetable::{self, Attrs, PageTable, Regime};
use partita_core::sdt::{self, GicVersion, SystemConfig};
use partition::Partition;

#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::empty();

/// Everything built at boot, read-only afterwards (mutable state sits
/// behind each partition's own locks).
pub struct System {
    pub config: SystemConfig,
    pub partitions: Vec<Partition>,
    pub gic: Gic,
    /// Which partition owns each passed-through SPI.
    spi_owners: Vec<Option<u16>>,
    /// The console UART's receive interrupt, taken by the hypervisor.
    pub console_spi: Option<u32>,
    /// The rpmsg links' device state, one lock per link.
    pub links: Vec<rpmsg::LinkLock>,
    /// The partition and vCPU each physical CPU serves, if any.
    cpu_owner: Vec<Option<(usize, usize)>>,
}

impl System {
    pub fn spi_owner(&self, intid: u32) -> Option<usize> {
        self.spi_owners
            .get(intid as usize)
            .copied()
            .flatten()
            .map(usize::from)
    }
}

static SYSTEM: spin::Once<System> = spin::Once::new();

pub fn system() -> &'static System {
    SYSTEM.get().expect("used only after boot")
}

/// PSCI function IDs the hypervisor itself calls in firmware.
const FW_CPU_ON: u32 = 0xc400_0003;
pub const FW_SYSTEM_OFF: u32 = 0x8400_0008;

/// Bytes of the hypervisor's heap in use.
pub fn heap_in_use() -> usize {
    HEAP.lock().stats_alloc_actual()
}

/// The boot package that `partita-tool pack` appended after the image.
fn boot_package() -> Result<Package<'static>, package::PackageError> {
    let (_, end) = arch::image_range();
    let mut need = 16;
    let len = loop {
        // SAFETY: the bootloader loaded the whole file, package included,
        // right after the image; `need` grows only as the table asks.
        let prefix = unsafe { core::slice::from_raw_parts(end as *const u8, need) };
        match package::span(prefix) {
            Ok(len) => break len,
            Err(package::PackageError::Truncated(n)) if n > need => need = n,
            Err(e) => return Err(e),
        }
    };
    // SAFETY: as above, now with the length the table states.
    Package::parse(unsafe { core::slice::from_raw_parts(end as *const u8, len) })
}

/// The device tree the bootloader passed at x0 (QEMU's, U-Boot's), if
/// there is one: the bytes its header claims, within the protocol's 2 MiB.
/// Not checked here: each reader of it (`sdt::bootargs`,
/// `sdt::stdout_uart`) runs the structural check itself, and a second
/// check of QEMU's tree cost about 79,000 instructions at boot.
fn bootloader_tree(dtb: u64) -> Option<&'static [u8]> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the boot protocol puts a device tree at x0 when there is one;
    // its header is read first, and then no more than the size it states,
    // within the protocol's 2 MiB.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, dtb::HEADER_SIZE) };
    let size = dtb::total_size(header).ok().filter(|&s| s <= 2 << 20)?;
    // SAFETY: as above.
    Some(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}

/// Ends a boot that cannot go as far as the SDT's console: said on the
/// console `tree` names (the bootloader's device tree's), if any, then
/// the machine powers off.
fn cannot_start(tree: Option<&[u8]>, what: core::fmt::Arguments<'_>) -> ! {
    if let Some((base, kind)) = tree.and_then(|t| sdt::stdout_uart(t).ok()) {
        // SAFETY: the UART the tree names as its console; MMU off, so it
        // is device memory.
        unsafe { console::init(kind, base) };
        refuse(what);
    }
    arch::smc(FW_SYSTEM_OFF, 0, 0, 0);
    loop {
        arch::wait_for_event();
    }
}

/// Ends the boot with a clear line when the configuration cannot run.
fn refuse(what: core::fmt::Arguments<'_>) -> ! {
    error!("{what}");
    error!("nothing was started; powering off");
    console::flush();
    arch::smc(FW_SYSTEM_OFF, 0, 0, 0);
    loop {
        arch::wait_for_event();
    }
}

#[no_mangle]
extern "C" fn primary_main(bootloader_dtb: u64) -> ! {
    // Until the SDT names the console, only the bootloader's tree can.
    let boot_tree = bootloader_tree(bootloader_dtb);
    let package = boot_package().unwrap_or_else(|e| cannot_start(boot_tree, format_args!("{e}")));
    let Some(sdt_blob) = package.get(package::SDT) else {
        cannot_start(
            boot_tree,
            format_args!("the boot package has no `{}` entry", package::SDT),
        );
    };
    // The SDT is read once the heap is up; before that, only where the
    // heap goes, in the structural check's own pass.
    let hypervisor = sdt::hypervisor_memory(sdt_blob)
        .unwrap_or_else(|e| cannot_start(boot_tree, format_args!("bad System Device Tree: {e}")));
    let (image_start, _) = arch::image_range();
    let heap_start = (arch::image_range().1 + package.len() as u64).next_multiple_of(4096);
    if image_start < hypervisor.base || heap_start + (4 << 20) > hypervisor.end() {
        // The SDT is readable: said on its console if it names one.
        let sdt_console = sdt::stdout_uart(sdt_blob).is_ok().then_some(sdt_blob);
        cannot_start(
            sdt_console.or(boot_tree),
            format_args!(
                "the hypervisor and its boot package ({:#x}..{:#x}) do not fit its reserved memory {} with a 4 MiB heap",
                image_start, heap_start, hypervisor
            ),
        );
    }
    // SAFETY: from the end of the boot package to the end of the
    // hypervisor's reserved memory, which nothing else uses.
    unsafe {
        HEAP.lock().init(
            heap_start as usize,
            (hypervisor.end() - heap_start) as usize,
        )
    };

    // Read once, for the console, the configuration and every
    // partition's device tree.
    let sdt_tree = sdt::read_tree(sdt_blob)
        .unwrap_or_else(|e| cannot_start(boot_tree, format_args!("bad System Device Tree: {e}")));
    let (console_base, console_kind) = sdt::console(&sdt_tree)
        .unwrap_or_else(|e| cannot_start(boot_tree, format_args!("bad System Device Tree: {e}")));
    // SAFETY: the console UART named by the SDT; MMU off, so it is device memory.
    unsafe { console::init(console_kind, console_base) };
    // The hypervisor's command line: the bootloader's `/chosen/bootargs`
    // (QEMU's `-append`, U-Boot's `bootargs`).
    console::set_colour(
        boot_tree
            .and_then(sdt::bootargs)
            .is_some_and(|a| a.split_whitespace().any(|w| w == "colour")),
    );
    info!("Partita {} starting at EL2", env!("CARGO_PKG_VERSION"));
    let config = SystemConfig::from_tree(&sdt_tree)
        .unwrap_or_else(|e| refuse(format_args!("bad System Device Tree: {e}")));
    info!(
        "board: {}, {} CPUs, {}",
        config.model,
        config.cpus.len(),
        config.gic.version
    );

    let mpidr = arch::mpidr();
    let Some(boot_cpu) = config.cpus.iter().position(|c| c.mpidr == mpidr) else {
        refuse(format_args!(
            "the boot CPU (MPIDR {mpidr:#x}) is not in the SDT"
        ));
    };
    if config.cpus.len() > cpu::MAX_CPUS {
        refuse(format_args!(
            "{} CPUs in the SDT; at most {} supported",
            config.cpus.len(),
            cpu::MAX_CPUS
        ));
    }
    arch::set_cpu_index(boot_cpu);
    enable_mmu(&config);

    let r = &config.gic.regs;
    let gic = match config.gic.version {
        GicVersion::V3 => Gic::V3 {
            gicd: r[0].base,
            gicr: r[1].base,
            gicr_size: r[1].size,
        },
        GicVersion::V2 => Gic::V2 {
            gicd: r[0].base,
            gicc: r[1].base,
            gich: r[2].base,
        },
    };
    gic.init_distributor();
    gic.publish_for_vectors();
    arch::take_interrupts_at_el2();
    if let Err(e) = gic.init_cpu(mpidr) {
        refuse(format_args!("{e}"));
    }
    // Only now is it known how many interrupt lines the GIC has.
    if let Err(e) = config.check_interrupt_lines(gic.lines()) {
        refuse(format_args!("bad System Device Tree: {e}"));
    }

    info!("partitions:");
    for l in config.partition_table().lines() {
        info!("{l}");
    }
    // Sized once: a partition holds its vGIC's state by value, so each
    // reallocation of this vector copied every partition already in it.
    let mut partitions = Vec::with_capacity(config.domains.len());
    let lines = gic.lines();
    let mut spi_owners = alloc::vec![None; lines as usize];
    for i in 0..config.domains.len() {
        match Partition::build(i, &config, &sdt_tree, &package, lines) {
            Ok(p) => {
                for &spi in &p.hw_spis {
                    if let Some(o) = spi_owners.get_mut(spi as usize) {
                        *o = Some(i as u16);
                    }
                }
                partitions.push(p)
            }
            Err(e) => refuse(format_args!("{}: {}", e.path, e.reason)),
        }
    }
    // Its heap goes back before the guests start (this function never
    // returns, so nothing else would free it).
    drop(sdt_tree);
    let console_spi = config.devices[config.console].spis.first().copied();
    let links = config
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let regs = [0, 1].map(|side| {
                partitions[l.domains[side]]
                    .virtio
                    .iter()
                    .find(|v| v.link == i && v.side == side)
                    .and_then(|v| v.regs)
            });
            rpmsg::LinkLock::new(partita_core::rpmsg::Link::configured(l.config()), regs)
        })
        .collect();
    let mut cpu_owner = alloc::vec![None; config.cpus.len()];
    for (i, d) in config.domains.iter().enumerate() {
        for (v, &c) in d.cpus.iter().enumerate() {
            cpu_owner[c] = Some((i, v));
        }
    }
    SYSTEM.call_once(|| System {
        config,
        partitions,
        gic,
        spi_owners,
        console_spi,
        links,
        cpu_owner,
    });
    let sys = system();
    cpu::set_sgi_targets(&sys.gic, sys.config.cpus.iter().map(|c| c.mpidr));
    if let Some(spi) = sys.console_spi {
        sys.gic.route(spi, mpidr, boot_cpu);
        sys.gic.set_enabled(spi, mpidr, true);
        console::enable_input();
    }
    console::announce_focus();
    {
        let heap = HEAP.lock();
        info!(
            "heap: {} KiB in use of {} KiB",
            heap.stats_alloc_actual() / 1024,
            heap.stats_total_bytes() / 1024
        );
    }

    extern "C" {
        static __boot_stack_top: u8;
    }
    // SAFETY: a linker symbol; only its address is taken.
    cpu::prepare(
        boot_cpu,
        Some(unsafe { &__boot_stack_top as *const u8 as u64 }),
    );
    // The console's interrupt goes to a CPU no partition uses, if there
    // is one, so that feeding the UART and routing typed input take no
    // partition's time.
    let mut console_cpu = sys.cpu_owner[boot_cpu].is_none().then_some(boot_cpu);
    for (i, c) in sys.config.cpus.iter().enumerate() {
        if i == boot_cpu {
            continue;
        }
        cpu::prepare(i, None);
        let r = arch::smc(FW_CPU_ON, c.mpidr, arch::secondary_entry_point(), i as u64);
        if r == 0 && sys.cpu_owner[i].is_none() {
            console_cpu = console_cpu.or(Some(i));
        }
        if r != 0 {
            // No vCPU is posted before every CPU is on, so nothing waits yet.
            let needed: Vec<&str> = sys
                .config
                .domains
                .iter()
                .filter(|d| d.cpus.contains(&i))
                .map(|d| d.path.as_str())
                .collect();
            if needed.is_empty() {
                warn!(
                    "firmware refused CPU_ON for {} (MPIDR {:#x}): error {}; no partition needs it, it stays off",
                    c.path, c.mpidr, r as i64
                );
            } else {
                refuse(format_args!(
                    "firmware refused CPU_ON for {} (MPIDR {:#x}): error {}; {} cannot run without it",
                    c.path,
                    c.mpidr,
                    r as i64,
                    needed.join(", ")
                ));
            }
        }
    }

    if let (Some(spi), Some(c)) = (sys.console_spi, console_cpu) {
        sys.gic.route(spi, sys.config.cpus[c].mpidr, c);
    }

    // Each partition's home CPU (that of its vCPU 0) loads its images
    // and starts it: the partitions load in parallel.
    for p in &sys.partitions {
        if p.life.lock().start().is_ok() {
            cpu::kick(p.pcpus[0]);
        }
    }
    park_loop()
}

/// The identity map: RAM as normal memory, write-xor-execute and without
/// what firmware keeps (`pagetable::el2_ram_map`), and the devices the
/// hypervisor drives itself (console, GIC) as device memory.
fn enable_mmu(sys: &SystemConfig) {
    let mut tables = arch::mmu::HeapTables;
    let mut t = PageTable::new(&mut tables, Regime::El2)
        .unwrap_or_else(|e| refuse(format_args!("EL2 tables: {e:?}")));
    let image = arch::mmu::image_layout();
    let ram: Vec<_> = sys.ram.iter().map(|r| r.base..r.end()).collect();
    let reserved: Vec<_> = sys
        .reserved
        .iter()
        .map(|r| r.range.base..r.range.end())
        .collect();
    for r in pagetable::el2_ram_map(&ram, &reserved, &image) {
        t.map(&mut tables, r.base, r.base, r.size, r.attrs)
            .unwrap_or_else(|e| refuse(format_args!("mapping RAM {:#x}: {e:?}", r.base)));
    }
    let console = &sys.devices[sys.console].regs[0];
    for r in core::iter::once(console).chain(sys.gic.regs.iter()) {
        let p = r.pages();
        t.map(&mut tables, p.base, p.base, p.size, Attrs::DEVICE)
            .unwrap_or_else(|e| refuse(format_args!("mapping device {r}: {e:?}")));
    }
    if let Some(va) = t.writable_and_executable(&tables) {
        refuse(format_args!("EL2 map: {va:#x} writable and executable"));
    }
    arch::mmu::enable(&t);
    let data = core::ptr::addr_of!(SYSTEM) as u64;
    for (va, write) in [
        (image.text.start, false),
        (image.read_only.start, false),
        (data, true),
    ] {
        if arch::mmu::writable(va) != write {
            refuse(format_args!(
                "EL2 map: the MMU says {va:#x} is writable: {}",
                !write
            ));
        }
    }
    info!(
        "EL2 map: text {:#x}..{:#x} read-only, constants to {:#x} read-only (checked by the MMU), the rest never executed (WXN); {} ranges firmware keeps left out",
        image.text.start,
        image.text.end,
        image.read_only.end,
        sys.reserved.len()
    );
}

#[no_mangle]
extern "C" fn secondary_main(index: usize) -> ! {
    arch::set_cpu_index(index);
    let sys = system();
    arch::take_interrupts_at_el2();
    if let Err(e) = sys.gic.init_cpu(arch::mpidr()) {
        error!("{e}; this CPU stays parked");
        loop {
            arch::wait_for_event();
        }
    }
    info!("online (MPIDR {:#x})", arch::mpidr());
    park_loop()
}

/// Where a CPU without a running vCPU waits for work from its partition's
/// lifecycle. It sleeps with interrupts masked (a pending one still wakes
/// it) and opens them briefly after each wake-up; every request comes with
/// a kick, so none is missed between the look and the sleep.
#[no_mangle]
pub extern "C" fn park_loop() -> ! {
    let me = arch::cpu_index();
    cpu::get(me).set_running(None);
    let owner = system().cpu_owner[me];
    #[cfg(feature = "el2-time")]
    el2time::report(me, owner.map(|(p, _)| &system().partitions[p]));
    loop {
        if let Some((p, v)) = owner {
            life::serve(&system().partitions[p], v);
        }
        arch::wait_for_interrupt();
        arch::take_pending_interrupts();
        console::idle();
    }
}

/// The exception class and registers of a fatal trap, readable by a person.
/// A guest's (taken from EL1 or EL0) counts against its partition's log
/// limit for events, as its restarts do (one crash per instance): a
/// controller restarting a crashing partition in a loop cannot make the
/// hypervisor print without bound.
pub fn report_fatal(what: &str, frame: &arch::CallFrame) {
    let s = arch::syndrome();
    let ec = partita_core::trap::ec_of(s.esr);
    let name = partita_core::trap::ec_name(ec);
    let current = cpu::current().map(|(p, v)| (&system().partitions[p], v));
    let who = Who(current.map(|(p, v)| (p.name.as_str(), v)));
    macro_rules! report {
        () => {
            format_args!(
                "{what}{who}: {name} (EC {ec:#04x}) ESR {:#x} FAR {:#x} ELR {:#x} SPSR {:#x}",
                s.esr, s.far, frame.elr, frame.spsr
            )
        };
    }
    match current {
        // Taken from EL1 or EL0: the guest's.
        Some((p, _)) if (frame.spsr >> 2) & 3 < 2 => {
            console::limited(p, console::Class::Event, log::Level::Error, report!())
        }
        _ => error!("{}", report!()),
    }
}

/// " in partition NAME vcpu N", or nothing.
struct Who<'a>(Option<(&'a str, usize)>);

impl core::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some((name, v)) => write!(f, " in partition {name} vcpu {v}"),
            None => Ok(()),
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::emergency(format_args!("PANIC on cpu{}: {info}", arch::cpu_index()));
    console::emergency(format_args!("this CPU is halted"));
    loop {
        arch::wait_for_event();
    }
}
