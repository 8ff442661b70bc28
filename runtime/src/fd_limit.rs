//! The open-file limit. Every connection is a file descriptor, on the
//! server and on a load generator alike, and shells often start processes
//! with a soft limit of 1,024 under a much higher hard limit.

/// Raises this process's soft open-file limit to its hard limit and returns
/// the limit now in force (`None` if it cannot be read).
pub fn raise_to_hard_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // rlim_t is u64 on Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_limit_ends_at_the_hard_limit() {
        let now = super::raise_to_hard_limit().expect("readable limit");
        assert!(now >= 1);
        assert_eq!(super::raise_to_hard_limit(), Some(now), "idempotent");
    }
}
