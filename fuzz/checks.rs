#![allow(dead_code)] // each fuzz target uses one of these
//! What each fuzz target checks, shared with `tests/fuzz_corpus.rs` (which replays the
//! committed corpus under plain `cargo test`). A panic is a finding.

use std::collections::BTreeMap;

use kvmtune::cpulist::CpuSet;
use kvmtune::domain::Domain;
use kvmtune::host::topology::{Node, Topology};
use kvmtune::host::{Host, PoolKey, PoolState};
use kvmtune::policy::Policy;
use kvmtune::state::Ledger;

/// Domain XML, our metadata included, from whoever may define a domain: parsing never panics,
/// and what parses is planned against a two-node host without panicking (sizes and lists
/// from the XML meet the host's arithmetic there).
pub fn domain_xml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(domain) = Domain::parse(text) else {
        return;
    };
    let _ = domain.vcpu_host_cpus();
    let _ = kvmtune::plan::plan(
        &domain,
        "fuzz",
        &Policy::default(),
        &host(),
        &Ledger::default(),
    );
}

/// The kernel's cpu-list syntax (and libvirt's `^N`): never panics; what parses prints in the
/// kernel's form and parses back to the same set; masks round-trip too.
pub fn cpulist(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = CpuSet::parse(text) {
        let printed = set.to_string();
        assert_eq!(
            CpuSet::parse(&printed).as_ref(),
            Ok(&set),
            "{text:?} -> {printed:?}"
        );
        let mask = set.to_mask(1);
        assert_eq!(
            CpuSet::parse_mask(&mask).as_ref(),
            Ok(&set),
            "{text:?} -> {mask:?}"
        );
    }
    if let Ok(set) = CpuSet::parse_mask(text) {
        assert_eq!(
            CpuSet::parse(&set.to_string()).as_ref(),
            Ok(&set),
            "mask {text:?}"
        );
    }
}

/// The host policy: never panics; a policy that parses has usable values.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::parse(text) {
        // The reservation deadline is computed from it on every prepare.
        let _ = std::time::Instant::now() + p.reserve_timeout;
        assert!(!p.irq_watch_interval.is_zero(), "irq-watch would spin");
    }
}

/// Two nodes of two CPUs and 4 GiB each, empty 2 MiB and 1 GiB pools.
fn host() -> Host {
    let node = |id: u32, cpus: &str| Node {
        id,
        cpus: CpuSet::parse(cpus).unwrap(),
        mem_total: 4 << 30,
        mem_free: 4 << 30,
        mem_available: 4 << 30,
    };
    let mut pools = BTreeMap::new();
    for n in 0..2 {
        for page_kib in [2048, 1 << 20] {
            pools.insert(
                PoolKey { node: n, page_kib },
                PoolState {
                    nr: 0,
                    free: 0,
                    surplus: 0,
                },
            );
        }
    }
    Host {
        topology: Topology {
            nodes: vec![node(0, "0-1"), node(1, "2-3")],
            online_cpus: CpuSet::parse("0-3").unwrap(),
            siblings: (0..4).map(|c| (c, CpuSet::from_ids([c]))).collect(),
        },
        default_page_kib: 2048,
        pools,
        reserved: BTreeMap::new(),
    }
}
