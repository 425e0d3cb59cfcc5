//! The life of a partition: one state machine per partition, the only
//! owner of its transitions. Guest PSCI calls, faults and a controlling
//! partition's requests all come here and get back what to do; the EL2
//! binary carries that out.
//!
//! ```text
//!   Stopped ──start──▶ Loading ──loaded──▶ Running ──stop / SYSTEM_OFF──▶ Stopping
//!      ▲  ▲               ▲                   │                          │
//!      │  └─ stop ─ Crashed ◀─── fault ───────┼───────── finished ───────┤
//!      └──────────────────────────────────────┴───────── finished ───────┘
//!                         └───────────── SYSTEM_RESET: finished ─────────┘
//! ```
//!
//! Stopping is a handshake that never makes a CPU wait for another: the
//! vCPUs still on are asked (by a kick) to leave, each leaves from its own
//! CPU, and when the last one has left, the partition's home CPU (the one of
//! vCPU 0) cleans up and, for a restart, loads and starts the partition
//! again. Requests that race resolve to one transition here, under the
//! partition's lock.

use crate::psci::{self, Action as PsciAction, Call, Power, PowerStates, PsciError};

/// A partition's state, as the control interface reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Stopped = 0,
    Loading = 1,
    Running = 2,
    Stopping = 3,
    Crashed = 4,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Loading => "loading",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Crashed => "crashed",
        }
    }

    /// No vCPU runs and none will without a start request.
    pub fn ended(self) -> bool {
        matches!(self, State::Stopped | State::Crashed)
    }
}

/// What a stop ends in. When several causes race, the later in this order
/// wins: a controller's stop overrides a reset, a fault overrides both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    Restart,
    Off,
    Crash,
}

/// Who is loading the partition's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// Its home CPU, from its image, to start it.
    Home,
    /// A controller, with an ELF from its own memory; the partition stays
    /// stopped afterwards.
    Controller,
}

/// The image a start loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// The kernel (and initrd) of the boot package.
    Package,
    /// An ELF a controller loaded, entered at `entry`; only the device tree
    /// is written again at start.
    Loaded { entry: u64 },
}

/// What a CPU parked for this partition should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Nothing,
    /// Home only: every vCPU has left; clean up, then call `finished`.
    Finish,
    /// Home only: load `image`, then call `loaded`.
    Load(Image),
    /// Run the vCPU from `entry` with x0 = `context`.
    Enter {
        entry: u64,
        context: u64,
    },
}

/// A control request refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not in a state that allows it (start a running partition, ...).
    WrongState(State),
}

/// What a guest's PSCI call asks of the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Psci {
    /// Put this in x0 and return to the guest.
    Return(u64),
    /// Return SUCCESS and kick the CPU of `vcpu`, which will start it.
    Start { vcpu: usize },
    /// The calling vCPU leaves its CPU; kick the vCPUs in `kick` (a
    /// mask; bit 0 may mean "home: finish").
    Leave { kick: u32 },
    /// CPU_SUSPEND: return SUCCESS once the calling vCPU has an interrupt
    /// to take.
    Suspend,
}

#[derive(Clone, Debug)]
pub struct Lifecycle {
    state: State,
    end: End,
    loader: Loader,
    image: Image,
    power: PowerStates,
    /// Entry and x0 of each vCPU whose start is pending.
    starts: [(u64, u64); psci::MAX_VCPUS],
    /// Home has taken the Finish or Load work of this transition.
    claimed: bool,
    /// Starts after the first.
    pub restarts: u32,
    /// Counter value at the last start.
    pub started_at: u64,
}

