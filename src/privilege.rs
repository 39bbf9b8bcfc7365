//! Whether this process may change the host. Not root: libvirt's session daemon runs the hook
//! as its user, and the hook does nothing (handled by the caller). Root without the
//! capabilities kvmtune needs (a container, a daemon started with a reduced bounding set):
//! writes would fail one by one halfway through; refuse before the first one, in one line.

use caps::{CapSet, Capability};

use crate::error::{Error, Result};

/// What kvmtune's writes need beyond uid 0:
/// - CAP_SYS_NICE: setting the CPU affinity of threads of other users (QEMU's, whose pinned
///   masks kvmtune puts back) and of kernel threads;
/// - CAP_DAC_OVERRIDE: cgroup files delegated to other users (systemd's user slices), and
///   kernel files whose mode does not grant root write access by ownership alone.
pub const NEEDED: [Capability; 2] = [Capability::CAP_SYS_NICE, Capability::CAP_DAC_OVERRIDE];

/// The capabilities of `NEEDED` missing from `effective`.
pub fn missing_from(effective: &caps::CapsHashSet) -> Vec<Capability> {
    NEEDED
        .iter()
        .filter(|c| !effective.contains(c))
        .copied()
        .collect()
}

/// `Ok` when kvmtune may make changes: not root (then nothing is ours to check), or root with
/// every capability of `NEEDED` in its effective set.
pub fn require() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let effective = caps::read(None, CapSet::Effective)
        .map_err(|e| Error::State(format!("cannot read this process's capabilities: {e}")))?;
    let missing = missing_from(&effective);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
    Err(Error::Refused(format!(
        "runs as root without the capabilities {} that changing the host needs (a reduced capability bounding set?). Nothing was changed.",
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named() {
        let mut set = caps::CapsHashSet::new();
        set.insert(Capability::CAP_SYS_NICE);
        assert_eq!(missing_from(&set), vec![Capability::CAP_DAC_OVERRIDE]);
        set.insert(Capability::CAP_DAC_OVERRIDE);
        assert!(missing_from(&set).is_empty());
    }
}
