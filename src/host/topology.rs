//! NUMA nodes, their CPUs and memory, and SMT siblings, read from sysfs.

use std::collections::BTreeMap;

use super::fs::HostFs;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};

pub const NODE_DIR: &str = "sys/devices/system/node";
pub const CPU_DIR: &str = "sys/devices/system/cpu";

/// One NUMA node as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    pub id: u32,
    pub cpus: CpuSet,
    pub mem_total: u64,
    pub mem_free: u64,
    /// Free plus what the kernel can reclaim without swapping (file pages, reclaimable slab):
    /// what a hugepage reservation can really draw on.
    pub mem_available: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub nodes: Vec<Node>,
    pub online_cpus: CpuSet,
    /// SMT siblings (itself included) of each online CPU that was asked for (see `Siblings`).
    pub siblings: BTreeMap<u32, CpuSet>,
}

/// Whose SMT siblings to read: a file per CPU, which a hook call on a large host need not pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Siblings {
    /// Every online CPU's (the advisor fits VMs to whole cores).
    All,
    /// Only those of each node's first online CPU: what planning needs (the default
    /// housekeeping set is that core).
    FirstCoreOfEachNode,
}

impl Topology {
    pub fn read(fs: &dyn HostFs, which: Siblings) -> Result<Topology> {
        let online_cpus = parse_list(fs, &format!("{CPU_DIR}/online"))?;
        let mut nodes = Vec::new();
        for name in fs.list(NODE_DIR)? {
            let Some(id) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            nodes.push(read_node(fs, id)?);
        }
        if nodes.is_empty() {
            return Err(Error::Host(format!(
                "no NUMA nodes under {}",
                fs.display(NODE_DIR).display()
            )));
        }
        nodes.sort_by_key(|n| n.id);
        let wanted = match which {
            Siblings::All => online_cpus.clone(),
            Siblings::FirstCoreOfEachNode => CpuSet::from_ids(
                nodes
                    .iter()
                    .filter_map(|n| n.cpus.intersection(&online_cpus).first()),
            ),
        };
        let mut siblings = BTreeMap::new();
        for cpu in wanted.iter() {
            let rel = format!("{CPU_DIR}/cpu{cpu}/topology/thread_siblings_list");
            let set = if fs.exists(&rel) {
                parse_list(fs, &rel)?
            } else {
                CpuSet::from_ids([cpu])
            };
            siblings.insert(cpu, set);
        }
        Ok(Topology {
            nodes,
            online_cpus,
            siblings,
        })
    }

    pub fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Nodes that have memory (a CPU-only node cannot hold a hugepage).
    pub fn memory_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.mem_total > 0)
    }

    /// The nodes that own any of `cpus`.
    pub fn nodes_of_cpus(&self, cpus: &CpuSet) -> CpuSet {
        CpuSet::from_ids(
            self.nodes
                .iter()
                .filter(|n| !n.cpus.intersection(cpus).is_empty())
                .map(|n| n.id),
        )
    }

    /// The default housekeeping set: the first online core of each node with its SMT siblings,
    /// so every node keeps a CPU for its own kernel work and host services.
    pub fn first_core_of_each_node(&self) -> CpuSet {
        let mut set = CpuSet::new();
        for node in &self.nodes {
            if let Some(cpu) = node.cpus.intersection(&self.online_cpus).first() {
                let siblings = self.siblings.get(&cpu).cloned().unwrap_or_default();
                set = set.union(&siblings).union(&CpuSet::from_ids([cpu]));
            }
        }
        set
    }
}

fn read_node(fs: &dyn HostFs, id: u32) -> Result<Node> {
    let dir = format!("{NODE_DIR}/node{id}");
    let cpus = parse_list(fs, &format!("{dir}/cpulist"))?;
    let meminfo = fs.read(&format!("{dir}/meminfo"))?;
    let field = |name: &str| node_meminfo_kib(&meminfo, name).unwrap_or(0) * 1024;
    Ok(Node {
        id,
        cpus,
        mem_total: field("MemTotal"),
        mem_free: field("MemFree"),
        mem_available: field("MemFree")
            + field("Active(file)")
            + field("Inactive(file)")
            + field("SReclaimable"),
    })
}

/// A field of a node's meminfo (`Node 1 MemFree:   123456 kB`), in KiB.
pub fn node_meminfo_kib(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let (_node, _id, key, value) = (words.next()?, words.next()?, words.next()?, words.next()?);
        (key.strip_suffix(':')? == name).then(|| value.parse().ok())?
    })
}

pub fn parse_list(fs: &dyn HostFs, rel: &str) -> Result<CpuSet> {
    let text = fs.read(rel)?;
    CpuSet::parse(&text).map_err(|e| Error::parse(fs.display(rel), &text, e))
}

/// Read a node's free memory now (used for messages after a failed reservation).
pub fn node_mem_free(fs: &dyn HostFs, node: u32) -> Result<u64> {
    let meminfo = fs.read(&format!("{NODE_DIR}/node{node}/meminfo"))?;
    Ok(node_meminfo_kib(&meminfo, "MemFree").unwrap_or(0) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_meminfo_fields_are_found_by_name() {
        let text = "Node 1 MemTotal:        3145728 kB\nNode 1 MemFree:         2097152 kB\nNode 1 Active(file):       1024 kB\n";
        assert_eq!(node_meminfo_kib(text, "MemFree"), Some(2097152));
        assert_eq!(node_meminfo_kib(text, "Active(file)"), Some(1024));
        assert_eq!(node_meminfo_kib(text, "Shmem"), None);
    }
}
