//! `kvmtune suggest`: the `<vcpu>`, `<cputune>`, `<numatune>`, `<cpu><numa>` and
//! `<memoryBacking>` of a VM that fits this host now, from the fitting code. A VM no single node
//! holds is spread over as few nodes as hold it, one guest NUMA cell per node.

use super::facts::{HostFacts, Peer};
use super::fit::{self, Layout, Occupancy, Request};
use crate::error::{Error, Result};
use crate::size::{human, page_size_name};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestArgs {
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Hugepage size in KiB; `None` = ordinary pages.
    pub page_kib: Option<u64>,
    /// Only this node; `None` = the node with room (`auto`).
    pub node: Option<u32>,
    /// The vCPUs' CPUs will be isolated by kvmtune (`<kvmtune:isolate cpus="vcpus"/>`).
    pub isolate: bool,
}

/// Parse `--hugepages 2M|1G` (any size the host's pools use, e.g. `2MiB`, `1048576k`).
pub fn parse_page_size(text: &str) -> Result<u64> {
    let bytes = crate::size::parse_size(text)
        .map_err(|e| Error::Usage(format!("--hugepages {text:?}: {e}")))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(Error::Usage(format!(
            "--hugepages {text:?} is not a page size (2M or 1G)"
        )));
    }
    Ok(bytes / 1024)
}

/// Fit the VM and write its XML, or say why nothing fits (exit 1).
pub fn suggest(args: &SuggestArgs, facts: &HostFacts, peers: &[Peer]) -> Result<String> {
    if args.vcpus == 0 {
        return Err(Error::Usage("--vcpus must be at least 1".into()));
    }
    let unit = args.page_kib.map_or(1024, |k| k * 1024);
    if args.memory_bytes == 0 || args.memory_bytes % unit != 0 {
        return Err(Error::Usage(format!(
            "--memory {} is not a whole number of {}",
            human(args.memory_bytes),
            args.page_kib.map_or("KiB".to_string(), |k| format!(
                "{} pages",
                page_size_name(k)
            ))
        )));
    }
    let occ = Occupancy::from_peers(peers, facts);
    let threads = facts.threads_per_core() as u32;
    let mut req = Request {
        cells: fit::split(args.vcpus, args.memory_bytes, args.page_kib, 1, threads),
        node: args.node,
        distinct_nodes: false,
        isolate: args.isolate,
    };
    let single = match fit::fit(&req, facts, &occ) {
        Ok(layout) => return Ok(render(args, &layout)),
        Err(e) => e,
    };
    let nodes = facts.topology().nodes.len() as u32;
    if args.node.is_none() {
        req.distinct_nodes = true;
        for k in 2..=nodes.min(args.vcpus) {
            req.cells = fit::split(args.vcpus, args.memory_bytes, args.page_kib, k, threads);
            if req.cells.iter().any(|c| c.memory_bytes % unit != 0) {
                continue;
            }
            if let Ok(layout) = fit::fit(&req, facts, &occ) {
                return Ok(render(args, &layout));
            }
        }
    }
    let tail = if args.node.is_none() && nodes > 1 {
        format!(", nor spread over up to {nodes} nodes")
    } else {
        String::new()
    };
    Err(Error::Refused(format!("{single}{tail}")))
}

/// The whole suggestion: a comment saying where it goes, then the elements.
pub fn render(args: &SuggestArgs, layout: &Layout) -> String {
    let memory_kib = args.memory_bytes / 1024;
    let mut out = String::new();
    let cpus = layout.vcpu_cpus();
    let cores = cpus.len().div_ceil(layout.threads.max(1));
    out.push_str(&format!(
        "<!-- kvmtune suggest: {} vCPU(s), {}{} on host node(s) {}: CPUs {cpus} ({cores} whole core(s)); emulator on housekeeping CPUs {} -->\n",
        args.vcpus,
        human(args.memory_bytes),
        args.page_kib
            .map_or(String::new(), |k| format!(" in {} pages", page_size_name(k))),
        layout.nodes(),
        layout.emulator
    ));
    if !layout.idle.is_empty() {
        let fate = if args.isolate {
            "isolated with the vCPUs' CPUs, so nothing else runs on the VM's cores"
        } else {
            "host tasks may run there (an even vCPU count, or --isolate, keeps the cores whole)"
        };
        out.push_str(&format!(
            "<!-- CPU(s) {} on the VM's cores without a vCPU (SMT siblings): {fate} -->\n",
            layout.idle
        ));
    }
    out.push_str(&format!("<memory unit='KiB'>{memory_kib}</memory>\n"));
    out.push_str(&format!(
        "<currentMemory unit='KiB'>{memory_kib}</currentMemory>\n"
    ));
    out.push_str("<memoryBacking>\n");
    match args.page_kib {
        Some(k) => out.push_str(&format!(
            "  <hugepages>\n    <page size='{k}' unit='KiB'/>\n  </hugepages>\n"
        )),
        // Ordinary pages of a pinned VM: kept out of KSM's merging (a merged page faults on write).
        None => out.push_str("  <nosharepages/>\n"),
    }
    out.push_str("</memoryBacking>\n");
    out.push_str(&format!("<vcpu placement='static'>{}</vcpu>\n", args.vcpus));
    out.push_str(&cells_xml(layout));
    if args.isolate {
        // The vCPUs' CPUs, or explicitly with the idle siblings so the cores stay whole.
        let cpus = if layout.idle.is_empty() {
            "vcpus".to_string()
        } else {
            cpus.union(&layout.idle).to_string()
        };
        out.push_str(&format!(
            "<metadata>\n  <kvmtune:tune xmlns:kvmtune=\"urn:kvmtune:1\">\n    <kvmtune:isolate cpus=\"{cpus}\"/>\n  </kvmtune:tune>\n</metadata>\n",
        ));
    }
    out
}

