//! The fake kernel's cgroup v2 cpuset partitions (6.7 and later), as
//! Documentation/admin-guide/cgroup-v2.rst describes them:
//! - `cpuset.cpus.partition` takes `member`, `root` or `isolated` (anything else: EINVAL). A bad
//!   setup does not fail the write: the file reads back `isolated invalid (REASON)`, with the
//!   kernel's reason strings (kernel/cgroup/cpuset.c, `perr_strings`);
//! - `cpuset.cpus.exclusive` must be a subset of the CPUs the parent may hand down (the root:
//!   every CPU; below it: the parent's `cpuset.cpus.exclusive.effective`), must not overlap
//!   a sibling's, and must not take all of a sibling's `cpuset.cpus` (EINVAL);
//! - `cpuset.cpus.exclusive.effective`: the exclusive list within the parent's, or for a partition
//!   under a partition root without one (a "local" partition), its `cpuset.cpus`;
//! - a partition whose parent is not a partition root (a "remote" one) is valid only when every
//!   ancestor below the root lists its CPUs in `cpuset.cpus.exclusive`;
//! - the root keeps at least one CPU; of two partitions wanting one CPU, the first (by path) wins;
//! - the CPUs of a valid partition leave the root's `cpuset.cpus.effective` and every cgroup
//!   outside the partition, and with them the tasks there (not per-CPU kernel threads: see
//!   `CgroupModel::allowed`); the root's `cpuset.cpus.isolated` lists the CPUs of valid
//!   isolated partitions;
//! - a sibling's `cpuset.cpus` that takes CPUs of a valid remote partition makes it invalid
//!   (`Invalid cpu list in cpuset.cpus.exclusive`) and, as 6.12 does (seen on Debian 13 after
//!   `virsh emulatorpin --live` onto a vCPU's CPU), the partition keeps its CPUs out of every
//!   other cgroup and in the root's `cpuset.cpus.isolated`: it is "stuck". Writing its mode again
//!   leaves it so; `member` gives the CPUs back; removing its cgroup leaks them (`leaked`: VMs
//!   pinned there can no longer start). Made again while the sibling's CPUs are still inside
//!   it, it is invalid: `Cpu list in cpuset.cpus not exclusive`;
//! - the unbound workqueues leave the CPUs of isolated partitions (6.8 and later):
//!   `workqueue/cpumask` reads the mask last written less those CPUs, or the written mask
//!   whole if nothing would be left (`workqueue_unbound_exclude_cpumask`).

use kvmtune::cpulist::CpuSet;

use super::cgroupfs::{CgroupModel, Errno, Layout};

/// What was written to `cpuset.cpus.partition`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PartitionMode {
    #[default]
    Member,
    Root,
    Isolated,
}

impl PartitionMode {
    fn word(self) -> &'static str {
        match self {
            PartitionMode::Member => "member",
            PartitionMode::Root => "root",
            PartitionMode::Isolated => "isolated",
        }
    }
}

/// The kernel's reasons, as `cpuset.cpus.partition` shows them.
pub const INVALID_CPUS: &str = "Invalid cpu list in cpuset.cpus.exclusive";
pub const INVALID_PARENT: &str = "Parent is an invalid partition root";
pub const NOT_PARTITION: &str = "Parent is not a partition root";
pub const NOT_EXCLUSIVE: &str = "Cpu list in cpuset.cpus not exclusive";
pub const NO_CPUS: &str = "Parent unable to distribute cpu downstream";
pub const EMPTY: &str = "cpuset.cpus and cpuset.cpus.exclusive are empty";

impl CgroupModel {
    /// Whether `path` has the partition files (`cpuset.cpus.exclusive`, `.partition`).
    pub fn has_partition_files(&self, path: &str) -> bool {
        self.partitions
            && self.layout != Layout::V1
            && !self.is_root(path)
            && self.cpuset_enabled(path)
    }

    /// The root, or a valid partition: may hand CPUs down to local partitions.
    fn is_partition_root(&self, path: &str) -> bool {
        self.is_root(path) || self.valid_partition(path)
    }

    /// The CPUs `path` may hand down as exclusive CPUs.
    fn exclusive_pool(&self, path: &str) -> CpuSet {
        if self.is_root(path) {
            self.online.clone()
        } else {
            self.exclusive_effective(path)
        }
    }

