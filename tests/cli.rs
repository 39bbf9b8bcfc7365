//! The binary as libvirt and users run it: argv[0] dispatch, exit codes, what goes to stdout
//! and stderr, hostile names and input. The root is a fake tree of plain files (no kernel
//! model: these tests are about the contract, the golden trees about the kernel).

mod common;

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{diff, huge_vm, kernel, FakeKernel, GIB};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtune");

struct Host {
    kernel: FakeKernel,
    tmp: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            kernel: kernel(&[(4 * GIB, "0-1")]),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("kvmtune.toml")
    }

    /// Run `program args…` with the roots in the environment and `stdin` fed in, as root with
    /// the capabilities kvmtune needs, whoever runs the tests.
    fn run(&self, program: &Path, args: &[&str], stdin: &[u8]) -> Output {
        self.run_as(Some("root"), program, args, stdin)
    }

    /// `kvmtune plan --xml XML` with `extra` arguments after.
    fn plan(&self, xml: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["plan", "--xml", xml.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(Path::new(BIN), &args, b"")
    }

    /// The same with `privilege` as `KVMTUNE_PRIVILEGE` (`None`: the kernel decides).
    fn run_as(
        &self,
        privilege: Option<&str>,
        program: &Path,
        args: &[&str],
        stdin: &[u8],
    ) -> Output {
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("KVMTUNE_ROOT", self.kernel.path())
            .env("KVMTUNE_STATE_DIR", self.state())
            .env("KVMTUNE_CONFIG", self.config());
        if let Some(p) = privilege {
            command.env("KVMTUNE_PRIVILEGE", p);
        }
        let mut child = command
            .current_dir(self.tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        // The hook may refuse early and close stdin; libvirt copes with that too.
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn hook(&self, args: &[&str], stdin: &str) -> Output {
        let mut full = vec!["hook"];
        full.extend_from_slice(args);
        self.run(Path::new(BIN), &full, stdin.as_bytes())
    }

    fn pool(&self) -> String {
        std::fs::read_to_string(
            self.kernel
                .path()
                .join("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"),
        )
        .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn argv0_named_qemu_or_inside_qemu_d_is_hook_mode() {
    let h = Host::new();
    let qemu = h.tmp.path().join("qemu");
    symlink(BIN, &qemu).unwrap();
    std::fs::create_dir(h.tmp.path().join("qemu.d")).unwrap();
    let in_dir = h.tmp.path().join("qemu.d/50-kvmtune");
    symlink(BIN, &in_dir).unwrap();

    let xml = huge_vm("a", 64, "");
    let out = h.run(&qemu, &["a", "prepare", "begin", "-"], xml.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(h.pool().trim(), "32");
    let out = h.run(&in_dir, &["a", "release", "end", "-"], xml.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(h.pool().trim(), "0");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_xml_fails_prepare_with_one_line_and_changes_nothing() {
    let h = Host::new();
    let start = h.kernel.snapshot();
    for xml in [
        "<!DOCTYPE d [<!ENTITY e 'x'>]><domain><name>&e;</name></domain>",
        "<domain><name>a</name><memory>",
        "",
    ] {
        let out = h.hook(&["a", "prepare", "begin", "-"], xml);
        assert_eq!(out.status.code(), Some(1), "{xml}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("kvmtune: "), "{err}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
}

#[test]
fn too_much_stdin_is_refused() {
    let h = Host::new();
    let big = format!("<domain><name>a</name>{}</domain>", " ".repeat(5 << 20));
    let out = h.hook(&["a", "prepare", "begin", "-"], &big);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
}

#[test]
fn hostile_domain_names_are_plain_data() {
    let h = Host::new();
    let long = "n".repeat(10 * 1024);
    for name in [
        "--help",
        "..",
        "a;b",
        "$(touch pwned)",
        "new\nline",
        long.as_str(),
        "-",
    ] {
        let out = h.hook(&[name, "prepare", "begin", "-"], &huge_vm("x", 64, ""));
        assert!(out.status.success(), "{name:?}: {}", stderr(&out));
        assert_eq!(h.pool().trim(), "32", "{name:?}");
        let out = h.hook(&[name, "release", "end", "destroyed"], "");
        assert!(out.status.success(), "{name:?}: {}", stderr(&out));
        assert_eq!(h.pool().trim(), "0", "{name:?}");
    }
    assert!(!h.tmp.path().join("pwned").exists());
    let mut left: Vec<String> = std::fs::read_dir(h.state())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["lock"]);
}

#[test]
fn migrate_and_restore_print_nothing_and_succeed() {
    let h = Host::new();
    for op in ["migrate", "restore"] {
        let out = h.hook(&["a", op, "begin", "-"], &huge_vm("a", 64, ""));
        assert!(out.status.success());
        assert!(out.stdout.is_empty(), "{op} printed {:?}", out.stdout);
    }
}

#[test]
fn release_and_reconnect_exit_0_even_when_broken() {
    let h = Host::new();
    std::fs::write(h.config(), "[nonsense]\n").unwrap();
    for (op, sub) in [
        ("release", "end"),
        ("reconnect", "begin"),
        ("stopped", "end"),
    ] {
        let out = h.hook(&["a", op, sub, "-"], "<domain/>");
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
    }
    let out = h.hook(&["a", "prepare", "begin", "-"], &huge_vm("a", 64, ""));
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad policy is a configuration error"
    );
    assert!(stderr(&out).contains("nonsense"), "{}", stderr(&out));
}

#[test]
fn a_policy_broken_while_a_vm_runs_does_not_keep_its_pages() {
    // The binary as libvirt runs it: release (and recover) give back from the ledger, say
    // what is wrong with the policy, and exit 0. (tests/broken_policy.rs: every resource.)
    for last in ["release", "recover"] {
        let h = Host::new();
        let start = h.kernel.snapshot();
        let xml = huge_vm("a", 64, "");
        let out = h.hook(&["a", "prepare", "begin", "-"], &xml);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(h.pool().trim(), "32");
        std::fs::write(h.config(), "[hugepages]\ntimeout = \"soon\"\n").unwrap();
        let out = if last == "release" {
            h.hook(&["a", "release", "end", "destroyed"], &xml)
        } else {
            h.run(Path::new(BIN), &["recover", "a"], b"")
        };
        assert_eq!(out.status.code(), Some(0), "{last}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.lines().count() == 1 && err.contains("hugepages.timeout"),
            "{last}: {err}"
        );
        assert_eq!(h.pool().trim(), "0", "{last}");
        assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
        assert!(!h.state().join("ledger.json").exists(), "{last}");
    }
}

#[test]
fn wrong_argument_count_is_usage_error() {
    let h = Host::new();
    let out = h.hook(&["a", "prepare"], "");
    assert_eq!(out.status.code(), Some(2));
    let out = h.run(Path::new(BIN), &["frobnicate"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_and_version_exit_0() {
    let h = Host::new();
    for args in [
        &["--help"][..],
        &["--version"],
        &["plan", "--help"],
        &["status", "--help"],
        &["recover", "--help"],
    ] {
        let out = h.run(Path::new(BIN), args, b"");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn plan_changes_nothing_and_reports_json() {
    let h = Host::new();
    let xml_path = h.tmp.path().join("vm.xml");
    std::fs::write(&xml_path, huge_vm("planned", 128, "")).unwrap();
    let start = h.kernel.snapshot();
    let out = h.plan(&xml_path, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["vm"], "planned");
    assert_eq!(plan["hugepages"][0]["grow"], 64);
    // Every change, as the journal records it: here the one pool growth, nothing at started.
    assert_eq!(plan["prepare"][0]["kind"], "file");
    assert_eq!(plan["prepare"][0]["after"], "64");
    assert_eq!(plan["prepare"].as_array().map(Vec::len), Some(1));
    assert_eq!(plan["started"], serde_json::json!([]));
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
    assert!(!h.state().exists(), "plan must not create state");
    let out = h.plan(&xml_path, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("grow by 64")
            && text.contains("  prepare: 1 change, as its journal will record them:\n")
            && text.contains("nr_hugepages: 0 -> 64\n  started: no change\n"),
        "{text}"
    );
}

/// For a VM with isolation, a passthrough device and KSM off on a kernel-modelled host, the
/// plan lists and counts the changes of both steps (`plan_journal.rs` holds them equal to the
/// journals), says where they can differ, and leaves the host and the state as they were.
#[test]
fn plan_counts_and_lists_every_change_of_prepare_and_started_and_writes_nothing() {
    let s = common::scenarios::scenario("05-isolated-device-ksm");
    let h = Host {
        kernel: s.bench.kernel,
        tmp: tempfile::tempdir().unwrap(),
    };
    let xml_path = h.tmp.path().join("vm.xml");
    std::fs::write(&xml_path, &s.xml).unwrap();
    let start = h.kernel.snapshot();

    let out = h.plan(&xml_path, &[]);

    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "  prepare: 6 changes, as its journal will record them:\n    change: /sys/kernel/mm/ksm/run: 1 -> 0\n",
        "    change: create cgroup /sys/fs/cgroup/cpuset/kvmtune, cpuset.mems = 0, cpuset.cpus = 0-2\n",
        "    change: /sys/devices/virtual/workqueue/cpumask: f -> 7\n",
        "  started: 10 changes, once QEMU runs; its journal records them:\n",
        "    change: /proc/irq/40/smp_affinity_list: 0-3 -> 3\n",
        "an IRQ the kernel manages refuses to move",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
    assert!(!h.state().exists(), "plan must not create state");
}

#[test]
fn status_shows_what_each_vm_holds() {
    let h = Host::new();
    let out = h.hook(&["db1", "prepare", "begin", "-"], &huge_vm("db1", 64, ""));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = h.run(Path::new(BIN), &["status", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["vms"][0]["name"], "db1");
    assert_eq!(status["vms"][0]["phase"], "prepared");
    assert_eq!(status["vms"][0]["hugepages"][0]["added"], 32);
    let pool = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["page_kib"] == 2048)
        .unwrap();
    assert_eq!(pool["added_by_kvmtune"], 32);
    assert_eq!(pool["baseline"], 0);
    let out = h.run(Path::new(BIN), &["status"], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"db1\" (prepared)"));
}

#[test]
fn flags_win_over_environment() {
    let h = Host::new();
    let other = tempfile::tempdir().unwrap();
    let out = h.run(
        Path::new(BIN),
        &[
            "--state-dir",
            other.path().join("s").to_str().unwrap(),
            "hook",
            "a",
            "prepare",
            "begin",
            "-",
        ],
        huge_vm("a", 64, "").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(other.path().join("s/ledger.json").exists());
    assert!(!h.state().join("ledger.json").exists());
}

#[test]
fn unsafe_state_dir_is_refused() {
    let h = Host::new();
    let target = tempfile::tempdir().unwrap();
    symlink(target.path(), h.state()).unwrap();
    let out = h.hook(&["a", "prepare", "begin", "-"], &huge_vm("a", 64, ""));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert_eq!(h.pool().trim(), "0");
}

#[test]
fn an_unprivileged_caller_does_nothing() {
    // libvirt's session daemon runs the hook as its user: every operation exits 0, reads no
    // state and changes nothing.
    let h = Host::new();
    let start = h.kernel.snapshot();
    let xml = huge_vm("a", 64, "");
    for op in ["prepare", "started", "release"] {
        let out = h.run_as(
            Some("user"),
            Path::new(BIN),
            &["hook", "a", op, "begin", "-"],
            xml.as_bytes(),
        );
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
        assert!(out.stderr.is_empty() && out.stdout.is_empty(), "{op}");
    }
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
    assert!(!h.state().exists());
}

#[test]
fn without_a_model_the_kernel_says_who_runs_kvmtune() {
    // Whoever runs the tests: as root the hook tunes the fake root, as anyone else it does
    // nothing, exactly as the model of each says.
    let h = Host::new();
    let xml = huge_vm("a", 64, "");
    let out = h.run_as(
        None,
        Path::new(BIN),
        &["hook", "a", "prepare", "begin", "-"],
        xml.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tuned = nix::unistd::geteuid().is_root();
    assert_eq!(h.pool().trim(), if tuned { "32" } else { "0" });
    assert_eq!(h.state().exists(), tuned);
}

#[test]
fn a_modelled_privilege_is_refused_on_the_real_root_and_when_malformed() {
    let h = Host::new();
    let mut command = Command::new(BIN);
    let out = command
        .args(["status"])
        .env_clear()
        .env("KVMTUNE_ROOT", "/")
        .env("KVMTUNE_STATE_DIR", h.state())
        .env("KVMTUNE_CONFIG", h.config())
        .env("KVMTUNE_PRIVILEGE", "root")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KVMTUNE_PRIVILEGE"),
        "{}",
        stderr(&out)
    );
    let out = h.run_as(
        Some("admin"),
        Path::new(BIN),
        &["hook", "a", "prepare", "begin", "-"],
        huge_vm("a", 64, "").as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("'admin'"), "{}", stderr(&out));
    assert!(!h.state().exists());
}

#[test]
fn failures_reach_syslog_at_facility_daemon() {
    let h = Host::new();
    let socket_path = h.kernel.path().join("dev/log");
    std::fs::create_dir_all(socket_path.parent().unwrap()).unwrap();
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let out = h.hook(
        &["db1", "prepare", "begin", "-"],
        &huge_vm("db1", 64 * 1024, ""),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]);
    // <27> = facility daemon (3) * 8 + severity err (3).
    assert!(
        msg.starts_with("<27>") && msg.contains("kvmtune") && msg.contains("db1"),
        "{msg}"
    );
}

#[test]
fn plan_and_status_show_host_knobs_and_an_unknown_thp_word_is_a_configuration_error() {
    let h = Host::new();
    let xml_path = h.tmp.path().join("vm.xml");
    std::fs::write(
        &xml_path,
        "<domain><name>k</name><memory unit='MiB'>64</memory></domain>",
    )
    .unwrap();
    std::fs::write(h.config(), "[thp]\nenabled = \"never\"\nfor = [\"all\"]\n").unwrap();
    let out = h.plan(&xml_path, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  knob: /sys/kernel/mm/transparent_hugepage/enabled = never while the VM runs (thp.for: all; now always)\n"),
        "{text}"
    );

    std::fs::write(
        h.config(),
        "[thp]\nenabled = \"sometimes\"\nfor = [\"all\"]\n",
    )
    .unwrap();
    let start = h.kernel.snapshot();
    let out = h.hook(
        &["k", "prepare", "begin", "-"],
        &std::fs::read_to_string(&xml_path).unwrap(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "kvmtune: VM 'k' wants /sys/kernel/mm/transparent_hugepage/enabled = sometimes (thp.for: all), but the kernel offers only always, madvise, never\n"
    );
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());

    let out = h.run(Path::new(BIN), &["status"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Host knobs:\n  KSM: run 0, merge_across_nodes 1, 0 page(s) shared, 0 sharing\n  THP: enabled always, defrag madvise\n  none held by kvmtune\n"),
        "{text}"
    );
}

#[test]
fn watch_is_listed_and_its_old_name_irq_watch_still_answers() {
    let h = Host::new();
    let help = h.run(Path::new(BIN), &["--help"], b"");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("\n  watch "), "{text}");
    assert!(
        !text.contains("irq-watch"),
        "the old name is hidden: {text}"
    );
    for name in ["watch", "irq-watch"] {
        let out = h.run(Path::new(BIN), &[name, "--help"], b"");
        assert_eq!(out.status.code(), Some(0), "{name}");
    }
    // It changes the host: another user is refused before anything is read.
    let out = h.run_as(Some("user"), Path::new(BIN), &["watch", "--once"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("must run as root"),
        "{}",
        stderr(&out)
    );
}

/// Each repair is one syslog line (facility daemon), and `--once` prints it too. The repair
/// here: someone shrank the pool kvmtune grew for a running VM (the fake root's plain files,
/// changed as modelled root).
#[test]
fn a_repair_of_watch_is_one_syslog_line() {
    let h = Host::new();
    let xml = huge_vm("db1", 64, "");
    assert!(h
        .hook(&["db1", "prepare", "begin", "-"], &xml)
        .status
        .success());
    assert!(h
        .hook(&["db1", "started", "begin", "-"], &xml)
        .status
        .success());
    assert_eq!(h.pool().trim(), "32");
    let nr = h
        .kernel
        .path()
        .join("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages");
    std::fs::write(&nr, "8\n").unwrap();
    let socket_path = h.kernel.path().join("dev/log");
    std::fs::create_dir_all(socket_path.parent().unwrap()).unwrap();
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    let out = h.run(Path::new(BIN), &["watch", "--once"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(h.pool().trim(), "32", "grown back");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("watch: hugepages: "), "{stdout}");
    // The process has exited: everything it logged is queued.
    socket.set_nonblocking(true).unwrap();
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let repairs: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("watch: hugepages"))
        .collect();
    assert_eq!(repairs.len(), 1, "{lines:?}");
    // <28> = facility daemon (3) * 8 + severity warning (4).
    assert!(repairs[0].starts_with("<28>"), "{}", repairs[0]);
    // The VM runs in the ledger, but no QEMU names it: one look cannot know it has been gone
    // long enough (libvirt may be about to release it), so it is left to a running watcher.
    assert!(!stdout.contains("gone_vm"));
}
