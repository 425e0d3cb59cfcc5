//! Running a vCPU and handling every exception it takes to EL2: each trap
//! is decoded into one event and handed to exactly one handler.

use crate::arch::{self, CallFrame, TrapFrame, VcpuSetup};
use crate::console::{guest_info, guest_note, guest_warn};
use crate::cpu::{self, PerCpu};
use crate::irq;
use crate::life;
use crate::partition::{Partition, VirtualConsole};
use crate::{report_fatal, system};
use log::debug;
use partita_core::control;
use partita_core::guest_cpu::{self, SysRegAnswer};
use partita_core::lifecycle::Psci;
use partita_core::psci;
use partita_core::trap::{self, sysreg, MmioAccess, SysRegAccess, SysRegName, Trap};
use partita_core::vuart::{Effect, VirtualPl011};

const ICC_SGI1R_EL1: u32 = sysreg(3, 0, 12, 11, 5);
const ICC_ASGI1R_EL1: u32 = sysreg(3, 0, 12, 11, 6);
const ICC_SGI0R_EL1: u32 = sysreg(3, 0, 12, 11, 7);

const NOT_SUPPORTED: u64 = u64::MAX; // SMCCC: -1

/// Runs vCPU `vcpu` of `p` on this CPU from its first instruction.
pub fn enter(p: &'static Partition, vcpu: usize, entry: u64, context: u64) -> ! {
    let me = arch::cpu_index();
    arch::configure_vcpu(&VcpuSetup {
        vttbr: p.vttbr(),
        vmpidr: psci::vmpidr(vcpu),
    });
    system().gic.set_virtual_interface(false);
    // Nothing posted for a vCPU that ran here before can wait (it took
    // back its posts as it left, `irq::leave_cpu`); cleared all the same,
    // as what is loaded here must be this vCPU's.
    cpu::get(me).take_posted();
    cpu::get(me).set_running(Some((p, vcpu)));
    irq::publish_direct(p, &p.vgic.lock(), vcpu);
    guest_info!(
        p,
        "{}: vcpu {vcpu} starts at {entry:#x} (counter {})",
        p.name,
        arch::counter()
    );
    arch::run_guest(cpu::stack_top(me), &TrapFrame::boot(entry, context))
}

/// The partition and vCPU a guest's exception comes from.
fn current() -> (&'static Partition, usize) {
    guest_of(cpu::this())
}

#[inline(always)]
fn guest_of(here: &PerCpu) -> (&'static Partition, usize) {
    here.guest()
        .expect("a guest exception comes from a running vCPU")
}

/// An HVC or SMC, with the syndrome the vectors read: they send only
/// these here, on the registers every vector saves (see `CallFrame`).
#[no_mangle]
extern "C" fn guest_call(frame: &mut CallFrame, esr: u64) {
    let here = cpu::this();
    PerCpu::count(&here.traps);
    if trap::ec_of(esr) == trap::EC_SMC64 {
        // A trapped SMC returns to the SMC itself (ELR points at it).
        frame.elr += 4;
    }
    // The null call by HVC never comes here: the vector answers it.
    if let Some(v) = psci::stateless(frame.x[0], frame.x[1]) {
        // Queries answered from their arguments alone need no partition
        // and no lock.
        frame.x[0] = v;
    } else {
        let (p, vcpu) = guest_of(here);
        service(frame, p, vcpu);
    }
    irq::flush_if_needed(here);
}

/// A write of ICC_SGI1R_EL1 (value `v`) from x0..x19 that the vector did
/// not load itself: it sends it here on the registers every vector
/// saves, as it does calls, with `here`, this CPU's state, which it has
/// found. From any other register it comes through `guest_sync`.
#[no_mangle]
extern "C" fn guest_sgi1r(frame: &mut CallFrame, v: u64, here: &'static PerCpu) {
    sgi_write(frame, here, v, irq::sgi1r)
}

/// GICv2: a word stored (value `v`, in its low half) from x0..x19 to
/// the partition's GICD_SGIR, which the vectors send here as they send
/// ICC_SGI1R_EL1 to `guest_sgi1r`, with this CPU's state. From any other
/// register it comes through `guest_access`.
#[no_mangle]
extern "C" fn guest_sgir(frame: &mut CallFrame, v: u64, here: &'static PerCpu) {
    sgi_write(frame, here, v & 0xffff_ffff, irq::sgir)
}

