//! `ModelFs`: the fake root's plain files, plus the kernel's behaviour for the writes that have
//! side effects, so that kvmtune's own code runs its full path in a short-lived process per
//! hook call (as libvirt runs it) without the kernel's work being counted:
//! - cgroups (v1 cpusets, or cgroup v2 on a `Shape::partitions` host: the cgroup root is named
//!   in `.model/cgroup_root`): `mkdir` creates the interface files, `rmdir` of a cgroup with
//!   tasks or children fails (EBUSY), a write to `cgroup.procs` moves the process (ESRCH for an
//!   unknown PID; EINVAL for a per-CPU kernel thread, on v2 for any kernel thread; v1: ENOSPC
//!   into a cpuset without CPUs), and `cgroup.procs`, `tasks`, `/proc/PID/cpuset` and, on v2,
//!   `/proc/PID/cgroup` are generated from the memberships (kept in one file,
//!   `.model/members`, loaded on first use and saved at exit);
//! - v1: a new cpuset's `cpus`/`mems` start empty; `cpuset.cpus`/`cpuset.mems` set the
//!   effective files too;
//! - v2: `cgroup.subtree_control`, `cpuset.cpus`, `cpuset.cpus.exclusive` and
//!   `cpuset.cpus.partition` with isolated partitions, and what the kernel derives from them
//!   (effective CPUs, partition states, the root's `cpuset.cpus.isolated`): see `cgroup2.rs`,
//!   which also says what is not modelled;
//! - `nodeN/…/nr_hugepages` grows a pool as far as the node's free memory allows and keeps
//!   `free_hugepages`, the node's meminfo and the global counts in step;
//! - `/proc/irq/N/smp_affinity_list`: managed IRQs refuse (EIO), others take the list; the
//!   effective CPU stays while the list allows it, else becomes the list's first;
//! - `sched_setaffinity` (`FakeAffinity`) rewrites the task's `Cpus_allowed_list`.
//!
//! Tasks' `Cpus_allowed_list` follows `sched_setaffinity` only, not their cgroup's CPUs.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kvmtune::cpulist::CpuSet;
use kvmtune::error::{Error, Result};
use kvmtune::host::tasks::TaskAffinity;
use kvmtune::host::{HostFs, RootFs};

use crate::cgroup2;
use crate::layout::{self, CGROUP2, CPUSET};

/// PID → flags and cpuset (path relative to the root), one `PID FLAGS PATH` line each (the
/// flags say which tasks a cpuset refuses: per-CPU kernel threads).
pub const MEMBERS: &str = ".model/members";
/// Managed IRQs, whose affinity the kernel refuses to change (EIO).
pub const MANAGED: &str = ".model/managed";
/// The root of the cgroup hierarchy with cpusets (`layout::CPUSET`, or `layout::CGROUP2` on a
/// host with partitions); absent: v1.
pub const CGROUP_ROOT: &str = ".model/cgroup_root";

const PF_KTHREAD: u64 = 0x0020_0000;
const PF_NO_SETAFFINITY: u64 = 0x0400_0000;

pub struct ModelFs {
    plain: RootFs,
    /// kvmtune's file operations through this fs: reads, writes, directory lists, existence
    /// checks, mkdir + rmdir. A count does not depend on how loaded the machine is.
    pub ops: [Cell<u64>; 5],
    members: RefCell<Option<BTreeMap<u32, (u64, String)>>>,
    /// cpusets whose `cpus` are empty, as written in this process (`None`: not looked at).
    empty_cpus: RefCell<BTreeMap<String, bool>>,
    managed: std::cell::OnceCell<std::collections::BTreeSet<u32>>,
    dirty: Cell<bool>,
    /// Membership files (`cgroup.procs`, `tasks`) seen to exist: a move writes one per process,
    /// and the model's own look for the file should not cost kvmtune a stat each time.
    member_files: RefCell<std::collections::HashSet<String>>,
    /// Where the cgroups are (`CGROUP_ROOT`).
    cgroup_root: std::cell::OnceCell<String>,
}

fn errno(op: &'static str, path: PathBuf, errno: i32) -> Error {
    Error::io(op, path, std::io::Error::from_raw_os_error(errno))
}

impl ModelFs {
    pub fn new(root: &Path) -> ModelFs {
        ModelFs {
            plain: RootFs::new(root),
            ops: Default::default(),
            members: RefCell::new(None),
            empty_cpus: RefCell::new(BTreeMap::new()),
            managed: std::cell::OnceCell::new(),
            dirty: Cell::new(false),
            member_files: RefCell::new(std::collections::HashSet::new()),
            cgroup_root: std::cell::OnceCell::new(),
        }
    }

