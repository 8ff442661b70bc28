//! The applier's place in the CPU queue: in the background while nobody
//! waits for it, at its normal priority while anybody does.
//!
//! Nothing a client waits for runs on the applier (a reader waiting for it,
//! or the writer held back by it, is the exception), yet each of its
//! commits is milliseconds of CPU in one go. What matters is how fast it
//! gives its core back: at nice 19 it kept a core for up to a scheduler
//! tick (4 ms at HZ=250) after a thread carrying messages woke on it,
//! because the running thread keeps its slice and the scheduler looks again
//! only at the tick (traced in docs/benchmarks.md). A `SCHED_IDLE` thread
//! is preempted at the wake-up of any other thread, and a core running only
//! one counts as idle when the scheduler places a waking thread.
//!
//! `SCHED_IDLE` alone starves the applier under full load, and with it the
//! readers waiting for it (a reconnect storm beside a saturating send load
//! took 2.5 to 3.5 times as long). So whoever waits for the applier raises
//! it back to its normal priority for as long as anybody waits
//! ([`Priority::waiting`], [`Priority::done_waiting`]): the usual
//! remedy for a low-priority thread others depend on.
//!
//! Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that
//! allows the thread's nice value (systemd: `LimitNICE=+0`). Without it the
//! applier runs at nice 19 with the shortest slice Linux allows (100 µs,
//! Linux 6.12 and later; older kernels ignore it), which ends most of the
//! protection a running thread has against a waking one.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The nice value and slice when the applier cannot be raised again.
const FALLBACK_NICE: i32 = 19;
const FALLBACK_SLICE_NS: u64 = 100_000;

/// The applier thread's scheduling, changed by the applier itself at start
/// and by the threads that wait for it. Callers serialize `start`,
/// `waiting` and `done_waiting` (the journal calls them under its
/// `applied` lock), so the applier is raised exactly while a waiter counts.
#[derive(Default)]
pub struct Priority {
    /// The applier's thread id; 0 until it has started.
    tid: AtomicI32,
    /// Its nice value at start: the priority it is raised to.
    nice: AtomicI32,
    /// Whether it runs `SCHED_IDLE` and can be raised (see the module doc).
    background: AtomicBool,
}

impl Priority {
    /// Called on the applier thread as it starts. `waiters`: how many wait
    /// for it already (it stays raised for them).
    pub fn start(&self, waiters: usize) {
        // SAFETY: plain syscalls about the calling thread.
        let (tid, nice) = unsafe { (libc::gettid(), libc::getpriority(libc::PRIO_PROCESS, 0)) };
        self.tid.store(tid, Ordering::Relaxed);
        self.nice.store(nice, Ordering::Relaxed);
        if can_leave_idle(nice) {
            self.background.store(true, Ordering::Relaxed);
            if waiters == 0 {
                self.set(Class::Idle);
            }
            log::debug!("journal applier: SCHED_IDLE, raised to nice {nice} while waited for");
        } else {
            let fallback = Class::Normal {
                nice: FALLBACK_NICE,
                slice_ns: FALLBACK_SLICE_NS,
            };
            if let Err(e) = set_class(0, fallback) {
                log::warn!("journal applier: cannot lower its priority: {e}");
            }
            log::info!(
                "journal applier: nice {FALLBACK_NICE} (cannot leave SCHED_IDLE again without \
                 CAP_SYS_NICE or RLIMIT_NICE; see docs/operations.md)"
            );
        }
    }

    /// A thread starts waiting for the applier; `waiters` counts it.
    pub fn waiting(&self, waiters: usize) {
        if waiters == 1 {
            let nice = self.nice.load(Ordering::Relaxed);
            self.set(Class::Normal { nice, slice_ns: 0 });
        }
    }

    /// A thread stopped waiting; `waiters` no longer counts it.
    pub fn done_waiting(&self, waiters: usize) {
        if waiters == 0 {
            self.set(Class::Idle);
        }
    }

    fn set(&self, class: Class) {
        let tid = self.tid.load(Ordering::Relaxed);
        if tid == 0 || !self.background.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = set_class(tid, class) {
            log::warn!("journal applier: cannot change its priority: {e}");
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Class {
    Idle,
    /// `slice_ns` 0: the kernel's default slice.
    Normal {
        nice: i32,
        slice_ns: u64,
    },
}

/// Whether a thread of this process can go `SCHED_IDLE` and come back to
/// `nice`: tried on a thread of its own, which is then dropped.
fn can_leave_idle(nice: i32) -> bool {
    std::thread::Builder::new()
        .name("im-sched-probe".into())
        .spawn(move || {
            set_class(0, Class::Idle).is_ok()
                && set_class(0, Class::Normal { nice, slice_ns: 0 }).is_ok()
        })
        .ok()
        .and_then(|probe| probe.join().ok())
        .unwrap_or(false)
}

/// `struct sched_attr`, version 0 (linux/sched/types.h); the libc crate
/// has the syscall number but not the struct.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For SCHED_OTHER since Linux 6.12: the slice (0: the default).
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Sets thread `tid`'s (0: the caller's) policy, nice value and slice.
fn set_class(tid: libc::pid_t, class: Class) -> std::io::Result<()> {
    let (policy, nice, runtime) = match class {
        Class::Idle => (libc::SCHED_IDLE, 0, 0),
        Class::Normal { nice, slice_ns } => (libc::SCHED_OTHER, nice, slice_ns),
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr with a pointer to a live, correctly sized struct.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy of thread `tid`, as the kernel reports it.
    fn policy_of(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: a plain syscall.
        unsafe { libc::sched_getscheduler(tid) }
    }

    #[test]
    fn raised_exactly_while_waited_for() {
        let priority = std::sync::Arc::new(Priority::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let applier = {
            let priority = priority.clone();
            std::thread::spawn(move || {
                priority.start(0);
                // SAFETY: a plain syscall.
                let _ = tx.send(unsafe { libc::gettid() });
                let _ = done_rx.recv();
            })
        };
        let tid = rx.recv().expect("the thread reports its id");
        if !priority.background.load(Ordering::Relaxed) {
            // Not permitted here: the fallback is nice 19, never SCHED_IDLE.
            assert_eq!(policy_of(tid), libc::SCHED_OTHER);
        } else {
            assert_eq!(policy_of(tid), libc::SCHED_IDLE);
            priority.waiting(1);
            assert_eq!(policy_of(tid), libc::SCHED_OTHER);
            priority.waiting(2);
            priority.done_waiting(1);
            assert_eq!(policy_of(tid), libc::SCHED_OTHER, "one still waits");
            priority.done_waiting(0);
            assert_eq!(policy_of(tid), libc::SCHED_IDLE);
        }
        let _ = done_tx.send(());
        applier.join().expect("the thread ends");
    }

    #[test]
    fn starts_raised_when_already_waited_for() {
        let priority = std::sync::Arc::new(Priority::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let applier = {
            let priority = priority.clone();
            std::thread::spawn(move || {
                priority.start(1);
                // SAFETY: a plain syscall.
                let _ = tx.send(unsafe { libc::gettid() });
                let _ = done_rx.recv();
            })
        };
        let tid = rx.recv().expect("the thread reports its id");
        assert_eq!(policy_of(tid), libc::SCHED_OTHER);
        let _ = done_tx.send(());
        applier.join().expect("the thread ends");
    }
}
