//! The mount table (`/proc/mounts`: `SOURCE POINT FSTYPE OPTIONS DUMP PASS` a line), parsed
//! here once for every reader: where the cgroup hierarchies are (`host::cgroup`), which
//! hugetlbfs mounts hold which page size (`launch::qemu_args::Hugetlbfs`).

use std::convert::Infallible;
use std::str::FromStr;

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    /// The mount point, absolute, with the kernel's octal escapes (`\040`) decoded.
    pub point: String,
    pub fstype: String,
    /// The options, in order (`rw`, `cpuset`, `pagesize=1G`).
    pub options: Vec<String>,
}

impl Mount {
    /// The mount point relative to the root (`sys/fs/cgroup`), as `HostFs` paths are.
    pub fn relative_point(&self) -> &str {
        self.point.trim_start_matches('/')
    }

    /// Whether the option `name` is given (`cpuset` in a v1 cgroup's options).
    pub fn has_option(&self, name: &str) -> bool {
        self.options.iter().any(|o| o == name)
    }

    /// The value of the option `key=value` (`pagesize`).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// Every mount, in the table's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    pub mounts: Vec<Mount>,
}

impl MountTable {
    /// The mounts of file system type `fstype`, in order.
    pub fn of_type<'a>(&'a self, fstype: &'a str) -> impl Iterator<Item = &'a Mount> + 'a {
        self.mounts.iter().filter(move |m| m.fstype == fstype)
    }
}

/// The kernel writes the table: a line with fewer than four fields is not one of its lines
/// and is passed over, so a reader never fails on it.
impl FromStr for MountTable {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<MountTable, Infallible> {
        let mounts = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let source = fields.next()?;
                let point = fields.next()?;
                let fstype = fields.next()?;
                let options = fields.next()?;
                Some(Mount {
                    source: unescape(source),
                    point: unescape(point),
                    fstype: fstype.to_string(),
                    options: options.split(',').map(str::to_string).collect(),
                })
            })
            .collect();
        Ok(MountTable { mounts })
    }
}

/// /proc/mounts escapes spaces and other characters in paths as octal (`\040`).
fn unescape(path: &str) -> String {
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

    fn table(text: &str) -> MountTable {
        text.parse().unwrap()
    }

    #[test]
    fn fields_and_options_are_read_in_order() {
        let t = table(
            "cgroup /sys/fs/cgroup/cpuset cgroup rw,nosuid,relatime,cpuset 0 0\n\
             hugetlbfs /dev/hugepages1G hugetlbfs rw,relatime,pagesize=1024M 0 0\n",
        );
        assert_eq!(t.mounts.len(), 2);
        let m = &t.mounts[0];
        assert_eq!((m.source.as_str(), m.fstype.as_str()), ("cgroup", "cgroup"));
        assert_eq!(m.relative_point(), "sys/fs/cgroup/cpuset");
        assert!(m.has_option("cpuset") && !m.has_option("cpu"));
        assert_eq!(t.mounts[1].option("pagesize"), Some("1024M"));
        assert_eq!(t.mounts[1].option("page"), None);
        assert_eq!(t.of_type("hugetlbfs").count(), 1);
    }

    #[test]
    fn octal_escapes_in_mount_points_are_decoded() {
        let t = table("none /mnt/huge\\040pages hugetlbfs rw 0 0\n");
        assert_eq!(t.mounts[0].point, "/mnt/huge pages");
        assert_eq!(unescape("a\\040b"), "a b");
        // Not an escape: kept as written.
        assert_eq!(unescape("a\\9zz"), "a\\9zz");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn short_and_empty_lines_are_passed_over() {
        let t = table("\n  \ncgroup2 /sys/fs/cgroup\nproc /proc proc rw 0 0\n");
        assert_eq!(t.mounts.len(), 1);
        assert_eq!(t.mounts[0].fstype, "proc");
        assert_eq!(table("").mounts, Vec::new());
    }
}
