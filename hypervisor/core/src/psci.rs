//! PSCI 1.1 as a partition sees it, and the per-vCPU power state behind it.
//!
//! A guest's calls are answered in terms of its own vCPUs: it can start,
//! stop, suspend and query only those, and SYSTEM_OFF/SYSTEM_RESET end or
//! restart its own partition. Nothing here touches hardware; the caller
//! carries out the returned [`Action`].
//!
//! PSCI 1.1 (DEN0022D) makes VERSION, CPU_SUSPEND, CPU_OFF, CPU_ON,
//! AFFINITY_INFO, SYSTEM_OFF, SYSTEM_RESET and FEATURES mandatory; all are
//! here, with MIGRATE_INFO_TYPE. Its additions (SYSTEM_RESET2, MEM_PROTECT,
//! MEM_PROTECT_CHECK_RANGE) are optional and not offered. CPU_SUSPEND takes
//! the original power_state format in platform-coordinated mode (FEATURES
//! says so with 0) and treats every state as standby, which the
//! specification allows for a power-down request: the call returns SUCCESS
//! once the vCPU has an interrupt to take, never at the entry point.

/// PSCI return codes (DEN0022, table 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum PsciError {
    NotSupported = -1,
    InvalidParameters = -2,
    Denied = -3,
    AlreadyOn = -4,
    OnPending = -5,
    InternalFailure = -6,
    InvalidAddress = -9,
}

impl PsciError {
    /// The value placed in x0.
    pub fn code(self) -> u64 {
        self as i32 as i64 as u64
    }
}

/// The version we implement: 1.1.
pub const VERSION: u64 = 0x1_0001;

pub mod fid {
    pub const VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND: u32 = 0x8400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON: u32 = 0x8400_0003;
    pub const AFFINITY_INFO: u32 = 0x8400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const FEATURES: u32 = 0x8400_000a;
    /// The SMC64 variants differ by bit 30.
    pub const SMC64: u32 = 0x4000_0000;
}

/// A call, decoded from x0..x3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Version,
    Features(u32),
    CpuSuspend {
        power_state: u32,
        entry: u64,
        context: u64,
    },
    CpuOn {
        target: u64,
        entry: u64,
        context: u64,
    },
    CpuOff,
    AffinityInfo {
        target: u64,
        level: u64,
    },
    MigrateInfoType,
    SystemOff,
    SystemReset,
}

impl Call {
    /// Decodes a PSCI call; `None` for any function ID that is not one of ours.
    pub fn decode(x: [u64; 4]) -> Option<Call> {
        let id = x[0] as u32;
        // SMC32 calls carry 32-bit arguments; the upper halves are undefined.
        let arg = |i: usize| {
            if id & fid::SMC64 != 0 {
                x[i]
            } else {
                x[i] & 0xffff_ffff
            }
        };
        if x[0] >> 32 != 0 {
            return None;
        }
        Some(match id {
            fid::VERSION => Call::Version,
            fid::FEATURES => Call::Features(x[1] as u32),
            fid::CPU_OFF => Call::CpuOff,
            fid::MIGRATE_INFO_TYPE => Call::MigrateInfoType,
            fid::SYSTEM_OFF => Call::SystemOff,
            fid::SYSTEM_RESET => Call::SystemReset,
            i if i & !fid::SMC64 == fid::CPU_SUSPEND => Call::CpuSuspend {
                power_state: x[1] as u32,
                entry: arg(2),
                context: arg(3),
            },
            i if i & !fid::SMC64 == fid::CPU_ON => Call::CpuOn {
                target: arg(1),
                entry: arg(2),
                context: arg(3),
            },
            i if i & !fid::SMC64 == fid::AFFINITY_INFO => Call::AffinityInfo {
                target: arg(1),
                level: arg(2),
            },
            _ => return None,
        })
    }
}

/// SMCCC_VERSION (SMCCC 1.1 and later; DEN0028).
pub const SMCCC_VERSION: u32 = 0x8000_0000;

