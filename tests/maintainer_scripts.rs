//! The .deb's postinst moves an installed `kvmtune-irq-watch.service` (earlier releases) over to
//! `kvmtune-watch.service`: the old unit's enablement links and deb-systemd-helper's record go,
//! the new unit is enabled as the old one was (an admin's `disable` carries over), and a fresh
//! install enables it. Run against a DPKG_ROOT in a tempdir with Debian's own
//! deb-systemd-helper; skipped where it is missing, or where systemd runs (postinst would then
//! reload and start units of the real host).

use std::path::{Path, PathBuf};
use std::process::Command;

const POSTINST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/debian/postinst");
const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/systemd");
const WANTS: &str = "etc/systemd/system/multi-user.target.wants";

fn usable() -> bool {
    let helper = Path::new("/usr/bin/deb-systemd-helper").exists();
    let systemd = Path::new("/run/systemd/system").exists();
    if !helper || systemd {
        eprintln!("skipped: needs deb-systemd-helper, and no systemd running here");
    }
    helper && !systemd
}

/// `deb-systemd-helper ARGS` or the postinst, as dpkg runs them, under `root`.
fn as_dpkg(root: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .env("DPKG_ROOT", root)
        .env("DPKG_MAINTSCRIPT_PACKAGE", "kvmtune")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root where a release with `kvmtune-irq-watch.service` is installed and enabled.
fn old_release() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("kvmtune-irq-watch.service"),
        "[Service]\nExecStart=/usr/sbin/kvmtune irq-watch\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::fs::copy(
        Path::new(UNITS).join("kvmtune-recover.service"),
        units.join("kvmtune-recover.service"),
    )
    .unwrap();
    as_dpkg(
        root.path(),
        "deb-systemd-helper",
        &[
            "enable",
            "kvmtune-irq-watch.service",
            "kvmtune-recover.service",
        ],
    );
    root
}

/// dpkg unpacks this release: the old unit's file goes (from /lib, where 0.1.0 put it, or
/// /usr/lib), the new ones come to /usr/lib.
fn unpack(root: &Path) {
    for dir in ["lib/systemd/system", "usr/lib/systemd/system"] {
        let _ = std::fs::remove_file(root.join(dir).join("kvmtune-irq-watch.service"));
    }
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for unit in ["kvmtune-watch.service", "kvmtune-recover.service"] {
        std::fs::copy(Path::new(UNITS).join(unit), units.join(unit)).unwrap();
    }
}

/// Every file and link under `root/etc` and deb-systemd-helper's state, relative.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &PathBuf, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    for dir in ["etc", "var/lib/systemd"] {
        walk(root, &root.join(dir), &mut out);
    }
    out.sort();
    out
}

fn mentions(tree: &[String], what: &str) -> bool {
    tree.iter().any(|p| p.contains(what))
}

#[test]
fn an_enabled_irq_watch_becomes_an_enabled_watch_and_leaves_nothing_behind() {
    if !usable() {
        return;
    }
    let root = old_release();
    unpack(root.path());
    as_dpkg(root.path(), "sh", &[POSTINST, "configure", "0.1.0-1"]);
    let t = tree(root.path());
    assert!(!mentions(&t, "kvmtune-irq-watch"), "{t:?}");
    assert!(
        t.contains(&format!("{WANTS}/kvmtune-watch.service")),
        "{t:?}"
    );
    assert!(
        t.contains(&format!("{WANTS}/kvmtune-recover.service")),
        "{t:?}"
    );
}

#[test]
fn an_irq_watch_the_admin_disabled_leaves_watch_disabled_across_upgrades() {
    if !usable() {
        return;
    }
    let root = old_release();
    std::fs::remove_file(root.path().join(WANTS).join("kvmtune-irq-watch.service")).unwrap();
    unpack(root.path());
    as_dpkg(root.path(), "sh", &[POSTINST, "configure", "0.1.0-1"]);
    as_dpkg(root.path(), "sh", &[POSTINST, "configure", "0.1.0-1"]);
    let t = tree(root.path());
    assert!(!mentions(&t, "kvmtune-irq-watch"), "{t:?}");
    assert!(
        !t.contains(&format!("{WANTS}/kvmtune-watch.service")),
        "{t:?}"
    );
    assert!(
        mentions(&t, "kvmtune-watch.service.dsh-also"),
        "recorded: {t:?}"
    );
}

#[test]
fn a_fresh_install_enables_watch() {
    if !usable() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    unpack(root.path());
    as_dpkg(root.path(), "sh", &[POSTINST, "configure"]);
    let t = tree(root.path());
    assert!(
        t.contains(&format!("{WANTS}/kvmtune-watch.service")),
        "{t:?}"
    );
}
