//! What the advisor knows about the host and the other VMs, read once through `HostFs` (and,
//! for other VMs, from the caller): topology with SMT siblings, per-node memory and hugepage
//! pools, the policy's housekeeping CPUs, KSM, and the NUMA node of each passthrough device.
//! Everything the rules and the fitting code look at is in here, so they stay pure.

use std::collections::BTreeMap;

use crate::cpulist::CpuSet;
use crate::domain::{Design, Domain, PciAddress};
use crate::error::Result;
use crate::host::{Host, HostFs, Siblings, Topology};
use crate::plan::bounds;
use crate::policy::Policy;
use crate::size::human;

#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Topology (nodes, CPUs, siblings, memory) and hugepage pools.
    pub host: Host,
    pub housekeeping: CpuSet,
    /// CPUs metadata may isolate (the policy's `cpus.isolatable` minus housekeeping).
    pub isolatable: CpuSet,
    /// Memory each node keeps for the host (`hugepages.node_memory_floor`).
    pub floor: u64,
    /// The host policy (what kvmtune itself will hold for the VM: KSM, isolation).
    pub policy: Policy,
    /// `None` when the kernel has no KSM.
    pub ksm: Option<Ksm>,
    /// The NUMA node of each passthrough device the VM names.
    pub devices: BTreeMap<PciAddress, DeviceNode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ksm {
    /// `run`: 0 stopped, 1 scanning, 2 unmerge everything and stop.
    pub run: u32,
    /// `merge_across_nodes`; `None` when the kernel does not show it.
    pub merge_across_nodes: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNode {
    /// No `/sys/bus/pci/devices/BDF` on this host.
    Missing,
    /// `numa_node` is -1: the firmware does not say.
    Unknown,
    Node(u32),
}

/// Another VM defined (or, in the hook, running) on this host.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub domain: Domain,
    /// Running now (its live XML carries an `id`): its memory is already in use, not only promised.
    pub running: bool,
}

impl Peer {
    pub fn from_xml(name: &str, text: &str) -> Result<Peer> {
        let (domain, design) = Domain::parse_with_design(text)?;
        Ok(Peer {
            name: name.to_string(),
            domain,
            running: design.live_id.is_some(),
        })
    }

    /// Host CPUs its vCPUs run on; empty when it floats.
    pub fn vcpu_cpus(&self) -> CpuSet {
        self.domain.vcpu_host_cpus()
    }
}

impl HostFacts {
    /// Read the host as it is now; `devices` are the PCI addresses whose node to look up.
    pub fn read(fs: &dyn HostFs, policy: &Policy, devices: &[PciAddress]) -> Result<HostFacts> {
        // The advisor fits vCPUs to whole cores: every CPU's siblings.
        let host = Host::read_with(fs, Siblings::All)?;
        let housekeeping = bounds::housekeeping(policy, &host.topology);
        let isolatable = bounds::isolatable(policy, &host.topology);
        Ok(HostFacts {
            host,
            housekeeping,
            isolatable,
            floor: policy.node_memory_floor,
            policy: policy.clone(),
            ksm: read_ksm(fs),
            devices: devices
                .iter()
                .map(|a| (*a, read_device_node(fs, a)))
                .collect(),
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.host.topology
    }

    /// The most SMT threads any core has (1 without SMT).
    pub fn threads_per_core(&self) -> usize {
        self.topology()
            .siblings
            .values()
            .map(CpuSet::len)
            .max()
            .unwrap_or(1)
    }

    /// The SMT siblings of `cpu`, itself included.
    pub fn core_of(&self, cpu: u32) -> CpuSet {
        self.topology()
            .siblings
            .get(&cpu)
            .cloned()
            .unwrap_or_else(|| CpuSet::from_ids([cpu]))
    }

    pub fn total_memory(&self) -> u64 {
        self.topology().nodes.iter().map(|n| n.mem_total).sum()
    }

    /// One line for reports: `this host: 2 NUMA nodes, CPUs 0-15 (2 threads per core), 64 GiB,
    /// housekeeping CPUs 0,8`.
    pub fn summary(&self) -> String {
        let t = self.topology();
        let threads = self.threads_per_core();
        format!(
            "this host: {} NUMA node(s), CPUs {}{}, {}, housekeeping CPUs {}",
            t.nodes.len(),
            t.online_cpus,
            if threads > 1 {
                format!(" ({threads} threads per core)")
            } else {
                String::new()
            },
            human(self.total_memory()),
            self.housekeeping
        )
    }
}

fn read_ksm(fs: &dyn HostFs) -> Option<Ksm> {
    use crate::host::knobs::{read_value, KSM_MERGE_ACROSS_NODES, KSM_RUN};
    let run = read_value(fs, KSM_RUN).ok()??.parse().ok()?;
    let merge_across_nodes = read_value(fs, KSM_MERGE_ACROSS_NODES)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u32>().ok())
        .map(|v| v != 0);
    Some(Ksm {
        run,
        merge_across_nodes,
    })
}

fn read_device_node(fs: &dyn HostFs, addr: &PciAddress) -> DeviceNode {
    let dir = format!("sys/bus/pci/devices/{addr}");
    if !fs.exists(&dir) {
        return DeviceNode::Missing;
    }
    match fs
        .read(&format!("{dir}/numa_node"))
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        Some(n) if n >= 0 => DeviceNode::Node(n as u32),
        _ => DeviceNode::Unknown,
    }
}