/// `<cputune>` and `<numatune>` for a layout: one pin per vCPU, the emulator on housekeeping
/// CPUs, memory strictly on the cells' nodes (per cell when the guest has cells).
pub fn placement_xml(layout: &Layout, memnodes: bool) -> String {
    let mut out = String::from("<cputune>\n");
    let mut pins: Vec<(u32, u32)> = layout
        .cells
        .iter()
        .flat_map(|c| c.pins.iter().copied())
        .collect();
    pins.sort();
    for (vcpu, cpu) in pins {
        out.push_str(&format!("  <vcpupin vcpu='{vcpu}' cpuset='{cpu}'/>\n"));
    }
    out.push_str(&format!(
        "  <emulatorpin cpuset='{}'/>\n</cputune>\n",
        layout.emulator
    ));
    out.push_str(&format!(
        "<numatune>\n  <memory mode='strict' nodeset='{}'/>\n",
        layout.nodes()
    ));
    if memnodes {
        for c in &layout.cells {
            out.push_str(&format!(
                "  <memnode cellid='{}' mode='strict' nodeset='{}'/>\n",
                c.id, c.node
            ));
        }
    }
    out.push_str("</numatune>\n");
    out
}

/// Placement plus the guest's CPU: host-passthrough, a topology that tells the guest which
/// vCPUs are SMT siblings (when every cell has whole cores), one NUMA cell per layout cell.
pub fn cells_xml(layout: &Layout) -> String {
    let mut out = placement_xml(layout, true);
    out.push_str("<cpu mode='host-passthrough' check='none' migratable='on'>\n");
    let threads = layout.threads.max(1);
    let per_cell: Vec<usize> = layout.cells.iter().map(|c| c.pins.len()).collect();
    let uniform = per_cell.windows(2).all(|w| w[0] == w[1]);
    if uniform && per_cell.iter().all(|n| n % threads == 0) {
        out.push_str(&format!(
            "  <topology sockets='{}' dies='1' cores='{}' threads='{threads}'/>\n",
            layout.cells.len(),
            per_cell.first().copied().unwrap_or(0) / threads
        ));
    }
    out.push_str("  <numa>\n");
    for c in &layout.cells {
        let vcpus = crate::cpulist::CpuSet::from_ids(c.pins.iter().map(|p| p.0));
        out.push_str(&format!(
            "    <cell id='{}' cpus='{vcpus}' memory='{}' unit='KiB'/>\n",
            c.id,
            c.memory_bytes / 1024
        ));
    }
    out.push_str("  </numa>\n</cpu>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::facts::testing::{two_nodes_smt, GIB};
    use super::*;

    fn args(vcpus: u32, gib: u64) -> SuggestArgs {
        SuggestArgs {
            vcpus,
            memory_bytes: gib * GIB,
            page_kib: None,
            node: None,
            isolate: false,
        }
    }

    #[test]
    fn page_sizes_are_read_like_people_write_them() {
        assert_eq!(parse_page_size("2M").unwrap(), 2048);
        assert_eq!(parse_page_size("1G").unwrap(), 1 << 20);
        assert_eq!(parse_page_size("2MiB").unwrap(), 2048);
        assert_eq!(parse_page_size("3M").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn memory_must_be_whole_pages() {
        let mut a = args(2, 1);
        a.memory_bytes += 1 << 20;
        a.page_kib = Some(1 << 20);
        let err = suggest(&a, &two_nodes_smt(), &[]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("1 GiB pages"), "{err}");
    }

    #[test]
    fn a_vm_larger_than_a_node_is_spread_with_one_cell_per_node() {
        // 8 vCPUs: each node has 3 free whole cores (6 threads).
        let xml = suggest(&args(8, 8), &two_nodes_smt(), &[]).unwrap();
        assert!(
            xml.contains("<cell id='0' cpus='0-3' memory='4194304' unit='KiB'/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<cell id='1' cpus='4-7' memory='4194304' unit='KiB'/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<memnode cellid='1' mode='strict' nodeset='1'/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<topology sockets='2' dies='1' cores='2' threads='2'/>"),
            "{xml}"
        );
    }

    #[test]
    fn nothing_fits_is_refused_with_the_reason_per_node() {
        let err = suggest(&args(14, 4), &two_nodes_smt(), &[]).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        let text = err.to_string();
        assert!(
            text.contains("node 0: 3 free whole core(s), 7 needed"),
            "{text}"
        );
        assert!(text.contains("nor spread over up to 2 nodes"), "{text}");
        let mut a = args(2, 1);
        a.node = Some(5);
        assert!(suggest(&a, &two_nodes_smt(), &[])
            .unwrap_err()
            .to_string()
            .contains("no node 5"));
    }
}
