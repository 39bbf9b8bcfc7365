//! Whether isolation still holds, read-only and cheap enough to ask every watch interval:
//! - what kvmtune set (the hold's baseline: its cgroup and that cgroup's CPUs, the cpuset
//!   controller, the CPUs of top-level cgroups and systemd units, the workqueue masks, the
//!   governors) still reads as set; what a method judges itself (a partition's state) through
//!   its `Confiner::drift`, and
//! - which host processes sit in the root cgroup that confinement emptied: on cgroupfs hosts a
//!   process started later by something outside a cgroup (a daemon's child, a login on the
//!   console) is born there, on the isolated CPUs.
//!
//! Kernel threads are looked at once, when first seen: a new one does not inherit kthreadd's
//! mask (the kernel gives it every housekeeping CPU of `isolcpus=`, so all CPUs here), so one a
//! driver starts while a VM runs (hwrng, when virtio-rng loads) can run on the VM's CPUs.
//! Reading every task costs what a hook call does: the watcher's slower full look (the one
//! that writes the metrics) catches a known one that was moved back.

use std::collections::HashSet;

use super::{confiner, WORKQUEUE_MASKS};
use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::host::cgroup::CgroupMounts;
use crate::host::tasks::{read_allowed, read_stat, Task, UNCONFINED_DAEMONS};
use crate::host::HostFs;
use crate::state::holds::IsolationHold;

