//! CPU isolation: while VMs that ask for it run, every host task that is not part of a VM is
//! confined to the housekeeping CPUs (online CPUs minus the union of the VMs' isolated sets).
//!
//! How, by host (chosen from the mount table and systemd's presence, or by policy):
//! - systemd on cgroup v2: runtime `AllowedCPUs` on `system.slice`, `user.slice` and
//!   `init.scope`, so that units started later are confined from birth (the daemons too: see
//!   `SYSTEMD_CONFINED_UNITS`);
//! - cgroup v2 without systemd: a `kvmtune.housekeeping` cgroup the root cgroup's processes
//!   move into, and `cpuset.cpus` on the other top-level cgroups;
//! - cgroup v1 (and hybrid hosts): a `kvmtune` cpuset beside libvirt's `machine` cpuset, into
//!   which the root cpuset's processes move;
//! - isolated cpuset partitions (`partition`) holding the VMs' vCPU threads: the kernel itself
//!   takes the isolated CPUs from every other cgroup (see `partition`).
//!
//! The confining methods never touch libvirt's own cgroups (partitions are made in them: only
//! their `cpuset.cpus.exclusive` and `cpuset.cpus.partition`). With cgroupfs methods the
//! daemons' processes stay where they are as well: libvirtd keeps the right to place a new QEMU
//! on any CPU. Unbound kernel threads and the workqueue cpumasks follow the housekeeping set
//! with every method; per-CPU kernel threads cannot move and are reported by `status`.
//!
//! The first value kvmtune found for everything it changed is kept in the ledger
//! (`IsolationHold::baseline`) and written back when the last isolated VM stops.

pub mod drift;
pub mod partition;

use crate::change::{Change, DropIn};
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::host::cgroup::{self, CgroupMounts};
use crate::host::systemctl::{self, Systemctl};
use crate::host::tasks::{list_tasks_movable_cpus, Task, UNCONFINED_DAEMONS};
use crate::host::HostFs;
use crate::policy::IsolationMethod;
use crate::state::holds::{IsolationSettings, Method};

/// The cgroup kvmtune creates for host processes, in a v1 cpuset hierarchy.
pub const V1_HOUSEKEEPING: &str = "kvmtune";
/// The same in the v2 hierarchy (a name systemd would not use for a unit).
pub const V2_HOUSEKEEPING: &str = "kvmtune.housekeeping";
/// cgroups that belong to libvirt's VMs (v2 top level; v1 `machine`).
const VM_CGROUPS: [&str; 2] = ["machine.slice", "machine"];
pub(crate) const WORKQUEUE_MASKS: [&str; 2] = [
    "sys/devices/virtual/workqueue/cpumask",
    "sys/bus/workqueue/devices/writeback/cpumask",
];

/// What the host offers a method, beyond its mounts: read by the caller, so that choosing
/// stays a pure function.
pub struct Offers {
    /// Whether the kernel has isolated partitions (`partition::probe`): `Err` says why not.
    pub partition: Result<(), String>,
}

/// The method chosen, and why (shown by `kvmtune status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub method: Method,
    pub why: String,
}

/// Pick the method from the policy, the host's cgroup mounts and what the kernel offers.
pub fn choose_method(
    policy: IsolationMethod,
    mounts: &CgroupMounts,
    offers: &Offers,
) -> Result<Choice, String> {
    let v2_cpuset = mounts.v2.is_some() && mounts.v2_has_cpuset;
    let choice = |method: Method, why: String| Ok(Choice { method, why });
    let partition = offers.partition.clone();
    match policy {
        IsolationMethod::Off => Err("the policy turns isolation off (cpus.isolation = \"off\")".into()),
        IsolationMethod::Partition => match partition {
            Ok(()) => choice(Method::Partition, "cpus.isolation = \"partition\"".into()),
            Err(e) => Err(format!("cpus.isolation = \"partition\", but {e}")),
        },
        IsolationMethod::Auto if partition.is_ok() => choice(
            Method::Partition,
            "auto: the kernel offers isolated partitions".into(),
        ),
        IsolationMethod::Systemd if mounts.systemd && v2_cpuset => {
            choice(Method::Systemd, "cpus.isolation = \"systemd\"".into())
        }
        IsolationMethod::Systemd => Err("cpus.isolation = \"systemd\", but systemd does not run on a cgroup v2 hierarchy with the cpuset controller".into()),
        IsolationMethod::Auto if mounts.systemd && v2_cpuset => choice(
            Method::Systemd,
            format!("auto: systemd runs on cgroup v2 (no partition: {})", partition.unwrap_err()),
        ),
        IsolationMethod::Auto | IsolationMethod::Cgroupfs => {
            let why = match (policy, partition) {
                (IsolationMethod::Auto, Err(e)) => format!("auto (no partition: {e})"),
                _ => "cpus.isolation = \"cgroupfs\"".into(),
            };
            if mounts.v1_cpuset.is_some() {
                choice(Method::CgroupV1, why)
            } else if v2_cpuset {
                choice(Method::CgroupV2, why)
            } else {
                Err("no cgroup hierarchy with the cpuset controller is mounted".into())
            }
        }
    }
}

