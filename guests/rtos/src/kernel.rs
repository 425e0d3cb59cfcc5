//! The kernel: static tasks with their own stacks, fixed priorities with
//! round-robin among equals, tickless sleeping on the virtual timer,
//! counting semaphores and a message queue. One vCPU; the kernel's state
//! is touched only with interrupts masked.

use core::arch::asm;
use guest_common::{counter, counter_freq, gic, println};

pub const MAX_TASKS: usize = 8;
const STACK: usize = 16 * 1024;
/// A saved task: x0-x30, ELR, SPSR and a pad, q0-q31, FPCR and FPSR
/// (`vectors.S`).
const FRAME: usize = 34 * 8 + 32 * 16 + 16;
const MAX_SEMS: usize = 8;
const VTIMER: u32 = 27;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Ready,
    Sleeping(u64),
    Blocked(usize),
    Dead,
}

#[derive(Clone, Copy)]
struct Tcb {
    name: &'static str,
    prio: u8,
    state: State,
    sp: u64,
    /// Times a task of the same priority handed it the CPU at the end of
    /// its time slice (round-robin turns).
    turns: u32,
}

struct Kernel {
    tasks: [Tcb; MAX_TASKS],
    current: usize,
    sems: [u32; MAX_SEMS],
    sems_used: usize,
    /// When the running task's time slice ends.
    slice_end: u64,
    slice: u64,
    /// The task that last ran at each priority: a preempted task resumes
    /// its turn, and round-robin continues after it.
    last: [usize; 8],
    /// Interrupt handlers of devices: (INTID, handler).
    handlers: [(u32, fn()); 4],
    handlers_used: usize,
}

#[repr(C, align(16))]
struct Stacks([[u8; STACK]; MAX_TASKS]);

static mut KERNEL: Kernel = Kernel {
    tasks: [Tcb {
        name: "",
        prio: 0,
        state: State::Free,
        sp: 0,
        turns: 0,
    }; MAX_TASKS],
    current: 0,
    sems: [0; MAX_SEMS],
    sems_used: 0,
    slice_end: 0,
    slice: 0,
    last: [0; 8],
    handlers: [(u32::MAX, noop); 4],
    handlers_used: 0,
};
static mut STACKS: Stacks = Stacks([[0; STACK]; MAX_TASKS]);

fn noop() {}

/// Runs `f` with interrupts masked; the only way to the kernel's state.
fn with<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    let daif: u64;
    // SAFETY: masks IRQs; one vCPU, so nothing else can run meanwhile.
    unsafe { asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif) };
    // SAFETY: interrupts are masked and the kernel runs on one vCPU, so
    // this is the only reference to KERNEL alive.
    let r = f(unsafe { &mut *core::ptr::addr_of_mut!(KERNEL) });
    // SAFETY: restores the caller's mask.
    unsafe { asm!("msr daif, {}", in(reg) daif) };
    r
}

/// Enters the kernel to pick the next task (an SVC exception).
fn switch() {
    // SAFETY: the vectors save this task and resume the one the kernel picks.
    unsafe { asm!("svc #0") };
}

extern "C" {
    fn resume(sp: u64) -> !;
}

/// Creates a task; `entry(arg)` runs at priority `prio` (higher runs first).
pub fn spawn(name: &'static str, prio: u8, entry: fn(usize), arg: usize) {
    with(|k| {
        let Some(i) = k.tasks.iter().position(|t| t.state == State::Free) else {
            println!("rtos: no room for task {name}");
            return;
        };
        // SAFETY: task i's own stack; the task has not started.
        let top = unsafe { core::ptr::addr_of_mut!(STACKS.0[i]) } as u64 + STACK as u64;
        let sp = top - FRAME as u64;
        let frame = sp as *mut u64;
        // SAFETY: the frame lies inside task i's stack.
        unsafe {
            core::ptr::write_bytes(frame, 0, FRAME / 8);
            frame.add(0).write(entry as *const () as u64); // x0: the entry
            frame.add(1).write(arg as u64); // x1: its argument
            frame.add(31).write(task_start as *const () as u64); // ELR
            frame.add(32).write(0x5); // SPSR: EL1h, interrupts on
        }
        k.tasks[i] = Tcb {
            name,
            prio,
            state: State::Ready,
            sp,
            turns: 0,
        };
    });
}

