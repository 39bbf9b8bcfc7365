//! The domain model against XML captured from a real libvirtd (tests/fixtures/libvirt): what
//! `virsh dumpxml` prints and exactly what libvirtd wrote on the hook's stdin.

use kvmtune::cpulist::CpuSet;
use kvmtune::domain::metadata::Reserve;
use kvmtune::domain::{Domain, MemMode};

fn fixture(name: &str) -> Domain {
    let path = format!(
        "{}/tests/fixtures/libvirt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Domain::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_captured_document_parses() {
    let dir = format!("{}/tests/fixtures/libvirt", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".xml") {
            fixture(&name);
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} fixtures in {dir}");
}

#[test]
fn running_hugepage_vm_is_read_as_defined() {
    for name in [
        "hugepage-running.xml",
        "hugepage-inactive.xml",
        "hook-stdin-huge.prepare.begin.xml",
    ] {
        let d = fixture(name);
        assert_eq!(d.memory_bytes, 128 << 20, "{name}");
        assert_eq!(d.hugepages, Some(vec![]), "{name}");
        let binding = d.numatune.memory.clone().unwrap();
        assert_eq!(
            (binding.mode, binding.nodeset),
            (MemMode::Strict, Some(CpuSet::from_ids([0]))),
            "{name}"
        );
        assert_eq!(d.vcpupins, vec![(0, CpuSet::from_ids([1]))], "{name}");
        assert_eq!(d.tune, Default::default(), "{name}");
    }
}

#[test]
fn metadata_set_by_virsh_is_read() {
    for name in [
        "metadata-running.xml",
        "metadata-inactive.xml",
        "hook-stdin-meta.prepare.begin.xml",
    ] {
        assert_eq!(fixture(name).tune.hugepages, Some(Reserve::On), "{name}");
    }
}

#[test]
fn cells_and_memnodes_are_read() {
    let d = fixture("numa-cells-running.xml");
    assert_eq!(d.cells.len(), 2);
    assert!(d.cells.iter().all(|c| c.memory_bytes == 64 << 20));
    assert_eq!(d.numatune.memnodes.len(), 2);
}

#[test]
fn hostdev_host_address_is_the_source_not_the_guest_address() {
    let d = fixture("hostdev-inactive.xml");
    assert_eq!(d.hostdevs.len(), 1);
    assert_eq!(d.hostdevs[0].to_string(), "0000:3b:00.1");
}

#[test]
fn plain_vm_has_no_hugepages() {
    assert_eq!(
        fixture("hook-stdin-plain.prepare.begin.xml").hugepages,
        None
    );
}
