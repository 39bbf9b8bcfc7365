//! Where the cgroup hierarchies are, read from the mount table under the root (not from
//! `statfs`, so tests can describe any layout), and whether systemd manages the host; and a
//! process's place in them (`/proc/PID/cgroup`, `ProcCgroup`), parsed here for every reader.

use std::convert::Infallible;
use std::str::FromStr;

use super::fs::HostFs;
use super::mounts::MountTable;
use crate::error::Result;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The cgroup v1 hierarchy with the cpuset controller (path relative to the root).
    pub v1_cpuset: Option<String>,
    /// The cgroup v2 hierarchy, if mounted.
    pub v2: Option<String>,
    /// Whether v2's root offers the cpuset controller (it does not while v1 holds it).
    pub v2_has_cpuset: bool,
    /// systemd is PID 1 (`/run/systemd/system` exists, as `sd_booted()` checks).
    pub systemd: bool,
}

pub fn detect(fs: &dyn HostFs) -> Result<CgroupMounts> {
    let mounts = fs.read("proc/mounts")?;
    let mut found = parse_mounts(&mounts);
    if let Some(v2) = &found.v2 {
        let controllers = fs
            .read(&format!("{v2}/cgroup.controllers"))
            .unwrap_or_default();
        found.v2_has_cpuset = controllers.split_whitespace().any(|c| c == "cpuset");
    }
    found.systemd = fs.exists("run/systemd/system");
    Ok(found)
}

/// The cgroup hierarchies of a mount table (`/proc/mounts` format).
fn parse_mounts(text: &str) -> CgroupMounts {
    let Ok(table) = text.parse::<MountTable>();
    let mut out = CgroupMounts::default();
    for mount in &table.mounts {
        let rel = mount.relative_point().to_string();
        match mount.fstype.as_str() {
            "cgroup2" if out.v2.is_none() => out.v2 = Some(rel),
            "cgroup" if mount.has_option("cpuset") => {
                out.v1_cpuset.get_or_insert(rel);
            }
            _ => {}
        }
    }
    out
}

/// A process's cgroups, one per hierarchy: `/proc/PID/cgroup`, lines of
/// `ID:CONTROLLERS:PATH` (v1: `4:cpuset:/machine/qemu-1-db`; v2: `0::/system.slice/x.service`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcCgroup {
    pub entries: Vec<CgroupEntry>,
}

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// The hierarchy's ID (0: the unified v2 hierarchy).
    pub hierarchy: u32,
    /// The v1 controllers bound to the hierarchy (`cpuset`, `name=systemd`); none for v2.
    pub controllers: Vec<String>,
    /// The cgroup, from the hierarchy's root (`/machine.slice/…`). It may hold `:`.
    pub path: String,
}

impl ProcCgroup {
    /// The path in the unified (v2) hierarchy: the `0::` line.
    pub fn unified(&self) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.hierarchy == 0 && e.controllers.is_empty())
            .map(|e| e.path.as_str())
    }

    /// The path in the v1 hierarchy that `controller` is bound to.
    pub fn of_controller(&self, controller: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.controllers.iter().any(|c| c == controller))
            .map(|e| e.path.as_str())
    }

    /// The path in the hierarchy that carries cpusets: v1's `cpuset` one when `v1`, else the
    /// unified one.
    pub fn cpuset_path(&self, v1: bool) -> Option<&str> {
        if v1 {
            self.of_controller("cpuset")
        } else {
            self.unified()
        }
    }

    /// The first component of the unified path (`system.slice`); `None` for the root cgroup.
    pub fn unified_top(&self) -> Option<&str> {
        self.unified()?
            .trim_start_matches('/')
            .split('/')
            .next()
            .filter(|top| !top.is_empty())
    }

    /// Every path, one per hierarchy.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.path.as_str())
    }
}

