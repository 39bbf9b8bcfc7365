//! libvirt runs the hooks of different VMs in parallel (and every `reconnect` at once after a
//! daemon restart). Here 20 VMs' hook sequences run as parallel processes of the real binary on
//! one fake root, round after round: hugepages on two nodes, one isolated CPU each (a cgroup v1
//! housekeeping cpuset) and a passthrough device each whose IRQs follow its vCPU. While all run,
//! the ledger must account for every VM and the host must hold exactly their sum; after every
//! round the host must equal the start byte for byte, with nothing left in the state directory.
//!
//! The root is plain files (each process of the binary sees only the file system): a write of
//! `nr_hugepages` sets it, nothing models free pages, so each VM's plan grows its pool by all
//! its pages and the counts are exact sums. The kvmtune cpuset exists beforehand (a plain
//! `mkdir` makes no interface files), so isolation narrows and restores its `cpuset.cpus`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::kernel::put;
use kvmtune::cpulist::CpuSet;
use kvmtune::state::{Ledger, Phase};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtune");
const VMS: u32 = 20;
const ROUNDS: u32 = 4;
const PAGES: u64 = 8; // 16 MiB of 2 MiB pages per VM
const CPUSET: &str = "sys/fs/cgroup/cpuset";

struct Root {
    root: tempfile::TempDir,
    state: tempfile::TempDir,
}

/// Two nodes of 16 CPUs (0-15, 16-31), the housekeeping CPUs 0 and 16 (auto: each node's
/// first core), one device per VM with one MSI-X vector, four other IRQs.
fn root() -> Root {
    let root = common::fast_tempdir();
    let r = root.path();
    put(r, "sys/devices/system/cpu/online", "0-31\n");
    for cpu in 0..32 {
        put(
            r,
            &format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"),
            &format!("{cpu}\n"),
        );
    }
    put(r, "sys/devices/system/node/online", "0-1\n");
    put(r, "sys/devices/system/node/possible", "0-1\n");
    for node in 0..2 {
        let d = format!("sys/devices/system/node/node{node}");
        put(
            r,
            &format!("{d}/cpulist"),
            &format!("{}-{}\n", node * 16, node * 16 + 15),
        );
        put(r, &format!("{d}/compact"), "");
        put(
            r,
            &format!("{d}/meminfo"),
            &format!("Node {node} MemTotal:       67108864 kB\nNode {node} MemFree:        67108864 kB\n"),
        );
        for size in [2048, 1048576] {
            for f in ["nr_hugepages", "free_hugepages", "surplus_hugepages"] {
                put(r, &format!("{d}/hugepages/hugepages-{size}kB/{f}"), "0\n");
            }
        }
    }
    for size in [2048, 1048576] {
        for f in [
            "nr_hugepages",
            "free_hugepages",
            "surplus_hugepages",
            "resv_hugepages",
        ] {
            put(
                r,
                &format!("sys/kernel/mm/hugepages/hugepages-{size}kB/{f}"),
                "0\n",
            );
        }
    }
    put(
        r,
        "proc/meminfo",
        "MemTotal:       134217728 kB\nHugepagesize:       2048 kB\n",
    );
    put(r, "proc/sys/vm/nr_hugepages", "0\n");
    put(
        r,
        "proc/mounts",
        &format!("cgroup /{CPUSET} cgroup rw,relatime,cpuset 0 0\n"),
    );
    for dir in [CPUSET.to_string(), format!("{CPUSET}/kvmtune")] {
        put(r, &format!("{dir}/cpuset.cpus"), "0-31\n");
        put(r, &format!("{dir}/cpuset.mems"), "0-1\n");
        put(r, &format!("{dir}/cgroup.procs"), "");
    }
    put(r, "sys/devices/virtual/workqueue/cpumask", "ffffffff\n");
    put(r, "proc/irq/default_smp_affinity", "ffffffff\n");
    for irq in (10..14).chain((0..VMS).map(|i| 100 + i)) {
        put(r, &format!("proc/irq/{irq}/smp_affinity_list"), "0-31\n");
        put(r, &format!("proc/irq/{irq}/effective_affinity_list"), "0\n");
    }
    for i in 0..VMS {
        let dev = format!("sys/bus/pci/devices/{}", bdf(i));
        put(r, &format!("{dev}/msi_irqs/{}", 100 + i), "msix\n");
        put(r, &format!("{dev}/irq"), "0\n");
    }
    Root {
        root,
        state: common::fast_tempdir(),
    }
}

fn bdf(i: u32) -> String {
    format!("0000:{:02x}:00.0", i + 1)
}

/// VM `i`'s CPU: 1-15, then 17-21 (never the housekeeping 0 and 16).
fn cpu(i: u32) -> u32 {
    if i < 15 {
        i + 1
    } else {
        i + 2
    }
}

fn node(i: u32) -> u32 {
    i % 2
}

fn xml(i: u32) -> String {
    let b = bdf(i);
    format!(
        "<domain type='kvm'><name>vm{i}</name><memory unit='MiB'>{}</memory>\
         <memoryBacking><hugepages/></memoryBacking><vcpu>1</vcpu>\
         <numatune><memory mode='strict' nodeset='{}'/></numatune>\
         <cputune><vcpupin vcpu='0' cpuset='{}'/></cputune>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/><k:irq cpus='vcpus'/></k:tune></metadata>\
         <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
         <address domain='0x0000' bus='0x{}' slot='0x00' function='0x0'/></source></hostdev></devices></domain>",
        PAGES * 2,
        node(i),
        cpu(i),
        &b[5..7]
    )
}

