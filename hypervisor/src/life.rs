//! Carrying out what each partition's lifecycle decides
//! (`partita_core::lifecycle`): vCPUs leaving their CPUs, the home CPU's
//! clean-up and loading, the control interface's requests, and powering the
//! machine off when every partition has ended.

use crate::arch::{self, CallFrame};
use crate::console::{guest_info, guest_warn};
use crate::cpu;
use crate::partition::Partition;
use crate::system;
use core::sync::atomic::Ordering;
use log::info;
use partita_core::control::{self, ControlError, Request};
use partita_core::lifecycle::{End, Image, Refusal, State, Work};

/// The work of a parked CPU: runs its vCPU (and does not return) or
/// returns when there is nothing to do.
pub fn serve(p: &'static Partition, vcpu: usize) {
    loop {
        let work = p.life.lock().work(vcpu);
        match work {
            Work::Nothing => return,
            Work::Enter { entry, context } => crate::vcpu::enter(p, vcpu, entry, context),
            Work::Finish => finish(p),
            Work::Load(image) => load(p, image),
        }
    }
}

/// The vCPU running here leaves its CPU: its traces are wiped from this
/// CPU, the vCPUs in `kick` are asked to leave (or home to finish), and
/// the CPU parks.
pub fn leave(p: &Partition, kick: u32) -> ! {
    let sys = system();
    let me = arch::cpu_index();
    // What its vCPU sent and this CPU held moves now: its other vCPUs,
    // told not to notify, may have queued more behind it.
    crate::rpmsg::release(p, crate::rpmsg::Release::Leave);
    arch::disarm_guest_timers();
    sys.gic.reset_virtual_interface();
    for ppi in [crate::irq::VTIMER, crate::irq::PTIMER] {
        sys.gic.clear_local(ppi, sys.config.cpus[me].mpidr);
    }
    crate::irq::leave_cpu(p, cpu::get(me));
    ask_to_leave(p, kick);
    arch::park(cpu::stack_top(me))
}

/// Asks the CPU of each vCPU in `mask` to leave (bit 0, once every vCPU
/// has left, wakes home to finish).
fn ask_to_leave(p: &Partition, mask: u32) {
    let me = arch::cpu_index();
    for (v, &c) in p.pcpus.iter().enumerate() {
        if mask & (1 << v) != 0 && c != me {
            cpu::ask_stop(c);
        }
    }
}

/// Home, after every vCPU left: quiesce the links before anything touches
/// the partition's memory, reset its interrupts, forget its translations,
/// then end the stop.
fn finish(p: &'static Partition) {
    crate::rpmsg::quiesce(p);
    p.reset_interrupts();
    arch::invalidate_guest_tlb(p.vttbr());
    p.clean_memory();
    // Said before the new state shows: whoever sees it (a controller, the
    // last partition powering the machine off) sees this line first.
    let end = p.life.lock().end();
    match end {
        End::Restart => guest_info!(p, "{}: restarting", p.name),
        End::Crash => guest_info!(p, "{}: crashed; its controller may restart it", p.name),
        End::Off => guest_info!(p, "{}: stopped", p.name),
    }
    let state = p.life.lock().finished();
    notify_controller(p);
    if state.ended() {
        maybe_power_off();
    }
}

/// Home loads the partition's image and device tree, then starts vCPU 0.
fn load(p: &'static Partition, image: Image) {
    let entry = match image {
        Image::Package => {
            p.load_package();
            p.layout.kernel
        }
        Image::Loaded { entry } => entry,
    };
    p.load_dtb();
    // Whatever was raised in it while it was stopped is not the new
    // instance's.
    p.reset_interrupts();
    p.reset_counters();
    let restarts = {
        let mut l = p.life.lock();
        l.loaded(entry, p.layout.dtb, arch::counter());
        l.restarts
    };
    guest_info!(
        p,
        "{}: started{}; heap {} bytes in use",
        p.name,
        match restarts {
            0 => alloc::string::String::new(),
            n => alloc::format!(" (restart {n})"),
        },
        crate::heap_in_use()
    );
    notify_controller(p);
}

/// Raises the control interrupt of `p`'s controller, if it has one.
fn notify_controller(p: &Partition) {
    let sys = system();
    let Some(c) = sys.config.controls.iter().find(|c| c.target == p.index) else {
        return;
    };
    let (Some(spi), ctl) = (c.spi, &sys.partitions[c.controller]) else {
        return;
    };
    if ctl.life.lock().state() == State::Running {
        ctl.vgic
            .lock()
            .raise(0, spi, &mut crate::irq::Hw { p: ctl });
    }
}

/// A guest fault the hypervisor cannot hand back: the partition stops and
/// reads Crashed.
pub fn crash(p: &'static Partition, vcpu: usize) -> ! {
    p.faults.fetch_add(1, Ordering::Relaxed);
    let kick = p.life.lock().fault(vcpu);
    leave(p, kick)
}

/// A partition's report of its own crash (`control::CRASH`): one line with
/// the syndrome it gave, then it stops and reads Crashed, as after a fault
/// the hypervisor cannot hand back. The report is no fault of its own: the
/// fault behind it, if it reached the hypervisor, was counted then.
#[cold]
pub fn reported_crash(p: &'static Partition, vcpu: usize, [esr, far, elr]: [u64; 3]) -> ! {
    let what = match esr {
        0 => "no exception",
        _ => partita_core::trap::ec_name(partita_core::trap::ec_of(esr)),
    };
    guest_warn!(
        p,
        "{}: vcpu {vcpu} reports a crash: {what} (ESR {esr:#x}, FAR {far:#x}, ELR {elr:#x})",
        p.name
    );
    let kick = p.life.lock().fault(vcpu);
    leave(p, kick)
}