extern "C" fn task_start(entry: usize, arg: usize) -> ! {
    // SAFETY: `spawn` stored a `fn(usize)` here.
    let f: fn(usize) = unsafe { core::mem::transmute(entry) };
    f(arg);
    with(|k| {
        let c = k.current;
        k.tasks[c].state = State::Dead;
    });
    // Were an interrupt to come first, it would switch away already.
    switch();
    unreachable!("a dead task was resumed")
}

fn idle(_: usize) {
    loop {
        // SAFETY: sleeps until an interrupt.
        unsafe { asm!("wfi") };
    }
}

/// Calls `f` on the interrupt `intid` (a device of the RTOS).
pub fn on_interrupt(intid: u32, f: fn()) {
    with(|k| {
        if k.handlers_used < k.handlers.len() {
            k.handlers[k.handlers_used] = (intid, f);
            k.handlers_used += 1;
        }
    });
    gic::enable(intid, 0);
}

/// Starts scheduling; `slice_us` is the round-robin time slice.
pub fn start(slice_us: u64) -> ! {
    spawn("idle", 0, idle, 0);
    gic::enable(VTIMER, 0);
    let sp = with(|k| {
        k.slice = counter_freq() * slice_us / 1_000_000;
        let now = counter();
        let next = pick(k, now);
        k.current = next;
        arm(k, now);
        k.tasks[next].sp
    });
    // SAFETY: the frame `spawn` built; interrupts come on with its SPSR.
    unsafe { resume(sp) }
}

/// The highest-priority ready task; among equals, the one whose turn it
/// is: the last to run at that priority, or the next after it. A new turn
/// gets a full time slice.
fn pick(k: &mut Kernel, now: u64) -> usize {
    let top = k
        .tasks
        .iter()
        .filter(|t| t.state == State::Ready)
        .map(|t| t.prio)
        .max()
        .unwrap_or(0);
    let level = usize::from(top).min(k.last.len() - 1);
    let last = k.last[level];
    let next = if k.tasks[last].state == State::Ready && k.tasks[last].prio == top {
        last
    } else {
        (1..=MAX_TASKS)
            .map(|i| (last + i) % MAX_TASKS)
            .find(|&i| k.tasks[i].state == State::Ready && k.tasks[i].prio == top)
            .unwrap_or(k.current)
    };
    if next != last {
        k.slice_end = now + k.slice;
    }
    k.last[level] = next;
    next
}

/// The running task's slice is over: its turn passes to the next ready
/// task of its priority, if there is one.
fn end_turn(k: &mut Kernel, now: u64) {
    let cur = k.current;
    let prio = k.tasks[cur].prio;
    let level = usize::from(prio).min(k.last.len() - 1);
    if let Some(n) = (1..MAX_TASKS)
        .map(|i| (cur + i) % MAX_TASKS)
        .find(|&i| k.tasks[i].state == State::Ready && k.tasks[i].prio == prio)
    {
        k.last[level] = n;
        k.tasks[n].turns += 1;
        k.slice_end = now + k.slice;
    }
}

