//! Every rule, table-driven: a small change to a well-designed VM that makes the rule fire,
//! and one that keeps it quiet, on a stated host with stated other VMs.

use super::super::facts::testing::{host, peer, two_nodes_smt, GIB};
use super::super::facts::{DeviceNode, HostFacts, Ksm};
use super::super::findings::Severity;
use super::*;
use crate::domain::PciAddress;

/// A VM that fits `two_nodes_smt` well: 2 vCPUs on core (5,13) of node 1, the emulator on
/// node 1's housekeeping core, memory strictly on node 1, virtio everything.
const GOOD: &str = "<domain type='kvm'><name>t</name>\
<memory unit='GiB'>2</memory><vcpu placement='static'>2</vcpu>\
<cputune><vcpupin vcpu='0' cpuset='5'/><vcpupin vcpu='1' cpuset='13'/><emulatorpin cpuset='4,12'/></cputune>\
<numatune><memory mode='strict' nodeset='1'/></numatune>\
<cpu mode='host-passthrough'/>\
<clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>\
<devices>\
<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/><source file='/images/t.raw'/><target dev='vda' bus='virtio'/></disk>\
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\
<interface type='bridge'><source bridge='br0'/><model type='virtio'/><driver name='vhost' queues='2'/></interface>\
<memballoon model='none'/>\
</devices></domain>";

const PIN5: &str = "<vcpupin vcpu='0' cpuset='5'/><vcpupin vcpu='1' cpuset='13'/>";
const BOUND1: &str = "<memory mode='strict' nodeset='1'/>";
const DISK: &str = "<driver name='qemu' type='raw' cache='none' io='native'/><source file='/images/t.raw'/><target dev='vda' bus='virtio'/>";
const NIC: &str = "<model type='virtio'/><driver name='vhost' queues='2'/>";
const META: &str = "<metadata><kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'><kvmtune:isolate cpus='vcpus'/></kvmtune:tune></metadata>";

fn vm(edits: &[(&str, &str)]) -> String {
    let mut text = GOOD.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "test setup: '{from}' not in the VM");
        text = text.replacen(from, to, 1);
    }
    text
}

fn one_vcpu_on(cpu: u32) -> String {
    vm(&[
        ("<vcpu placement='static'>2", "<vcpu placement='static'>1"),
        (PIN5, &format!("<vcpupin vcpu='0' cpuset='{cpu}'/>")),
        ("queues='2'", "queues='1'"),
    ])
}

fn hugepage_vm(memory: &str, extra: &[(&str, &str)]) -> String {
    let mut edits = vec![
        ("<memory unit='GiB'>2</memory>", memory),
        (
            "<vcpu placement",
            "<memoryBacking><hugepages><page size='2' unit='M'/></hugepages></memoryBacking><vcpu placement",
        ),
    ];
    edits.extend_from_slice(extra);
    vm(&edits)
}

fn ksm_on() -> HostFacts {
    let mut f = two_nodes_smt();
    f.ksm = Some(Ksm {
        run: 1,
        merge_across_nodes: Some(true),
    });
    f
}

const DEV_NODE0: &str = "0000:3b:00.0";
const DEV_NODE1: &str = "0000:5e:00.0";
const DEV_GONE: &str = "0000:99:00.0";

fn with_devices() -> HostFacts {
    let mut f = two_nodes_smt();
    for (addr, node) in [
        (DEV_NODE0, DeviceNode::Node(0)),
        (DEV_NODE1, DeviceNode::Node(1)),
        (DEV_GONE, DeviceNode::Missing),
    ] {
        f.devices.insert(pci(addr), node);
    }
    f
}

fn pci(text: &str) -> PciAddress {
    let (d, rest) = text.split_at(4);
    let p: Vec<&str> = rest[1..].split([':', '.']).collect();
    PciAddress {
        domain: u16::from_str_radix(d, 16).unwrap(),
        bus: u8::from_str_radix(p[0], 16).unwrap(),
        slot: u8::from_str_radix(p[1], 16).unwrap(),
        function: p[2].parse().unwrap(),
    }
}

fn hostdev(addr: &str) -> String {
    let a = pci(addr);
    format!(
        "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x{:04x}' bus='0x{:02x}' slot='0x{:02x}' function='0x{}'/></source></hostdev><memballoon",
        a.domain, a.bus, a.slot, a.function
    )
}

struct Row {
    rule: &'static str,
    severity: Severity,
    host: fn() -> HostFacts,
    peers: &'static [(&'static str, &'static str)],
    fires: fn() -> String,
    quiet: fn() -> String,
}