/// What isolation needs to know about the host now.
pub struct View {
    pub mounts: CgroupMounts,
    pub online: CpuSet,
    /// Every process (the kernel threads alone for the partition method: `read_for`);
    /// `allowed` is read for movable kernel threads only (the only ones isolation compares
    /// it for).
    pub tasks: Vec<Task>,
}

impl View {
    pub fn read(fs: &dyn HostFs) -> Result<View> {
        Ok(View {
            mounts: cgroup::detect(fs)?,
            online: crate::host::topology::parse_list(fs, "sys/devices/system/cpu/online")?,
            tasks: list_tasks_movable_cpus(fs),
        })
    }

    /// What `method` needs: the partition method moves no process, so it looks at the kernel
    /// threads alone (no work per process); the others at every task.
    pub fn read_for(fs: &dyn HostFs, method: Method) -> Result<View> {
        if method != Method::Partition {
            return View::read(fs);
        }
        let Some(tasks) = crate::host::tasks::list_kernel_threads(fs) else {
            return View::read(fs);
        };
        Ok(View {
            mounts: cgroup::detect(fs)?,
            online: crate::host::topology::parse_list(fs, "sys/devices/system/cpu/online")?,
            tasks,
        })
    }

    /// Whether `tasks` holds every task, not the kernel threads alone.
    pub fn has_every_task(&self) -> bool {
        self.tasks.iter().any(|t| !t.is_kernel_thread())
    }
}

/// Everything needed to compute changes.
pub struct Inputs<'a> {
    pub fs: &'a dyn HostFs,
    pub systemctl: &'a dyn Systemctl,
    pub settings: &'a IsolationSettings,
    pub view: &'a View,
    /// QEMU processes of isolated VMs that `kvmtune run` started (they are in no VM cgroup).
    pub keep: &'a [u32],
    /// Who holds the isolated CPUs (the partition method places each holder's).
    pub holders: &'a partition::Holders,
}

/// The changes that confine host tasks to `housekeeping` from the host's state now, whether
/// isolation is being set up or only widened or narrowed.
pub fn confine(
    input: &Inputs,
    method: Method,
    housekeeping: &CpuSet,
    isolated: &CpuSet,
) -> Result<Vec<Change>> {
    let mut changes = match method {
        Method::CgroupV1 => cgroup_v1(input, housekeeping)?,
        Method::CgroupV2 => cgroup_v2(input, housekeeping)?,
        Method::Systemd => systemd_units(input, housekeeping)?,
        Method::Partition => partition::changes(input.fs, &input.view.mounts, input.holders)?,
    };
    if input.settings.move_kernel_threads {
        // A partition's coming and going resets the root's kernel threads itself (see
        // `kernel_threads`): note even those already where kvmtune would put them.
        let note_all = method == Method::Partition;
        changes.extend(kernel_threads(input, housekeeping, note_all)?);
    }
    if let Some(governor) = &input.settings.governor {
        changes.extend(governors(input.fs, isolated, governor)?);
    }
    Ok(changes)
}

