//! Interrupts: physical ones taken at EL2 and forwarded, the partitions'
//! virtual GICs, and loading list registers.

use crate::arch::gic::{HOLD_TIMER, MAINTENANCE, SGI_KICK};
use crate::arch::MutexGuard;
use crate::arch::{self, CallFrame};
use crate::cpu;
use crate::partition::Partition;
use crate::system;
use log::debug;
use partita_core::trap::MmioAccess;
use partita_core::vgic::{self, Backend, Vgic};

/// The EL1 timers' PPIs (virtual, non-secure physical): the guest owns
/// both timers, and both interrupts are forwarded to the vCPU of the CPU
/// they fire on.
pub const VTIMER: u32 = 27;
pub const PTIMER: u32 = 30;

/// Carries out what a partition's vGIC asks of the hardware.
pub struct Hw<'a> {
    pub p: &'a Partition,
}

impl Backend for Hw<'_> {
    fn hw_enable(&mut self, intid: u32, vcpu: usize, on: bool) {
        let sys = system();
        let pcpu = self.p.pcpus[vcpu];
        if intid >= vgic::SPI_BASE && on {
            sys.gic.route(intid, sys.config.cpus[pcpu].mpidr, pcpu);
        }
        if !self.reaches(intid, pcpu == arch::cpu_index()) {
            return;
        }
        sys.gic.set_enabled(intid, sys.config.cpus[pcpu].mpidr, on);
    }

    fn hw_route(&mut self, intid: u32, vcpu: usize) {
        let sys = system();
        let pcpu = self.p.pcpus[vcpu];
        sys.gic.route(intid, sys.config.cpus[pcpu].mpidr, pcpu);
    }

    fn hw_pending(&mut self, intid: u32, vcpu: usize) -> bool {
        let sys = system();
        let pcpu = self.p.pcpus[vcpu];
        let here = pcpu == arch::cpu_index();
        if !self.reaches(intid, here) {
            return false;
        }
        if sys.gic.is_pending(intid, sys.config.cpus[pcpu].mpidr) {
            return true;
        }
        // Taken at EL2 but not yet by the guest: natively it would still
        // be pending. Only this CPU's list registers can be read.
        let gic = &sys.gic;
        here && cpu::get(pcpu).running() == Some((self.p.index, vcpu)) && {
            let used = !gic.empty_lrs() & gic.lr_mask();
            held(gic, used, intid).is_some_and(|(_, v)| gic.lr_state(v) & vgic::lr::PENDING != 0)
        }
    }

    fn hw_set_pending(&mut self, intid: u32, vcpu: usize, on: bool) {
        let sys = system();
        let pcpu = self.p.pcpus[vcpu];
        if self.reaches(intid, pcpu == arch::cpu_index()) {
            sys.gic.set_pending(intid, sys.config.cpus[pcpu].mpidr, on);
        }
    }

    fn notify(&mut self, vcpu: usize) {
        let pcpu = self.p.pcpus[vcpu];
        // Asked before the kick (which orders it before the SGI), so that
        // a kick that carries no such request (a posted SGI, a stop) costs
        // its CPU no flush.
        cpu::get(pcpu).request_flush();
        if pcpu != arch::cpu_index() {
            cpu::kick(pcpu);
        }
    }
}

impl Hw<'_> {
    /// GICv2 PPIs are banked per CPU: a CPU reaches only its own.
    fn reaches(&self, intid: u32, here: bool) -> bool {
        intid >= vgic::SPI_BASE || here || !matches!(system().gic, arch::gic::Gic::V2 { .. })
    }
}

/// Moves pending virtual interrupts of `vcpu` (running on this CPU) into
/// free list registers; more than fit wait for the underflow maintenance
/// interrupt.
pub fn flush(p: &Partition, vcpu: usize) {
    flush_locked(&mut p.vgic.lock(), vcpu);
}

