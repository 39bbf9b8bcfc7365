//! kvmtune's metrics in Prometheus' text format: what `kvmtune status` gathers, named and typed
//! per Prometheus' naming guide (a `kvmtune_` prefix, base units, `_total` for counters,
//! `_info` gauges of value 1 for facts carried in labels). The watcher writes them as
//! `kvmtune.prom` for node_exporter's textfile collector (`textfile`); `kvmtune status --format
//! prometheus` prints the same text.
//!
//! Per-VM series carry the domain's name as the `vm` label and disappear with the VM. Counters
//! count since boot (they live in /run/kvmtune, as the state does); the vCPU wait counter
//! counts since the VM's QEMU started.

pub mod exposition;
pub mod textfile;

use exposition::{Exposition, Sample, Type};

use crate::state::stats::RepairKind;
use crate::status::{Promise, Status};

/// The metrics text for this status.
pub fn render(status: &Status) -> String {
    let mut e = Exposition::default();
    verdict(&mut e, status);
    pools(&mut e, status);
    vms(&mut e, status);
    isolation(&mut e, status);
    counters(&mut e, status);
    e.finish()
}

fn verdict(e: &mut Exposition, status: &Status) {
    let v = &status.verdict;
    e.family(
        "kvmtune_promises_kept",
        Type::Gauge,
        "1 when every promise kvmtune made for its VMs holds now (kvmtune status exits 0), else 0.",
        vec![Sample::new(if v.kept { 1.0 } else { 0.0 })],
    );
    e.family(
        "kvmtune_promises_broken",
        Type::Gauge,
        "Promises kvmtune made that do not hold now, by kind; kvmtune status says what shows each.",
        Promise::ALL
            .iter()
            .map(|p| Sample::new(v.count(*p) as f64).label("promise", p.name()))
            .collect(),
    );
    e.family(
        "kvmtune_interrupted_operations",
        Type::Gauge,
        "Operations interrupted (a crash, a kill) and not yet finished or undone.",
        vec![Sample::new(status.interrupted.len() as f64)],
    );
}

fn pools(e: &mut Exposition, status: &Status) {
    let pool = |value: fn(&crate::status::PoolStatus) -> u64| -> Vec<Sample> {
        status
            .pools
            .iter()
            .map(|p| {
                Sample::new(value(p) as f64)
                    .label("node", p.node.to_string())
                    .label("page_size_bytes", (p.page_kib * 1024).to_string())
            })
            .collect()
    };
    e.family(
        "kvmtune_hugepages_pool_pages",
        Type::Gauge,
        "Pages in a NUMA node's hugepage pool of one page size (nr_hugepages, surplus pages included).",
        pool(|p| p.total),
    );
    e.family(
        "kvmtune_hugepages_pool_free_pages",
        Type::Gauge,
        "Free pages in a NUMA node's hugepage pool of one page size.",
        pool(|p| p.free),
    );
    e.family(
        "kvmtune_hugepages_pool_surplus_pages",
        Type::Gauge,
        "Surplus (overcommitted) pages in a NUMA node's hugepage pool of one page size.",
        pool(|p| p.surplus),
    );
    e.family(
        "kvmtune_hugepages_pool_added_pages",
        Type::Gauge,
        "Pages kvmtune added to a NUMA node's hugepage pool for the VMs that hold them; given back when they stop.",
        pool(|p| p.added_by_kvmtune),
    );
}

fn vms(e: &mut Exposition, status: &Status) {
    let per_vm = |value: &dyn Fn(&crate::status::VmStatus) -> Option<f64>| -> Vec<Sample> {
        status
            .vms
            .iter()
            .filter_map(|vm| Some(Sample::new(value(vm)?).label("vm", vm.name.clone())))
            .collect()
    };
    e.family(
        "kvmtune_vm_info",
        Type::Gauge,
        "A VM kvmtune holds host resources for, with its phase: prepared (QEMU not started yet) or running.",
        status
            .vms
            .iter()
            .map(|vm| {
                Sample::new(1.0)
                    .label("vm", vm.name.clone())
                    .label("phase", phase(vm.phase))
            })
            .collect(),
    );
    let pages = |added: bool| -> Vec<Sample> {
        status
            .vms
            .iter()
            .flat_map(|vm| {
                vm.hugepages.iter().map(move |h| {
                    Sample::new(if added { h.added } else { h.pages } as f64)
                        .label("vm", vm.name.clone())
                        .label("node", h.pool.node.to_string())
                        .label("page_size_bytes", h.pool.page_bytes().to_string())
                })
            })
            .collect()
    };
    e.family(
        "kvmtune_vm_hugepages_held_pages",
        Type::Gauge,
        "Hugepages a VM holds in a NUMA node's pool of one page size.",
        pages(false),
    );
    e.family(
        "kvmtune_vm_hugepages_added_pages",
        Type::Gauge,
        "Hugepages kvmtune added to a NUMA node's pool for a VM (the free pool covered the rest).",
        pages(true),
    );
    e.family(
        "kvmtune_vm_isolated_cpus",
        Type::Gauge,
        "Host CPUs isolated for a VM: no host task but the VM's own may run there.",
        per_vm(&|vm| Some(vm.isolate.len() as f64)),
    );
    e.family(
        "kvmtune_vm_pinned_irqs",
        Type::Gauge,
        "IRQs of a VM's PCI passthrough devices that kvmtune pins to the CPUs its policy names.",
        per_vm(&|vm| Some(vm.pinned_irqs as f64)),
    );
    e.family(
        "kvmtune_vm_knob_info",
        Type::Gauge,
        "A host knob (KSM, transparent hugepages, a sysctl) held at a value while a VM runs.",
        status
            .vms
            .iter()
            .flat_map(|vm| {
                vm.knobs.iter().map(move |(knob, value)| {
                    Sample::new(1.0)
                        .label("vm", vm.name.clone())
                        .label("knob", knob.clone())
                        .label("value", value.clone())
                })
            })
            .collect(),
    );
    e.family(
        "kvmtune_vm_vcpu_wait_seconds_total",
        Type::Counter,
        "Time a VM's vCPU threads (CPU N/KVM) waited for a host CPU since its QEMU started (schedstat run_delay).",
        per_vm(&|vm| vm.vcpu_wait_seconds),
    );
}

