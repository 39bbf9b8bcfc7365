//! `kvmtune status`: per VM what it holds, per node the hugepage pools, the CPU sets the policy
//! defines, and whether every promise kvmtune made still holds (`verdict`). Read-only and
//! lock-free (state files are replaced atomically). The metrics (the `metrics` module) are this
//! same data in Prometheus' text format.
//!
//! - `render`: the text for people;
//! - `verdict`: which promises do not hold now.

mod render;
pub mod verdict;

use serde::Serialize;

pub use render::render;
pub use verdict::{Broken, Promise, Verdict};

use crate::cpulist::CpuSet;
use crate::error::Result;
use crate::host::tasks::list_tasks;
use crate::host::{Host, HostFs};
use crate::plan::bounds;
use crate::policy::Policy;
use crate::state::holds::Method;
use crate::state::{Counters, Ledger, Phase, PoolHold, StateDir, VmHold, WatchMark};

#[derive(Debug, Serialize)]
pub struct Status {
    /// Whether every promise kvmtune made holds now; what does not.
    pub verdict: Verdict,
    pub vms: Vec<VmStatus>,
    pub pools: Vec<PoolStatus>,
    pub housekeeping_cpus: CpuSet,
    pub isolatable_cpus: CpuSet,
    /// While any VM's CPUs are isolated.
    pub isolation: Option<IsolationStatus>,
    /// While kvmtune holds IRQ affinities.
    pub irqs: Option<IrqStatus>,
    /// KSM and THP now, and the host knobs kvmtune holds.
    pub knobs: crate::knobs::status::KnobsStatus,
    /// VMs with an operation that was interrupted and not yet finished or undone.
    pub interrupted: Vec<String>,
    /// Events counted since boot: repairs of the watcher, reservation failures, compactions.
    pub counters: Counters,
    /// When `kvmtune watch` last looked; `None` when no watcher ran since boot.
    pub watch: Option<WatchMark>,
}