/// Called when a partition has ended: once every partition has, the
/// machine powers off.
pub fn maybe_power_off() {
    let sys = system();
    if sys.partitions.iter().all(|p| p.life.lock().state().ended()) {
        info!("all partitions have ended; powering off");
        crate::console::flush();
        arch::smc(crate::FW_SYSTEM_OFF, 0, 0, 0);
    }
}

/// A control hypercall of `caller` (x0..x3 as it made it): the answer goes
/// in x0 (and x1..x7); a refusal is an error code and a log line. Out of
/// line: its ELF buffer would otherwise cost every hypercall a stack probe.
#[cold]
#[inline(never)]
pub fn control(
    frame: &mut CallFrame,
    caller: &Partition,
    x: [u64; 4],
    req: Result<Request, ControlError>,
) {
    if let Err(e) = req.and_then(|r| serve_control(frame, caller, r)) {
        guest_warn!(
            caller,
            "{}: control call {:#x} for partition id {} refused: {e}",
            caller.name,
            x[0],
            x[1]
        );
        frame.x[0] = e.code();
    }
}

fn serve_control(
    frame: &mut CallFrame,
    caller: &Partition,
    req: Request,
) -> Result<(), ControlError> {
    let sys = system();
    let t = sys
        .partitions
        .iter()
        .find(|t| sys.config.domains[t.index].id == req.id())
        .ok_or(ControlError::UnknownPartition)?;
    let own_status = matches!(req, Request::Status { .. }) && t.index == caller.index;
    if !own_status && sys.config.control(caller.index, t.index).is_none() {
        return Err(ControlError::Denied);
    }
    let wrong = |Refusal::WrongState(_)| ControlError::WrongState;
    match req {
        Request::Status { .. } => {
            let (state, restarts, since) = {
                let l = t.life.lock();
                (l.state(), l.restarts, l.started_at)
            };
            let (traps, injected) = t.cpu_counters();
            let (rpmsg_in, rpmsg_out) = t.rpmsg_counts();
            let uptime = match state {
                State::Running | State::Stopping => arch::counter().saturating_sub(since),
                _ => 0,
            };
            let words = [
                state as u64,
                u64::from(restarts),
                uptime,
                traps,
                injected,
                rpmsg_in,
                rpmsg_out,
                t.faults.load(Ordering::Relaxed),
            ];
            frame.x[..8].copy_from_slice(&words);
        }
        Request::Start { .. } => {
            t.life.lock().start().map_err(wrong)?;
            guest_info!(caller, "{}: start requested by {}", t.name, caller.name);
            cpu::kick(t.pcpus[0]);
            frame.x[0] = 0;
        }
        Request::Stop { .. } => {
            let kick = t.life.lock().stop().map_err(wrong)?;
            guest_info!(caller, "{}: stop requested by {}", t.name, caller.name);
            ask_to_leave(t, kick);
            frame.x[0] = 0;
        }
        Request::Load { addr, len, .. } => {
            if !caller.owns(addr, len) || len == 0 {
                return Err(ControlError::BadAddress);
            }
            t.life.lock().begin_load().map_err(wrong)?;
            let r = load_elf(caller, t, addr, len);
            t.life.lock().end_load(r.ok());
            let entry = r?;
            guest_info!(
                caller,
                "{}: loaded an ELF of {len} bytes from {}, entry {entry:#x}",
                t.name,
                caller.name
            );
            frame.x[0] = 0;
        }
        Request::VdevReady {
            rings, size, align, ..
        } => {
            crate::rpmsg::vdev_ready(caller, t.index, rings, size, align)?;
            guest_info!(
                caller,
                "{}: rpmsg link to {} live on vrings {:#x} and {:#x} ({size} descriptors each)",
                caller.name,
                t.name,
                rings[0],
                rings[1]
            );
            frame.x[0] = 0;
        }
        Request::VdevReset { .. } => {
            crate::rpmsg::vdev_reset(caller, t.index)?;
            frame.x[0] = 0;
        }
        Request::Kick { vring, .. } => {
            crate::rpmsg::kick(caller, t.index, vring)?;
            frame.x[0] = 0;
        }
    }
    Ok(())
}

/// Copies the ELF at `addr..addr + len` of `caller`'s memory into `t`'s
/// (which is stopped, with its links quiesced): the headers are copied
/// out first, then every segment is checked before any byte is written.
fn load_elf(caller: &Partition, t: &Partition, addr: u64, len: u64) -> Result<u64, ControlError> {
    let mut head = [0u8; control::HEAD_MAX];
    let n = (len as usize).min(head.len());
    // SAFETY: `addr..addr + len` was checked to lie in the caller's
    // memory, which the EL2 identity map covers.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, head.as_mut_ptr(), n) };
    let dtb = partita_core::sdt::Range::new(t.layout.dtb, partita_core::guest_fdt::DTB_MAX);
    let plan =
        control::plan_elf(&head[..n], len, t.layout.kernel, &t.memory, dtb).map_err(|e| {
            guest_warn!(caller, "{}: ELF from {} refused: {e}", t.name, caller.name);
            ControlError::BadImage
        })?;
    for s in plan.segments() {
        // SAFETY: the plan checked each segment's file bytes against the
        // image's length (inside the caller's memory) and its memory range
        // against the target's memory, away from its device tree; the two
        // partitions' memories never overlap.
        unsafe {
            core::ptr::copy(
                (addr + s.offset) as *const u8,
                s.dest as *mut u8,
                s.file_len as usize,
            );
            core::ptr::write_bytes(
                (s.dest + s.file_len) as *mut u8,
                0,
                (s.mem_len - s.file_len) as usize,
            );
        }
        arch::sync_guest_image(s.dest, s.mem_len);
    }
    Ok(plan.entry)
}
