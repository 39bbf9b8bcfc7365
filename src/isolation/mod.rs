//! CPU isolation: while VMs that ask for it run, every host task that is not part of a VM is
//! confined to the housekeeping CPUs (online CPUs minus the union of the VMs' isolated sets).
//!
//! How, by host (chosen from the mount table and systemd's presence, or by policy), one
//! `Confiner` each, one file each; `confiner` maps the ledger's `Method` to it:
//! - `systemd` on cgroup v2: runtime `AllowedCPUs` on `system.slice`, `user.slice` and
//!   `init.scope`, so that units started later are confined from birth (the daemons too: see
//!   `SYSTEMD_CONFINED_UNITS`);
//! - `cgroup_v2` without systemd: a `kvmtune.housekeeping` cgroup the root cgroup's processes
//!   move into, and `cpuset.cpus` on the other top-level cgroups;
//! - `cgroup_v1` (and hybrid hosts): a `kvmtune` cpuset beside libvirt's `machine` cpuset,
//!   into which the root cpuset's processes move;
//! - isolated cpuset partitions (`partition`) holding the VMs' vCPU threads: the kernel itself
//!   takes the isolated CPUs from every other cgroup (see `partition`).
//!
//! The confining methods never touch libvirt's own cgroups (partitions are made in them: only
//! their `cpuset.cpus.exclusive` and `cpuset.cpus.partition`). With cgroupfs methods the
//! daemons' processes stay where they are as well: libvirtd keeps the right to place a new QEMU
//! on any CPU. Unbound kernel threads and the workqueue cpumasks follow the housekeeping set
//! with every method, here in `confine`; per-CPU kernel threads cannot move and are reported by
//! `status`. Governors and giving back (`give_back`) are shared too.
//!
//! The first value kvmtune found for everything it changed is kept in the ledger
//! (`IsolationHold::baseline`) and written back when the last isolated VM stops.

pub mod cgroup_v1;
pub mod cgroup_v2;
pub mod drift;
pub mod partition;
pub mod systemd;

use std::collections::HashMap;

use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::host::cgroup::{self, CgroupMounts};
use crate::host::systemctl::Systemctl;
use crate::host::tasks::{list_tasks_movable_cpus, Task};
use crate::host::HostFs;
use crate::policy::IsolationMethod;
use crate::state::holds::{IsolationSettings, Method};
use crate::state::Ledger;

pub use cgroup_v1::V1_HOUSEKEEPING;
pub use cgroup_v2::V2_HOUSEKEEPING;
pub use systemd::SYSTEMD_CONFINED_UNITS;

pub(crate) const WORKQUEUE_MASKS: [&str; 2] = [
    "sys/devices/virtual/workqueue/cpumask",
    "sys/bus/workqueue/devices/writeback/cpumask",
];

/// One isolation method: what it changes to keep host tasks off the isolated CPUs, where it
/// reads back the CPUs they may run on, and what of its own a look must find still in place.
/// What every method does alike stays in this module: the kernel threads and workqueue masks
/// (`confine`), the governors, the baseline (`remember`, `give_back`), the generic drift of
/// what kvmtune set (`drift::drifted`). The ledger keeps the method as data (`Method`, whose
/// serialized form is the ledger's); `confiner` gives its behaviour.
pub trait Confiner {
    /// The method's own changes, from the host's state now, whether isolation is being set up
    /// or only widened or narrowed: those that confine host tasks to `housekeeping` (the
    /// partition method: those that give the isolated CPUs' holders their partitions).
    fn changes(&self, input: &Inputs, housekeeping: &CpuSet) -> Result<Vec<Change>>;

