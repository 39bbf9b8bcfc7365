//! Hugepages: memory in whole pages, no more than a node can ever hold, no balloon (it cannot
//! give hugepages back), and `<locked/>` only with a memory limit.

use super::Subject;
use crate::advisor::findings::{Finding, Severity};
use crate::domain::metadata::Reserve;
use crate::plan::hugepages::{need, page_size_for};
use crate::size::{human, page_size_name};

pub const MULTIPLE: &str = "hugepages-size-multiple";
pub const CAPACITY: &str = "hugepages-node-capacity";
pub const BALLOON: &str = "hugepages-balloon";
pub const LOCKED: &str = "locked-no-hard-limit";

pub fn check(s: &Subject, out: &mut Vec<Finding>) {
    if let Some(specs) = &s.domain.hugepages {
        let mut whole = true;
        let default = s.facts.host.default_page_kib;
        let units: Vec<(Option<u32>, u64)> = if s.domain.cells.is_empty() {
            vec![(None, s.domain.memory_bytes)]
        } else {
            s.domain
                .cells
                .iter()
                .map(|c| (Some(c.id), c.memory_bytes))
                .collect()
        };
        for (cell, bytes) in units {
            let page = page_size_for(specs, cell, default) * 1024;
            if bytes % page == 0 {
                continue;
            }
            whole = false;
            let up = bytes.div_ceil(page) * page / 1024;
            let (what, fix) = match cell {
                Some(id) => {
                    let cpus = s
                        .design
                        .cell_cpus
                        .iter()
                        .find(|(c, _)| *c == id)
                        .map(|(_, set)| set.to_string())
                        .unwrap_or_default();
                    (
                        format!("guest cell {id}'s memory"),
                        format!("<cell id='{id}' cpus='{cpus}' memory='{up}' unit='KiB'/>  <!-- <memory> is the sum of the cells -->"),
                    )
                }
                None => (
                    "its memory".to_string(),
                    format!("<memory unit='KiB'>{up}</memory>"),
                ),
            };
            out.push(Finding::new(
                Severity::Error,
                MULTIPLE,
                format!(
                    "{what} ({}) is not a whole number of {} pages: the VM will not start",
                    human(bytes),
                    page_size_name(page / 1024)
                ),
                fix,
            ));
        }
        if whole {
            capacity(s, out);
        }
        if s.design.balloon.as_deref() != Some("none") {
            out.push(Finding::new(
                Severity::Warning,
                BALLOON,
                "it has a memory balloon and hugepage-backed memory: the balloon cannot give hugepages back to the host".into(),
                "<memballoon model='none'/>".into(),
            ));
        }
    }
    if s.domain.locked && s.design.hard_limit.is_none() {
        let limit_kib = (s.domain.memory_bytes + (1 << 30)) / 1024;
        out.push(Finding::new(
            Severity::Warning,
            LOCKED,
            "<locked/> without <memtune><hard_limit>: QEMU may lock any amount of host memory".into(),
            format!("<memtune>\n  <hard_limit unit='KiB'>{limit_kib}</hard_limit>  <!-- guest memory + 1 GiB for QEMU; measure yours -->\n</memtune>"),
        ));
    }
}

/// Pages per node no larger than the node itself minus the policy's floor.
fn capacity(s: &Subject, out: &mut Vec<Finding>) {
    let topo = s.facts.topology();
    let bound_elsewhere = s
        .domain
        .numatune
        .memory
        .iter()
        .chain(s.domain.numatune.memnodes.iter().map(|(_, b)| b))
        .filter_map(|b| b.nodeset.as_ref())
        .any(|set| set.iter().any(|n| topo.node(n).is_none()));
    if bound_elsewhere {
        return; // pins-offline says it
    }
    let needs = match need(s.domain, Reserve::Auto, &s.facts.host) {
        Ok(n) => n,
        Err(e) => {
            out.push(Finding::new(
                Severity::Error,
                CAPACITY,
                e,
                s.placement_fix(),
            ));
            return;
        }
    };
    for (pool, pages) in needs {
        let Some(node) = topo.node(pool.node) else {
            continue;
        };
        let bytes = pages * pool.page_bytes();
        let most = node.mem_total.saturating_sub(s.facts.floor);
        if bytes > most {
            out.push(Finding::new(
                Severity::Error,
                CAPACITY,
                format!(
                    "it needs {pages} x {} pages ({}) on node {}, which has {} and keeps {} for the host: it can never hold them",
                    page_size_name(pool.page_kib),
                    human(bytes),
                    pool.node,
                    human(node.mem_total),
                    human(s.facts.floor)
                ),
                s.placement_fix(),
            ));
        }
    }
}
