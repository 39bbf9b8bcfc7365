//! The cgroup v2 side of `ModelFs`, on a `Shape::partitions` host: cpusets with isolated
//! partitions (6.7 and later), as Documentation/admin-guide/cgroup-v2.rst describes them and as
//! the tests' fake kernel (tests/common/partition.rs) models them, cut to what kvmtune's
//! partition path meets. The state is the files themselves (what was written to `cpuset.cpus`,
//! `cpuset.cpus.exclusive`, and the mode, the first word of `cpuset.cpus.partition`); after
//! every write that changes it the tree (a few cgroups) is read and the derived files written:
//! - `cpuset.cpus.exclusive` must lie within what the parent may hand down (the root: every
//!   CPU; below it: the parent's `cpuset.cpus.exclusive.effective`), must not overlap a
//!   sibling's, nor take all of a sibling's `cpuset.cpus` (EINVAL);
//! - `cpuset.cpus.partition` takes `member`, `root` or `isolated` (else EINVAL); a setup the
//!   kernel cannot honour reads back `MODE invalid (REASON)`, the write does not fail;
//! - a partition whose parent is no partition root is valid only with an exclusive list; the
//!   root keeps a CPU; of two partitions wanting a CPU the first by path wins;
//! - the CPUs of valid partitions leave the root's and every other cgroup's
//!   `cpuset.cpus.effective`; the root's `cpuset.cpus.isolated` lists those of isolated ones;
//! - `cgroup.subtree_control` `+cpuset` gives the children their cpuset files, `-cpuset` takes
//!   them away (EBUSY while a child enables cpuset below it); a new cgroup gets its interface
//!   files (and the cpuset ones when its parent enables cpuset).
//!
//! Not modelled: the tasks' own masks (`Cpus_allowed_list` does not follow their cgroup's
//! effective CPUs, as with the v1 model), the unbound workqueue mask the kernel narrows from
//! 6.8 (it reads what was written), `cpuset.mems` rules, the rule that a cgroup with controllers
//! enabled for its children holds no processes, and controllers other than cpuset.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kvmtune::cpulist::CpuSet;
use kvmtune::error::{Error, Result};
use kvmtune::host::{HostFs, RootFs};

use crate::layout::CGROUP2;

const REASON_INVALID_CPUS: &str = "Invalid cpu list in cpuset.cpus.exclusive";
const REASON_INVALID_PARENT: &str = "Parent is an invalid partition root";
const REASON_NOT_PARTITION: &str = "Parent is not a partition root";
const REASON_NOT_EXCLUSIVE: &str = "Cpu list in cpuset.cpus not exclusive";
const REASON_NO_CPUS: &str = "Parent unable to distribute cpu downstream";
const REASON_EMPTY: &str = "cpuset.cpus and cpuset.cpus.exclusive are empty";

/// The cpuset files of a cgroup whose parent enables cpuset, with their first contents.
const CPUSET_FILES: [(&str, &str); 7] = [
    ("cpuset.cpus", "\n"),
    ("cpuset.cpus.effective", "\n"),
    ("cpuset.mems", "\n"),
    ("cpuset.mems.effective", "\n"),
    ("cpuset.cpus.exclusive", "\n"),
    ("cpuset.cpus.exclusive.effective", "\n"),
    ("cpuset.cpus.partition", "member\n"),
];

fn errno(path: PathBuf, errno: i32) -> Error {
    Error::io("write", path, std::io::Error::from_raw_os_error(errno))
}

#[derive(Default)]
struct Cgroup {
    /// The parent enables cpuset: the cgroup has cpuset files.
    cpuset: bool,
    cpus: CpuSet,
    exclusive: CpuSet,
    /// `member`, `root` or `isolated`.
    mode: String,
}

