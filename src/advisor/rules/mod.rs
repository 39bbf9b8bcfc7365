//! The rules of `kvmtune check`: pure functions from a VM (its strict model and its lenient
//! design), the host facts and the other VMs to findings. Each file holds one family; `RULES`
//! lists every rule id (the table test in `tests.rs` proves each one fires and stays quiet).

mod devices;
mod hugepages;
mod memory;
mod numa;
mod pins;

use super::facts::{HostFacts, Peer};
use super::findings::Finding;
use super::fit::{self, Layout, NoFit, Occupancy};
use crate::cpulist::CpuSet;
use crate::domain::{Design, Domain};

/// Every rule id, in report order within a severity.
pub const RULES: &[&str] = &[
    pins::OFFLINE,
    pins::SHARED,
    pins::HOUSEKEEPING,
    pins::SMT_SPLIT_VM,
    pins::SMT_SPLIT_HOST,
    pins::EMULATOR,
    pins::IOTHREAD,
    numa::VCPUS_SPAN,
    numa::MEMORY_SPAN,
    numa::MEMORY_REMOTE,
    numa::EXCEEDS_NODE,
    numa::HOSTDEV,
    numa::HOSTDEV_MISSING,
    hugepages::MULTIPLE,
    hugepages::CAPACITY,
    hugepages::BALLOON,
    hugepages::LOCKED,
    memory::OVERCOMMIT,
    memory::KSM_LATENCY,
    memory::KSM_MERGE,
    devices::DISK_BUS,
    devices::DISK_CACHE,
    devices::DISK_IO,
    devices::DISK_QCOW2_DB,
    devices::NIC_MODEL,
    devices::NIC_VHOST,
    devices::NIC_QUEUES,
    devices::CPU_MODE,
    devices::DOMAIN_TYPE,
    devices::CLOCK,
];

/// Everything a rule may look at.
pub struct Subject<'a> {
    pub domain: &'a Domain,
    pub design: &'a Design,
    pub facts: &'a HostFacts,
    /// Other defined VMs (this one excluded).
    pub peers: &'a [Peer],
    /// What the other VMs hold.
    pub occupancy: Occupancy,
    /// This VM's shape, as the fitting code sees it.
    pub request: fit::Request,
    /// This VM's shape fitted onto the host, for fixes that rewrite pins and node sets.
    pub layout: Result<Layout, NoFit>,
}

impl<'a> Subject<'a> {
    pub fn new(
        domain: &'a Domain,
        design: &'a Design,
        facts: &'a HostFacts,
        peers: &'a [Peer],
    ) -> Subject<'a> {
        let occupancy = Occupancy::from_peers(peers, facts);
        let request = shape(domain, design, facts.host.default_page_kib);
        let layout = fit::fit(&request, facts, &occupancy);
        Subject {
            domain,
            design,
            facts,
            peers,
            occupancy,
            request,
            layout,
        }
    }

    /// Host CPUs the vCPUs run on: their pins, else every online CPU (they float).
    pub fn vcpu_cpus(&self) -> CpuSet {
        let pinned = self.domain.vcpu_host_cpus();
        if pinned.is_empty() {
            self.facts.topology().online_cpus.clone()
        } else {
            pinned
        }
    }

    pub fn is_pinned(&self) -> bool {
        !self.domain.vcpu_host_cpus().is_empty()
    }

    /// Pinned, or asks for isolation: someone cares about this VM's latency.
    pub fn latency_critical(&self) -> bool {
        use crate::domain::metadata::IsolateChoice;
        self.is_pinned()
            || matches!(
                self.domain.tune.isolate,
                Some(IsolateChoice::Vcpus | IsolateChoice::List(_))
            )
    }

    pub fn multi_node(&self) -> bool {
        self.facts.topology().nodes.len() > 1
    }

    /// The fix that pins and binds this VM as the fitting code would, or why none fits.
    pub fn placement_fix(&self) -> String {
        fix_for(&self.layout, !self.domain.cells.is_empty())
    }

    /// The placement fix with this VM's memory on host node `node` (its cells all there).
    pub fn placement_fix_on(&self, node: u32) -> String {
        let mut req = self.request.clone();
        req.node = Some(node);
        fix_for(
            &fit::fit(&req, self.facts, &self.occupancy),
            !self.domain.cells.is_empty(),
        )
    }
}

fn fix_for(layout: &Result<Layout, NoFit>, memnodes: bool) -> String {
    match layout {
        Ok(layout) => super::suggest::placement_xml(layout, memnodes),
        Err(e) => format!("<!-- {e} -->"),
    }
}

/// The shape of a VM for the fitting code: one request per guest NUMA cell (vCPUs from the
/// cell's `cpus`), or one for the whole VM; each cell's hugepage size, if hugepage-backed.
pub fn shape(domain: &Domain, design: &Design, default_page_kib: u64) -> fit::Request {
    use crate::plan::hugepages::page_size_for;
    let page = |cell: Option<u32>| {
        domain
            .hugepages
            .as_ref()
            .map(|specs| page_size_for(specs, cell, default_page_kib))
    };
    let cells = if domain.cells.is_empty() {
        vec![fit::CellRequest {
            id: 0,
            vcpus: (0..domain.vcpus).collect(),
            memory_bytes: domain.memory_bytes,
            page_kib: page(None),
        }]
    } else {
        domain
            .cells
            .iter()
            .map(|c| fit::CellRequest {
                id: c.id,
                vcpus: design
                    .cell_cpus
                    .iter()
                    .find(|(id, _)| *id == c.id)
                    .map(|(_, s)| s.iter().filter(|v| *v < domain.vcpus).collect())
                    .unwrap_or_default(),
                memory_bytes: c.memory_bytes,
                page_kib: page(Some(c.id)),
            })
            .collect()
    };
    fit::Request {
        cells,
        node: None,
        distinct_nodes: false,
        isolate: matches!(
            domain.tune.isolate,
            Some(crate::domain::metadata::IsolateChoice::Vcpus)
        ),
    }
}

/// Run every rule.
pub fn check(subject: &Subject) -> Vec<Finding> {
    let mut out = Vec::new();
    pins::check(subject, &mut out);
    numa::check(subject, &mut out);
    hugepages::check(subject, &mut out);
    memory::check(subject, &mut out);
    devices::check(subject, &mut out);
    out
}

#[cfg(test)]
mod tests;