/// What differs from what kvmtune set, one line each (empty: everything holds).
pub fn drifted(fs: &dyn HostFs, hold: &IsolationHold, mounts: &CgroupMounts) -> Vec<String> {
    let mut out = Vec::new();
    let cpus_differ = |path: &str, out: &mut Vec<String>| match fs.read(path) {
        Ok(text) if CpuSet::parse(&text).as_ref() == Ok(&hold.housekeeping) => {}
        Ok(text) => out.push(format!(
            "/{path} holds '{}', kvmtune set {}",
            text.trim(),
            hold.housekeeping
        )),
        Err(e) => out.push(e.to_string()),
    };
    let method = confiner(hold.method);
    for change in &hold.baseline {
        // What is the method's own (a partition's state) it judges itself.
        if let Some(differs) = method.drift(fs, change) {
            out.extend(differs);
            continue;
        }
        match change {
            Change::CreateCgroup { path, settings, .. } => {
                if !fs.exists(path) {
                    out.push(format!("kvmtune's cgroup /{path} is gone"));
                    continue;
                }
                for (name, _) in settings.iter().filter(|(n, _)| is_cpus_file(n)) {
                    cpus_differ(&format!("{path}/{name}"), &mut out);
                }
            }
            Change::File { path, after, .. } => {
                if WORKQUEUE_MASKS.contains(&path.as_str()) {
                    match fs.read(path).map(|m| CpuSet::parse_mask(&m)) {
                        Ok(Ok(mask)) if mask == hold.housekeeping => {}
                        Ok(_) => out.push(format!(
                            "/{path} is not the housekeeping CPUs {}",
                            hold.housekeeping
                        )),
                        Err(e) => out.push(e.to_string()),
                    }
                } else if path.ends_with("/cpufreq/scaling_governor") {
                    match fs.read(path) {
                        Ok(now) if now.trim() == after.trim() => {}
                        Ok(now) => {
                            out.push(format!("/{path} is '{}', kvmtune set {after}", now.trim()))
                        }
                        Err(e) => out.push(e.to_string()),
                    }
                } else if path.rsplit('/').next().is_some_and(is_cpus_file) {
                    cpus_differ(path, &mut out);
                }
            }
            Change::Controller {
                cgroup,
                controller,
                enable: true,
            } => {
                let path = format!("{cgroup}/cgroup.subtree_control");
                let on = fs
                    .read(&path)
                    .is_ok_and(|t| t.split_whitespace().any(|c| c == controller));
                if !on {
                    out.push(format!("/{path} no longer enables {controller}"));
                }
            }
            // systemctl is a process to start: the unit's cgroup shows the same, for a read.
            Change::UnitProperty { unit, .. } => {
                if let Some(v2) = &mounts.v2 {
                    cpus_differ(&format!("{v2}/{unit}/cpuset.cpus"), &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

/// `cpuset.cpus`, or `cpus` in a v1 hierarchy mounted with `noprefix`.
fn is_cpus_file(name: &str) -> bool {
    name == "cpuset.cpus" || name == "cpus"
}

/// A host process in the root cgroup of a cgroupfs method: confinement would move it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    pub pid: u32,
    pub comm: String,
}

/// The root cgroup's kernel threads, known from an earlier look, so that a look reads only the
/// /proc/PID/stat of the few other processes there (the root cgroup of a large host holds
/// thousands of kernel threads, and nothing else once host tasks are confined). Only kernel
/// threads: a kernel thread never becomes anything else, whereas a daemon's child may `exec`
/// another program under its PID. A PID that leaves the root cgroup leaves this set at the next
/// look; for a PID to come back as another task between two looks, the kernel's PIDs would have
/// to wrap around within one watch interval.
#[derive(Debug, Default)]
pub struct Stays {
    kernel_threads: HashSet<u32>,
    /// Whether a look has been made: the first knows no kernel thread yet, and takes those it
    /// finds as the hook that isolated saw them.
    looked: bool,
}

/// What sits in the root cgroup that isolation did not put there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RootLook {
    /// Host processes that confinement would move (cgroupfs methods only: systemd confines
    /// whole slices, so processes are born in them).
    pub processes: Vec<Stray>,
    /// Kernel threads born since the last look that may run outside the housekeeping CPUs
    /// and can be moved (not per-CPU ones), when the hold moves kernel threads.
    pub kernel_threads: Vec<Stray>,
}

/// Host processes in the root cgroup that confinement would move: not kernel threads, not the
/// virtualization daemons, not the VM processes in `keep`. The caller's own process counts
/// (a watcher started before isolation began is a host task like any other). And the new
/// kernel threads there that may run on isolated CPUs.
pub fn strays(
    fs: &dyn HostFs,
    hold: &IsolationHold,
    mounts: &CgroupMounts,
    keep: &[u32],
    stays: &mut Stays,
) -> RootLook {
    let mut out = RootLook::default();
    // Kernel threads live in the root of the cpuset hierarchy whatever the method.
    let method = confiner(hold.method);
    let Some(root) = method.cpuset_root(mounts) else {
        return out;
    };
    let procs = fs.read(&format!("{root}/cgroup.procs")).unwrap_or_default();
    let pids: Vec<u32> = procs
        .lines()
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let listed: HashSet<u32> = pids.iter().copied().collect();
    stays.kernel_threads.retain(|pid| listed.contains(pid));
    let first_look = !std::mem::replace(&mut stays.looked, true);
    let sweeps = method.swept_root(mounts).is_some();
    for pid in pids {
        if stays.kernel_threads.contains(&pid) {
            continue;
        }
        let Some((comm, flags)) = read_stat(fs, pid) else {
            continue; // gone meanwhile
        };
        // The allowed CPUs are read only for a new movable kernel thread: the root cgroup
        // holds thousands of per-CPU ones, and daemons kept there are read at every look.
        let task = Task {
            pid,
            comm,
            flags,
            allowed: CpuSet::new(),
        };
        if task.is_kernel_thread() {
            stays.kernel_threads.insert(pid);
            if !first_look
                && hold.settings.move_kernel_threads
                && task.is_movable_kernel_thread()
                && read_allowed(fs, pid).is_some_and(|a| !a.is_subset(&hold.housekeeping))
            {
                out.kernel_threads.push(Stray {
                    pid,
                    comm: task.comm,
                });
            }
        } else if sweeps
            && !UNCONFINED_DAEMONS.contains(&task.comm.as_str())
            && !keep.contains(&pid)
        {
            out.processes.push(Stray {
                pid,
                comm: task.comm,
            });
        }
    }
    out
}