/// The answer to a call whose answer depends on nothing but its
/// arguments: VERSION, FEATURES, MIGRATE_INFO_TYPE, and SMCCC_VERSION,
/// which we leave NOT_SUPPORTED (SMCCC 1.0, which has no SMCCC_VERSION:
/// 1.1 would have guests ask for firmware workarounds we do not offer).
/// These are the queries a guest may make often (Linux asks FEATURES of
/// each call it might use), and answered here they take no lock and
/// read no partition; `None` for every other call, which goes the whole
/// way (`PowerStates::handle` gives these the same answers).
pub fn stateless(x0: u64, x1: u64) -> Option<u64> {
    if x0 >> 32 != 0 {
        return None;
    }
    match x0 as u32 {
        fid::VERSION => Some(VERSION),
        fid::FEATURES => Some(features(x1 as u32)),
        // 2: no Trusted OS that would need migrating.
        fid::MIGRATE_INFO_TYPE => Some(2),
        SMCCC_VERSION => Some(PsciError::NotSupported.code()),
        _ => None,
    }
}

fn features(id: u32) -> u64 {
    if implemented(id) {
        0
    } else {
        PsciError::NotSupported.code()
    }
}

/// Whether PSCI_FEATURES reports `id` as implemented.
pub fn implemented(id: u32) -> bool {
    matches!(
        id,
        fid::VERSION
            | fid::FEATURES
            | fid::CPU_SUSPEND
            | fid::CPU_OFF
            | fid::MIGRATE_INFO_TYPE
            | fid::SYSTEM_OFF
            | fid::SYSTEM_RESET
            | fid::CPU_ON
            | fid::AFFINITY_INFO
    ) || matches!(id, 0xc400_0001 | 0xc400_0003 | 0xc400_0004)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Off,
    /// CPU_ON accepted; the target's physical CPU has not entered it yet.
    OnPending,
    On,
}

/// What the caller must do after a call was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put this value in x0 and return to the guest.
    Return(u64),
    /// Return SUCCESS to the caller and start `vcpu` at `entry` with x0 = `context`.
    Start {
        vcpu: usize,
        entry: u64,
        context: u64,
    },
    /// Stop the calling vCPU.
    Stop,
    /// Return SUCCESS once the calling vCPU has an interrupt to take.
    Suspend,
    SystemOff,
    SystemReset,
}

/// The virtual MPIDR of vCPU `index`: Aff0 = index, with the RES1 bit 31 set.
/// Partitions have at most 16 vCPUs, the most one GICv3 SGI target list names.
pub fn vmpidr(index: usize) -> u64 {
    (1 << 31) | index as u64
}

pub const MAX_VCPUS: usize = 16;

/// The power state of a partition's vCPUs.
#[derive(Clone, Debug)]
pub struct PowerStates {
    states: [Power; MAX_VCPUS],
    count: usize,
}