/// The two above: the SGI register written with `v`, carried out by
/// `send`, and the write stepped past.
#[inline(always)]
fn sgi_write(frame: &mut CallFrame, here: &PerCpu, v: u64, send: fn(&Partition, usize, u64)) {
    PerCpu::count(&here.traps);
    let (p, vcpu) = guest_of(here);
    send(p, vcpu, v);
    frame.elr += 4;
    irq::flush_if_needed(here);
}

/// Every other trap from a guest, on all its registers, with the
/// syndrome the vectors read.
#[no_mangle]
extern "C" fn guest_sync(frame: &mut TrapFrame, esr: u64) {
    // This CPU's state, found once for the whole trap.
    let here = cpu::this();
    let (p, vcpu) = guest_of(here);
    let s = arch::syndrome_with(esr);
    PerCpu::count(&here.traps);
    handle_sync(frame, p, vcpu, &s);
    irq::flush_if_needed(here);
}

fn handle_sync(
    frame: &mut TrapFrame,
    p: &'static Partition,
    vcpu: usize,
    s: &partita_core::trap::Syndrome,
) {
    match Trap::decode(s) {
        // The vectors send calls to `guest_call`; served the same here.
        Trap::Hvc { .. } => service(frame, p, vcpu),
        Trap::Smc { .. } => {
            // A trapped SMC returns to the SMC itself (ELR points at it).
            frame.elr += 4;
            service(frame, p, vcpu)
        }
        Trap::InstructionAbort { ipa, fsc } => {
            if !arch::inject_instruction_abort(frame, s.far) {
                report_fatal(
                    "instruction abort at the guest's own exception vector",
                    frame,
                );
                life::crash(p, vcpu);
            }
            p.faults.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            guest_warn!(p, "{}: vcpu {vcpu} fetch at IPA {ipa:#x} (fault status {fsc:#x}) outside its memory; instruction abort injected",
                p.name);
        }
        // A WFI traps only while this CPU holds rpmsg messages: they move
        // before the vCPU sleeps, and the WFI runs again, untrapped.
        Trap::Wfx => crate::rpmsg::release(p, crate::rpmsg::Release::Sleep),
        Trap::SysReg(r) if !r.read && r.id == ICC_SGI1R_EL1 => {
            irq::sgi1r(p, vcpu, frame.reg(r.reg));
            frame.elr += 4;
        }
        Trap::SysReg(r) if !r.read && (r.id == ICC_SGI0R_EL1 || r.id == ICC_ASGI1R_EL1) => {
            debug!("{}: vcpu {vcpu} Group 0 or secure SGI ignored", p.name);
            frame.elr += 4;
        }
        Trap::SysReg(r) => system_register(frame, p, vcpu, &r),
        // Data aborts go to `guest_access` (`entry.S`), never here.
        Trap::Other { .. } | Trap::Mmio(_) | Trap::DataAbort { .. } => {
            report_fatal("unhandled guest exception", frame);
            life::crash(p, vcpu)
        }
    }
}

/// A data abort: an access to an emulated device, or outside the
/// partition's memory and devices. The vector saved x0-x19 and x30, and
/// the register an access names if it is another (see
/// `CallFrame::access_reg`).
#[no_mangle]
extern "C" fn guest_access(frame: &mut CallFrame, esr: u64) {
    let here = cpu::this();
    let (p, vcpu) = guest_of(here);
    PerCpu::count(&here.traps);
    let s = arch::syndrome_with(esr);
    match MmioAccess::decode(&s) {
        // The virtio windows before the vGIC: their writes carry every
        // rpmsg message at run time, the vGIC's are mostly set-up. Their
        // reads do not trap (see `rpmsg::RegisterPage`).
        Some(a)
            if irq::sgir_write(frame, p, vcpu, a)
                || (a.write() && crate::rpmsg::emulate(frame, p, a)) =>
        {
            frame.elr += 4
        }
        Some(a) => mmio(frame, p, vcpu, a, s.far),
        None => {
            let write = esr & (1 << 6) != 0;
            outside(frame, p, vcpu, s.ipa(), write, (esr & 0x3f) as u8, s.far)
        }
    }
    irq::flush_if_needed(here);
}