/// Programs the virtual timer for the next event: the earliest sleeper,
/// or the end of the slice when equals share the CPU.
fn arm(k: &mut Kernel, now: u64) {
    let cur = k.tasks[k.current];
    let peers = k
        .tasks
        .iter()
        .filter(|t| t.state == State::Ready && t.prio == cur.prio)
        .count();
    let mut deadline = u64::MAX;
    if peers > 1 {
        deadline = k.slice_end.max(now + 1);
    }
    for t in &k.tasks {
        if let State::Sleeping(w) = t.state {
            deadline = deadline.min(w);
        }
    }
    // SAFETY: the virtual timer belongs to the RTOS.
    unsafe {
        if deadline == u64::MAX {
            asm!("msr cntv_ctl_el0, xzr", "isb");
        } else {
            asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) deadline, in(reg) 1u64);
        }
    }
}

fn wake_sleepers(k: &mut Kernel, now: u64) {
    for t in k.tasks.iter_mut() {
        if matches!(t.state, State::Sleeping(w) if w <= now) {
            t.state = State::Ready;
        }
    }
}

/// IRQ: device handlers, sleepers woken, maybe another task.
#[no_mangle]
extern "C" fn rtos_irq(sp: u64) -> u64 {
    // SAFETY: IRQs are masked in the handler; see `with`.
    let k = unsafe { &mut *core::ptr::addr_of_mut!(KERNEL) };
    k.tasks[k.current].sp = sp;
    let now = counter();
    while let Some(iar) = gic::ack() {
        let id = iar & 0x3ff;
        if id == VTIMER {
            // The timer's line stays high until it is reprogrammed: off
            // before the EOI, on again (in `arm`) for the next event.
            // SAFETY: the virtual timer belongs to the RTOS.
            unsafe { asm!("msr cntv_ctl_el0, xzr", "isb") };
            wake_sleepers(k, now);
            if now >= k.slice_end && k.tasks[k.current].state == State::Ready {
                end_turn(k, now);
            }
        } else if let Some(&(_, f)) = k.handlers[..k.handlers_used].iter().find(|(i, _)| *i == id) {
            f();
        }
        gic::eoi(iar);
    }
    let next = pick(k, now);
    k.current = next;
    arm(k, now);
    k.tasks[next].sp
}

/// An exception at a vector the RTOS never expects (SP_EL0 in use, a
/// lower EL, FIQ, SError): reported as a crash.
#[no_mangle]
extern "C" fn rtos_unexpected(esr: u64, far: u64, elr: u64) -> ! {
    println!("rtos: unexpected exception ESR {esr:#x} FAR {far:#x} ELR {elr:#x}");
    guest_common::report_crash(esr, far, elr)
}

/// SVC: a task yields (its state is set), or a fault: a crash.
#[no_mangle]
extern "C" fn rtos_sync(sp: u64) -> u64 {
    // SAFETY: as in `rtos_irq`.
    let k = unsafe { &mut *core::ptr::addr_of_mut!(KERNEL) };
    let esr: u64;
    // SAFETY: reads the syndrome.
    unsafe { asm!("mrs {}, esr_el1", out(reg) esr) };
    let c = k.current;
    k.tasks[c].sp = sp;
    if esr >> 26 != 0x15 {
        let (far, elr): (u64, u64);
        // SAFETY: reads the fault registers.
        unsafe { asm!("mrs {}, far_el1", "mrs {}, elr_el1", out(reg) far, out(reg) elr) };
        // Tasks share the kernel's memory: one that faulted may have left
        // it in any state, so the whole RTOS stops and says so.
        println!(
            "rtos: task {} faulted: ESR {esr:#x} FAR {far:#x} ELR {elr:#x}; reporting a crash",
            k.tasks[c].name
        );
        guest_common::report_crash(esr, far, elr);
    }
    let now = counter();
    wake_sleepers(k, now);
    let next = pick(k, now);
    k.current = next;
    arm(k, now);
    k.tasks[next].sp
}

/// Sleeps until the counter reaches `t`.
pub fn sleep_until(t: u64) {
    if t <= counter() {
        return;
    }
    with(|k| {
        let c = k.current;
        k.tasks[c].state = State::Sleeping(t);
    });
    switch();
}

pub fn delay_us(us: u64) {
    sleep_until(counter() + counter_freq() * us / 1_000_000);
}

