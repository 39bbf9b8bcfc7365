//! A policy broken while VMs run cannot keep them from being given back (SPEC: release and
//! recover undo from the journal and the ledger only, never from the policy or the XML).
//! Through the hook's own dispatch (`hook::run`) on the kernel-modelling fake root, with the
//! policy read from a file as the real hook reads it: prepare and started with a good policy,
//! then the file is broken in every way a policy can be, and release must give back pools,
//! isolated CPUs, IRQs, irqbalance's set and host knobs, byte for byte. A broken policy still
//! fails a prepare, with exit status 2 and one line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::cgroupfs::Layout;
use common::{diff, kernel, Bench, GIB};
use kvmtune::apply::{self, Base, Recover};
use kvmtune::cpulist::CpuSet;
use kvmtune::error::Result;
use kvmtune::hook::{self, Env, HookCall};
use kvmtune::policy::Policy;

/// The hook's environment on a bench: the policy from a file, as `cli` reads it.
struct BenchEnv<'a> {
    bench: &'a Bench,
    config: PathBuf,
}

impl Env for BenchEnv<'_> {
    fn policy(&self) -> Result<Policy> {
        Policy::load(&self.config, &self.bench.privilege)
    }

    fn with_base(&self, f: &mut dyn FnMut(&Base) -> Result<()>) -> Result<()> {
        let state = self.bench.state();
        f(&self.bench.base(&state))
    }
}

struct Host {
    bench: Bench,
    etc: tempfile::TempDir,
}

impl Host {
    fn new(policy: &str) -> Host {
        let bench = Bench::new(
            kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
                .with_cgroups(Layout::V1)
                .with_irqs(),
        );
        bench.kernel.irqs(|i| i.irqbalance = Some(set("0")));
        bench.kernel.knobs(|k| k.ksm().run = 1);
        for cpu in 0..4 {
            common::kernel::put(
                bench.kernel.path(),
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "schedutil\n",
            );
        }
        let host = Host {
            bench,
            etc: tempfile::tempdir().unwrap(),
        };
        host.write_policy(policy);
        host
    }

    fn config(&self) -> PathBuf {
        self.etc.path().join("kvmtune.toml")
    }