/// A data abort at `ipa` that no device of the partition emulates, or
/// without the syndrome that emulating one needs: the guest gets an abort
/// of its own.
#[cold]
#[inline(never)]
fn outside(
    frame: &mut CallFrame,
    p: &Partition,
    vcpu: usize,
    ipa: u64,
    write: bool,
    fsc: u8,
    far: u64,
) {
    guest_warn!(p, "{}: vcpu {vcpu} {} at IPA {ipa:#x} (fault status {fsc:#x}) outside its memory and devices; data abort injected",
        p.name, if write { "write" } else { "read" });
    p.faults.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    arch::inject_data_abort(frame, far, write);
}

/// A trapped system register or instruction other than the GIC's: set/way
/// maintenance, ACTLR_EL1, an implementation-defined register. Rare, and
/// kept out of `guest_sync`, whose size decides whether the SGI path is
/// inlined into it.
#[cold]
#[inline(never)]
fn system_register(frame: &mut TrapFrame, p: &Partition, vcpu: usize, r: &SysRegAccess) {
    match guest_cpu::classify(r, frame.reg(r.reg)) {
        SysRegAnswer::SetWay(op) => {
            // A walk of a level names set 0, way 0 once: the partition's
            // whole memory by VA then, nothing for the walk's other steps.
            if op.first {
                for m in &p.memory {
                    arch::maintain_dcache(m.base, m.size, op.invalidate);
                }
                debug!(
                    "{}: vcpu {vcpu} set/way walk of L{}: memory maintained by VA",
                    p.name,
                    op.level + 1
                );
            }
        }
        SysRegAnswer::ReadZeroWriteIgnore if r.read => frame.set_reg(r.reg, 0),
        SysRegAnswer::ReadZeroWriteIgnore => {}
        SysRegAnswer::Undefined => {
            p.faults.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            guest_warn!(
                p,
                "{}: vcpu {vcpu} {} system register {}; UNDEFINED injected",
                p.name,
                if r.read { "read" } else { "wrote" },
                SysRegName(r.id)
            );
            return arch::inject_undefined(frame);
        }
    }
    frame.elr += 4;
}

/// An interrupt from a guest that the vector's direct path left (see
/// `entry.S`), with the acknowledge value the vector read.
#[no_mangle]
extern "C" fn guest_irq(_frame: &mut CallFrame, iar: u64) {
    irq::handle_physical(iar as u32);
}

/// The kick SGI from a guest, which the vectors tell from the rest.
#[no_mangle]
extern "C" fn guest_kick(_frame: &mut CallFrame, iar: u64) {
    irq::kick_taken(iar as u32);
}

#[no_mangle]
extern "C" fn guest_serror(frame: &mut TrapFrame) {
    let (p, vcpu) = current();
    report_fatal("SError from guest", frame);
    life::crash(p, vcpu)
}

#[no_mangle]
extern "C" fn guest_fatal(frame: &mut TrapFrame) {
    let (p, vcpu) = current();
    report_fatal("unsupported exception from guest (AArch32 or FIQ)", frame);
    life::crash(p, vcpu)
}

#[no_mangle]
extern "C" fn el2_fatal(frame: &mut TrapFrame) -> ! {
    report_fatal("hypervisor fault", frame);
    panic!("exception at EL2");
}

#[no_mangle]
extern "C" fn el2_irq() {
    irq::handle_physical(system().gic.read_iar());
}

