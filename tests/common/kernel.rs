//! A fake host root that models the kernel where plain files would lie.
//!
//! The tree under the tempdir looks like the real /sys and /proc (the same paths, the same
//! formats) and is regenerated from the model after every write, so a test can snapshot it
//! byte for byte. Writes follow the kernel's rules:
//! - `nodeN/hugepages/hugepages-<KiB>kB/nr_hugepages`: the write always succeeds; the pool grows
//!   only as far as the node's free memory that is usable for pages of that size allows
//!   (free memory minus what fragmentation holds back), one page at a time; shrinking frees
//!   free pages only, and pages in use beyond the new count become surplus pages.
//! - `nodeN/compact`: compaction makes the movable fragmented memory usable again (unmovable
//!   fragmentation stays).
//! - every write is recorded, so a test can assert which files were never touched.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvmtune::cpulist::CpuSet;
use kvmtune::error::{Error, Result};
use kvmtune::host::systemctl::Systemctl;
use kvmtune::host::tasks::TaskAffinity;
use kvmtune::host::{HostFs, RootFs};

pub use super::cgroupfs::{CgroupModel, Layout};
pub use super::irqs::IrqModel;
pub use super::knobs::KnobModel;
use kvmtune::host::irqbalance::{Answer, IrqBalancer};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const PAGE_SIZES_KIB: [u64; 2] = [2048, 1 << 20];

#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub nr: u64,
    pub free: u64,
    pub surplus: u64,
}

#[derive(Debug, Clone)]
pub struct NodeModel {
    pub cpus: String,
    pub total: u64,
    /// Free memory outside hugepage pools.
    pub free: u64,
    /// Part of `free` too fragmented for huge pages until compacted.
    pub fragmented: u64,
    /// Part of `free` too fragmented for huge pages even after compaction (unmovable slab).
    pub pinned_fragments: u64,
    pub pools: BTreeMap<u64, Pool>,
}

#[derive(Debug, Default)]
struct Model {
    nodes: BTreeMap<u32, NodeModel>,
    /// Global reserved-but-unfaulted pages per size.
    reserved: BTreeMap<u64, u64>,
    writes: Vec<(String, String)>,
    compactions: u32,
    /// Panic (a simulated crash of kvmtune) when this many writes have been made.
    crash_at_write: Option<usize>,
    /// Tasks, cgroups, workqueue masks and systemd units, when a test asks for them.
    cgroups: Option<CgroupModel>,
    /// IRQs, PCI devices and irqbalance, when a test asks for them.
    irqs: Option<IrqModel>,
    /// KSM, transparent hugepages and sysctls (always: every kernel has some).
    knobs: KnobModel,
}

pub struct FakeKernel {
    dir: tempfile::TempDir,
    plain: RootFs,
    model: RefCell<Model>,
    points: Arc<Mutex<Points>>,
    /// The files of the cgroup and IRQ models as last written.
    rendered: RefCell<BTreeMap<String, String>>,
    /// Every file read through `HostFs`, in order (`reads`).
    reads: RefCell<Vec<String>>,
}

/// Every point where kvmtune changes something: each kernel write, mkdir, rmdir, systemctl,
/// affinity and irqbalance call (see `record`), and each state-file write (the state
/// directory's checkpoint). A test kills kvmtune at any one of them.
#[derive(Debug, Default)]
pub struct Points {
    /// Points passed so far.
    pub count: usize,
    /// Panic (a simulated `kill -9`) at this point.
    pub crash_at: Option<usize>,
    /// What each point was, in order.
    pub names: Vec<String>,
}

/// Count one point, and crash there when asked to.
fn pass_point(points: &Mutex<Points>, what: &str) {
    let mut p = points.lock().unwrap_or_else(|e| e.into_inner());
    let n = p.count;
    p.count += 1;
    p.names.push(what.to_string());
    if p.crash_at == Some(n) {
        p.crash_at = None;
        drop(p);
        panic!("injected crash at point {n}: before {what}");
    }
}

