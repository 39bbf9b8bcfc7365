//! Where the vCPUs, the emulator and the iothreads run: pins that exist on this host, that no
//! other VM shares (not even through an SMT sibling), off housekeeping CPUs, and apart.

use super::Subject;
use crate::advisor::findings::{Finding, Severity};
use crate::cpulist::CpuSet;

pub const OFFLINE: &str = "pins-offline";
pub const SHARED: &str = "pins-shared";
pub const HOUSEKEEPING: &str = "pins-housekeeping";
pub const SMT_SPLIT_VM: &str = "smt-split-vm";
pub const SMT_SPLIT_HOST: &str = "smt-split-host";
pub const EMULATOR: &str = "emulator-on-vcpus";
pub const IOTHREAD: &str = "iothread-on-vcpus";

pub fn check(s: &Subject, out: &mut Vec<Finding>) {
    offline(s, out);
    if !s.is_pinned() {
        return;
    }
    let mine = s.domain.vcpu_host_cpus();
    shared(s, &mine, out);
    housekeeping(s, &mine, out);
    smt(s, &mine, out);
    emulator(s, &mine, out);
    iothreads(s, &mine, out);
}

/// Pins to CPUs, and bindings to nodes, that this host does not have: libvirt refuses to start.
fn offline(s: &Subject, out: &mut Vec<Finding>) {
    let online = &s.facts.topology().online_cpus;
    let mut cpus = s.domain.vcpu_host_cpus().union(&s.design.iothread_cpus());
    if let Some(e) = &s.domain.emulatorpin {
        cpus = cpus.union(e);
    }
    let missing = cpus.difference(online);
    if !missing.is_empty() {
        out.push(Finding::new(
            Severity::Error,
            OFFLINE,
            format!("pins name CPUs {missing}, which are not online here (online: {online}): the VM will not start"),
            s.placement_fix(),
        ));
    }
    let nodes = CpuSet::from_ids(s.facts.topology().nodes.iter().map(|n| n.id));
    let mut bound = CpuSet::new();
    for b in s
        .domain
        .numatune
        .memory
        .iter()
        .chain(s.domain.numatune.memnodes.iter().map(|(_, b)| b))
    {
        if let Some(set) = &b.nodeset {
            bound = bound.union(set);
        }
    }
    let absent = bound.difference(&nodes);
    if !absent.is_empty() {
        out.push(Finding::new(
            Severity::Error,
            OFFLINE,
            format!("<numatune> binds memory to node(s) {absent}, which this host does not have (nodes: {nodes}): the VM will not start"),
            s.placement_fix(),
        ));
    }
}

/// Every vCPU pinned to one CPU of its own: the VM was given dedicated CPUs.
fn dedicated(s: &Subject) -> bool {
    let pins = &s.domain.vcpupins;
    pins.len() as u32 >= s.domain.vcpus && pins.iter().all(|(_, set)| set.len() == 1)
}

fn shared(s: &Subject, mine: &CpuSet, out: &mut Vec<Finding>) {
    for peer in s.peers {
        let both = mine.intersection(&peer.vcpu_cpus());
        if both.is_empty() {
            continue;
        }
        let (severity, tail) = if dedicated(s) {
            (Severity::Error, "its dedicated CPUs are not its own")
        } else {
            (Severity::Warning, "their vCPUs compete when both run")
        };
        out.push(Finding::new(
            severity,
            SHARED,
            format!(
                "vCPU CPUs {both} are also vCPU CPUs of VM '{}': {tail}",
                peer.name
            ),
            s.placement_fix(),
        ));
    }
}

fn housekeeping(s: &Subject, mine: &CpuSet, out: &mut Vec<Finding>) {
    let hk = mine.intersection(&s.facts.housekeeping);
    if hk.is_empty() {
        return;
    }
    let isolating = matches!(
        s.domain.tune.isolate,
        Some(crate::domain::metadata::IsolateChoice::Vcpus)
    );
    let (severity, tail) = if isolating {
        (
            Severity::Error,
            "kvmtune refuses to isolate them at prepare",
        )
    } else {
        (Severity::Warning, "host tasks and IRQs are kept there")
    };
    out.push(Finding::new(
        severity,
        HOUSEKEEPING,
        format!(
            "vCPUs run on housekeeping CPUs {hk} (housekeeping: {}): {tail}",
            s.facts.housekeeping
        ),
        s.placement_fix(),
    ));
}