/// A counting semaphore (an index into the kernel's table).
#[derive(Clone, Copy)]
pub struct Semaphore(usize);

impl Semaphore {
    /// Its number, to keep in an atomic for interrupt handlers.
    pub fn id(&self) -> usize {
        self.0
    }

    pub fn from_id(id: usize) -> Self {
        Semaphore(id.min(MAX_SEMS - 1))
    }

    pub fn new(count: u32) -> Self {
        with(|k| {
            let id = k.sems_used.min(MAX_SEMS - 1);
            k.sems_used += 1;
            k.sems[id] = count;
            Semaphore(id)
        })
    }

    pub fn take(&self) {
        let blocked = with(|k| {
            if k.sems[self.0] > 0 {
                k.sems[self.0] -= 1;
                return false;
            }
            let c = k.current;
            k.tasks[c].state = State::Blocked(self.0);
            true
        });
        // The giver hands the count over by making this task ready.
        if blocked {
            switch();
        }
    }

    /// From a task or an interrupt handler.
    pub fn give(&self) {
        let from_task = current_el_irqs_unmasked();
        let preempt = with(|k| {
            let waiter = (0..MAX_TASKS)
                .filter(|&i| k.tasks[i].state == State::Blocked(self.0))
                .max_by_key(|&i| k.tasks[i].prio);
            match waiter {
                Some(w) => {
                    k.tasks[w].state = State::Ready;
                    k.tasks[w].prio > k.tasks[k.current].prio
                }
                None => {
                    k.sems[self.0] += 1;
                    false
                }
            }
        });
        if preempt && from_task {
            switch();
        }
    }
}

fn current_el_irqs_unmasked() -> bool {
    let daif: u64;
    // SAFETY: reads the interrupt mask.
    unsafe { asm!("mrs {}, daif", out(reg) daif) };
    daif & (1 << 7) == 0
}

/// A bounded queue of messages between tasks.
pub struct Queue<T: Copy, const N: usize> {
    ring: core::cell::UnsafeCell<([Option<T>; N], usize, usize)>,
    filled: Semaphore,
    free: Semaphore,
}

// SAFETY: the ring is touched only with interrupts masked on the RTOS's
// one vCPU, so no two tasks reach it at once.
unsafe impl<T: Copy, const N: usize> Sync for Queue<T, N> {}

impl<T: Copy, const N: usize> Queue<T, N> {
    pub fn new() -> Self {
        Queue {
            ring: core::cell::UnsafeCell::new(([None; N], 0, 0)),
            filled: Semaphore::new(0),
            free: Semaphore::new(N as u32),
        }
    }

    pub fn push(&self, v: T) {
        self.free.take();
        with(|_| {
            // SAFETY: see the Sync impl.
            let (items, head, len) = unsafe { &mut *self.ring.get() };
            items[(*head + *len) % N] = Some(v);
            *len += 1;
        });
        self.filled.give();
    }

    pub fn pop(&self) -> T {
        self.filled.take();
        let v = with(|_| {
            // SAFETY: see the Sync impl.
            let (items, head, len) = unsafe { &mut *self.ring.get() };
            let v = items[*head].take();
            *head = (*head + 1) % N;
            *len -= 1;
            v
        });
        self.free.give();
        v.unwrap_or_else(|| unreachable!("the semaphore counted an item"))
    }
}

/// How many round-robin turns the running task has been handed.
pub fn turns() -> u32 {
    with(|k| k.tasks[k.current].turns)
}

/// The task list, for the banner.
pub fn tasks() -> [(&'static str, u8); MAX_TASKS] {
    with(|k| {
        let mut out = [("", 0u8); MAX_TASKS];
        for (o, t) in out.iter_mut().zip(k.tasks.iter()) {
            if t.state != State::Free {
                *o = (t.name, t.prio);
            }
        }
        out
    })
}
