//! Where the cgroup hierarchies are, read from the mount table under the root (not from
//! `statfs`, so tests can describe any layout), and whether systemd manages the host.

use super::fs::HostFs;
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

/// The cgroup lines of a mount table (`/proc/mounts` format).
fn parse_mounts(text: &str) -> CgroupMounts {
    let mut out = CgroupMounts::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, mount_point, fstype, options, ..] = fields.as_slice() else {
            continue;
        };
        let rel = unescape(mount_point.trim_start_matches('/'));
        match *fstype {
            "cgroup2" if out.v2.is_none() => out.v2 = Some(rel),
            "cgroup" if options.split(',').any(|o| o == "cpuset") => {
                out.v1_cpuset.get_or_insert(rel);
            }
            _ => {}
        }
    }
    out
}

/// /proc/mounts escapes spaces and other characters in paths as octal (`\040`).
pub(crate) fn unescape(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&path[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(unescape("a\\040b"), "a b");
    }
}