/// `flush` with the partition's vGIC already locked.
fn flush_locked(g: &mut Vgic, vcpu: usize) {
    let gic = &system().gic;
    let all = gic.lr_mask();
    let mut free = gic.empty_lrs() & all;
    // Only entries present before this flush can hold an INTID again: each
    // one taken below leaves the pending set.
    let used = !free & all;
    let waiting = loop {
        if free == 0 {
            break g.has_pending(vcpu);
        }
        let Some(e) = g.has_pending(vcpu).then(|| g.next_for_lr(vcpu)).flatten() else {
            break false;
        };
        // Already in a list register: an active one becomes active and
        // pending again; a pending one absorbs the new edge.
        if let Some((i, v)) = held(gic, used, e.intid) {
            gic.write_lr(i, gic.lr_with_state(v, gic.lr_state(v) | vgic::lr::PENDING));
            count_injected();
            continue;
        }
        let i = free.trailing_zeros() as usize;
        free &= free - 1;
        gic.write_lr(i, gic.lr_encode(&e));
        count_injected();
    };
    gic.set_virtual_interface(waiting);
}

/// The list register among `used` that holds `intid`, and its value
/// (nothing to read when `used` is empty, the common case).
fn held(gic: &arch::gic::Gic, mut used: u32, intid: u32) -> Option<(usize, u64)> {
    while used != 0 {
        let i = used.trailing_zeros() as usize;
        used &= used - 1;
        let v = gic.read_lr(i);
        if gic.lr_state(v) != 0 && gic.lr_intid(v) == intid {
            return Some((i, v));
        }
    }
    None
}

/// CPU_SUSPEND: this CPU waits until its vCPU has a virtual interrupt to
/// take, as a core in standby wakes for one whether it is masked or not.
/// Whatever makes one pending arrives here as a physical interrupt (the
/// vCPU's timers, its devices' SPIs, the kick of another CPU), which ends
/// a WFI even while masked at EL2; a stop request leaves from in there.
pub fn suspend(p: &Partition, vcpu: usize) {
    crate::rpmsg::release(p, crate::rpmsg::Release::Sleep);
    let gic = &system().gic;
    loop {
        flush_if_needed(cpu::this());
        let used = !gic.empty_lrs() & gic.lr_mask();
        let loaded = (0..gic.lr_count())
            .filter(|i| used & (1 << i) != 0)
            .any(|i| gic.lr_state(gic.read_lr(i)) & vgic::lr::PENDING != 0);
        if loaded || p.vgic.lock().has_pending(vcpu) {
            return;
        }
        arch::wait_for_interrupt();
        arch::take_pending_interrupts();
    }
}

/// One more virtual interrupt injected on this CPU, for the status.
fn count_injected() {
    count_injected_on(cpu::this());
}

/// `count_injected` where this CPU's state is at hand already.
fn count_injected_on(here: &cpu::PerCpu) {
    cpu::PerCpu::count(&here.injected);
}

/// Loads list registers if something became pending for the vCPU of
/// `here` (this CPU's state). Inlined: every trap asks, and the call cost
/// 6 instructions and more.
#[inline(always)]
pub fn flush_if_needed(here: &cpu::PerCpu) {
    if here.take_flush() {
        if let Some((p, v)) = here.running() {
            flush(&system().partitions[p], v);
        }
    }
}