const WEB_ON_5: (&str, &str) = (
    "web",
    "<domain><name>web</name><memory unit='GiB'>1</memory><vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='5'/></cputune></domain>",
);
const WEB_ON_13: (&str, &str) = (
    "web",
    "<domain><name>web</name><memory unit='GiB'>1</memory><vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='13'/></cputune></domain>",
);
const BIG: (&str, &str) = (
    "big",
    "<domain><name>big</name><memory unit='GiB'>30</memory><vcpu>1</vcpu></domain>",
);

fn rows() -> Vec<Row> {
    use Severity::*;
    vec![
        Row {
            rule: pins::OFFLINE,
            severity: Error,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("cpuset='13'", "cpuset='40'")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: pins::OFFLINE,
            severity: Error,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(BOUND1, "<memory mode='strict' nodeset='3'/>")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: pins::SHARED,
            severity: Error,
            host: two_nodes_smt,
            peers: &[WEB_ON_5],
            fires: || GOOD.into(),
            quiet: || {
                vm(&[(
                    PIN5,
                    "<vcpupin vcpu='0' cpuset='6'/><vcpupin vcpu='1' cpuset='14'/>",
                )])
            },
        },
        Row {
            rule: pins::SHARED,
            severity: Warning, // floating over a set: sharing by design, still worth saying
            host: two_nodes_smt,
            peers: &[WEB_ON_5],
            fires: || vm(&[(PIN5, ""), ("placement='static'>2", "cpuset='5-6,13-14'>2")]),
            quiet: || vm(&[(PIN5, ""), ("placement='static'>2", "cpuset='6-7,14-15'>2")]),
        },
        Row {
            rule: pins::HOUSEKEEPING,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || {
                vm(&[(
                    PIN5,
                    "<vcpupin vcpu='0' cpuset='4'/><vcpupin vcpu='1' cpuset='12'/>",
                )])
            },
            quiet: || GOOD.into(),
        },
        Row {
            rule: pins::HOUSEKEEPING,
            severity: Error, // prepare would refuse to isolate housekeeping CPUs
            host: two_nodes_smt,
            peers: &[],
            fires: || {
                vm(&[
                    (
                        PIN5,
                        "<vcpupin vcpu='0' cpuset='4'/><vcpupin vcpu='1' cpuset='12'/>",
                    ),
                    ("<memory unit", &format!("{META}<memory unit")),
                ])
            },
            quiet: || vm(&[("<memory unit", &format!("{META}<memory unit"))]),
        },
        Row {
            rule: pins::SMT_SPLIT_VM,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[WEB_ON_13],
            fires: || one_vcpu_on(5),
            quiet: || one_vcpu_on(6),
        },
        Row {
            rule: pins::SMT_SPLIT_HOST,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || one_vcpu_on(5),
            quiet: || GOOD.into(),
        },
        Row {
            rule: pins::EMULATOR,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("<emulatorpin cpuset='4,12'/>", "")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: pins::EMULATOR,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("emulatorpin cpuset='4,12'", "emulatorpin cpuset='4-5'")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: pins::IOTHREAD,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("<cputune>", "<iothreads>1</iothreads><cputune>")]),
            quiet: || {
                vm(&[(
                    "<cputune>",
                    "<iothreads>1</iothreads><cputune><iothreadpin iothread='1' cpuset='4,12'/>",
                )])
            },
        },
        Row {
            rule: numa::VCPUS_SPAN,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(PIN5, ""), ("placement='static'>2", "cpuset='1,5'>2")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: numa::MEMORY_SPAN,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(BOUND1, "<memory mode='strict' nodeset='0-1'/>")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: numa::MEMORY_SPAN,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(BOUND1, "")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: numa::MEMORY_REMOTE,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(BOUND1, "<memory mode='strict' nodeset='0'/>")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: numa::EXCEEDS_NODE,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(PIN5, ""), ("placement='static'>2", ">10")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: numa::HOSTDEV,
            severity: Warning,
            host: with_devices,
            peers: &[],
            fires: || vm(&[("<memballoon", &hostdev(DEV_NODE0))]),
            quiet: || vm(&[("<memballoon", &hostdev(DEV_NODE1))]),
        },
        Row {
            rule: numa::HOSTDEV_MISSING,
            severity: Error,
            host: with_devices,
            peers: &[],
            fires: || vm(&[("<memballoon", &hostdev(DEV_GONE))]),
            quiet: || vm(&[("<memballoon", &hostdev(DEV_NODE1))]),
        },
        Row {
            rule: hugepages::MULTIPLE,
            severity: Error,
            host: two_nodes_smt,
            peers: &[],
            fires: || hugepage_vm("<memory unit='KiB'>2098176</memory>", &[]),
            quiet: || hugepage_vm("<memory unit='GiB'>2</memory>", &[]),
        },
        Row {
            rule: hugepages::CAPACITY,
            severity: Error,
            host: two_nodes_smt,
            peers: &[],
            fires: || hugepage_vm("<memory unit='GiB'>16</memory>", &[]),
            quiet: || hugepage_vm("<memory unit='GiB'>15</memory>", &[]),
        },
        Row {
            rule: hugepages::BALLOON,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || {
                hugepage_vm(
                    "<memory unit='GiB'>2</memory>",
                    &[("<memballoon model='none'/>", "<memballoon model='virtio'/>")],
                )
            },
            quiet: || hugepage_vm("<memory unit='GiB'>2</memory>", &[]),
        },
        Row {
            rule: hugepages::LOCKED,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || {
                vm(&[(
                    "<vcpu placement",
                    "<memoryBacking><locked/></memoryBacking><vcpu placement",
                )])
            },
            quiet: || {
                vm(&[(
                    "<vcpu placement",
                    "<memoryBacking><locked/></memoryBacking><memtune><hard_limit unit='GiB'>3</hard_limit></memtune><vcpu placement",
                )])
            },
        },
        Row {
            rule: memory::OVERCOMMIT,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[BIG],
            fires: || GOOD.into(), // 30 + 2 GiB > 32 GiB minus 2 x 256 MiB
            quiet: || vm(&[("<memory unit='GiB'>2", "<memory unit='GiB'>1")]),
        },
        Row {
            rule: memory::KSM_LATENCY,
            severity: Warning,
            host: ksm_on,
            peers: &[],
            fires: || GOOD.into(),
            quiet: || {
                vm(&[(
                    "<vcpu placement",
                    "<memoryBacking><nosharepages/></memoryBacking><vcpu placement",
                )])
            },
        },
        Row {
            rule: memory::KSM_LATENCY,
            severity: Warning,
            host: ksm_on,
            peers: &[],
            fires: || GOOD.into(),
            // kvmtune stops KSM while it runs (the policy's default ksm.stop_for = ["metadata"]).
            quiet: || {
                vm(&[("<memory unit", "<metadata><kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'><kvmtune:ksm run='off'/></kvmtune:tune></metadata><memory unit")])
            },
        },
        Row {
            rule: memory::KSM_MERGE,
            severity: Warning,
            host: ksm_on,
            peers: &[],
            fires: || GOOD.into(),
            quiet: || hugepage_vm("<memory unit='GiB'>2</memory>", &[]),
        },
        Row {
            rule: devices::DISK_BUS,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("dev='vda' bus='virtio'", "dev='sdb' bus='sata'")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::DISK_BUS,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("dev='vda' bus='virtio'", "dev='sdb' bus='scsi'")]),
            quiet: || {
                vm(&[
                    ("dev='vda' bus='virtio'", "dev='sdb' bus='scsi'"),
                    (
                        "<memballoon",
                        "<controller type='scsi' model='virtio-scsi'/><memballoon",
                    ),
                ])
            },
        },
        Row {
            rule: devices::DISK_CACHE,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || {
                vm(&[(
                    DISK,
                    "<driver name='qemu' type='raw'/><target dev='vda' bus='virtio'/>",
                )])
            },
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::DISK_IO,
            severity: Error,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("cache='none' io='native'", "cache='writeback' io='native'")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::DISK_IO,
            severity: Info,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("io='native'", "io='threads'")]),
            quiet: || vm(&[("io='native'", "io='io_uring'")]),
        },
        Row {
            rule: devices::DISK_QCOW2_DB,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || {
                vm(&[
                    ("type='raw'", "type='qcow2'"),
                    ("/images/t.raw", "/images/pg-data.qcow2"),
                ])
            },
            quiet: || {
                vm(&[
                    ("type='raw'", "type='qcow2'"),
                    ("/images/t.raw", "/images/sdb.qcow2"),
                ])
            },
        },
        Row {
            rule: devices::NIC_MODEL,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(NIC, "<model type='e1000e'/>")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::NIC_VHOST,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("name='vhost' queues", "name='qemu' queues")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::NIC_QUEUES,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[(NIC, "<model type='virtio'/>")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::CPU_MODE,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("<cpu mode='host-passthrough'/>", "")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::CPU_MODE,
            severity: Info,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("mode='host-passthrough'", "mode='host-model'")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::DOMAIN_TYPE,
            severity: Info,
            host: two_nodes_smt,
            peers: &[],
            fires: || vm(&[("type='kvm'", "type='qemu'")]),
            quiet: || GOOD.into(),
        },
        Row {
            rule: devices::CLOCK,
            severity: Warning,
            host: two_nodes_smt,
            peers: &[],
            fires: || {
                vm(&[(
                    "<timer name='rtc'",
                    "<timer name='kvmclock' present='no'/><timer name='rtc'",
                )])
            },
            quiet: || {
                vm(&[(
                    "<timer name='rtc'",
                    "<timer name='kvmclock' present='yes'/><timer name='rtc'",
                )])
            },
        },
    ]
}