/// The host nodes a VM's memory is bound to, with the bytes bound to each: per guest cell (or
/// the whole memory), its `<memnode>` else `<numatune><memory>` nodeset (spread evenly;
/// `preferred` counts on its first node), else the nodes of its pinned vCPUs. Memory that
/// nothing binds is left out: the kernel may place it anywhere.
pub fn memory_by_node(domain: &Domain, topology: &Topology) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for (cell, bytes) in domain.memory_units() {
        let nodes = bound_nodes(domain, cell)
            .unwrap_or_else(|| topology.nodes_of_cpus(&domain.vcpu_host_cpus()));
        let ids: Vec<u32> = nodes.iter().collect();
        if ids.is_empty() {
            continue;
        }
        let n = ids.len() as u64;
        for (i, node) in ids.iter().enumerate() {
            let share = bytes / n + u64::from((i as u64) < bytes % n);
            *out.entry(*node).or_insert(0) += share;
        }
    }
    out
}

/// The nodeset binding a guest cell (or the whole memory), `preferred` reduced to its node.
pub fn bound_nodes(domain: &Domain, cell: Option<u32>) -> Option<CpuSet> {
    let binding = domain.memory_binding(cell);
    let set = binding?.nodeset.clone()?;
    Some(match binding?.mode {
        crate::domain::MemMode::Preferred => CpuSet::from_ids(set.first()),
        _ => set,
    })
}

/// Every node any of the VM's memory is bound to.
pub fn memory_nodes(domain: &Domain, topology: &Topology) -> CpuSet {
    CpuSet::from_ids(memory_by_node(domain, topology).into_keys())
}

/// Parse a domain for the advisor: the strict model and the lenient design.
pub fn parse(text: &str) -> Result<(Domain, Design)> {
    Domain::parse_with_design(text)
}

#[cfg(test)]
pub mod testing {
    //! Hand-built hosts for the advisor's unit tests.
    use super::*;
    use crate::host::{Node, PoolKey, PoolState};

    pub const GIB: u64 = 1 << 30;

    /// Nodes as `(memory, "cpus")`, SMT sibling groups as cpu lists (`&["0,4", "1,5"]`;
    /// CPUs in no group are their own core). Housekeeping is the policy's `auto`; every node
    /// has empty 2 MiB and 1 GiB pools; KSM is off.
    pub fn host(nodes: &[(u64, &str)], smt: &[&str]) -> HostFacts {
        let mut topology = Topology::default();
        for (id, (mem, cpus)) in nodes.iter().enumerate() {
            let cpus = CpuSet::parse(cpus).unwrap();
            topology.online_cpus = topology.online_cpus.union(&cpus);
            topology.nodes.push(Node {
                id: id as u32,
                cpus,
                mem_total: *mem,
                mem_free: *mem,
                mem_available: *mem,
            });
        }
        for cpu in topology.online_cpus.iter() {
            let group = smt
                .iter()
                .map(|g| CpuSet::parse(g).unwrap())
                .find(|g| g.contains(cpu))
                .unwrap_or_else(|| CpuSet::from_ids([cpu]));
            topology.siblings.insert(cpu, group);
        }
        let mut pools = BTreeMap::new();
        for node in &topology.nodes {
            for page_kib in [2048, 1 << 20] {
                pools.insert(
                    PoolKey {
                        node: node.id,
                        page_kib,
                    },
                    PoolState::default(),
                );
            }
        }
        let policy = Policy::default();
        HostFacts {
            housekeeping: bounds::housekeeping(&policy, &topology),
            isolatable: bounds::isolatable(&policy, &topology),
            host: Host {
                topology,
                default_page_kib: 2048,
                pools,
                reserved: BTreeMap::new(),
            },
            floor: policy.node_memory_floor,
            policy: policy.clone(),
            ksm: Some(Ksm {
                run: 0,
                merge_across_nodes: Some(true),
            }),
            devices: BTreeMap::new(),
        }
    }

    /// 2 nodes × 4 cores × 2 threads, 16 GiB each: node 0 = CPUs 0-3,8-11, node 1 = 4-7,12-15,
    /// siblings N and N+8; housekeeping 0,8 and 4,12.
    pub fn two_nodes_smt() -> HostFacts {
        host(
            &[(16 * GIB, "0-3,8-11"), (16 * GIB, "4-7,12-15")],
            &["0,8", "1,9", "2,10", "3,11", "4,12", "5,13", "6,14", "7,15"],
        )
    }

    pub fn peer(name: &str, xml: &str) -> Peer {
        Peer::from_xml(name, xml).unwrap()
    }
}
