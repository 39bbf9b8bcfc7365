//! Host-wide kernel knobs kvmtune may hold for VMs: KSM (`/sys/kernel/mm/ksm`), transparent
//! hugepages (`/sys/kernel/mm/transparent_hugepage`) and sysctls under `/proc/sys`. Paths and
//! file formats only; which VM wants what is `plan::knobs`, making it so is `apply::knobs`.

use super::fs::HostFs;
use crate::error::{Error, Result};

pub const KSM_DIR: &str = "sys/kernel/mm/ksm";
/// 0 stop scanning (merged pages stay merged), 1 run, 2 stop and unmerge every page.
pub const KSM_RUN: &str = "sys/kernel/mm/ksm/run";
/// The kernel refuses a change (EBUSY) while any page is merged: unmerge (run = 2) first.
pub const KSM_MERGE_ACROSS_NODES: &str = "sys/kernel/mm/ksm/merge_across_nodes";
pub const KSM_PAGES_SHARED: &str = "sys/kernel/mm/ksm/pages_shared";
pub const KSM_PAGES_SHARING: &str = "sys/kernel/mm/ksm/pages_sharing";
/// The value of `run` that stops KSM and unmerges every page (synchronously).
pub const KSM_UNMERGE: &str = "2";
pub const THP_ENABLED: &str = "sys/kernel/mm/transparent_hugepage/enabled";
pub const THP_DEFRAG: &str = "sys/kernel/mm/transparent_hugepage/defrag";
pub const SYSCTL_DIR: &str = "proc/sys";

/// Sysctls kvmtune never holds as knobs: the hugepage reservation owns the pools, per node
/// (the global count spreads pages over every node and would undo that placement).
const RESERVED_SYSCTLS: [&str; 3] = [
    "proc/sys/vm/nr_hugepages",
    "proc/sys/vm/nr_hugepages_mempolicy",
    "proc/sys/vm/nr_overcommit_hugepages",
];

/// A choice file such as THP's `enabled`: every word the kernel offers, the selected one in
/// brackets (`always [madvise] never`). A write takes the bare word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    pub offered: Vec<String>,
    pub selected: String,
}

/// Parse a choice file; `None` when the text is not one (no bracketed word, or more than one).
pub fn parse_choices(text: &str) -> Option<Choices> {
    let mut offered = Vec::new();
    let mut selected = None;
    for word in text.split_whitespace() {
        match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(inner) if selected.is_none() && !inner.is_empty() => {
                selected = Some(inner.to_string());
                offered.push(inner.to_string());
            }
            Some(_) => return None,
            None => offered.push(word.to_string()),
        }
    }
    Some(Choices {
        offered,
        selected: selected?,
    })
}

/// The value of a knob as kvmtune compares, records and writes it back: the selected word of a
/// choice file, else the content with whitespace runs made one space (a multi-value sysctl such
/// as `kernel.printk` reads back tab-separated whatever was written).
pub fn value_of(text: &str) -> String {
    match parse_choices(text) {
        Some(c) => c.selected,
        None => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Whether two knob values mean the same to the kernel.
pub fn same_value(a: &str, b: &str) -> bool {
    value_of(a) == value_of(b)
}

/// The knob's value now; `None` when the file does not exist (a kernel without KSM or THP).
pub fn read_value(fs: &dyn HostFs, path: &str) -> Result<Option<String>> {
    if !fs.exists(path) {
        return Ok(None);
    }
    fs.read(path).map(|t| Some(value_of(&t)))
}

/// `/path` for messages.
pub fn shown(path: &str) -> String {
    format!("/{path}")
}

/// The file of a sysctl: `vm.stat_interval` or `vm/stat_interval` → `proc/sys/vm/stat_interval`.
/// Keys come from the policy and become a path written as root, so they are held to the
/// kernel's own alphabet: no empty, `.` or `..` component, nothing that could leave /proc/sys.
/// With slashes a component may hold dots (`net/ipv4/conf/eth0.10/rp_filter`).
pub fn sysctl_path(key: &str) -> Result<String, String> {
    let (parts, dots_ok): (Vec<&str>, bool) = if key.contains('/') {
        (key.split('/').collect(), true)
    } else {
        (key.split('.').collect(), false)
    };
    for part in &parts {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || "_-:".contains(c) || (dots_ok && c == '.');
        if part.is_empty() || *part == "." || *part == ".." || !part.chars().all(allowed) {
            return Err(format!(
                "sysctl key '{key}' is not a sysctl name (such as vm.stat_interval or vm/stat_interval)"
            ));
        }
    }
    let path = format!("{SYSCTL_DIR}/{}", parts.join("/"));
    if RESERVED_SYSCTLS.contains(&path.as_str()) {
        return Err(format!(
            "sysctl key '{key}': kvmtune's hugepage reservation owns the hugepage pools (per node); it cannot be a knob"
        ));
    }
    Ok(path)
}

/// Check a sysctl value from the policy: one line of printable text.
pub fn sysctl_value(key: &str, value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() || v.len() > 256 || v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "sysctl '{key}' = '{}': expected a value of one line (at most 256 characters)",
            value.escape_debug()
        ));
    }
    Ok(v.to_string())
}

