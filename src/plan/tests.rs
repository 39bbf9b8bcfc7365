use std::collections::BTreeMap;

use super::*;
use crate::host::{Node, Topology};
use crate::state::{Phase, PoolHold, VmHold};

const GIB: u64 = 1 << 30;

/// A host with `nodes` nodes of 2 CPUs and `avail` bytes available each, and empty 2 MiB and
/// 1 GiB pools on every node.
fn host(nodes: u32, avail: u64) -> Host {
    let mut pools = BTreeMap::new();
    let topo_nodes = (0..nodes)
        .map(|id| {
            for page_kib in [2048, 1 << 20] {
                pools.insert(PoolKey { node: id, page_kib }, PoolState::default());
            }
            Node {
                id,
                cpus: CpuSet::from_ids([id * 2, id * 2 + 1]),
                mem_total: avail + GIB,
                mem_free: avail,
                mem_available: avail,
            }
        })
        .collect();
    Host {
        topology: Topology {
            nodes: topo_nodes,
            online_cpus: CpuSet::from_ids(0..nodes * 2),
            siblings: (0..nodes * 2).map(|c| (c, CpuSet::from_ids([c]))).collect(),
        },
        default_page_kib: 2048,
        pools,
        reserved: BTreeMap::new(),
    }
}

fn domain(body: &str) -> Domain {
    Domain::parse(&format!("<domain><name>x</name>{body}</domain>")).unwrap()
}

fn grow_of(plan: &Plan) -> Vec<(u32, u64, u64, u64)> {
    plan.hugepages
        .iter()
        .map(|g| (g.pool.node, g.pool.page_kib, g.pages, g.grow))
        .collect()
}

fn plan_for(d: &Domain, h: &Host, ledger: &Ledger) -> Result<Plan> {
    plan(d, "vm", &Policy::default(), h, ledger)
}

const HUGE: &str = "<memoryBacking><hugepages/></memoryBacking>";

#[test]
fn strict_binding_to_one_node_grows_only_that_node() {
    let d = domain(&format!("<memory unit='MiB'>64</memory>{HUGE}<numatune><memory mode='strict' nodeset='1'/></numatune>"));
    let p = plan_for(&d, &host(2, 4 * GIB), &Ledger::default()).unwrap();
    assert_eq!(grow_of(&p), vec![(1, 2048, 32, 32)]);
    let changes = p.changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes,
        vec![Change::File {
            path: "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages".into(),
            before: "0".into(),
            after: "32".into(),
        }]
    );
}

#[test]
fn interleave_splits_evenly_with_remainder_first() {
    let d = domain(&format!("<memory unit='MiB'>70</memory>{HUGE}<numatune><memory mode='interleave' nodeset='0-1'/></numatune>"));
    let p = plan_for(&d, &host(2, 4 * GIB), &Ledger::default()).unwrap();
    assert_eq!(grow_of(&p), vec![(0, 2048, 18, 18), (1, 2048, 17, 17)]);
}

#[test]
fn preferred_puts_everything_on_its_node() {
    let d = domain(&format!("<memory unit='MiB'>64</memory>{HUGE}<numatune><memory mode='preferred' nodeset='1'/></numatune>"));
    assert_eq!(
        grow_of(&plan_for(&d, &host(2, 4 * GIB), &Ledger::default()).unwrap()),
        vec![(1, 2048, 32, 32)]
    );
}

#[test]
fn unbound_vm_follows_its_pinned_cpus_else_spreads_over_all_nodes() {
    let pinned = domain(&format!("<memory unit='MiB'>64</memory>{HUGE}<vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='3'/></cputune>"));
    assert_eq!(
        grow_of(&plan_for(&pinned, &host(2, 4 * GIB), &Ledger::default()).unwrap()),
        vec![(1, 2048, 32, 32)]
    );
    let free = domain(&format!("<memory unit='MiB'>64</memory>{HUGE}"));
    assert_eq!(
        grow_of(&plan_for(&free, &host(2, 4 * GIB), &Ledger::default()).unwrap()),
        vec![(0, 2048, 16, 16), (1, 2048, 16, 16)]
    );
}