fn run(facts: &HostFacts, peers: &[(&str, &str)], xml: &str) -> Vec<Finding> {
    let (domain, design) = Domain::parse_with_design(xml).unwrap();
    let peers: Vec<_> = peers.iter().map(|(n, x)| peer(n, x)).collect();
    check(&Subject::new(&domain, &design, facts, &peers))
}

#[test]
fn the_well_designed_vm_has_no_findings() {
    let found = run(&two_nodes_smt(), &[], GOOD);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn every_rule_fires_on_its_mistake_and_stays_quiet_without_it() {
    for (i, row) in rows().iter().enumerate() {
        let facts = (row.host)();
        let fires = run(&facts, row.peers, &(row.fires)());
        let hit: Vec<&Finding> = fires.iter().filter(|f| f.rule == row.rule).collect();
        assert!(
            hit.iter().any(|f| f.severity == row.severity),
            "row {i} ({}): expected a {:?} finding, got {fires:#?}",
            row.rule,
            row.severity
        );
        assert!(
            hit.iter()
                .all(|f| !f.why.contains('\n') && !f.fix.is_empty()),
            "row {i} ({}): why must be one line and a fix given: {hit:#?}",
            row.rule
        );
        let quiet = run(&facts, row.peers, &(row.quiet)());
        assert!(
            quiet.iter().all(|f| f.rule != row.rule),
            "row {i} ({}): fired without the mistake: {quiet:#?}",
            row.rule
        );
    }
}

#[test]
fn every_rule_is_in_the_table() {
    let table: Vec<&str> = rows().iter().map(|r| r.rule).collect();
    for rule in RULES {
        assert!(table.contains(rule), "rule {rule} has no row in the table");
    }
}

#[test]
fn a_single_node_host_has_no_numa_findings() {
    let facts = host(&[(32 * GIB, "0-7")], &[]);
    let xml = vm(&[
        (BOUND1, ""),
        (PIN5, ""),
        ("emulatorpin cpuset='4,12'", "emulatorpin cpuset='0'"),
    ]);
    let found = run(&facts, &[], &xml);
    assert!(
        found.iter().all(|f| !f.rule.starts_with("numa-")),
        "{found:#?}"
    );
}

#[test]
fn placement_fixes_come_from_the_fitting_code() {
    let found = run(&two_nodes_smt(), &[WEB_ON_5], GOOD);
    let shared = found.iter().find(|f| f.rule == pins::SHARED).unwrap();
    // Core (5,13) is taken by web's pin on 5: the fit moves this VM to core (6,14), node 0 or 1
    // (the node with the most room: both equal, the lowest wins).
    assert!(
        shared.fix.contains("<vcpupin vcpu='0' cpuset='1'/>"),
        "{}",
        shared.fix
    );
    assert!(
        shared.fix.contains("<emulatorpin cpuset='0,8'/>"),
        "{}",
        shared.fix
    );
    assert!(
        shared.fix.contains("<memory mode='strict' nodeset='0'/>"),
        "{}",
        shared.fix
    );
}

#[test]
fn hostdev_fix_places_the_vm_on_the_devices_node() {
    let found = run(
        &with_devices(),
        &[],
        &vm(&[("<memballoon", &hostdev(DEV_NODE0))]),
    );
    let f = found.iter().find(|f| f.rule == numa::HOSTDEV).unwrap();
    assert!(f.why.contains("node 0"), "{}", f.why);
    assert!(
        f.fix.contains("<memory mode='strict' nodeset='0'/>"),
        "{}",
        f.fix
    );
}

#[test]
fn ksm_held_by_kvmtune_policy_is_not_a_finding() {
    let mut facts = ksm_on();
    let found = run(&facts, &[], GOOD);
    assert!(found.iter().any(|f| f.rule == memory::KSM_MERGE));
    assert!(found.iter().any(|f| f.rule == memory::KSM_LATENCY));
    // kvmtune unmerges and holds merge_across_nodes = 0, and stops KSM, for every VM it runs.
    facts.policy = crate::policy::Policy::parse(
        "[ksm]\nmerge_across_nodes = 0\nmerge_for = [\"all\"]\nstop_for = [\"all\"]\n",
    )
    .unwrap();
    let found = run(&facts, &[], GOOD);
    assert!(
        found.iter().all(|f| !f.rule.starts_with("ksm-")),
        "{found:#?}"
    );
}
