//! `kvmtune status`: per VM what it holds, per node the hugepage pools, the CPU sets the policy
//! defines. Read-only and lock-free (state files are replaced atomically).

use serde::Serialize;

use crate::cpulist::CpuSet;
use crate::error::Result;
use crate::host::tasks::list_tasks;
use crate::host::{Host, HostFs, PoolKey};
use crate::isolation::Method;
use crate::plan::bounds;
use crate::policy::Policy;
use crate::size::page_size_name;
use crate::state::{Ledger, Phase, PoolHold, StateDir};

#[derive(Debug, Serialize)]
pub struct Status {
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
}

#[derive(Debug, Serialize)]
pub struct IsolationStatus {
    pub method: Method,
    /// CPUs isolated for VMs (the union of their sets).
    pub isolated: CpuSet,
    /// CPUs host tasks are confined to now.
    pub housekeeping: CpuSet,
    /// Host tasks still allowed on an isolated CPU (the virtualization daemons by design).
    pub unconfined: Vec<TaskStatus>,
    /// Per-CPU kernel threads on isolated CPUs: the kernel binds them, nothing can move them.
    pub per_cpu_kernel_threads: usize,
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

pub fn gather(fs: &dyn HostFs, state: Option<&StateDir>, policy: &Policy) -> Result<Status> {
    let host = Host::read(fs)?;
    let (ledger, interrupted) = match state {
        Some(s) => (
            s.load_ledger()?,
            s.journals()?.into_iter().map(|j| j.vm).collect(),
        ),
        None => (Ledger::default(), Vec::new()),
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
    Ok(Status {
        vms: ledger
            .vms
            .iter()
            .map(|(name, hold)| VmStatus {
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
            })
            .collect(),
        pools,
        housekeeping_cpus: bounds::housekeeping(policy, &host.topology),
        isolatable_cpus: bounds::isolatable(policy, &host.topology),
        isolation: ledger.isolation.as_ref().map(|hold| {
            isolation_status(
                fs,
                hold.method,
                &ledger.isolated_except(""),
                &hold.housekeeping,
                &ledger.isolated_vm_pids(),
            )
        }),
        irqs: ledger
            .irq
            .as_ref()
            .map(|hold| irq_status(fs, &ledger, hold)),
        knobs: crate::knobs::status::gather(fs, &ledger)?,
        interrupted,
    })
}

fn irq_status(fs: &dyn HostFs, ledger: &Ledger, hold: &crate::irq::IrqHold) -> IrqStatus {
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
        isolated: isolated.clone(),
        housekeeping: housekeeping.clone(),
        unconfined,
        per_cpu_kernel_threads,
    }
}

pub fn render(status: &Status) -> String {
    let mut out = String::new();
    out.push_str("Hugepage pools:\n");
    for p in &status.pools {
        let key = PoolKey {
            node: p.node,
            page_kib: p.page_kib,
        };
        out.push_str(&format!(
            "  node {} {:>7}: {} total, {} free, {} surplus, {} added by kvmtune{}\n",
            key.node,
            page_size_name(key.page_kib),
            p.total,
            p.free,
            p.surplus,
            p.added_by_kvmtune,
            p.baseline
                .map(|b| format!(" (was {b})"))
                .unwrap_or_default()
        ));
    }
    out.push_str("VMs:\n");
    if status.vms.is_empty() {
        out.push_str("  none\n");
    }
    for vm in &status.vms {
        let phase = match vm.phase {
            Phase::Prepared => "prepared",
            Phase::Running => "running",
        };
        let qemu = vm
            .pid
            .map(|pid| format!(", QEMU pid {pid} under kvmtune run"))
            .unwrap_or_default();
        out.push_str(&format!("  {:?} ({phase}{qemu})\n", vm.name));
        if !vm.isolate.is_empty() {
            out.push_str(&format!("    isolated CPUs {}\n", vm.isolate));
        }
        for (path, value) in &vm.knobs {
            out.push_str(&format!("    holds {path} = {value}\n"));
        }
        for h in &vm.hugepages {
            out.push_str(&format!(
                "    node {} {}: {} pages, {} added for it\n",
                h.pool.node,
                page_size_name(h.pool.page_kib),
                h.pages,
                h.added
            ));
        }
    }
    out.push_str(&format!(
        "CPUs: housekeeping {}, isolatable {}\n",
        status.housekeeping_cpus, status.isolatable_cpus
    ));
    match &status.isolation {
        None => out.push_str("Isolation: none\n"),
        Some(iso) => {
            out.push_str(&format!(
                "Isolation ({}): CPUs {} isolated, host tasks on {}\n",
                iso.method, iso.isolated, iso.housekeeping
            ));
            out.push_str(&format!(
                "  per-CPU kernel threads on isolated CPUs (cannot move): {}\n",
                iso.per_cpu_kernel_threads
            ));
            if iso.unconfined.is_empty() {
                out.push_str("  every other host task is confined\n");
            }
            for t in &iso.unconfined {
                let why = if crate::apply::effects::UNCONFINED_DAEMONS.contains(&t.comm.as_str()) {
                    " (virtualization daemon, kept unconfined)"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "  still allowed: pid {} {:?} on CPUs {}{why}\n",
                    t.pid, t.comm, t.allowed
                ));
            }
        }
    }
    if let Some(irqs) = &status.irqs {
        out.push_str(&format!(
            "IRQs: {} other IRQ(s) (and default_smp_affinity) moved off isolated CPUs\n",
            irqs.moved
        ));
        for p in &irqs.pinned {
            out.push_str(&format!(
                "  IRQ {} of VM {:?} pinned to CPUs {}\n",
                p.irq, p.vm, p.cpus
            ));
        }
        if !irqs.refused.is_empty() {
            let list: Vec<String> = irqs.refused.iter().map(u32::to_string).collect();
            out.push_str(&format!(
                "  refused by the kernel (managed or fixed IRQs, left where it put them): {}\n",
                list.join(" ")
            ));
        }
        if let Some(note) = &irqs.irqbalance {
            out.push_str(&format!("  irqbalance: {note}\n"));
        }
    }
    out.push_str(&crate::knobs::status::render(&status.knobs));
    if !status.interrupted.is_empty() {
        out.push_str(&format!(
            "Interrupted operations (run `kvmtune recover`): {}\n",
            status
                .interrupted
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}