/// Node memory sizes and CPU lists, e.g. `&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]`.
pub fn kernel(nodes: &[(u64, &str)]) -> FakeKernel {
    let dir = super::fast_tempdir();
    let plain = RootFs::new(dir.path());
    let mut model = Model::default();
    for (id, (total, cpus)) in nodes.iter().enumerate() {
        model.nodes.insert(
            id as u32,
            NodeModel {
                cpus: cpus.to_string(),
                total: *total,
                free: *total,
                fragmented: 0,
                pinned_fragments: 0,
                pools: PAGE_SIZES_KIB
                    .iter()
                    .map(|s| (*s, Pool::default()))
                    .collect(),
            },
        );
    }
    let k = FakeKernel {
        dir,
        plain,
        model: RefCell::new(model),
        points: Arc::default(),
        rendered: RefCell::default(),
        reads: RefCell::default(),
    };
    k.render_static();
    k.render();
    k
}

impl FakeKernel {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Add tasks, a cgroup layout and the workqueue masks to the model.
    pub fn with_cgroups(self, layout: Layout) -> FakeKernel {
        let online = {
            let m = self.model.borrow();
            let cpus: Vec<String> = m.nodes.values().map(|n| n.cpus.clone()).collect();
            CpuSet::parse(&cpus.join(",")).unwrap()
        };
        self.model.borrow_mut().cgroups = Some(CgroupModel::new(layout, online));
        self.render();
        self
    }

    /// A kernel with isolated cpuset partitions and `cpuset.cpus.exclusive` (6.7 and later).
    pub fn with_partitions(self) -> FakeKernel {
        self.cgroups(|c| c.partitions = true);
        // Partitions came with 6.7: such a kernel keeps threads' own masks across cpuset
        // changes (6.2), and kvmtune does not look for pinned threads there.
        put(self.path(), "proc/sys/kernel/osrelease", "6.12.0-amd64\n");
        self
    }

    /// systemd's cgroup tree as Debian 13 boots it: no unit needs the cpuset controller, so it
    /// is enabled nowhere (libvirt's VMs bring it while they run: `libvirt_starts`).
    pub fn with_cpuset_unused(self) -> FakeKernel {
        self.cgroups(|c| {
            c.systemd_owns_cpuset = true;
            c.systemd_realizes()
        });
        self
    }

    /// SMT: each group of CPUs (`"0,8"`) shares a core; CPUs in no group stay single-threaded.
    pub fn with_smt(self, groups: &[&str]) -> FakeKernel {
        for group in groups {
            let set = CpuSet::parse(group).unwrap();
            for cpu in set.iter() {
                put(
                    self.path(),
                    &format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"),
                    &format!("{set}\n"),
                );
            }
        }
        self
    }

    /// Add IRQs, a passthrough device and (not running) irqbalance to the model.
    pub fn with_irqs(self) -> FakeKernel {
        let online = {
            let m = self.model.borrow();
            let cpus: Vec<String> = m.nodes.values().map(|n| n.cpus.clone()).collect();
            CpuSet::parse(&cpus.join(",")).unwrap()
        };
        self.model.borrow_mut().irqs = Some(IrqModel::new(online));
        self.render();
        self
    }

    /// Look at (or change) the IRQ model.
    pub fn irqs<T>(&self, f: impl FnOnce(&mut IrqModel) -> T) -> T {
        let out = f(self.model.borrow_mut().irqs.as_mut().expect("with_irqs"));
        self.render();
        out
    }

    /// Look at (or change, as another program or the admin would) the host knobs.
    pub fn knobs<T>(&self, f: impl FnOnce(&mut KnobModel) -> T) -> T {
        let out = f(&mut self.model.borrow_mut().knobs);
        self.render();
        out
    }

    /// Look at (or change, as another program would) the cgroup model.
    pub fn cgroups<T>(&self, f: impl FnOnce(&mut CgroupModel) -> T) -> T {
        let out = f(self
            .model
            .borrow_mut()
            .cgroups
            .as_mut()
            .expect("with_cgroups"));
        self.render();
        out
    }

    /// Let the cgroup model handle something, when the test asked for one (`None` otherwise).
    fn in_cgroups<T>(&self, f: impl FnOnce(&mut CgroupModel) -> Option<T>) -> Option<T> {
        self.model.borrow_mut().cgroups.as_mut().and_then(f)
    }

    /// The files kvmtune read through this kernel since the last call (which forgets them).
    pub fn reads(&self) -> Vec<String> {
        std::mem::take(&mut *self.reads.borrow_mut())
    }

