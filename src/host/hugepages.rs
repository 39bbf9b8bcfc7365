//! Per-node hugepage pools: `nodeN/hugepages/hugepages-<KiB>kB/{nr,free,surplus}_hugepages`.

use serde::{Deserialize, Serialize};

use super::fs::{read_u64, HostFs};
use super::topology::NODE_DIR;
use crate::error::{Error, Result};

/// One pool: a page size on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoolKey {
    pub node: u32,
    pub page_kib: u64,
}

impl PoolKey {
    pub fn dir(&self) -> String {
        format!(
            "{NODE_DIR}/node{}/hugepages/hugepages-{}kB",
            self.node, self.page_kib
        )
    }

    pub fn nr_path(&self) -> String {
        format!("{}/nr_hugepages", self.dir())
    }

    pub fn page_bytes(&self) -> u64 {
        self.page_kib * 1024
    }
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} {} pool",
            self.node,
            crate::size::page_size_name(self.page_kib)
        )
    }
}

/// The counters of one pool. On a node, `nr_hugepages` includes surplus pages (overcommitted
/// pages that vanish when freed); the persistent pool is `nr - surplus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PoolState {
    pub nr: u64,
    pub free: u64,
    pub surplus: u64,
}

impl PoolState {
    pub fn persistent(&self) -> u64 {
        self.nr.saturating_sub(self.surplus)
    }
}

pub fn read_pool(fs: &dyn HostFs, key: PoolKey) -> Result<PoolState> {
    let dir = key.dir();
    Ok(PoolState {
        nr: read_u64(fs, &format!("{dir}/nr_hugepages"))?,
        free: read_u64(fs, &format!("{dir}/free_hugepages"))?,
        surplus: read_u64(fs, &format!("{dir}/surplus_hugepages"))?,
    })
}

/// Pages of this size reserved by mappings but not yet faulted in, host-wide
/// (`/sys/kernel/mm/hugepages/hugepages-<KiB>kB/resv_hugepages`); 0 when the file is absent.
pub fn read_reserved(fs: &dyn HostFs, page_kib: u64) -> Result<u64> {
    let rel = format!("sys/kernel/mm/hugepages/hugepages-{page_kib}kB/resv_hugepages");
    if fs.exists(&rel) {
        read_u64(fs, &rel)
    } else {
        Ok(0)
    }
}

/// The page sizes (KiB) the kernel offers on `node`, ascending.
pub fn page_sizes(fs: &dyn HostFs, node: u32) -> Result<Vec<u64>> {
    let rel = format!("{NODE_DIR}/node{node}/hugepages");
    if !fs.exists(&rel) {
        return Ok(Vec::new());
    }
    let mut sizes: Vec<u64> = fs
        .list(&rel)?
        .iter()
        .filter_map(|n| {
            n.strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    sizes.sort_unstable();
    Ok(sizes)
}

/// The kernel's default hugepage size (`Hugepagesize:` in /proc/meminfo), in KiB.
pub fn default_page_kib(fs: &dyn HostFs) -> Result<u64> {
    let meminfo = fs.read("proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("Hugepagesize:")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| {
            Error::Host(format!(
                "{} has no Hugepagesize line (kernel without hugetlbfs?)",
                fs.display("proc/meminfo").display()
            ))
        })
}

/// Ask the kernel to compact one node's memory (synchronous; helps higher-order allocations).
pub fn compact_node(fs: &dyn HostFs, node: u32) -> Result<()> {
    fs.write(&format!("{NODE_DIR}/node{node}/compact"), "1")
}
