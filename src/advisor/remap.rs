//! Migration remap: at `migrate begin` on the destination, a VM whose metadata says
//! `<kvmtune:migrate remap="on"/>` gets its pins and node sets rewritten to fit this host, by
//! the same fitting code as `kvmtune suggest`. Only host-side placement changes — `<vcpu
//! cpuset>`, `<vcpupin>`, `<emulatorpin>`, `<iothreadpin>` and the `nodeset`s of `<numatune>`
//! — none of which is guest ABI, so libvirt's ABI check accepts the result. Every other byte
//! of the document is left as it came.
//!
//! libvirt (qemuMigrationDstPrepareAny) uses the hook's stdout as the new XML when it is not
//! empty, and the XML it sent when it is: a VM that does not opt in, or whose placement already
//! fits, gets nothing printed.

use super::facts::{HostFacts, Peer};
use super::fit::{self, Occupancy};
use super::rules::shape;
use super::xmledit::{self, attr, Edit};
use crate::cpulist::CpuSet;
use crate::domain::{Design, Domain, MemMode};
use crate::error::{Error, Result};

/// Whether a parsed VM asks to be remapped and has any placement to remap.
pub fn wanted(domain: &Domain, design: &Design) -> bool {
    let has_placement = !domain.vcpupins.is_empty()
        || domain.vcpu_cpuset.is_some()
        || domain.emulatorpin.is_some()
        || !design.iothreadpins.is_empty()
        || domain.numatune.memory.iter().any(|b| b.nodeset.is_some())
        || domain
            .numatune
            .memnodes
            .iter()
            .any(|(_, b)| b.nodeset.is_some());
    domain.tune.migrate_remap == Some(true) && has_placement
}

/// The rewritten XML, or `None` when nothing changes. `held` are CPUs kvmtune isolates for
/// running VMs (from the ledger), kept free like other VMs' pins.
pub fn remap(
    vm: &str,
    text: &str,
    facts: &HostFacts,
    peers: &[Peer],
    held: &CpuSet,
) -> Result<Option<String>> {
    let (domain, design) = Domain::parse_with_design(text)?;
    if !wanted(&domain, &design) {
        return Ok(None);
    }
    let mut occupancy = Occupancy::from_peers(peers, facts);
    if !held.is_empty() {
        occupancy
            .cpus
            .push(("kvmtune's isolation of running VMs".into(), held.clone()));
    }
    let request = shape(&domain, &design, facts.host.default_page_kib);
    let layout = fit::fit(&request, facts, &occupancy).map_err(|e| {
        Error::Refused(format!(
            "VM '{vm}' asks to be remapped on migration (kvmtune:migrate remap=\"on\"), but {e}. The migration is refused; the VM keeps running where it was."
        ))
    })?;

    let all = layout.vcpu_cpus().to_string();
    let emulator = layout.emulator.to_string();
    let nodes = layout.nodes();
    let first_node = layout
        .cells
        .first()
        .map(|c| c.node.to_string())
        .unwrap_or_default();
    let vcpu_set = |_: &[(String, String)]| Some(all.clone());
    let vcpupin = |a: &[(String, String)]| {
        let id: u32 = attr(a, "vcpu")?.trim().parse().ok()?;
        layout.cpu_of(id).map(|c| c.to_string())
    };
    let housekeeping = |_: &[(String, String)]| Some(emulator.clone());
    let memory = |a: &[(String, String)]| {
        // `preferred` takes one node; the others any set.
        let preferred = attr(a, "mode") == Some("preferred")
            || domain.numatune.memory.as_ref().map(|b| b.mode) == Some(MemMode::Preferred);
        Some(if preferred {
            first_node.clone()
        } else {
            nodes.to_string()
        })
    };
    let memnode = |a: &[(String, String)]| {
        let id: u32 = attr(a, "cellid")?.trim().parse().ok()?;
        layout.node_of_cell(id).map(|n| n.to_string())
    };
    let edits = [
        Edit {
            path: &["domain", "vcpu"],
            attr: "cpuset",
            select: &vcpu_set,
        },
        Edit {
            path: &["domain", "cputune", "vcpupin"],
            attr: "cpuset",
            select: &vcpupin,
        },
        Edit {
            path: &["domain", "cputune", "emulatorpin"],
            attr: "cpuset",
            select: &housekeeping,
        },
        Edit {
            path: &["domain", "cputune", "iothreadpin"],
            attr: "cpuset",
            select: &housekeeping,
        },
        Edit {
            path: &["domain", "numatune", "memory"],
            attr: "nodeset",
            select: &memory,
        },
        Edit {
            path: &["domain", "numatune", "memnode"],
            attr: "nodeset",
            select: &memnode,
        },
    ];
    let out = xmledit::apply(text, &edits).map_err(Error::Domain)?;
    // Same placement once normalised (e.g. `1` for `1-1`): nothing to say.
    if out == text || same_placement(text, &out) {
        return Ok(None);
    }
    Ok(Some(out))
}

/// `migrate begin` in the hook: read the host and the running VMs, then remap.
pub fn for_host(
    vm: &str,
    text: &str,
    fs: &dyn crate::host::HostFs,
    policy: &crate::policy::Policy,
    held: &CpuSet,
) -> Result<Option<String>> {
    let facts = HostFacts::read(fs, policy, &[])?;
    let (peers, notes) = super::peers::running(fs, vm);
    for note in notes {
        crate::log::warn(&format!("migrate of VM '{vm}': {note}"));
    }
    remap(vm, text, &facts, &peers, held)
}