    fn write_policy(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
        std::fs::set_permissions(self.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// One hook call as libvirt makes it: `VM OP SUBOP -`, the XML on stdin.
    fn hook(&self, vm: &str, op: &str, subop: &str, xml: &str) -> Result<()> {
        let args: Vec<String> = [vm, op, subop, "-"].iter().map(|s| s.to_string()).collect();
        let call = HookCall::from_args(&args).unwrap();
        let env = BenchEnv {
            bench: &self.bench,
            config: self.config(),
        };
        hook::run(&call, &mut xml.as_bytes(), &mut Vec::new(), &env)
    }

    fn start(&self, vm: &str, xml: &str) {
        self.hook(vm, "prepare", "begin", xml).unwrap();
        self.hook(vm, "started", "begin", xml).unwrap();
    }

    fn irqbalance(&self) -> Option<CpuSet> {
        self.bench.kernel.irqs(|i| i.irqbalance.clone())
    }

    fn governor(&self, cpu: u32) -> String {
        let path = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
        std::fs::read_to_string(self.bench.kernel.path().join(path))
            .unwrap()
            .trim()
            .to_string()
    }
}

fn set(list: &str) -> CpuSet {
    CpuSet::parse(list).unwrap()
}

/// A hugepage-backed VM pinned to `cpu`, isolating it, with a passthrough device whose IRQs go
/// to its vCPU, and KSM stopped while it runs.
fn vm(name: &str, cpu: u32, bus: u32) -> String {
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <memoryBacking><hugepages/></memoryBacking>\
         <cputune><vcpupin vcpu='0' cpuset='{cpu}'/></cputune>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/><k:irq cpus='vcpus'/>\
         <k:ksm run='off'/></k:tune></metadata>\
         <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
         <address domain='0x0000' bus='0x{bus:02x}' slot='0x00' function='0x0'/></source></hostdev></devices></domain>"
    )
}

/// A policy that asks for more than the defaults: the governor of isolated CPUs, THP.
const POLICY: &str =
    "[cpus]\ngovernor = \"performance\"\n[thp]\nenabled = \"never\"\nfor = [\"isolated\"]\n";

/// How a test breaks the policy file.
type Break = fn(&Host);

/// Every way the file can be broken, and what the line says.
fn breakages() -> Vec<(&'static str, Break, &'static str)> {
    vec![
        (
            "not TOML",
            |h: &Host| h.write_policy("[cpus\nhousekeeping = "),
            "policy",
        ),
        (
            "an unknown key",
            |h: &Host| h.write_policy("[cpus]\nhousekeping = \"0\"\n"),
            "housekeping",
        ),
        (
            "a bad value",
            |h: &Host| h.write_policy("[cpus]\nisolation = \"sometimes\"\n"),
            "cpus.isolation = 'sometimes'",
        ),
        (
            "a blank CPU list",
            |h: &Host| h.write_policy("[defaults]\nirq = \"\"\n"),
            "defaults.irq = ''",
        ),
        (
            "writable by others",
            |h: &Host| {
                std::fs::set_permissions(h.config(), std::fs::Permissions::from_mode(0o666))
                    .unwrap()
            },
            "writable by group or others",
        ),
        (
            "a directory",
            |h: &Host| {
                std::fs::remove_file(h.config()).unwrap();
                std::fs::create_dir(h.config()).unwrap();
            },
            "not a regular file",
        ),
    ]
}

#[test]
fn release_gives_everything_back_whatever_became_of_the_policy() {
    for (what, break_it, says) in breakages() {
        let h = Host::new(POLICY);
        let start = h.bench.snapshot();
        h.start("gpu", &vm("gpu", 3, 6));
        assert_ne!(diff(&start, &h.bench.snapshot()), Vec::<String>::new());
        assert_eq!(h.irqbalance(), Some(set("0,3")), "{what}");

        break_it(&h);
        // The next prepare fails on it: a configuration error, one line naming the problem.
        let err = h
            .hook("web", "prepare", "begin", &vm("web", 1, 7))
            .unwrap_err();
        assert_eq!(err.exit_code(), 2, "{what}: {err}");
        let line = err.to_string();
        assert!(
            line.contains(says) && !line.contains('\n'),
            "{what}: {line}"
        );

        h.hook("gpu", "release", "end", "").unwrap();
        assert_eq!(
            diff(&start, &h.bench.snapshot()),
            Vec::<String>::new(),
            "{what}"
        );
        assert_eq!(h.irqbalance(), Some(set("0")), "{what}");
        assert_nothing_held(&h, what);
    }
}

#[test]
fn release_of_one_vm_narrows_with_the_settings_it_was_set_up_with() {
    // Two isolating VMs; the policy breaks; the first one's release narrows the isolation to
    // the second's CPU (governor and THP still held for it), the second's gives back the rest.
    let h = Host::new(POLICY);
    let start = h.bench.snapshot();
    h.start("a", &vm("a", 3, 6));
    h.start("b", &vm("b", 1, 7));
    assert_eq!(
        (h.governor(1), h.governor(3)),
        ("performance".into(), "performance".into())
    );

    h.write_policy("[nonsense]\n");
    h.hook("a", "release", "end", "").unwrap();
    assert_eq!(h.irqbalance(), Some(set("0-1")));
    assert_eq!(
        (h.governor(1), h.governor(3)),
        ("performance".into(), "schedutil".into()),
        "b's CPU keeps its governor, a's gets its own back"
    );

    h.hook("b", "release", "end", "").unwrap();
    assert_eq!(diff(&start, &h.bench.snapshot()), Vec::<String>::new());
    assert_eq!(h.irqbalance(), Some(set("0")));
    assert_nothing_held(&h, "after both releases");
}

#[test]
fn release_follows_the_settings_held_not_a_policy_changed_since() {
    // Other IRQs stay where they are under this policy; a later policy would move them. The
    // release of one of two VMs must not start moving them: nothing of it is the VM's.
    let h = Host::new("[irq]\nmove_others = false\nirqbalance = \"off\"\n");
    let start = h.bench.snapshot();
    h.start("a", &vm("a", 3, 6));
    h.start("b", &vm("b", 1, 7));
    let other = |irq: u32| h.bench.kernel.irqs(|i| i.irqs[&irq].affinity.clone());
    assert_eq!(other(10), set("0-3"));

    h.write_policy("[irq]\nmove_others = true\n");
    h.hook("a", "release", "end", "").unwrap();
    assert_eq!(other(10), set("0-3"), "an IRQ that is no VM's was moved");
    assert_eq!(h.irqbalance(), Some(set("0")), "irqbalance was told");
    h.hook("b", "release", "end", "").unwrap();
    assert_eq!(diff(&start, &h.bench.snapshot()), Vec::<String>::new());
}

#[test]
fn recover_releases_from_the_ledger_with_no_policy_at_all() {
    // `apply::recover` takes no policy: the type says so; this shows it gives back everything.
    let h = Host::new(POLICY);
    let start = h.bench.snapshot();
    h.start("gpu", &vm("gpu", 3, 6));
    h.write_policy("[cpus]\nisolation = \"sometimes\"\n");
    let state = h.bench.state();
    let released = apply::recover(&h.bench.base(&state), Recover::One("gpu")).unwrap();
    assert_eq!(released, vec!["gpu".to_string()]);
    assert_eq!(diff(&start, &h.bench.snapshot()), Vec::<String>::new());
    assert_eq!(h.irqbalance(), Some(set("0")));
    assert_eq!(h.bench.kernel.knobs(|k| k.ksm().run), 1);
}

/// Nothing left in the state directory but, for a minute, the ledger's note of what irqbalance
/// was given back (it applies it only at its next round).
fn assert_nothing_held(h: &Host, what: &str) {
    let files = h.bench.state_files();
    assert!(
        files.iter().all(|f| f == "ledger.json"),
        "{what}: {files:?}"
    );
    let ledger = h.bench.ledger();
    assert!(
        ledger.vms.is_empty()
            && ledger.pools.is_empty()
            && ledger.isolation.is_none()
            && ledger.irq.is_none()
            && ledger.knobs.is_empty(),
        "{what}: {ledger:?}"
    );
}
