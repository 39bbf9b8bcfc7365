//! Host tasks as /proc shows them: name, kernel-thread flags, allowed CPUs, and setting a
//! task's affinity (the one host change that is a system call, not a file: behind a trait).

use super::fs::HostFs;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};

/// Process names never moved out of the CPUs they may use: the daemons that place a new QEMU
/// on its CPUs fail that placement (EINVAL) and hang VM starts when they are confined.
pub const UNCONFINED_DAEMONS: [&str; 2] = ["libvirtd", "virtqemud"];

/// `PF_KTHREAD` in /proc/PID/stat's flags: a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;
/// `PF_NO_SETAFFINITY`: a per-CPU kernel thread (or one the kernel pins): its affinity and its
/// cgroup cannot be changed (EINVAL).
const PF_NO_SETAFFINITY: u64 = 0x0400_0000;

/// Name and flags of processes by PID, as read moments ago: what working out the changes saw,
/// so that making them need not read each process again.
pub type Known = std::collections::HashMap<u32, (String, u64)>;

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
    let (comm, flags) = read_stat(fs, pid)?;
    Some(Task {
        pid,
        comm,
        flags,
        allowed: read_allowed(fs, pid)?,
    })
}

/// `Cpus_allowed_list` from /proc/PID/status.
pub fn read_allowed(fs: &dyn HostFs, pid: u32) -> Option<CpuSet> {
    cpus_allowed_list(&fs.read(&format!("proc/{pid}/status")).ok()?)
}

/// `Cpus_allowed_list` of a /proc/PID/status text.
fn cpus_allowed_list(status: &str) -> Option<CpuSet> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|v| CpuSet::parse(v).ok())
}

/// A task's name and flags from /proc/PID/stat alone; `None` if it is gone.
pub fn read_stat(fs: &dyn HostFs, pid: u32) -> Option<(String, u64)> {
    parse_stat(&fs.read_record(&format!("proc/{pid}/stat")).ok()?)
}

/// Every task (process, not thread) in /proc.
pub fn list_tasks(fs: &dyn HostFs) -> Vec<Task> {
    pids(fs).filter_map(|pid| read_task(fs, pid)).collect()
}

/// Every task in /proc, with the allowed CPUs of movable kernel threads only (the others get
/// an empty `allowed`): what isolation needs, at one read per process instead of two. A large
/// host has thousands of processes (most of them per-CPU kernel threads), and each hook call
/// that isolates looks at all of them.
pub fn list_tasks_movable_cpus(fs: &dyn HostFs) -> Vec<Task> {
    pids(fs)
        .filter_map(|pid| read_task_movable_cpus(fs, pid))
        .collect()
}

/// One task, its allowed CPUs read only if it is a movable kernel thread.
fn read_task_movable_cpus(fs: &dyn HostFs, pid: u32) -> Option<Task> {
    let (comm, flags) = read_stat(fs, pid)?;
    let mut task = Task {
        pid,
        comm,
        flags,
        allowed: CpuSet::new(),
    };
    if task.is_movable_kernel_thread() {
        task.allowed = read_allowed(fs, pid)?;
    }
    Some(task)
}