#[test]
fn guest_cells_with_memnodes_and_per_cell_page_sizes() {
    let d = domain(
        "<memory unit='GiB'>3</memory>\
         <memoryBacking><hugepages><page size='1' unit='G' nodeset='0'/><page size='2048' unit='KiB' nodeset='1'/></hugepages></memoryBacking>\
         <numatune><memnode cellid='0' mode='strict' nodeset='1'/><memnode cellid='1' mode='strict' nodeset='0'/></numatune>\
         <cpu><numa><cell id='0' cpus='0' memory='2' unit='GiB'/><cell id='1' cpus='1' memory='1' unit='GiB'/></numa></cpu>",
    );
    let p = plan_for(&d, &host(2, 8 * GIB), &Ledger::default()).unwrap();
    assert_eq!(grow_of(&p), vec![(0, 2048, 512, 512), (1, 1 << 20, 2, 2)]);
}

#[test]
fn free_pages_in_the_pool_are_used_not_doubled() {
    let mut h = host(1, 4 * GIB);
    let key = PoolKey {
        node: 0,
        page_kib: 2048,
    };
    h.pools.insert(
        key,
        PoolState {
            nr: 100,
            free: 100,
            surplus: 0,
        },
    );
    let d = domain(&format!("<memory unit='MiB'>64</memory>{HUGE}"));
    let p = plan_for(&d, &h, &Ledger::default()).unwrap();
    assert_eq!(grow_of(&p), vec![(0, 2048, 32, 0)]);
    assert!(p.is_empty());
    // 300 MiB = 150 pages: the free 100 cover part, 50 are added.
    let d = domain(&format!("<memory unit='MiB'>300</memory>{HUGE}"));
    assert_eq!(
        grow_of(&plan_for(&d, &h, &Ledger::default()).unwrap()),
        vec![(0, 2048, 150, 50)]
    );
}

#[test]
fn pages_promised_to_prepared_vms_and_reserved_mappings_are_not_counted_free() {
    let mut h = host(1, 4 * GIB);
    let key = PoolKey {
        node: 0,
        page_kib: 2048,
    };
    h.pools.insert(
        key,
        PoolState {
            nr: 64,
            free: 64,
            surplus: 0,
        },
    );
    let mut ledger = Ledger::default();
    ledger.vms.insert(
        "other".into(),
        VmHold {
            phase: Phase::Prepared,
            hugepages: vec![PoolHold {
                pool: key,
                pages: 40,
                added: 40,
            }],
            isolate: CpuSet::new(),
            irq: None,
            devices: Vec::new(),
            pid: None,
            kvmtune_run: false,
            partition_misfit: None,
            knobs: Default::default(),
        },
    );
    let d = domain(&format!("<memory unit='MiB'>64</memory>{HUGE}"));
    let p = plan_for(&d, &h, &ledger).unwrap();
    assert_eq!((p.hugepages[0].promised, p.hugepages[0].grow), (40, 8));
    // Once the other VM runs, its pages are no longer in the free count: nothing is promised.
    ledger.vms.get_mut("other").unwrap().phase = Phase::Running;
    h.pools.insert(
        key,
        PoolState {
            nr: 64,
            free: 24,
            surplus: 0,
        },
    );
    assert_eq!(plan_for(&d, &h, &ledger).unwrap().hugepages[0].grow, 8);
    // A QEMU that mapped without touching: its pages look free but are reserved.
    h.pools.insert(
        key,
        PoolState {
            nr: 64,
            free: 64,
            surplus: 0,
        },
    );
    h.reserved.insert(2048, 40);
    assert_eq!(
        plan_for(&d, &h, &Ledger::default()).unwrap().hugepages[0].grow,
        8
    );
}

#[test]
fn memory_not_a_multiple_of_the_page_size_is_refused() {
    let d = domain("<memory unit='MiB'>1536</memory><memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>");
    let err = plan_for(&d, &host(1, 8 * GIB), &Ledger::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1.5 GiB") && err.contains("1 GiB page size"),
        "{err}"
    );
}

#[test]
fn growth_beyond_the_memory_floor_is_refused_before_any_change() {
    let d = domain(&format!(
        "<memory unit='GiB'>64</memory>{HUGE}<numatune><memory nodeset='0'/></numatune>"
    ));
    let err = plan_for(&d, &host(1, 20 * GIB), &Ledger::default()).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let msg = err.to_string();
    assert!(
        msg.contains("32768 x 2 MiB pages on node 0") && msg.contains("Nothing was changed"),
        "{msg}"
    );
    // Exactly at the floor is allowed; a page more is not.
    let policy = Policy::parse("[hugepages]\nnode_memory_floor = \"1GiB\"\n").unwrap();
    let fits = domain(&format!("<memory unit='GiB'>3</memory>{HUGE}"));
    assert!(plan(&fits, "vm", &policy, &host(1, 4 * GIB), &Ledger::default()).is_ok());
    let over = domain(&format!("<memory unit='MiB'>3074</memory>{HUGE}"));
    assert!(plan(&over, "vm", &policy, &host(1, 4 * GIB), &Ledger::default()).is_err());
}

