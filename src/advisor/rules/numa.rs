//! NUMA: vCPUs and memory on one node when one node would hold them, memory next to its vCPUs,
//! guest NUMA cells for a VM larger than any node, passthrough devices next to the memory.

use super::Subject;
use crate::advisor::facts::{bound_nodes, memory_nodes, DeviceNode};
use crate::advisor::findings::{Finding, Severity};
use crate::advisor::fit;
use crate::cpulist::CpuSet;
use crate::size::human;

pub const VCPUS_SPAN: &str = "numa-vcpus-span";
pub const MEMORY_SPAN: &str = "numa-memory-span";
pub const MEMORY_REMOTE: &str = "numa-memory-remote";
pub const EXCEEDS_NODE: &str = "numa-exceeds-node";
pub const HOSTDEV: &str = "hostdev-numa";
pub const HOSTDEV_MISSING: &str = "hostdev-missing";

pub fn check(s: &Subject, out: &mut Vec<Finding>) {
    hostdev_missing(s, out);
    if !s.multi_node() {
        return;
    }
    let one_cell = s.domain.cells.len() < 2;
    let largest_cpus = s
        .facts
        .topology()
        .nodes
        .iter()
        .map(|n| n.cpus.difference(&s.facts.housekeeping).len())
        .max()
        .unwrap_or(0) as u32;
    let largest_memory = s
        .facts
        .topology()
        .nodes
        .iter()
        .map(|n| n.mem_total.saturating_sub(s.facts.floor))
        .max()
        .unwrap_or(0);
    let vcpus_fit = s.domain.vcpus <= largest_cpus;
    let memory_fits = s.domain.memory_bytes <= largest_memory;
    if one_cell {
        vcpus_span(s, vcpus_fit, out);
        memory_span(s, memory_fits, out);
        if !vcpus_fit || !memory_fits {
            exceeds_node(s, largest_cpus, largest_memory, out);
        }
    }
    memory_remote(s, out);
    hostdev_node(s, out);
}

fn vcpus_span(s: &Subject, fits: bool, out: &mut Vec<Finding>) {
    let cpus = s.vcpu_cpus();
    let nodes = s.facts.topology().nodes_of_cpus(&cpus);
    if nodes.len() < 2 || !fits {
        return;
    }
    let how = if s.is_pinned() {
        format!("are pinned to CPUs {cpus}")
    } else {
        "are not pinned".to_string()
    };
    out.push(Finding::new(
        Severity::Warning,
        VCPUS_SPAN,
        format!(
            "its {} vCPU(s) {how}, on nodes {nodes}, though one node holds them: memory access crosses nodes",
            s.domain.vcpus
        ),
        s.placement_fix(),
    ));
}

fn memory_span(s: &Subject, fits: bool, out: &mut Vec<Finding>) {
    if !fits {
        return;
    }
    let why = match bound_nodes(s.domain, None) {
        Some(nodes) if nodes.len() > 1 => format!(
            "its {} of memory is bound to nodes {nodes}, though one node holds it",
            human(s.domain.memory_bytes)
        ),
        Some(_) => return,
        None if s.domain.numatune.memnodes.is_empty() => format!(
            "its {} of memory is not bound to a node (<numatune>): pages land wherever the faulting thread runs",
            human(s.domain.memory_bytes)
        ),
        None => return,
    };
    out.push(Finding::new(
        Severity::Warning,
        MEMORY_SPAN,
        why,
        s.placement_fix(),
    ));
}