#[derive(Debug, Serialize)]
pub struct VmStatus {
    pub name: String,
    pub phase: Phase,
    pub hugepages: Vec<PoolHold>,
    pub isolate: CpuSet,
    /// The QEMU process, for an isolating VM started by `kvmtune run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Host knobs held for it: file → value.
    pub knobs: std::collections::BTreeMap<String, String>,
    /// The processes whose command line names the VM (its QEMU; with `kvmtune run`, the
    /// wrapper too). Empty: none runs.
    pub qemu_pids: Vec<u32>,
    /// Its passthrough devices' IRQs that kvmtune pins while it runs.
    pub pinned_irqs: usize,
    /// How long its vCPU threads waited for a host CPU since QEMU started, in seconds (the
    /// sum of their schedstat run_delay); `None` without a QEMU whose vCPUs can be read.
    pub vcpu_wait_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct IsolationStatus {
    pub method: Method,
    /// Why that method was chosen (empty for a hold from before kvmtune kept it).
    pub why: String,
    /// CPUs isolated for VMs (the union of their sets).
    pub isolated: CpuSet,
    /// CPUs host tasks are confined to now.
    pub housekeeping: CpuSet,
    /// Host tasks still allowed on an isolated CPU (the virtualization daemons by design).
    pub unconfined: Vec<TaskStatus>,
    /// Per-CPU kernel threads on isolated CPUs: the kernel binds them, nothing can move them.
    pub per_cpu_kernel_threads: usize,
    /// IRQs allowed on isolated CPUs that are no VM's device IRQ and that the kernel would
    /// move (kvmtune moves them at `started`, the watcher whenever they come back).
    pub irqs_on_isolated: Vec<u32>,
    /// IRQs allowed on isolated CPUs that the kernel refused to move (managed or fixed).
    pub refused_irqs_on_isolated: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct IrqStatus {
    /// Device IRQs of running VMs, with the CPUs they are pinned to.
    pub pinned: Vec<PinnedIrq>,
    /// Other IRQs kvmtune moved off isolated CPUs (their original affinity is kept).
    pub moved: usize,
    /// IRQs the kernel refused to move (managed, or fixed like the timer).
    pub refused: Vec<u32>,
    /// irqbalance: what kvmtune did with it, or why it could not.
    pub irqbalance: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PinnedIrq {
    pub vm: String,
    pub irq: u32,
    pub cpus: String,
}

#[derive(Debug, Serialize)]
pub struct TaskStatus {
    pub pid: u32,
    pub comm: String,
    pub allowed: CpuSet,
}

#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub node: u32,
    pub page_kib: u64,
    pub total: u64,
    pub free: u64,
    pub surplus: u64,
    pub added_by_kvmtune: u64,
    /// The persistent count before kvmtune grew the pool, while any VM holds pages in it.
    pub baseline: Option<u64>,
}

/// The status of this host, finding each VM's QEMU by its command line.
pub fn gather(fs: &dyn HostFs, state: Option<&StateDir>, policy: &Policy) -> Result<Status> {
    gather_with(fs, state, policy, &mut |name, _| {
        crate::host::process::processes_naming(fs, name)
    })
}

/// The status, with `qemu` telling the processes of a VM (the watcher knows them from its last
/// look, and need not read the command line of every process of the host).
pub fn gather_with(
    fs: &dyn HostFs,
    state: Option<&StateDir>,
    policy: &Policy,
    qemu: &mut dyn FnMut(&str, &VmHold) -> Vec<u32>,
) -> Result<Status> {
    let host = Host::read(fs)?;
    let (ledger, interrupted, counters, watch) = match state {
        Some(s) => (
            s.load_ledger()?,
            s.journals()?.into_iter().map(|j| j.vm).collect(),
            s.counters(),
            s.watch_mark(),
        ),
        None => (Ledger::default(), Vec::new(), Counters::default(), None),
    };
    let pools = host
        .pools
        .iter()
        .map(|(key, p)| PoolStatus {
            node: key.node,
            page_kib: key.page_kib,
            total: p.nr,
            free: p.free,
            surplus: p.surplus,
            added_by_kvmtune: ledger.added(*key),
            baseline: ledger.baseline(*key),
        })
        .collect();
    let irqs = ledger
        .irq
        .as_ref()
        .map(|hold| irq_status(fs, &ledger, hold));
    let vms = ledger
        .vms
        .iter()
        .map(|(name, hold)| {
            let qemu_pids = qemu(name, hold);
            VmStatus {
                name: name.clone(),
                phase: hold.phase,
                hugepages: hold.hugepages.clone(),
                isolate: hold.isolate.clone(),
                pid: hold.pid,
                knobs: hold
                    .knobs
                    .iter()
                    .map(|(path, value)| (crate::host::knobs::shown(path), value.clone()))
                    .collect(),
                pinned_irqs: irqs
                    .as_ref()
                    .map_or(0, |i| i.pinned.iter().filter(|p| p.vm == *name).count()),
                vcpu_wait_seconds: crate::host::schedstat::vcpu_wait_ns(fs, &qemu_pids)
                    .map(|ns| ns as f64 / 1e9),
                qemu_pids,
            }
        })
        .collect();
    let isolation = ledger.isolation.as_ref().map(|hold| {
        let mut iso = isolation_status(
            fs,
            hold.method,
            &crate::isolation::confiner(hold.method).isolated_now(&ledger),
            &hold.housekeeping,
            &ledger.isolated_vm_pids(),
        );
        iso.why = hold.why.clone();
        irqs_on_isolated(fs, &mut iso, irqs.as_ref());
        iso
    });
    let mut status = Status {
        verdict: Verdict::default(),
        vms,
        pools,
        housekeeping_cpus: bounds::housekeeping(policy, &host.topology),
        isolatable_cpus: bounds::isolatable(policy, &host.topology),
        isolation,
        irqs,
        knobs: crate::knobs::status::gather(fs, &ledger)?,
        interrupted,
        counters,
        watch,
    };
    status.verdict = verdict::judge(fs, &ledger, policy, &host, &status);
    Ok(status)
}

/// Which IRQs may still fire on isolated CPUs, the VMs' own device IRQs aside.
fn irqs_on_isolated(fs: &dyn HostFs, iso: &mut IsolationStatus, irqs: Option<&IrqStatus>) {
    let devices: Vec<u32> = irqs.map_or(Vec::new(), |i| i.pinned.iter().map(|p| p.irq).collect());
    let refused: Vec<u32> = irqs.map_or(Vec::new(), |i| i.refused.clone());
    for irq in crate::irq::all_irqs(fs) {
        if devices.contains(&irq) {
            continue;
        }
        let Some(cpus) = fs
            .read(&crate::irq::affinity_path(irq))
            .ok()
            .and_then(|v| CpuSet::parse(&v).ok())
        else {
            continue;
        };
        if cpus.intersection(&iso.isolated).is_empty() {
            continue;
        }
        if refused.contains(&irq) {
            iso.refused_irqs_on_isolated.push(irq);
        } else {
            iso.irqs_on_isolated.push(irq);
        }
    }
}

fn irq_status(fs: &dyn HostFs, ledger: &Ledger, hold: &crate::state::holds::IrqHold) -> IrqStatus {
    let interrupts = fs.read("proc/interrupts").unwrap_or_default();
    let mut pinned = Vec::new();
    for (name, vm) in ledger.vms.iter().filter(|(_, v)| v.irq.is_some()) {
        for bdf in &vm.devices {
            for irq in crate::irq::device_irqs(fs, bdf, &interrupts) {
                pinned.push(PinnedIrq {
                    vm: name.clone(),
                    irq,
                    cpus: fs
                        .read(&crate::irq::affinity_path(irq))
                        .map(|v| v.trim().to_string())
                        .unwrap_or_default(),
                });
            }
        }
    }
    let device_paths: Vec<String> = pinned
        .iter()
        .map(|p| crate::irq::affinity_path(p.irq))
        .collect();
    IrqStatus {
        moved: hold
            .baseline
            .keys()
            .filter(|p| !device_paths.contains(p) && crate::irq::irq_of(p).is_some())
            .count(),
        pinned,
        refused: hold.refused.iter().copied().collect(),
        irqbalance: hold.irqbalance_note.clone().or_else(|| {
            hold.irqbalance_banned
                .as_ref()
                .map(|b| format!("told to keep off isolated CPUs (its own banned set: '{b}')"))
        }),
    }
}

/// Who still may run on the isolated CPUs: what an operator checks to see isolation holds.
fn isolation_status(
    fs: &dyn HostFs,
    method: Method,
    isolated: &CpuSet,
    housekeeping: &CpuSet,
    vm_pids: &[u32],
) -> IsolationStatus {
    let mut unconfined = Vec::new();
    let mut per_cpu_kernel_threads = 0;
    for task in list_tasks(fs) {
        if task.allowed.intersection(isolated).is_empty() {
            continue;
        }
        if task.is_kernel_thread() && !task.is_movable_kernel_thread() {
            per_cpu_kernel_threads += 1;
            continue;
        }
        let cgroup = crate::host::cgroup::of_process(fs, task.pid);
        if cgroup.paths().any(|p| p.contains("/machine")) || vm_pids.contains(&task.pid) {
            continue; // a VM's own process, placed by libvirt or started by `kvmtune run`
        }
        unconfined.push(TaskStatus {
            pid: task.pid,
            comm: task.comm,
            allowed: task.allowed,
        });
    }
    IsolationStatus {
        method,
        why: String::new(),
        isolated: isolated.clone(),
        housekeeping: housekeeping.clone(),
        unconfined,
        per_cpu_kernel_threads,
        irqs_on_isolated: Vec::new(),
        refused_irqs_on_isolated: Vec::new(),
    }
}

impl TaskStatus {
    /// A virtualization daemon, kept unconfined on purpose on cgroupfs hosts.
    pub fn is_daemon(&self) -> bool {
        crate::host::tasks::UNCONFINED_DAEMONS.contains(&self.comm.as_str())
    }
}
