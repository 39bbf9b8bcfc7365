//! The metrics, read back as a scraper reads them (`common::exposition`): families with HELP
//! and TYPE, names and types per Prometheus' naming guide, label values escaped, values equal
//! to what `kvmtune status --json` reports; the file the watcher writes for node_exporter; the
//! status verdict and its exit code.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::cgroupfs::{Layout, V1_MOUNT};
use common::exposition::{parse, Metrics};
use common::{huge_vm, kernel, Bench, GIB, MIB};
use kvmtune::watch::Watcher;

const BIN: &str = env!("CARGO_BIN_EXE_kvmtune");
const TEXTFILE_DIR: &str = "var/lib/prometheus/node-exporter";
const PAGE_2M: &str = "2097152";
/// A domain name with every character the exposition format escapes.
const ODD: &str = "odd \"vm\" \\ with\nnewline";

fn host() -> Bench {
    Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(Layout::V1)
            .with_irqs(),
    )
    .with_policy("[thp]\nenabled = \"never\"\n")
}

/// A 64 MiB hugepage VM on node 1, vCPU pinned to CPU 3 and isolated, device IRQs on its vCPU.
fn isolated_vm(name: &str) -> String {
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory>\
         <memoryBacking><hugepages/></memoryBacking><vcpu>2</vcpu>\
         <cputune><vcpupin vcpu='0' cpuset='3'/><vcpupin vcpu='1' cpuset='3'/></cputune>\
         <numatune><memory mode='strict' nodeset='1'/></numatune>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/><k:irq cpus='vcpus'/></k:tune></metadata>\
         <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
         <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev></devices></domain>"
    )
}

/// `db1` runs (QEMU is the model's pid 300, with two vCPU threads that waited 1.5 s and
/// 0.25 s for a CPU, and a main thread that does not count); `ODD` is prepared.
fn two_vms(b: &Bench) {
    b.prepare("db1", &isolated_vm("db1")).unwrap();
    b.kernel.cgroups(|c| {
        c.cmdlines.insert(
            300,
            "/usr/bin/qemu-system-x86_64\0-name\0guest=db1,debug-threads=on\0".into(),
        )
    });
    for (tid, comm, schedstat) in [
        (301, "CPU 0/KVM", "5000000 1500000000 120"),
        (302, "CPU 1/KVM", "7000000 250000000 80"),
        (303, "qemu-system-x86", "9000000 999000000 10"),
    ] {
        let dir = format!("proc/300/task/{tid}");
        common::kernel::put(
            b.kernel.path(),
            &format!("{dir}/comm"),
            &format!("{comm}\n"),
        );
        common::kernel::put(
            b.kernel.path(),
            &format!("{dir}/schedstat"),
            &format!("{schedstat}\n"),
        );
    }
    b.kernel.consume(1, 2048, 32);
    b.started("db1").unwrap();
    b.prepare(ODD, &huge_vm("odd", 32, "")).unwrap();
}

fn metrics_of(b: &Bench) -> (kvmtune::status::Status, Metrics) {
    let status = b.status();
    let text = kvmtune::metrics::render(&status);
    let metrics = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (status, metrics)
}

fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

#[test]
fn the_reader_refuses_what_a_scraper_would() {
    assert!(parse("a 1\n").is_err(), "no HELP and TYPE");
    assert!(
        parse("# HELP a x\n# TYPE a gauge\na 1 123\n").is_err(),
        "a timestamp"
    );
    assert!(
        parse("# HELP a x\n# TYPE a gauge\na{b=\"1\"} 1\na{b=\"1\"} 2\n").is_err(),
        "a series twice"
    );
    assert!(parse("# HELP a x\n# TYPE a gauge\na{b=\"1} 1\n").is_err());
    let m = parse("# HELP a x\\ny\n# TYPE a gauge\na{b=\"q\\\"\\\\\\n\"} 2.5\n").unwrap();
    assert_eq!(m.value("a", &[("b", "q\"\\\n")]), Some(2.5));
    assert_eq!(m.family("a").unwrap().help, "x\ny");
}