fn cgroup_v1(input: &Inputs, housekeeping: &CpuSet) -> Result<Vec<Change>> {
    let fs = input.fs;
    let mount =
        input.view.mounts.v1_cpuset.clone().ok_or_else(|| {
            Error::Host("the cgroup v1 cpuset hierarchy is no longer mounted".into())
        })?;
    // Hierarchies mounted with `noprefix` name the files `cpus`, `mems`.
    let prefix = if fs.exists(&format!("{mount}/cpuset.cpus")) {
        "cpuset."
    } else {
        ""
    };
    let ours = format!("{mount}/{V1_HOUSEKEEPING}");
    let mut changes = Vec::new();
    if fs.exists(&ours) {
        changes.extend(file_change(
            fs,
            &format!("{ours}/{prefix}cpus"),
            &housekeeping.to_string(),
            same_cpus,
        )?);
    } else {
        // A new v1 cpuset starts with empty cpus and mems and refuses tasks (ENOSPC) until
        // both are set: mems first, copied from the parent.
        let mems = fs.read(&format!("{mount}/{prefix}mems"))?;
        changes.push(Change::CreateCgroup {
            path: ours.clone(),
            parent: mount.clone(),
            settings: vec![
                (format!("{prefix}mems"), mems.trim().to_string()),
                (format!("{prefix}cpus"), housekeeping.to_string()),
            ],
        });
    }
    changes.push(Change::MoveProcesses {
        from: mount,
        to: ours,
        keep: input.keep.to_vec(),
    });
    Ok(changes)
}

fn cgroup_v2(input: &Inputs, housekeeping: &CpuSet) -> Result<Vec<Change>> {
    let fs = input.fs;
    let root = v2_root(input)?;
    let mut changes = Vec::new();
    let control = fs.read(&format!("{root}/cgroup.subtree_control"))?;
    let enabled = control.split_whitespace().any(|c| c == "cpuset");
    if !enabled {
        changes.push(Change::Controller {
            cgroup: root.clone(),
            controller: "cpuset".into(),
            enable: true,
        });
    }
    let ours = format!("{root}/{V2_HOUSEKEEPING}");
    let cpus = housekeeping.to_string();
    if fs.exists(&ours) {
        changes.extend(file_change(
            fs,
            &format!("{ours}/cpuset.cpus"),
            &cpus,
            same_cpus,
        )?);
    } else {
        changes.push(Change::CreateCgroup {
            path: ours.clone(),
            parent: root.clone(),
            settings: vec![("cpuset.cpus".into(), cpus.clone())],
        });
    }
    changes.push(Change::MoveProcesses {
        from: root.clone(),
        to: ours,
        keep: input.keep.to_vec(),
    });
    // Processes already in other top-level cgroups (services a supervisor put there) are
    // confined where they are; libvirt's and the daemons' cgroups are left alone.
    let daemon_cgroups = daemon_top_cgroups(input);
    for name in fs.list(&root)? {
        let dir = format!("{root}/{name}");
        if name == V2_HOUSEKEEPING
            || VM_CGROUPS.contains(&name.as_str())
            || daemon_cgroups.contains(&name)
            || !fs.exists(&format!("{dir}/cgroup.procs"))
        {
            continue;
        }
        let path = format!("{dir}/cpuset.cpus");
        let current = if enabled {
            fs.read(&path).unwrap_or_default()
        } else {
            String::new()
        };
        if !same_cpus(&current, &cpus) {
            changes.push(Change::File {
                path,
                before: current.trim().to_string(),
                after: cpus.clone(),
            });
        }
    }
    Ok(changes)
}

/// The cgroup v2 hierarchy (relative to the root).
fn v2_root(input: &Inputs) -> Result<String> {
    input
        .view
        .mounts
        .v2
        .clone()
        .ok_or_else(|| Error::Host("the cgroup v2 hierarchy is no longer mounted".into()))
}

/// The units whose `AllowedCPUs` confines host tasks under systemd: the three top-level units
/// that hold every process outside the VMs' `machine.slice`. Whole slices, not the units in
/// them: a service, timer, scope or session started later is born confined, with no one
/// watching for it. The virtualization daemons are confined with `system.slice`: libvirt
/// widens a new QEMU's affinity to "all CPUs" quietly (the kernel keeps the part inside the
/// daemon's cpuset), and pins vCPUs only once QEMU is in its `machine.slice` scope.
pub const SYSTEMD_CONFINED_UNITS: [&str; 3] = ["system.slice", "user.slice", "init.scope"];

fn systemd_units(input: &Inputs, housekeeping: &CpuSet) -> Result<Vec<Change>> {
    let cpus = housekeeping.to_string();
    let mut changes = Vec::new();
    for unit in SYSTEMD_CONFINED_UNITS {
        let current = input.systemctl.property(unit, "AllowedCPUs")?;
        if !same_cpus(&current, &cpus) {
            let drop_in = systemctl::runtime_drop_in(input.systemctl, unit, "AllowedCPUs")?;
            changes.push(Change::UnitProperty {
                unit: unit.to_string(),
                property: "AllowedCPUs".into(),
                before: current,
                after: cpus.clone(),
                drop_in: if input.fs.exists(&drop_in) {
                    DropIn::Kept
                } else {
                    DropIn::Creates(drop_in)
                },
            });
        }
    }
    Ok(changes)
}