fn phase(phase: crate::state::Phase) -> &'static str {
    match phase {
        crate::state::Phase::Prepared => "prepared",
        crate::state::Phase::Running => "running",
    }
}

fn isolation(e: &mut Exposition, status: &Status) {
    let iso = status.isolation.as_ref();
    let method = iso.map_or("none".to_string(), |i| {
        serde_json::to_value(i.method)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    e.family(
        "kvmtune_isolation_info",
        Type::Gauge,
        "How host tasks are kept off isolated CPUs: systemd, cgroupv2, cgroupv1, partition, or none while no CPU is isolated.",
        vec![Sample::new(1.0).label("method", method)],
    );
    e.family(
        "kvmtune_isolated_cpus",
        Type::Gauge,
        "Host CPUs isolated for VMs now.",
        vec![Sample::new(iso.map_or(0, |i| i.isolated.len()) as f64)],
    );
    let (mut unconfined, mut daemons) = (0, 0);
    for t in iso.iter().flat_map(|i| i.unconfined.iter()) {
        if t.is_daemon() {
            daemons += 1;
        } else {
            unconfined += 1;
        }
    }
    e.family(
        "kvmtune_host_tasks_on_isolated_cpus",
        Type::Gauge,
        "Host tasks allowed on isolated CPUs, by kind: unconfined (a promise broken), daemon (libvirtd or virtqemud, kept unconfined on cgroupfs hosts), per_cpu_kernel_thread (bound there by the kernel).",
        vec![
            Sample::new(unconfined as f64).label("kind", "unconfined"),
            Sample::new(daemons as f64).label("kind", "daemon"),
            Sample::new(iso.map_or(0, |i| i.per_cpu_kernel_threads) as f64)
                .label("kind", "per_cpu_kernel_thread"),
        ],
    );
    e.family(
        "kvmtune_host_irqs_on_isolated_cpus",
        Type::Gauge,
        "IRQs allowed on isolated CPUs that are no VM's device IRQ, by kind: movable (kvmtune moves them once a VM runs) or refused (managed or fixed IRQs the kernel will not move).",
        vec![
            Sample::new(iso.map_or(0, |i| i.irqs_on_isolated.len()) as f64)
                .label("kind", "movable"),
            Sample::new(iso.map_or(0, |i| i.refused_irqs_on_isolated.len()) as f64)
                .label("kind", "refused"),
        ],
    );
}

fn counters(e: &mut Exposition, status: &Status) {
    let c = &status.counters;
    e.family(
        "kvmtune_watch_repairs_total",
        Type::Counter,
        "Repairs kvmtune watch made since boot, by kind: irq (device IRQs pinned, IRQs moved off isolated CPUs again), sweep (host processes born on isolated CPUs moved), isolation (what confines host tasks put back), hugepages (a shrunk pool grown back), knob (a host knob set back), gone_vm (a VM whose QEMU died released).",
        RepairKind::ALL
            .iter()
            .map(|k| {
                Sample::new(c.repairs.get(k.name()).copied().unwrap_or(0) as f64)
                    .label("kind", k.name())
            })
            .collect(),
    );
    e.family(
        "kvmtune_hugepages_reservation_failures_total",
        Type::Counter,
        "VM starts refused since boot because the kernel gave fewer hugepages than the VM needs, compaction included.",
        vec![Sample::new(c.reservation_failures as f64)],
    );
    e.family(
        "kvmtune_hugepages_compaction_retries_total",
        Type::Counter,
        "NUMA node compactions kvmtune made since boot to retry a hugepage reservation.",
        vec![Sample::new(c.compaction_retries as f64)],
    );
    e.family(
        "kvmtune_watch_last_pass_timestamp_seconds",
        Type::Gauge,
        "When kvmtune watch last looked at the host and wrote these metrics, in seconds since the Unix epoch.",
        status
            .watch
            .iter()
            .map(|m| Sample::new(m.last_pass_seconds()))
            .collect(),
    );
}
