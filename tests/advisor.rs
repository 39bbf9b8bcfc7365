//! The advisor as users and libvirt run it: `kvmtune check` and `kvmtune suggest` over fake
//! host roots (topology with SMT, device NUMA nodes, KSM) with other VMs from a fake `virsh`,
//! and the `migrate begin` hook on XML libvirt produced. Suggestions are golden files
//! (`tests/golden/suggest-*.txt`; UPDATE_GOLDEN=1 rewrites them).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::kernel::put;
use common::{diff, kernel, virsh, FakeKernel, GIB};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtune");

struct Host {
    kernel: FakeKernel,
    tmp: tempfile::TempDir,
}

/// 2 nodes × 4 cores × 2 threads, 16 GiB each: node 0 = CPUs 0-3,8-11, node 1 = 4-7,12-15.
fn two_nodes_smt() -> Host {
    Host::new(
        kernel(&[(16 * GIB, "0-3,8-11"), (16 * GIB, "4-7,12-15")])
            .with_smt(&["0,8", "1,9", "2,10", "3,11", "4,12", "5,13", "6,14", "7,15"]),
    )
}

impl Host {
    fn new(kernel: FakeKernel) -> Host {
        let h = Host {
            kernel,
            tmp: tempfile::tempdir().unwrap(),
        };
        h.defined(&[]);
        h
    }

    /// The VMs a fake `virsh` lists and dumps (defined, not running).
    fn defined(&self, vms: &[(&str, &str)]) {
        let domains: Vec<virsh::Domain> = vms
            .iter()
            .zip(1..)
            .map(|((name, xml), n)| virsh::Domain {
                id: None,
                name,
                uuid: virsh::uuid(n),
                xml,
            })
            .collect();
        self.domains(&domains);
    }

    /// The domains a fake `virsh` serves.
    fn domains(&self, domains: &[virsh::Domain]) {
        virsh::install(&self.tmp.path().join("bin"), domains);
    }

    /// The fake virsh's calls so far.
    fn virsh_calls(&self) -> Vec<String> {
        virsh::calls(&self.tmp.path().join("bin"))
    }

    fn no_virsh(&self) {
        std::fs::remove_file(self.tmp.path().join("bin/virsh")).unwrap();
    }

