//! Hostile and broken input, table-driven, through the real binary as libvirt runs it. Every
//! case gets a clear one-line error (or is a documented no-op), the exit status SPEC.md gives
//! it, and leaves the host exactly as it was: the kernel tree byte for byte, no journal or
//! ledger, no file outside the state directory, nothing written through a planted symlink.

mod common;

use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{diff, kernel, FakeKernel, GIB};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtune");

struct Host {
    kernel: FakeKernel,
    tmp: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        // The policy's directory must not be writable by others (the tempdir is 0700).
        Host {
            kernel: kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]),
            tmp,
        }
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn config(&self) -> PathBuf {
        self.tmp.path().join("etc/kvmtune.toml")
    }
    fn write_policy(&self, text: &str) {
        std::fs::create_dir_all(self.config().parent().unwrap()).unwrap();
        std::fs::write(self.config(), text).unwrap();
    }
}

#[derive(Clone, Copy)]
enum Stdin<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    /// File descriptor 0 closed, not even /dev/null.
    Closed,
}

/// Who runs the binary, modelled with `KVMTUNE_PRIVILEGE` so that every case runs whoever
/// runs the tests.
#[derive(Clone, Copy, PartialEq)]
enum As {
    Root,
    /// Not root: libvirt's session daemon.
    Nobody,
    /// uid 0 without the capabilities kvmtune needs (a container, a confined daemon).
    RootWithoutCaps,
    /// Root, as a uid that does not own the files `give_away` was given (see there).
    Stranger,
}

/// A uid nobody in these tests runs as.
const STRANGER: u32 = 65534;

/// Make `path` belong to another user than the one kvmtune runs as with `As::Stranger`, and
/// not to root (root's files are trusted): as root, by giving it to `STRANGER`; as anyone
/// else, by leaving it theirs while kvmtune is told it runs as `STRANGER`.
fn give_away(path: &Path) {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(path, Some(STRANGER), Some(STRANGER)).unwrap();
    }
}

fn model(who: As) -> String {
    let me = nix::unistd::geteuid();
    match who {
        As::Root => "root".into(),
        As::Nobody => "user".into(),
        As::RootWithoutCaps => "root-without=CAP_SYS_NICE,CAP_DAC_OVERRIDE".into(),
        As::Stranger if me.is_root() => "root".into(),
        As::Stranger => format!("root uid={STRANGER}"),
    }
}

fn run(h: &Host, who: As, args: &[&str], stdin: Stdin) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("hook")
        .args(args)
        .env_clear()
        .env("KVMTUNE_ROOT", h.kernel.path())
        .env("KVMTUNE_STATE_DIR", h.state())
        .env("KVMTUNE_CONFIG", h.config())
        .env("KVMTUNE_PRIVILEGE", model(who))
        .current_dir(h.tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match stdin {
        Stdin::Closed => {
            cmd.stdin(Stdio::null());
            // SAFETY: only async-signal-safe close(2) between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::close(0);
                    Ok(())
                });
            }
        }
        _ => {
            cmd.stdin(Stdio::piped());
        }
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(mut input) = child.stdin.take() {
        let bytes = match stdin {
            Stdin::Text(t) => t.as_bytes(),
            Stdin::Bytes(b) => b,
            Stdin::Closed => &[],
        };
        let bytes = bytes.to_vec();
        // A writer thread: kvmtune may stop reading early (too large) and exit.
        std::thread::spawn(move || {
            let _ = input.write_all(&bytes);
        });
    }
    child.wait_with_output().unwrap()
}

/// A domain of `body` (inside <domain>) named `name`.
fn dom(name: &str, body: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>{body}</domain>"
    )
}

/// A domain pinned to CPU 1 with kvmtune metadata `tune`.
fn meta(tune: &str) -> String {
    dom(
        "m",
        &format!(
            "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune>\
             <metadata><k:tune xmlns:k='urn:kvmtune:1'>{tune}</k:tune></metadata>"
        ),
    )
}

/// A domain with a PCI hostdev whose address has these attributes.
fn hostdev(address: &str) -> String {
    dom(
        "h",
        &format!(
            "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune>\
             <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:irq cpus='vcpus'/></k:tune></metadata>\
             <devices><hostdev mode='subsystem' type='pci'><source><address {address}/></source></hostdev></devices>"
        ),
    )
}

