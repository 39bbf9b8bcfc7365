use super::*;
use crate::domain::metadata::{IrqChoice, IsolateChoice, Reserve};

const FULL: &str = r#"<domain type='kvm' id='3'>
  <name>db1</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <metadata>
    <other:thing xmlns:other="http://example.org/other"><x/></other:thing>
    <kvmtune:tune xmlns:kvmtune="urn:kvmtune:1">
      <kvmtune:hugepages reserve="on"/>
      <kvmtune:isolate cpus="vcpus"/>
      <kvmtune:irq cpus="4-5"/>
    </kvmtune:tune>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <memoryBacking>
    <hugepages>
      <page size='1048576' unit='KiB' nodeset='0'/>
      <page size='2' unit='M' nodeset='1'/>
    </hugepages>
    <nosharepages/>
    <locked/>
  </memoryBacking>
  <vcpu placement='static' cpuset='0-7,^3'>4</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='4'/>
    <vcpupin vcpu='1' cpuset='5'/>
    <emulatorpin cpuset='0-1'/>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='1'/>
    <memnode cellid='0' mode='strict' nodeset='1'/>
    <memnode cellid='1' mode='interleave' nodeset='0-1'/>
  </numatune>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='host-passthrough'>
    <numa>
      <cell id='0' cpus='0-1' memory='2' unit='GiB'/>
      <cell id='1' cpus='2-3' memory='2097152' unit='KiB'/>
    </numa>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x06' slot='0x02' function='0x1'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/></source></hostdev>
  </devices>
</domain>"#;

#[test]
fn full_domain_fields_are_read() {
    let d = Domain::parse(FULL).unwrap();
    assert_eq!(d.name, "db1");
    assert_eq!(d.memory_bytes, 4 << 30);
    assert_eq!(
        d.hugepages,
        Some(vec![
            PageSpec {
                size_kib: 1 << 20,
                cells: Some(CpuSet::from_ids([0]))
            },
            PageSpec {
                size_kib: 2048,
                cells: Some(CpuSet::from_ids([1]))
            },
        ])
    );
    assert!(d.locked && d.nosharepages);
    assert_eq!(d.vcpus, 4);
    assert_eq!(d.vcpu_cpuset, Some(CpuSet::parse("0-2,4-7").unwrap()));
    assert_eq!(
        d.vcpupins,
        vec![(0, CpuSet::from_ids([4])), (1, CpuSet::from_ids([5]))]
    );
    assert_eq!(d.emulatorpin, Some(CpuSet::parse("0-1").unwrap()));
    assert_eq!(d.numatune.memnodes.len(), 2);
    assert_eq!(d.numatune.memnodes[1].1.mode, MemMode::Interleave);
    assert_eq!(
        d.cells,
        vec![
            GuestCell {
                id: 0,
                memory_bytes: 2 << 30
            },
            GuestCell {
                id: 1,
                memory_bytes: 2 << 30
            },
        ]
    );
    assert_eq!(d.hostdevs.len(), 1);
    assert_eq!(d.hostdevs[0].to_string(), "0000:06:02.1");
}

#[test]
fn metadata_in_our_namespace_is_read_and_other_tools_metadata_ignored() {
    let d = Domain::parse(FULL).unwrap();
    assert_eq!(d.tune.hugepages, Some(Reserve::On));
    assert_eq!(d.tune.isolate, Some(IsolateChoice::Vcpus));
    assert_eq!(
        d.tune.irq,
        Some(IrqChoice::List(CpuSet::parse("4-5").unwrap()))
    );
}

#[test]
fn vcpus_partly_pinned_float_over_vcpu_cpuset() {
    let d = Domain::parse(FULL).unwrap();
    // Two of four vCPUs are pinned; the other two may run anywhere in <vcpu cpuset>.
    assert_eq!(d.vcpu_host_cpus(), CpuSet::parse("0-2,4-7").unwrap());
}

fn with_metadata(inner: &str) -> String {
    format!("<domain><name>m</name><memory>1024</memory><metadata>{inner}</metadata></domain>")
}

#[test]
fn metadata_children_without_prefix_are_accepted() {
    let xml = with_metadata(
        r#"<kvmtune:tune xmlns:kvmtune="urn:kvmtune:1"><hugepages reserve="off"/></kvmtune:tune>"#,
    );
    assert_eq!(
        Domain::parse(&xml).unwrap().tune.hugepages,
        Some(Reserve::Off)
    );
}

#[test]
fn migrate_remap_is_read_and_off_unless_said() {
    let on = with_metadata(
        r#"<kvmtune:tune xmlns:kvmtune="urn:kvmtune:1"><kvmtune:migrate remap="on"/></kvmtune:tune>"#,
    );
    assert_eq!(Domain::parse(&on).unwrap().tune.migrate_remap, Some(true));
    let off = on.replace("\"on\"", "\"off\"");
    assert_eq!(Domain::parse(&off).unwrap().tune.migrate_remap, Some(false));
    assert_eq!(Domain::parse(FULL).unwrap().tune.migrate_remap, None);
}