/// Run one hook call of VM `i`; returns its exit status and stderr.
fn hook(r: &Root, i: u32, op: &str, subop: &str) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["hook", &format!("vm{i}"), op, subop, "-"])
        .env_clear()
        .env("KVMTUNE_ROOT", r.root.path())
        .env("KVMTUNE_STATE_DIR", r.state.path().join("kvmtune"))
        .env("KVMTUNE_CONFIG", r.root.path().join("no-policy.toml"))
        // Root with the capabilities kvmtune needs, whoever runs the tests.
        .env("KVMTUNE_PRIVILEGE", "root")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(xml(i).as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(out.stdout.is_empty(), "vm{i} {op} wrote to stdout");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every VM runs `ops` in order, all VMs at once (one thread per VM, each starting processes).
fn in_parallel(r: &Root, ops: &[(&str, &str)]) {
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..VMS)
            .map(|i| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for (op, subop) in ops {
                        let (code, err) = hook(r, i, op, subop);
                        if code != Some(0) {
                            bad.push(format!("vm{i} {op}: exit {code:?}: {}", err.trim()));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

fn snapshot(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(path, path, &mut out);
    out
}

fn read(r: &Root, rel: &str) -> String {
    std::fs::read_to_string(r.root.path().join(rel))
        .unwrap()
        .trim()
        .to_string()
}

fn state_files(r: &Root) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(r.state.path().join("kvmtune"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// All VMs run: the ledger names each, running, with its pages, CPU and device; the pools
/// hold exactly the sum; host tasks are confined to what no VM isolates; every device IRQ is
/// on its VM's CPU and every other IRQ off all of them.
fn assert_all_running(r: &Root, round: u32) {
    let text = std::fs::read_to_string(r.state.path().join("kvmtune/ledger.json")).unwrap();
    let ledger: Ledger = serde_json::from_str(&text).unwrap();
    assert_eq!(
        ledger.vms.len(),
        VMS as usize,
        "round {round}: VMs in the ledger"
    );
    let mut isolated = CpuSet::new();
    for i in 0..VMS {
        let hold = &ledger.vms[&format!("vm{i}")];
        assert_eq!(hold.phase, Phase::Running, "round {round}: vm{i}");
        assert_eq!(hold.hugepages.len(), 1);
        assert_eq!(
            (
                hold.hugepages[0].pool.node,
                hold.hugepages[0].pages,
                hold.hugepages[0].added
            ),
            (node(i), PAGES, PAGES),
            "round {round}: vm{i}'s pages"
        );
        assert_eq!(hold.isolate, CpuSet::from_ids([cpu(i)]));
        assert_eq!(hold.devices, vec![bdf(i).parse().unwrap()]);
        isolated.insert(cpu(i));
        assert_eq!(
            read(r, &format!("proc/irq/{}/smp_affinity_list", 100 + i)),
            cpu(i).to_string(),
            "round {round}: vm{i}'s device IRQ"
        );
    }
    let per_node = u64::from(VMS / 2) * PAGES;
    for n in 0..2 {
        assert_eq!(
            read(
                r,
                &format!("sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages")
            ),
            per_node.to_string(),
            "round {round}: node {n}'s pool is the sum of its VMs' pages"
        );
    }
    let housekeeping = CpuSet::parse("0-31").unwrap().difference(&isolated);
    assert_eq!(
        read(r, &format!("{CPUSET}/kvmtune/cpuset.cpus")),
        housekeeping.to_string(),
        "round {round}: housekeeping cpuset"
    );
    assert_eq!(
        ledger.isolation.as_ref().unwrap().housekeeping,
        housekeeping
    );
    for irq in 10..14 {
        assert_eq!(
            read(r, &format!("proc/irq/{irq}/smp_affinity_list")),
            housekeeping.to_string(),
            "round {round}: IRQ {irq}"
        );
    }
}

#[test]
fn twenty_vms_start_and_stop_in_parallel_round_after_round() {
    let r = root();
    let start = snapshot(r.root.path());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            // All prepare and start together, are checked while all run, then all stop
            // together.
            in_parallel(
                &r,
                &[
                    ("prepare", "begin"),
                    ("start", "begin"),
                    ("started", "begin"),
                ],
            );
            assert_all_running(&r, round);
            // libvirtd restarts: every VM reconnects at once; nothing drifted, nothing changes.
            let running = snapshot(r.root.path());
            in_parallel(&r, &[("reconnect", "begin")]);
            assert_eq!(
                common::diff(&running, &snapshot(r.root.path())),
                Vec::<String>::new(),
                "round {round}: reconnect changed a tuned host"
            );
            in_parallel(&r, &[("stopped", "end"), ("release", "end")]);
        } else {
            // Each VM runs its whole life on its own: starts and stops interleave freely.
            in_parallel(
                &r,
                &[
                    ("prepare", "begin"),
                    ("started", "begin"),
                    ("release", "end"),
                    ("prepare", "begin"),
                    ("started", "begin"),
                    ("release", "end"),
                ],
            );
        }
        assert_eq!(
            common::diff(&start, &snapshot(r.root.path())),
            Vec::<String>::new(),
            "round {round}: host not back to the start"
        );
        assert_eq!(state_files(&r), vec!["lock"], "round {round}");
    }
}