/// Unbound kernel threads and the workqueue cpumasks (new unbound work runs there).
///
/// `note_all`: also a thread already on exactly the housekeeping CPUs, bound to fewer than
/// every CPU (kswapd0 on node 0's), as a change to where it is. When a partition comes or goes
/// the kernel gives every kernel thread of the root cgroup the CPUs no partition holds
/// (`cpuset_update_tasks_cpumask`), and such a thread would be left on every CPU at release.
fn kernel_threads(input: &Inputs, housekeeping: &CpuSet, note_all: bool) -> Result<Vec<Change>> {
    let online = &input.view.online;
    let mut changes: Vec<Change> = input
        .view
        .tasks
        .iter()
        .filter(|t| {
            t.is_movable_kernel_thread()
                && (t.allowed != *housekeeping || (note_all && t.allowed != *online))
        })
        .map(|t| Change::Affinity {
            pid: t.pid,
            comm: t.comm.clone(),
            before: t.allowed.clone(),
            after: housekeeping.clone(),
        })
        .collect();
    for path in WORKQUEUE_MASKS {
        if !input.fs.exists(path) {
            continue;
        }
        let current = input.fs.read(path)?;
        let groups = current.trim().split(',').count();
        let parsed = CpuSet::parse_mask(&current)
            .map_err(|e| Error::parse(input.fs.display(path), &current, e))?;
        if parsed != *housekeeping {
            changes.push(Change::File {
                path: path.to_string(),
                before: current.trim().to_string(),
                after: housekeeping.to_mask(groups),
            });
        }
    }
    Ok(changes)
}

fn governors(fs: &dyn HostFs, isolated: &CpuSet, governor: &str) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for cpu in isolated.iter() {
        let path = governor_path(cpu);
        if fs.exists(&path) {
            changes.extend(file_change(fs, &path, governor, |a, b| {
                a.trim() == b.trim()
            })?);
        }
    }
    Ok(changes)
}

pub fn governor_path(cpu: u32) -> String {
    format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
}

/// The change of one file to `after`, unless it already holds it.
fn file_change(
    fs: &dyn HostFs,
    path: &str,
    after: &str,
    same: fn(&str, &str) -> bool,
) -> Result<Option<Change>> {
    let current = fs.read(path)?;
    Ok((!same(&current, after)).then(|| Change::File {
        path: path.to_string(),
        before: current.trim().to_string(),
        after: after.to_string(),
    }))
}