    fn put(&self, rel: &str, contents: &str) {
        put(self.kernel.path(), rel, contents);
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .env("KVMTUNE_ROOT", self.kernel.path())
            .env("KVMTUNE_STATE_DIR", self.tmp.path().join("state"))
            .env("KVMTUNE_CONFIG", self.tmp.path().join("kvmtune.toml"))
            // Root with the capabilities kvmtune needs, whoever runs the tests.
            .env("KVMTUNE_PRIVILEGE", "root")
            // Only the fake virsh: never the machine's libvirt.
            .env("PATH", self.tmp.path().join("bin"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        child.wait_with_output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A well-designed VM for `two_nodes_smt`: 2 vCPUs on core (5,13), emulator on node 1's
/// housekeeping core, memory on node 1, virtio devices.
fn good_vm(name: &str, pins: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='GiB'>2</memory>\
         <vcpu placement='static'>2</vcpu><cputune>{pins}<emulatorpin cpuset='4,12'/></cputune>\
         <numatune><memory mode='strict' nodeset='1'/></numatune><cpu mode='host-passthrough'/>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>\
         <source file='/images/{name}.raw'/><target dev='vda' bus='virtio'/></disk>\
         <interface type='bridge'><source bridge='br0'/><model type='virtio'/><driver name='vhost' queues='2'/></interface>\
         <memballoon model='none'/></devices></domain>"
    )
}

const PINS_5_13: &str = "<vcpupin vcpu='0' cpuset='5'/><vcpupin vcpu='1' cpuset='13'/>";

// ---- check ---------------------------------------------------------------------------------

#[test]
fn check_of_a_good_vm_exits_0_with_no_findings() {
    let h = two_nodes_smt();
    let file = h.file("db.xml", &good_vm("db", PINS_5_13));
    let out = h.run(&["check", "--xml", &file], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("VM 'db' on this host: 2 NUMA node(s), CPUs 0-15 (2 threads per core), 32 GiB, housekeeping CPUs 0,4,8,12\n"), "{text}");
    assert!(text.contains("no findings"), "{text}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn pins_shared_with_a_defined_vm_fail_the_check_with_a_fix() {
    let h = two_nodes_smt();
    h.defined(&[
        (
            "web",
            &good_vm(
                "web",
                "<vcpupin vcpu='0' cpuset='5'/><vcpupin vcpu='1' cpuset='6'/>",
            ),
        ),
        // The VM under check is defined too: it is not its own peer.
        ("db", &good_vm("db", PINS_5_13)),
    ]);
    let out = h.run(&["check", "db"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "error    pins-shared              vCPU CPUs 5 are also vCPU CPUs of VM 'web'"
        ),
        "{text}"
    );
    // The fix keeps off web's CPUs, on whole cores.
    assert!(text.contains("fix: <cputune>"), "{text}");
    assert!(!text.contains("<vcpupin vcpu='0' cpuset='5'/>"), "{text}");
    assert_eq!(stderr(&out), "kvmtune: VM 'db': 1 error-level finding(s)\n");
}

/// `check NAME` reads the domain called NAME, by its UUID: not the running domain whose id
/// NAME looks like, nor the one whose UUID it is. Every call that names a domain names it by
/// UUID, or puts the name after `--`.
#[test]
fn a_vm_named_like_an_id_or_a_uuid_is_not_taken_for_another() {
    let h = two_nodes_smt();
    let pins = |a: u32, b: u32| {
        format!("<vcpupin vcpu='0' cpuset='{a}'/><vcpupin vcpu='1' cpuset='{b}'/>")
    };
    let web = good_vm("web", &pins(5, 13));
    let seven = good_vm("7", &pins(6, 14));
    let named_uuid = good_vm(&virsh::uuid(1), &pins(7, 15));
    let option = good_vm("--all", &pins(1, 9));
    h.domains(&[
        // Running, with id 7.
        virsh::Domain {
            id: Some(7),
            name: "web",
            uuid: virsh::uuid(1),
            xml: &web,
        },
        virsh::Domain {
            id: None,
            name: "7",
            uuid: virsh::uuid(2),
            xml: &seven,
        },
        virsh::Domain {
            id: None,
            name: &virsh::uuid(1),
            uuid: virsh::uuid(3),
            xml: &named_uuid,
        },
        virsh::Domain {
            id: None,
            name: "--all",
            uuid: virsh::uuid(4),
            xml: &option,
        },
    ]);
    // Each of them pinned apart from web: read as web, it would share web's CPUs (exit 1).
    for name in ["7", virsh::uuid(1).as_str(), "--all"] {
        let out = h.run(&["check", "--", name], "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stdout(&out).starts_with(&format!("VM '{name}' on this host")),
            "{name}: {}",
            stdout(&out)
        );
    }
    let calls = h.virsh_calls();
    for call in &calls {
        let words: Vec<&str> = call.split(' ').collect();
        match words.iter().position(|w| *w == "--domain") {
            Some(i) => assert!(
                words[i + 1].parse::<kvmtune::host::virsh::Uuid>().is_ok(),
                "a domain named by other than its UUID: {call}"
            ),
            None if call.contains("domuuid") => {
                assert!(call.contains("domuuid -- "), "a name not after --: {call}")
            }
            None => assert!(call.contains("list --all --uuid"), "{call}"),
        }
    }
    assert!(
        calls.iter().any(|c| c == "-q domuuid -- --all"),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == &format!("-q dumpxml --domain {}", virsh::uuid(2))),
        "{calls:?}"
    );
}

#[test]
fn check_of_a_name_libvirt_does_not_know_is_a_usage_error() {
    let h = two_nodes_smt();
    let out = h.run(&["check", "nosuch"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "kvmtune: libvirt has no domain called 'nosuch'\n"
    );
}

#[test]
fn json_report_lists_findings_with_rule_severity_why_and_fix() {
    let h = two_nodes_smt();
    let xml = good_vm("db", PINS_5_13).replace("cache='none' io='native'", "cache='writeback'");
    let file = h.file("db.xml", &xml);
    let out = h.run(&["check", "--json", "--xml", &file], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["vm"], "db");
    let rules: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["disk-cache", "disk-io"]);
    assert_eq!(v["findings"][0]["severity"], "warning");
    assert_eq!(
        v["findings"][0]["fix"],
        "<driver name='qemu' type='raw' cache='none' io='native'/>"
    );
    assert_eq!(v["warnings"], 1);
    assert_eq!(v["infos"], 1);
}

#[test]
fn device_numa_node_and_ksm_come_from_sysfs() {
    let h = two_nodes_smt();
    h.put("sys/bus/pci/devices/0000:3b:00.0/numa_node", "0\n");
    h.put("sys/kernel/mm/ksm/run", "1\n");
    h.put("sys/kernel/mm/ksm/merge_across_nodes", "1\n");
    let xml = good_vm("db", PINS_5_13).replace(
        "<memballoon",
        "<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source></hostdev><memballoon",
    );
    let file = h.file("db.xml", &xml);
    let out = h.run(&["check", "--xml", &file], "");
    let text = stdout(&out);
    assert!(
        text.contains("device 0000:3b:00.0 sits on node 0, the VM's memory on node(s) 1"),
        "{text}"
    );
    assert!(text.contains("ksm-latency"), "{text}");
    assert!(text.contains("ksm-merge-across-nodes"), "{text}");
    assert!(
        text.contains("[ksm]\n              merge_across_nodes = 0"),
        "{text}"
    );
    // A device that is not there: the VM will not start.
    let file = h.file("gone.xml", &xml.replace("0x3b", "0x3c"));
    let out = h.run(&["check", "--xml", &file], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("hostdev-missing"), "{}", stdout(&out));
}

#[test]
fn without_virsh_other_vms_are_a_note_not_a_failure() {
    let h = two_nodes_smt();
    h.no_virsh();
    let file = h.file("db.xml", &good_vm("db", PINS_5_13));
    let out = h.run(&["check", "--xml", &file], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("note: other VMs not compared: cannot run virsh"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_of_unreadable_input_is_one_line_and_exit_1() {
    let h = two_nodes_smt();
    let out = h.run(&["check", "--xml", "/nonexistent/db.xml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/db.xml"),
        "{}",
        stderr(&out)
    );
    let file = h.file("bad.xml", "<domain><name>x</name><memory>");
    let out = h.run(&["check", "--xml", &file], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("kvmtune: "), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let out = h.run(&["check"], "");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_changes_nothing_on_the_host() {
    let h = two_nodes_smt();
    let start = h.kernel.snapshot();
    let file = h.file("db.xml", &good_vm("db", "<vcpupin vcpu='0' cpuset='0'/>"));
    h.run(&["check", "--xml", &file], "");
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
    assert!(!h.tmp.path().join("state").exists());
}

#[test]
fn every_libvirt_fixture_can_be_checked() {
    // One node, CPUs 0-1, like the machine that produced them.
    let h = Host::new(kernel(&[(4 * GIB, "0-1")]));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libvirt");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        let out = h.run(&["check", "--xml", path.to_str().unwrap()], "");
        let text = stdout(&out);
        // TCG domains with a custom CPU: said as info; vCPU pinned to CPU 1, no emulatorpin.
        assert!(text.contains("domain-type"), "{}: {text}", path.display());
        assert!(!text.contains("pins-offline"), "{}: {text}", path.display());
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            path.display()
        );
    }
}

// ---- suggest -------------------------------------------------------------------------------

fn assert_golden(case: &str, actual: &str) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/suggest-{case}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        actual,
        expected,
        "suggest output differs from {}",
        path.display()
    );
}

fn suggest(h: &Host, args: &[&str]) -> String {
    let mut full = vec!["suggest"];
    full.extend_from_slice(args);
    let out = h.run(&full, "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn suggest_whole_cores_on_the_node_with_room_in_1g_pages() {
    let h = two_nodes_smt();
    let xml = suggest(&h, &["--vcpus", "4", "--memory", "8G", "--hugepages", "1G"]);
    assert_golden("2nodes-smt-4vcpu-1g", &xml);
}

#[test]
fn suggest_keeps_off_cpus_of_defined_vms_and_isolates() {
    let h = two_nodes_smt();
    h.defined(&[(
        "web",
        &good_vm(
            "web",
            "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='9'/>",
        ),
    )]);
    let xml = suggest(
        &h,
        &["--vcpus", "4", "--memory", "4G", "--node", "0", "--isolate"],
    );
    assert!(xml.contains("<vcpupin vcpu='0' cpuset='2'/>"), "{xml}");
    assert_golden("2nodes-smt-node0-isolate", &xml);
}

#[test]
fn suggest_an_odd_vcpu_count_leaves_the_sibling_idle() {
    let h = two_nodes_smt();
    let xml = suggest(&h, &["--vcpus", "3", "--memory", "3G", "--node", "1"]);
    assert_golden("2nodes-smt-3vcpu-node1", &xml);
}

#[test]
fn suggest_spreads_a_vm_larger_than_a_node_over_cells() {
    let h = two_nodes_smt();
    let xml = suggest(
        &h,
        &["--vcpus", "10", "--memory", "20G", "--hugepages", "2M"],
    );
    assert_golden("2nodes-smt-10vcpu-spread", &xml);
}

#[test]
fn suggest_on_one_node_without_smt() {
    let h = Host::new(kernel(&[(8 * GIB, "0-3")]));
    let xml = suggest(&h, &["--vcpus", "2", "--memory", "2G", "--hugepages", "2M"]);
    assert_golden("1node-2vcpu-2m", &xml);
}

#[test]
fn suggest_says_why_nothing_fits_and_exits_1() {
    let h = two_nodes_smt();
    let out = h.run(&["suggest", "--vcpus", "16", "--memory", "4G"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "node 0: 3 free whole core(s), 8 needed for 16 vCPU(s) (CPUs 0,8 housekeeping)"
        ),
        "{err}"
    );
    let out = h.run(
        &["suggest", "--vcpus", "2", "--memory", "40G", "--node", "1"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("node 1: 15.8 GiB of memory room, 40 GiB needed"),
        "{}",
        stderr(&out)
    );
    for bad in [
        &["suggest", "--vcpus", "2", "--memory", "lots"][..],
        &[
            "suggest",
            "--vcpus",
            "2",
            "--memory",
            "1G",
            "--hugepages",
            "3M",
        ],
        &[
            "suggest", "--vcpus", "2", "--memory", "1G", "--node", "first",
        ],
        &["suggest", "--vcpus", "0", "--memory", "1G"],
    ] {
        let out = h.run(bad, "");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
}

#[test]
fn a_vm_built_from_a_suggestion_passes_the_check() {
    let h = two_nodes_smt();
    for args in [
        &["--vcpus", "4", "--memory", "8G", "--hugepages", "1G"][..],
        &["--vcpus", "10", "--memory", "20G"],
        &["--vcpus", "2", "--memory", "2G", "--isolate"],
        // An odd count isolates the idle sibling with the vCPUs' CPUs: the core stays whole.
        &["--vcpus", "3", "--memory", "2G", "--isolate"],
    ] {
        let placement = suggest(&h, args);
        let xml = format!(
            "<domain type='kvm'><name>new</name>{placement}<devices><memballoon model='none'/></devices></domain>"
        );
        let file = h.file("new.xml", &xml);
        let out = h.run(&["check", "--xml", &file], "");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("no findings"),
            "{args:?}: {}",
            stdout(&out)
        );
    }
}

// ---- migrate begin ----------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/libvirt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// libvirt's XML for the metadata VM, opted in to the remap.
fn opted_in() -> String {
    let xml = fixture("metadata-inactive.xml");
    let opted = xml.replace(
        "<kvmtune:hugepages reserve=\"on\"/>",
        "<kvmtune:hugepages reserve=\"on\"/>\n      <kvmtune:migrate remap=\"on\"/>",
    );
    assert_ne!(opted, xml);
    opted
}

#[test]
fn migrate_begin_rewrites_only_pins_and_nodesets_of_an_opted_in_vm() {
    let h = two_nodes_smt();
    let xml = opted_in();
    let out = h.run(
        &["hook", "kvmtune-test-meta", "migrate", "begin", "-"],
        &xml,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // vCPU 0 is on CPU 1, memory on node 0: here that is already the fit (core (1,9) is the
    // first free whole core of node 0), so nothing is printed and libvirt keeps its XML.
    assert_eq!(stdout(&out), "");

    // A destination where CPU 1 is taken by a running VM: vCPU 0 moves.
    h.put(
        "run/libvirt/qemu/web.xml",
        "<domstatus state='running' pid='1'><domain type='kvm' id='4'><name>web</name><memory unit='GiB'>1</memory><vcpu cpuset='1-3,9-11'>2</vcpu></domain></domstatus>",
    );
    let out = h.run(
        &["hook", "kvmtune-test-meta", "migrate", "begin", "-"],
        &xml,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = xml
        .replace(
            "<vcpupin vcpu='0' cpuset='1'/>",
            "<vcpupin vcpu='0' cpuset='5'/>",
        )
        .replace(
            "<memory mode='strict' nodeset='0'/>",
            "<memory mode='strict' nodeset='1'/>",
        );
    assert_eq!(stdout(&out), expected);
}

#[test]
fn migrate_begin_without_opt_in_prints_nothing_and_reads_no_host() {
    // An empty root: anything that looked at the host would fail.
    let empty = tempfile::tempdir().unwrap();
    for name in [
        "hugepage-inactive.xml",
        "metadata-inactive.xml",
        "numa-cells-inactive.xml",
    ] {
        let out = Command::new(BIN)
            .args(["hook", "vm", "migrate", "begin", "-"])
            .env_clear()
            .env("KVMTUNE_ROOT", empty.path())
            .env("KVMTUNE_STATE_DIR", empty.path().join("state"))
            .env("KVMTUNE_CONFIG", empty.path().join("none.toml"))
            .env("KVMTUNE_PRIVILEGE", "root")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(fixture(name).as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{name}");
        assert!(!empty.path().join("state").exists(), "{name}");
    }
}

#[test]
fn migrate_begin_refuses_when_an_opted_in_vm_does_not_fit() {
    // One node with CPUs 0-1: CPU 0 is housekeeping, CPU 1 held by a running VM.
    let h = Host::new(kernel(&[(4 * GIB, "0-1")]));
    h.put(
        "run/libvirt/qemu/web.xml",
        "<domstatus><domain type='kvm' id='4'><name>web</name><memory unit='GiB'>1</memory><vcpu cpuset='1'>1</vcpu></domain></domstatus>",
    );
    let out = h.run(
        &["hook", "kvmtune-test-meta", "migrate", "begin", "-"],
        &opted_in(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("node 0: 0 free whole core(s), 1 needed for 1 vCPU(s) (CPUs 0 housekeeping, 1 held by VM 'web')"), "{err}");
}

#[test]
fn migrate_begin_of_numa_cells_maps_each_cell_to_a_node() {
    let h = two_nodes_smt();
    // Cells of 64 MiB on one host node in the fixture; both vCPUs on CPU 1.
    let xml = fixture("numa-cells-inactive.xml").replace(
        "<memory unit='KiB'>131072</memory>",
        "<metadata><kvmtune:tune xmlns:kvmtune=\"urn:kvmtune:1\"><kvmtune:migrate remap=\"on\"/></kvmtune:tune></metadata>\n  <memory unit='KiB'>131072</memory>",
    );
    let out = h.run(
        &["hook", "kvmtune-test-cells", "migrate", "begin", "-"],
        &xml,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    // One vCPU per cell; both cells fit node 0 (most room, then fewest used... lowest id).
    assert!(text.contains("<vcpupin vcpu='0' cpuset='1'/>"), "{text}");
    assert!(text.contains("<vcpupin vcpu='1' cpuset='"), "{text}");
    assert_eq!(
        text.lines().count(),
        xml.lines().count(),
        "only attribute values change"
    );
    let changed: Vec<(&str, &str)> = xml
        .lines()
        .zip(text.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        changed
            .iter()
            .all(|(a, _)| a.contains("vcpupin") || a.contains("nodeset")),
        "{changed:?}"
    );
}

#[test]
fn migrate_begin_on_the_xml_libvirt_sent_to_a_real_destination() {
    // What libvirt 9.0 wrote on the destination hook's stdin (tests/libvirt/migrate.sh), on a
    // host like the one it came from: one node, CPUs 0-1, CPU 0 housekeeping.
    let h = Host::new(kernel(&[(4 * GIB, "0-1")]));
    let xml = fixture("hook-stdin-remap.migrate.begin.xml");
    let out = h.run(
        &["hook", "kvmtune-test-remap", "migrate", "begin", "-"],
        &xml,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = xml
        .replace(
            "<vcpupin vcpu='0' cpuset='0'/>",
            "<vcpupin vcpu='0' cpuset='1'/>",
        )
        .replace("<emulatorpin cpuset='1'/>", "<emulatorpin cpuset='0'/>");
    assert_ne!(expected, xml);
    assert_eq!(stdout(&out), expected);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}