/// The v2 tree as its files show it.
struct Tree {
    online: CpuSet,
    cgroups: BTreeMap<String, Cgroup>,
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn cpus_of(fs: &RootFs, rel: &str) -> CpuSet {
    fs.read(rel)
        .ok()
        .and_then(|t| CpuSet::parse(&t).ok())
        .unwrap_or_default()
}

fn enables_cpuset(fs: &RootFs, dir: &str) -> bool {
    fs.read(&format!("{dir}/cgroup.subtree_control"))
        .is_ok_and(|t| t.split_whitespace().any(|c| c == "cpuset"))
}

fn child_dirs(fs: &RootFs, dir: &str) -> Vec<String> {
    let Ok(names) = std::fs::read_dir(fs.root().join(dir)) else {
        return Vec::new();
    };
    names
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
        .collect()
}

impl Tree {
    fn read(fs: &RootFs) -> Tree {
        let mut cgroups = BTreeMap::new();
        let mut walk = vec![(CGROUP2.to_string(), false)];
        while let Some((dir, cpuset)) = walk.pop() {
            let below = enables_cpuset(fs, &dir);
            walk.extend(child_dirs(fs, &dir).into_iter().map(|c| (c, below)));
            let mut c = Cgroup {
                cpuset,
                mode: "member".into(),
                ..Cgroup::default()
            };
            if cpuset {
                c.cpus = cpus_of(fs, &format!("{dir}/cpuset.cpus"));
                c.exclusive = cpus_of(fs, &format!("{dir}/cpuset.cpus.exclusive"));
                let state = fs
                    .read(&format!("{dir}/cpuset.cpus.partition"))
                    .unwrap_or_default();
                c.mode = state.split_whitespace().next().unwrap_or("member").into();
            }
            cgroups.insert(dir, c);
        }
        Tree {
            online: cpus_of(fs, "sys/devices/system/cpu/online"),
            cgroups,
        }
    }

    fn is_root(path: &str) -> bool {
        path == CGROUP2
    }

    fn member(&self, path: &str) -> bool {
        self.cgroups.get(path).map_or(true, |c| c.mode == "member")
    }

    fn is_partition_root(&self, path: &str) -> bool {
        Self::is_root(path) || self.valid(path)
    }

    /// The CPUs `path` may hand down as exclusive CPUs.
    fn pool(&self, path: &str) -> CpuSet {
        if Self::is_root(path) {
            self.online.clone()
        } else {
            self.exclusive_effective(path)
        }
    }

    /// `cpuset.cpus.exclusive.effective`.
    fn exclusive_effective(&self, path: &str) -> CpuSet {
        let (Some(c), Some(parent)) = (self.cgroups.get(path), parent(path)) else {
            return CpuSet::new();
        };
        if Self::is_root(path) {
            return CpuSet::new();
        }
        let pool = self.pool(parent);
        if !c.exclusive.is_empty() {
            c.exclusive.intersection(&pool)
        } else if c.mode != "member" && self.is_partition_root(parent) {
            c.cpus.intersection(&pool)
        } else {
            CpuSet::new()
        }
    }

    /// Why the partition at `path` is invalid (`None`: valid, or a member).
    fn error(&self, path: &str) -> Option<&'static str> {
        let c = self.cgroups.get(path)?;
        if c.mode == "member" || Self::is_root(path) {
            return None;
        }
        let parent = parent(path)?;
        if !self.member(parent) && !Self::is_root(parent) && !self.valid(parent) {
            return Some(REASON_INVALID_PARENT);
        }
        if c.exclusive.is_empty() && c.cpus.is_empty() {
            return Some(REASON_EMPTY);
        }
        if !self.is_partition_root(parent) && c.exclusive.is_empty() {
            return Some(REASON_NOT_PARTITION);
        }
        let wanted = if c.exclusive.is_empty() {
            &c.cpus
        } else {
            &c.exclusive
        };
        let mine = self.exclusive_effective(path);
        if mine.is_empty() || mine != *wanted {
            return Some(REASON_INVALID_CPUS);
        }
        let mut taken = CpuSet::new();
        for other in self.cgroups.keys().filter(|k| k.as_str() < path) {
            if !path.starts_with(&format!("{other}/")) && self.valid(other) {
                taken = taken.union(&self.exclusive_effective(other));
            }
        }
        if !taken.intersection(&mine).is_empty() {
            return Some(REASON_NOT_EXCLUSIVE);
        }
        if self.online.difference(&taken).difference(&mine).is_empty() {
            return Some(REASON_NO_CPUS);
        }
        None
    }

    fn valid(&self, path: &str) -> bool {
        self.cgroups
            .get(path)
            .is_some_and(|c| c.cpuset && c.mode != "member")
            && self.error(path).is_none()
    }

