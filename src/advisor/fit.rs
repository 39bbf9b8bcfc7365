//! Fitting a VM's shape onto this host now: for each guest NUMA cell, a host node with room,
//! whole free cores (all SMT siblings free), and the emulator on housekeeping CPUs.
//! Shared by `kvmtune suggest`, the fixes `kvmtune check` proposes, and the migration remap.
//!
//! A core is free when every thread of it is online, on the node, not housekeeping, not pinned
//! by another VM (nor isolated for one) and, for a VM that will be isolated, isolatable. The
//! memory room of a node is what it has available now minus the policy's floor, minus memory
//! that defined VMs which are not running have bound to it; hugepages also need the pages to be
//! obtainable now (free pages of that size plus what the available memory can become).
//! Among the nodes that fit, a cell goes to the one with the most memory room left, then the
//! most free cores, then the lowest number: placement is deterministic.

use std::collections::BTreeMap;
use std::fmt;

use super::facts::{memory_by_node, HostFacts, Peer};
use crate::cpulist::CpuSet;
use crate::host::PoolKey;
use crate::size::{human, page_size_name};

/// One guest NUMA cell to place (a VM without cells is one cell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellRequest {
    /// Guest cell id.
    pub id: u32,
    /// Guest vCPU ids, in order.
    pub vcpus: Vec<u32>,
    pub memory_bytes: u64,
    /// Hugepage size for this cell's memory; `None` = ordinary pages.
    pub page_kib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub cells: Vec<CellRequest>,
    /// Only this host node (`suggest --node N`).
    pub node: Option<u32>,
    /// Each cell on a node of its own (a VM spread over nodes on purpose).
    pub distinct_nodes: bool,
    /// The vCPUs' CPUs will be isolated: only isolatable CPUs qualify.
    pub isolate: bool,
}

/// What other VMs hold on this host.
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    /// CPUs held, and by whom (`VM 'web'`).
    pub cpus: Vec<(String, CpuSet)>,
    /// Memory promised per node by VMs that are defined but not running (their memory is not
    /// in use yet, so "available now" does not show it).
    pub promised: BTreeMap<u32, Vec<(String, u64)>>,
}

impl Occupancy {
    pub fn from_peers(peers: &[Peer], facts: &HostFacts) -> Occupancy {
        let mut occ = Occupancy::default();
        for p in peers {
            let cpus = p.vcpu_cpus();
            if !cpus.is_empty() {
                occ.cpus.push((format!("VM '{}'", p.name), cpus));
            }
            if !p.running {
                for (node, bytes) in memory_by_node(&p.domain, facts.topology()) {
                    occ.promised
                        .entry(node)
                        .or_default()
                        .push((p.name.clone(), bytes));
                }
            }
        }
        occ
    }