#[test]
fn status_files_wrap_the_domain_and_the_design_is_read_beside_it() {
    let status = format!(
        "<!-- generated -->\n<domstatus state='running'><taint flag='x'/>{FULL}</domstatus>"
    );
    let (d, design) = Domain::parse_with_design(&status).unwrap();
    assert_eq!(d.name, "db1");
    assert_eq!(design.live_id, Some(3));
    assert_eq!(design.cpu_mode.as_deref(), Some("host-passthrough"));
    assert!(Domain::parse_with_design("<domstatus/>").is_err());
    assert!(Domain::parse_with_design("<network/>").is_err());
}

#[test]
fn metadata_mistakes_are_errors_naming_the_mistake() {
    let cases = [
        (
            r#"<t:tune xmlns:t="urn:kvmtune:1"><t:hugepages reserve="maybe"/></t:tune>"#,
            "maybe",
        ),
        (
            r#"<t:tune xmlns:t="urn:kvmtune:1"><t:isolate cpu="1"/></t:tune>"#,
            "unknown attribute 'cpu'",
        ),
        (
            r#"<t:tune xmlns:t="urn:kvmtune:1"><t:isolate cpus="3-1"/></t:tune>"#,
            "reversed",
        ),
        (
            r#"<t:tune xmlns:t="urn:kvmtune:1"><t:isolate cpus="0-99999999"/></t:tune>"#,
            "larger",
        ),
        (
            r#"<t:tune xmlns:t="urn:kvmtune:1"><t:pages reserve="on"/></t:tune>"#,
            "unknown element <pages>",
        ),
        (r#"<t:tune xmlns:t="urn:kvmtune:2"/>"#, "not supported"),
        (
            r#"<t:tune xmlns:t="urn:kvmtune:1"><t:migrate remap="yes"/></t:tune>"#,
            "<migrate remap='yes'> is not valid (expected on or off)",
        ),
    ];
    for (inner, expected) in cases {
        let err = Domain::parse(&with_metadata(inner))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{inner}: {err}");
        assert!(!err.contains('\n'));
    }
}

#[test]
fn host_knob_metadata_is_read_and_checked() {
    use crate::domain::metadata::Apply;
    let xml = with_metadata(
        r#"<k:tune xmlns:k="urn:kvmtune:1"><k:ksm run="off"/><k:thp apply="on"/><k:sysctl apply="off"/></k:tune>"#,
    );
    let tune = Domain::parse(&xml).unwrap().tune;
    assert_eq!(
        (tune.ksm, tune.thp, tune.sysctl),
        (Some(Apply::On), Some(Apply::On), Some(Apply::Off))
    );
    for (inner, expected) in [
        (
            r#"<k:ksm run="on"/>"#,
            "<ksm run='on'> is not valid (expected off or auto)",
        ),
        (r#"<k:thp enabled="never"/>"#, "unknown attribute 'enabled'"),
        (r#"<k:sysctl apply="yes"/>"#, "(expected on, off or auto)"),
    ] {
        let xml = with_metadata(&format!(
            r#"<k:tune xmlns:k="urn:kvmtune:1">{inner}</k:tune>"#
        ));
        let err = Domain::parse(&xml).unwrap_err().to_string();
        assert!(err.contains(expected), "{inner}: {err}");
    }
}

#[test]
fn memory_units_follow_libvirt() {
    for (xml, bytes) in [
        ("<memory>1024</memory>", 1u64 << 20),
        ("<memory unit='GiB'>4</memory>", 4 << 30),
        ("<memory unit='GB'>1</memory>", 1_000_000_000),
        ("<memory unit='b'>4096</memory>", 4096),
    ] {
        let d = Domain::parse(&format!("<domain><name>m</name>{xml}</domain>")).unwrap();
        assert_eq!(d.memory_bytes, bytes, "{xml}");
    }
}

#[test]
fn hostile_xml_is_refused() {
    let cases = [
        (
            "<!DOCTYPE d [<!ENTITY x 'y'>]><domain><name>&x;</name></domain>",
            "DOCTYPE",
        ),
        ("<domain><name>&x;</name></domain>", "XML"),
        ("<domain><name>a</name>", "truncated"),
        ("<notdomain/>", "not <domain>"),
        ("", "no root"),
        ("<domain><x:y/></domain>", "undeclared"),
    ];
    for (xml, expected) in cases {
        let err = Domain::parse(xml).unwrap_err().to_string();
        assert!(err.contains(expected), "{xml}: {err}");
    }
    let deep = format!(
        "<domain>{}{}</domain>",
        "<a>".repeat(100),
        "</a>".repeat(100)
    );
    assert!(Domain::parse(&deep)
        .unwrap_err()
        .to_string()
        .contains("deeply"));
}

#[test]
fn hostdev_addresses_are_validated_before_reaching_a_path() {
    let hostdev = |addr: &str| {
        format!("<domain><name>m</name><devices><hostdev mode='subsystem' type='pci'><source><address {addr}/></source></hostdev></devices></domain>")
    };
    assert!(Domain::parse(&hostdev(
        "domain='0x0000' bus='0x100' slot='0' function='0'"
    ))
    .is_err());
    assert!(Domain::parse(&hostdev(
        "domain='0' bus='../../../etc' slot='0' function='0'"
    ))
    .is_err());
    assert!(Domain::parse(&hostdev("domain='0' bus='0' slot='0x20' function='0'")).is_err());
    let ok = Domain::parse(&hostdev("domain='0' bus='0x3' slot='0x1f' function='7'")).unwrap();
    assert_eq!(ok.hostdevs[0].to_string(), "0000:03:1f.7");
}

#[test]
fn bad_page_size_and_memory_are_errors() {
    let xml = "<domain><name>m</name><memoryBacking><hugepages><page size='3' unit='KiB'/></hugepages></memoryBacking></domain>";
    assert!(Domain::parse(xml)
        .unwrap_err()
        .to_string()
        .contains("power-of-two"));
    let xml = "<domain><name>m</name><memory unit='parsec'>1</memory></domain>";
    assert!(Domain::parse(xml)
        .unwrap_err()
        .to_string()
        .contains("parsec"));
}

#[test]
fn pci_addresses_in_the_kernels_form_with_or_without_domain() {
    use crate::domain::PciAddress;
    let addr = |domain, bus, slot, function| PciAddress {
        domain,
        bus,
        slot,
        function,
    };
    for (text, want) in [
        ("0000:06:00.0", addr(0, 6, 0, 0)),
        ("06:00.0", addr(0, 6, 0, 0)),
        ("ffff:ff:1f.7", addr(0xffff, 0xff, 0x1f, 7)),
        ("0000:0A:1F.3", addr(0, 0xa, 0x1f, 3)),
        (" 1:2:3.4\n", addr(1, 2, 3, 4)),
    ] {
        let got: PciAddress = text.parse().unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(got.to_string().parse::<PciAddress>().unwrap(), got);
    }
    assert_eq!(addr(0, 6, 0, 0).to_string(), "0000:06:00.0");
    for (bad, why) in [
        ("", "expected a PCI address"),
        ("06:00", "expected a PCI address"),
        ("0:0:0:0.0", "expected a PCI address"),
        ("06:20.0", "slot '20'"),
        ("06:00.8", "function '8'"),
        ("10000:00:00.0", "domain '10000'"),
        ("+6:00.0", "bus '+6'"),
        ("../..:00.0", "bus '../..'"),
        ("06::00.0", "expected a PCI address"),
        ("0x06:00.0", "bus '0x06'"),
    ] {
        let err = bad.parse::<PciAddress>().unwrap_err().to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
        assert!(err.contains("[DDDD:]BB:SS.F"), "{bad:?}: {err}");
    }
}

#[test]
fn pci_addresses_are_text_in_json_and_checked_when_read_back() {
    use crate::domain::PciAddress;
    let a: PciAddress = "0000:06:00.0".parse().unwrap();
    assert_eq!(serde_json::to_string(&a).unwrap(), "\"0000:06:00.0\"");
    assert_eq!(
        serde_json::from_str::<PciAddress>("\"06:00.0\"").unwrap(),
        a
    );
    let err = serde_json::from_str::<PciAddress>("\"../../etc\"").unwrap_err();
    assert!(err.to_string().contains("PCI address"), "{err}");
}

#[test]
fn pci_addresses_in_libvirts_form_are_numbers_hex_or_decimal() {
    use crate::domain::PciAddress;
    let attrs = |list: &'static [(&'static str, &'static str)]| {
        move |name: &str| list.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    };
    let a = PciAddress::from_attributes(attrs(&[
        ("domain", "0x0000"),
        ("bus", "0x06"),
        ("slot", "31"),
        ("function", "0X7"),
    ]))
    .unwrap();
    assert_eq!(a.to_string(), "0000:06:1f.7");
    assert_eq!(
        PciAddress::from_attributes(attrs(&[])).unwrap().to_string(),
        "0000:00:00.0"
    );
    let err = PciAddress::from_attributes(attrs(&[("slot", "0x20")])).unwrap_err();
    assert!(err.contains("slot='0x20' is out of range"), "{err}");
    let err = PciAddress::from_attributes(attrs(&[("bus", "../..")])).unwrap_err();
    assert!(err.contains("bus='../..' is not a number"), "{err}");
}
