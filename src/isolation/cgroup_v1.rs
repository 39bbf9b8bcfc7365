//! The `cgroup v1` method (v1 and hybrid hosts, where the cpuset controller is bound to v1): a
//! `kvmtune` cpuset beside libvirt's `machine` cpuset, holding the housekeeping CPUs, into which
//! the root cpuset's processes move (the daemons' and `kvmtune run`'s VMs' stay). A process
//! born later in the root cpuset is swept there at the next VM event or by `kvmtune watch`.

use super::{file_change, same_cpus, Confiner, Inputs};
use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::host::cgroup::CgroupMounts;
use crate::host::HostFs;

/// The cgroup kvmtune creates for host processes, in a v1 cpuset hierarchy.
pub const V1_HOUSEKEEPING: &str = "kvmtune";

/// The method; `isolation::confiner(Method::CgroupV1)`.
pub struct CgroupV1;

impl Confiner for CgroupV1 {
    fn changes(&self, input: &Inputs, housekeeping: &CpuSet) -> Result<Vec<Change>> {
        let fs = input.fs;
        let mount = input.view.mounts.v1_cpuset.clone().ok_or_else(|| {
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

    fn host_cpus(&self, fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<CpuSet> {
        let mount = mounts.v1_cpuset.as_ref()?;
        let ours = format!("{mount}/{V1_HOUSEKEEPING}");
        let path = if fs.exists(&format!("{ours}/cpuset.effective_cpus")) {
            format!("{ours}/cpuset.effective_cpus")
        } else {
            format!("{ours}/cpuset.cpus")
        };
        CpuSet::parse(&fs.read(&path).ok()?).ok()
    }

    fn cpuset_root<'m>(&self, mounts: &'m CgroupMounts) -> Option<&'m str> {
        mounts.v1_cpuset.as_deref()
    }

    fn swept_root<'m>(&self, mounts: &'m CgroupMounts) -> Option<&'m str> {
        mounts.v1_cpuset.as_deref()
    }

    fn housekeeping_cgroup(&self, mounts: &CgroupMounts) -> Option<String> {
        Some(format!("{}/{V1_HOUSEKEEPING}", mounts.v1_cpuset.as_ref()?))
    }
}