fn smt(s: &Subject, mine: &CpuSet, out: &mut Vec<Finding>) {
    let mut others = CpuSet::new();
    for cpu in mine.iter() {
        others = others.union(&s.facts.core_of(cpu).difference(mine));
    }
    if others.is_empty() {
        return;
    }
    let mut by_vms = CpuSet::new();
    for peer in s.peers {
        let theirs = others.intersection(&peer.vcpu_cpus());
        if !theirs.is_empty() {
            by_vms = by_vms.union(&theirs);
            out.push(Finding::new(
                Severity::Warning,
                SMT_SPLIT_VM,
                format!(
                    "SMT siblings {theirs} of its CPUs are vCPU CPUs of VM '{}': the two VMs share cores",
                    peer.name
                ),
                s.placement_fix(),
            ));
        }
    }
    // Siblings the VM has kvmtune isolate with its vCPUs' CPUs run nothing of the host's.
    let isolated = match &s.domain.tune.isolate {
        Some(crate::domain::metadata::IsolateChoice::List(set)) => set.clone(),
        _ => CpuSet::new(),
    };
    let host = others.difference(&by_vms).difference(&isolated);
    if !host.is_empty() {
        out.push(Finding::new(
            Severity::Warning,
            SMT_SPLIT_HOST,
            format!(
                "SMT siblings {host} of its CPUs are left to the host: host work shares those cores"
            ),
            s.placement_fix(),
        ));
    }
}

/// Where libvirt runs threads without a pin of their own: `<vcpu cpuset>`, else every CPU.
fn default_set(s: &Subject) -> CpuSet {
    s.domain
        .vcpu_cpuset
        .clone()
        .unwrap_or_else(|| s.facts.topology().online_cpus.clone())
}

/// Housekeeping CPUs next to the VM (where the fitting code would put its emulator).
fn housekeeping_fix(s: &Subject, mine: &CpuSet) -> CpuSet {
    if let Ok(l) = &s.layout {
        return l.emulator.clone();
    }
    let topo = s.facts.topology();
    let local = topo
        .nodes_of_cpus(mine)
        .iter()
        .filter_map(|n| topo.node(n))
        .fold(CpuSet::new(), |acc, n| acc.union(&n.cpus));
    let near = s.facts.housekeeping.intersection(&local);
    if near.is_empty() {
        s.facts.housekeeping.clone()
    } else {
        near
    }
}

fn emulator(s: &Subject, mine: &CpuSet, out: &mut Vec<Finding>) {
    let (set, said) = match &s.domain.emulatorpin {
        Some(e) => (e.clone(), true),
        None => (default_set(s), false),
    };
    let both = set.intersection(mine);
    if both.is_empty() {
        return;
    }
    let why = if said {
        format!("<emulatorpin> shares CPUs {both} with the vCPUs: QEMU's own threads take time from them")
    } else {
        format!("no <emulatorpin>: QEMU's emulator threads may run on the vCPUs' CPUs {both}")
    };
    out.push(Finding::new(
        Severity::Warning,
        EMULATOR,
        why,
        format!("<emulatorpin cpuset='{}'/>", housekeeping_fix(s, mine)),
    ));
}

fn iothreads(s: &Subject, mine: &CpuSet, out: &mut Vec<Finding>) {
    let target = housekeeping_fix(s, mine);
    let mut hit = Vec::new();
    for id in 1..=s.design.iothreads {
        let set = s
            .design
            .iothreadpins
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, set)| set.clone())
            .unwrap_or_else(|| default_set(s));
        if !set.intersection(mine).is_empty() {
            hit.push(id);
        }
    }
    if hit.is_empty() {
        return;
    }
    let ids: Vec<String> = hit.iter().map(u32::to_string).collect();
    let fix: Vec<String> = hit
        .iter()
        .map(|id| format!("<iothreadpin iothread='{id}' cpuset='{target}'/>"))
        .collect();
    out.push(Finding::new(
        Severity::Warning,
        IOTHREAD,
        format!(
            "iothread(s) {} may run on the vCPUs' CPUs {mine}: disk I/O takes time from them",
            ids.join(",")
        ),
        fix.join("\n"),
    ));
}