impl Lifecycle {
    /// A partition of `vcpus` vCPUs, stopped, with its boot-package image.
    pub fn new(vcpus: usize) -> Self {
        Lifecycle {
            state: State::Stopped,
            end: End::Off,
            loader: Loader::Home,
            image: Image::Package,
            power: PowerStates::new(vcpus),
            starts: [(0, 0); psci::MAX_VCPUS],
            claimed: false,
            restarts: 0,
            started_at: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn power(&self) -> &PowerStates {
        &self.power
    }

    /// The cause a Stopping ends in.
    pub fn end(&self) -> End {
        self.end
    }

    fn on_mask(&self) -> u32 {
        (0..self.power.count())
            .filter(|&v| self.power.get(v) == Power::On)
            .fold(0, |m, v| m | 1 << v)
    }

    /// Home must be kicked to finish: every vCPU has left a Stopping
    /// partition and home has not taken the work yet.
    fn home_if_down(&self) -> u32 {
        u32::from(self.state == State::Stopping && self.power.all_off() && !self.claimed)
    }

    /// A controller's start: from Stopped or Crashed to Loading. The caller
    /// kicks home, which loads and starts vCPU 0.
    pub fn start(&mut self) -> Result<(), Refusal> {
        if !self.state.ended() {
            return Err(Refusal::WrongState(self.state));
        }
        self.state = State::Loading;
        self.loader = Loader::Home;
        self.claimed = false;
        Ok(())
    }

    /// A controller's stop. Returns the vCPUs to kick (their CPUs leave
    /// the guest). A crashed partition is only marked stopped.
    pub fn stop(&mut self) -> Result<u32, Refusal> {
        match self.state {
            State::Crashed => {
                self.state = State::Stopped;
                Ok(0)
            }
            State::Running | State::Stopping => Ok(self.begin_stop(End::Off, None)),
            s => Err(Refusal::WrongState(s)),
        }
    }

    /// A fault of `vcpu`: the partition stops and reads Crashed.
    pub fn fault(&mut self, vcpu: usize) -> u32 {
        self.begin_stop(End::Crash, Some(vcpu))
    }

    /// Moves a running partition to Stopping (or strengthens the cause of
    /// one already stopping). `by` is the vCPU that asked, which leaves at
    /// once. Returns the vCPUs to kick.
    fn begin_stop(&mut self, end: End, by: Option<usize>) -> u32 {
        match self.state {
            State::Running => {
                self.state = State::Stopping;
                self.end = end;
                self.claimed = false;
                // Starts not yet taken never happen.
                for v in 0..self.power.count() {
                    if self.power.get(v) == Power::OnPending {
                        self.power.set(v, Power::Off);
                    }
                }
            }
            State::Stopping => self.end = self.end.max(end),
            _ => return 0,
        }
        if let Some(v) = by {
            self.power.set(v, Power::Off);
        }
        let others = self.on_mask();
        // Home finishes; the leaving vCPU 0 finds that work itself.
        others | (self.home_if_down() & !u32::from(by == Some(0)))
    }

    /// A kicked vCPU asks whether it must leave; if so it has left.
    /// Returns whether it must, and whom to kick (home, when it was the
    /// last to leave).
    pub fn leave(&mut self, vcpu: usize) -> Option<u32> {
        if self.state != State::Stopping || self.power.get(vcpu) != Power::On {
            return None;
        }
        self.power.set(vcpu, Power::Off);
        Some(self.home_if_down() & !u32::from(vcpu == 0))
    }

    /// Answers a PSCI call of `vcpu`. `entry_ok` says whether an entry
    /// address lies in the partition's memory.
    pub fn psci(&mut self, vcpu: usize, call: Call, entry_ok: impl Fn(u64) -> bool) -> Psci {
        if self.state != State::Running {
            // Only a vCPU about to be asked to leave gets here.
            return match call {
                Call::CpuOff | Call::SystemOff | Call::SystemReset => {
                    self.power.set(vcpu, Power::Off);
                    Psci::Leave {
                        kick: self.home_if_down() & !u32::from(vcpu == 0),
                    }
                }
                Call::CpuOn { .. } => Psci::Return(PsciError::Denied.code()),
                _ => match self.power.handle(call, &entry_ok) {
                    PsciAction::Return(v) => Psci::Return(v),
                    _ => Psci::Return(PsciError::Denied.code()),
                },
            };
        }
        match self.power.handle(call, entry_ok) {
            PsciAction::Return(v) => Psci::Return(v),
            PsciAction::Suspend => Psci::Suspend,
            PsciAction::Start {
                vcpu: target,
                entry,
                context,
            } => {
                self.starts[target] = (entry, context);
                Psci::Start { vcpu: target }
            }
            PsciAction::Stop => {
                self.power.set(vcpu, Power::Off);
                if self.power.all_off() {
                    // Its last vCPU went off: the partition powered off.
                    Psci::Leave {
                        kick: self.begin_stop(End::Off, Some(vcpu)),
                    }
                } else {
                    Psci::Leave { kick: 0 }
                }
            }
            PsciAction::SystemOff => Psci::Leave {
                kick: self.begin_stop(End::Off, Some(vcpu)),
            },
            PsciAction::SystemReset => Psci::Leave {
                kick: self.begin_stop(End::Restart, Some(vcpu)),
            },
        }
    }

    /// What the CPU of `vcpu`, parked, does next.
    pub fn work(&mut self, vcpu: usize) -> Work {
        match self.state {
            State::Stopping if vcpu == 0 && self.power.all_off() && !self.claimed => {
                self.claimed = true;
                Work::Finish
            }
            State::Loading if vcpu == 0 && self.loader == Loader::Home && !self.claimed => {
                self.claimed = true;
                Work::Load(self.image)
            }
            State::Running if self.power.get(vcpu) == Power::OnPending => {
                self.power.set(vcpu, Power::On);
                let (entry, context) = self.starts[vcpu];
                Work::Enter { entry, context }
            }
            _ => Work::Nothing,
        }
    }

    /// Home has cleaned up after a stop. Returns the new state: Loading
    /// (a restart: home loads next), Stopped or Crashed.
    pub fn finished(&mut self) -> State {
        debug_assert_eq!(self.state, State::Stopping);
        self.claimed = false;
        self.state = match self.end {
            End::Restart => {
                self.loader = Loader::Home;
                State::Loading
            }
            End::Off => State::Stopped,
            End::Crash => State::Crashed,
        };
        self.state
    }

    /// Home has loaded the image: vCPU 0 starts at `entry` with x0 =
    /// `context` (the device tree), at counter `now`.
    pub fn loaded(&mut self, entry: u64, context: u64, now: u64) {
        debug_assert_eq!(self.state, State::Loading);
        if self.started_at != 0 {
            self.restarts += 1;
        }
        self.started_at = now.max(1);
        self.state = State::Running;
        self.claimed = false;
        self.starts[0] = (entry, context);
        self.power.set(0, Power::OnPending);
    }

    /// A controller begins loading an ELF: only into a partition that
    /// has ended.
    pub fn begin_load(&mut self) -> Result<(), Refusal> {
        if !self.state.ended() {
            return Err(Refusal::WrongState(self.state));
        }
        self.state = State::Loading;
        self.loader = Loader::Controller;
        Ok(())
    }

    /// The controller's load is over: the partition is stopped, and its
    /// next start enters the loaded image, or (after a failed load, which
    /// may have written part of its memory) reloads its boot package.
    pub fn end_load(&mut self, entry: Option<u64>) {
        debug_assert_eq!(self.state, State::Loading);
        self.state = State::Stopped;
        self.image = entry.map_or(Image::Package, |entry| Image::Loaded { entry });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psci::fid;

    fn running(vcpus: usize) -> Lifecycle {
        let mut l = Lifecycle::new(vcpus);
        l.start().unwrap();
        assert_eq!(l.work(0), Work::Load(Image::Package));
        assert_eq!(l.work(0), Work::Nothing, "home takes a load once");
        l.loaded(0x4000_0000, 0x4100_0000, 100);
        assert_eq!(
            l.work(0),
            Work::Enter {
                entry: 0x4000_0000,
                context: 0x4100_0000
            }
        );
        l
    }

    fn call(id: u32) -> Call {
        Call::decode([u64::from(id), 0, 0, 0]).unwrap()
    }

    fn cpu_on(l: &mut Lifecycle, v: usize) {
        let on = Call::CpuOn {
            target: v as u64,
            entry: 0x4000_1000,
            context: 7,
        };
        assert_eq!(l.psci(0, on, |_| true), Psci::Start { vcpu: v });
        assert_eq!(
            l.work(v),
            Work::Enter {
                entry: 0x4000_1000,
                context: 7
            }
        );
    }

    #[test]
    fn a_restart_goes_through_every_state_and_counts() {
        let mut l = running(1);
        assert_eq!(l.state(), State::Running);
        assert_eq!(
            l.psci(0, call(fid::SYSTEM_RESET), |_| true),
            Psci::Leave { kick: 0 }
        );
        assert_eq!(l.state(), State::Stopping);
        assert_eq!(l.work(0), Work::Finish);
        assert_eq!(l.finished(), State::Loading);
        assert_eq!(l.work(0), Work::Load(Image::Package));
        l.loaded(0x4000_0000, 0x4100_0000, 200);
        assert_eq!(
            (l.state(), l.restarts, l.started_at),
            (State::Running, 1, 200)
        );
    }

    #[test]
    fn two_vcpus_resetting_at_once_make_one_transition() {
        let mut l = running(2);
        cpu_on(&mut l, 1);
        // vCPU 1 calls first: vCPU 0 must be kicked.
        assert_eq!(
            l.psci(1, call(fid::SYSTEM_RESET), |_| true),
            Psci::Leave { kick: 0b01 }
        );
        // vCPU 0's own SYSTEM_RESET crosses the kick: it leaves, and as
        // the home it finds the finish itself.
        assert_eq!(
            l.psci(0, call(fid::SYSTEM_RESET), |_| true),
            Psci::Leave { kick: 0 }
        );
        // The kick then arrives at a vCPU that has already left.
        assert_eq!(l.leave(0), None);
        assert_eq!(l.work(1), Work::Nothing);
        assert_eq!(l.work(0), Work::Finish);
        assert_eq!(l.work(0), Work::Nothing);
        assert_eq!(l.finished(), State::Loading);
        assert_eq!(l.restarts, 0);
    }

    #[test]
    fn the_last_vcpu_to_leave_kicks_home() {
        let mut l = running(3);
        cpu_on(&mut l, 1);
        cpu_on(&mut l, 2);
        let kick = l.fault(2);
        assert_eq!(kick, 0b011);
        assert_eq!(l.leave(0), Some(0), "vCPU 1 is still on");
        assert_eq!(l.leave(1), Some(1), "the last one kicks home");
        assert_eq!(l.work(0), Work::Finish);
        assert_eq!(l.finished(), State::Crashed);
        assert!(l.state().ended());
    }

    #[test]
    fn pending_starts_die_with_the_instance() {
        let mut l = running(2);
        let on = Call::CpuOn {
            target: 1,
            entry: 0x4000_1000,
            context: 0,
        };
        assert_eq!(l.psci(0, on, |_| true), Psci::Start { vcpu: 1 });
        // The stop comes before vCPU 1's CPU took its start.
        assert_eq!(l.stop(), Ok(0b01));
        assert_eq!(l.work(1), Work::Nothing);
        assert_eq!(l.leave(0), Some(0));
        assert_eq!(l.work(0), Work::Finish);
        assert_eq!(l.finished(), State::Stopped);
        // CPU_ON while stopping is denied.
        let mut l = running(2);
        assert_eq!(l.stop(), Ok(1));
        assert_eq!(
            l.psci(0, on, |_| true),
            Psci::Return(PsciError::Denied.code())
        );
    }

    #[test]
    fn the_strongest_cause_wins() {
        let mut l = running(2);
        cpu_on(&mut l, 1);
        assert_eq!(
            l.psci(1, call(fid::SYSTEM_RESET), |_| true),
            Psci::Leave { kick: 1 }
        );
        assert_eq!(l.stop(), Ok(1), "vCPU 0 still has to leave");
        assert_eq!(l.end(), End::Off);
        assert_eq!(l.fault(0), 0, "vCPU 0 was home: it finds the finish");
        assert_eq!(l.end(), End::Crash);
        assert_eq!(l.work(0), Work::Finish);
        assert_eq!(l.finished(), State::Crashed);
    }

    #[test]
    fn cpu_off_of_the_last_vcpu_powers_the_partition_off() {
        let mut l = running(2);
        cpu_on(&mut l, 1);
        assert_eq!(
            l.psci(1, call(fid::CPU_OFF), |_| true),
            Psci::Leave { kick: 0 }
        );
        assert_eq!(l.state(), State::Running);
        // Started again, it runs.
        cpu_on(&mut l, 1);
        assert_eq!(
            l.psci(0, call(fid::CPU_OFF), |_| true),
            Psci::Leave { kick: 0 }
        );
        assert_eq!(
            l.psci(1, call(fid::CPU_OFF), |_| true),
            Psci::Leave { kick: 1 }
        );
        assert_eq!(l.state(), State::Stopping);
        assert_eq!(l.work(0), Work::Finish);
        assert_eq!(l.finished(), State::Stopped);
    }

    #[test]
    fn control_requests_need_the_right_state() {
        let mut l = Lifecycle::new(1);
        assert_eq!(l.stop(), Err(Refusal::WrongState(State::Stopped)));
        let mut l = running(1);
        assert_eq!(l.start(), Err(Refusal::WrongState(State::Running)));
        assert_eq!(l.begin_load(), Err(Refusal::WrongState(State::Running)));
        assert_eq!(l.stop(), Ok(1));
        assert_eq!(l.stop(), Ok(1), "a second stop changes nothing");
        assert_eq!(l.start(), Err(Refusal::WrongState(State::Stopping)));
        assert_eq!(l.leave(0), Some(0));
        assert_eq!(l.work(0), Work::Finish);
        l.finished();
        // Load an ELF, start it; a failed load falls back to the package.
        assert_eq!(l.begin_load(), Ok(()));
        assert_eq!(l.start(), Err(Refusal::WrongState(State::Loading)));
        assert_eq!(
            l.work(0),
            Work::Nothing,
            "home does not load for a controller"
        );
        l.end_load(Some(0x4000_0040));
        l.start().unwrap();
        assert_eq!(l.work(0), Work::Load(Image::Loaded { entry: 0x4000_0040 }));
        l.loaded(0x4000_0040, 0x4100_0000, 5);
        assert_eq!(l.stop(), Ok(1));
        l.leave(0);
        l.work(0);
        l.finished();
        l.begin_load().unwrap();
        l.end_load(None);
        l.start().unwrap();
        assert_eq!(l.work(0), Work::Load(Image::Package));
    }

    #[test]
    fn a_crashed_partition_is_stopped_or_started() {
        let mut l = running(1);
        assert_eq!(l.fault(0), 0);
        l.work(0);
        assert_eq!(l.finished(), State::Crashed);
        assert_eq!(l.stop(), Ok(0));
        assert_eq!(l.state(), State::Stopped);
        l.start().unwrap();
        assert_eq!(l.state(), State::Loading);
    }

    /// Every order in which two vCPUs, a controller and the kicks can act
    /// ends in one finish by home, with no vCPU left on.
    #[test]
    fn every_interleaving_of_racing_stops_finishes_once() {
        #[derive(Clone, Copy, Debug)]
        enum Ev {
            Reset(usize),
            Off(usize),
            Fault(usize),
            CtrlStop,
            Kick(usize),
        }
        let evs = [
            Ev::Reset(0),
            Ev::Off(1),
            Ev::Fault(1),
            Ev::CtrlStop,
            Ev::Kick(0),
            Ev::Kick(1),
        ];
        // All sequences of 4 events (with repetition).
        for n in 0..evs.len().pow(4) {
            let mut l = running(2);
            cpu_on(&mut l, 1);
            let mut left = [false; 2];
            let mut seq = n;
            for _ in 0..4 {
                let e = evs[seq % evs.len()];
                seq /= evs.len();
                let _ = match e {
                    Ev::Reset(v) | Ev::Off(v) | Ev::Fault(v) if left[v] => continue,
                    Ev::Reset(v) => l.psci(v, call(fid::SYSTEM_RESET), |_| true) != Psci::Return(0),
                    Ev::Off(v) => l.psci(v, call(fid::CPU_OFF), |_| true) != Psci::Return(0),
                    Ev::Fault(v) => {
                        l.fault(v);
                        true
                    }
                    Ev::CtrlStop => l.stop().is_ok(),
                    Ev::Kick(v) => l.leave(v).is_some(),
                };
                if let Ev::Reset(v) | Ev::Off(v) | Ev::Fault(v) | Ev::Kick(v) = e {
                    left[v] |= l.power().get(v) == Power::Off;
                }
            }
            // Whatever has not left is kicked now.
            if l.state() == State::Stopping {
                for v in 0..2 {
                    l.leave(v);
                }
                assert_eq!(l.work(0), Work::Finish, "events {n}");
                assert_eq!(l.work(0), Work::Nothing);
                assert!(l.power().all_off());
                let s = l.finished();
                assert!(matches!(
                    s,
                    State::Loading | State::Stopped | State::Crashed
                ));
            } else {
                assert_eq!(l.work(0), Work::Nothing);
            }
        }
    }
}
