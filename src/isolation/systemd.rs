//! The `systemd` method (systemd on a cgroup v2 hierarchy with the cpuset controller): runtime
//! `AllowedCPUs` on `system.slice`, `user.slice` and `init.scope` (`SYSTEMD_CONFINED_UNITS`), so
//! that units started later are confined from birth and no process is moved. This is the
//! method; `host::systemctl` is the port it reads and sets unit properties through.

use super::{same_cpus, Confiner, Inputs};
use crate::change::{Change, DropIn};
use crate::cpulist::CpuSet;
use crate::error::Result;
use crate::host::cgroup::CgroupMounts;
use crate::host::systemctl;
use crate::host::HostFs;

/// The units whose `AllowedCPUs` confines host tasks under systemd: the three top-level units
/// that hold every process outside the VMs' `machine.slice`. Whole slices, not the units in
/// them: a service, timer, scope or session started later is born confined, with no one
/// watching for it. The virtualization daemons are confined with `system.slice`: libvirt
/// widens a new QEMU's affinity to "all CPUs" quietly (the kernel keeps the part inside the
/// daemon's cpuset), and pins vCPUs only once QEMU is in its `machine.slice` scope.
pub const SYSTEMD_CONFINED_UNITS: [&str; 3] = ["system.slice", "user.slice", "init.scope"];

/// The method; `isolation::confiner(Method::Systemd)`.
pub struct Systemd;

impl Confiner for Systemd {
    fn changes(&self, input: &Inputs, housekeeping: &CpuSet) -> Result<Vec<Change>> {
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

    /// `user.slice`'s effective CPUs: the kernel's view of what `AllowedCPUs` gave the units.
    fn host_cpus(&self, fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<CpuSet> {
        let path = format!("{}/user.slice/cpuset.cpus.effective", mounts.v2.as_ref()?);
        CpuSet::parse(&fs.read(&path).ok()?).ok()
    }
}