/// The physical interrupt acknowledged with value `iar` at EL2, guest
/// running or not. One per exception: another still pending is taken
/// again as soon as the return unmasks interrupts, and the common single
/// one (the timer, a kick) then costs no second acknowledge that finds
/// none.
pub fn handle_physical(iar: u32) {
    let sys = system();
    let here = cpu::this();
    if let Some(id) = sys.gic.priority_drop(iar) {
        match id {
            SGI_KICK => {
                sys.gic.deactivate(iar);
                kicked(sys, here);
            }
            // Level-sensitive: its condition (list registers run low, or
            // an EOI to act on) is dealt with before it is deactivated.
            MAINTENANCE => {
                maintenance();
                sys.gic.deactivate(id);
            }
            // The hot path: the timer of the vCPU running here goes into a
            // list register under the one lock, with no deferred flush.
            VTIMER | PTIMER => match here.running() {
                Some((p, v)) => {
                    let p = &sys.partitions[p];
                    let mut g = p.vgic.lock();
                    let free = sys.gic.empty_lrs() & sys.gic.lr_mask();
                    match g.direct_entry(v, id).filter(|_| free != 0) {
                        // Its physical interrupt stays active until the guest's
                        // EOI, so it cannot already sit in a list register.
                        // ICH_HCR_EL2 is written after the list register, as
                        // `flush` does: without it the virtual interrupt was
                        // not always signalled (a regression test hung).
                        Some(e) => {
                            sys.gic
                                .write_lr(free.trailing_zeros() as usize, sys.gic.lr_encode(&e));
                            count_injected_on(here);
                            sys.gic.set_virtual_interface(g.has_pending(v));
                        }
                        None => {
                            g.raise(v, id, &mut Hw { p });
                            flush_locked(&mut g, v);
                            here.take_flush();
                        }
                    }
                }
                // A timer left armed by a vCPU that is gone: its line
                // would fire again at once.
                None => {
                    arch::disarm_guest_timers();
                    sys.gic.deactivate(id);
                }
            },
            // The bound on held rpmsg messages: disarmed (its level
            // drops) before it is deactivated.
            HOLD_TIMER => {
                arch::disarm_hold_timer();
                sys.gic.deactivate(id);
                if let Some((p, _)) = here.guest() {
                    crate::rpmsg::release(p, crate::rpmsg::Release::Timer);
                }
            }
            spi if Some(spi) == sys.console_spi => {
                crate::console::interrupt();
                sys.gic.deactivate(spi);
            }
            spi if spi >= vgic::SPI_BASE => match sys.spi_owner(spi) {
                Some(p) => {
                    let p = &sys.partitions[p];
                    p.vgic.lock().raise(0, spi, &mut Hw { p });
                }
                None => {
                    debug!("physical SPI {spi} belongs to no partition");
                    sys.gic.deactivate(id);
                }
            },
            other => {
                debug!("unexpected physical interrupt {other}");
                sys.gic.deactivate(if other < 16 { iar } else { other });
            }
        }
    }
    flush_if_needed(here);
}

/// The kick SGI (`iar`, its acknowledge value), taken from a guest: the
/// vectors send it here rather than to `handle_physical`, whose dispatch
/// and registers an SGI to another CPU's vCPU paid for on its receiving
/// side.
pub fn kick_taken(iar: u32) {
    let sys = system();
    let here = cpu::this();
    sys.gic.complete(iar);
    kicked(sys, here);
    flush_if_needed(here);
}

/// What the kick asks, once it is deactivated: a posted SGI to load, the
/// vCPU to leave (`STOP`), a pump to resume (`RESUME`). Whoever made
/// something pending for the vCPU here asked for the flush before kicking
/// (`Hw::notify`); the caller does it.
#[inline(always)]
fn kicked(sys: &crate::System, here: &'static cpu::PerCpu) {
    sys.gic.after_sgi_acknowledge();
    match here.take_posted() {
        0 => {}
        v => load_posted(&sys.gic, here, v),
    }
    let requests = here.take_requests();
    if requests & cpu::STOP != 0 {
        if let Some((p, v)) = here.guest() {
            let leaving = p.life.lock().leave(v);
            if let Some(kick) = leaving {
                crate::life::leave(p, kick);
            }
        }
    }
    if requests & cpu::RESUME != 0 {
        crate::rpmsg::resume();
    }
}

/// The list registers ran low with interrupts still waiting, or the guest
/// EOId entries that asked for a maintenance interrupt: level-sensitive
/// emulated interrupts (sampled again) and, on GICv2, hardware-backed ones
/// (deactivated here; see `vgic::lr::encode_v2`). Free those list
/// registers and refill, now, since the maintenance interrupt stays
/// asserted until its condition is gone.
fn maintenance() {
    let gic = &system().gic;
    let Some((p, v)) = cpu::this().running() else {
        gic.set_virtual_interface(false);
        return;
    };
    let p = &system().partitions[p];
    let mut done = gic.eoi_lrs() & gic.lr_mask();
    if done != 0 {
        let g = p.vgic.lock();
        while done != 0 {
            let i = done.trailing_zeros() as usize;
            done &= done - 1;
            let intid = gic.lr_intid(gic.read_lr(i));
            // Emptied first: a deactivated interrupt still pending comes
            // back at once and wants a free list register.
            gic.write_lr(i, 0);
            if g.hw_backed(v, intid) {
                gic.deactivate(intid);
            }
        }
    }
    p.resample_console();
    flush(p, v);
}

