//! The part of the fake kernel that models tasks, cgroup cpusets (v1 and v2), workqueue
//! masks and systemd's AllowedCPUs, with the kernel's errors:
//! - v1: a child's cpus must stay within its parent's (EACCES), a parent cannot shrink below a
//!   child (EBUSY), a populated cpuset cannot become empty and an empty one (cpus or mems)
//!   cannot take a task (ENOSPC), a per-CPU kernel thread cannot move (EINVAL), a cgroup with
//!   tasks or children cannot be removed (EBUSY);
//! - v2: writes to `cpuset.cpus` succeed, the effective set falls back to the parent's when
//!   the request does not intersect it; cpuset files exist only where the parent enabled the
//!   controller; kernel threads stay in the root (EINVAL);
//! - a task's allowed CPUs are its own mask within its cpuset's effective CPUs;
//! - isolated partitions (6.7 and later, when `partitions` is set), as
//!   Documentation/admin-guide/cgroup-v2.rst describes them: see `partition.rs`.

use std::collections::{BTreeMap, BTreeSet};

use kvmtune::cpulist::CpuSet;

pub use super::partition::PartitionMode;

pub const PF_KTHREAD: u64 = 0x0020_0000;
pub const PF_NO_SETAFFINITY: u64 = 0x0400_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Hybrid as on Debian hosts without systemd: v1 cpuset, v2 without cpuset.
    V1,
    /// Pure v2 without systemd (the real-kernel guest).
    V2,
    /// Pure v2 under systemd.
    Systemd,
}

pub const V1_MOUNT: &str = "sys/fs/cgroup/cpuset";
pub const V2_MOUNT: &str = "sys/fs/cgroup";

#[derive(Debug, Clone)]
pub struct TaskModel {
    pub comm: String,
    pub flags: u64,
    /// The task's own affinity mask (sched_setaffinity).
    pub mask: CpuSet,
    /// cgroup (path relative to the root, the mount itself for the root cgroup).
    pub cgroup: String,
}

#[derive(Debug, Clone, Default)]
pub struct Cgroup {
    /// v1: `cpuset.cpus` (empty = none); v2: requested cpus (empty = inherit).
    pub cpus: CpuSet,
    pub mems: String,
    /// v2 `cgroup.subtree_control`.
    pub subtree: BTreeSet<String>,
    /// v2 `cpuset.cpus.exclusive` (empty: not set).
    pub exclusive: CpuSet,
    /// v2 `cpuset.cpus.partition` as written.
    pub partition: PartitionMode,
}

#[derive(Debug, Clone)]
pub struct CgroupModel {
    pub layout: Layout,
    pub online: CpuSet,
    pub tasks: BTreeMap<u32, TaskModel>,
    pub cgroups: BTreeMap<String, Cgroup>,
    pub workqueue: CpuSet,
    /// systemd units' AllowedCPUs as systemctl shows them ("" = unset).
    pub units: BTreeMap<String, String>,
    /// The runtime drop-ins (`run/systemd/system.control/UNIT.d/50-AllowedCPUs.conf`) on disk,
    /// by unit: `set-property --runtime` writes one (even for an empty value) and never
    /// removes it; `daemon-reload` makes `units` what the drop-ins say.
    pub drop_ins: BTreeMap<String, String>,
    pub systemctl_calls: Vec<String>,
    /// Kernels before 6.2: attaching a task to a cpuset (moving it, or enabling the controller
    /// above it) resets its own mask to everything.
    pub resets_masks: bool,
    /// A busy host: this many moves each leave a freshly forked child behind in the cgroup
    /// the task left (forked after the mover read `cgroup.procs`).
    pub forks_during_moves: u32,
    /// `/proc/PID/cmdline` of the tasks that have one (arguments joined by NUL): a VM's QEMU,
    /// which `recover` looks for.
    pub cmdlines: BTreeMap<u32, String>,
    /// The kernel has isolated partitions and `cpuset.cpus.exclusive` (6.7 and later): their
    /// files exist and the rules of `partition.rs` apply.
    pub partitions: bool,
    /// systemd enables the cpuset controller only where a unit needs it, and takes it away
    /// when none does (`systemd_realizes`), as on Debian 13; otherwise the model's systemd
    /// layout keeps cpuset enabled on the root and system.slice throughout.
    pub systemd_owns_cpuset: bool,
    /// A unit stopped: systemd realizes the cgroup tree again before the next write
    /// (`systemd_realizes`).
    pub systemd_realizes_soon: bool,
    /// Partitions a sibling's `cpuset.cpus` invalidated, by path, with the CPUs they still
    /// hold (6.12: `partition.rs`).
    pub stuck: BTreeMap<String, CpuSet>,
    /// CPUs of stuck partitions whose cgroup was removed: isolated until the host reboots.
    pub leaked: CpuSet,
    /// What `sched_setaffinity` last asked for, by task: kernels from 6.2 keep it
    /// (`user_cpus_ptr`) when they change a task's CPUs themselves (`following_partitions`).
    pub user_masks: BTreeMap<u32, CpuSet>,
}

