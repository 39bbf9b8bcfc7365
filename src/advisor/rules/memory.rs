//! Memory across the host: defined VMs that together ask more than the host has, and KSM
//! (page merging) where a latency-critical VM runs or across NUMA nodes.

use super::Subject;
use crate::advisor::findings::{Finding, Severity};
use crate::host::knobs::{KSM_MERGE_ACROSS_NODES, KSM_RUN};
use crate::plan::knobs::{wanted, Traits};
use crate::size::human;

pub const OVERCOMMIT: &str = "memory-overcommit";
pub const KSM_LATENCY: &str = "ksm-latency";
pub const KSM_MERGE: &str = "ksm-merge-across-nodes";

pub fn check(s: &Subject, out: &mut Vec<Finding>) {
    overcommit(s, out);
    let Some(ksm) = s.facts.ksm else {
        return;
    };
    // Hugepages are never merged; <nosharepages/> opts out of merging.
    let mergeable = s.domain.hugepages.is_none() && !s.domain.nosharepages;
    if ksm.run != 1 || !mergeable {
        return;
    }
    // What kvmtune itself will hold while the VM runs (the policy's [ksm], its metadata).
    let holds = |path: &str| held_knobs(s).iter().any(|(p, v)| p == path && v == "0");
    if s.latency_critical() && !holds(KSM_RUN) {
        out.push(Finding::new(
            Severity::Warning,
            KSM_LATENCY,
            "KSM is merging pages (ksm/run = 1) and this pinned VM's memory may be merged: a write to a merged page faults and copies".into(),
            "<memoryBacking>\n  <nosharepages/>\n</memoryBacking>\n<!-- or, with \"metadata\" in the policy's ksm.stop_for, KSM stopped while the VM runs: -->\n<kvmtune:ksm run=\"off\"/>".into(),
        ));
    }
    if s.multi_node() && ksm.merge_across_nodes == Some(true) && !holds(KSM_MERGE_ACROSS_NODES) {
        out.push(Finding::new(
            Severity::Warning,
            KSM_MERGE,
            "KSM merges pages across NUMA nodes (merge_across_nodes = 1): a merged page is remote to every VM but one".into(),
            "# /etc/kvmtune/kvmtune.toml: kvmtune unmerges, then holds it while the VMs of merge_for run\n[ksm]\nmerge_across_nodes = 0".into(),
        ));
    }
}

/// The knobs kvmtune would hold for this VM, as (path, value); none when its metadata asks
/// what the policy refuses (prepare says so).
fn held_knobs(s: &Subject) -> Vec<(String, String)> {
    let policy = &s.facts.policy;
    let isolated =
        crate::plan::bounds::cpu_settings(s.domain, &s.domain.name, policy, s.facts.topology())
            .is_ok_and(|c| !c.isolate.is_empty());
    let traits = Traits {
        isolated,
        hugepages: s.domain.hugepages.is_some(),
        nosharepages: s.domain.nosharepages,
        multi_node: s.multi_node(),
    };
    wanted(&s.domain.tune, &s.domain.name, &policy.knobs, &traits)
        .unwrap_or_default()
        .into_iter()
        .map(|w| (w.path, w.value))
        .collect()
}

fn overcommit(s: &Subject, out: &mut Vec<Finding>) {
    let nodes = s.facts.topology().nodes.len() as u64;
    let capacity = s.facts.total_memory().saturating_sub(s.facts.floor * nodes);
    let mut asks: Vec<(&str, u64)> = s
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.domain.memory_bytes))
        .collect();
    asks.push((s.domain.name.as_str(), s.domain.memory_bytes));
    let total: u64 = asks.iter().map(|a| a.1).sum();
    if total <= capacity {
        return;
    }
    asks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = asks
        .iter()
        .take(3)
        .map(|(n, b)| format!("'{n}' {}", human(*b)))
        .collect();
    out.push(Finding::new(
        Severity::Warning,
        OVERCOMMIT,
        format!(
            "the {} defined VMs ask {} together, the host has {} for them ({} minus the floor on each node); largest: {}",
            asks.len(),
            human(total),
            human(capacity),
            human(s.facts.total_memory()),
            top.join(", ")
        ),
        format!(
            "<!-- lower <memory> here or in other VMs by {} in all -->",
            human(total - capacity)
        ),
    ));
}
