//! Running a vCPU and handling every exception it takes to EL2: each trap
//! is decoded into one event and handed to exactly one handler.

use crate::arch::{self, TrapFrame, VcpuSetup};
use crate::cpu::{self, Request};
use crate::irq;
use crate::partition::Partition;
use crate::{report_fatal, system};
use log::{debug, info, warn};
use partita_core::psci::{self, Action, Power};
use partita_core::trap::{sysreg, MmioAccess, Trap};
use partita_core::vuart::Effect;

const ICC_SGI1R_EL1: u32 = sysreg(3, 0, 12, 11, 5);
const ICC_ASGI1R_EL1: u32 = sysreg(3, 1, 12, 11, 6);
const ICC_SGI0R_EL1: u32 = sysreg(3, 2, 12, 11, 7);

/// Partita's own hypercalls (SMCCC vendor-specific hypervisor service).
const HVC_NULL: u64 = 0xc600_0000;
const NOT_SUPPORTED: u64 = u64::MAX; // SMCCC: -1

/// Runs vCPU `vcpu` of `partition` on this CPU from its first instruction.
pub fn enter(partition: usize, vcpu: usize, entry: u64, context: u64) -> ! {
    let p = &system().partitions[partition];
    let me = arch::cpu_index();
    arch::configure_vcpu(&VcpuSetup {
        vttbr: p.vttbr(),
        vmpidr: psci::vmpidr(vcpu),
    });
    p.power.lock().set(vcpu, Power::On);
    cpu::get(me).set_running(Some((partition, vcpu)));
    info!(
        "{}: vcpu {vcpu} starts at {entry:#x} (counter {})",
        p.name,
        arch::counter()
    );
    arch::run_guest(cpu::stack_top(me), &TrapFrame::boot(entry, context))
}

fn current() -> (&'static Partition, usize) {
    let (p, v) = cpu::current().expect("a guest exception comes from a running vCPU");
    (&system().partitions[p], v)
}

#[no_mangle]
extern "C" fn guest_sync(frame: &mut TrapFrame) {
    let (p, vcpu) = current();
    let s = arch::syndrome();
    handle_sync(frame, p, vcpu, &s);
    irq::flush_if_needed();
}

fn handle_sync(
    frame: &mut TrapFrame,
    p: &'static Partition,
    vcpu: usize,
    s: &partita_core::trap::Syndrome,
) {
    match Trap::decode(s) {
        Trap::Hvc { .. } => call(frame, p, vcpu),
        Trap::Smc { .. } => {
            // A trapped SMC returns to the SMC itself (ELR points at it).
            frame.elr += 4;
            call(frame, p, vcpu)
        }
        Trap::Mmio(a) => mmio(frame, p, vcpu, a, s.far),
        Trap::DataAbort { ipa, write, fsc } => {
            warn!("{}: vcpu {vcpu} {} at IPA {ipa:#x} (fault status {fsc:#x}) outside its memory and devices; data abort injected",
                p.name, if write { "write" } else { "read" });
            arch::inject_data_abort(frame, s.far, write);
        }
        Trap::Wfx => frame.elr += 4,
        Trap::SysReg(r) if !r.read && r.id == ICC_SGI1R_EL1 => {
            irq::sgi1r(p, vcpu, frame.reg(r.reg));
            frame.elr += 4;
        }
        Trap::SysReg(r) if !r.read && (r.id == ICC_SGI0R_EL1 || r.id == ICC_ASGI1R_EL1) => {
            debug!("{}: vcpu {vcpu} Group 0 or secure SGI ignored", p.name);
            frame.elr += 4;
        }
        Trap::InstructionAbort { .. } | Trap::SysReg(_) | Trap::Other { .. } => {
            report_fatal("unhandled guest exception", frame);
            stop_partition(p, "stopped after an unhandled exception")
        }
    }
}

#[no_mangle]
extern "C" fn guest_irq(_frame: &mut TrapFrame) {
    irq::handle_physical();
}

#[no_mangle]
extern "C" fn guest_serror(frame: &mut TrapFrame) {
    let (p, _) = current();
    report_fatal("SError from guest", frame);
    stop_partition(p, "stopped after an SError")
}

#[no_mangle]
extern "C" fn guest_fatal(frame: &mut TrapFrame) {
    let (p, _) = current();
    report_fatal("unsupported exception from guest (AArch32 or FIQ)", frame);
    stop_partition(p, "stopped")
}

#[no_mangle]
extern "C" fn el2_fatal(frame: &mut TrapFrame) -> ! {
    report_fatal("hypervisor fault", frame);
    panic!("exception at EL2");
}

#[no_mangle]
extern "C" fn el2_irq(_frame: &mut TrapFrame) {
    irq::handle_physical();
}