/// An HVC or SMC: PSCI, Partita's own calls, or NOT_SUPPORTED. Out of
/// line, so that the null call, which `guest_call` answers itself, does
/// not pay for its registers.
#[inline(never)]
fn service(frame: &mut CallFrame, p: &'static Partition, vcpu: usize) {
    let x = [frame.x[0], frame.x[1], frame.x[2], frame.x[3]];
    if x[0] == u64::from(control::NULL) {
        frame.x[0] = 0;
        return;
    }
    if let Some(v) = psci::stateless(x[0], x[1]) {
        frame.x[0] = v;
        return;
    }
    if x[0] == u64::from(control::CRASH) {
        life::reported_crash(p, vcpu, [x[1], x[2], x[3]])
    }
    let args = [x[0], x[1], x[2], x[3], frame.x[4], frame.x[5]];
    if let Some(req) = control::Request::decode(args) {
        return life::control(frame, p, x, req);
    }
    let Some(c) = psci::Call::decode(x) else {
        debug!(
            "{}: vcpu {vcpu} called unknown function {:#x}",
            p.name, x[0]
        );
        frame.x[0] = NOT_SUPPORTED;
        return;
    };
    let answer = p.life.lock().psci(vcpu, c, |entry| p.owns(entry, 4));
    match answer {
        Psci::Return(v) => frame.x[0] = v,
        Psci::Suspend => {
            frame.x[0] = 0;
            irq::suspend(p, vcpu);
        }
        Psci::Start { vcpu: target } => {
            frame.x[0] = 0;
            cpu::kick(p.pcpus[target]);
        }
        Psci::Leave { kick } => {
            match c {
                psci::Call::CpuOff => guest_info!(p, "{}: vcpu {vcpu} off", p.name),
                psci::Call::SystemReset => guest_info!(p, "{}: reset by vcpu {vcpu}", p.name),
                _ => guest_info!(p, "{}: powered off by vcpu {vcpu}", p.name),
            }
            life::leave(p, kick)
        }
    }
}

/// A trapped load or store that is neither GICD_SGIR's nor a virtio
/// window's (`guest_access`): the console's, the vGIC's registers, or an
/// abort. The console first: a driver reads its flags before each
/// character it sends.
#[inline(never)]
fn mmio(frame: &mut CallFrame, p: &Partition, vcpu: usize, a: MmioAccess, far: u64) {
    if console(frame, p, a) {
        frame.elr += 4;
        return;
    }
    gic_or_abort(frame, p, vcpu, a, far);
}

/// The rest of `mmio`, out of line so the console's read saves no more
/// registers than it uses.
#[inline(never)]
fn gic_or_abort(frame: &mut CallFrame, p: &Partition, vcpu: usize, a: MmioAccess, far: u64) {
    if irq::emulate(frame, p, vcpu, a) {
        frame.elr += 4;
        return;
    }
    guest_warn!(
        p,
        "{}: {} of {} bytes at IPA {:#x} outside its memory and devices; data abort injected",
        p.name,
        if a.write() { "write" } else { "read" },
        a.width(),
        a.ipa
    );
    p.faults.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    arch::inject_data_abort(frame, far, a.write());
}

/// An access to the partition's emulated console; false when `a` is not
/// one.
fn console(frame: &mut CallFrame, p: &Partition, a: MmioAccess) -> bool {
    let Some(con) = p
        .console
        .as_ref()
        .filter(|c| a.ipa >= c.base && a.ipa - c.base < 0x1000)
    else {
        return false;
    };
    let off = a.ipa - con.base;
    if a.write() {
        console_write(frame, p, con, off, a);
        return true;
    }
    let v = con.state.lock().0.read(off, a.width());
    let v = v.unwrap_or_else(|| {
        guest_note!(
            p,
            "{}: read of unknown PL011 register {off:#x} returns 0",
            p.name
        );
        0
    });
    frame.set_access_reg(a.reg(), a.load_result(u64::from(v)));
    // A read of the flags (a driver's poll before each character it
    // sends) leaves the interrupt line as it was.
    if VirtualPl011::read_changes(off) {
        p.resample_console();
    }
    true
}

/// A store to the console: a character sent, or a register set.
#[inline(never)]
fn console_write(
    frame: &mut CallFrame,
    p: &Partition,
    con: &VirtualConsole,
    off: u64,
    a: MmioAccess,
) {
    let mut st = con.state.lock();
    let (uart, line) = &mut *st;
    match uart.write(
        off,
        a.width(),
        a.store_value(frame.access_reg(a.reg())) as u32,
    ) {
        Some(Effect::Transmit(b)) => {
            if let Some(l) = line.push(b) {
                crate::console::guest_line(p.index, &p.name, l, false);
            }
        }
        // A driver masking its transmit interrupt has written all
        // it had: show the focused partition's unfinished line (a
        // shell prompt) now rather than at its newline.
        Some(Effect::None) if off == 0x38 && p.index == crate::console::focus() => {
            let l = line.take_pending();
            if !l.is_empty() {
                crate::console::guest_line(p.index, &p.name, l, true);
            }
        }
        Some(Effect::None) => {}
        None => guest_note!(
            p,
            "{}: write to unknown PL011 register {off:#x} ignored",
            p.name
        ),
    }
    drop(st);
    p.resample_console();
}
