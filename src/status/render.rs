//! `kvmtune status` as text, one function per section: the verdict first (one line), then pools,
//! VMs, CPUs, isolation, IRQs, host knobs, interrupted operations and the watcher.

use super::{Status, VmStatus};
use crate::host::PoolKey;
use crate::size::page_size_name;
use crate::state::Phase;

/// The status text, one section after another.
pub fn render(status: &Status) -> String {
    [
        format!("{}\n", status.verdict.line()),
        pools(status),
        vms(status),
        cpus(status),
        isolation(status),
        irqs(status),
        irqs_on_isolated(status),
        crate::knobs::status::render(&status.knobs),
        interrupted(status),
        watcher_line(status),
    ]
    .concat()
}

/// Every hugepage pool, with what kvmtune added to it.
fn pools(status: &Status) -> String {
    let mut out = String::from("Hugepage pools:\n");
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
    out
}

/// Every VM of the ledger, or `none`.
fn vms(status: &Status) -> String {
    let mut out = String::from("VMs:\n");
    if status.vms.is_empty() {
        out.push_str("  none\n");
    }
    for vm in &status.vms {
        out.push_str(&one_vm(status, vm));
    }
    out
}

/// One VM: its phase, isolated CPUs, whether its QEMU is gone, its vCPUs' wait, knobs and pages.
fn one_vm(status: &Status, vm: &VmStatus) -> String {
    let phase = match vm.phase {
        Phase::Prepared => "prepared",
        Phase::Running => "running",
    };
    let qemu = vm
        .pid
        .map(|pid| format!(", QEMU pid {pid} under kvmtune run"))
        .unwrap_or_default();
    let mut out = format!("  {:?} ({phase}{qemu})\n", vm.name);
    if !vm.isolate.is_empty() {
        let method = status
            .isolation
            .as_ref()
            .map(|iso| format!(" with {}", iso.method))
            .unwrap_or_default();
        out.push_str(&format!("    isolated CPUs {}{method}\n", vm.isolate));
    }
    if vm.phase == Phase::Running && vm.qemu_pids.is_empty() {
        out.push_str(
            "    its QEMU is gone (no process names it): `kvmtune watch` or `kvmtune recover` releases it\n",
        );
    }
    if let Some(wait) = vm.vcpu_wait_seconds {
        out.push_str(&format!(
            "    vCPU threads waited {wait:.3} s for a host CPU since QEMU started\n"
        ));
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
    out
}

/// The housekeeping and isolatable CPUs.
fn cpus(status: &Status) -> String {
    format!(
        "CPUs: housekeeping {}, isolatable {}\n",
        status.housekeeping_cpus, status.isolatable_cpus
    )
}

/// The isolation in place: its method and why, and the host tasks still on isolated CPUs.
fn isolation(status: &Status) -> String {
    let Some(iso) = &status.isolation else {
        return "Isolation: none\n".to_string();
    };
    let mut out = format!(
        "Isolation ({}): CPUs {} isolated, host tasks on {}\n",
        iso.method, iso.isolated, iso.housekeeping
    );
    if !iso.why.is_empty() {
        out.push_str(&format!("  method chosen: {}\n", iso.why));
    }
    out.push_str(&format!(
        "  per-CPU kernel threads on isolated CPUs (cannot move): {}\n",
        iso.per_cpu_kernel_threads
    ));
    if iso.unconfined.is_empty() {
        out.push_str("  every other host task is confined\n");
    }
    for t in &iso.unconfined {
        let why = if t.is_daemon() {
            " (virtualization daemon, kept unconfined)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  still allowed: pid {} {:?} on CPUs {}{why}\n",
            t.pid, t.comm, t.allowed
        ));
    }
    out
}

/// The IRQs kvmtune placed: others moved off, devices pinned, the kernel's refusals, irqbalance.
fn irqs(status: &Status) -> String {
    let Some(irqs) = &status.irqs else {
        return String::new();
    };
    let mut out = format!(
        "IRQs: {} other IRQ(s) (and default_smp_affinity) moved off isolated CPUs\n",
        irqs.moved
    );
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
    out
}

/// The IRQs the isolation's read-back still finds allowed on isolated CPUs, if any.
fn irqs_on_isolated(status: &Status) -> String {
    match &status.isolation {
        Some(iso) if !iso.irqs_on_isolated.is_empty() => {
            let list: Vec<String> = iso.irqs_on_isolated.iter().map(u32::to_string).collect();
            format!("IRQs still allowed on isolated CPUs: {}\n", list.join(" "))
        }
        _ => String::new(),
    }
}

/// The VMs whose journal an interrupted operation left, if any.
fn interrupted(status: &Status) -> String {
    if status.interrupted.is_empty() {
        return String::new();
    }
    format!(
        "Interrupted operations (run `kvmtune recover`): {}\n",
        status
            .interrupted
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// What the watcher did since boot, and when it last looked.
fn watcher_line(status: &Status) -> String {
    let c = &status.counters;
    let repairs: Vec<String> = c
        .repairs
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let last = match &status.watch {
        None => "has not run since boot".to_string(),
        Some(mark) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            format!(
                "pid {} last looked {:.0} s ago",
                mark.pid,
                (now - mark.last_pass_seconds()).max(0.0)
            )
        }
    };
    format!(
        "Watcher: {last}; repairs since boot: {}; reservation failures {}, compaction retries {}\n",
        if repairs.is_empty() {
            "none".to_string()
        } else {
            repairs.join(", ")
        },
        c.reservation_failures,
        c.compaction_retries
    )
}
