//! What Partita's bare-metal guests (the test guest, the RTOS) share: the
//! boot code, a console, a GIC driver and a virtio rpmsg driver, all found
//! through the device tree the hypervisor passes.
#![no_std]

pub mod gic;
pub mod mmu;
pub mod uart;
pub mod virtio;

core::arch::global_asm!(include_str!("boot.S"));

/// Copies `src` into the start of `dst`, 64 bytes per load and store of
/// four SIMD registers, as Linux's `memcpy` moves them: `copy_from_slice`
/// calls compiler-builtins' `memcpy`, which under this target's strict
/// alignment moves 8 bytes per iteration of four instructions (a 496-byte
/// rpmsg message cost 250). Assembly, because the compiler splits even
/// `vld1q_u8_x4` into byte loads under strict alignment; byte-element
/// SIMD accesses need none. With IRQs masked: the guests' exception
/// entries save the general registers only, and a handler or another
/// task (the RTOS preempts) may use SIMD registers too (`memset` does), so
/// an interrupt between a load and its store could change what is stored.
/// Panics if `dst` is shorter.
pub fn copy(dst: &mut [u8], src: &[u8]) {
    let dst = &mut dst[..src.len()];
    let bulk = src.len() & !63;
    let rest = (src.len() - bulk) & !15;
    if bulk + rest != 0 {
        // SAFETY: reads the first `bulk + rest` bytes of `src` and writes
        // those of `dst`, of the same length; the four SIMD registers are
        // declared clobbered; DAIF is restored as it was.
        unsafe {
            core::arch::asm!(
                "mrs {daif}, daif",
                "msr daifset, #2",
                "cbz {n}, 3f",
                "2:",
                "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{s}], #64",
                "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{d}], #64",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                "3:",
                "cbz {r}, 5f",
                "4:",
                "ld1 {{v0.16b}}, [{s}], #16",
                "st1 {{v0.16b}}, [{d}], #16",
                "subs {r}, {r}, #16",
                "b.ne 4b",
                "5:",
                "msr daif, {daif}",
                daif = out(reg) _,
                s = inout(reg) src.as_ptr() => _,
                d = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) bulk => _,
                r = inout(reg) rest => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                options(nostack),
            )
        };
    }
    let done = bulk + rest;
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = *s;
    }
}

/// Prints one line on the console.
#[macro_export]
macro_rules! println {
    ($($a:tt)*) => { $crate::uart::print(format_args!($($a)*)) };
}

/// The console UART's base address and interrupt (an INTID), from
/// `/chosen/stdout-path`.
pub fn console(fdt: &fdt::Fdt<'_>) -> Option<(u64, Option<u32>)> {
    let path = fdt
        .find_node("/chosen")?
        .property("stdout-path")?
        .as_str()?;
    let node = fdt.find_node(path.split(':').next()?)?;
    let base = node.reg()?.next()?.starting_address as u64;
    Some((base, spi_of(node)))
}

/// A node's first interrupt as an INTID, from its 3-cell GIC specifier
/// (the `fdt` crate reads only 1- or 2-cell ones).
pub fn spi_of(node: fdt::node::FdtNode<'_, '_>) -> Option<u32> {
    let v = node.property("interrupts")?.value;
    Some(u32::from_be_bytes(v.get(4..8)?.try_into().ok()?) + 32)
}

/// Sets a node's first interrupt edge- or level-triggered as its
/// specifier's flags say (1, 2: edge; 4, 8: level). An edge-triggered
/// emulated interrupt costs no maintenance interrupt at its EOI.
pub fn configure_trigger(node: fdt::node::FdtNode<'_, '_>) {
    let Some(v) = node.property("interrupts").map(|p| p.value) else {
        return;
    };
    if let (Some(spi), Some(flags)) = (spi_of(node), v.get(8..12)) {
        gic::set_edge(spi, flags[3] & 3 != 0);
    }
}

/// Takes a node's first interrupt on vCPU 0: the GIC set up, the line
/// configured as its specifier says and enabled, IRQs unmasked. Returns
/// its INTID.
pub fn listen(node: fdt::node::FdtNode<'_, '_>) -> Option<u32> {
    let spi = spi_of(node)?;
    gic::init_distributor();
    gic::init_cpu(0);
    configure_trigger(node);
    gic::enable(spi, 0);
    // SAFETY: IRQs on; the guest's vector table handles them.
    unsafe { core::arch::asm!("msr daifclr, #2") };
    Some(spi)
}

pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: reads the virtual counter; the ISBs keep it in program order.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", "isb", out(reg) v) };
    v
}

pub fn counter_freq() -> u64 {
    let v: u64;
    // SAFETY: reads the counter frequency.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v) };
    v
}

/// An SMCCC call to the hypervisor.
pub fn hvc(x0: u64, x1: u64, x2: u64, x3: u64) -> i64 {
    let r: u64;
    // SAFETY: the hypervisor preserves x4 and up.
    unsafe {
        core::arch::asm!("hvc #0", inout("x0") x0 => r, inout("x1") x1 => _, inout("x2") x2 => _, inout("x3") x3 => _)
    };
    r as i64
}

/// Formats into a byte buffer (no heap in these guests); text past its end
/// is dropped.
pub struct BufWriter<'a> {
    pub buf: &'a mut [u8],
    pub at: usize,
}

impl<'a> BufWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        BufWriter { buf, at: 0 }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.at]).unwrap_or("")
    }
}

impl core::fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.at);
        self.buf[self.at..self.at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.at += n;
        Ok(())
    }
}

/// Partita's CRASH call: the partition stops and reads Crashed.
pub const PARTITA_CRASH: u64 = 0xc600_0020;

/// An exception or a panic this guest cannot handle: reported to the
/// hypervisor with its syndrome (or zeros), which stops the partition as
/// crashed, so that its controller sees it. Under a hypervisor without the
/// call, the partition powers off instead.
pub fn report_crash(esr: u64, far: u64, elr: u64) -> ! {
    hvc(PARTITA_CRASH, esr, far, elr);
    hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
    loop {
        core::hint::spin_loop()
    }
}

pub const PSCI_VERSION: u64 = 0x8400_0000;
pub const PSCI_CPU_OFF: u64 = 0x8400_0002;
pub const PSCI_CPU_ON: u64 = 0xc400_0003;
pub const PSCI_AFFINITY_INFO: u64 = 0xc400_0004;
pub const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
pub const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;
pub const PSCI_FEATURES: u64 = 0x8400_000a;
