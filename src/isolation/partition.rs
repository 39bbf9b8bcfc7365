//! The `partition` method: the isolated CPUs form a cgroup v2 isolated partition
//! (`cpuset.cpus.partition = isolated`), kvmtune's own cgroup `kvmtune.isolated` under the root,
//! which holds the QEMU of every isolating VM that `kvmtune run` starts.
//!
//! The kernel then takes those CPUs out of every other cgroup's effective set, and so from every
//! host task, now and later, and out of the scheduler's load balancing: no process is moved and
//! nothing needs watching. It leaves the masks of the root cgroup's kernel threads alone, and
//! before 6.8 the unbound workqueues too, so `confine` still moves those.
//!
//! Why not libvirt's VMs yet: their vCPU threads live in libvirt's cgroups
//! (`machine.slice/…scope/libvirt/vcpuN` on cgroup v2), which exist only once QEMU runs. A
//! partition beside them would take the isolated CPUs from them too; one inside them is set up
//! at `started`, which is not built yet. `choose_method` keeps them on the older methods.
//!
//! The partition sits directly under the root, a partition root, so it is valid with its own
//! `cpuset.cpus`; its `cpuset.cpus.exclusive` is set too: since 6.7 an exclusive list wins over
//! a sibling's `cpuset.cpus`, and a sibling's exclusive list that overlaps it is refused at the
//! write (EINVAL) instead of leaving an invalid partition behind.
//!
//! Chosen by what the kernel offers, never by its version (distributions backport): the root's
//! `cpuset.cpus.isolated` and, wherever cpuset is enabled below the root, the partition files.
//! The partition's state is read back after the changes: the kernel reports a setup it cannot
//! honour as `isolated invalid (REASON)` instead of failing the write.

use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::host::cgroup::CgroupMounts;
use crate::host::HostFs;

/// kvmtune's isolated partition, under the cgroup v2 root.
pub const PARTITION: &str = "kvmtune.isolated";
/// The root's list of CPUs in valid isolated partitions (6.7 and later, or a backport).
const ROOT_ISOLATED: &str = "cpuset.cpus.isolated";
pub const PARTITION_FILE: &str = "cpuset.cpus.partition";
pub const EXCLUSIVE_FILE: &str = "cpuset.cpus.exclusive";

/// Where kvmtune's partition is (relative to the root), on a host with cgroup v2.
pub fn path(mounts: &CgroupMounts) -> Option<String> {
    mounts.v2.as_ref().map(|root| format!("{root}/{PARTITION}"))
}

/// Whether the kernel offers isolated partitions with exclusive CPU lists: `Err` says what
/// is missing, in words for `kvmtune status` and the log.
pub fn probe(fs: &dyn HostFs, mounts: &CgroupMounts) -> Result<(), String> {
    let root = match &mounts.v2 {
        Some(root) if mounts.v2_has_cpuset => root,
        _ => return Err("no cgroup v2 hierarchy with the cpuset controller".into()),
    };
    if mounts.v1_cpuset.is_some() {
        return Err("the cpuset controller is bound to cgroup v1".into());
    }
    if !fs.exists(&format!("{root}/{ROOT_ISOLATED}")) {
        return Err(format!(
            "the kernel has no isolated partitions (no /{root}/{ROOT_ISOLATED})"
        ));
    }
    // A child that has cpuset files shows whether the partition files come with them.
    for child in fs.list(root).unwrap_or_default() {
        let dir = format!("{root}/{child}");
        if !fs.exists(&format!("{dir}/cpuset.cpus")) {
            continue;
        }
        for file in [PARTITION_FILE, EXCLUSIVE_FILE] {
            if !fs.exists(&format!("{dir}/{file}")) {
                return Err(format!("the kernel has no /{dir}/{file}"));
            }
        }
        break;
    }
    Ok(())
}