pub type Errno = i32;

impl CgroupModel {
    /// A host with init, a few services, libvirtd, kernel threads, and a running VM's QEMU.
    pub fn new(layout: Layout, online: CpuSet) -> CgroupModel {
        let mount = match layout {
            Layout::V1 => V1_MOUNT,
            _ => V2_MOUNT,
        };
        let root = mount.to_string();
        let vm_cgroup = match layout {
            Layout::V1 => format!("{V1_MOUNT}/machine"),
            _ => format!("{V2_MOUNT}/machine.slice"),
        };
        let mut cgroups = BTreeMap::new();
        cgroups.insert(
            root.clone(),
            Cgroup {
                cpus: online.clone(),
                mems: "0".into(),
                ..Cgroup::default()
            },
        );
        cgroups.insert(
            vm_cgroup.clone(),
            Cgroup {
                cpus: online.clone(),
                mems: "0".into(),
                ..Cgroup::default()
            },
        );
        let service_cgroup = |name: &str| match layout {
            Layout::Systemd => format!("{V2_MOUNT}/system.slice/{name}"),
            _ => root.clone(),
        };
        let mut units = BTreeMap::new();
        if layout == Layout::Systemd {
            for unit in [
                "system.slice",
                "user.slice",
                "init.scope",
                "system.slice/sshd.service",
                "system.slice/cron.service",
                "system.slice/libvirtd.service",
            ] {
                cgroups.insert(format!("{V2_MOUNT}/{unit}"), Cgroup::default());
                units.insert(unit.rsplit('/').next().unwrap().to_string(), String::new());
            }
            cgroups
                .get_mut(&root)
                .unwrap()
                .subtree
                .insert("cpuset".into());
            cgroups
                .get_mut(&format!("{V2_MOUNT}/system.slice"))
                .unwrap()
                .subtree
                .insert("cpuset".into());
        }
        let task = |comm: &str, flags: u64, cgroup: String| TaskModel {
            comm: comm.into(),
            flags,
            mask: online.clone(),
            cgroup,
        };
        let mut tasks = BTreeMap::new();
        let init_cgroup = match layout {
            Layout::Systemd => format!("{V2_MOUNT}/init.scope"),
            _ => root.clone(),
        };
        tasks.insert(1, task("init", 0x400100, init_cgroup));
        tasks.insert(2, task("kthreadd", PF_KTHREAD | 0x8040, root.clone()));
        let mut kworker = task("kworker/0:0", PF_KTHREAD | PF_NO_SETAFFINITY, root.clone());
        kworker.mask = CpuSet::from_ids([online.first().unwrap()]);
        tasks.insert(3, kworker.clone());
        kworker.comm = "kworker/last:0".into();
        kworker.mask = CpuSet::from_ids([online.iter().last().unwrap()]);
        tasks.insert(5, kworker);
        tasks.insert(4, task("kswapd0", PF_KTHREAD | 0x40, root.clone()));
        tasks.insert(100, task("sshd", 0x400100, service_cgroup("sshd.service")));
        tasks.insert(101, task("cron", 0x400100, service_cgroup("cron.service")));
        tasks.insert(
            200,
            task("libvirtd", 0x400100, service_cgroup("libvirtd.service")),
        );
        let mut qemu = task("qemu-system-x86", 0x400100, vm_cgroup);
        qemu.mask = CpuSet::from_ids([online.iter().last().unwrap()]);
        tasks.insert(300, qemu);
        CgroupModel {
            layout,
            workqueue: online.clone(),
            online,
            tasks,
            cgroups,
            units,
            drop_ins: BTreeMap::new(),
            systemctl_calls: Vec::new(),
            resets_masks: false,
            forks_during_moves: 0,
            cmdlines: BTreeMap::new(),
            partitions: false,
            systemd_owns_cpuset: false,
            systemd_realizes_soon: false,
            stuck: BTreeMap::new(),
            leaked: CpuSet::default(),
            user_masks: BTreeMap::new(),
        }
    }

