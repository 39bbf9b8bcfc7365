//! `kvmtune balance` as a program: its command line, what it prints, the `virsh` calls it
//! makes, exit codes, and SIGTERM. libvirt is a fake `virsh` script on PATH that serves one
//! guest and records every `setmem`; the host is a fake `proc/meminfo` under `--root`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtune");
const GIB_KIB: u64 = 1 << 20;

struct World {
    tmp: tempfile::TempDir,
}

/// The fake virsh: `list --uuid`, `dumpxml --domain U`, `dommemstat --domain U`,
/// `setmem --domain U --size NKiB --live` (appends its argv to `setmem.log` and makes the
/// guest's `actual` follow). Anything else fails as virsh does.
const VIRSH: &str = r#"#!/bin/sh
dir=$(dirname "$0")
[ -e "$dir/down" ] && { echo "error: failed to connect to the hypervisor" >&2; exit 1; }
[ "$1" = -q ] && [ "$2" = -c ] || { echo "error: expected -q -c URI, got $*" >&2; exit 1; }
echo "$3" > "$dir/uri"
shift 3
case "$1" in
  list) [ "$2" = --uuid ] && echo 0f0e0d0c-0000-4000-8000-000000000001 && echo ;;
  dumpxml) cat "$dir/domain.xml" ;;
  dommemstat)
    printf 'actual %s\nunused %s\navailable %s\nlast_update %s\nrss 100\n' \
      "$(cat "$dir/actual")" 3145728 4000000 "$(date +%s)" ;;
  setmem)
    echo "$*" >> "$dir/setmem.log"
    echo "$5" | sed 's/KiB$//' > "$dir/actual" ;;
  *) echo "error: unknown command '$1'" >&2; exit 1 ;;
esac
"#;

impl World {
    fn new(policy: &str) -> World {
        let w = World {
            tmp: tempfile::tempdir().unwrap(),
        };
        let bin = w.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("virsh"), VIRSH).unwrap();
        std::fs::set_permissions(bin.join("virsh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(
            bin.join("domain.xml"),
            "<domain type='qemu' id='3'><name>web</name><memory unit='GiB'>4</memory>\
             <metadata><kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'>\
             <kvmtune:balloon min='1GiB' max='4GiB'/></kvmtune:tune></metadata>\
             <devices><memballoon model='virtio'><stats period='2'/></memballoon></devices></domain>",
        )
        .unwrap();
        std::fs::write(bin.join("actual"), format!("{}\n", 4 * GIB_KIB)).unwrap();
        std::fs::create_dir_all(w.path("root/proc")).unwrap();
        // 32 GiB host, 1 GiB available.
        std::fs::write(
            w.path("root/proc/meminfo"),
            "MemTotal:       33554432 kB\nMemFree:          524288 kB\nMemAvailable:    1048576 kB\n",
        )
        .unwrap();
        std::fs::write(w.path("kvmtune.toml"), policy).unwrap();
        std::fs::set_permissions(
            w.path("kvmtune.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("balance")
            .args(args)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.path("bin").display()),
            )
            .env("KVMTUNE_ROOT", self.path("root"))
            .env("KVMTUNE_STATE_DIR", self.path("state"))
            .env("KVMTUNE_CONFIG", self.path("kvmtune.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn setmem(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("bin/setmem.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Low 2 GiB, high 4 GiB of free memory; 25% steps; guests keep 256 MiB free.
const POLICY: &str = "[balance]\ninterval = \"1s\"\nhost_free_low = \"2GiB\"\nhost_free_high = \"4GiB\"\nvm_interval = \"0s\"\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn once_dry_run_prints_the_decision_and_calls_no_setmem() {
    let w = World::new(POLICY);
    let out = w.run(&["--once", "--dry-run"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("balance: host free 1 GiB (low mark 2 GiB, high mark 4 GiB): short"),
        "{stdout}"
    );
    assert!(
        stdout.contains("balance: VM \"web\": balanced within 1 GiB .. 4 GiB"),
        "{stdout}"
    );
    // Room: min(3 GiB unused - 256 MiB, 4 GiB - 1 GiB) = 2.75 GiB; 25% = 704 MiB.
    assert!(
        stdout.contains("balance: would set VM \"web\": balloon 4 GiB → 3.3 GiB: host free 1 GiB below 2 GiB (low mark), VM unused 3 GiB"),
        "{stdout}"
    );
    assert!(w.setmem().is_empty());
    assert_eq!(
        std::fs::read_to_string(w.path("bin/uri")).unwrap().trim(),
        "qemu:///system"
    );
}

#[test]
fn once_sets_the_live_target_in_kib_by_uuid() {
    let w = World::new(POLICY);
    let out = w.run(&["--once", "--connect", "qemu:///elsewhere"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        w.setmem(),
        vec![format!(
            "setmem --domain 0f0e0d0c-0000-4000-8000-000000000001 --size {}KiB --live",
            4 * GIB_KIB - 704 * 1024
        )]
    );
    assert!(text(&out.stdout).contains("balance: VM \"web\": balloon 4 GiB → 3.3 GiB"));
    assert_eq!(
        std::fs::read_to_string(w.path("bin/uri")).unwrap().trim(),
        "qemu:///elsewhere"
    );
}

#[test]
fn the_daemon_keeps_balancing_until_sigterm_and_then_exits_cleanly() {
    let w = World::new(POLICY);
    let mut child = w.command(&[]).spawn().unwrap();
    // Shrinks toward min 1 GiB in steps, one per second.
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.setmem().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(w.setmem().len() >= 2, "setmem calls: {:?}", w.setmem());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t0 = Instant::now();
    let out = loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("balance: SIGTERM: stopping"), "{stdout}");
    // Each change is one line "old → new", and no target went below min.
    let changes: Vec<&str> = stdout.lines().filter(|l| l.contains(" → ")).collect();
    assert_eq!(changes.len(), w.setmem().len(), "{stdout}");
    for call in w.setmem() {
        let kib: u64 = call
            .split_whitespace()
            .nth(4)
            .unwrap()
            .trim_end_matches("KiB")
            .parse()
            .unwrap();
        assert!(kib >= GIB_KIB, "{call}");
    }
}

#[test]
fn bad_policy_is_one_line_and_exit_2() {
    let w = World::new("[balance]\nstep = \"150%\"\n");
    let out = w.run(&["--once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("balance.step = '150%'"), "{err}");
    assert!(w.setmem().is_empty());
}

#[test]
fn once_without_libvirt_fails_with_virsh_message_and_exit_1() {
    let w = World::new(POLICY);
    std::fs::write(w.path("bin/down"), "").unwrap();
    let out = w.run(&["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("virsh list --uuid failed: failed to connect to the hypervisor"),
        "{err}"
    );
}

#[test]
fn missing_meminfo_names_the_path() {
    let w = World::new(POLICY);
    std::fs::remove_file(w.path("root/proc/meminfo")).unwrap();
    let out = w.run(&["--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!(
        "{}",
        Path::new(&w.path("root/proc/meminfo")).display()
    )));
}
