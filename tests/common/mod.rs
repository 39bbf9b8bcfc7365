//! Shared test helpers: the kernel-modelling fake root, and a harness around the library.

#![allow(dead_code)]

pub mod cgroupfs;
pub mod exposition;
pub mod irqs;
pub mod kernel;
pub mod knobs;
pub mod libvirt;
pub mod partition;
pub mod scenarios;
pub mod virsh;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvmtune::apply::{self, Base, Context};
use kvmtune::domain::Domain;
use kvmtune::error::Result;
use kvmtune::policy::Policy;
use kvmtune::privilege::Privilege;
use kvmtune::state::{Journal, Ledger, StateDir};

#[allow(unused_imports)] // each test crate uses a different part
pub use kernel::{kernel, FakeKernel, GIB, MIB};

/// A fake kernel plus a state directory, a policy and a privilege: one host for a test.
pub struct Bench {
    pub kernel: FakeKernel,
    pub state_dir: tempfile::TempDir,
    pub policy: Policy,
    /// Root with every capability kvmtune needs, as whoever runs the tests (who owns the
    /// state directory): the fake root is theirs to change.
    pub privilege: Privilege,
    /// The operations are `kvmtune run`'s (which places QEMU itself), not libvirt's hook's.
    pub kvmtune_run: bool,
}

/// Root with every capability, as the uid that runs the tests.
pub fn root_privilege() -> Privilege {
    Privilege::root_as(nix::unistd::geteuid().as_raw())
}

impl Bench {
    pub fn new(kernel: FakeKernel) -> Bench {
        Bench {
            kernel,
            state_dir: fast_tempdir(),
            policy: Policy::default(),
            privilege: root_privilege(),
            kvmtune_run: false,
        }
    }

    /// The operations are `kvmtune run`'s.
    pub fn under_kvmtune_run(mut self) -> Bench {
        self.kvmtune_run = true;
        self
    }

    pub fn with_policy(mut self, toml: &str) -> Bench {
        self.policy = Policy::parse(toml).unwrap();
        self
    }

    pub fn state(&self) -> StateDir {
        StateDir::open(&state_path(self), &self.privilege)
            .unwrap()
            .with_checkpoint(self.kernel.checkpoint())
    }

    fn run<T>(&self, f: impl FnOnce(&Context) -> T) -> T {
        let state = self.state();
        let ctx = Context {
            base: self.base(&state),
            policy: &self.policy,
            kvmtune_run: self.kvmtune_run,
        };
        f(&ctx)
    }

    /// What every operation works with, on this bench, with `state`.
    pub fn base<'a>(&'a self, state: &'a StateDir) -> Base<'a> {
        Base {
            fs: &self.kernel,
            systemctl: &self.kernel,
            affinity: &self.kernel,
            irqbalance: &self.kernel,
            state,
            privilege: &self.privilege,
        }
    }

    /// Run `f` on this bench, and keep every journal kvmtune commits meanwhile as it stood
    /// when committed: read at the `remove journal` point, which follows the commit's save.
    pub fn journaled<T>(&self, f: impl FnOnce(&Context) -> T) -> (T, Vec<Journal>) {
        let seen: Arc<Mutex<Vec<Journal>>> = Arc::default();
        let reader = StateDir::open(&state_path(self), &self.privilege).unwrap();
        let kernel_point = self.kernel.checkpoint();
        let keep = Arc::clone(&seen);
        let state = StateDir::open(&state_path(self), &self.privilege)
            .unwrap()
            .with_checkpoint(Arc::new(move |what: &str| {
                kernel_point(what);
                if what != "remove journal" {
                    return;
                }
                let mut kept = keep.lock().unwrap();
                for journal in reader.journals().unwrap() {
                    if journal.committed.is_some() && !kept.contains(&journal) {
                        kept.push(journal);
                    }
                }
            }));
        let ctx = Context {
            base: self.base(&state),
            policy: &self.policy,
            kvmtune_run: self.kvmtune_run,
        };
        let out = f(&ctx);
        let journals = seen.lock().unwrap().clone();
        (out, journals)
    }

    pub fn prepare(&self, vm: &str, xml: &str) -> Result<kvmtune::plan::Plan> {
        let domain = Domain::parse(xml)?;
        self.run(|ctx| apply::prepare(ctx, vm, &domain))
    }

