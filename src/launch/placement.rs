//! Where the QEMU of a VM that isolates CPUs runs: on those CPUs, outside the housekeeping
//! cgroup. kvmtune itself may have been swept into that cgroup (it is a host task, and another
//! VM may isolate CPUs already); a child would inherit it, and the housekeeping cpuset does not
//! allow the isolated CPUs. The child goes back to the root of the cpuset hierarchy, which
//! allows every CPU, before it becomes QEMU; its affinity then keeps it on its CPUs.

use crate::error::{Error, Result};
use crate::host::cgroup::detect;
use crate::host::HostFs;
use crate::isolation::{V1_HOUSEKEEPING, V2_HOUSEKEEPING};

/// Move `pid` to the root of the cpuset hierarchy if it sits in kvmtune's housekeeping cgroup.
/// Returns whether it moved.
pub fn leave_housekeeping(fs: &dyn HostFs, pid: u32) -> Result<bool> {
    let mounts = detect(fs)?;
    let (root, ours) = match (&mounts.v1_cpuset, &mounts.v2) {
        (Some(v1), _) => (v1, V1_HOUSEKEEPING),
        (None, Some(v2)) if mounts.v2_has_cpuset => (v2, V2_HOUSEKEEPING),
        _ => return Ok(false),
    };
    let v1 = mounts.v1_cpuset.is_some();
    let inside = crate::host::cgroup::of_process(fs, pid)
        .cpuset_path(v1)
        .is_some_and(|p| p.trim() == format!("/{ours}"));
    if !inside {
        return Ok(false);
    }
    fs.write(&format!("{root}/cgroup.procs"), &pid.to_string())
        .map_err(|e| match e {
            Error::Io { path, source, .. } => Error::io(
                "move QEMU out of the housekeeping cgroup through",
                path,
                source,
            ),
            other => other,
        })?;
    Ok(true)
}

/// Move `pid` (a VM's QEMU, before it `exec`s) into kvmtune's isolated partition, where the
/// isolated CPUs are: every other cgroup has lost them. Not journaled: the partition's removal
/// at release moves whatever is left back to the root.
pub fn enter_partition(fs: &dyn HostFs, pid: u32) -> Result<()> {
    let mounts = detect(fs)?;
    let dir = crate::isolation::partition::path(&mounts)
        .ok_or_else(|| Error::Host("the cgroup v2 hierarchy is no longer mounted".into()))?;
    fs.write(&format!("{dir}/cgroup.procs"), &pid.to_string())
        .map_err(|e| match e {
            Error::Io { path, source, .. } => Error::io(
                "move QEMU into the isolated partition through",
                path,
                source,
            ),
            other => other,
        })
}

/// Put `pid` (kvmtune run itself, a host task that waits for QEMU) into the housekeeping cgroup
/// while CPUs are isolated: the sweeps of host tasks skip the kvmtune process that makes them.
/// Returns whether it moved; nothing to do without a housekeeping cgroup (systemd units).
pub fn join_housekeeping(fs: &dyn HostFs, pid: u32) -> Result<bool> {
    let mounts = detect(fs)?;
    let dir = match (&mounts.v1_cpuset, &mounts.v2) {
        (Some(v1), _) => format!("{v1}/{V1_HOUSEKEEPING}"),
        (None, Some(v2)) => format!("{v2}/{V2_HOUSEKEEPING}"),
        _ => return Ok(false),
    };
    if !fs.exists(&dir) {
        return Ok(false);
    }
    fs.write(&format!("{dir}/cgroup.procs"), &pid.to_string())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RootFs;

    fn root(mounts: &str, cgroup: &str) -> (tempfile::TempDir, RootFs) {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("proc/mounts", mounts);
        put("proc/9/cgroup", cgroup);
        put("sys/fs/cgroup/cpuset/cgroup.procs", "");
        put("sys/fs/cgroup/cgroup.procs", "");
        put("sys/fs/cgroup/cgroup.controllers", "cpuset cpu memory");
        let fs = RootFs::new(dir.path());
        (dir, fs)
    }

    const V1: &str = "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n";
    const V2: &str = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";

    #[test]
    fn a_child_in_the_v1_housekeeping_cpuset_goes_to_the_root() {
        let (dir, fs) = root(V1, "4:memory:/\n3:cpuset:/kvmtune\n0::/\n");
        assert!(leave_housekeeping(&fs, 9).unwrap());
        let procs = std::fs::read_to_string(dir.path().join("sys/fs/cgroup/cpuset/cgroup.procs"));
        assert_eq!(procs.unwrap(), "9");
    }

    #[test]
    fn a_child_elsewhere_stays() {
        let (_d, fs) = root(V1, "3:cpuset:/machine/vm\n");
        assert!(!leave_housekeeping(&fs, 9).unwrap());
        let (_d, fs) = root(V2, "0::/user.slice\n");
        assert!(!leave_housekeeping(&fs, 9).unwrap());
    }

    #[test]
    fn the_wrapper_joins_the_housekeeping_cgroup_when_there_is_one() {
        let (dir, fs) = root(V1, "3:cpuset:/\n");
        assert!(!join_housekeeping(&fs, 9).unwrap());
        let ours = dir.path().join("sys/fs/cgroup/cpuset/kvmtune");
        std::fs::create_dir(&ours).unwrap();
        std::fs::write(ours.join("cgroup.procs"), "").unwrap();
        assert!(join_housekeeping(&fs, 9).unwrap());
        assert_eq!(
            std::fs::read_to_string(ours.join("cgroup.procs")).unwrap(),
            "9"
        );
    }

    #[test]
    fn a_child_in_the_v2_housekeeping_cgroup_goes_to_the_root() {
        let (dir, fs) = root(V2, "0::/kvmtune.housekeeping\n");
        assert!(leave_housekeeping(&fs, 9).unwrap());
        let procs = std::fs::read_to_string(dir.path().join("sys/fs/cgroup/cgroup.procs"));
        assert_eq!(procs.unwrap(), "9");
    }
}