fn same_cpus(a: &str, b: &str) -> bool {
    match (CpuSet::parse(a), CpuSet::parse(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

/// Top-level v2 cgroups that hold a virtualization daemon.
fn daemon_top_cgroups(input: &Inputs) -> Vec<String> {
    input
        .view
        .tasks
        .iter()
        .filter(|t| UNCONFINED_DAEMONS.contains(&t.comm.as_str()))
        .filter_map(|t| {
            let cgroup = cgroup::of_process(input.fs, t.pid);
            cgroup.unified_top().map(str::to_string)
        })
        .collect()
}

/// Where the CPUs a method confines host tasks to can be read back, and what they are.
pub fn effective_housekeeping(
    fs: &dyn HostFs,
    method: Method,
    mounts: &CgroupMounts,
) -> Option<CpuSet> {
    let path = match method {
        Method::CgroupV1 => {
            let mount = mounts.v1_cpuset.as_ref()?;
            let ours = format!("{mount}/{V1_HOUSEKEEPING}");
            if fs.exists(&format!("{ours}/cpuset.effective_cpus")) {
                format!("{ours}/cpuset.effective_cpus")
            } else {
                format!("{ours}/cpuset.cpus")
            }
        }
        Method::CgroupV2 => format!(
            "{}/{V2_HOUSEKEEPING}/cpuset.cpus.effective",
            mounts.v2.as_ref()?
        ),
        Method::Systemd => format!("{}/user.slice/cpuset.cpus.effective", mounts.v2.as_ref()?),
        Method::Partition => return partition::host_cpus(fs, mounts),
    };
    CpuSet::parse(&fs.read(&path).ok()?).ok()
}

/// Record `changes` in the baseline: the first value found for each thing is what to restore.
pub fn remember(baseline: &mut Vec<Change>, changes: &[Change]) {
    for change in changes {
        let Some(target) = change.target() else {
            continue;
        };
        if !baseline
            .iter()
            .any(|b| b.target().as_deref() == Some(target.as_str()))
        {
            baseline.push(change.clone());
        }
    }
}

/// Changes that give back what no longer needs to be changed: everything when `isolated` is
/// empty, else the governors of CPUs no longer isolated. Removes them from the baseline.
pub fn give_back(fs: &dyn HostFs, baseline: &mut Vec<Change>, isolated: &CpuSet) -> Vec<Change> {
    let released_governor = |c: &Change| match c {
        Change::File { path, .. } => {
            path.ends_with("/cpufreq/scaling_governor")
                && !isolated.iter().any(|cpu| governor_path(cpu) == *path)
        }
        _ => false,
    };
    let keep = |c: &Change| !isolated.is_empty() && !released_governor(c);
    let mut back = Vec::new();
    let mut kept = Vec::new();
    for change in baseline.drain(..) {
        if keep(&change) {
            kept.push(change);
        } else if let Some(mut restore) = change.restore() {
            // Show (and journal) what is there now, not what kvmtune first wrote.
            if let Change::File { path, before, .. } = &mut restore {
                if let Ok(now) = fs.read(path) {
                    *before = now.trim().to_string();
                }
            }
            back.push(restore);
        }
    }
    *baseline = kept;
    // A file of a cgroup kvmtune created and now removes needs no value back: the cgroup goes
    // with its files. (Writing it first is worse than useless: an interrupted release redone
    // after the removal would fail on the missing file.)
    let removed: Vec<String> = back
        .iter()
        .filter_map(|c| match c {
            Change::RemoveCgroup { path, .. } => Some(format!("{path}/")),
            _ => None,
        })
        .collect();
    back.retain(|c| match c {
        Change::File { path, .. } => !removed.iter().any(|dir| path.starts_with(dir)),
        _ => true,
    });
    // Undo in reverse order of making: processes leave our cgroup before the controller goes.
    back.reverse();
    // Kernel threads get their CPUs back last, once no partition holds them: an isolated
    // partition takes its CPUs from the root cgroup's tasks, and the kernel refuses (EINVAL) a
    // mask all of whose CPUs it holds (kswapd1 on node 1's CPUs 2-3, seen on 6.12).
    let (threads, mut rest): (Vec<Change>, Vec<Change>) = back
        .into_iter()
        .partition(|c| matches!(c, Change::Affinity { .. }));
    rest.extend(threads);
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(systemd: bool) -> CgroupMounts {
        CgroupMounts {
            v1_cpuset: None,
            v2: Some("sys/fs/cgroup".into()),
            v2_has_cpuset: true,
            systemd,
        }
    }

    fn offers(partition: Result<(), &str>) -> Offers {
        Offers {
            partition: partition.map_err(str::to_string),
        }
    }

    #[test]
    fn auto_picks_a_partition_where_the_kernel_offers_one_even_under_systemd() {
        let choice = choose_method(IsolationMethod::Auto, &v2(true), &offers(Ok(()))).unwrap();
        assert_eq!(choice.method, Method::Partition);
        assert_eq!(choice.why, "auto: the kernel offers isolated partitions");
    }

    #[test]
    fn auto_without_partitions_under_systemd_takes_systemd_and_says_why() {
        let choice = choose_method(IsolationMethod::Auto, &v2(true), &offers(Err("no x"))).unwrap();
        assert_eq!(choice.method, Method::Systemd);
        assert_eq!(
            choice.why,
            "auto: systemd runs on cgroup v2 (no partition: no x)"
        );
    }

    #[test]
    fn auto_without_partitions_takes_cgroup_v2_and_names_what_is_missing() {
        let missing = "no /sys/fs/cgroup/cpuset.cpus.isolated";
        let choice =
            choose_method(IsolationMethod::Auto, &v2(false), &offers(Err(missing))).unwrap();
        assert_eq!(choice.method, Method::CgroupV2);
        assert!(choice.why.contains(missing), "{}", choice.why);
    }

    #[test]
    fn the_partition_policy_refuses_where_there_is_none_and_says_why() {
        let err = choose_method(
            IsolationMethod::Partition,
            &v2(false),
            &offers(Err("the kernel has no isolated partitions")),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "cpus.isolation = \"partition\", but the kernel has no isolated partitions"
        );
    }
}