    /// The CPUs valid partitions strictly below `path` take from it.
    fn partitioned_below(&self, path: &str) -> CpuSet {
        let prefix = format!("{path}/");
        self.cgroups
            .keys()
            .filter(|p| p.starts_with(&prefix) && self.valid(p))
            .fold(CpuSet::new(), |all, p| {
                all.union(&self.exclusive_effective(p))
            })
    }

    /// `cpuset.cpus.effective`.
    fn effective(&self, path: &str) -> CpuSet {
        if Self::is_root(path) {
            return self.online.difference(&self.partitioned_below(path));
        }
        if self.valid(path) {
            return self
                .exclusive_effective(path)
                .difference(&self.partitioned_below(path));
        }
        let above = parent(path).map_or_else(|| self.online.clone(), |p| self.effective(p));
        let c = &self.cgroups[path];
        let both = c.cpus.intersection(&above);
        if !c.cpuset || both.is_empty() {
            above
        } else {
            both
        }
    }

    /// The root's `cpuset.cpus.isolated`.
    fn isolated(&self) -> CpuSet {
        self.cgroups
            .iter()
            .filter(|(p, c)| c.mode == "isolated" && self.valid(p))
            .fold(CpuSet::new(), |all, (p, _)| {
                all.union(&self.exclusive_effective(p))
            })
    }

    /// Write the files the kernel derives.
    fn write_derived(&self, fs: &RootFs) -> Result<()> {
        for (path, c) in &self.cgroups {
            if Self::is_root(path) {
                fs.write(
                    &format!("{path}/cpuset.cpus.effective"),
                    &format!("{}\n", self.effective(path)),
                )?;
                fs.write(
                    &format!("{path}/cpuset.cpus.isolated"),
                    &format!("{}\n", self.isolated()),
                )?;
                continue;
            }
            if !c.cpuset {
                continue;
            }
            let state = match self.error(path) {
                Some(reason) => format!("{} invalid ({reason})", c.mode),
                None => c.mode.clone(),
            };
            for (file, value) in [
                ("cpuset.cpus.effective", self.effective(path).to_string()),
                (
                    "cpuset.cpus.exclusive.effective",
                    self.exclusive_effective(path).to_string(),
                ),
                ("cpuset.cpus.partition", state),
            ] {
                fs.write(&format!("{path}/{file}"), &format!("{value}\n"))?;
            }
        }
        Ok(())
    }
}

/// After the tree changed: bring the derived files in line.
pub fn refresh(fs: &RootFs) -> Result<()> {
    Tree::read(fs).write_derived(fs)
}

/// A write to a v2 cgroup file with the kernel's side effects; `None`: a plain file.
pub fn write(fs: &RootFs, rel: &str, value: &str) -> Option<Result<()>> {
    let (dir, file) = rel.rsplit_once('/')?;
    let path = || fs.root().join(rel);
    if !matches!(
        file,
        "cpuset.cpus"
            | "cpuset.cpus.exclusive"
            | "cpuset.cpus.partition"
            | "cgroup.subtree_control"
    ) {
        return None;
    }
    if !fs.exists(rel) {
        return Some(Err(errno(path(), libc::ENOENT)));
    }
    let result = match file {
        "cpuset.cpus" => match CpuSet::parse(value) {
            Ok(cpus) => fs.write(rel, &format!("{cpus}\n")),
            Err(_) => Err(errno(path(), libc::EINVAL)),
        },
        "cpuset.cpus.exclusive" => set_exclusive(fs, dir, value).map_err(|e| errno(path(), e)),
        "cpuset.cpus.partition" => match value.trim() {
            mode @ ("member" | "root" | "isolated") => fs.write(rel, &format!("{mode}\n")),
            _ => Err(errno(path(), libc::EINVAL)),
        },
        _ => subtree_control(fs, dir, value).map_err(|e| errno(path(), e)),
    };
    Some(result.and_then(|()| refresh(fs)))
}