/// A trapped access to the partition's distributor or redistributors.
/// Returns false when the address is not one of them.
pub fn emulate(frame: &mut CallFrame, p: &Partition, vcpu: usize, a: MmioAccess) -> bool {
    let (gicd, gicr) = (p.gic_dist, p.gic_redist);
    let dist = (gicd..gicd + 0x10000).contains(&a.ipa);
    if !dist && (gicr == 0 || !(gicr..gicr + 0x20000 * p.pcpus.len() as u64).contains(&a.ipa)) {
        return false;
    }
    let write = a.write().then(|| a.store_value(frame.access_reg(a.reg())));
    let mut g = p.vgic.lock();
    let r = if dist {
        g.dist_access(vcpu, a.ipa - gicd, a.width(), write, &mut Hw { p })
    } else {
        let off = a.ipa - gicr;
        let frame = (off / 0x20000) as usize;
        g.redist_access(frame, off % 0x20000, a.width(), write, &mut Hw { p })
    };
    if a.write() {
        // A timer's or an SGI's enable, priority or group may have changed.
        for v in 0..p.pcpus.len() {
            publish_direct(p, &g, v);
        }
    }
    drop(g);
    let v = r.unwrap_or_else(|vgic::Unhandled| {
        crate::console::guest_note!(
            p,
            "{}: vcpu {vcpu} {} unemulated GIC register at {:#x}",
            p.name,
            if a.write() { "wrote" } else { "read" },
            a.ipa
        );
        0
    });
    if !a.write() {
        frame.set_access_reg(a.reg(), a.load_result(v));
    }
    true
}

/// GICv2 (no redistributors): a write of GICD_SGIR, which takes the same
/// path as GICv3's ICC_SGI1R_EL1, with its direct one for an SGI to
/// itself. Looked for before any other device: it is the one distributor
/// register written at run time. False for any other access.
pub fn sgir_write(frame: &CallFrame, p: &Partition, vcpu: usize, a: MmioAccess) -> bool {
    if !a.write() || p.gic_redist != 0 || a.ipa != p.gic_dist + vgic::GICD_SGIR {
        return false;
    }
    sgir(p, vcpu, a.store_value(frame.access_reg(a.reg())));
    true
}

/// ICC_SGI1R_EL1 written by a GICv3 guest: SGIs to its own vCPUs only.
pub fn sgi1r(p: &Partition, vcpu: usize, v: u64) {
    let intid = ((v >> 24) & 0xf) as u32;
    let targets = if v & (1 << 40) != 0 {
        ((1u32 << p.pcpus.len()) - 1) & !(1 << vcpu)
    } else if v & (0xff << 48 | 0xff << 32 | 0xff << 16 | 0xf << 44) != 0 {
        0 // affinities above Aff0 name no vCPU of ours
    } else {
        (v & 0xffff) as u32
    };
    send_sgi(p, vcpu, targets, intid);
}

/// GICD_SGIR written by a GICv2 guest. Kept out of `guest_sync` (into
/// which `sgir_write` is inlined), whose size decides whether the GICv3
/// SGI path is inlined into it.
#[inline(never)]
pub fn sgir(p: &Partition, vcpu: usize, v: u64) {
    let (targets, intid) = vgic::sgir_targets(v, vcpu, p.pcpus.len());
    send_sgi(p, vcpu, targets, intid);
}

/// SGI `intid` from `vcpu` to the vCPUs in `targets` (a bitmap), inlined
/// into each of the two above.
#[inline(always)]
fn send_sgi(p: &Partition, vcpu: usize, targets: u32, intid: u32) {
    let mut g = p.vgic.lock();
    // An SGI to itself with nothing else waiting goes straight into a list
    // register, as the timer does.
    if targets == 1 << vcpu {
        if let Some(e) = g.direct_sgi(vcpu, intid) {
            if load_direct(&system().gic, cpu::this(), &e) {
                return;
            }
        }
    }
    // To one other vCPU, running, with nothing else waiting for it: its
    // list-register entry goes to that CPU with the kick.
    if targets.is_power_of_two() && post_sgi(p, &mut g, vcpu, targets.trailing_zeros(), intid) {
        return;
    }
    send_sgi_queued(p, g, vcpu, targets, intid);
}