    /// The state directory's checkpoint: state writes count as points too.
    pub fn checkpoint(&self) -> kvmtune::state::Checkpoint {
        let points = Arc::clone(&self.points);
        Arc::new(move |what: &str| pass_point(&points, &format!("state: {what}")))
    }

    /// Points passed so far (kernel changes and state writes).
    pub fn points(&self) -> usize {
        self.points.lock().unwrap().count
    }

    /// The names of the points passed since `from`.
    pub fn point_names(&self, from: usize) -> Vec<String> {
        self.points.lock().unwrap().names[from..].to_vec()
    }

    /// Simulate kvmtune being killed at its `n`-th point from now (0-based): before a kernel
    /// change or a state write.
    pub fn crash_at_point(&self, n: Option<usize>) {
        let mut p = self.points.lock().unwrap();
        p.crash_at = n.map(|n| n + p.count);
    }

    /// Record a change kvmtune makes (or crash before it, when asked to).
    fn record(&self, what: &str, value: &str) {
        pass_point(&self.points, what);
        let mut m = self.model.borrow_mut();
        if m.crash_at_write == Some(m.writes.len()) {
            m.crash_at_write = None;
            drop(m);
            panic!("injected crash before {what}");
        }
        m.writes.push((what.to_string(), value.to_string()));
    }

    /// Change the model directly (as another program or the admin would), then re-render.
    pub fn with_node(&self, node: u32, f: impl FnOnce(&mut NodeModel)) {
        f(self.model.borrow_mut().nodes.get_mut(&node).expect("node"));
        self.render();
    }

    pub fn node(&self, node: u32) -> NodeModel {
        self.model.borrow().nodes[&node].clone()
    }

    pub fn pool(&self, node: u32, page_kib: u64) -> Pool {
        self.model.borrow().nodes[&node].pools[&page_kib].clone()
    }

    /// The admin sets a pool before kvmtune runs (kernel rules apply).
    pub fn admin_set_pool(&self, node: u32, page_kib: u64, nr: u64) {
        self.apply_nr(node, page_kib, nr);
        self.render();
    }

    /// A QEMU faults `pages` of a pool in (they leave the free count).
    pub fn consume(&self, node: u32, page_kib: u64, pages: u64) {
        self.with_node(node, |n| {
            let p = n.pools.get_mut(&page_kib).unwrap();
            assert!(p.free >= pages, "model: consuming more than free");
            p.free -= pages;
        });
    }

    /// That QEMU exits: its pages are free again; surplus pages vanish as they are freed.
    pub fn give_back(&self, node: u32, page_kib: u64, pages: u64) {
        self.with_node(node, |n| {
            let p = n.pools.get_mut(&page_kib).unwrap();
            let vanish = pages.min(p.surplus);
            p.surplus -= vanish;
            p.nr -= vanish;
            n.free += vanish * page_kib * 1024;
            p.free += pages - vanish;
        });
    }

    pub fn set_reserved(&self, page_kib: u64, pages: u64) {
        self.model.borrow_mut().reserved.insert(page_kib, pages);
        self.render();
    }

    /// Simulate kvmtune being killed just before its `n`-th write (0-based) reaches the kernel.
    pub fn crash_at_write(&self, n: Option<usize>) {
        let mut m = self.model.borrow_mut();
        m.crash_at_write = n.map(|n| n + m.writes.len());
    }

    pub fn writes(&self) -> Vec<(String, String)> {
        self.model.borrow().writes.clone()
    }

    pub fn compactions(&self) -> u32 {
        self.model.borrow().compactions
    }

