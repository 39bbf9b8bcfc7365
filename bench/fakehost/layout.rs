//! A fake host root of plain files, laid out as the kernel shows /sys and /proc on a Debian
//! host without systemd (cgroup v1 cpuset + v2 without cpuset, as on the project's machines):
//! NUMA nodes with hugepage pools, CPUs, kernel threads and processes with their threads, the
//! cpuset hierarchy, IRQs (some of them managed) with /proc/interrupts at its real width, and
//! one PCI passthrough device with MSI-X vectors.
//!
//! Files are written once; `model::ModelFs` then gives the few files whose writes have side
//! effects in the kernel (pools, cgroups, IRQ affinities) their kernel behaviour.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use kvmtune::cpulist::CpuSet;

pub const CPUSET: &str = "sys/fs/cgroup/cpuset";
/// The cgroup v2 hierarchy of a `partitions` host.
pub const CGROUP2: &str = "sys/fs/cgroup";
pub const DEVICE: &str = "0000:06:00.0";
/// Vectors of the passthrough device (the last IRQs of the table).
pub const DEVICE_VECTORS: u32 = 4;
/// Per-node memory.
pub const NODE_GIB: u64 = 64;

const PF_KTHREAD: u64 = 0x0020_0000;
const PF_NO_SETAFFINITY: u64 = 0x0400_0000;
/// Flags of a user process as the kernel shows them (PF_SUPERPRIV | PF_RANDOMIZE).
const USER_FLAGS: u64 = 0x0040_0100;
/// Movable (unbound) kernel threads: kthreadd, kswapd per node, rcu, khugepaged, …
const MOVABLE_KTHREADS: u32 = 24;
/// Per-CPU kernel threads per CPU (cpuhp, migration, ksoftirqd, kworker/N:0).
const KTHREADS_PER_CPU: u32 = 4;

/// The shape of a fake host.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Shape {
    pub nodes: u32,
    pub cpus: u32,
    pub irqs: u32,
    /// Processes (kernel threads included), as `ps -e` counts them.
    pub tasks: u32,
    /// `/proc/sys/kernel/osrelease`. From 6.2 the kernel keeps threads' own CPU masks across
    /// cpuset changes and kvmtune does not look at them; before, it reads every thread's.
    pub kernel: &'static str,
    /// cgroup v2 alone, no systemd, and a kernel that offers isolated partitions (the root's
    /// `cpuset.cpus.isolated`; the partition files on children with cpuset): kvmtune isolates
    /// a `kvmtune run` VM with its own partition there. Otherwise cgroup v1 cpusets.
    pub partitions: bool,
}

/// This project's machines run a recent kernel.
pub const KERNEL: &str = "6.18.0";
/// A kernel before 6.2, for the cost of noting pinned threads.
pub const OLD_KERNEL: &str = "6.1.0";

impl Shape {
    pub fn cpus_of_node(&self, node: u32) -> CpuSet {
        let per = self.cpus / self.nodes;
        CpuSet::from_ids(node * per..(node + 1) * per)
    }

    pub fn online(&self) -> CpuSet {
        CpuSet::from_ids(0..self.cpus)
    }

    /// Every eighth IRQ is managed (an NVMe queue): pinned by the kernel to one CPU, and
    /// writes to its affinity fail with EIO.
    pub fn is_managed(&self, irq: u32) -> bool {
        irq % 8 == 5 && !self.is_device(irq)
    }

    pub fn is_device(&self, irq: u32) -> bool {
        irq >= self.irqs - DEVICE_VECTORS
    }

    /// Groups of 32 CPUs in a kernel mask (`00000000,0000ffff`).
    pub fn mask_groups(&self) -> usize {
        self.cpus.div_ceil(32) as usize
    }
}