    /// `cpuset.cpus.exclusive.effective`.
    pub fn exclusive_effective(&self, path: &str) -> CpuSet {
        let (Some(c), Some(parent)) = (self.cgroups.get(path), Self::parent(path)) else {
            return CpuSet::default();
        };
        if self.is_root(path) {
            return CpuSet::default();
        }
        let pool = self.exclusive_pool(&parent);
        if !c.exclusive.is_empty() {
            c.exclusive.intersection(&pool)
        } else if c.partition != PartitionMode::Member && self.is_partition_root(&parent) {
            c.cpus.intersection(&pool)
        } else {
            CpuSet::default()
        }
    }

    /// Why the partition at `path` is invalid (`None`: valid, or a member).
    pub fn partition_error(&self, path: &str) -> Option<&'static str> {
        let c = self.cgroups.get(path)?;
        if c.partition == PartitionMode::Member || self.is_root(path) {
            return None;
        }
        if self.stuck.contains_key(path) {
            return Some(INVALID_CPUS);
        }
        let parent = Self::parent(path)?;
        let parent_mode = self.cgroups.get(&parent).map(|p| p.partition);
        if parent_mode.is_some_and(|m| m != PartitionMode::Member)
            && !self.is_root(&parent)
            && !self.valid_partition(&parent)
        {
            return Some(INVALID_PARENT);
        }
        if c.exclusive.is_empty() && c.cpus.is_empty() {
            return Some(EMPTY);
        }
        let local = self.is_partition_root(&parent);
        if !local && c.exclusive.is_empty() {
            return Some(NOT_PARTITION);
        }
        let wanted = if c.exclusive.is_empty() {
            &c.cpus
        } else {
            &c.exclusive
        };
        let mine = self.exclusive_effective(path);
        if mine.is_empty() || mine != *wanted {
            return Some(INVALID_CPUS);
        }
        // A sibling's own CPUs inside the partition (the rule `set_exclusive` refuses): 6.12
        // says so when a vCPU's partition is made while its emulator is pinned to its CPU.
        if !local
            && self.children(&parent).iter().any(|s| {
                let theirs = &self.cgroups[s];
                s != path && !theirs.cpus.is_empty() && theirs.cpus.is_subset(&mine)
            })
        {
            return Some(NOT_EXCLUSIVE);
        }
        // Earlier partitions (by path) keep their CPUs.
        let mut taken = CpuSet::default();
        for other in self.cgroups.keys().filter(|k| k.as_str() < path) {
            let related = path.starts_with(&format!("{other}/"));
            if !related && self.valid_partition(other) {
                taken = taken.union(&self.exclusive_effective(other));
            }
        }
        if !taken.intersection(&mine).is_empty() {
            return Some(NOT_EXCLUSIVE);
        }
        // The root's own tasks need a CPU.
        if self.online.difference(&taken).difference(&mine).is_empty() {
            return Some(NO_CPUS);
        }
        None
    }

    pub fn valid_partition(&self, path: &str) -> bool {
        self.partitions
            && self
                .cgroups
                .get(path)
                .is_some_and(|c| c.partition != PartitionMode::Member)
            && self.partition_error(path).is_none()
    }

    /// The CPUs valid (or stuck) partitions strictly below `path` take from it, and from the
    /// root the CPUs leaked too.
    pub fn partitioned_below(&self, path: &str) -> CpuSet {
        let mut cpus = CpuSet::default();
        if !self.partitions {
            return cpus;
        }
        let prefix = format!("{path}/");
        for (p, held) in &self.stuck {
            if p.starts_with(&prefix) {
                cpus = cpus.union(held);
            }
        }
        if self.is_root(path) {
            cpus = cpus.union(&self.leaked);
        }
        for (p, c) in &self.cgroups {
            if c.partition != PartitionMode::Member
                && p.starts_with(&prefix)
                && self.valid_partition(p)
            {
                cpus = cpus.union(&self.exclusive_effective(p));
            }
        }
        cpus
    }

    /// What `workqueue/cpumask` reads: the mask written (`wq_requested_unbound_cpumask`), less
    /// the isolated partitions' CPUs where the kernel has partitions.
    pub fn unbound_workqueue_cpus(&self) -> CpuSet {
        if !self.partitions {
            return self.workqueue.clone();
        }
        let left = self.workqueue.difference(&self.isolated());
        if left.is_empty() {
            self.workqueue.clone()
        } else {
            left
        }
    }

    /// The root's `cpuset.cpus.isolated`.
    pub fn isolated(&self) -> CpuSet {
        let mut cpus = self.leaked.clone();
        for held in self.stuck.values() {
            cpus = cpus.union(held);
        }
        for (p, c) in &self.cgroups {
            if c.partition == PartitionMode::Isolated && self.valid_partition(p) {
                cpus = cpus.union(&self.exclusive_effective(p));
            }
        }
        cpus
    }

    /// What `cpuset.cpus.partition` reads back.
    pub fn partition_text(&self, path: &str) -> String {
        let mode = self.cgroups[path].partition;
        match self.partition_error(path) {
            Some(reason) => format!("{} invalid ({reason})", mode.word()),
            None => mode.word().to_string(),
        }
    }

    pub fn set_exclusive(&mut self, dir: &str, value: &str) -> Result<(), Errno> {
        let cpus = CpuSet::parse(value).map_err(|_| libc::EINVAL)?;
        if !cpus.is_empty() {
            let parent = Self::parent(dir).ok_or(libc::EINVAL)?;
            if !cpus.is_subset(&self.exclusive_pool(&parent)) {
                return Err(libc::EINVAL);
            }
            // A sibling's exclusive CPUs may not overlap, nor may the list take all of a
            // sibling's own `cpuset.cpus` (6.12's `cpus_excl_conflict`: seen as EINVAL on
            // Debian 13 for a vCPU's list naming the CPU its VM's emulator is pinned to).
            let overlaps = self.children(&parent).iter().any(|sibling| {
                let theirs = &self.cgroups[sibling];
                sibling != dir
                    && (!theirs.exclusive.intersection(&cpus).is_empty()
                        || (!theirs.cpus.is_empty() && theirs.cpus.is_subset(&cpus))
                        || (self.valid_partition(sibling)
                            && !self
                                .exclusive_effective(sibling)
                                .intersection(&cpus)
                                .is_empty()))
            });
            if overlaps {
                return Err(libc::EINVAL);
            }
        }
        self.cgroups.get_mut(dir).unwrap().exclusive = cpus;
        Ok(())
    }

    pub fn set_partition(&mut self, dir: &str, value: &str) -> Result<(), Errno> {
        let mode = match value.trim() {
            "member" => PartitionMode::Member,
            "root" => PartitionMode::Root,
            "isolated" => PartitionMode::Isolated,
            _ => return Err(libc::EINVAL),
        };
        if mode == PartitionMode::Member {
            self.stuck.remove(dir);
        }
        self.cgroups.get_mut(dir).unwrap().partition = mode;
        Ok(())
    }

    /// `dir`'s `cpuset.cpus` becomes `cpus`: a valid remote partition among its siblings
    /// whose CPUs that takes is invalid from now on, and stuck.
    pub fn invalidate_siblings_partitions(&mut self, dir: &str, cpus: &CpuSet) {
        let Some(parent) = Self::parent(dir).filter(|_| self.partitions) else {
            return;
        };
        if self.is_partition_root(&parent) {
            return;
        }
        for sibling in self.children(&parent) {
            if sibling == dir || !self.valid_partition(&sibling) {
                continue;
            }
            let held = self.exclusive_effective(&sibling);
            if !held.intersection(cpus).is_empty() {
                self.stuck.insert(sibling, held);
            }
        }
    }

    /// The partition files of `path`, when the kernel has them.
    pub fn partition_files(&self, path: &str) -> Vec<(String, String)> {
        if !self.partitions || self.layout == Layout::V1 {
            return Vec::new();
        }
        if self.is_root(path) {
            return vec![
                (
                    format!("{path}/cpuset.cpus.effective"),
                    format!("{}\n", self.effective(path)),
                ),
                (
                    format!("{path}/cpuset.cpus.isolated"),
                    format!("{}\n", self.isolated()),
                ),
            ];
        }
        if !self.has_partition_files(path) {
            return Vec::new();
        }
        vec![
            (
                format!("{path}/cpuset.cpus.exclusive"),
                format!("{}\n", self.cgroups[path].exclusive),
            ),
            (
                format!("{path}/cpuset.cpus.exclusive.effective"),
                format!("{}\n", self.exclusive_effective(path)),
            ),
            (
                format!("{path}/cpuset.cpus.partition"),
                format!("{}\n", self.partition_text(path)),
            ),
        ]
    }
}