/// The kernel writes the file: a line that is not `ID:CONTROLLERS:PATH` with a numeric ID is
/// passed over, so a reader never fails on it (a process that exits meanwhile reads as empty).
impl FromStr for ProcCgroup {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<ProcCgroup, Infallible> {
        let entries = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ':');
                let hierarchy = fields.next()?.trim().parse().ok()?;
                let controllers = fields.next()?;
                let path = fields.next()?.trim_end();
                Some(CgroupEntry {
                    hierarchy,
                    controllers: controllers
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                    path: path.to_string(),
                })
            })
            .collect();
        Ok(ProcCgroup { entries })
    }
}

/// `/proc/PID/cgroup` of `pid` under the root; empty when the process is gone.
pub fn of_process(fs: &dyn HostFs, pid: u32) -> ProcCgroup {
    let text = fs.read(&format!("proc/{pid}/cgroup")).unwrap_or_default();
    let Ok(parsed) = text.parse();
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_layout_finds_v1_cpuset_and_v2() {
        let m = parse_mounts(
            "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
             cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n",
        );
        assert_eq!(m.v1_cpuset.as_deref(), Some("sys/fs/cgroup/cpuset"));
        assert_eq!(m.v2.as_deref(), Some("sys/fs/cgroup/unified"));
    }

    #[test]
    fn pure_v2_has_no_v1_cpuset() {
        let m = parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n");
        assert_eq!(m.v1_cpuset, None);
        assert_eq!(m.v2.as_deref(), Some("sys/fs/cgroup"));
    }

    #[test]
    fn octal_escapes_in_mount_points_are_decoded() {
        let m = parse_mounts("cgroup /sys/fs/cgroup/cpu\\040set cgroup rw,cpuset 0 0\n");
        assert_eq!(m.v1_cpuset.as_deref(), Some("sys/fs/cgroup/cpu set"));
    }

    #[test]
    fn first_v2_and_first_v1_cpuset_hierarchy_win() {
        let m = parse_mounts(
            "cgroup2 /a cgroup2 rw 0 0\ncgroup2 /b cgroup2 rw 0 0\n\
             cgroup /c cgroup rw,cpuset 0 0\ncgroup /d cgroup rw,cpuset 0 0\n",
        );
        assert_eq!(
            (m.v2.as_deref(), m.v1_cpuset.as_deref()),
            (Some("a"), Some("c"))
        );
    }

    fn cgroup(text: &str) -> ProcCgroup {
        text.parse().unwrap()
    }

    #[test]
    fn hybrid_proc_cgroup_has_a_path_per_hierarchy() {
        let c = cgroup(
            "12:cpu,cpuacct:/machine/qemu-1-db.libvirt-qemu\n\
             4:cpuset:/kvmtune\n\
             1:name=systemd:/init.scope\n\
             0::/init.scope\n",
        );
        assert_eq!(c.entries.len(), 4);
        assert_eq!(c.of_controller("cpuset"), Some("/kvmtune"));
        assert_eq!(
            c.of_controller("cpuacct"),
            Some("/machine/qemu-1-db.libvirt-qemu")
        );
        assert_eq!(c.of_controller("name=systemd"), Some("/init.scope"));
        assert_eq!(c.of_controller("memory"), None);
        assert_eq!(c.unified(), Some("/init.scope"));
        assert_eq!(c.cpuset_path(true), Some("/kvmtune"));
        assert_eq!(c.cpuset_path(false), Some("/init.scope"));
        assert_eq!(c.unified_top(), Some("init.scope"));
    }

    #[test]
    fn proc_cgroup_edge_cases() {
        // A path may hold ':'; the root cgroup has no top; a v1 hierarchy with ID 0 does not
        // count as the unified one; lines that are not ID:CONTROLLERS:PATH are passed over.
        let c = cgroup("0::/a:b/c\n");
        assert_eq!(c.unified(), Some("/a:b/c"));
        assert_eq!(cgroup("0::/\n").unified_top(), None);
        assert_eq!(cgroup("0:cpuset:/x\n").unified(), None);
        let c = cgroup("garbage\nx::/y\n3:cpuset\n\n5:cpuset:/ok\n");
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.of_controller("cpuset"), Some("/ok"));
        assert_eq!(cgroup(""), ProcCgroup::default());
    }
}