    fn cgroup_root(&self) -> &str {
        self.cgroup_root.get_or_init(|| {
            self.plain
                .read(CGROUP_ROOT)
                .map_or_else(|_| CPUSET.to_string(), |t| t.trim().to_string())
        })
    }

    /// cgroup v2 with partitions (else v1 cpusets).
    fn v2(&self) -> bool {
        self.cgroup_root() == CGROUP2
    }

    fn with_members<T>(&self, f: impl FnOnce(&mut BTreeMap<u32, (u64, String)>) -> T) -> T {
        let mut slot = self.members.borrow_mut();
        let map = slot.get_or_insert_with(|| {
            let text = self.plain.read(MEMBERS).unwrap_or_default();
            text.lines()
                .filter_map(|l| {
                    let mut w = l.splitn(3, ' ');
                    let (pid, flags, cg) = (w.next()?, w.next()?, w.next()?);
                    Some((pid.parse().ok()?, (flags.parse().ok()?, cg.to_string())))
                })
                .collect()
        });
        f(map)
    }

    /// Write the memberships back (the process is about to exit).
    pub fn save(&self) {
        if !self.dirty.get() {
            return;
        }
        let text = self.with_members(|m| {
            let mut s = String::with_capacity(m.len() * 32);
            for (pid, (flags, cg)) in m.iter() {
                s.push_str(&format!("{pid} {flags} {cg}\n"));
            }
            s
        });
        let path = self.plain.root().join(MEMBERS);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, path).unwrap();
    }

    fn member_file_exists(&self, rel: &str) -> bool {
        if self.member_files.borrow().contains(rel) {
            return true;
        }
        let exists = self.plain.exists(rel);
        if exists {
            self.member_files.borrow_mut().insert(rel.to_string());
        }
        exists
    }

    fn is_cpuset(&self, rel: &str) -> bool {
        let root = self.cgroup_root();
        rel.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn procs_of(&self, cgroup: &str) -> String {
        self.with_members(|m| {
            let mut s = String::new();
            for (pid, _) in m.iter().filter(|(_, (_, cg))| cg.as_str() == cgroup) {
                s.push_str(&pid.to_string());
                s.push('\n');
            }
            s
        })
    }

    fn move_task(&self, rel: &str, cgroup: &str, value: &str) -> Result<()> {
        let path = self.plain.root().join(rel);
        let pid: u32 = value
            .trim()
            .parse()
            .map_err(|_| errno("write", path.clone(), libc::EINVAL))?;
        let Some(flags) = self.with_members(|m| m.get(&pid).map(|(f, _)| *f)) else {
            return Err(errno("write", path, libc::ESRCH));
        };
        if self.v2() {
            // Kernel threads stay in the root cgroup; v2 has no ENOSPC (an empty cpuset.cpus
            // means the parent's CPUs).
            if flags & PF_KTHREAD != 0 {
                return Err(errno("write", path, libc::EINVAL));
            }
            self.with_members(|m| m.insert(pid, (flags, cgroup.to_string())));
            self.dirty.set(true);
            return Ok(());
        }
        let empty = *self
            .empty_cpus
            .borrow_mut()
            .entry(cgroup.to_string())
            .or_insert_with(|| {
                let cpus = self.plain.read(&format!("{cgroup}/cpuset.cpus"));
                cpus.map(|c| c.trim().is_empty()).unwrap_or(true)
            });
        if empty {
            return Err(errno("write", path, libc::ENOSPC));
        }
        if flags & PF_NO_SETAFFINITY != 0 {
            return Err(errno("write", path, libc::EINVAL));
        }
        self.with_members(|m| m.insert(pid, (flags, cgroup.to_string())));
        self.dirty.set(true);
        Ok(())
    }

    fn write_pool(&self, rel: &str, value: &str) -> Result<()> {
        let path = self.plain.root().join(rel);
        let parts: Vec<&str> = rel.split('/').collect();
        let node: u32 = parts[4].trim_start_matches("node").parse().unwrap();
        let kib: u64 = parts[6]
            .trim_start_matches("hugepages-")
            .trim_end_matches("kB")
            .parse()
            .unwrap();
        let wanted: u64 = value
            .trim()
            .parse()
            .map_err(|_| errno("write", path, libc::EINVAL))?;
        let dir = parts[..7].join("/");
        let nr: u64 = self.plain.read(rel)?.trim().parse().unwrap();
        let free: u64 = self
            .plain
            .read(&format!("{dir}/free_hugepages"))?
            .trim()
            .parse()
            .unwrap();
        let meminfo_rel = format!("sys/devices/system/node/node{node}/meminfo");
        let meminfo = self.plain.read(&meminfo_rel)?;
        let field = |name: &str| kvmtune::host::topology::node_meminfo_kib(&meminfo, name);
        let (total_kib, free_kib) = (field("MemTotal").unwrap(), field("MemFree").unwrap());
        // Grow as far as free memory goes; shrink by free pages only.
        let new = if wanted > nr {
            nr + (wanted - nr).min(free_kib / kib)
        } else {
            nr - (nr - wanted).min(free)
        };
        let new_free = free + new - nr;
        let new_mem_free = free_kib + nr * kib - new * kib;
        self.plain.write(rel, &format!("{new}\n"))?;
        self.plain
            .write(&format!("{dir}/free_hugepages"), &format!("{new_free}\n"))?;
        let huge_2m = if kib == 2048 {
            new
        } else {
            field("HugePages_Total").unwrap_or(0)
        };
        self.plain.write(
            &meminfo_rel,
            &layout::node_meminfo(node, total_kib, new_mem_free, huge_2m),
        )?;
        for (file, delta) in [("nr_hugepages", new), ("free_hugepages", new_free)] {
            let global = format!("sys/kernel/mm/hugepages/hugepages-{kib}kB/{file}");
            let old: u64 = self.plain.read(&global)?.trim().parse().unwrap();
            let before = if file == "nr_hugepages" { nr } else { free };
            self.plain
                .write(&global, &format!("{}\n", old + delta - before))?;
        }
        Ok(())
    }

    fn write_irq(&self, rel: &str, value: &str) -> Result<()> {
        let path = self.plain.root().join(rel);
        let dir = rel.trim_end_matches("/smp_affinity_list");
        // Managed IRQs (listed by the layout): the kernel placed them and refuses every write.
        let irq: u32 = dir
            .trim_start_matches("proc/irq/")
            .parse()
            .map_err(|_| errno("write", path.clone(), libc::ENOENT))?;
        let managed = self.managed.get_or_init(|| {
            let text = self.plain.read(MANAGED).unwrap_or_default();
            text.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        });
        if managed.contains(&irq) {
            return Err(errno("write", path, libc::EIO));
        }
        // (Where the kernel now delivers it is worked out when someone reads it: see
        // `effective`. A file write here would put the kernel's work in kvmtune's numbers.)
        if !value.trim().starts_with(|c: char| c.is_ascii_digit()) {
            return Err(errno("write", path, libc::EINVAL));
        }
        self.plain.write(rel, value)
    }

    /// `effective_affinity_list`: the CPU the IRQ was delivered to while the affinity still
    /// allows it, else the affinity's first CPU (x86 delivers to one CPU of the mask).
    fn effective(&self, dir: &str) -> Result<String> {
        let was = self.plain.read(&format!("{dir}/effective_affinity_list"))?;
        let affinity = self.plain.read(&format!("{dir}/smp_affinity_list"))?;
        let allowed = CpuSet::parse(&affinity).unwrap_or_default();
        match CpuSet::parse(&was) {
            Ok(cpus) if !cpus.is_empty() && cpus.is_subset(&allowed) => Ok(was),
            _ => Ok(allowed
                .first()
                .map_or_else(|| was.clone(), |cpu| format!("{cpu}\n"))),
        }
    }
}