fn hugepage_vm(name: &str) -> String {
    dom(name, "<memoryBacking><hugepages/></memoryBacking>")
}

struct Case {
    what: &'static str,
    who: As,
    /// Hook arguments: NAME OP SUBOP EXTRA.
    args: Vec<String>,
    xml: String,
    setup: fn(&Host),
    /// Exit status, and a text the one stderr line must contain ("" = stderr must be empty).
    code: i32,
    says: &'static str,
}

fn case(what: &'static str, xml: String, code: i32, says: &'static str) -> Case {
    Case {
        what,
        who: As::Root,
        args: vec!["vm".into(), "prepare".into(), "begin".into(), "-".into()],
        xml,
        setup: |_| {},
        code,
        says,
    }
}

impl Case {
    fn op(mut self, op: &str, subop: &str) -> Case {
        self.args[1] = op.into();
        self.args[2] = subop.into();
        self
    }
    fn setup(mut self, f: fn(&Host)) -> Case {
        self.setup = f;
        self
    }
    fn who(mut self, who: As) -> Case {
        self.who = who;
        self
    }
}

fn policy(h: &Host, text: &str) {
    h.write_policy(text);
}

/// A file planted where kvmtune must never write: the target of the planted symlinks.
fn bait(h: &Host) -> PathBuf {
    h.tmp.path().join("bait")
}

