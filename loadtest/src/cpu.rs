//! CPU time spent by the server and by the load tester over a run, per
//! delivered message: the measure a change in server efficiency shows in,
//! less moved than throughput by what else the machine is doing.

use std::time::Duration;

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat`; `None` if it cannot be read.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields after its ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the whole line: utime and stime, in clock ticks.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// This process's CPU time so far (every thread).
pub fn own_cpu() -> Option<Duration> {
    process_cpu(std::process::id())
}

/// CPU used between two readings, in microseconds per message.
pub fn micros_per(before: Option<Duration>, after: Option<Duration>, messages: u64) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (messages > 0).then(|| used.as_secs_f64() * 1e6 / messages as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_and_divides_it() {
        let before = own_cpu().expect("/proc/self/stat");
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = own_cpu().unwrap();
        assert!(after > before, "{before:?} -> {after:?}");
        assert_eq!(
            micros_per(Some(Duration::ZERO), Some(Duration::from_millis(1)), 10),
            Some(100.0)
        );
        assert_eq!(micros_per(Some(before), Some(after), 0), None);
    }
}