impl ModelFs {
    fn count(&self, i: usize) {
        self.ops[i].set(self.ops[i].get() + 1);
    }

    /// `reads writes lists exists dirs`.
    pub fn ops_line(&self) -> String {
        let v: Vec<String> = self.ops.iter().map(|c| c.get().to_string()).collect();
        v.join(" ")
    }
}

impl HostFs for ModelFs {
    fn root(&self) -> &Path {
        self.plain.root()
    }

    fn read(&self, rel: &str) -> Result<String> {
        self.count(0);
        if self.is_cpuset(rel) {
            if let Some(cg) = rel
                .strip_suffix("/cgroup.procs")
                .or_else(|| rel.strip_suffix("/tasks"))
            {
                if self.plain.exists(rel) {
                    return Ok(self.procs_of(cg));
                }
            }
        }
        if let Some(dir) = rel
            .strip_suffix("/effective_affinity_list")
            .filter(|d| d.starts_with("proc/irq/"))
        {
            return self.effective(dir);
        }
        let per_pid = rel.strip_prefix("proc/").and_then(|r| {
            r.strip_suffix("/cpuset")
                .map(|p| (p, false))
                .or_else(|| r.strip_suffix("/cgroup").map(|p| (p, true)))
        });
        if let Some((pid, v2_line)) = per_pid.filter(|(_, line)| !line || self.v2()) {
            if let Ok(pid) = pid.parse::<u32>() {
                let cg = self.with_members(|m| m.get(&pid).map(|(_, cg)| cg.clone()));
                return match cg {
                    Some(cg) => {
                        let tail = cg.strip_prefix(self.cgroup_root()).unwrap_or("");
                        let tail = if tail.is_empty() { "/" } else { tail };
                        Ok(if v2_line {
                            format!("0::{tail}\n")
                        } else {
                            format!("{tail}\n")
                        })
                    }
                    None => Err(errno("read", self.root().join(rel), libc::ENOENT)),
                };
            }
        }
        self.plain.read(rel)
    }