fn plant(h: &Host, name: &str) {
    std::fs::write(bait(h), "precious\n").unwrap();
    std::fs::create_dir_all(h.state()).unwrap();
    std::fs::set_permissions(h.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink(bait(h), h.state().join(name)).unwrap();
}

fn cases() -> Vec<Case> {
    let entities = "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'>]><domain><name>&b;</name></domain>";
    let deep = format!(
        "<domain>{}{}</domain>",
        "<a>".repeat(500),
        "</a>".repeat(500)
    );
    vec![
        // ---- metadata outside the policy's bounds, or malformed (exit 1, nothing changed)
        case("isolate a housekeeping CPU", meta("<k:isolate cpus='0'/>"), 1, "housekeeping CPUs"),
        case("isolate a CPU the policy does not allow", meta("<k:isolate cpus='3'/>"), 1, "cpus.isolatable")
            .setup(|h| policy(h, "[cpus]\nisolatable = \"1\"\n")),
        case("isolate 0-99999999", meta("<k:isolate cpus='0-99999999'/>"), 1, "larger than 8191"),
        case("isolate a reversed range", meta("<k:isolate cpus='3-1'/>"), 1, "reversed"),
        case("isolate offline CPUs", meta("<k:isolate cpus='5-6'/>"), 1, "not online"),
        case("device IRQs on offline CPUs", meta("<k:irq cpus='9'/>"), 1, "not online"),
        case(
            "more hugepages than the node has",
            dom("big", "<memoryBacking><hugepages/></memoryBacking><numatune><memory mode='strict' nodeset='1'/></numatune>")
                .replace("<memory unit='MiB'>64</memory>", "<memory unit='GiB'>64</memory>"),
            1,
            "available and the policy keeps",
        ),
        case("hugepages beyond max_per_vm", hugepage_vm("m").replace("MiB'>64", "MiB'>2048"), 1, "max_per_vm")
            .setup(|h| policy(h, "[hugepages]\nmax_per_vm = \"1GiB\"\n")),
        case("unknown metadata attribute", meta("<k:hugepages resrve='on'/>"), 1, "unknown attribute 'resrve'"),
        case("two metadata attributes", meta("<k:hugepages reserve='on' also='x'/>"), 1, "more than one attribute"),
        case("unknown metadata element", meta("<k:turbo on='yes'/>"), 1, "unknown element <turbo>"),
        case("bad metadata value", meta("<k:hugepages reserve='always'/>"), 1, "auto, on or off"),
        case(
            "a future kvmtune namespace",
            meta("").replace("urn:kvmtune:1", "urn:kvmtune:2"),
            1,
            "not supported",
        ),
        // Documented no-op: another tool's metadata is not ours to read.
        case(
            "metadata in another namespace",
            meta("").replace("urn:kvmtune:1'>", "urn:other:1'><k:isolate cpus='3'/>"),
            0,
            "",
        ),
        // ---- hostdev addresses reach paths: only validated numbers pass
        case("hostdev bus ../../../etc", hostdev("domain='0x0000' bus='../../../etc' slot='0' function='0'"), 1, "bus='../../../etc' is not a number"),
        case("hostdev domain 0000:00:1f.7/../..", hostdev("domain='0000:00:1f.7/../..' bus='0' slot='0' function='0'"), 1, "is not a number"),
        case("hostdev slot out of range", hostdev("domain='0' bus='0' slot='0x20' function='0'"), 1, "out of range"),
        case("hostdev function out of range", hostdev("domain='0' bus='0' slot='0' function='8'"), 1, "out of range"),
        // ---- XML
        case("DOCTYPE with entity expansion", entities.into(), 1, "DOCTYPE"),
        case("undeclared entity", dom("&x;", ""), 1, "XML"),
        case("truncated XML", hugepage_vm("t")[..60].into(), 1, "XML error"),
        case("XML cut after the root opened", "<domain><name>t</name>".into(), 1, "truncated"),
        case("not XML at all", "hello".into(), 1, "root element"),
        case("nesting 500 deep", deep, 1, "nested too deeply"),
        case("a root that is not <domain>", "<network><name>n</name></network>".into(), 1, "not <domain>"),
        case("empty stdin", String::new(), 1, "no domain XML"),
        // Found through the domain_xml fuzz target: the VM's total overflowed (a panic; wrapped in a release build).
        case(
            "two guest cells of 2^63 bytes each",
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions/domain_xml/u63-memory-cells")).unwrap(),
            1,
            "available and the policy keeps",
        ),
        case("memory of 2^70 bytes", dom("m", "").replace("unit='MiB'>64", "unit='EiB'>1024"), 1, "too large"),
        // ---- the policy file (exit 2: configuration)
        case("world-writable policy", hugepage_vm("p"), 2, "writable by group or others")
            .setup(|h| {
                policy(h, "");
                std::fs::set_permissions(h.config(), std::fs::Permissions::from_mode(0o666)).unwrap();
            }),
        case("policy owned by another user", hugepage_vm("p"), 2, "owned by uid")
            .who(As::Stranger)
            .setup(|h| {
                policy(h, "");
                give_away(&h.config());
            }),
        case("policy in a world-writable directory", hugepage_vm("p"), 2, "policy directory")
            .setup(|h| {
                policy(h, "");
                std::fs::set_permissions(h.config().parent().unwrap(), std::fs::Permissions::from_mode(0o777)).unwrap();
            }),
        case("policy with an unknown key", hugepage_vm("p"), 2, "node_memory_flor")
            .setup(|h| policy(h, "[hugepages]\nnode_memory_flor = \"1GiB\"\n")),
        case("policy with a bad value", hugepage_vm("p"), 2, "cpus.isolation = 'sometimes'")
            .setup(|h| policy(h, "[cpus]\nisolation = \"sometimes\"\n")),
        case("policy timeout that overflows the clock", hugepage_vm("p"), 2, "hugepages.timeout")
            .setup(|h| policy(h, "[hugepages]\ntimeout = \"307445734561825860m\"\n")),
        case("policy that is not TOML", hugepage_vm("p"), 2, "policy")
            .setup(|h| policy(h, "\u{0}\u{1}[[[")),
        case("policy that is a FIFO", hugepage_vm("p"), 2, "not a regular file")
            .setup(|h| {
                std::fs::create_dir_all(h.config().parent().unwrap()).unwrap();
                nix::unistd::mkfifo(&h.config(), nix::sys::stat::Mode::S_IRWXU).unwrap();
            }),
        // ---- the state directory (exit 1 for prepare; release always exits 0)
        case("state dir is a symlink", hugepage_vm("s"), 1, "symlink")
            .setup(|h| {
                std::fs::create_dir(bait(h)).unwrap();
                symlink(bait(h), h.state()).unwrap();
            }),
        case("lock is a symlink", hugepage_vm("s"), 1, "symlink").setup(|h| plant(h, "lock")),
        case("ledger is a symlink", hugepage_vm("s"), 1, "symlink").setup(|h| plant(h, "ledger.json")),
        case("a journal is a symlink", hugepage_vm("s"), 1, "symlink")
            .setup(|h| plant(h, "journal-vm.json")),
        case("a journal is a FIFO", hugepage_vm("s"), 1, "not a regular file")
            .setup(|h| {
                std::fs::create_dir_all(h.state()).unwrap();
                std::fs::set_permissions(h.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
                nix::unistd::mkfifo(&h.state().join("journal-x.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
            }),
        case("state dir open to others", hugepage_vm("s"), 1, "must be 0700")
            .setup(|h| {
                std::fs::create_dir(h.state()).unwrap();
                std::fs::set_permissions(h.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
            }),
        case("state dir owned by another user", hugepage_vm("s"), 1, "owned by uid")
            .who(As::Stranger)
            .setup(|h| {
                std::fs::create_dir(h.state()).unwrap();
                std::fs::set_permissions(h.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
                give_away(&h.state());
            }),
        case("release with the lock a symlink", hugepage_vm("s"), 0, "symlink")
            .op("release", "end")
            .setup(|h| plant(h, "lock")),
        case("reconnect with a broken policy", hugepage_vm("s"), 0, "policy")
            .op("reconnect", "begin")
            .setup(|h| policy(h, "[nonsense]\n")),
        case("reconnect with the state dir a symlink", hugepage_vm("s"), 0, "symlink")
            .op("reconnect", "begin")
            .setup(|h| {
                std::fs::create_dir(bait(h)).unwrap();
                symlink(bait(h), h.state()).unwrap();
            }),
        // ---- who runs it
        case("not root (libvirt's session daemon)", hugepage_vm("u"), 0, "").who(As::Nobody),
        case("root without CAP_SYS_NICE and CAP_DAC_OVERRIDE", hugepage_vm("c"), 1, "CAP_SYS_NICE")
            .who(As::RootWithoutCaps),
        case("release as root without capabilities", hugepage_vm("c"), 0, "CAP_DAC_OVERRIDE")
            .op("release", "end")
            .who(As::RootWithoutCaps)
            .setup(|h| {
                // A VM kvmtune holds pages for, so release has something to do.
                let out = run(h, As::Root, &["c", "prepare", "begin", "-"], Stdin::Text(&hugepage_vm("c")));
                assert!(out.status.success());
            }),
    ]
}

/// What the host looks like: the kernel tree, and what the state directory holds besides its
/// lock (a journal or ledger left by a refused operation would be a change).
fn host_state(h: &Host) -> (std::collections::BTreeMap<PathBuf, Vec<u8>>, Vec<String>) {
    let mut files: Vec<String> = std::fs::read_dir(h.state())
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock")
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    (h.kernel.snapshot(), files)
}

#[test]
fn hostile_input_gets_one_clear_line_the_right_status_and_changes_nothing() {
    let mut failures = Vec::new();
    let all = cases();
    for c in &all {
        let h = Host::new();
        (c.setup)(&h);
        let before = host_state(&h);
        let bait_before = std::fs::read(bait(&h)).ok();
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = run(&h, c.who, &args, Stdin::Text(&c.xml));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut wrong = Vec::new();
        if out.status.code() != Some(c.code) {
            wrong.push(format!("exit {:?}, expected {}", out.status.code(), c.code));
        }
        if c.says.is_empty() {
            if !err.is_empty() {
                wrong.push("stderr not empty".into());
            }
        } else if err.lines().count() != 1 || !err.starts_with("kvmtune: ") || !err.contains(c.says)
        {
            wrong.push(format!("stderr is not one line with '{}'", c.says));
        }
        if !out.stdout.is_empty() {
            wrong.push("wrote to stdout".into());
        }
        let after = host_state(&h);
        if after != before {
            wrong.push(format!(
                "host changed: {:?}, state files {:?} -> {:?}",
                diff(&before.0, &after.0),
                before.1,
                after.1
            ));
        }
        if std::fs::read(bait(&h)).ok() != bait_before {
            wrong.push("wrote through a planted symlink".into());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {} [stderr: {}]",
                c.what,
                wrong.join("; "),
                err.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Domain names are data: names libvirt allows (anything but `/`) are tuned and given back
/// like any other, and never reach a shell or a path.
#[test]
fn hostile_domain_names_are_tuned_and_given_back() {
    let h = Host::new();
    let start = h.kernel.snapshot();
    let long = "n".repeat(10 * 1024);
    for name in [
        "--help",
        "..",
        ".",
        "a;b",
        "$(touch x)",
        "`touch y`",
        "new\nline",
        "-",
        long.as_str(),
        "a b\t'\"<>&",
    ] {
        let xml = hugepage_vm("x");
        let out = run(
            &h,
            As::Root,
            &[name, "prepare", "begin", "-"],
            Stdin::Text(&xml),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pool = h
            .kernel
            .path()
            .join("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages");
        let grown: u64 = std::fs::read_to_string(&pool)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(grown > 0, "{name:?}: not tuned");
        for (op, sub) in [("started", "begin"), ("stopped", "end"), ("release", "end")] {
            let out = run(&h, As::Root, &[name, op, sub, "-"], Stdin::Text(&xml));
            assert_eq!(out.status.code(), Some(0), "{name:?} {op}");
        }
        assert_eq!(
            diff(&start, &h.kernel.snapshot()),
            Vec::<String>::new(),
            "{name:?}"
        );
    }
    for stray in ["x", "y"] {
        assert!(
            !h.tmp.path().join(stray).exists(),
            "a name ran a shell command"
        );
    }
    let left: Vec<String> = std::fs::read_dir(h.state())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["lock"]);
}

#[test]
fn a_hundred_megabytes_or_no_stdin_at_all_fail_prepare_cleanly() {
    let h = Host::new();
    let start = h.kernel.snapshot();
    let huge = vec![b' '; 100 << 20];
    for (what, stdin, says) in [
        ("100 MB", Stdin::Bytes(&huge), "larger than"),
        ("stdin closed", Stdin::Closed, "stdin"),
        (
            "not UTF-8",
            Stdin::Bytes(b"<domain>\xff\xfe</domain>"),
            "UTF-8",
        ),
    ] {
        let out = run(&h, As::Root, &["vm", "prepare", "begin", "-"], stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.lines().count() == 1 && err.contains(says),
            "{what}: {err}"
        );
        // Operations that read no XML do not care, and always exit 0.
        let out = run(&h, As::Root, &["vm", "release", "end", "-"], stdin);
        assert_eq!(out.status.code(), Some(0), "{what}: release");
    }
    assert_eq!(diff(&start, &h.kernel.snapshot()), Vec::<String>::new());
}

/// Any path through the binary: reading the root and the state dir that do not exist.
#[test]
fn nothing_is_created_outside_the_state_directory() {
    let h = Host::new();
    let xml = hugepage_vm("a");
    run(
        &h,
        As::Root,
        &["a", "prepare", "begin", "-"],
        Stdin::Text(&xml),
    );
    run(
        &h,
        As::Root,
        &["a", "release", "end", "-"],
        Stdin::Text(&xml),
    );
    let mut top: Vec<String> = std::fs::read_dir(h.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, vec!["state"], "{:?}", Path::new(h.tmp.path()));
}

/// A failing `reconnect` makes libvirt kill the running VM: whatever is broken, it exits 0
/// (and says what in one line).
#[test]
fn reconnect_exits_0_whatever_happens() {
    let xml = hugepage_vm("r");
    let held = |h: &Host| {
        let out = run(
            h,
            As::Root,
            &["r", "prepare", "begin", "-"],
            Stdin::Text(&xml),
        );
        assert!(out.status.success());
    };
    type Break = fn(&Host);
    let cases: [(&str, Break); 6] = [
        ("garbage ledger", |h| {
            std::fs::write(h.state().join("ledger.json"), "{{{").unwrap()
        }),
        ("garbage journal", |h| {
            std::fs::write(h.state().join("journal-r.json"), "\0").unwrap()
        }),
        ("the VM's pool is gone", |h| {
            std::fs::remove_dir_all(
                h.kernel
                    .path()
                    .join("sys/devices/system/node/node0/hugepages"),
            )
            .unwrap()
        }),
        ("no /sys at all", |h| {
            std::fs::remove_dir_all(h.kernel.path().join("sys")).unwrap()
        }),
        ("the ledger is a directory", |h| {
            std::fs::remove_file(h.state().join("ledger.json")).unwrap();
            std::fs::create_dir(h.state().join("ledger.json")).unwrap();
        }),
        ("the state dir is a file", |h| {
            std::fs::remove_dir_all(h.state()).unwrap();
            std::fs::write(h.state(), "").unwrap();
        }),
    ];
    for (what, break_it) in cases {
        let h = Host::new();
        held(&h);
        break_it(&h);
        for stdin in [Stdin::Text(&xml), Stdin::Closed] {
            let out = run(&h, As::Root, &["r", "reconnect", "begin", "-"], stdin);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{what}: {err}");
            assert!(out.stdout.is_empty(), "{what}");
        }
    }
}
