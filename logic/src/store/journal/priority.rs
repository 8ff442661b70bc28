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
//! `SCHED_IDLE` gives a core up faster still, but in minute-long runs the
//! p99.9 rose by half or more; likely because the applier shares locks with
//! the threads that carry messages (SQLite's WAL index, the journal's own
//! mutex, channel internals), and a `SCHED_IDLE` thread preempted holding
//! one waits for an idle core before it lets go. Nice 19 keeps a small
//! share.
//!
//! Under full load even nice 19 makes the readers waiting for the applier
//! wait long (a reconnect storm beside a saturating send load: 1.15 and
//! 1.21 s, against 0.77 and 0.94 s with the applier raised while they
//! wait). So whoever waits for it raises it to the server's own nice value
//! for as long as anybody waits ([`Priority::wait_begins`],
//! [`Priority::wait_ends`]). Coming back from
//! nice 19 needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows the
//! server's nice value (systemd: `LimitNICE=+0`); without it the applier
//! stays at nice 19 and readers wait longer under full load.

/// The applier's class while nobody waits for it.
const BACKGROUND: Class = Class {
    nice: 19,
    slice_ns: 100_000,
};

/// The applier thread's scheduling and who waits for it. It lives under
/// the journal's `applied` lock, so the applier is raised exactly while
/// a waiter counts.
#[derive(Default)]
pub struct Priority {
    /// The applier's thread id; `None` until it has started.
    tid: Option<libc::pid_t>,
    /// Its class at start, which it is raised to; `None` when it cannot
    /// come back there from the background (see the module doc).
    raised: Option<Class>,
    /// Threads waiting for the applier.
    waiters: usize,
}

impl Priority {
    /// Called on the applier thread as it starts: it moves to the
    /// background, unless a thread waits for it already.
    pub fn start(&mut self) {
        // SAFETY: plain syscalls about the calling thread.
        let (tid, nice) = unsafe { (libc::gettid(), libc::getpriority(libc::PRIO_PROCESS, 0)) };
        let own = Class { nice, slice_ns: 0 };
        if let Err(e) = set_class(0, BACKGROUND) {
            log::warn!("journal applier: cannot lower its priority: {e}");
            return;
        }
        // Whether it may come back is the kernel's rule; ask it.
        if set_class(0, own).is_err() {
            log::info!(
                "journal applier: nice 19, and readers waiting for it cannot raise it \
                 (no CAP_SYS_NICE, RLIMIT_NICE too low; see docs/operations.md)"
            );
            return;
        }
        self.tid = Some(tid);
        self.raised = Some(own);
        log::debug!("journal applier: nice 19, raised to nice {nice} while waited for");
        if self.waiters == 0 {
            self.set(BACKGROUND);
        }
    }

    /// A thread starts waiting for the applier.
    pub fn wait_begins(&mut self) {
        self.waiters += 1;
        if self.waiters == 1 {
            if let Some(raised) = self.raised {
                self.set(raised);
            }
        }
    }

    /// A thread stops waiting for the applier.
    pub fn wait_ends(&mut self) {
        self.waiters -= 1;
        if self.waiters == 0 {
            self.set(BACKGROUND);
        }
    }

    fn set(&self, class: Class) {
        let Some(tid) = self.tid else { return };
        if let Err(e) = set_class(tid, class) {
            log::warn!("journal applier: cannot change its priority: {e}");
        }
    }
}

/// A SCHED_OTHER nice value and slice (`slice_ns` 0: the kernel's default).
#[derive(Clone, Copy)]
struct Class {
    nice: i32,
    slice_ns: u64,
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
    fn on_applier_thread(
        waiters: usize,
        check: impl FnOnce(&std::sync::Mutex<Priority>, libc::pid_t),
    ) {
        let mut priority = Priority::default();
        for _ in 0..waiters {
            priority.wait_begins();
        }
        let priority = std::sync::Arc::new(std::sync::Mutex::new(priority));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let applier = {
            let priority = priority.clone();
            std::thread::spawn(move || {
                priority.lock().unwrap().start();
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
            let mut priority = priority.lock().unwrap();
            assert_eq!(nice_of(tid), 19, "in the background from the start");
            if priority.raised.is_none() {
                return; // not permitted here: it stays at 19
            }
            priority.wait_begins();
            assert_eq!(nice_of(tid), own);
            priority.wait_begins();
            priority.wait_ends();
            assert_eq!(nice_of(tid), own, "one still waits");
            priority.wait_ends();
            assert_eq!(nice_of(tid), 19);
        });
    }

    #[test]
    fn starts_raised_when_already_waited_for() {
        let own = nice_of(0);
        on_applier_thread(1, |priority, tid| {
            let expected = if priority.lock().unwrap().raised.is_some() {
                own
            } else {
                19
            };
            assert_eq!(nice_of(tid), expected);
        });
    }
}