    fn read_record(&self, rel: &str) -> Result<String> {
        if !(rel.starts_with("proc/") && rel.ends_with("/stat")) {
            return self.read(rel);
        }
        // The model generates no /proc/PID/stat: the plain file, read as the kernel's would be.
        self.count(0);
        self.plain.read_record(rel)
    }

    fn write(&self, rel: &str, value: &str) -> Result<()> {
        self.count(1);
        // (A missing file fails the plain write with ENOENT, as on the kernel.)
        if self.is_cpuset(rel) {
            if let Some(cg) = rel
                .strip_suffix("/cgroup.procs")
                .or_else(|| rel.strip_suffix("/tasks"))
            {
                if !self.member_file_exists(rel) {
                    return Err(errno(
                        "open for writing",
                        self.root().join(rel),
                        libc::ENOENT,
                    ));
                }
                return self.move_task(rel, cg, value);
            }
            if self.v2() {
                return cgroup2::write(&self.plain, rel, value)
                    .unwrap_or_else(|| self.plain.write(rel, value));
            }
            for (file, effective) in [
                ("/cpuset.cpus", "/cpuset.effective_cpus"),
                ("/cpuset.mems", "/cpuset.effective_mems"),
            ] {
                if let Some(cg) = rel.strip_suffix(file) {
                    if file == "/cpuset.cpus" {
                        self.empty_cpus
                            .borrow_mut()
                            .insert(cg.to_string(), value.trim().is_empty());
                    }
                    self.plain.write(rel, value)?;
                    return self.plain.write(&format!("{cg}{effective}"), value);
                }
            }
        }
        if rel.starts_with("sys/devices/system/node/") && rel.ends_with("/nr_hugepages") {
            return self.write_pool(rel, value);
        }
        if rel.starts_with("proc/irq/") && rel.ends_with("/smp_affinity_list") {
            return self.write_irq(rel, value);
        }
        self.plain.write(rel, value)
    }

    fn list(&self, rel: &str) -> Result<Vec<String>> {
        self.count(2);
        self.plain.list(rel)
    }

    fn exists(&self, rel: &str) -> bool {
        self.count(3);
        self.plain.exists(rel)
    }

    fn create_dir(&self, rel: &str) -> Result<()> {
        self.count(4);
        self.plain.create_dir(rel)?;
        if self.is_cpuset(rel) && self.v2() {
            return cgroup2::created(&self.plain, rel);
        }
        if self.is_cpuset(rel) {
            // The kernel fills a new cpuset with its files; cpus and mems start empty.
            layout::cgroup_files(self.root(), rel, &CpuSet::new(), &CpuSet::new());
        }
        Ok(())
    }

    fn remove_dir(&self, rel: &str) -> Result<()> {
        self.count(4);
        if !self.is_cpuset(rel) {
            return self.plain.remove_dir(rel);
        }
        let busy = self.with_members(|m| m.values().any(|(_, cg)| cg == rel));
        let has_children = self
            .plain
            .list(rel)?
            .iter()
            .any(|n| self.root().join(rel).join(n).is_dir());
        if busy || has_children {
            return Err(errno("remove", self.root().join(rel), libc::EBUSY));
        }
        let inside = format!("{rel}/");
        self.member_files
            .borrow_mut()
            .retain(|p| !p.starts_with(&inside));
        fs::remove_dir_all(self.root().join(rel))
            .map_err(|e| Error::io("remove", self.root().join(rel), e))?;
        if self.v2() {
            // A partition that goes gives its CPUs back.
            cgroup2::refresh(&self.plain)?;
        }
        Ok(())
    }
}

/// `sched_setaffinity` on the fake root: the task's status shows the new list.
pub struct FakeAffinity<'a>(pub &'a ModelFs);

impl TaskAffinity for FakeAffinity<'_> {
    fn set_affinity(&self, pid: u32, cpus: &CpuSet) -> Result<()> {
        let fs = self.0;
        let mut done = false;
        for rel in [
            format!("proc/{pid}/status"),
            format!("proc/{pid}/task/{pid}/status"),
        ] {
            let Ok(text) = fs.plain.read(&rel) else {
                continue;
            };
            let new: String = text
                .lines()
                .map(|l| {
                    if l.starts_with("Cpus_allowed_list:") {
                        format!("Cpus_allowed_list:\t{cpus}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            fs.plain.write(&rel, &new)?;
            done = true;
        }
        if done {
            Ok(())
        } else {
            Err(errno(
                "set the CPU affinity of",
                PathBuf::from(format!("pid {pid}")),
                libc::ESRCH,
            ))
        }
    }
}