fn set_exclusive(fs: &RootFs, dir: &str, value: &str) -> std::result::Result<(), i32> {
    let cpus = CpuSet::parse(value).map_err(|_| libc::EINVAL)?;
    if !cpus.is_empty() {
        let tree = Tree::read(fs);
        let parent = parent(dir).ok_or(libc::EINVAL)?;
        if !cpus.is_subset(&tree.pool(parent)) {
            return Err(libc::EINVAL);
        }
        let prefix = format!("{parent}/");
        let conflict = tree.cgroups.iter().any(|(sibling, theirs)| {
            sibling != dir
                && sibling
                    .strip_prefix(&prefix)
                    .is_some_and(|n| !n.contains('/'))
                && (!theirs.exclusive.intersection(&cpus).is_empty()
                    || (!theirs.cpus.is_empty() && theirs.cpus.is_subset(&cpus))
                    || (tree.valid(sibling)
                        && !tree
                            .exclusive_effective(sibling)
                            .intersection(&cpus)
                            .is_empty()))
        });
        if conflict {
            return Err(libc::EINVAL);
        }
    }
    fs.write(
        &format!("{dir}/cpuset.cpus.exclusive"),
        &format!("{cpus}\n"),
    )
    .map_err(|_| libc::EIO)
}

/// `+cpuset` / `-cpuset` (other controllers are only noted).
fn subtree_control(fs: &RootFs, dir: &str, value: &str) -> std::result::Result<(), i32> {
    let rel = format!("{dir}/cgroup.subtree_control");
    let mut enabled: Vec<String> = fs
        .read(&rel)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let offered = fs
        .read(&format!("{dir}/cgroup.controllers"))
        .unwrap_or_default();
    for word in value.split_whitespace() {
        let (sign, name) = word.split_at(1);
        if !offered.split_whitespace().any(|c| c == name) {
            return Err(libc::ENOENT);
        }
        let children = child_dirs(fs, dir);
        match sign {
            "+" if !enabled.iter().any(|c| c == name) => {
                enabled.push(name.to_string());
                if name == "cpuset" {
                    for child in &children {
                        cpuset_files(fs, child).map_err(|_| libc::EIO)?;
                    }
                }
            }
            "-" if enabled.iter().any(|c| c == name) => {
                if children.iter().any(|c| enables_cpuset(fs, c)) && name == "cpuset" {
                    return Err(libc::EBUSY);
                }
                enabled.retain(|c| c != name);
                if name == "cpuset" {
                    for child in &children {
                        for (file, _) in CPUSET_FILES {
                            let _ = std::fs::remove_file(fs.root().join(child).join(file));
                        }
                    }
                }
            }
            "+" | "-" => {}
            _ => return Err(libc::EINVAL),
        }
        for child in &children {
            fs.write(
                &format!("{child}/cgroup.controllers"),
                &format!("{}\n", enabled.join(" ")),
            )
            .map_err(|_| libc::EIO)?;
        }
    }
    fs.write(&rel, &format!("{}\n", enabled.join(" ")))
        .map_err(|_| libc::EIO)
}

fn cpuset_files(fs: &RootFs, dir: &str) -> Result<()> {
    for (file, value) in CPUSET_FILES {
        std::fs::write(fs.root().join(dir).join(file), value)
            .map_err(|e| Error::io("create", fs.root().join(dir).join(file), e))?;
    }
    let mems = fs.read(&format!("{CGROUP2}/cpuset.mems.effective"))?;
    fs.write(&format!("{dir}/cpuset.mems.effective"), &mems)
}

/// A new cgroup `rel` (its directory made): the kernel gives it its interface files.
pub fn created(fs: &RootFs, rel: &str) -> Result<()> {
    let parent = parent(rel).unwrap_or(CGROUP2);
    let enabled = fs
        .read(&format!("{parent}/cgroup.subtree_control"))
        .unwrap_or_default();
    for (file, value) in [
        ("cgroup.procs", String::new()),
        ("cgroup.controllers", enabled.clone()),
        ("cgroup.subtree_control", "\n".into()),
    ] {
        std::fs::write(fs.root().join(rel).join(file), value)
            .map_err(|e| Error::io("create", fs.root().join(rel).join(file), e))?;
    }
    if enabled.split_whitespace().any(|c| c == "cpuset") {
        cpuset_files(fs, rel)?;
        refresh(fs)?;
    }
    Ok(())
}