    pub fn taken(&self) -> CpuSet {
        self.cpus
            .iter()
            .fold(CpuSet::new(), |acc, (_, s)| acc.union(s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellFit {
    pub id: u32,
    pub node: u32,
    /// (guest vCPU, host CPU), in vCPU order.
    pub pins: Vec<(u32, u32)>,
    pub memory_bytes: u64,
    pub page_kib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub cells: Vec<CellFit>,
    /// Where the emulator (and iothreads) go: housekeeping CPUs of the VM's nodes.
    pub emulator: CpuSet,
    /// SMT threads per core on the chosen cores.
    pub threads: usize,
    /// Threads of the VM's cores that no vCPU uses (an odd vCPU count on SMT): kept free so
    /// no other VM shares the core.
    pub idle: CpuSet,
}

impl Layout {
    pub fn nodes(&self) -> CpuSet {
        CpuSet::from_ids(self.cells.iter().map(|c| c.node))
    }

    pub fn vcpu_cpus(&self) -> CpuSet {
        CpuSet::from_ids(self.cells.iter().flat_map(|c| c.pins.iter().map(|p| p.1)))
    }

    /// The host CPU of guest vCPU `vcpu`.
    pub fn cpu_of(&self, vcpu: u32) -> Option<u32> {
        self.cells
            .iter()
            .flat_map(|c| c.pins.iter())
            .find(|p| p.0 == vcpu)
            .map(|p| p.1)
    }

    pub fn node_of_cell(&self, id: u32) -> Option<u32> {
        self.cells.iter().find(|c| c.id == id).map(|c| c.node)
    }
}

/// Why nothing fits: one line per node that was considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFit {
    pub what: String,
    pub reasons: Vec<String>,
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nothing fits {} on this host now", self.what)?;
        if !self.reasons.is_empty() {
            write!(f, ": {}", self.reasons.join("; "))?;
        }
        Ok(())
    }
}

/// What one node can still give.
#[derive(Debug, Clone)]
struct Room {
    node: u32,
    /// Free whole cores, each its threads in ascending order; cores in ascending order.
    cores: Vec<Vec<u32>>,
    /// Ordinary memory room: available now, minus the floor, minus what is promised.
    ordinary: u64,
    /// Free pages in this node's pools, per size (KiB).
    pool_free: BTreeMap<u64, u64>,
    /// Why CPUs of this node are not free, for messages.
    cpu_notes: Vec<String>,
    memory_notes: Vec<String>,
}

impl Room {
    /// Pages of `kib` obtainable now: the free pool, plus what the ordinary room can become.
    fn pages(&self, kib: u64) -> Option<u64> {
        let free = self.pool_free.get(&kib)?;
        Some(free + self.ordinary / (kib * 1024))
    }

    /// The room a cell of this kind would draw on, in bytes (to rank nodes).
    fn capacity(&self, page_kib: Option<u64>) -> u64 {
        match page_kib {
            Some(kib) => self.pages(kib).unwrap_or(0) * kib * 1024,
            None => self.ordinary,
        }
    }

    /// Take a cell's memory: hugepages from the free pool first, then from ordinary memory.
    fn take(&mut self, cell: &CellRequest) {
        match cell.page_kib {
            Some(kib) => {
                let need = cell.memory_bytes / (kib * 1024);
                let free = self.pool_free.get_mut(&kib).expect("checked by fits");
                let from_pool = need.min(*free);
                *free -= from_pool;
                self.ordinary -= (need - from_pool) * kib * 1024;
            }
            None => self.ordinary -= cell.memory_bytes,
        }
    }
}

pub fn fit(req: &Request, facts: &HostFacts, occ: &Occupancy) -> Result<Layout, NoFit> {
    let what = describe(req);
    let topo = facts.topology();
    if let Some(n) = req.node {
        if topo.node(n).is_none() {
            return Err(NoFit {
                what,
                reasons: vec![format!(
                    "this host has no node {n} (nodes: {})",
                    CpuSet::from_ids(topo.nodes.iter().map(|n| n.id))
                )],
            });
        }
    }
    let mut rooms: Vec<Room> = topo
        .nodes
        .iter()
        .filter(|n| req.node.map_or(true, |want| want == n.id))
        .map(|n| room(n.id, req.isolate, facts, occ))
        .collect();
    let mut cells = Vec::new();
    let mut used_nodes = CpuSet::new();
    let mut idle = CpuSet::new();
    let mut threads = 1;
    for cell in &req.cells {
        let mut reasons = Vec::new();
        let mut best: Option<usize> = None;
        for (i, r) in rooms.iter().enumerate() {
            if req.distinct_nodes && used_nodes.contains(r.node) {
                continue;
            }
            match fits(cell, r) {
                Ok(()) => {
                    let better = best.map_or(true, |b| {
                        let b = &rooms[b];
                        (r.capacity(cell.page_kib), r.cores.len())
                            > (b.capacity(cell.page_kib), b.cores.len())
                    });
                    if better {
                        best = Some(i);
                    }
                }
                Err(why) => reasons.push(format!("node {}: {why}", r.node)),
            }
        }
        let Some(i) = best else {
            if req.cells.len() > 1 {
                reasons.insert(0, format!("guest cell {}", cell.id));
            }
            return Err(NoFit { what, reasons });
        };
        let r = &mut rooms[i];
        let per_core = r.cores.first().map_or(1, Vec::len);
        threads = threads.max(per_core);
        let need = cell.vcpus.len().div_ceil(per_core);
        let taken: Vec<Vec<u32>> = r.cores.drain(..need).collect();
        let cpus: Vec<u32> = taken.iter().flatten().copied().collect();
        let pins: Vec<(u32, u32)> = cell
            .vcpus
            .iter()
            .copied()
            .zip(cpus.iter().copied())
            .collect();
        idle = idle.union(&CpuSet::from_ids(cpus[pins.len()..].iter().copied()));
        r.take(cell);
        used_nodes.insert(r.node);
        cells.push(CellFit {
            id: cell.id,
            node: r.node,
            pins,
            memory_bytes: cell.memory_bytes,
            page_kib: cell.page_kib,
        });
    }
    let local: CpuSet = used_nodes
        .iter()
        .filter_map(|n| topo.node(n))
        .fold(CpuSet::new(), |acc, n| acc.union(&n.cpus));
    let mut emulator = facts.housekeeping.intersection(&local);
    if emulator.is_empty() {
        emulator = facts.housekeeping.clone();
    }
    Ok(Layout {
        cells,
        emulator,
        threads,
        idle,
    })
}

/// A VM of `vcpus` and `memory` as `cells` guest cells of (nearly) equal size, one per node:
/// vCPUs spread in whole cores of `threads` (so no cell leaves a sibling idle that another
/// could have used), pages spread evenly, remainders to the first cells.
pub fn split(
    vcpus: u32,
    memory: u64,
    page_kib: Option<u64>,
    cells: u32,
    threads: u32,
) -> Vec<CellRequest> {
    let threads = threads.max(1);
    let cores = vcpus.div_ceil(threads);
    let unit = page_kib.map_or(1 << 20, |k| k * 1024);
    let units = memory / unit;
    let rest = memory % unit;
    let mut next = 0;
    (0..cells)
        .map(|i| {
            let my_cores = cores / cells + u32::from(i < cores % cells);
            let n = (my_cores * threads).min(vcpus - next);
            let ids: Vec<u32> = (next..next + n).collect();
            next += n;
            let mut bytes =
                (units / cells as u64 + u64::from((i as u64) < units % cells as u64)) * unit;
            if i == 0 {
                bytes += rest;
            }
            CellRequest {
                id: i,
                vcpus: ids,
                memory_bytes: bytes,
                page_kib,
            }
        })
        .collect()
}

fn describe(req: &Request) -> String {
    let vcpus: usize = req.cells.iter().map(|c| c.vcpus.len()).sum();
    let memory: u64 = req.cells.iter().map(|c| c.memory_bytes).sum();
    let pages = match req.cells.first().and_then(|c| c.page_kib) {
        Some(kib) => format!(" in {} pages", page_size_name(kib)),
        None => String::new(),
    };
    let cells = if req.cells.len() > 1 {
        format!(" as {} guest NUMA cells", req.cells.len())
    } else {
        String::new()
    };
    format!("{vcpus} vCPU(s) and {}{pages}{cells}", human(memory))
}

fn fits(cell: &CellRequest, r: &Room) -> Result<(), String> {
    let per_core = r.cores.first().map_or(1, Vec::len);
    let need = cell.vcpus.len().div_ceil(per_core);
    if r.cores.len() < need {
        let mut why = format!(
            "{} free whole core(s), {need} needed for {} vCPU(s)",
            r.cores.len(),
            cell.vcpus.len()
        );
        if !r.cpu_notes.is_empty() {
            why.push_str(&format!(" ({})", r.cpu_notes.join(", ")));
        }
        return Err(why);
    }
    let notes = || {
        if r.memory_notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.memory_notes.join(", "))
        }
    };
    match cell.page_kib {
        None if r.ordinary < cell.memory_bytes => Err(format!(
            "{} of memory room, {} needed{}",
            human(r.ordinary),
            human(cell.memory_bytes),
            notes()
        )),
        None => Ok(()),
        Some(kib) => {
            let need = cell.memory_bytes / (kib * 1024);
            match r.pages(kib) {
                None => Err(format!("no {} hugepage pool", page_size_name(kib))),
                Some(have) if have < need => Err(format!(
                    "{have} x {} pages obtainable now, {need} needed{}",
                    page_size_name(kib),
                    notes()
                )),
                Some(_) => Ok(()),
            }
        }
    }
}