fn exceeds_node(s: &Subject, cpus: u32, memory: u64, out: &mut Vec<Finding>) {
    let nodes = s.facts.topology().nodes.len() as u32;
    let per_cpu = s.domain.vcpus.div_ceil(cpus.max(1));
    let per_mem = s.domain.memory_bytes.div_ceil(memory.max(1)) as u32;
    let k = per_cpu.max(per_mem).clamp(2, nodes);
    let mut req = s.request.clone();
    let page = req.cells.first().and_then(|c| c.page_kib);
    let threads = s.facts.threads_per_core() as u32;
    req.cells = fit::split(s.domain.vcpus, s.domain.memory_bytes, page, k, threads);
    req.distinct_nodes = true;
    let fix = match fit::fit(&req, s.facts, &s.occupancy) {
        Ok(l) => crate::advisor::suggest::cells_xml(&l),
        Err(e) => format!("<!-- {e} -->"),
    };
    out.push(Finding::new(
        Severity::Warning,
        EXCEEDS_NODE,
        format!(
            "{} vCPU(s) and {} are more than one node holds ({cpus} CPUs, {} besides housekeeping and the floor), and the guest has no NUMA cells: it cannot place its memory near its vCPUs",
            s.domain.vcpus,
            human(s.domain.memory_bytes),
            human(memory)
        ),
        fix,
    ));
}

/// The host nodes the vCPUs of guest cell `cell` (or all vCPUs) are pinned to.
fn vcpu_nodes(s: &Subject, cell: Option<u32>) -> CpuSet {
    let topo = s.facts.topology();
    let Some(cell) = cell else {
        return topo.nodes_of_cpus(&s.domain.vcpu_host_cpus());
    };
    let vcpus = s
        .design
        .cell_cpus
        .iter()
        .find(|(id, _)| *id == cell)
        .map(|(_, set)| set.clone())
        .unwrap_or_default();
    let mut cpus = CpuSet::new();
    for v in vcpus.iter() {
        match s.domain.vcpupins.iter().find(|(id, _)| *id == v) {
            Some((_, set)) => cpus = cpus.union(set),
            None => {
                if let Some(set) = &s.domain.vcpu_cpuset {
                    cpus = cpus.union(set);
                }
            }
        }
    }
    topo.nodes_of_cpus(&cpus)
}

fn memory_remote(s: &Subject, out: &mut Vec<Finding>) {
    let units: Vec<Option<u32>> = if s.domain.cells.is_empty() {
        vec![None]
    } else {
        s.domain.cells.iter().map(|c| Some(c.id)).collect()
    };
    for cell in units {
        let (Some(memory), vcpus) = (bound_nodes(s.domain, cell), vcpu_nodes(s, cell)) else {
            continue;
        };
        let remote = memory.difference(&vcpus);
        if vcpus.is_empty() || remote.is_empty() {
            continue;
        }
        let what = match cell {
            Some(id) => format!("guest cell {id}'s memory"),
            None => "its memory".to_string(),
        };
        out.push(Finding::new(
            Severity::Warning,
            MEMORY_REMOTE,
            format!("{what} is bound to node(s) {memory}, its vCPUs run on node(s) {vcpus}: node {remote} is remote to them"),
            s.placement_fix(),
        ));
    }
}

fn hostdev_node(s: &Subject, out: &mut Vec<Finding>) {
    let topo = s.facts.topology();
    let mut memory = memory_nodes(s.domain, topo);
    if memory.is_empty() {
        memory = vcpu_nodes(s, None);
    }
    for addr in &s.domain.hostdevs {
        let Some(DeviceNode::Node(node)) = s.facts.devices.get(addr) else {
            continue;
        };
        if memory.is_empty() || (memory.len() == 1 && memory.contains(*node)) {
            continue;
        }
        let verdict = if memory.contains(*node) {
            "part of its DMA crosses nodes"
        } else {
            "its DMA crosses nodes"
        };
        out.push(Finding::new(
            Severity::Warning,
            HOSTDEV,
            format!(
                "device {addr} sits on node {node}, the VM's memory on node(s) {memory}: {verdict}"
            ),
            s.placement_fix_on(*node),
        ));
    }
}

fn hostdev_missing(s: &Subject, out: &mut Vec<Finding>) {
    for addr in &s.domain.hostdevs {
        if s.facts.devices.get(addr) == Some(&DeviceNode::Missing) {
            out.push(Finding::new(
                Severity::Error,
                HOSTDEV_MISSING,
                format!("passthrough device {addr} does not exist on this host: the VM will not start"),
                "<!-- the host address of a device this host has, in <hostdev><source><address> -->".into(),
            ));
        }
    }
}