    /// Where host tasks may run now, read back from what the method set (`None`: unreadable).
    fn host_cpus(&self, fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<CpuSet>;

    /// After the changes (and for `kvmtune status`): does the kernel keep host tasks where the
    /// method asked? cgroup v2 falls back to the parent's CPUs silently instead of failing a
    /// write. By default, `host_cpus` must read `housekeeping`.
    fn check(
        &self,
        fs: &dyn HostFs,
        mounts: &CgroupMounts,
        housekeeping: &CpuSet,
        _holders: &partition::Holders,
    ) -> Result<(), Unconfined> {
        match self.host_cpus(fs, mounts) {
            Some(effective) if effective == *housekeeping => Ok(()),
            effective => Err(Unconfined::Elsewhere(effective)),
        }
    }

    /// Whether the method needs every process looked at (`View::read_for`), or the kernel
    /// threads alone (it moves no process).
    fn reads_every_task(&self) -> bool {
        true
    }

    /// Whether making or undoing the method's changes resets the root cgroup's kernel threads
    /// (a partition's coming and going does): `confine` then notes every movable kernel thread
    /// not on every CPU, and `apply::isolation::reconfine_kernel_threads` puts them back.
    fn resets_kernel_threads(&self) -> bool {
        false
    }

    /// Whether the VMs of `holders` may join isolation held with this method, for an operation
    /// that reads the policy (`Err` refuses, in words).
    fn admits(&self, _holders: &partition::Holders) -> Result<()> {
        Ok(())
    }

    /// The CPUs the method keeps host tasks off now, of those the ledger's VMs isolate.
    fn isolated_now(&self, ledger: &Ledger) -> CpuSet {
        ledger.isolated_except("")
    }

    /// `Some`: `change` (of the hold's baseline) is the method's own to judge, with what
    /// differs from what kvmtune set, one line each; `None`: `drift::drifted` judges it.
    fn drift(&self, _fs: &dyn HostFs, _change: &Change) -> Option<Vec<String>> {
        None
    }

    /// What the method should have made for the VMs held and has not, although nothing drifted
    /// (a vCPU libvirt plugged since the last VM event), one line each: read-only, for
    /// `kvmtune watch`, which reasserts isolation when there is any.
    fn not_in_place(
        &self,
        _fs: &dyn HostFs,
        _mounts: &CgroupMounts,
        _holders: &partition::Holders,
    ) -> Vec<String> {
        Vec::new()
    }

    /// The root of the cpuset hierarchy, where kernel threads live.
    fn cpuset_root<'m>(&self, mounts: &'m CgroupMounts) -> Option<&'m str> {
        mounts.v2.as_deref()
    }

    /// The root cgroup confinement empties and sweeps again (cgroupfs methods); `None` where
    /// processes are born confined (systemd's slices) or no process moves (partitions).
    fn swept_root<'m>(&self, _mounts: &'m CgroupMounts) -> Option<&'m str> {
        None
    }

    /// The housekeeping cgroup host processes go to, for cgroupfs methods.
    fn housekeeping_cgroup(&self, _mounts: &CgroupMounts) -> Option<String> {
        None
    }

    /// Whether the QEMU `kvmtune run` starts goes into the method's own cgroup (kvmtune's
    /// partition) rather than only out of the housekeeping cgroup (`launch::placement`).
    fn holds_run_qemu(&self) -> bool {
        false
    }
}

/// Why `Confiner::check` finds host tasks not where the method keeps them.
#[derive(Debug)]
pub enum Unconfined {
    /// The kernel gives host tasks these CPUs, not the housekeeping ones (`None`: where they
    /// run cannot be read back).
    Elsewhere(Option<CpuSet>),
    /// The method's own read-back failed (a partition's state), in words.
    Failed(Error),
}