pub fn put(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Lay out the host.
pub fn build(root: &Path, shape: &Shape) {
    fs::create_dir_all(root).unwrap();
    topology(root, shape);
    pools(root, shape);
    cgroups_and_tasks(root, shape);
    irqs(root, shape);
}

fn topology(root: &Path, shape: &Shape) {
    let online = shape.online();
    put(
        root,
        "sys/devices/system/cpu/online",
        &format!("{online}\n"),
    );
    put(
        root,
        "sys/devices/system/cpu/possible",
        &format!("{online}\n"),
    );
    for cpu in 0..shape.cpus {
        put(
            root,
            &format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"),
            &format!("{cpu}\n"),
        );
    }
    let nodes = CpuSet::from_ids(0..shape.nodes);
    put(
        root,
        "sys/devices/system/node/online",
        &format!("{nodes}\n"),
    );
    put(
        root,
        "sys/devices/system/node/possible",
        &format!("{nodes}\n"),
    );
    let groups = shape.mask_groups();
    for path in [
        "sys/devices/virtual/workqueue/cpumask",
        "sys/bus/workqueue/devices/writeback/cpumask",
    ] {
        put(root, path, &format!("{}\n", online.to_mask(groups)));
    }
}

/// Per-node meminfo as the kernel prints it (only the lines kvmtune and the scripts read
/// differ from zero).
pub fn node_meminfo(node: u32, total_kib: u64, free_kib: u64, huge_2m: u64) -> String {
    format!(
        "Node {node} MemTotal:       {total_kib:>8} kB\nNode {node} MemFree:        {free_kib:>8} kB\n\
         Node {node} MemUsed:        {:>8} kB\nNode {node} Active(file):          0 kB\n\
         Node {node} Inactive(file):        0 kB\nNode {node} SReclaimable:          0 kB\n\
         Node {node} HugePages_Total: {huge_2m:>5}\nNode {node} HugePages_Free:  {huge_2m:>5}\n\
         Node {node} HugePages_Surp:      0\n",
        total_kib - free_kib
    )
}

fn pools(root: &Path, shape: &Shape) {
    let total_kib = NODE_GIB << 20;
    // A host in use: a quarter of each node's memory is taken.
    let free_kib = total_kib / 4 * 3;
    for node in 0..shape.nodes {
        let dir = format!("sys/devices/system/node/node{node}");
        put(
            root,
            &format!("{dir}/cpulist"),
            &format!("{}\n", shape.cpus_of_node(node)),
        );
        put(
            root,
            &format!("{dir}/meminfo"),
            &node_meminfo(node, total_kib, free_kib, 0),
        );
        put(root, &format!("{dir}/compact"), "");
        for kib in [2048u64, 1 << 20] {
            for file in ["nr_hugepages", "free_hugepages", "surplus_hugepages"] {
                put(
                    root,
                    &format!("{dir}/hugepages/hugepages-{kib}kB/{file}"),
                    "0\n",
                );
            }
        }
    }
    for kib in [2048u64, 1 << 20] {
        for file in [
            "nr_hugepages",
            "free_hugepages",
            "surplus_hugepages",
            "resv_hugepages",
        ] {
            put(
                root,
                &format!("sys/kernel/mm/hugepages/hugepages-{kib}kB/{file}"),
                "0\n",
            );
        }
    }
    let total = total_kib * shape.nodes as u64;
    put(
        root,
        "proc/meminfo",
        &format!(
            "MemTotal:       {total} kB\nMemFree:        {} kB\nHugePages_Total:       0\n\
             HugePages_Free:        0\nHugePages_Rsvd:        0\nHugePages_Surp:        0\n\
             Hugepagesize:       2048 kB\n",
            total / 4 * 3
        ),
    );
    for file in ["nr_hugepages", "drop_caches", "compact_memory"] {
        put(root, &format!("proc/sys/vm/{file}"), "0\n");
    }
    put(
        root,
        "proc/sys/kernel/osrelease",
        &format!("{}\n", shape.kernel),
    );
}

struct Task {
    pid: u32,
    comm: String,
    flags: u64,
    cpus: CpuSet,
    /// Threads besides the main one; the last one pinned to CPU 0 when `pinned`.
    threads: u32,
    pinned: bool,
}

/// Kernel threads (per-CPU ones bound, a few unbound), init, libvirtd, services and other
/// processes with a few threads each, about `shape.tasks` in all.
fn tasks(shape: &Shape) -> Vec<Task> {
    let online = shape.online();
    let mut out = Vec::new();
    let mut pid = 1;
    let mut next = |out: &mut Vec<Task>, comm: String, flags: u64, cpus: CpuSet, threads| {
        out.push(Task {
            pid,
            comm,
            flags,
            cpus,
            threads,
            pinned: false,
        });
        pid += 1;
    };
    next(&mut out, "init".into(), USER_FLAGS, online.clone(), 0);
    next(
        &mut out,
        "kthreadd".into(),
        PF_KTHREAD | 0x8040,
        online.clone(),
        0,
    );
    // Per-CPU kernel threads take up to 80 % of the table (a 1024-CPU host has ~4000).
    let per_cpu_budget = shape.tasks * 4 / 5;
    let per_cpu = (KTHREADS_PER_CPU * shape.cpus).min(per_cpu_budget);
    let names = ["cpuhp", "migration", "ksoftirqd", "kworker"];
    for i in 0..per_cpu {
        let cpu = i / KTHREADS_PER_CPU;
        let name = names[(i % KTHREADS_PER_CPU) as usize];
        let comm = if name == "kworker" {
            format!("kworker/{cpu}:0-events")
        } else {
            format!("{name}/{cpu}")
        };
        next(
            &mut out,
            comm,
            PF_KTHREAD | PF_NO_SETAFFINITY | 0x40,
            CpuSet::from_ids([cpu]),
            0,
        );
    }
    for i in 0..MOVABLE_KTHREADS {
        next(
            &mut out,
            format!("kswapd{i}"),
            PF_KTHREAD | 0x40,
            online.clone(),
            0,
        );
    }
    next(&mut out, "libvirtd".into(), USER_FLAGS, online.clone(), 16);
    let mut n = 0;
    while out.len() < shape.tasks as usize {
        // 1 to 4 threads; one process in 50 has a thread someone pinned (taskset).
        next(
            &mut out,
            format!("svc{n}"),
            USER_FLAGS,
            online.clone(),
            n % 4,
        );
        if n % 50 == 7 {
            let t = out.last_mut().unwrap();
            t.threads = t.threads.max(1);
            t.pinned = true;
        }
        n += 1;
    }
    out
}

fn status(comm: &str, pid: u32, cpus: &CpuSet) -> String {
    format!(
        "Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t1\n\
         Threads:\t1\nCpus_allowed_list:\t{cpus}\nMems_allowed_list:\t0\n\
         voluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t0\n"
    )
}

fn cgroups_and_tasks(root: &Path, shape: &Shape) {
    let online = shape.online();
    let nodes = CpuSet::from_ids(0..shape.nodes);
    let cgroup_root = if shape.partitions {
        put(
            root,
            "proc/mounts",
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
             sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
             cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n",
        );
        // The root cgroup: cpuset offered, not enabled for children; no CPU isolated yet.
        for (file, value) in [
            (
                "cgroup.controllers",
                "cpuset cpu io memory pids\n".to_string(),
            ),
            ("cgroup.subtree_control", "\n".into()),
            ("cpuset.cpus.effective", format!("{online}\n")),
            ("cpuset.mems.effective", format!("{nodes}\n")),
            ("cpuset.cpus.isolated", "\n".into()),
        ] {
            put(root, &format!("{CGROUP2}/{file}"), &value);
        }
        CGROUP2
    } else {
        put(
            root,
            "proc/mounts",
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
             sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
             cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
             cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n",
        );
        put(root, "sys/fs/cgroup/unified/cgroup.controllers", "\n");
        // libvirt's VM cpuset: never touched by kvmtune or by the scripts.
        for dir in [CPUSET.to_string(), format!("{CPUSET}/machine")] {
            cgroup_files(root, &dir, &online, &nodes);
        }
        CPUSET
    };
    put(root, crate::model::CGROUP_ROOT, cgroup_root);
    let proc_cgroup = if shape.partitions {
        "0::/\n"
    } else {
        "2:cpuset:/\n0::/\n"
    };
    let mut members = String::new();
    // The root cpuset's files as plain text too, for the shell scripts (kvmtune's hook role
    // reads them from the memberships instead).
    let (mut procs, mut threads) = (String::new(), String::new());
    // kthreadd's children (`/proc/2/task/2/children`): every other kernel thread.
    let mut kthreads = String::new();
    for t in tasks(shape) {
        if t.flags & PF_KTHREAD != 0 && t.pid != 2 {
            write!(kthreads, "{} ", t.pid).unwrap();
        }
        writeln!(procs, "{}", t.pid).unwrap();
        writeln!(threads, "{}", t.pid).unwrap();
        for i in 0..t.threads {
            writeln!(threads, "{}", 100_000 + t.pid * 64 + i).unwrap();
        }
        let dir = format!("proc/{}", t.pid);
        put(
            root,
            &format!("{dir}/stat"),
            &format!(
                "{} ({}) S 1 {} {} 0 -1 {} 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n",
                t.pid, t.comm, t.pid, t.pid, t.flags
            ),
        );
        let main = status(&t.comm, t.pid, &t.cpus);
        put(root, &format!("{dir}/status"), &main);
        put(root, &format!("{dir}/comm"), &format!("{}\n", t.comm));
        put(root, &format!("{dir}/cgroup"), proc_cgroup);
        put(root, &format!("{dir}/task/{}/status", t.pid), &main);
        for i in 0..t.threads {
            let tid = 100_000 + t.pid * 64 + i;
            let cpus = if t.pinned && i == t.threads - 1 {
                CpuSet::from_ids([0])
            } else {
                t.cpus.clone()
            };
            put(
                root,
                &format!("{dir}/task/{tid}/status"),
                &status(&format!("{}-w{i}", t.comm), tid, &cpus),
            );
        }
        writeln!(members, "{} {} {cgroup_root}", t.pid, t.flags).unwrap();
    }
    put(root, "proc/2/task/2/children", &kthreads);
    put(root, crate::model::MEMBERS, &members);
    put(root, &format!("{cgroup_root}/cgroup.procs"), &procs);
    if !shape.partitions {
        put(root, &format!("{CPUSET}/tasks"), &threads);
    }
}

/// The interface files of a v1 cpuset (what the kernel creates with the directory).
pub fn cgroup_files(root: &Path, dir: &str, cpus: &CpuSet, mems: &CpuSet) {
    for (file, value) in [
        ("cpuset.cpus", format!("{cpus}\n")),
        ("cpuset.effective_cpus", format!("{cpus}\n")),
        ("cpuset.mems", format!("{mems}\n")),
        ("cpuset.effective_mems", format!("{mems}\n")),
        ("cpuset.cpu_exclusive", "0\n".into()),
        ("notify_on_release", "0\n".into()),
        ("cgroup.procs", String::new()),
        ("tasks", String::new()),
    ] {
        put(root, &format!("{dir}/{file}"), &value);
    }
}

fn irqs(root: &Path, shape: &Shape) {
    let online = shape.online();
    let groups = shape.mask_groups();
    put(
        root,
        "proc/irq/default_smp_affinity",
        &format!("{}\n", online.to_mask(groups)),
    );
    let mut msi = Vec::new();
    let mut managed = String::new();
    for irq in 0..shape.irqs {
        let dir = format!("proc/irq/{irq}");
        let home = CpuSet::from_ids([irq % shape.cpus]);
        let affinity = if shape.is_managed(irq) {
            &home
        } else {
            &online
        };
        put(
            root,
            &format!("{dir}/smp_affinity_list"),
            &format!("{affinity}\n"),
        );
        put(
            root,
            &format!("{dir}/smp_affinity"),
            &format!("{}\n", affinity.to_mask(groups)),
        );
        put(
            root,
            &format!("{dir}/effective_affinity_list"),
            &format!("{home}\n"),
        );
        if shape.is_managed(irq) {
            writeln!(managed, "{irq}").unwrap();
        }
        if shape.is_device(irq) {
            msi.push(irq);
        }
    }
    put(root, crate::model::MANAGED, &managed);
    let dev = format!("sys/bus/pci/devices/{DEVICE}");
    for irq in &msi {
        put(root, &format!("{dev}/msi_irqs/{irq}"), "msix\n");
    }
    put(root, &format!("{dev}/irq"), "0\n");
    put(root, &format!("{dev}/numa_node"), "0\n");
    // /proc/interrupts at the kernel's width: "%10u " per online CPU on every line.
    let path = root.join("proc/interrupts");
    let mut out = BufWriter::new(fs::File::create(path).unwrap());
    let mut header = String::from("     ");
    for cpu in 0..shape.cpus {
        write!(header, "      CPU{cpu:<4}").unwrap();
    }
    writeln!(out, "{header}").unwrap();
    let zeros = "         0 ".repeat(shape.cpus as usize);
    for irq in 0..shape.irqs {
        let name = if shape.is_device(irq) {
            let v = irq - (shape.irqs - DEVICE_VECTORS);
            format!("IR-PCI-MSIX-{DEVICE}  {v}-edge      vfio-msix[{v}]({DEVICE})")
        } else if shape.is_managed(irq) {
            format!("IR-PCI-MSIX-0000:01:00.0  {irq}-edge      nvme0q{irq}")
        } else {
            format!("IR-IO-APIC  {irq}-fasteoi   dev{irq}")
        };
        writeln!(out, "{irq:>4}: {zeros} {name}").unwrap();
    }
    out.flush().unwrap();
}