    pub fn mount(&self) -> &'static str {
        match self.layout {
            Layout::V1 => V1_MOUNT,
            _ => V2_MOUNT,
        }
    }

    pub(crate) fn parent(path: &str) -> Option<String> {
        path.rsplit_once('/').map(|(p, _)| p.to_string())
    }

    pub(crate) fn is_root(&self, path: &str) -> bool {
        path == self.mount()
    }

    /// A cgroup's effective CPUs.
    pub fn effective(&self, path: &str) -> CpuSet {
        if self.is_root(path) {
            // The CPUs of valid partitions leave the root, and so every cgroup outside them.
            return self.online.difference(&self.partitioned_below(path));
        }
        if self.valid_partition(path) {
            return self
                .exclusive_effective(path)
                .difference(&self.partitioned_below(path));
        }
        let parent = Self::parent(path)
            .map(|p| self.effective(&p))
            .unwrap_or_else(|| self.online.clone());
        let own = self
            .cgroups
            .get(path)
            .map(|c| c.cpus.clone())
            .unwrap_or_default();
        match self.layout {
            Layout::V1 => own,
            _ => {
                if !self.cpuset_enabled(path) || own.is_empty() {
                    return parent;
                }
                let both = own.intersection(&parent);
                if both.is_empty() {
                    parent
                } else {
                    both
                }
            }
        }
    }

    /// v2: whether the parent enabled cpuset for this cgroup (so it has cpuset files).
    pub fn cpuset_enabled(&self, path: &str) -> bool {
        match (self.layout, Self::parent(path)) {
            (Layout::V1, _) => true,
            (_, Some(parent)) if !self.is_root(path) => self
                .cgroups
                .get(&parent)
                .is_some_and(|c| c.subtree.contains("cpuset")),
            _ => false,
        }
    }

    /// What /proc/PID/status shows as Cpus_allowed_list.
    pub fn allowed(&self, pid: u32) -> CpuSet {
        let t = &self.tasks[&pid];
        // A partition takes its CPUs from the root cgroup's tasks too, kernel threads
        // included, but not from those that may not change CPUs (per-CPU kernel threads:
        // `cpuset_update_tasks_cpumask` skips PF_NO_SETAFFINITY in the top cpuset).
        let eff = if self.is_root(&t.cgroup) && t.flags & PF_NO_SETAFFINITY != 0 {
            self.online.clone()
        } else {
            self.effective(&t.cgroup)
        };
        let both = t.mask.intersection(&eff);
        if both.is_empty() {
            eff
        } else {
            both
        }
    }

    fn populated(&self, path: &str) -> bool {
        self.tasks.values().any(|t| t.cgroup == path)
    }

    pub(crate) fn children(&self, path: &str) -> Vec<String> {
        let prefix = format!("{path}/");
        self.cgroups
            .keys()
            .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .cloned()
            .collect()
    }

    /// Handle a write under a cgroup mount. `None`: not a cgroup file of ours.
    pub fn write(&mut self, rel: &str, value: &str) -> Option<Result<(), Errno>> {
        self.following_partitions(|c| c.write_file(rel, value))
    }

    /// Run `f`; if the CPUs valid partitions take from the root changed, do what the kernel's
    /// `cpuset_update_tasks_cpumask` does for the top cpuset: every task there but the per-CPU
    /// kernel threads gets the CPUs no partition holds. A process keeps its own (user) mask
    /// within them (`allowed` intersects); a kernel thread's mask is replaced, by those within
    /// the CPUs `sched_setaffinity` last asked for where there are any (`user_masks`). Seen on
    /// 6.12: a kernel thread pinned to CPU 3 with taskset gets CPUs 0-1 while a partition holds
    /// 2-3 and CPU 3 again once it goes; one the kernel bound to its node's CPUs (kswapd1) or
    /// to one CPU (irq/9-acpi) gets every CPU.
    pub fn following_partitions<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let root = self.mount().to_string();
        let before = self.partitioned_below(&root);
        let out = f(self);
        let after = self.partitioned_below(&root);
        if after != before {
            let left = self.online.difference(&after);
            let keeps_pins = !self.resets_masks;
            for (pid, t) in self.tasks.iter_mut().filter(|(_, t)| {
                t.cgroup == root && t.flags & PF_KTHREAD != 0 && t.flags & PF_NO_SETAFFINITY == 0
            }) {
                let within_pin = self
                    .user_masks
                    .get(pid)
                    .filter(|_| keeps_pins)
                    .map(|pin| pin.intersection(&left))
                    .filter(|within| !within.is_empty());
                t.mask = within_pin.unwrap_or_else(|| left.clone());
            }
        }
        out
    }

    fn write_file(&mut self, rel: &str, value: &str) -> Option<Result<(), Errno>> {
        let (dir, file) = rel.rsplit_once('/')?;
        if !self.cgroups.contains_key(dir) {
            return None;
        }
        Some(match file {
            "cgroup.procs" | "tasks" => self.move_task(dir, value),
            "cpuset.cpus" => self.set_cpus(dir, value),
            "cpuset.cpus.exclusive" if self.has_partition_files(dir) => {
                self.set_exclusive(dir, value)
            }
            "cpuset.cpus.partition" if self.has_partition_files(dir) => {
                self.set_partition(dir, value)
            }
            "cpuset.mems" => {
                self.cgroups.get_mut(dir).unwrap().mems = value.trim().to_string();
                Ok(())
            }
            "cgroup.subtree_control" => {
                if self.resets_masks {
                    let online = self.online.clone();
                    let root = self.mount().to_string();
                    for t in self
                        .tasks
                        .values_mut()
                        .filter(|t| t.cgroup != root && t.flags & PF_KTHREAD == 0)
                    {
                        t.mask = online.clone();
                    }
                }
                for word in value.split_whitespace() {
                    let result = match word.split_at(1) {
                        ("+", name) => {
                            let c = self.cgroups.get_mut(dir).unwrap();
                            c.subtree.insert(name.to_string());
                            Ok(())
                        }
                        ("-", name) => self.disable_controller(dir, name),
                        _ => Err(libc::EINVAL),
                    };
                    if let Err(errno) = result {
                        return Some(Err(errno));
                    }
                }
                Ok(())
            }
            _ => return None,
        })
    }

    fn move_task(&mut self, dir: &str, value: &str) -> Result<(), Errno> {
        let pid: u32 = value.trim().parse().map_err(|_| libc::EINVAL)?;
        let Some(task) = self.tasks.get(&pid) else {
            return Err(libc::ESRCH);
        };
        if task.flags & PF_KTHREAD != 0
            && (self.layout != Layout::V1 || task.flags & PF_NO_SETAFFINITY != 0)
        {
            return Err(libc::EINVAL);
        }
        if self.layout == Layout::V1 {
            let c = &self.cgroups[dir];
            if c.cpus.is_empty() || c.mems.is_empty() {
                return Err(libc::ENOSPC);
            }
        }
        let online = self.online.clone();
        let resets = self.resets_masks;
        if self.forks_during_moves > 0 {
            self.forks_during_moves -= 1;
            let mut child = self.tasks[&pid].clone();
            child.comm = format!("child-of-{pid}");
            let new_pid = self.tasks.keys().last().unwrap() + 1;
            self.tasks.insert(new_pid, child);
        }
        let t = self.tasks.get_mut(&pid).unwrap();
        t.cgroup = dir.to_string();
        if resets {
            t.mask = online;
        }
        Ok(())
    }

    fn set_cpus(&mut self, dir: &str, value: &str) -> Result<(), Errno> {
        let cpus = CpuSet::parse(value).map_err(|_| libc::EINVAL)?;
        if self.layout == Layout::V1 {
            if let Some(parent) = Self::parent(dir).filter(|_| !self.is_root(dir)) {
                if !cpus.is_subset(&self.cgroups[&parent].cpus) {
                    return Err(libc::EACCES);
                }
            }
            if self
                .children(dir)
                .iter()
                .any(|c| !self.cgroups[c].cpus.is_subset(&cpus))
            {
                return Err(libc::EBUSY);
            }
            if cpus.is_empty() && self.populated(dir) {
                return Err(libc::ENOSPC);
            }
        } else if !self.cpuset_enabled(dir) {
            return Err(libc::ENOENT);
        }
        self.invalidate_siblings_partitions(dir, &cpus);
        self.cgroups.get_mut(dir).unwrap().cpus = cpus;
        Ok(())
    }

    pub fn create(&mut self, rel: &str) -> Option<Result<(), Errno>> {
        let parent = Self::parent(rel)?;
        if !self.cgroups.contains_key(&parent) {
            return None;
        }
        if self.cgroups.contains_key(rel) {
            return Some(Err(libc::EEXIST));
        }
        self.cgroups.insert(rel.to_string(), Cgroup::default());
        Some(Ok(()))
    }

    pub fn remove(&mut self, rel: &str) -> Option<Result<(), Errno>> {
        self.following_partitions(|c| c.remove_dir(rel))
    }

    fn remove_dir(&mut self, rel: &str) -> Option<Result<(), Errno>> {
        if !self.cgroups.contains_key(rel) || self.is_root(rel) {
            return None;
        }
        if self.populated(rel) || !self.children(rel).is_empty() {
            return Some(Err(libc::EBUSY));
        }
        if let Some(cpus) = self.stuck.remove(rel) {
            self.leaked = self.leaked.union(&cpus);
        }
        self.cgroups.remove(rel);
        Some(Ok(()))
    }

    pub fn set_affinity(&mut self, pid: u32, cpus: &CpuSet) -> Result<(), Errno> {
        let Some(task) = self.tasks.get(&pid) else {
            return Err(libc::ESRCH);
        };
        // The kernel keeps a task inside its cpuset: a mask with none of the cpuset's CPUs is
        // refused (so is one with none of the root's, for a task there while a partition holds
        // the rest).
        let cpuset = self.effective(&task.cgroup.clone());
        if task.flags & PF_NO_SETAFFINITY != 0
            || cpus.intersection(&self.online).is_empty()
            || cpus.intersection(&cpuset).is_empty()
        {
            return Err(libc::EINVAL);
        }
        self.tasks.get_mut(&pid).unwrap().mask = cpus.clone();
        self.user_masks.insert(pid, cpus.clone());
        Ok(())
    }

    /// `systemctl set-property --runtime UNIT AllowedCPUs=…`: the unit's cgroup follows. An
    /// empty value removes the setting but leaves the live cpuset as it was (systemd does).
    pub fn systemctl_set(&mut self, unit: &str, property: &str, value: &str) -> Result<(), Errno> {
        self.systemctl_calls
            .push(format!("set-property --runtime {unit} {property}={value}"));
        if property != "AllowedCPUs" || !self.units.contains_key(unit) {
            return Err(libc::ENOENT);
        }
        self.units.insert(unit.to_string(), value.to_string());
        self.drop_ins.insert(unit.to_string(), value.to_string());
        if !value.is_empty() {
            let path = self.unit_cgroup(unit);
            // systemd enables cpuset on every ancestor of a unit that needs it.
            let mut ancestor = Self::parent(&path);
            while let Some(dir) = ancestor {
                self.cgroups
                    .get_mut(&dir)
                    .unwrap()
                    .subtree
                    .insert("cpuset".into());
                ancestor = if self.is_root(&dir) {
                    None
                } else {
                    Self::parent(&dir)
                };
            }
            self.cgroups.get_mut(&path).unwrap().cpus =
                CpuSet::parse(value).map_err(|_| libc::EINVAL)?;
        }
        Ok(())
    }

    /// `-NAME` in `dir`'s `cgroup.subtree_control`: refused (EBUSY) while a child enables the
    /// controller for its own children; otherwise the children lose the controller's files
    /// and its state (for cpuset: their CPU lists, exclusive lists and partition modes), so a
    /// child that gets the controller back starts from the defaults.
    pub fn disable_controller(&mut self, dir: &str, name: &str) -> Result<(), Errno> {
        let children = self.children(dir);
        if children
            .iter()
            .any(|c| self.cgroups[c].subtree.contains(name))
        {
            return Err(libc::EBUSY);
        }
        self.cgroups.get_mut(dir).unwrap().subtree.remove(name);
        if name == "cpuset" {
            for child in children {
                let c = self.cgroups.get_mut(&child).unwrap();
                c.cpus = CpuSet::default();
                c.mems = String::new();
                c.exclusive = CpuSet::default();
                c.partition = Default::default();
            }
        }
        Ok(())
    }

    /// `systemctl daemon-reload`: every unit's property is what its drop-in says, or unset, and
    /// systemd realizes the cgroups again: a unit left without AllowedCPUs no longer needs the
    /// cpuset controller, whose files come back empty (as seen on systemd 257).
    pub fn daemon_reload(&mut self) {
        self.systemctl_calls.push("daemon-reload".into());
        let units: Vec<String> = self.units.keys().cloned().collect();
        for unit in units {
            let value = self.drop_ins.get(&unit).cloned().unwrap_or_default();
            if value.is_empty() {
                let path = self.unit_cgroup(&unit);
                if let Some(c) = self.cgroups.get_mut(&path) {
                    c.cpus = CpuSet::default();
                }
            }
            self.units.insert(unit, value);
        }
        self.systemd_realizes();
    }

    /// A file removed under the root: a runtime drop-in leaves the model. `None`: not one.
    pub fn remove_file(&mut self, rel: &str) -> Option<()> {
        let unit = self
            .drop_ins
            .keys()
            .find(|u| Self::drop_in_path(u) == rel)?
            .clone();
        self.drop_ins.remove(&unit).map(drop)
    }

    /// Units systemd treats as transient: `init.scope` is one on systemd 257 (its runtime
    /// properties go under /run/systemd/transient, not system.control).
    pub fn transient(unit: &str) -> bool {
        unit == "init.scope"
    }

    /// Where `set-property --runtime` keeps a unit's AllowedCPUs.
    pub fn drop_in_path(unit: &str) -> String {
        let dir = if Self::transient(unit) {
            "transient"
        } else {
            "system.control"
        };
        format!("run/systemd/{dir}/{unit}.d/50-AllowedCPUs.conf")
    }

    fn unit_cgroup(&self, unit: &str) -> String {
        if unit.ends_with(".slice") || unit == "init.scope" {
            format!("{V2_MOUNT}/{unit}")
        } else {
            format!("{V2_MOUNT}/system.slice/{unit}")
        }
    }

    /// Files of the model, relative to the root.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mounts = match self.layout {
            Layout::V1 => "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\ncgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n",
            _ => "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n",
        };
        out.push((
            "proc/mounts".into(),
            format!("proc /proc proc rw 0 0\n{mounts}"),
        ));
        if self.layout == Layout::V1 {
            out.push((
                "sys/fs/cgroup/unified/cgroup.controllers".into(),
                "\n".into(),
            ));
        }
        if self.partitions && self.tasks.contains_key(&2) {
            // kthreadd's children: every other kernel thread (CONFIG_PROC_CHILDREN, as
            // Debian builds it; rendered on the partition hosts, where kvmtune reads it).
            let children: String = self
                .tasks
                .iter()
                .filter(|(pid, t)| **pid != 2 && t.flags & PF_KTHREAD != 0)
                .map(|(pid, _)| format!("{pid} "))
                .collect();
            out.push(("proc/2/task/2/children".into(), children));
        }
        for (pid, t) in &self.tasks {
            out.push((
                format!("proc/{pid}/stat"),
                format!(
                    "{pid} ({}) S 0 {pid} {pid} 0 -1 {} 0 0 0 0\n",
                    t.comm, t.flags
                ),
            ));
            let status = format!(
                "Name:\t{}\nPid:\t{pid}\nCpus_allowed_list:\t{}\n",
                t.comm,
                self.allowed(*pid)
            );
            if let Some(cmdline) = self.cmdlines.get(pid) {
                out.push((format!("proc/{pid}/cmdline"), cmdline.clone()));
            }
            out.push((format!("proc/{pid}/status"), status.clone()));
            out.push((format!("proc/{pid}/task/{pid}/status"), status));
            let rel = t.cgroup.strip_prefix(self.mount()).unwrap_or("");
            let rel = if rel.is_empty() { "/" } else { rel };
            let line = match self.layout {
                Layout::V1 => format!("1:cpuset:{rel}\n0::/\n"),
                _ => format!("0::{rel}\n"),
            };
            out.push((format!("proc/{pid}/cgroup"), line));
            if self.layout == Layout::V1 {
                out.push((format!("proc/{pid}/cpuset"), format!("{rel}\n")));
            }
        }
        for (path, c) in &self.cgroups {
            let procs: String = self
                .tasks
                .iter()
                .filter(|(_, t)| t.cgroup == *path)
                .map(|(p, _)| format!("{p}\n"))
                .collect();
            out.push((format!("{path}/cgroup.procs"), procs.clone()));
            match self.layout {
                Layout::V1 => {
                    out.push((format!("{path}/tasks"), procs));
                    out.push((format!("{path}/cpuset.cpus"), format!("{}\n", c.cpus)));
                    out.push((format!("{path}/cpuset.mems"), format!("{}\n", c.mems)));
                    out.push((
                        format!("{path}/cpuset.effective_cpus"),
                        format!("{}\n", self.effective(path)),
                    ));
                }
                _ => {
                    let controllers = if self.is_root(path) {
                        "cpuset cpu io memory pids".to_string()
                    } else {
                        "cpu io memory pids".to_string()
                    };
                    out.push((
                        format!("{path}/cgroup.controllers"),
                        format!("{controllers}\n"),
                    ));
                    let subtree: Vec<&str> = c.subtree.iter().map(String::as_str).collect();
                    out.push((
                        format!("{path}/cgroup.subtree_control"),
                        format!("{}\n", subtree.join(" ")),
                    ));
                    if self.cpuset_enabled(path) {
                        out.push((format!("{path}/cpuset.cpus"), format!("{}\n", c.cpus)));
                        out.push((
                            format!("{path}/cpuset.cpus.effective"),
                            format!("{}\n", self.effective(path)),
                        ));
                    }
                    out.extend(self.partition_files(path));
                }
            }
        }
        let groups = 1;
        out.push((
            "sys/devices/virtual/workqueue/cpumask".into(),
            format!("{}\n", self.unbound_workqueue_cpus().to_mask(groups)),
        ));
        if self.layout == Layout::Systemd {
            out.push(("run/systemd/system/.keep".into(), String::new()));
            for (unit, value) in &self.drop_ins {
                let section = if unit.ends_with(".slice") {
                    "Slice"
                } else {
                    "Scope"
                };
                out.push((
                    Self::drop_in_path(unit),
                    format!("# created via \"systemctl set-property\"\n[{section}]\nAllowedCPUs={value}\n"),
                ));
            }
        }
        out
    }
}