/// The behaviour of the method the ledger records: the one place `Method` becomes code.
pub fn confiner(method: Method) -> &'static dyn Confiner {
    match method {
        Method::Systemd => &systemd::Systemd,
        Method::CgroupV2 => &cgroup_v2::CgroupV2,
        Method::CgroupV1 => &cgroup_v1::CgroupV1,
        Method::Partition => &partition::Partition,
    }
}

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

    /// What `method` needs (`Confiner::reads_every_task`): the partition method moves no
    /// process, so it looks at the kernel threads alone (no work per process); the others at
    /// every task.
    pub fn read_for(fs: &dyn HostFs, method: Method) -> Result<View> {
        if confiner(method).reads_every_task() {
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
    /// What kvmtune has changed so far with the values before (the hold's baseline; empty
    /// when isolation is being set up): a kernel thread it moved earlier is placed from where
    /// it was before, not from where kvmtune put it.
    pub baseline: &'a [Change],
}

/// The changes that confine host tasks to `housekeeping` from the host's state now, whether
/// isolation is being set up or only widened or narrowed: the method's own
/// (`Confiner::changes`), then the kernel threads and workqueue masks and the governors,
/// alike for every method.
pub fn confine(
    input: &Inputs,
    method: Method,
    housekeeping: &CpuSet,
    isolated: &CpuSet,
) -> Result<Vec<Change>> {
    let confiner = confiner(method);
    let mut changes = confiner.changes(input, housekeeping)?;
    if input.settings.move_kernel_threads {
        // A partition's coming and going resets the root's kernel threads itself (see
        // `kernel_threads`): note even those already where kvmtune would put them.
        let note_all = confiner.resets_kernel_threads();
        changes.extend(kernel_threads(input, housekeeping, note_all)?);
    }
    if let Some(governor) = &input.settings.governor {
        changes.extend(governors(input.fs, isolated, governor)?);
    }
    Ok(changes)
}

/// Where movable kernel threads run while `housekeeping` are the host's CPUs: on those of a
/// thread's own CPUs that are housekeeping CPUs, so that one pinned with taskset, or bound to
/// its NUMA node like kswapd, stays there; on every housekeeping CPU when none of its own is
/// one. The kernel does the same with a taskset pin when an isolated partition forms. Its own
/// CPUs are those before kvmtune moved it (the hold's baseline), else those it is on.
pub struct KernelThreadPlaces<'a> {
    before: HashMap<(u32, &'a str), &'a CpuSet>,
    housekeeping: &'a CpuSet,
}

impl<'a> KernelThreadPlaces<'a> {
    pub fn new(baseline: &'a [Change], housekeeping: &'a CpuSet) -> Self {
        let before = baseline
            .iter()
            .filter_map(|c| match c {
                Change::Affinity {
                    pid, comm, before, ..
                } => Some(((*pid, comm.as_str()), before)),
                _ => None,
            })
            .collect();
        KernelThreadPlaces {
            before,
            housekeeping,
        }
    }

    /// Where `thread` runs.
    pub fn cpus(&self, thread: &Task) -> CpuSet {
        let own = self
            .before
            .get(&(thread.pid, thread.comm.as_str()))
            .copied()
            .unwrap_or(&thread.allowed);
        let within = own.intersection(self.housekeeping);
        if within.is_empty() {
            self.housekeeping.clone()
        } else {
            within
        }
    }
}

/// Unbound kernel threads and the workqueue cpumasks (new unbound work runs there).
///
/// `note_all`: also a thread already where it goes, bound to fewer than every CPU (kswapd0 on
/// node 0's), as a change to where it is. When a partition comes or goes the kernel gives
/// every kernel thread of the root cgroup the CPUs no partition holds
/// (`cpuset_update_tasks_cpumask`), and such a thread would be left on every CPU at release.
fn kernel_threads(input: &Inputs, housekeeping: &CpuSet, note_all: bool) -> Result<Vec<Change>> {
    let online = &input.view.online;
    let places = KernelThreadPlaces::new(input.baseline, housekeeping);
    let mut changes: Vec<Change> = input
        .view
        .tasks
        .iter()
        .filter(|t| t.is_movable_kernel_thread())
        .filter_map(|t| {
            let after = places.cpus(t);
            (t.allowed != after || (note_all && t.allowed != *online)).then(|| Change::Affinity {
                pid: t.pid,
                comm: t.comm.clone(),
                before: t.allowed.clone(),
                after,
            })
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
