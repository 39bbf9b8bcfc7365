//! How long a VM's vCPUs waited for a host CPU: the sum of `run_delay` (the second field of
//! `/proc/PID/task/TID/schedstat`, in nanoseconds) over the threads QEMU names `CPU N/KVM`
//! (or `CPU N/TCG` without KVM). A vCPU that waits is a guest that stalls: on an isolated,
//! pinned VM this stays near zero, and a rise says something else runs on its CPUs.

use super::fs::HostFs;

/// Nanoseconds the vCPU threads of these processes have waited to run, since each started;
/// `None` when none of them has a vCPU thread that could be read.
pub fn vcpu_wait_ns(fs: &dyn HostFs, pids: &[u32]) -> Option<u64> {
    let mut total = None;
    for pid in pids {
        let Ok(tids) = fs.list(&format!("proc/{pid}/task")) else {
            continue;
        };
        for tid in tids {
            let dir = format!("proc/{pid}/task/{tid}");
            let is_vcpu = fs
                .read(&format!("{dir}/comm"))
                .is_ok_and(|c| is_vcpu_thread(c.trim()));
            if !is_vcpu {
                continue;
            }
            if let Some(ns) = fs
                .read(&format!("{dir}/schedstat"))
                .ok()
                .and_then(|s| run_delay(&s))
            {
                *total.get_or_insert(0) += ns;
            }
        }
    }
    total
}

/// QEMU's name for a vCPU thread: `CPU 3/KVM`, `CPU 0/TCG`.
pub fn is_vcpu_thread(comm: &str) -> bool {
    let Some(rest) = comm.strip_prefix("CPU ") else {
        return false;
    };
    let Some((n, accel)) = rest.split_once('/') else {
        return false;
    };
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && matches!(accel, "KVM" | "TCG")
}

/// The second field of a schedstat line (`run_time run_delay timeslices`).
fn run_delay(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_threads_are_told_from_qemu_s_other_threads() {
        for name in ["CPU 0/KVM", "CPU 12/KVM", "CPU 3/TCG"] {
            assert!(is_vcpu_thread(name), "{name}");
        }
        for name in [
            "qemu-system-x86",
            "IO mon_iothread",
            "CPU /KVM",
            "CPU 1/XEN",
            "vhost-123",
        ] {
            assert!(!is_vcpu_thread(name), "{name}");
        }
    }

    #[test]
    fn run_delay_is_the_second_field() {
        assert_eq!(run_delay("123456 7890 42\n"), Some(7890));
        assert_eq!(run_delay("garbage"), None);
    }
}