#[test]
fn policy_limit_per_vm_is_enforced() {
    let policy = Policy::parse("[hugepages]\nmax_per_vm = \"1GiB\"\n").unwrap();
    let d = domain(&format!("<memory unit='GiB'>2</memory>{HUGE}"));
    let err = plan(&d, "vm", &policy, &host(1, 8 * GIB), &Ledger::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_per_vm"), "{err}");
}

#[test]
fn binding_to_a_missing_node_or_page_size_is_refused() {
    let d = domain(&format!(
        "<memory unit='MiB'>64</memory>{HUGE}<numatune><memory nodeset='5'/></numatune>"
    ));
    assert!(plan_for(&d, &host(2, 4 * GIB), &Ledger::default())
        .unwrap_err()
        .to_string()
        .contains("node 5"));
    let d = domain("<memory unit='MiB'>64</memory><memoryBacking><hugepages><page size='16' unit='KiB'/></hugepages></memoryBacking>");
    assert!(plan_for(&d, &host(1, 4 * GIB), &Ledger::default())
        .unwrap_err()
        .to_string()
        .contains("no such pool"));
}

#[test]
fn reserve_metadata_overrides_memory_backing() {
    let off = domain(&format!("{HUGE}<memory unit='MiB'>64</memory><metadata><k:tune xmlns:k='urn:kvmtune:1'><k:hugepages reserve='off'/></k:tune></metadata>"));
    assert!(plan_for(&off, &host(1, 4 * GIB), &Ledger::default())
        .unwrap()
        .hugepages
        .is_empty());
    let on = domain("<memory unit='MiB'>64</memory><metadata><k:tune xmlns:k='urn:kvmtune:1'><k:hugepages reserve='on'/></k:tune></metadata>");
    assert_eq!(
        grow_of(&plan_for(&on, &host(1, 4 * GIB), &Ledger::default()).unwrap()),
        vec![(0, 2048, 32, 32)]
    );
    let plain = domain("<memory unit='MiB'>64</memory>");
    assert!(asks_nothing(&plain, &Policy::default()));
    assert!(!asks_nothing(&on, &Policy::default()));
}

#[test]
fn isolation_outside_the_policy_bounds_is_refused() {
    let h = host(2, 4 * GIB); // CPUs 0-3; auto housekeeping = 0 and 2
    let meta = |cpus: &str| {
        domain(&format!("<memory unit='MiB'>64</memory><vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='3'/></cputune><metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='{cpus}'/></k:tune></metadata>"))
    };
    assert_eq!(
        plan_for(&meta("vcpus"), &h, &Ledger::default())
            .unwrap()
            .isolate,
        CpuSet::from_ids([3])
    );
    let err = plan_for(&meta("2-3"), &h, &Ledger::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("housekeeping"), "{err}");
    let err = plan_for(&meta("7"), &h, &Ledger::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not online"), "{err}");
    let policy = Policy::parse("[cpus]\nisolatable = \"1\"\n").unwrap();
    let err = plan(&meta("3"), "vm", &policy, &h, &Ledger::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cpus.isolatable"), "{err}");
}

#[test]
fn vcpus_keyword_on_an_unpinned_vm_is_an_error_only_when_the_vm_asked() {
    let h = host(2, 4 * GIB);
    let asked = domain("<memory unit='MiB'>64</memory><metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/></k:tune></metadata>");
    assert!(plan_for(&asked, &h, &Ledger::default())
        .unwrap_err()
        .to_string()
        .contains("<vcpupin>"));
    let policy = Policy::parse("[defaults]\nisolate = \"vcpus\"\n").unwrap();
    let unpinned = domain("<memory unit='MiB'>64</memory>");
    assert!(plan(&unpinned, "vm", &policy, &h, &Ledger::default())
        .unwrap()
        .isolate
        .is_empty());
}