    /// Every file under the root with its contents, for byte-for-byte comparison.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(self.path(), self.path(), &mut out);
        out
    }

    fn apply_nr(&self, node: u32, page_kib: u64, wanted: u64) {
        let mut model = self.model.borrow_mut();
        let n = model.nodes.get_mut(&node).unwrap();
        let page_bytes = page_kib * 1024;
        let usable = n.free - n.fragmented.min(n.free) - n.pinned_fragments.min(n.free);
        let p = n.pools.get_mut(&page_kib).unwrap();
        let persistent = p.nr - p.surplus;
        if wanted > persistent {
            // Surplus pages become persistent first, then new pages come from free memory.
            let from_surplus = p.surplus.min(wanted - persistent);
            p.surplus -= from_surplus;
            let missing = wanted - persistent - from_surplus;
            let can = (usable / page_bytes).min(missing);
            p.nr += can;
            p.free += can;
            n.free -= can * page_bytes;
        } else {
            let excess = persistent - wanted;
            let freed = excess.min(p.free);
            p.nr -= freed;
            p.free -= freed;
            n.free += freed * page_bytes;
            // Pages in use above the new count stay, as surplus.
            p.surplus += excess - freed;
        }
    }

    fn render_static(&self) {
        let model = self.model.borrow();
        let nodes: Vec<u32> = model.nodes.keys().copied().collect();
        let cpus: Vec<String> = model.nodes.values().map(|n| n.cpus.clone()).collect();
        let all = kvmtune::cpulist::CpuSet::parse(&cpus.join(",")).unwrap();
        put(
            self.path(),
            "sys/devices/system/cpu/online",
            &format!("{all}\n"),
        );
        for cpu in all.iter() {
            put(
                self.path(),
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"),
                &format!("{cpu}\n"),
            );
        }
        let list = kvmtune::cpulist::CpuSet::from_ids(nodes.iter().copied());
        put(
            self.path(),
            "sys/devices/system/node/online",
            &format!("{list}\n"),
        );
        put(
            self.path(),
            "sys/devices/system/node/possible",
            &format!("{list}\n"),
        );
        put(self.path(), "proc/sys/vm/nr_hugepages", "0\n");
        for (id, n) in &model.nodes {
            put(
                self.path(),
                &format!("sys/devices/system/node/node{id}/cpulist"),
                &format!("{}\n", n.cpus),
            );
            put(
                self.path(),
                &format!("sys/devices/system/node/node{id}/compact"),
                "",
            );
        }
    }

    /// Write the model's counters into the tree, in the kernel's formats.
    fn render(&self) {
        self.render_pools();
        let model = self.model.borrow();
        let mut files = BTreeMap::new();
        if let Some(c) = &model.cgroups {
            files.extend(c.files());
        }
        // Files of knobs the kernel lacks vanish (a test can take KSM or THP away).
        files.extend(model.knobs.files());
        if let Some(i) = &model.irqs {
            files.extend(i.files());
        }
        drop(model);
        // Only what changed since the last render is written; files the model no longer has
        // vanish, with the directories they leave empty (a cgroup, a task, a freed IRQ).
        let mut rendered = self.rendered.borrow_mut();
        for (rel, contents) in &files {
            if rendered.get(rel) != Some(contents) {
                put(self.path(), rel, contents);
            }
        }
        for rel in rendered.keys().filter(|r| !files.contains_key(*r)) {
            let path = self.path().join(rel);
            let _ = fs::remove_file(&path);
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| *d != self.path()) {
                if fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        *rendered = files;
    }

    fn render_pools(&self) {
        let model = self.model.borrow();
        let mut total_nr: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
        for (id, n) in &model.nodes {
            let huge: u64 = n.pools.iter().map(|(s, p)| p.nr * s * 1024).sum();
            let meminfo = format!(
                "Node {id} MemTotal:       {:>8} kB\nNode {id} MemFree:        {:>8} kB\nNode {id} MemUsed:        {:>8} kB\nNode {id} Active(file):          0 kB\nNode {id} Inactive(file):        0 kB\nNode {id} SReclaimable:          0 kB\nNode {id} HugePages_Total: {:>5}\n",
                n.total / 1024,
                n.free / 1024,
                (n.total - n.free - huge) / 1024,
                n.pools[&2048].nr,
            );
            put(
                self.path(),
                &format!("sys/devices/system/node/node{id}/meminfo"),
                &meminfo,
            );
            for (size, p) in &n.pools {
                let dir = format!("sys/devices/system/node/node{id}/hugepages/hugepages-{size}kB");
                put(
                    self.path(),
                    &format!("{dir}/nr_hugepages"),
                    &format!("{}\n", p.nr),
                );
                put(
                    self.path(),
                    &format!("{dir}/free_hugepages"),
                    &format!("{}\n", p.free),
                );
                put(
                    self.path(),
                    &format!("{dir}/surplus_hugepages"),
                    &format!("{}\n", p.surplus),
                );
                let t = total_nr.entry(*size).or_default();
                t.0 += p.nr;
                t.1 += p.free;
                t.2 += p.surplus;
            }
        }
        for (size, (nr, free, surplus)) in &total_nr {
            let dir = format!("sys/kernel/mm/hugepages/hugepages-{size}kB");
            put(
                self.path(),
                &format!("{dir}/nr_hugepages"),
                &format!("{nr}\n"),
            );
            put(
                self.path(),
                &format!("{dir}/free_hugepages"),
                &format!("{free}\n"),
            );
            put(
                self.path(),
                &format!("{dir}/surplus_hugepages"),
                &format!("{surplus}\n"),
            );
            let resv = model.reserved.get(size).copied().unwrap_or(0);
            put(
                self.path(),
                &format!("{dir}/resv_hugepages"),
                &format!("{resv}\n"),
            );
        }
        let (nr, free, surplus) = total_nr.get(&2048).copied().unwrap_or_default();
        let resv = model.reserved.get(&2048).copied().unwrap_or(0);
        let mem_total: u64 = model.nodes.values().map(|n| n.total).sum();
        let mem_free: u64 = model.nodes.values().map(|n| n.free).sum();
        put(
            self.path(),
            "proc/meminfo",
            &format!(
                "MemTotal:       {} kB\nMemFree:        {} kB\nHugePages_Total:   {nr}\nHugePages_Free:    {free}\nHugePages_Rsvd:    {resv}\nHugePages_Surp:    {surplus}\nHugepagesize:       2048 kB\n",
                mem_total / 1024,
                mem_free / 1024
            ),
        );
    }
}