/// The rest of `send_sgi`: through the pending sets. Out of line, so that
/// the direct paths do not pay for the registers this part needs.
#[inline(never)]
fn send_sgi_queued(p: &Partition, mut g: MutexGuard<Vgic>, vcpu: usize, targets: u32, intid: u32) {
    g.send_sgi(vcpu, targets, intid, &mut Hw { p });
    if targets & (1 << vcpu) != 0 && cpu::this().take_flush() {
        flush_locked(&mut g, vcpu);
    }
}

/// SGI `intid` from `from` to vCPU `to` of `p` (another one, running on
/// its CPU; the vGIC's lock held): if it can go straight into a list
/// register there (`Vgic::direct_sgi_from`), it is posted (`post_to`).
/// False when it cannot (the vCPU is not running, the SGI is disabled,
/// others wait for the vCPU, or an earlier post is not loaded yet). Out
/// of line, as `sgir` is, for the size of `guest_sync`.
#[inline(never)]
fn post_sgi(p: &Partition, g: &mut Vgic, from: usize, to: u32, intid: u32) -> bool {
    let to = to as usize;
    if to == from {
        return false;
    }
    // Checked before the entry is made: `direct_sgi_from` records the
    // source for a queued copy.
    let Some(pcpu) = running(p, to) else {
        return false;
    };
    let Some(e) = g.direct_sgi_from(from, to, intid) else {
        return false;
    };
    post_to(&system().gic, pcpu, &e)
}

/// Emulated SPI `intid` of `p` raised (the vGIC's lock held; an rpmsg
/// device's): posted to its target vCPU as `post_sgi` posts an SGI, when
/// `Vgic::direct_spi` allows and that vCPU runs on another CPU. False to
/// raise it through the pending set. `gic` is the system's, which the
/// caller has at hand.
pub fn post_spi(gic: &arch::gic::Gic, p: &Partition, g: &mut Vgic, intid: u32) -> bool {
    let Some((to, e)) = g.direct_spi(intid) else {
        return false;
    };
    match running(p, to) {
        Some(pcpu) => pcpu != arch::cpu_index() && post_to(gic, pcpu, &e),
        None => false,
    }
}

/// The CPU of vCPU `to` of `p`, if it runs there.
#[inline(always)]
fn running(p: &Partition, to: usize) -> Option<usize> {
    let &pcpu = p.pcpus.get(to)?;
    let (q, v) = cpu::get(pcpu).guest()?;
    (core::ptr::eq(q, p) && v == to).then_some(pcpu)
}

/// Posts entry `e` in the slot of CPU `pcpu`, which runs the vCPU it is
/// for, and kicks it; its handler loads it (`load_posted`) without the
/// vGIC's lock, the pending set or the flush. The caller holds the vGIC's
/// lock from its look at that CPU (`running`) to here: a vCPU leaves
/// under it too (`leave_cpu`), taking back what was posted. False while
/// an earlier post is not loaded yet.
#[inline(always)]
fn post_to(gic: &arch::gic::Gic, pcpu: usize, e: &vgic::LrEntry) -> bool {
    let target = cpu::get(pcpu);
    if !target.post(gic.lr_encode(e)) {
        return false;
    }
    target.kick(gic);
    true
}

/// The vCPU running here (`vcpu` of `p`) leaves this CPU. Under its
/// vGIC's lock, which every poster holds (`post_to`): an SGI or SPI
/// posted for it and not yet loaded is not lost, but pending in the vGIC,
/// as the pending set would have kept it.
pub fn leave_cpu(p: &Partition, here: &cpu::PerCpu) {
    let mut g = p.vgic.lock();
    let vcpu = here.guest().map(|(_, v)| v);
    here.set_running(None);
    let posted = here.take_posted();
    if let (Some(vcpu), true) = (vcpu, posted != 0) {
        g.raise(vcpu, system().gic.lr_intid(posted), &mut Hw { p });
    }
}