/// KSM as the kernel shows it, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KsmState {
    pub run: String,
    /// Absent on kernels without NUMA.
    pub merge_across_nodes: Option<String>,
    pub pages_shared: u64,
    pub pages_sharing: u64,
}

/// `None` on a kernel without KSM.
pub fn read_ksm(fs: &dyn HostFs) -> Result<Option<KsmState>> {
    let Some(run) = read_value(fs, KSM_RUN)? else {
        return Ok(None);
    };
    let count = |path: &str| -> u64 {
        fs.read(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Some(KsmState {
        run,
        merge_across_nodes: read_value(fs, KSM_MERGE_ACROSS_NODES)?,
        pages_shared: count(KSM_PAGES_SHARED),
        pages_sharing: count(KSM_PAGES_SHARING),
    }))
}

/// Pages KSM has merged now (0 when unknown).
pub fn pages_shared(fs: &dyn HostFs) -> u64 {
    fs.read(KSM_PAGES_SHARED)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Read a knob for the first time before it is held: it must exist and read back.
pub fn check_readable(fs: &dyn HostFs, path: &str) -> Result<Option<String>> {
    read_value(fs, path).map_err(|e| match e {
        Error::Io { source, .. } => Error::Config(format!(
            "{} cannot be read ({source}): only settings that read back can be held and restored",
            shown(path)
        )),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_files_give_their_bracketed_word() {
        let c = parse_choices("always [madvise] never\n").unwrap();
        assert_eq!(c.selected, "madvise");
        assert_eq!(c.offered, ["always", "madvise", "never"]);
        let c = parse_choices("always defer defer+madvise [madvise] never").unwrap();
        assert_eq!(c.selected, "madvise");
        assert_eq!(c.offered.len(), 5);
        assert_eq!(value_of("[always] madvise never"), "always");
    }

    #[test]
    fn plain_files_are_not_choices_and_compare_by_words() {
        assert_eq!(parse_choices("1\n"), None);
        assert_eq!(parse_choices("[a] [b]"), None, "two selections");
        assert_eq!(value_of("4\t4\t1\t7\n"), "4 4 1 7");
        assert!(same_value("4 4 1 7", "4\t4\t1\t7\n"));
        assert!(!same_value("1", "10"));
    }

    #[test]
    fn sysctl_keys_map_under_proc_sys_only() {
        assert_eq!(
            sysctl_path("vm.stat_interval").unwrap(),
            "proc/sys/vm/stat_interval"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.10/rp_filter").unwrap(),
            "proc/sys/net/ipv4/conf/eth0.10/rp_filter"
        );
        for bad in [
            "",
            "vm..stat_interval",
            "../../etc/passwd",
            "vm/../../etc/shadow",
            "vm/./x",
            "/vm/stat_interval",
            "vm.stat interval",
            "vm.stat_interval\n",
            "vm/",
        ] {
            let err = sysctl_path(bad).unwrap_err();
            assert!(err.contains("is not a sysctl name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_hugepage_sysctls_are_never_knobs() {
        let err = sysctl_path("vm.nr_hugepages").unwrap_err();
        assert!(err.contains("owns the hugepage pools"), "{err}");
        assert!(sysctl_path("vm/nr_overcommit_hugepages").is_err());
    }

    #[test]
    fn sysctl_values_are_one_line() {
        assert_eq!(sysctl_value("k", " 120 ").unwrap(), "120");
        assert!(sysctl_value("k", "").is_err());
        assert!(sysctl_value("k", "1\n2").unwrap_err().contains("'k'"));
    }
}