impl HostFs for FakeKernel {
    fn root(&self) -> &Path {
        self.path()
    }

    fn read(&self, rel: &str) -> Result<String> {
        self.reads.borrow_mut().push(rel.to_string());
        if let Some(errno) = self.model.borrow().knobs.read(rel) {
            return Err(errno_error("read", self.path().join(rel), errno));
        }
        self.plain.read(rel)
    }

    fn write(&self, rel: &str, value: &str) -> Result<()> {
        let realizes = |c: &mut CgroupModel| c.systemd_realizes_soon.then(|| c.systemd_realizes());
        if self.in_cgroups(realizes).is_some() {
            self.render();
        }
        // Like the kernel, writing a file that does not exist fails.
        if !self.plain.exists(rel) {
            return Err(Error::io(
                "open for writing",
                self.path().join(rel),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        self.record(rel, value);
        let handled = self.in_cgroups(|c| c.write(rel, value));
        let handled = handled.or_else(|| {
            self.model
                .borrow_mut()
                .irqs
                .as_mut()
                .and_then(|i| i.write(rel, value))
        });
        let handled = handled.or_else(|| self.model.borrow_mut().knobs.write(rel, value));
        if let Some(result) = handled {
            self.render();
            return result.map_err(|errno| errno_error("write", self.path().join(rel), errno));
        }
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["sys", "devices", "system", "node", node, "hugepages", size, "nr_hugepages"] => {
                let node: u32 = node.trim_start_matches("node").parse().unwrap();
                let kib: u64 = size
                    .trim_start_matches("hugepages-")
                    .trim_end_matches("kB")
                    .parse()
                    .unwrap();
                let wanted: u64 = value.trim().parse().map_err(|_| {
                    Error::io(
                        "write",
                        self.path().join(rel),
                        std::io::Error::from_raw_os_error(libc::EINVAL),
                    )
                })?;
                self.apply_nr(node, kib, wanted);
            }
            ["sys", "devices", "virtual", "workqueue", "cpumask"] => {
                let mut m = self.model.borrow_mut();
                let c = m.cgroups.as_mut().expect("workqueue needs with_cgroups");
                let mask = CpuSet::parse_mask(value)
                    .map_err(|_| errno_error("write", self.path().join(rel), libc::EINVAL))?;
                if mask.intersection(&c.online).is_empty() {
                    return Err(errno_error("write", self.path().join(rel), libc::EINVAL));
                }
                c.workqueue = mask;
            }
            ["sys", "devices", "system", "node", node, "compact"] => {
                let node: u32 = node.trim_start_matches("node").parse().unwrap();
                let mut m = self.model.borrow_mut();
                m.compactions += 1;
                m.nodes.get_mut(&node).unwrap().fragmented = 0;
            }
            _ => return self.plain.write(rel, value),
        }
        self.render();
        Ok(())
    }

    fn list(&self, rel: &str) -> Result<Vec<String>> {
        self.plain.list(rel)
    }

    fn exists(&self, rel: &str) -> bool {
        self.plain.exists(rel)
    }

    fn create_dir(&self, rel: &str) -> Result<()> {
        self.record(&format!("mkdir {rel}"), "");
        let handled = self.in_cgroups(|c| c.create(rel));
        match handled {
            Some(result) => {
                self.render();
                result.map_err(|errno| errno_error("create", self.path().join(rel), errno))
            }
            None => self.plain.create_dir(rel),
        }
    }

    fn remove_file(&self, rel: &str) -> Result<()> {
        self.record(&format!("rm {rel}"), "");
        match self.in_cgroups(|c| c.remove_file(rel)) {
            Some(()) => {
                self.render();
                Ok(())
            }
            None => std::fs::remove_file(self.path().join(rel))
                .map_err(|e| Error::io("remove", self.path().join(rel), e)),
        }
    }

    fn remove_dir(&self, rel: &str) -> Result<()> {
        self.record(&format!("rmdir {rel}"), "");
        let handled = self.in_cgroups(|c| c.remove(rel));
        match handled {
            Some(Ok(())) => {
                let _ = fs::remove_dir_all(self.path().join(rel));
                self.render();
                Ok(())
            }
            Some(Err(errno)) => Err(errno_error("remove", self.path().join(rel), errno)),
            None => self.plain.remove_dir(rel),
        }
    }
}

impl TaskAffinity for FakeKernel {
    fn set_affinity(&self, pid: u32, cpus: &CpuSet) -> Result<()> {
        self.record(&format!("affinity {pid}"), &cpus.to_string());
        let result = self
            .model
            .borrow_mut()
            .cgroups
            .as_mut()
            .expect("with_cgroups")
            .set_affinity(pid, cpus);
        self.render();
        result.map_err(|errno| errno_error("set the CPU affinity of", format!("pid {pid}"), errno))
    }
}

impl Systemctl for FakeKernel {
    fn property(&self, unit: &str, property: &str) -> Result<String> {
        let m = self.model.borrow();
        let c = m.cgroups.as_ref().expect("with_cgroups");
        if property == "Transient" {
            return Ok(if CgroupModel::transient(unit) {
                "yes"
            } else {
                "no"
            }
            .into());
        }
        c.units
            .get(unit)
            .cloned()
            .ok_or_else(|| Error::State(format!("systemctl: unit {unit} not found")))
    }

    fn set_property(&self, unit: &str, property: &str, value: &str) -> Result<()> {
        self.record(&format!("systemctl {unit} {property}"), value);
        let result = self
            .model
            .borrow_mut()
            .cgroups
            .as_mut()
            .expect("with_cgroups")
            .systemctl_set(unit, property, value);
        self.render();
        result.map_err(|errno| errno_error("systemctl set-property", unit.to_string(), errno))
    }

    fn daemon_reload(&self) -> Result<()> {
        self.record("systemctl daemon-reload", "");
        self.in_cgroups(|c| {
            c.daemon_reload();
            Some(())
        });
        self.render();
        Ok(())
    }
}

impl IrqBalancer for FakeKernel {
    fn banned(&self) -> Result<Option<Answer>> {
        Ok(self.model.borrow().irqs.as_ref().and_then(|i| {
            i.irqbalance.clone().map(|banned| Answer {
                pid: i.irqbalance_pid,
                banned,
            })
        }))
    }

    fn set_banned(&self, cpus: &CpuSet) -> Result<()> {
        self.record("irqbalance settings cpus", &cpus.to_string());
        if let Some(i) = self.model.borrow_mut().irqs.as_mut() {
            if i.irqbalance.is_some() {
                if i.irqbalance_waits_for_round {
                    i.irqbalance_told = Some(cpus.clone());
                } else {
                    i.irqbalance = Some(cpus.clone());
                }
            }
        }
        Ok(())
    }
}

fn errno_error(op: &'static str, path: impl Into<PathBuf>, errno: i32) -> Error {
    Error::io(op, path, std::io::Error::from_raw_os_error(errno))
}

pub fn put(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                fs::read(&path).unwrap(),
            );
        }
    }
}