impl PowerStates {
    /// All `count` vCPUs off; `count` is at most [`MAX_VCPUS`] (the SDT
    /// reader refuses more).
    pub fn new(count: usize) -> Self {
        assert!(count <= MAX_VCPUS);
        PowerStates {
            states: [Power::Off; MAX_VCPUS],
            count,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn get(&self, vcpu: usize) -> Power {
        self.states[vcpu]
    }

    pub fn set(&mut self, vcpu: usize, p: Power) {
        self.states[vcpu] = p;
    }

    pub fn all_off(&self) -> bool {
        self.states[..self.count].iter().all(|p| *p == Power::Off)
    }

    fn vcpu_of(&self, mpidr: u64) -> Option<usize> {
        // Only Aff0 may be non-zero; bit 31 and the MT/U bits are ignored.
        let aff = mpidr & 0xff_00ff_ffff;
        let idx = (aff & 0xff) as usize;
        (aff >> 8 == 0 && idx < self.count).then_some(idx)
    }

    /// Answers `call` made by `caller`. `entry_ok` says whether an entry
    /// address lies in the partition's memory.
    pub fn handle(&mut self, call: Call, entry_ok: impl Fn(u64) -> bool) -> Action {
        match call {
            Call::Version => Action::Return(VERSION),
            Call::Features(id) => Action::Return(features(id)),
            Call::MigrateInfoType => Action::Return(2),
            Call::CpuSuspend {
                power_state, entry, ..
            } => {
                // Original format: bits 17-23 and 26-31 are reserved.
                if power_state & 0xfcfe_0000 != 0 {
                    Action::Return(PsciError::InvalidParameters.code())
                } else if power_state & (1 << 16) != 0 && !entry_ok(entry) {
                    // A power-down state names where it would resume.
                    Action::Return(PsciError::InvalidAddress.code())
                } else {
                    Action::Suspend
                }
            }
            Call::CpuOn {
                target,
                entry,
                context,
            } => {
                let Some(vcpu) = self.vcpu_of(target) else {
                    return Action::Return(PsciError::InvalidParameters.code());
                };
                match self.states[vcpu] {
                    Power::On => Action::Return(PsciError::AlreadyOn.code()),
                    Power::OnPending => Action::Return(PsciError::OnPending.code()),
                    Power::Off if !entry_ok(entry) => {
                        Action::Return(PsciError::InvalidAddress.code())
                    }
                    Power::Off => {
                        self.states[vcpu] = Power::OnPending;
                        Action::Start {
                            vcpu,
                            entry,
                            context,
                        }
                    }
                }
            }
            Call::AffinityInfo { target, level } => {
                if level != 0 {
                    return Action::Return(PsciError::InvalidParameters.code());
                }
                match self.vcpu_of(target) {
                    None => Action::Return(PsciError::InvalidParameters.code()),
                    Some(v) => Action::Return(match self.states[v] {
                        Power::On => 0,
                        Power::Off => 1,
                        Power::OnPending => 2,
                    }),
                }
            }
            Call::CpuOff => Action::Stop,
            Call::SystemOff => Action::SystemOff,
            Call::SystemReset => Action::SystemReset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(x0: u32, x1: u64, x2: u64, x3: u64) -> Call {
        Call::decode([x0 as u64, x1, x2, x3]).unwrap()
    }

    #[test]
    fn version_and_features() {
        let mut p = PowerStates::new(2);
        assert_eq!(
            p.handle(call(fid::VERSION, 0, 0, 0), |_| true),
            Action::Return(0x1_0001)
        );
        let f = |id| p.clone().handle(Call::Features(id), |_| true);
        assert_eq!(f(fid::CPU_ON | fid::SMC64), Action::Return(0));
        // Original power_state format, platform-coordinated: flags 0.
        assert_eq!(f(fid::CPU_SUSPEND), Action::Return(0));
        assert_eq!(f(fid::CPU_SUSPEND | fid::SMC64), Action::Return(0));
        assert_eq!(f(0x8000_0000), Action::Return(u64::MAX));
        // SYSTEM_RESET2 and MEM_PROTECT, optional in 1.1, are not offered.
        assert_eq!(f(0xc400_0012), Action::Return(u64::MAX));
        assert_eq!(f(0x8400_0013), Action::Return(u64::MAX));
    }

    #[test]
    fn stateless_queries_answer_as_the_power_states_do() {
        let mut p = PowerStates::new(2);
        for (x0, x1) in [
            (u64::from(fid::VERSION), 0),
            (u64::from(fid::MIGRATE_INFO_TYPE), 0),
            (
                u64::from(fid::FEATURES),
                u64::from(fid::CPU_ON | fid::SMC64),
            ),
            (u64::from(fid::FEATURES), u64::from(fid::CPU_SUSPEND)),
            (u64::from(fid::FEATURES), u64::from(SMCCC_VERSION)),
            (u64::from(fid::FEATURES), 0xc400_0012),
            // FEATURES reads only the low 32 bits of its argument.
            (u64::from(fid::FEATURES), 0xffff_ffff_8400_0000),
        ] {
            let Action::Return(v) = p.handle(call(x0 as u32, x1, 0, 0), |_| true) else {
                panic!("{x0:#x} is a query");
            };
            assert_eq!(stateless(x0, x1), Some(v), "{x0:#x}({x1:#x})");
        }
        assert_eq!(
            stateless(u64::from(SMCCC_VERSION), 0),
            Some(PsciError::NotSupported.code())
        );
        // Calls that change or read power states, and function IDs with
        // upper bits set, are not answered here.
        for x0 in [
            fid::CPU_ON,
            fid::CPU_ON | fid::SMC64,
            fid::CPU_OFF,
            fid::CPU_SUSPEND,
            fid::AFFINITY_INFO,
            fid::SYSTEM_OFF,
            fid::SYSTEM_RESET,
            0xc600_0000,
        ] {
            assert_eq!(stateless(u64::from(x0), 0), None, "{x0:#x}");
        }
        assert_eq!(stateless(1 << 32 | u64::from(fid::VERSION), 0), None);
        assert_eq!(
            Call::decode([1 << 32 | u64::from(fid::VERSION), 0, 0, 0]),
            None
        );
    }

    #[test]
    fn cpu_suspend_checks_its_state_and_entry_then_waits() {
        let mut p = PowerStates::new(1);
        let standby = call(fid::CPU_SUSPEND, 0x0000_0001, 0, 0);
        assert_eq!(p.handle(standby, |_| false), Action::Suspend);
        let down = call(fid::CPU_SUSPEND | fid::SMC64, 1 << 16, 0xdead, 0);
        assert_eq!(
            p.handle(down, |_| false),
            Action::Return(PsciError::InvalidAddress.code())
        );
        assert_eq!(p.handle(down, |_| true), Action::Suspend);
        let reserved = call(fid::CPU_SUSPEND, 1 << 20, 0, 0);
        assert_eq!(
            p.handle(reserved, |_| true),
            Action::Return(PsciError::InvalidParameters.code())
        );
    }

    #[test]
    fn cpu_on_walks_off_pending_on() {
        let mut p = PowerStates::new(2);
        p.set(0, Power::On);
        let on = call(fid::CPU_ON | fid::SMC64, vmpidr(1), 0x4008_0000, 7);
        assert_eq!(
            p.handle(on, |_| true),
            Action::Start {
                vcpu: 1,
                entry: 0x4008_0000,
                context: 7
            }
        );
        assert_eq!(
            p.handle(on, |_| true),
            Action::Return(PsciError::OnPending.code())
        );
        let info = call(fid::AFFINITY_INFO, 1, 0, 0);
        assert_eq!(p.handle(info, |_| true), Action::Return(2));
        p.set(1, Power::On);
        assert_eq!(
            p.handle(on, |_| true),
            Action::Return(PsciError::AlreadyOn.code())
        );
        assert_eq!(p.handle(info, |_| true), Action::Return(0));
    }

    #[test]
    fn cpu_on_refuses_foreign_cpus_and_addresses() {
        let mut p = PowerStates::new(2);
        let r = p.handle(
            Call::CpuOn {
                target: 2,
                entry: 0,
                context: 0,
            },
            |_| true,
        );
        assert_eq!(r, Action::Return(PsciError::InvalidParameters.code()));
        let r = p.handle(
            Call::CpuOn {
                target: 0x100,
                entry: 0,
                context: 0,
            },
            |_| true,
        );
        assert_eq!(r, Action::Return(PsciError::InvalidParameters.code()));
        let r = p.handle(
            Call::CpuOn {
                target: 1,
                entry: 0xdead,
                context: 0,
            },
            |_| false,
        );
        assert_eq!(r, Action::Return(PsciError::InvalidAddress.code()));
        assert_eq!(p.get(1), Power::Off);
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        let c = call(fid::CPU_ON, 0xffff_ffff_0000_0001, 0xffff_ffff_8000_0000, 0);
        assert_eq!(
            c,
            Call::CpuOn {
                target: 1,
                entry: 0x8000_0000,
                context: 0
            }
        );
    }

    #[test]
    fn foreign_function_ids_are_not_psci() {
        assert_eq!(Call::decode([0xc600_0000, 0, 0, 0]), None);
        assert_eq!(Call::decode([0x1_8400_0000, 0, 0, 0]), None);
        assert_eq!(
            Call::decode([u64::from(fid::CPU_SUSPEND) | 1 << 32, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn affinity_info_above_level_zero_is_refused() {
        let mut p = PowerStates::new(1);
        let r = p.handle(
            Call::AffinityInfo {
                target: 0,
                level: 1,
            },
            |_| true,
        );
        assert_eq!(r, Action::Return(PsciError::InvalidParameters.code()));
    }
}