/// The kernel threads alone, as `list_tasks_movable_cpus` reads them: kthreadd (PID 2) and
/// its children, which every kernel thread is, from `/proc/2/task/2/children`. A few hundred
/// reads where the host has thousands of processes. `None` where the kernel does not show a
/// task's children (`CONFIG_PROC_CHILDREN`).
pub fn list_kernel_threads(fs: &dyn HostFs) -> Option<Vec<Task>> {
    let children = fs.read("proc/2/task/2/children").ok()?;
    let pids = std::iter::once(2).chain(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    Some(
        pids.filter_map(|pid| read_task_movable_cpus(fs, pid))
            .filter(Task::is_kernel_thread)
            .collect(),
    )
}

fn pids(fs: &dyn HostFs) -> impl Iterator<Item = u32> {
    fs.list("proc")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.parse::<u32>().ok())
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
    fn kernels_from_6_2_keep_pins() {
        assert_eq!(release_at_least("6.18.44-fc-v595\n", (6, 2)), Some(true));
        assert_eq!(release_at_least("6.2.0", (6, 2)), Some(true));
        assert_eq!(release_at_least("6.1.158", (6, 2)), Some(false));
        assert_eq!(release_at_least("5.15.0-91-generic", (6, 2)), Some(false));
        assert_eq!(release_at_least("7.0-rc1", (6, 2)), Some(true));
        assert_eq!(release_at_least("garbage", (6, 2)), None);
        assert_eq!(release_at_least("", (6, 2)), None);
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

/// A thread whose CPU mask is narrower than its cpuset allows: somebody pinned it (libvirt's
/// `<vcpupin>`, `taskset`). Moving a task between cpusets, or enabling the cpuset controller
/// above it, resets such masks on kernels before 6.2, so kvmtune notes them first and puts
/// them back after.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinnedThread {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cpus: CpuSet,
}

/// Whether the kernel keeps the CPUs a thread asked for (`sched_setaffinity`, `taskset`) when
/// its cpuset changes: since 6.2 ("sched: Enforce user requested affinity") a move between
/// cpusets gives the thread the new cpuset's CPUs within those it asked for, and its own mask
/// again once the cpuset allows it. Then kvmtune need not note and put back pinned threads,
/// which costs a read of every thread's status on the host. An unreadable or odd
/// `/proc/sys/kernel/osrelease` counts as an older kernel (the safe side).
pub fn kernel_keeps_pins(fs: &dyn HostFs) -> bool {
    fs.read("proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| release_at_least(&r, (6, 2)))
        .unwrap_or(false)
}

/// `6.18.44-fc` ≥ (6, 2)? `None` when the release does not start with MAJOR.MINOR.
fn release_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse::<u32>().ok()?;
    let minor = parts.next()?.parse::<u32>().ok()?;
    Some((major, minor) >= want)
}

/// Every pinned thread of the user processes among `tasks` (the host's, as listed now).
pub fn pinned_threads(
    fs: &dyn HostFs,
    mounts: &super::cgroup::CgroupMounts,
    online: &CpuSet,
    tasks: &[Task],
) -> Vec<PinnedThread> {
    let mut out = Vec::new();
    // Most processes share a few cgroups: their CPUs are read once each.
    let mut cgroups = std::collections::HashMap::new();
    for task in tasks.iter().filter(|t| !t.is_kernel_thread()) {
        let allowed_by_cgroup =
            cgroup_cpus(fs, mounts, task.pid, &mut cgroups).unwrap_or_else(|| online.clone());
        let tids: Vec<u32> = fs
            .list(&format!("proc/{}/task", task.pid))
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect();
        for tid in tids {
            let Some((comm, cpus)) = thread_mask(fs, task.pid, tid) else {
                continue;
            };
            if cpus != allowed_by_cgroup && cpus.is_subset(&allowed_by_cgroup) {
                out.push(PinnedThread {
                    pid: task.pid,
                    tid,
                    comm,
                    cpus,
                });
            }
        }
    }
    out
}

/// A thread's name and allowed CPUs.
pub fn thread_mask(fs: &dyn HostFs, pid: u32, tid: u32) -> Option<(String, CpuSet)> {
    let status = fs.read(&format!("proc/{pid}/task/{tid}/status")).ok()?;
    let name = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))?
        .trim()
        .to_string();
    Some((name, cpus_allowed_list(&status)?))
}

/// The effective CPUs of the cpuset a process is in (v1 `cpuset`, else v2), `None` when
/// there is no cpuset to read. `seen` keeps each cgroup's answer.
fn cgroup_cpus(
    fs: &dyn HostFs,
    mounts: &super::cgroup::CgroupMounts,
    pid: u32,
    seen: &mut std::collections::HashMap<String, Option<CpuSet>>,
) -> Option<CpuSet> {
    if let Some(v1) = &mounts.v1_cpuset {
        let path = fs.read(&format!("proc/{pid}/cpuset")).ok()?;
        let dir = format!("{v1}{}", path.trim().trim_end_matches('/'));
        return seen
            .entry(dir)
            .or_insert_with_key(|dir| {
                let text = fs
                    .read(&format!("{dir}/cpuset.effective_cpus"))
                    .or_else(|_| fs.read(&format!("{dir}/cpuset.cpus")))
                    .ok()?;
                CpuSet::parse(&text).ok()
            })
            .clone();
    }
    let v2 = mounts.v2.as_ref()?;
    let path = super::cgroup::of_process(fs, pid).unified()?.to_string();
    seen.entry(path)
        .or_insert_with_key(|path| {
            let mut path = path.clone();
            loop {
                let file = format!("{v2}{}/cpuset.cpus.effective", path.trim_end_matches('/'));
                if let Ok(text) = fs.read(&file) {
                    return CpuSet::parse(&text).ok();
                }
                match path.rfind('/') {
                    Some(0) | None => return None,
                    Some(i) => path.truncate(i),
                }
            }
        })
        .clone()
}
