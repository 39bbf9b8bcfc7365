//! The `cgroup v2` method (a v2 hierarchy with the cpuset controller, without systemd): a
//! `kvmtune.housekeeping` cgroup holding the housekeeping CPUs, into which the root cgroup's
//! processes move, and `cpuset.cpus` on the other top-level cgroups (services a supervisor put
//! there). libvirt's cgroups and those of the virtualization daemons are left alone. A process
//! born later in the root cgroup is swept at the next VM event or by `kvmtune watch`.

use super::{file_change, same_cpus, Confiner, Inputs};
use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::host::cgroup::{self, CgroupMounts};
use crate::host::tasks::UNCONFINED_DAEMONS;
use crate::host::HostFs;

/// The cgroup kvmtune creates for host processes in the v2 hierarchy (a name systemd would not
/// use for a unit).
pub const V2_HOUSEKEEPING: &str = "kvmtune.housekeeping";
/// cgroups that belong to libvirt's VMs (v2 top level; v1 `machine`).
const VM_CGROUPS: [&str; 2] = ["machine.slice", "machine"];

/// The method; `isolation::confiner(Method::CgroupV2)`.
pub struct CgroupV2;

impl Confiner for CgroupV2 {
    fn changes(&self, input: &Inputs, housekeeping: &CpuSet) -> Result<Vec<Change>> {
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

    fn host_cpus(&self, fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<CpuSet> {
        let path = format!(
            "{}/{V2_HOUSEKEEPING}/cpuset.cpus.effective",
            mounts.v2.as_ref()?
        );
        CpuSet::parse(&fs.read(&path).ok()?).ok()
    }

    fn swept_root<'m>(&self, mounts: &'m CgroupMounts) -> Option<&'m str> {
        mounts.v2.as_deref()
    }

    fn housekeeping_cgroup(&self, mounts: &CgroupMounts) -> Option<String> {
        Some(format!("{}/{V2_HOUSEKEEPING}", mounts.v2.as_ref()?))
    }
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
