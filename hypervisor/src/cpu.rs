//! Per-CPU state: each physical CPU's stack, the vCPU it runs, and the
//! mailbox through which other CPUs ask it to start or stop one.

use crate::arch;
use crate::arch::gic::SGI_KICK;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

pub const MAX_CPUS: usize = 8;
const STACK_SIZE: usize = 64 << 10;

/// Work another CPU leaves for this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Start {
        partition: usize,
        vcpu: usize,
        entry: u64,
        context: u64,
    },
    Stop,
}

pub struct PerCpu {
    request: Mutex<Option<Request>>,
    /// A `Stop` waits in `request`: every kick looks here, not at the lock.
    stop: AtomicBool,
    /// (partition + 1) << 8 | vcpu while a vCPU runs here; 0 when parked.
    running: AtomicUsize,
    /// The running vCPU has new pending virtual interrupts to load into
    /// list registers before it resumes.
    flush: AtomicBool,
}

static CPUS: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        request: Mutex::new(None),
        stop: AtomicBool::new(false),
        running: AtomicUsize::new(0),
        flush: AtomicBool::new(false),
    }
}; MAX_CPUS];

/// Stack tops, read by `secondary_entry` before a stack exists.
#[no_mangle]
static STACK_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

pub fn get(cpu: usize) -> &'static PerCpu {
    &CPUS[cpu]
}

/// Allocates CPU `cpu`'s stack (the boot CPU's is in BSS and given here).
pub fn prepare(cpu: usize, stack_top: Option<u64>) {
    let top = stack_top.unwrap_or_else(|| {
        let stack = alloc::vec![0u8; STACK_SIZE].leak();
        stack.as_ptr() as u64 + STACK_SIZE as u64
    });
    STACK_TOPS[cpu].store(top, Ordering::Release);
}

pub fn stack_top(cpu: usize) -> u64 {
    STACK_TOPS[cpu].load(Ordering::Acquire)
}

impl PerCpu {
    /// Leaves a request; the caller then kicks the CPU with an SGI.
    pub fn post(&self, r: Request) {
        let mut q = self.request.lock();
        *q = Some(r);
        self.stop.store(r == Request::Stop, Ordering::Release);
    }

    pub fn take(&self) -> Option<Request> {
        let mut q = self.request.lock();
        self.stop.store(false, Ordering::Relaxed);
        q.take()
    }

    /// Takes the request only if it is `Stop` (a start waits for the park loop).
    pub fn take_stop(&self) -> bool {
        if !self.stop.load(Ordering::Acquire) {
            return false;
        }
        let mut q = self.request.lock();
        let stop = *q == Some(Request::Stop);
        if stop {
            *q = None;
            self.stop.store(false, Ordering::Relaxed);
        }
        stop
    }

    pub fn request_flush(&self) {
        self.flush.store(true, Ordering::Relaxed);
    }

    pub fn take_flush(&self) -> bool {
        self.flush.swap(false, Ordering::Relaxed)
    }

    pub fn running(&self) -> Option<(usize, usize)> {
        match self.running.load(Ordering::Acquire) {
            0 => None,
            v => Some(((v >> 8) - 1, v & 0xff)),
        }
    }

    pub fn set_running(&self, r: Option<(usize, usize)>) {
        self.running
            .store(r.map_or(0, |(p, v)| ((p + 1) << 8) | v), Ordering::Release);
    }
}

/// The partition and vCPU this CPU runs.
pub fn current() -> Option<(usize, usize)> {
    CPUS[arch::cpu_index()].running()
}

/// Posts `r` to CPU `cpu` and interrupts it, wherever it is.
pub fn send(cpu: usize, r: Request) {
    get(cpu).post(r);
    let sys = crate::system();
    sys.gic.send_sgi(sys.config.cpus[cpu].mpidr, cpu, SGI_KICK);
}