    pub fn started(&self, vm: &str) -> Result<()> {
        self.run(|ctx| apply::started(ctx, vm))
    }

    pub fn release(&self, vm: &str) -> Result<()> {
        self.run(|ctx| apply::release(ctx, vm))
    }

    pub fn refresh_irqs(&self) -> Result<usize> {
        self.run(apply::refresh_irqs)
    }

    pub fn recover_one(&self, vm: &str) -> Result<Vec<String>> {
        self.run(|ctx| apply::recover(ctx, apply::Recover::One(vm)))
    }

    pub fn recover_all(&self) -> Result<Vec<String>> {
        self.run(|ctx| apply::recover(ctx, apply::Recover::AllStopped))
    }

    /// One pass of the watcher.
    pub fn watch(&self, watcher: &mut kvmtune::watch::Watcher) -> Result<kvmtune::watch::Pass> {
        self.watch_at(watcher, std::time::Instant::now())
    }

    /// One pass of the watcher as if its clock said `now` (the metrics and the full look are
    /// due every `metrics.interval`: a test need not wait for them).
    pub fn watch_at(
        &self,
        watcher: &mut kvmtune::watch::Watcher,
        now: std::time::Instant,
    ) -> Result<kvmtune::watch::Pass> {
        self.run(|ctx| watcher.pass(ctx, now))
    }

    /// `kvmtune status` of this host.
    pub fn status(&self) -> kvmtune::status::Status {
        kvmtune::status::gather(&self.kernel, Some(&self.state()), &self.policy).unwrap()
    }

    pub fn ledger(&self) -> Ledger {
        self.state().load_ledger().unwrap()
    }

    /// Files left in the state directory other than the lock and the statistics (counters,
    /// the watcher's last look), which are no state to finish or undo.
    pub fn state_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(state_path(self)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["lock", "counters.json", "watch.json"].contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }

    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.kernel.snapshot()
    }
}

/// A temporary directory on tmpfs when the machine has one: the state directory lives in /run
/// (tmpfs) on a host, and its fsyncs are free there, while on a disk they would dominate the
/// crash tests' time.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("kvmtune-test")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Injected crashes are expected panics: keep them quiet (no message, no backtrace, which
/// would cost seconds each with RUST_BACKTRACE set); every other panic is reported as usual.
pub fn quiet_injected_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("injected crash"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// A hugepage-backed domain of `mib` MiB with extra XML inside <domain>.
pub fn huge_vm(name: &str, mib: u64, extra: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>{mib}</memory>\
         <memoryBacking><hugepages/></memoryBacking><vcpu>1</vcpu>{extra}</domain>"
    )
}

/// `<numatune><memory mode nodeset>`.
pub fn bound(mode: &str, nodeset: &str) -> String {
    format!("<numatune><memory mode='{mode}' nodeset='{nodeset}'/></numatune>")
}

/// Lines `path: before -> after` for every line that differs between two snapshots
/// (multi-line files such as meminfo show only their changed lines).
pub fn diff(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, old) in before {
        match after.get(path) {
            None => out.push(format!("{}: <gone>", path.display())),
            Some(new) if new != old => {
                let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
                let (old_lines, new_lines): (Vec<&str>, Vec<&str>) =
                    (old.lines().collect(), new.lines().collect());
                for i in 0..old_lines.len().max(new_lines.len()) {
                    let (o, n) = (old_lines.get(i), new_lines.get(i));
                    if o != n {
                        out.push(format!(
                            "{}: {} -> {}",
                            path.display(),
                            o.map(|s| s.trim()).unwrap_or("<none>"),
                            n.map(|s| s.trim()).unwrap_or("<none>")
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{}: <new>", path.display()));
    }
    out
}

/// The state directory kvmtune creates (0700) inside the test's tempdir.
pub fn state_path(b: &Bench) -> PathBuf {
    b.state_dir.path().join("kvmtune")
}

/// Compare `lines` with `tests/golden/<case>.txt` (rewritten with UPDATE_GOLDEN=1).
pub fn assert_golden(case: &str, lines: &[String]) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{case}.txt"));
    let actual = lines.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "changes differ from {}", path.display());
}