/// An HVC or SMC: PSCI, Partita's own calls, or NOT_SUPPORTED.
fn call(frame: &mut TrapFrame, p: &'static Partition, vcpu: usize) {
    let x = [frame.x[0], frame.x[1], frame.x[2], frame.x[3]];
    if x[0] == HVC_NULL {
        frame.x[0] = 0;
        return;
    }
    let Some(c) = psci::Call::decode(x) else {
        debug!(
            "{}: vcpu {vcpu} called unknown function {:#x}",
            p.name, x[0]
        );
        frame.x[0] = NOT_SUPPORTED;
        return;
    };
    let action = p.power.lock().handle(c, |entry| p.owns(entry, 4));
    match action {
        Action::Return(v) => frame.x[0] = v,
        Action::Start {
            vcpu: target,
            entry,
            context,
        } => {
            frame.x[0] = 0;
            cpu::send(
                p.pcpus[target],
                Request::Start {
                    partition: p.index,
                    vcpu: target,
                    entry,
                    context,
                },
            );
        }
        Action::Stop => {
            p.power.lock().set(vcpu, Power::Off);
            info!("{}: vcpu {vcpu} off", p.name);
            if p.power.lock().all_off() {
                info!("{}: powered off (all its vCPUs are off)", p.name);
                crate::maybe_power_off();
            }
            cpu::get(arch::cpu_index()).set_running(None);
            arch::park(cpu::stack_top(arch::cpu_index()))
        }
        Action::SystemOff => stop_partition(p, "powered off"),
        Action::SystemReset => reset_partition(p, vcpu),
    }
}

/// Stops every vCPU of `p` on other CPUs and waits until they have left
/// the guest, so its memory can be rewritten.
fn stop_siblings(p: &Partition) {
    let me = arch::cpu_index();
    {
        let mut power = p.power.lock();
        for v in 0..power.count() {
            power.set(v, Power::Off);
        }
    }
    for &c in p.pcpus.iter().filter(|&&c| c != me) {
        if cpu::get(c).running().is_some_and(|(q, _)| q == p.index) {
            cpu::send(c, Request::Stop);
            while cpu::get(c).running().is_some() {
                core::hint::spin_loop();
            }
        }
    }
}

/// Ends partition `p` (SYSTEM_OFF, or a fault it caused); the others run on.
pub fn stop_partition(p: &Partition, why: &str) -> ! {
    stop_siblings(p);
    p.reset_interrupts();
    info!("{}: {why}", p.name);
    crate::maybe_power_off();
    let me = arch::cpu_index();
    cpu::get(me).set_running(None);
    arch::park(cpu::stack_top(me))
}

/// SYSTEM_RESET: stop, reload the images, start vCPU 0 again.
fn reset_partition(p: &Partition, vcpu: usize) -> ! {
    stop_siblings(p);
    p.reset_interrupts();
    info!("{}: reset by vcpu {vcpu}; reloading its images", p.name);
    p.load();
    p.power.lock().set(0, Power::OnPending);
    let (entry, context) = (p.layout.kernel, p.layout.dtb);
    let me = arch::cpu_index();
    if p.pcpus[0] == me {
        enter(p.index, 0, entry, context)
    }
    cpu::send(
        p.pcpus[0],
        Request::Start {
            partition: p.index,
            vcpu: 0,
            entry,
            context,
        },
    );
    cpu::get(me).set_running(None);
    arch::park(cpu::stack_top(me))
}

/// A trapped load or store: the partition's emulated devices, or an abort.
fn mmio(frame: &mut TrapFrame, p: &Partition, vcpu: usize, a: MmioAccess, far: u64) {
    if irq::emulate(frame, p, vcpu, &a) || crate::rpmsg::emulate(frame, p, &a) {
        frame.elr += 4;
        return;
    }
    if let Some(con) = p
        .console
        .as_ref()
        .filter(|c| a.ipa >= c.base && a.ipa - c.base < 0x1000)
    {
        let off = a.ipa - con.base;
        let mut st = con.state.lock();
        let (uart, line) = &mut *st;
        if a.write {
            match uart.write(off, a.width, a.store_value(frame.reg(a.reg)) as u32) {
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
                None => debug!(
                    "{}: write to unknown PL011 register {off:#x} ignored",
                    p.name
                ),
            }
        } else {
            let v = uart.read(off, a.width).unwrap_or_else(|| {
                debug!(
                    "{}: read of unknown PL011 register {off:#x} returns 0",
                    p.name
                );
                0
            });
            frame.set_reg(a.reg, a.load_result(u64::from(v)));
        }
        drop(st);
        p.resample_console();
        frame.elr += 4;
        return;
    }
    warn!(
        "{}: {} of {} bytes at IPA {:#x} outside its memory and devices; data abort injected",
        p.name,
        if a.write { "write" } else { "read" },
        a.width,
        a.ipa
    );
    arch::inject_data_abort(frame, far, a.write);
}