/// The changes that make `isolated` kvmtune's isolated partition, from the host's state now.
pub fn changes(fs: &dyn HostFs, mounts: &CgroupMounts, isolated: &CpuSet) -> Result<Vec<Change>> {
    let root = mounts
        .v2
        .clone()
        .ok_or_else(|| Error::Host("the cgroup v2 hierarchy is no longer mounted".into()))?;
    let mut changes = Vec::new();
    let control = fs.read(&format!("{root}/cgroup.subtree_control"))?;
    if !control.split_whitespace().any(|c| c == "cpuset") {
        changes.push(Change::Controller {
            cgroup: root.clone(),
            controller: "cpuset".into(),
            enable: true,
        });
    }
    let ours = format!("{root}/{PARTITION}");
    let cpus = isolated.to_string();
    if !fs.exists(&ours) {
        changes.push(Change::CreateCgroup {
            path: ours,
            parent: root,
            settings: vec![
                ("cpuset.cpus".into(), cpus.clone()),
                (EXCLUSIVE_FILE.into(), cpus),
                (PARTITION_FILE.into(), "isolated".into()),
            ],
        });
        return Ok(changes);
    }
    // Widening: the CPUs first, then the exclusive list; narrowing: the other way round, so
    // that the exclusive list never names a CPU `cpuset.cpus` lacks.
    let exclusive = read_cpus(fs, &format!("{ours}/{EXCLUSIVE_FILE}"))?;
    let mut files = vec![
        file(fs, &format!("{ours}/cpuset.cpus"), isolated)?,
        file(fs, &format!("{ours}/{EXCLUSIVE_FILE}"), isolated)?,
    ];
    if !exclusive.is_subset(isolated) {
        files.reverse();
    }
    changes.extend(files.into_iter().flatten());
    let state = fs.read(&format!("{ours}/{PARTITION_FILE}"))?;
    if state.trim() != "isolated" {
        changes.push(Change::File {
            path: format!("{ours}/{PARTITION_FILE}"),
            before: mode(&state).to_string(),
            after: "isolated".into(),
        });
    }
    Ok(changes)
}

/// After the changes: is the partition a valid isolated one holding exactly `isolated`, and do
/// the host's other tasks (the root cgroup's effective CPUs) stay off those CPUs?
pub fn check(fs: &dyn HostFs, mounts: &CgroupMounts, isolated: &CpuSet) -> Result<()> {
    let root = mounts
        .v2
        .as_ref()
        .ok_or_else(|| Error::Host("the cgroup v2 hierarchy is no longer mounted".into()))?;
    let ours = format!("{root}/{PARTITION}");
    let state_path = format!("{ours}/{PARTITION_FILE}");
    let state = fs.read(&state_path)?;
    let state = state.trim();
    if state != "isolated" {
        let why = match reason(state) {
            Some(why) => format!("{why} (/{state_path} reads '{} invalid')", mode(state)),
            None => format!("/{state_path} reads '{state}'"),
        };
        return Err(Error::Refused(format!(
            "the kernel does not make CPUs {isolated} an isolated partition: {why}. Nothing was changed."
        )));
    }
    let effective_path = format!("{ours}/cpuset.cpus.effective");
    let effective = read_cpus(fs, &effective_path)?;
    if effective != *isolated {
        return Err(Error::Refused(format!(
            "the isolated partition should hold CPUs {isolated}, but /{effective_path} reads {effective}. Nothing was changed."
        )));
    }
    let host_path = format!("{root}/cpuset.cpus.effective");
    let host = read_cpus(fs, &host_path)?;
    let shared = host.intersection(isolated);
    if !shared.is_empty() {
        return Err(Error::Refused(format!(
            "host tasks may still run on CPUs {shared} (/{host_path} reads {host}). Nothing was changed."
        )));
    }
    Ok(())
}

/// The CPUs host tasks may use while the partition holds: the root's effective CPUs.
pub fn host_cpus(fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<CpuSet> {
    let root = mounts.v2.as_ref()?;
    CpuSet::parse(&fs.read(&format!("{root}/cpuset.cpus.effective")).ok()?).ok()
}

/// The kernel's reason in `isolated invalid (REASON)`.
pub fn reason(state: &str) -> Option<&str> {
    let (_, rest) = state.split_once(" invalid (")?;
    rest.strip_suffix(')')
}

/// The mode alone (`isolated` of `isolated invalid (…)`): what can be written back.
fn mode(state: &str) -> &str {
    state.split_whitespace().next().unwrap_or("member")
}

fn read_cpus(fs: &dyn HostFs, path: &str) -> Result<CpuSet> {
    let text = fs.read(path)?;
    CpuSet::parse(&text).map_err(|e| Error::parse(fs.display(path), &text, e))
}

fn file(fs: &dyn HostFs, path: &str, cpus: &CpuSet) -> Result<Option<Change>> {
    let now = read_cpus(fs, path)?;
    Ok((now != *cpus).then(|| Change::File {
        path: path.to_string(),
        before: now.to_string(),
        after: cpus.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_reason_is_read_from_an_invalid_state() {
        assert_eq!(
            reason("isolated invalid (Parent unable to distribute cpu downstream)"),
            Some("Parent unable to distribute cpu downstream")
        );
        assert_eq!(reason("isolated"), None);
    }

    #[test]
    fn an_invalid_state_writes_back_as_its_mode() {
        assert_eq!(
            mode("isolated invalid (Parent is not a partition root)"),
            "isolated"
        );
        assert_eq!(mode("member\n"), "member");
    }
}
