//! What the host is: a snapshot of topology and hugepage pools, read through `HostFs`; and
//! the ports to the host that are not files, each a small trait tests replace: `systemctl`
//! (`Systemctl`), `irqbalance`'s socket (`IrqBalancer`) and `tasks`' affinity system call
//! (`TaskAffinity`).

pub mod cgroup;
pub mod fs;
pub mod hugepages;
pub mod irqbalance;
pub mod knobs;
pub mod mounts;
pub mod process;
pub mod schedstat;
pub mod snapshot;
pub mod systemctl;
pub mod tasks;
pub mod topology;
pub mod virsh;

use std::collections::BTreeMap;

pub use fs::{HostFs, RootFs};
pub use hugepages::{PoolKey, PoolState};
pub use topology::{Node, Siblings, Topology};

use crate::error::Result;

/// Unix time in seconds, from the host's clock (0 before the epoch): how kvmtune stamps what
/// it told irqbalance, and QEMU its balloon statistics.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything `plan` needs to know about the host, read once per hook call.
#[derive(Debug, Clone, Default)]
pub struct Host {
    pub topology: Topology,
    pub default_page_kib: u64,
    /// Every pool of every node.
    pub pools: BTreeMap<PoolKey, PoolState>,
    /// Pages per size that mappings have reserved but not yet touched (global: the kernel
    /// keeps no per-node count). They still show as free in the node counters.
    pub reserved: BTreeMap<u64, u64>,
}

impl Host {
    /// The host as planning and status need it (the SMT siblings of each node's first core).
    pub fn read(fs: &dyn HostFs) -> Result<Host> {
        Host::read_with(fs, Siblings::FirstCoreOfEachNode)
    }

    pub fn read_with(fs: &dyn HostFs, siblings: Siblings) -> Result<Host> {
        let topology = Topology::read(fs, siblings)?;
        let default_page_kib = hugepages::default_page_kib(fs)?;
        let mut pools = BTreeMap::new();
        let mut reserved = BTreeMap::new();
        for node in &topology.nodes {
            for page_kib in hugepages::page_sizes(fs, node.id)? {
                let key = PoolKey {
                    node: node.id,
                    page_kib,
                };
                pools.insert(key, hugepages::read_pool(fs, key)?);
                if let std::collections::btree_map::Entry::Vacant(slot) = reserved.entry(page_kib) {
                    slot.insert(hugepages::read_reserved(fs, page_kib)?);
                }
            }
        }
        Ok(Host {
            topology,
            default_page_kib,
            pools,
            reserved,
        })
    }

    pub fn pool(&self, key: PoolKey) -> Option<&PoolState> {
        self.pools.get(&key)
    }

    pub fn reserved(&self, page_kib: u64) -> u64 {
        self.reserved.get(&page_kib).copied().unwrap_or(0)
    }
}