fn room(node: u32, isolate: bool, facts: &HostFacts, occ: &Occupancy) -> Room {
    let topo = facts.topology();
    let n = topo.node(node).expect("node from the topology");
    let cpus = n.cpus.intersection(&topo.online_cpus);
    let taken = occ.taken();
    let usable = |cpu: u32| {
        cpus.contains(cpu)
            && !facts.housekeeping.contains(cpu)
            && !taken.contains(cpu)
            && (!isolate || facts.isolatable.contains(cpu))
    };
    let mut cores: Vec<Vec<u32>> = Vec::new();
    let mut seen = CpuSet::new();
    for cpu in cpus.iter() {
        if seen.contains(cpu) {
            continue;
        }
        let core = facts.core_of(cpu);
        seen = seen.union(&core);
        if core.iter().all(usable) {
            cores.push(core.iter().collect());
        }
    }
    let mut cpu_notes = Vec::new();
    let hk = cpus.intersection(&facts.housekeeping);
    if !hk.is_empty() {
        cpu_notes.push(format!("CPUs {hk} housekeeping"));
    }
    for (who, set) in &occ.cpus {
        let mine = cpus.intersection(set);
        if !mine.is_empty() {
            cpu_notes.push(format!("{mine} held by {who}"));
        }
    }
    if isolate {
        let not = cpus
            .difference(&facts.isolatable)
            .difference(&facts.housekeeping);
        if !not.is_empty() {
            cpu_notes.push(format!("{not} not isolatable by policy"));
        }
    }
    let mut memory_notes = vec![format!(
        "{} available now, the policy keeps {}",
        human(n.mem_available),
        human(facts.floor)
    )];
    let mut ordinary = n.mem_available.saturating_sub(facts.floor);
    for (vm, bytes) in occ.promised.get(&node).into_iter().flatten() {
        ordinary = ordinary.saturating_sub(*bytes);
        memory_notes.push(format!("{} bound by VM '{vm}', not running", human(*bytes)));
    }
    let pool_free = facts
        .host
        .pools
        .iter()
        .filter(|(k, _)| k.node == node)
        .map(|(k, p): (&PoolKey, _)| (k.page_kib, p.free))
        .collect();
    Room {
        node,
        cores,
        ordinary,
        pool_free,
        cpu_notes,
        memory_notes,
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::testing::{host, peer, two_nodes_smt, GIB};
    use super::*;

    fn one(vcpus: u32, gib: u64, page_kib: Option<u64>) -> Request {
        Request {
            cells: split(vcpus, gib * GIB, page_kib, 1, 2),
            node: None,
            distinct_nodes: false,
            isolate: false,
        }
    }

    #[test]
    fn whole_cores_with_siblings_off_housekeeping_emulator_on_housekeeping() {
        let facts = two_nodes_smt();
        let l = fit(&one(4, 4, None), &facts, &Occupancy::default()).unwrap();
        assert_eq!(l.cells.len(), 1);
        assert_eq!(l.cells[0].node, 0);
        // Cores (1,9) and (2,10): siblings get consecutive vCPUs.
        assert_eq!(l.cells[0].pins, vec![(0, 1), (1, 9), (2, 2), (3, 10)]);
        assert_eq!(l.emulator, CpuSet::parse("0,8").unwrap());
        assert_eq!(l.threads, 2);
        assert!(l.idle.is_empty());
    }

    #[test]
    fn odd_vcpu_count_keeps_the_last_sibling_idle() {
        let l = fit(&one(3, 1, None), &two_nodes_smt(), &Occupancy::default()).unwrap();
        assert_eq!(l.cells[0].pins, vec![(0, 1), (1, 9), (2, 2)]);
        assert_eq!(l.idle, CpuSet::from_ids([10]));
    }

    #[test]
    fn cpus_of_other_vms_and_half_taken_cores_are_skipped() {
        let facts = two_nodes_smt();
        // A running VM on CPU 9 only: core (1,9) is not whole any more.
        let web = peer(
            "web",
            "<domain id='2'><name>web</name><memory unit='GiB'>1</memory><vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='9'/></cputune></domain>",
        );
        let occ = Occupancy::from_peers(&[web], &facts);
        let mut req = one(2, 1, None);
        req.node = Some(0);
        let l = fit(&req, &facts, &occ).unwrap();
        assert_eq!(l.cells[0].pins, vec![(0, 2), (1, 10)]);
        // Left to choose, node 1 wins: as much memory, more free cores.
        let l = fit(&one(2, 1, None), &facts, &occ).unwrap();
        assert_eq!(l.cells[0].pins, vec![(0, 5), (1, 13)]);
    }

    #[test]
    fn the_node_with_more_room_wins_and_node_n_can_be_forced() {
        let mut facts = two_nodes_smt();
        facts.host.topology.nodes[0].mem_available = 4 * GIB;
        let l = fit(&one(2, 2, None), &facts, &Occupancy::default()).unwrap();
        assert_eq!(l.cells[0].node, 1);
        assert_eq!(l.emulator, CpuSet::parse("4,12").unwrap());
        let mut req = one(2, 2, None);
        req.node = Some(0);
        assert_eq!(
            fit(&req, &facts, &Occupancy::default()).unwrap().cells[0].node,
            0
        );
    }

    #[test]
    fn nothing_fits_says_why_per_node() {
        let facts = two_nodes_smt();
        let err = fit(&one(8, 4, None), &facts, &Occupancy::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("8 vCPU(s) and 4 GiB"), "{text}");
        assert!(
            text.contains(
                "node 0: 3 free whole core(s), 4 needed for 8 vCPU(s) (CPUs 0,8 housekeeping)"
            ),
            "{text}"
        );
        assert!(text.contains("node 1: 3 free whole core(s)"), "{text}");
        let err = fit(&one(2, 20, None), &facts, &Occupancy::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("node 0: 15.8 GiB of memory room, 20 GiB needed"),
            "{err}"
        );
    }

    #[test]
    fn hugepages_count_free_pool_pages_and_what_memory_can_become() {
        let mut facts = two_nodes_smt();
        for n in &mut facts.host.topology.nodes {
            n.mem_available = 3 * GIB;
        }
        // 2.75 GiB ordinary room on each node (2 x 1 GiB pages); node 1's pool has 4 free.
        facts
            .host
            .pools
            .get_mut(&PoolKey {
                node: 1,
                page_kib: 1 << 20,
            })
            .unwrap()
            .free = 4;
        let l = fit(&one(2, 6, Some(1 << 20)), &facts, &Occupancy::default()).unwrap();
        assert_eq!(l.cells[0].node, 1);
        let err = fit(&one(2, 7, Some(1 << 20)), &facts, &Occupancy::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node 0: 2 x 1 GiB pages obtainable now, 7 needed"),
            "{err}"
        );
        assert!(err.contains("node 1: 6 x 1 GiB pages"), "{err}");
        // Ordinary memory does not count the pool's free pages.
        let err = fit(&one(2, 3, None), &facts, &Occupancy::default()).unwrap_err();
        assert!(err.to_string().contains("2.8 GiB of memory room"), "{err}");
    }

    #[test]
    fn memory_of_defined_vms_that_do_not_run_counts_against_their_node() {
        let facts = two_nodes_smt();
        let big = peer(
            "big",
            "<domain><name>big</name><memory unit='GiB'>14</memory><numatune><memory nodeset='0'/></numatune></domain>",
        );
        let occ = Occupancy::from_peers(&[big], &facts);
        let l = fit(&one(2, 4, None), &facts, &occ).unwrap();
        assert_eq!(l.cells[0].node, 1);
        let mut req = one(2, 4, None);
        req.node = Some(0);
        let err = fit(&req, &facts, &occ).unwrap_err().to_string();
        assert!(
            err.contains("14 GiB bound by VM 'big', not running"),
            "{err}"
        );
    }

    #[test]
    fn isolation_needs_isolatable_cpus() {
        let mut facts = two_nodes_smt();
        facts.isolatable = CpuSet::parse("5-7,13-15").unwrap();
        let mut req = one(2, 1, None);
        req.isolate = true;
        let l = fit(&req, &facts, &Occupancy::default()).unwrap();
        assert_eq!(l.cells[0].node, 1);
        assert_eq!(l.cells[0].pins, vec![(0, 5), (1, 13)]);
    }

    #[test]
    fn distinct_cells_go_to_distinct_nodes() {
        let facts = two_nodes_smt();
        let req = Request {
            cells: split(8, 8 * GIB, None, 2, 2),
            node: None,
            distinct_nodes: true,
            isolate: false,
        };
        let l = fit(&req, &facts, &Occupancy::default()).unwrap();
        assert_eq!(l.nodes(), CpuSet::parse("0-1").unwrap());
        assert_eq!(l.cpu_of(4), Some(5));
        assert_eq!(l.emulator, CpuSet::parse("0,4,8,12").unwrap());
    }

    #[test]
    fn split_spreads_vcpus_and_pages() {
        let cells = split(5, 3 * GIB, Some(1 << 20), 2, 1);
        assert_eq!(cells[0].vcpus, vec![0, 1, 2]);
        assert_eq!(cells[1].vcpus, vec![3, 4]);
        assert_eq!(
            (cells[0].memory_bytes, cells[1].memory_bytes),
            (2 * GIB, GIB)
        );
        // In whole cores of 2 threads: 5 cores = 3 + 2.
        let cells = split(10, 3 * GIB, None, 2, 2);
        assert_eq!(cells[0].vcpus, (0..6).collect::<Vec<_>>());
        assert_eq!(cells[1].vcpus, (6..10).collect::<Vec<_>>());
        let cells = split(5, GIB, None, 2, 2);
        assert_eq!((cells[0].vcpus.len(), cells[1].vcpus.len()), (4, 1));
    }

    #[test]
    fn a_host_without_smt_uses_single_cpus() {
        let facts = host(&[(8 * GIB, "0-3")], &[]);
        let l = fit(&one(3, 1, None), &facts, &Occupancy::default()).unwrap();
        assert_eq!(l.cells[0].pins, vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(l.threads, 1);
    }
}