/// Loads list-register value `v`, which another CPU posted for the vCPU
/// running here (`post_sgi`), into the entry that already holds its
/// INTID or a free one; with none free it joins the pending set instead.
/// A value posted for a vCPU that has since left is dropped with it. Out
/// of line: inlined into the interrupt handler, it cost the timer's
/// direct path 6 instructions.
#[inline(never)]
fn load_posted(gic: &arch::gic::Gic, here: &cpu::PerCpu, v: u64) {
    let Some((p, vcpu)) = here.guest() else {
        return;
    };
    let intid = gic.lr_intid(v);
    let free = gic.empty_lrs() & gic.lr_mask();
    match held(gic, !free & gic.lr_mask(), intid) {
        Some((i, old)) => gic.write_lr(
            i,
            gic.lr_with_state(old, gic.lr_state(old) | vgic::lr::PENDING),
        ),
        None if free != 0 => gic.write_lr(free.trailing_zeros() as usize, v),
        None => {
            p.vgic.lock().raise(vcpu, intid, &mut Hw { p });
            return;
        }
    }
    count_injected_on(here);
    // Its underflow interrupt is left as it was: whatever else waits was
    // made pending with a flush request, and that flush sets it.
    gic.refresh_virtual_interface();
}

/// Puts `e` into a list register of this CPU (the vGIC's lock held), or
/// gives it to an entry of the same INTID already there, unless none is
/// free. Turns the virtual interface on with no underflow interrupt: only
/// callers that found nothing else waiting come here. Inlined: a call
/// here cost the GICv3 self-SGI 31 instructions.
#[inline(always)]
fn load_direct(gic: &arch::gic::Gic, here: &cpu::PerCpu, e: &vgic::LrEntry) -> bool {
    let free = gic.empty_lrs() & gic.lr_mask();
    match held(gic, !free & gic.lr_mask(), e.intid) {
        Some((i, v)) => gic.write_lr(i, gic.lr_with_state(v, gic.lr_state(v) | vgic::lr::PENDING)),
        None if free != 0 => gic.write_lr(free.trailing_zeros() as usize, gic.lr_encode(e)),
        None => return false,
    }
    count_injected_on(here);
    // Written after the list register, as `flush` does: without it QEMU
    // did not always signal the virtual interrupt (a regression test hung).
    gic.set_virtual_interface(false);
    true
}

/// Publishes, for the vectors' direct paths (`entry.S`), what they need
/// of vCPU `vcpu` if it runs on its CPU: the list-register values of its
/// timers and of each SGI it may send itself, as `g` (the partition's
/// vGIC, locked) now configures them, how it names itself in an SGI, and
/// (GICv2) where its GICD_SGIR is. Every change to that configuration is
/// a guest's write to the vGIC's registers, which publishes after it; a
/// vCPU's entry publishes before it runs.
/// Under the lock, a vCPU entering after a write sees its result, and one
/// that entered before is published by it.
pub fn publish_direct(p: &Partition, g: &Vgic, vcpu: usize) {
    let c = cpu::get(p.pcpus[vcpu]);
    if c.running() != Some((p.index, vcpu)) {
        return;
    }
    let gic = &system().gic;
    for ppi in [VTIMER, PTIMER] {
        c.set_direct(
            ppi,
            g.direct_entry(vcpu, ppi).map_or(0, |e| gic.lr_encode(&e)),
        );
    }
    c.set_sgir((p.gic_redist == 0).then_some(p.gic_dist + vgic::GICD_SGIR));
    // ICC_SGI1R_EL1 names vCPUs 0..15 by Aff0 in its target list;
    // GICD_SGIR names 0..7 in bits 16..23.
    let me = match p.gic_redist {
        0 => (vcpu < 8).then_some(1u64 << (16 + vcpu)),
        _ => (vcpu < 16).then_some(1u64 << vcpu),
    };
    c.set_self_sgis(me, |intid| {
        g.self_sgi_entry(vcpu, intid)
            .map_or(0, |e| gic.lr_encode(&e))
    });
}

pub fn new_vgic(p_vcpus: usize, version: vgic::Version, lines: u32) -> Vgic {
    let mut g = Vgic::new(version, p_vcpus, lines);
    g.own_hw_ppi(VTIMER);
    g.own_hw_ppi(PTIMER);
    g
}
