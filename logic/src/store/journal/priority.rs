//! The applier's place in the CPU queue: in the background while nobody
//! waits for it, at the server's own priority while anybody does.
//!
//! Nothing a client waits for runs on the applier (a reader waiting for it,
//! or the writer held back by it, is the exception), yet each of its
//! commits is milliseconds of CPU in one go. So it runs at nice 19, and
//! with the shortest scheduler slice Linux allows (100 µs; Linux 6.12 and
//! later, older kernels ignore it). The slice matters as much as the nice
//! value: at nice 19 alone it kept a core for up to a scheduler tick (4 ms
//! at HZ=250) after a thread carrying messages woke on it, because the
//! running thread keeps its slice (1.4 ms on two cores) and the scheduler
//! looks again only at the tick (traced in docs/benchmarks.md).
//!
//! `SCHED_IDLE` gives a core up faster still, but the applier shares locks
//! with the threads that carry messages (SQLite's WAL index, the journal's
//! own mutex, channel internals): preempted while holding one, a
//! `SCHED_IDLE` thread waits for an idle core before it lets go, and in
//! minute-long runs the p99.9 doubled. Nice 19 keeps a small share.
//!
//! Under full load even nice 19 makes the readers waiting for the applier
//! wait long (a reconnect storm beside a saturating send load took three
//! times as long as at nice 0). So whoever waits for it raises it to the
//! server's own nice value for as long as anybody waits
//! ([`Priority::waiting`], [`Priority::done_waiting`]). Coming back from
//! nice 19 needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows the
//! server's nice value (systemd: `LimitNICE=+0`); without it the applier
//! stays at nice 19 and readers wait longer under full load.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The applier's class while nobody waits for it.
const BACKGROUND: Class = Class {
    nice: 19,
    slice_ns: 100_000,
};

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
    /// Whether it can be raised again (see the module doc).
    raisable: AtomicBool,
}

impl Priority {
    /// Called on the applier thread as it starts. `waiters`: how many wait
    /// for it already (it stays raised for them).
    pub fn start(&self, waiters: usize) {
        // SAFETY: plain syscalls about the calling thread.
        let (tid, nice) = unsafe { (libc::gettid(), libc::getpriority(libc::PRIO_PROCESS, 0)) };
        self.tid.store(tid, Ordering::Relaxed);
        self.nice.store(nice, Ordering::Relaxed);
        let raisable = can_come_back(nice);
        self.raisable.store(raisable, Ordering::Relaxed);
        if raisable && waiters > 0 {
            return;
        }
        if let Err(e) = set_class(0, BACKGROUND) {
            log::warn!("journal applier: cannot lower its priority: {e}");
        }
        if raisable {
            log::debug!("journal applier: nice 19, raised to nice {nice} while waited for");
        } else {
            log::info!(
                "journal applier: nice 19, and readers waiting for it cannot raise it \
                 (no CAP_SYS_NICE, RLIMIT_NICE too low; see docs/operations.md)"
            );
        }
    }

    /// A thread starts waiting for the applier; `waiters` counts it.
    pub fn waiting(&self, waiters: usize) {
        if waiters == 1 {
            let nice = self.nice.load(Ordering::Relaxed);
            self.set(Class { nice, slice_ns: 0 });
        }
    }

    /// A thread stopped waiting; `waiters` no longer counts it.
    pub fn done_waiting(&self, waiters: usize) {
        if waiters == 0 {
            self.set(BACKGROUND);
        }
    }

    fn set(&self, class: Class) {
        let tid = self.tid.load(Ordering::Relaxed);
        if tid == 0 || !self.raisable.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = set_class(tid, class) {
            log::warn!("journal applier: cannot change its priority: {e}");
        }
    }
}

/// A SCHED_OTHER nice value and slice (`slice_ns` 0: the kernel's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    nice: i32,
    slice_ns: u64,
}

/// Whether a thread of this process can go to the background class and
/// come back to `nice`: tried on a thread of its own, which is then dropped.
fn can_come_back(nice: i32) -> bool {
    std::thread::Builder::new()
        .name("im-sched-probe".into())
        .spawn(move || {
            set_class(0, BACKGROUND).is_ok() && set_class(0, Class { nice, slice_ns: 0 }).is_ok()
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

/// Sets thread `tid`'s (0: the caller's) nice value and slice.
fn set_class(tid: libc::pid_t, class: Class) -> std::io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: class.nice,
        priority: 0,
        runtime: class.slice_ns,
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

    /// The nice value of thread `tid`, as the kernel reports it.
    fn nice_of(tid: libc::pid_t) -> i32 {
        // SAFETY: a plain syscall.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
    }

    /// Starts `priority` on a thread of its own (with `waiters` already
    /// waiting), runs `check` with its id, then lets it end.
    fn on_applier_thread(waiters: usize, check: impl FnOnce(&Priority, libc::pid_t)) {
        let priority = std::sync::Arc::new(Priority::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let applier = {
            let priority = priority.clone();
            std::thread::spawn(move || {
                priority.start(waiters);
                // SAFETY: a plain syscall.
                let _ = tx.send(unsafe { libc::gettid() });
                let _ = done_rx.recv();
            })
        };
        let tid = rx.recv().expect("the thread reports its id");
        check(&priority, tid);
        let _ = done_tx.send(());
        applier.join().expect("the thread ends");
    }

    #[test]
    fn raised_exactly_while_waited_for() {
        let own = nice_of(0);
        on_applier_thread(0, |priority, tid| {
            assert_eq!(nice_of(tid), 19, "in the background from the start");
            if !priority.raisable.load(Ordering::Relaxed) {
                return; // not permitted here: it stays at 19
            }
            priority.waiting(1);
            assert_eq!(nice_of(tid), own);
            priority.waiting(2);
            priority.done_waiting(1);
            assert_eq!(nice_of(tid), own, "one still waits");
            priority.done_waiting(0);
            assert_eq!(nice_of(tid), 19);
        });
    }

    #[test]
    fn starts_raised_when_already_waited_for() {
        let own = nice_of(0);
        on_applier_thread(1, |priority, tid| {
            let expected = if priority.raisable.load(Ordering::Relaxed) {
                own
            } else {
                19
            };
            assert_eq!(nice_of(tid), expected);
        });
    }
}