/// Whether two documents pin and bind the same way.
fn same_placement(a: &str, b: &str) -> bool {
    let (Ok((da, ia)), Ok((db, ib))) = (Domain::parse_with_design(a), Domain::parse_with_design(b))
    else {
        return false;
    };
    da.vcpupins == db.vcpupins
        && da.vcpu_cpuset == db.vcpu_cpuset
        && da.emulatorpin == db.emulatorpin
        && da.numatune == db.numatune
        && ia.iothreadpins == ib.iothreadpins
}

#[cfg(test)]
mod tests {
    use super::super::facts::testing::{peer, two_nodes_smt};
    use super::*;

    const OPT_IN: &str = "<metadata><kvmtune:tune xmlns:kvmtune=\"urn:kvmtune:1\"><kvmtune:migrate remap=\"on\"/></kvmtune:tune></metadata>";

    fn vm(metadata: &str) -> String {
        format!(
            "<domain type='kvm'>\n  <name>db</name>\n  {metadata}\n  <memory unit='GiB'>4</memory>\n  <vcpu placement='static' cpuset='4-5'>2</vcpu>\n  <cputune>\n    <shares>2048</shares>\n    <vcpupin vcpu='0' cpuset='4'/>\n    <vcpupin vcpu='1' cpuset='5'/>\n    <emulatorpin cpuset='6'/>\n  </cputune>\n  <numatune>\n    <memory mode='strict' nodeset='1'/>\n  </numatune>\n</domain>\n"
        )
    }

    #[test]
    fn without_opt_in_nothing_is_printed() {
        let out = remap("db", &vm(""), &two_nodes_smt(), &[], &CpuSet::new()).unwrap();
        assert_eq!(out, None);
    }

    #[test]
    fn pins_and_nodesets_follow_the_fit_and_nothing_else_changes() {
        let text = vm(OPT_IN);
        let out = remap("db", &text, &two_nodes_smt(), &[], &CpuSet::new())
            .unwrap()
            .unwrap();
        // On the destination, CPU 4 is housekeeping; the fit takes core (1,9) of node 0.
        let expected = text
            .replace("cpuset='4-5'>2", "cpuset='1,9'>2")
            .replace("vcpu='0' cpuset='4'", "vcpu='0' cpuset='1'")
            .replace("vcpu='1' cpuset='5'", "vcpu='1' cpuset='9'")
            .replace("emulatorpin cpuset='6'", "emulatorpin cpuset='0,8'")
            .replace("nodeset='1'", "nodeset='0'");
        assert_eq!(out, expected);
    }

    #[test]
    fn other_vms_and_isolated_cpus_are_avoided() {
        let web = peer(
            "web",
            "<domain id='3'><name>web</name><memory unit='GiB'>1</memory><vcpu cpuset='1-3,9-11'>6</vcpu></domain>",
        );
        let out = remap(
            "db",
            &vm(OPT_IN),
            &two_nodes_smt(),
            &[web],
            &CpuSet::parse("5,13").unwrap(),
        )
        .unwrap()
        .unwrap();
        assert!(out.contains("<vcpupin vcpu='0' cpuset='6'/>"), "{out}");
        assert!(out.contains("<vcpupin vcpu='1' cpuset='14'/>"), "{out}");
        assert!(out.contains("<emulatorpin cpuset='4,12'/>"), "{out}");
    }

    #[test]
    fn a_placement_that_already_fits_prints_nothing() {
        let text = vm(OPT_IN)
            .replace("cpuset='4-5'>2", "cpuset='1,9'>2")
            .replace("vcpu='0' cpuset='4'", "vcpu='0' cpuset='1'")
            .replace("vcpu='1' cpuset='5'", "vcpu='1' cpuset='9'")
            .replace("emulatorpin cpuset='6'", "emulatorpin cpuset='8,0'")
            .replace("nodeset='1'", "nodeset='0'");
        let out = remap("db", &text, &two_nodes_smt(), &[], &CpuSet::new()).unwrap();
        assert_eq!(out, None);
    }

    #[test]
    fn nothing_fits_refuses_with_the_reason() {
        let big = vm(OPT_IN).replace(">2</vcpu>", ">16</vcpu>");
        let err = remap("db", &big, &two_nodes_smt(), &[], &CpuSet::new()).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        let text = err.to_string();
        assert!(text.contains("remap=\"on\""), "{text}");
        assert!(text.contains("needed for 16 vCPU(s)"), "{text}");
    }

    #[test]
    fn cells_keep_their_vcpus_and_get_a_node_each() {
        let text = format!(
            "<domain type='kvm'><name>c</name>{OPT_IN}<memory unit='GiB'>8</memory><vcpu>4</vcpu>\
             <cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/><vcpupin vcpu='2' cpuset='2'/><vcpupin vcpu='3' cpuset='3'/></cputune>\
             <numatune><memory mode='strict' nodeset='0-1'/><memnode cellid='0' mode='strict' nodeset='0'/><memnode cellid='1' mode='strict' nodeset='1'/></numatune>\
             <cpu><numa><cell id='0' cpus='0-1' memory='14' unit='GiB'/><cell id='1' cpus='2-3' memory='14' unit='GiB'/></numa></cpu></domain>"
        );
        let out = remap("c", &text, &two_nodes_smt(), &[], &CpuSet::new())
            .unwrap()
            .unwrap();
        // 14 GiB per cell: one cell per node (15.75 GiB of room each).
        assert!(
            out.contains("<memnode cellid='0' mode='strict' nodeset='0'/>"),
            "{out}"
        );
        assert!(
            out.contains("<memnode cellid='1' mode='strict' nodeset='1'/>"),
            "{out}"
        );
        assert!(out.contains("<vcpupin vcpu='2' cpuset='5'/>"), "{out}");
        assert!(
            out.contains("<memory mode='strict' nodeset='0-1'/>"),
            "{out}"
        );
    }
}