#[test]
fn every_family_has_help_and_a_type_and_follows_the_naming_guide() {
    let b = host();
    two_vms(&b);
    let (_, m) = metrics_of(&b);
    assert!(m.0.len() >= 20, "{} families", m.0.len());
    for (name, family) in &m.0 {
        assert!(name.starts_with("kvmtune_"), "{name}");
        assert!(!family.help.trim().is_empty(), "{name} has no HELP text");
        match family.kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name}"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name}"),
            other => panic!("{name} is a {other}"),
        }
        // Base units: seconds, not milliseconds or minutes; no "bytes" gauge in other units.
        assert!(
            !name.contains("_milliseconds") && !name.contains("_minutes") && !name.contains("_kib"),
            "{name}"
        );
        assert!(
            !family.samples.is_empty(),
            "{name} is written without samples"
        );
    }
    let wait = m.family("kvmtune_vm_vcpu_wait_seconds_total").unwrap();
    assert!(wait.help.contains("run_delay"), "{}", wait.help);
}

#[test]
fn values_are_what_status_reports() {
    let b = host();
    two_vms(&b);
    let (status, m) = metrics_of(&b);
    // Pools, per node and page size.
    for pool in &status.pools {
        let labels = [
            ("node", &*pool.node.to_string()),
            ("page_size_bytes", &*(pool.page_kib * 1024).to_string()),
        ];
        assert_eq!(
            value(&m, "kvmtune_hugepages_pool_pages", &labels),
            pool.total as f64
        );
        assert_eq!(
            value(&m, "kvmtune_hugepages_pool_free_pages", &labels),
            pool.free as f64
        );
        assert_eq!(
            value(&m, "kvmtune_hugepages_pool_added_pages", &labels),
            pool.added_by_kvmtune as f64
        );
    }
    // A pool's pages added by kvmtune are those added for each VM (db1's 32 and the odd VM's
    // share, spread over both nodes).
    let node1 = [("node", "1"), ("page_size_bytes", PAGE_2M)];
    let per_vm: f64 = m
        .series("kvmtune_vm_hugepages_added_pages", &node1)
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(per_vm > 32.0, "{per_vm}");
    assert_eq!(
        value(&m, "kvmtune_hugepages_pool_added_pages", &node1),
        per_vm
    );
    // What db1 holds.
    let db1 = [("vm", "db1")];
    let held = [("vm", "db1"), ("node", "1"), ("page_size_bytes", PAGE_2M)];
    assert_eq!(value(&m, "kvmtune_vm_hugepages_held_pages", &held), 32.0);
    assert_eq!(value(&m, "kvmtune_vm_hugepages_added_pages", &held), 32.0);
    assert_eq!(value(&m, "kvmtune_vm_isolated_cpus", &db1), 1.0);
    assert_eq!(
        value(&m, "kvmtune_vm_pinned_irqs", &db1),
        3.0,
        "MSI-X 40, 41, INTx 16"
    );
    assert_eq!(
        value(
            &m,
            "kvmtune_vm_info",
            &[("vm", "db1"), ("phase", "running")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "kvmtune_vm_knob_info",
            &[
                ("vm", "db1"),
                ("knob", "/sys/kernel/mm/transparent_hugepage/enabled"),
                ("value", "never")
            ]
        ),
        1.0
    );
    // The vCPU threads' run_delay, in seconds; the main thread is not a vCPU.
    assert_eq!(value(&m, "kvmtune_vm_vcpu_wait_seconds_total", &db1), 1.75);
    // The odd name comes back as it was, through the escapes.
    assert_eq!(
        value(&m, "kvmtune_vm_info", &[("vm", ODD), ("phase", "prepared")]),
        1.0
    );
    assert!(
        m.series("kvmtune_vm_vcpu_wait_seconds_total", &[("vm", ODD)])
            .is_empty(),
        "a prepared VM has no QEMU to read"
    );
    // Isolation and what may still run on isolated CPUs.
    assert_eq!(
        value(&m, "kvmtune_isolation_info", &[("method", "cgroupv1")]),
        1.0
    );
    assert_eq!(value(&m, "kvmtune_isolated_cpus", &[]), 1.0);
    let tasks = |kind| value(&m, "kvmtune_host_tasks_on_isolated_cpus", &[("kind", kind)]);
    assert_eq!(tasks("unconfined"), 0.0);
    assert_eq!(tasks("daemon"), 1.0, "libvirtd, on a cgroupfs host");
    assert_eq!(
        tasks("per_cpu_kernel_thread"),
        1.0,
        "the kworker bound to CPU 3"
    );
    let irqs = |kind| value(&m, "kvmtune_host_irqs_on_isolated_cpus", &[("kind", kind)]);
    assert_eq!(
        (irqs("movable"), irqs("refused")),
        (0.0, 1.0),
        "IRQ 14 is managed"
    );
    // Counters and the verdict.
    for kind in kvmtune::state::stats::RepairKind::ALL {
        assert_eq!(
            value(&m, "kvmtune_watch_repairs_total", &[("kind", kind.name())]),
            0.0
        );
    }
    assert_eq!(
        value(&m, "kvmtune_hugepages_reservation_failures_total", &[]),
        0.0
    );
    assert_eq!(value(&m, "kvmtune_promises_kept", &[]), 1.0);
    assert_eq!(value(&m, "kvmtune_interrupted_operations", &[]), 0.0);
    assert!(
        m.family("kvmtune_watch_last_pass_timestamp_seconds")
            .is_none(),
        "no watcher has looked"
    );
}

#[test]
fn after_a_vm_stops_its_series_are_gone() {
    let b = host();
    two_vms(&b);
    b.kernel.give_back(1, 2048, 32);
    b.kernel.cgroups(|c| c.cmdlines.remove(&300));
    b.release("db1").unwrap();
    b.release(ODD).unwrap();
    let (_, m) = metrics_of(&b);
    let per_vm: Vec<&String> =
        m.0.keys()
            .filter(|n| n.starts_with("kvmtune_vm_"))
            .collect();
    assert!(per_vm.is_empty(), "{per_vm:?}");
    assert_eq!(
        value(&m, "kvmtune_isolation_info", &[("method", "none")]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "kvmtune_hugepages_pool_added_pages",
            &[("node", "1"), ("page_size_bytes", PAGE_2M)]
        ),
        0.0
    );
}

#[test]
fn reservation_failures_and_compactions_are_counted_across_processes() {
    let b = Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]));
    b.kernel
        .with_node(1, |n| n.pinned_fragments = n.free - 1024 * MIB - 512 * MIB);
    let xml = huge_vm("big", 2048, &common::bound("strict", "1"));
    assert!(b.prepare("big", &xml).is_err());
    assert!(b.prepare("big", &xml).is_err());
    let (_, m) = metrics_of(&b);
    assert_eq!(
        value(&m, "kvmtune_hugepages_reservation_failures_total", &[]),
        2.0
    );
    assert_eq!(
        value(&m, "kvmtune_hugepages_compaction_retries_total", &[]),
        f64::from(b.kernel.compactions())
    );
    assert!(b.kernel.compactions() >= 2);
}

