//! How many pages of which size a VM needs on which host node, and how much each pool must grow.
//!
//! Where the pages go, per unit of guest memory (each guest NUMA cell, or the whole memory when
//! the guest has no cells):
//! - bound by `<memnode cellid>` (cells only), else by `<numatune><memory>`:
//!   `strict`, `restrictive` and `interleave` spread the pages evenly over the nodeset (the
//!   remainder to the lowest nodes); `preferred` puts them all on its node;
//! - unbound (no numatune, or `placement='auto'` with no nodeset yet): the nodes of the CPUs the
//!   vCPUs are pinned to, else every node with memory, spread evenly. Writing each node's pool
//!   instead of the global `nr_hugepages` lets release give back exactly what each node had.

use std::collections::BTreeMap;

use crate::cpulist::CpuSet;
use crate::domain::metadata::Reserve;
use crate::domain::{Domain, MemMode, NodeBinding, PageSpec};
use crate::host::{Host, PoolKey};
use crate::size::{human, page_size_name};

/// Pages needed per pool; empty when the VM needs no reservation.
pub fn need(
    domain: &Domain,
    reserve: Reserve,
    host: &Host,
) -> Result<BTreeMap<PoolKey, u64>, String> {
    let specs: Vec<PageSpec> = match (reserve, &domain.hugepages) {
        (Reserve::Off, _) | (Reserve::Auto, None) => return Ok(BTreeMap::new()),
        (_, Some(specs)) => specs.clone(),
        (Reserve::On, None) => Vec::new(),
    };
    let mut out = BTreeMap::new();
    for (cell, bytes) in domain.memory_units() {
        let page_kib = page_size_for(&specs, cell, host.default_page_kib);
        let page_bytes = page_kib * 1024;
        let what = match cell {
            Some(id) => format!("guest NUMA cell {id}'s memory"),
            None => "memory".to_string(),
        };
        if bytes == 0 {
            continue;
        }
        if bytes % page_bytes != 0 {
            return Err(format!(
                "VM '{}': its {what} ({}) is not a multiple of the {} page size",
                domain.name,
                human(bytes),
                page_size_name(page_kib)
            ));
        }
        let nodes = host_nodes(domain, cell, host)?;
        for (node, pages) in spread(bytes / page_bytes, &nodes) {
            let key = PoolKey { node, page_kib };
            if host.pool(key).is_none() {
                return Err(format!(
                    "VM '{}' needs {} pages on node {node}, but the host has no such pool ({})",
                    domain.name,
                    page_size_name(page_kib),
                    crate::host::topology::NODE_DIR
                ));
            }
            *out.entry(key).or_insert(0) += pages;
        }
    }
    out.retain(|_, pages| *pages > 0);
    Ok(out)
}

/// The page size for a guest cell: the `<page>` whose nodeset names the cell, else the one
/// without a nodeset, else the host's default size.
pub(crate) fn page_size_for(specs: &[PageSpec], cell: Option<u32>, default_kib: u64) -> u64 {
    let by_cell = cell.and_then(|id| {
        specs
            .iter()
            .find(|s| s.cells.as_ref().is_some_and(|c| c.contains(id)))
    });
    by_cell
        .or_else(|| specs.iter().find(|s| s.cells.is_none()))
        .map(|s| s.size_kib)
        .unwrap_or(default_kib)
}

/// The host nodes a unit of guest memory will be allocated on (see the module comment).
fn host_nodes(domain: &Domain, cell: Option<u32>, host: &Host) -> Result<Vec<u32>, String> {
    let binding = domain.memory_binding(cell);
    let nodes: CpuSet = match binding {
        Some(NodeBinding {
            mode,
            nodeset: Some(set),
        }) => {
            for id in set.iter() {
                if host.topology.node(id).is_none() {
                    return Err(format!(
                        "VM '{}' binds memory to host node {id}, which this host does not have (nodes: {})",
                        domain.name,
                        CpuSet::from_ids(host.topology.nodes.iter().map(|n| n.id))
                    ));
                }
            }
            match mode {
                MemMode::Preferred => CpuSet::from_ids(set.first()),
                _ => set.clone(),
            }
        }
        _ => {
            let pinned = host.topology.nodes_of_cpus(&domain.vcpu_host_cpus());
            if pinned.is_empty() {
                CpuSet::from_ids(host.topology.memory_nodes().map(|n| n.id))
            } else {
                pinned
            }
        }
    };
    Ok(nodes.iter().collect())
}

/// Split `pages` evenly over `nodes`, the remainder going to the first ones.
fn spread(pages: u64, nodes: &[u32]) -> Vec<(u32, u64)> {
    let n = nodes.len().max(1) as u64;
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (*node, pages / n + u64::from((i as u64) < pages % n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_gives_remainder_to_first_nodes() {
        assert_eq!(spread(7, &[0, 1, 2]), vec![(0, 3), (1, 2), (2, 2)]);
        assert_eq!(spread(4, &[1]), vec![(1, 4)]);
    }

    #[test]
    fn page_size_prefers_cell_specific_then_generic_then_default() {
        let specs = vec![
            PageSpec {
                size_kib: 1 << 20,
                cells: Some(CpuSet::from_ids([1])),
            },
            PageSpec {
                size_kib: 2048,
                cells: None,
            },
        ];
        assert_eq!(page_size_for(&specs, Some(1), 4), 1 << 20);
        assert_eq!(page_size_for(&specs, Some(0), 4), 2048);
        assert_eq!(page_size_for(&[], Some(0), 2048), 2048);
    }
}
