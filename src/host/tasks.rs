//! Host tasks as /proc shows them: name, kernel-thread flags, allowed CPUs, and setting a
//! task's affinity (the one host change that is a system call, not a file: behind a trait).

use super::fs::HostFs;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};

/// `PF_KTHREAD` in /proc/PID/stat's flags: a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;
/// `PF_NO_SETAFFINITY`: a per-CPU kernel thread (or one the kernel pins): its affinity and its
/// cgroup cannot be changed (EINVAL).
const PF_NO_SETAFFINITY: u64 = 0x0400_0000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub comm: String,
    pub flags: u64,
    /// `Cpus_allowed_list` from /proc/PID/status.
    pub allowed: CpuSet,
}

impl Task {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// A kernel thread whose affinity may be changed (not bound to a CPU).
    pub fn is_movable_kernel_thread(&self) -> bool {
        self.is_kernel_thread() && self.flags & PF_NO_SETAFFINITY == 0
    }
}

/// Read one task; `None` if it is gone (tasks exit between listing and reading).
pub fn read_task(fs: &dyn HostFs, pid: u32) -> Option<Task> {
    let stat = fs.read(&format!("proc/{pid}/stat")).ok()?;
    let status = fs.read(&format!("proc/{pid}/status")).ok()?;
    let (comm, flags) = parse_stat(&stat)?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|v| CpuSet::parse(v).ok())?;
    Some(Task {
        pid,
        comm,
        flags,
        allowed,
    })
}

/// Every task (process, not thread) in /proc.
pub fn list_tasks(fs: &dyn HostFs) -> Vec<Task> {
    let Ok(entries) = fs.list("proc") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| e.parse::<u32>().ok())
        .filter_map(|pid| read_task(fs, pid))
        .collect()
}

/// `(comm, flags)` from /proc/PID/stat. The name may hold spaces and parentheses, so it is
/// taken up to the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // After the name: state ppid pgrp session tty_nr tpgid flags …
    let flags = stat[close + 1..].split_whitespace().nth(6)?.parse().ok()?;
    Some((comm, flags))
}

/// Setting a task's CPU affinity.
pub trait TaskAffinity {
    fn set_affinity(&self, pid: u32, cpus: &CpuSet) -> Result<()>;
}

/// `sched_setaffinity(2)` on the real host.
pub struct SchedAffinity;

impl TaskAffinity for SchedAffinity {
    fn set_affinity(&self, pid: u32, cpus: &CpuSet) -> Result<()> {
        let mut set = nix::sched::CpuSet::new();
        for cpu in cpus.iter() {
            set.set(cpu as usize)
                .map_err(|e| Error::io("build CPU set for", format!("pid {pid}"), e.into()))?;
        }
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid as i32), &set)
            .map_err(|e| Error::io("set the CPU affinity of", format!("pid {pid}"), e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_with_spaces_and_parens_are_read() {
        let stat = "42 (a (b) c) S 2 0 0 0 -1 69238880 0 0";
        assert_eq!(parse_stat(stat), Some(("a (b) c".to_string(), 69238880)));
    }

    #[test]
    fn kernel_thread_flags_are_told_apart() {
        let t = |flags| Task {
            pid: 1,
            comm: "k".into(),
            flags,
            allowed: CpuSet::new(),
        };
        assert!(t(2129984).is_movable_kernel_thread()); // kthreadd
        assert!(!t(69238880).is_movable_kernel_thread()); // kworker/R-…: per-CPU
        assert!(!t(4194560).is_kernel_thread()); // a user process
    }
}