/// A config file for the binary: the policy `host()` uses.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kvmtune.toml");
    std::fs::write(&path, "[thp]\nenabled = \"never\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn kvmtune(b: &Bench, config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("KVMTUNE_ROOT", b.kernel.path())
        .env("KVMTUNE_STATE_DIR", common::state_path(b))
        .env("KVMTUNE_CONFIG", config)
        .output()
        .unwrap()
}

/// The watcher writes kvmtune.prom into the textfile directory (world-readable, no temp file
/// left), and `kvmtune status --format prometheus` prints the very same text.
#[test]
fn the_watcher_writes_kvmtune_prom_and_status_prints_the_same_text() {
    let b = host();
    let dir = b.kernel.path().join(TEXTFILE_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    two_vms(&b);
    let mut w = Watcher::new();
    let pass = b.watch(&mut w).unwrap();
    assert!(pass.metrics);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["kvmtune.prom".to_string()], "no temp file left");
    let file = dir.join("kvmtune.prom");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter runs as its own user");
    let written = std::fs::read_to_string(&file).unwrap();
    let m = parse(&written).unwrap();
    let last = value(&m, "kvmtune_watch_last_pass_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - last >= 0.0 && now - last < 600.0, "{last} vs {now}");
    assert_eq!(value(&m, "kvmtune_vm_isolated_cpus", &[("vm", "db1")]), 1.0);

    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let out = kvmtune(&b, &cfg, &["status", "--format", "prometheus"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), written);
}

#[test]
fn a_missing_textfile_directory_is_skipped_and_not_created() {
    let b = host();
    two_vms(&b);
    let mut w = Watcher::new();
    let pass = b.watch(&mut w).unwrap();
    assert!(pass.metrics, "gathered all the same");
    assert!(!b.kernel.path().join(TEXTFILE_DIR).exists());
    assert!(!b.kernel.path().join("var").exists());
}

#[test]
fn a_vm_started_or_stopped_rewrites_the_file_at_the_next_look() {
    let b = host();
    let dir = b.kernel.path().join(TEXTFILE_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = Watcher::new();
    assert!(b.watch(&mut w).unwrap().metrics, "the first look writes");
    assert!(
        !b.watch(&mut w).unwrap().metrics,
        "then every metrics.interval"
    );
    two_vms(&b);
    assert!(b.watch(&mut w).unwrap().metrics, "VMs came");
    let m = parse(&std::fs::read_to_string(dir.join("kvmtune.prom")).unwrap()).unwrap();
    assert_eq!(m.series("kvmtune_vm_info", &[]).len(), 2);
}

/// The verdict: exit 0 and "all promises kept" while they are; a host process born on the
/// isolated CPU (no watcher to sweep it) makes it exit 1, name it on the first line, in
/// `--json`, and in the metrics.
#[test]
fn status_says_in_one_line_whether_every_promise_holds_and_exits_accordingly() {
    let b = host();
    two_vms(&b);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let out = kvmtune(&b, &cfg, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().next(), Some("Verdict: all promises kept"));

    b.kernel.cgroups(|c| {
        let mut late = c.tasks[&100].clone();
        late.comm = "late".into();
        late.cgroup = V1_MOUNT.into();
        c.tasks.insert(500, late);
    });
    let out = kvmtune(&b, &cfg, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("Verdict: 1 promise(s) not kept: isolation: ")
            && first.contains("pid 500 \"late\""),
        "{first}"
    );
    let out = kvmtune(&b, &cfg, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"]["kept"], false);
    assert_eq!(json["verdict"]["broken"][0]["promise"], "isolation");
    assert_eq!(json["vms"][0]["name"], "db1", "the same data as before");
    let out = kvmtune(&b, &cfg, &["status", "--format", "prometheus"]);
    assert_eq!(out.status.code(), Some(1));
    let m = parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(value(&m, "kvmtune_promises_kept", &[]), 0.0);
    assert_eq!(
        value(&m, "kvmtune_promises_broken", &[("promise", "isolation")]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "kvmtune_host_tasks_on_isolated_cpus",
            &[("kind", "unconfined")]
        ),
        1.0
    );
}

#[test]
fn a_running_vm_without_qemu_is_a_broken_promise_until_released() {
    let b = host();
    two_vms(&b);
    b.kernel.cgroups(|c| c.cmdlines.remove(&300));
    let status = b.status();
    assert!(!status.verdict.kept);
    assert_eq!(status.verdict.count(kvmtune::status::Promise::GoneVm), 1);
    assert!(
        kvmtune::status::render(&status).contains("its QEMU is gone"),
        "{}",
        kvmtune::status::render(&status)
    );
    let mut w = Watcher::new();
    let t0 = std::time::Instant::now();
    b.watch_at(&mut w, t0).unwrap();
    b.watch_at(&mut w, t0 + kvmtune::watch::look::GONE_GRACE)
        .unwrap();
    let status = b.status();
    assert!(status.verdict.kept, "{:?}", status.verdict);
    assert_eq!(status.counters.repairs["gone_vm"], 1);
}
