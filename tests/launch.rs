//! `kvmtune run` and the emulator mode as users and libvirt run them, with real processes for
//! QEMU (small shell scripts that report what they see) and a fake root of plain files for the
//! host (the binary writes the pool files; there is no kernel model here: these tests are
//! about the lifecycle, the signals, the exit codes and what reaches QEMU).

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::kernel::put;
use common::{diff, huge_vm, kernel, FakeKernel, GIB};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtune");
const POOL: &str = "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";

struct Host {
    kernel: FakeKernel,
    tmp: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let h = Host {
            kernel: kernel(&[(4 * GIB, "0-1")]),
            tmp: tempfile::tempdir().unwrap(),
        };
        put(
            h.kernel.path(),
            "proc/mounts",
            "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n",
        );
        h
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn pool_file(&self) -> PathBuf {
        self.kernel.path().join(POOL)
    }

    fn pool(&self) -> String {
        std::fs::read_to_string(self.pool_file())
            .unwrap()
            .trim()
            .to_string()
    }

    /// A stand-in for QEMU: a shell script with `body`, which may use $POOL (the pool file),
    /// $OUT (a file for what it saw) and $READY (touched once it runs).
    fn qemu(&self, body: &str) -> PathBuf {
        let path = self.path("fake-qemu");
        let script = format!(
            "#!/bin/sh\nPOOL='{}'\nOUT='{}'\nREADY='{}'\n{body}\n",
            self.pool_file().display(),
            self.path("out").display(),
            self.path("ready").display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn out(&self) -> String {
        std::fs::read_to_string(self.path("out")).unwrap_or_default()
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("KVMTUNE_ROOT", self.kernel.path())
            .env("KVMTUNE_STATE_DIR", self.path("state"))
            .env("KVMTUNE_CONFIG", self.path("kvmtune.toml"))
            // Root with the capabilities kvmtune needs, whoever runs the tests.
            .env("KVMTUNE_PRIVILEGE", "root")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Start kvmtune with the signals it forwards at their defaults, as from a terminal: a
        // test runner started in the background (`cmd &`, nohup) passes INT, QUIT and HUP on
        // as ignored, and an ignored signal is discarded before the wrapper could pass it on.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        c
    }

    fn kvmtune(&self, args: &[&str]) -> Output {
        self.command(Path::new(BIN), args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(Path::new(BIN), args).spawn().unwrap()
    }

    fn xml(&self, text: &str) -> String {
        let path = self.path("vm.xml");
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// What kvmtune keeps for VMs (journals, ledger), besides the lock.
    fn state_files(&self) -> Vec<String> {
        std::fs::read_dir(self.path("state"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lock")
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_ready(&self, child: &mut Child) {
        let begun = Instant::now();
        while !self.path("ready").exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("kvmtune ended before QEMU was ready: {status}");
            }
            assert!(
                begun.elapsed() < Duration::from_secs(20),
                "QEMU never got ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

#[test]
fn run_reserves_before_qemu_restores_after_and_passes_its_exit_code() {
    let h = Host::new();
    let qemu = h.qemu("cat \"$POOL\" > \"$OUT\"; exit 3");
    let xml = h.xml(&huge_vm("vm1", 64, ""));
    let out = h.kvmtune(&[
        "run",
        "--xml",
        &xml,
        "--",
        qemu.to_str().unwrap(),
        "-nographic",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        h.out().trim(),
        "32",
        "QEMU saw the pool grown by the VM's 64 MiB"
    );
    assert_eq!(h.pool(), "0");
    assert_eq!(h.state_files(), Vec::<String>::new());
}

#[test]
fn without_xml_the_needs_come_from_qemus_arguments() {
    let h = Host::new();
    let qemu = h.qemu("{ cat \"$POOL\"; echo; echo \"$@\"; } > \"$OUT\"");
    let out = h.kvmtune(&[
        "run",
        "--",
        qemu.to_str().unwrap(),
        "-m",
        "128",
        "-object",
        "memory-backend-file,id=ram,size=128M,mem-path=/dev/hugepages,share=on,host-nodes=0,policy=bind",
        "-machine",
        "none,memory-backend=ram",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = h.out();
    let mut lines = seen.lines();
    assert_eq!(lines.next(), Some("64"));
    // QEMU's arguments reach it untouched; -name is added so `recover` can find the VM.
    let args = lines.next().unwrap();
    assert!(
        args.starts_with("-m 128 -object memory-backend-file,id=ram,size=128M,mem-path=/dev/hugepages,share=on,host-nodes=0,policy=bind -machine none,memory-backend=ram -name guest=qemu-"),
        "{args}"
    );
    assert_eq!(h.pool(), "0");
}

#[test]
fn a_refused_prepare_starts_no_qemu_and_changes_nothing() {
    let h = Host::new();
    let qemu = h.qemu("touch \"$OUT\"");
    let xml = h.xml(&huge_vm("big", 64 * 1024, ""));
    let start = h.kernel.snapshot();
    let out = h.kvmtune(&["run", "--xml", &xml, "--", qemu.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("kvmtune: VM 'big'"), "{err}");
    assert!(!h.path("out").exists(), "QEMU was started");
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
    assert_eq!(h.state_files(), Vec::<String>::new());
}

#[test]
fn bad_usage_is_refused_before_anything_happens() {
    let h = Host::new();
    let qemu = h.qemu("touch \"$OUT\"");
    let q = qemu.to_str().unwrap();
    for (args, says) in [
        (vec!["run", "--", q, "-daemonize"], "-daemonize"),
        (vec!["run", "--", q, "-m", "lots"], "-m 'lots'"),
        (vec!["run", "--", "/nonexistent/qemu"], "/nonexistent/qemu"),
        (vec!["run", "--name", "a", "--", q, "-name", "b"], "'b'"),
        (vec!["run", "--isolate", "3-1", "--", q], "3-1"),
    ] {
        let out = h.kvmtune(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert!(!h.path("out").exists(), "QEMU was started");
    assert_eq!(h.pool(), "0");
}

#[test]
fn signals_reach_qemu_and_its_exit_becomes_kvmtunes() {
    for (sig, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
    ] {
        let h = Host::new();
        let qemu = h.qemu(&format!(
            "trap 'echo {name} > \"$OUT\"; exit 7' {name}\ntouch \"$READY\"\nwhile :; do sleep 0.05; done"
        ));
        let xml = h.xml(&huge_vm("vm1", 32, ""));
        let mut child = h.spawn(&["run", "--xml", &xml, "--", qemu.to_str().unwrap()]);
        h.wait_ready(&mut child);
        assert_eq!(h.pool(), "16");
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(7), "{name}: {}", stderr(&out));
        assert_eq!(h.out().trim(), name);
        assert_eq!(h.pool(), "0", "{name}");
    }
}

#[test]
fn qemu_killed_by_a_signal_gives_128_plus_the_signal() {
    let h = Host::new();
    let qemu = h.qemu("kill -KILL $$");
    let xml = h.xml(&huge_vm("vm1", 32, ""));
    let out = h.kvmtune(&["run", "--xml", &xml, "--", qemu.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert_eq!(h.pool(), "0");
}

#[test]
fn a_killed_wrapper_stops_qemu_and_recover_releases() {
    let h = Host::new();
    let qemu = h.qemu(
        "trap 'echo TERM > \"$OUT\"; exit 0' TERM\ntouch \"$READY\"\nwhile :; do sleep 0.05; done",
    );
    let xml = h.xml(&huge_vm("vm1", 32, ""));
    let mut child = h.spawn(&["run", "--xml", &xml, "--", qemu.to_str().unwrap()]);
    h.wait_ready(&mut child);
    // Killed while it waits for QEMU, after the started step (the ledger says running).
    let begun = Instant::now();
    while !std::fs::read_to_string(h.path("state/ledger.json"))
        .unwrap_or_default()
        .contains("\"running\"")
    {
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "started never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let begun = Instant::now();
    while h.out().trim() != "TERM" {
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "QEMU was not told to stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(h.pool(), "16", "nothing released yet");
    assert!(h.state_files().contains(&"ledger.json".to_string()));
    let out = h.kvmtune(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("released \"vm1\""));
    assert_eq!(h.pool(), "0");
    assert_eq!(h.state_files(), Vec::<String>::new());
}

#[test]
fn a_vm_name_already_running_is_refused() {
    let h = Host::new();
    // Another process (as /proc under the root shows it) runs QEMU for VM 'db1'.
    put(
        h.kernel.path(),
        "proc/4242/cmdline",
        "/usr/bin/qemu-system-x86_64\0-name\0guest=db1,debug-threads=on\0",
    );
    let qemu = h.qemu("touch \"$OUT\"");
    let out = h.kvmtune(&[
        "run",
        "--name",
        "db1",
        "--",
        qemu.to_str().unwrap(),
        "-m",
        "64",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pid 4242"), "{}", stderr(&out));
    assert!(!h.path("out").exists());
}

/// The emulator as libvirt runs it: argv[0] `qemu-system-x86_64` or `kvmtune-qemu`, the real
/// QEMU from the policy. The stand-in reports its arguments and its memory policy (the first
/// mapping of its numa_maps shows the process policy).
fn emulator(h: &Host, argv0: &str, args: &[&str]) -> Output {
    let real =
        h.qemu("echo \"$@\" > \"$OUT\"; head -1 /proc/self/numa_maps | cut -d' ' -f2 >> \"$OUT\"");
    std::fs::write(
        h.path("kvmtune.toml"),
        format!("[emulator]\nqemu = \"{}\"\n", real.display()),
    )
    .unwrap();
    let link = h.path(argv0);
    let _ = std::fs::remove_file(&link);
    symlink(BIN, &link).unwrap();
    h.command(&link, args).output().unwrap()
}

#[test]
fn emulator_passes_probes_through_untouched() {
    let h = Host::new();
    let probe = [
        "-S",
        "-no-user-config",
        "-nodefaults",
        "-nographic",
        "-machine",
        "none,accel=kvm:tcg",
        "-qmp",
        "unix:/tmp/x.sock,server=on,wait=off",
        "-name-not-an-option",
        "a  b",
    ];
    let out = emulator(&h, "kvmtune-qemu", &probe);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = h.out();
    let mut lines = seen.lines();
    assert_eq!(lines.next(), Some(probe.join(" ").as_str()));
    assert_eq!(lines.next(), Some("default"));
}

#[test]
fn emulator_gives_a_launch_the_vms_memory_policy() {
    let h = Host::new();
    let launch = [
        "-name",
        "guest=vm1,debug-threads=on",
        "-machine",
        "pc,memory-backend=pc.ram",
        "-m",
        "64",
        "-object",
        r#"{"qom-type":"memory-backend-ram","id":"pc.ram","size":67108864,"host-nodes":[0],"policy":"bind"}"#,
    ];
    let out = emulator(&h, "qemu-system-x86_64", &launch);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = h.out();
    assert_eq!(seen.lines().nth(1), Some("bind:0"), "{seen}");
    assert!(seen.starts_with("-name guest=vm1"), "{seen}");
}

#[test]
fn emulator_without_a_real_qemu_says_so() {
    let h = Host::new();
    std::fs::write(
        h.path("kvmtune.toml"),
        "[emulator]\nqemu = \"/nonexistent/qemu\"\n",
    )
    .unwrap();
    let link = h.path("kvmtune-qemu");
    symlink(BIN, &link).unwrap();
    let out = h.command(&link, &["-version"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/qemu"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);
}

#[test]
fn qemus_status_is_seen_even_when_sigchld_was_ignored_by_our_parent() {
    use std::os::unix::process::CommandExt;
    let h = Host::new();
    let qemu = h.qemu("exit 5");
    let mut c = h.command(
        Path::new(BIN),
        &["run", "--name", "vm1", "--", qemu.to_str().unwrap()],
    );
    // SAFETY: only a system call between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}
