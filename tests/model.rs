//! A model-based test: random sequences of what libvirt and the world do to three VMs (prepare,
//! start, stop, prepares that fail, kvmtune killed at a random point of an operation, libvirtd
//! reconnects, someone undoing tuning behind kvmtune's back, `recover`, and with partitions a
//! `virsh emulatorpin --live` onto an isolated CPU and back) against the
//! kernel-modelling fake, with the invariants checked after every step:
//! - the housekeeping CPUs are never empty, and every host task may run somewhere;
//! - no pool is below what its VMs need: running VMs' pages are in use, prepared VMs' pages free;
//! - the ledger holds exactly the VMs that are prepared or running, in their phase;
//! - every journal left by a crash parses, names only files that exist, and is undone or
//!   finished by the next call;
//! - whenever no VM is held, the host is byte for byte as at the start; so is the end;
//! - on a host with isolated partitions, the kernel's isolated CPUs are exactly the held VMs'
//!   (VMs `kvmtune run` starts, cgroup v2 without systemd), or those of the VMs that run and
//!   nothing outside the held VMs' (libvirt's VMs under systemd, partitioned once they run).
//!
//! `PROPTEST_CASES` sets the number of sequences (default 24, a few seconds).

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::cgroupfs::Layout;
use common::{bound, diff, huge_vm, kernel, Bench, GIB};
use kvmtune::change::Change;
use kvmtune::state::Phase;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// VM `v`'s domain; `fails`: one that asks for more memory than the host has.
fn xml(v: usize, fails: bool) -> String {
    let mib = |m: u64| if fails { 64 * 1024 } else { m };
    match v {
        0 => huge_vm(
            "a",
            mib(128),
            &format!(
                "{}<cputune><vcpupin vcpu='0' cpuset='1'/></cputune>\
                 <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/><k:irq cpus='vcpus'/></k:tune></metadata>\
                 <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
                 <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev></devices>",
                bound("strict", "1")
            ),
        ),
        1 => huge_vm(
            "b",
            mib(64),
            &format!(
                "{}<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>\
                 <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/></k:tune></metadata>",
                bound("strict", "0")
            ),
        ),
        _ => huge_vm("c", mib(256), &bound("interleave", "0-1")),
    }
}

/// The 2 MiB pages VM `v` takes from each node.
fn pages(v: usize) -> Vec<(u32, u64)> {
    match v {
        0 => vec![(1, 64)],
        1 => vec![(0, 32)],
        _ => vec![(0, 64), (1, 64)],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vm {
    Off,
    Prepared,
    Running,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prepare,
    Started,
    Release,
}

#[derive(Debug, Clone)]
enum Step {
    /// libvirt starts the VM: prepare (then QEMU starts and `started` follows with `Start`).
    Prepare(usize),
    /// QEMU runs with its pages, then `started`.
    Start(usize),
    /// QEMU exits, then `stopped` and `release`.
    Stop(usize),
    /// A prepare that the policy or the host refuses; libvirt then calls release.
    FailedPrepare(usize),
    /// kvmtune killed at point `at` of an operation of VM `vm`.
    Crash { vm: usize, kind: Kind, at: usize },
    /// libvirtd restarted: every running VM reconnects.
    Reconnect,
    /// Someone shrinks the pools, resets the device's IRQs and widens the housekeeping cpuset;
    /// then libvirtd restarts.
    DriftThenReconnect,
    /// `kvmtune recover` (at boot, or by an admin).
    Recover,
    /// libvirt's VMs with partitions: `virsh emulatorpin --live` puts a running VM's emulator
    /// on its isolated vCPU's CPU (the command fails, the vCPU's partition is left invalid and
    /// holding the CPU), `kvmtune watch` looks, the emulator is pinned back, the watcher looks
    /// again. No partition may be left invalid, and everything is back after.
    LivePin(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let vm = 0..NAMES.len();
    let kind = prop_oneof![
        Just(Kind::Prepare),
        Just(Kind::Started),
        Just(Kind::Release)
    ];
    prop_oneof![
        4 => vm.clone().prop_map(Step::Prepare),
        4 => vm.clone().prop_map(Step::Start),
        4 => vm.clone().prop_map(Step::Stop),
        1 => vm.clone().prop_map(Step::FailedPrepare),
        3 => (vm, kind, 0..48usize).prop_map(|(vm, kind, at)| Step::Crash { vm, kind, at }),
        1 => Just(Step::Reconnect),
        1 => Just(Step::DriftThenReconnect),
        1 => Just(Step::Recover),
        1 => (0..2usize).prop_map(Step::LivePin),
    ]
}

struct World {
    b: Bench,
    vms: [Vm; 3],
    start: BTreeMap<std::path::PathBuf, Vec<u8>>,
    layout: Layout,
    /// The kernel has isolated partitions: the partition method. Under systemd the VMs are
    /// libvirt's (their cgroups modelled), else `kvmtune run`'s.
    partitions: bool,
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

impl World {
    fn new(layout: Layout, partitions: bool) -> World {
        let kernel = kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(layout)
            .with_irqs();
        let b = match (partitions, layout) {
            (true, Layout::Systemd) => Bench::new(kernel.with_partitions().with_cpuset_unused()),
            (true, _) => Bench::new(kernel.with_partitions()).under_kvmtune_run(),
            _ => Bench::new(kernel),
        };
        let start = b.snapshot();
        World {
            b,
            vms: [Vm::Off; 3],
            start,
            layout,
            partitions,
        }
    }

    /// libvirt's cgroups are modelled: VMs under systemd with partitions.
    fn libvirt_cgroups(&self) -> bool {
        self.partitions && self.layout == Layout::Systemd
    }

    fn qemu_starts(&self, v: usize) {
        for (node, n) in pages(v) {
            self.b.kernel.consume(node, 2048, n);
        }
        if self.libvirt_cgroups() {
            let pins = [["1"], ["3"], ["0-3"]][v];
            self.b
                .kernel
                .cgroups(|c| c.libvirt_starts(NAMES[v], 400 + v as u32, &pins));
            return;
        }
        self.b.kernel.cgroups(|c| {
            let t = c.tasks[&300].clone();
            c.tasks.insert(400 + v as u32, t);
            c.cmdlines.insert(
                400 + v as u32,
                format!(
                    "/usr/bin/qemu-system-x86_64\0-name\0guest={},debug-threads=on\0",
                    NAMES[v]
                ),
            );
        });
    }

    fn qemu_exits(&self, v: usize) {
        if self.libvirt_cgroups() {
            self.b.kernel.cgroups(|c| c.libvirt_stops(400 + v as u32));
            for (node, n) in pages(v) {
                self.b.kernel.give_back(node, 2048, n);
            }
            return;
        }
        self.b.kernel.cgroups(|c| {
            c.cmdlines.remove(&(400 + v as u32));
            c.tasks.remove(&(400 + v as u32))
        });
        for (node, n) in pages(v) {
            self.b.kernel.give_back(node, 2048, n);
        }
    }

    /// Run one step; `Err` on a broken expectation.
    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let b = &self.b;
        match *step {
            Step::Prepare(v) if self.vms[v] == Vm::Off => {
                b.prepare(NAMES[v], &xml(v, false))
                    .map_err(|e| fail(format!("prepare {}: {e}", NAMES[v])))?;
                self.vms[v] = Vm::Prepared;
            }
            Step::Start(v) if self.vms[v] == Vm::Prepared => {
                self.qemu_starts(v);
                b.started(NAMES[v])
                    .map_err(|e| fail(format!("started {}: {e}", NAMES[v])))?;
                self.vms[v] = Vm::Running;
            }
            Step::Stop(v) if self.vms[v] != Vm::Off => {
                if self.vms[v] == Vm::Running {
                    self.qemu_exits(v);
                }
                b.release(NAMES[v])
                    .map_err(|e| fail(format!("release {}: {e}", NAMES[v])))?;
                self.vms[v] = Vm::Off;
            }
            Step::FailedPrepare(v) if self.vms[v] == Vm::Off => {
                let before = b.snapshot();
                if b.prepare(NAMES[v], &xml(v, true)).is_ok() {
                    return Err(fail(format!(
                        "prepare of a too large {} succeeded",
                        NAMES[v]
                    )));
                }
                let changed = diff(&before, &b.snapshot());
                prop_assert!(changed.is_empty(), "a refused prepare changed {changed:?}");
                b.release(NAMES[v]).unwrap();
            }
            Step::Crash { vm: v, kind, at } => self.crash(v, kind, at)?,
            Step::Reconnect => self.reconnect(None)?,
            Step::DriftThenReconnect => {
                let tuned = b.snapshot();
                self.drift();
                self.reconnect(Some(tuned))?;
            }
            Step::Recover => self.recover(None)?,
            Step::LivePin(v) if self.libvirt_cgroups() && self.vms[v] == Vm::Running => {
                self.live_pin(v)?
            }
            // A step libvirt would not take in this state (prepare of a running VM…).
            _ => {}
        }
        Ok(())
    }

    /// `Step::LivePin` of VM `v` (which isolates CPU 1 or 3, where its vCPU is pinned).
    fn live_pin(&self, v: usize) -> Result<(), TestCaseError> {
        let (b, qemu, cpu) = (&self.b, 400 + v as u32, ["1", "3"][v]);
        let mut watcher = kvmtune::watch::Watcher::new();
        let pinned = b
            .kernel
            .cgroups(|c| c.libvirt_pins_live(qemu, "emulator", cpu));
        prop_assert_eq!(pinned, Err(libc::EINVAL));
        // The partition cannot be made while the emulator is there: the pass fails.
        prop_assert!(
            b.watch(&mut watcher).is_err(),
            "a pass with the emulator on CPU {}",
            cpu
        );
        let stuck = b.kernel.cgroups(|c| c.stuck.clone());
        prop_assert!(stuck.is_empty(), "partitions left invalid: {:?}", stuck);
        b.kernel
            .cgroups(|c| c.libvirt_pins_live(qemu, "emulator", "0"))
            .map_err(|e| fail(format!("emulatorpin back: errno {e}")))?;
        b.watch(&mut watcher)
            .map_err(|e| fail(format!("the watcher once the emulator left CPU {cpu}: {e}")))?;
        Ok(())
    }

    /// Kill kvmtune at point `at` of an operation, then do what follows in real life.
    fn crash(&mut self, v: usize, kind: Kind, at: usize) -> Result<(), TestCaseError> {
        let name = NAMES[v];
        let (b, state) = (&self.b, self.vms[v]);
        let op: Box<dyn Fn() -> kvmtune::error::Result<()>> = match (kind, state) {
            (Kind::Prepare, Vm::Off) => Box::new(|| b.prepare(name, &xml(v, false)).map(|_| ())),
            (Kind::Started, Vm::Prepared) => {
                self.qemu_starts(v);
                Box::new(|| b.started(name))
            }
            (Kind::Release, Vm::Prepared | Vm::Running) => {
                if state == Vm::Running {
                    self.qemu_exits(v);
                }
                Box::new(|| b.release(name))
            }
            _ => return Ok(()),
        };
        common::quiet_injected_crashes();
        b.kernel.crash_at_point(Some(at));
        let outcome = catch_unwind(AssertUnwindSafe(&op));
        drop(op);
        b.kernel.crash_at_point(None);
        if outcome.is_ok() {
            // The operation had fewer points: it completed.
            self.vms[v] = match kind {
                Kind::Prepare => Vm::Prepared,
                Kind::Started => Vm::Running,
                Kind::Release => Vm::Off,
            };
            return Ok(());
        }
        self.journals_restorable()?;
        match kind {
            // libvirt saw the hook fail: QEMU is killed, and release follows.
            Kind::Prepare | Kind::Started => {
                if kind == Kind::Started {
                    self.qemu_exits(v);
                }
                b.release(name)
                    .map_err(|e| fail(format!("release after crash: {e}")))?;
            }
            // The VM is gone and libvirt will not call release again: recover (at boot, or
            // the admin) gives back what the killed release left.
            Kind::Release => {
                self.vms[v] = Vm::Off;
                return self.recover(Some(v));
            }
        }
        self.vms[v] = Vm::Off;
        Ok(())
    }

    /// `kvmtune recover`: releases every prepared VM (no QEMU runs for it) and `stopped`, the
    /// VM whose release was killed, if kvmtune still held it.
    fn recover(&mut self, stopped: Option<usize>) -> Result<(), TestCaseError> {
        let released = self
            .b
            .recover_all()
            .map_err(|e| fail(format!("recover: {e}")))?;
        for (v, state) in self.vms.iter_mut().enumerate() {
            let prepared = *state == Vm::Prepared;
            let named = released.contains(&NAMES[v].to_string());
            prop_assert!(
                named == prepared || (named && stopped == Some(v)),
                "recover released {:?}",
                released
            );
            if prepared {
                *state = Vm::Off;
            }
        }
        Ok(())
    }

    fn drift(&self) {
        let b = &self.b;
        for node in 0..2 {
            b.kernel.admin_set_pool(node, 2048, 0);
        }
        b.kernel.irqs(|i| {
            let online = i.online.clone();
            for irq in [40, 41, 16] {
                i.irqs.get_mut(&irq).unwrap().affinity = online.clone();
            }
        });
        let ours = match self.layout {
            Layout::V1 => "sys/fs/cgroup/cpuset/kvmtune",
            _ => "sys/fs/cgroup/kvmtune.housekeeping",
        };
        b.kernel.cgroups(|c| {
            let online = c.online.clone();
            if let Some(g) = c.cgroups.get_mut(ours) {
                g.cpus = online;
            }
            // Someone turns every partition back into a member.
            for g in c.cgroups.values_mut() {
                g.partition = common::cgroupfs::PartitionMode::Member;
            }
        });
    }

    /// Every running VM reconnects; with `tuned`, the host must be back to it after.
    fn reconnect(
        &self,
        tuned: Option<BTreeMap<std::path::PathBuf, Vec<u8>>>,
    ) -> Result<(), TestCaseError> {
        for (name, state) in NAMES.iter().zip(self.vms) {
            if state == Vm::Running {
                self.b
                    .started(name)
                    .map_err(|e| fail(format!("reconnect {name}: {e}")))?;
            }
        }
        // Drift of a host without running VMs is not kvmtune's to repair (prepared VMs' pages
        // are free and were shrunk away: their QEMU would fail, as without kvmtune).
        if let Some(tuned) = tuned {
            if self.vms.iter().all(|s| *s != Vm::Prepared) && self.vms.contains(&Vm::Running) {
                let d = diff(&tuned, &self.b.snapshot());
                prop_assert!(d.is_empty(), "reconnect left drift: {d:?}");
            } else {
                // Start from a clean slate for the other invariants.
                return Err(TestCaseError::reject("drift without running VMs"));
            }
        }
        Ok(())
    }

    /// Each journal a crash left parses and names only things that exist (or kernel objects
    /// that may vanish by themselves: IRQs, tasks, cgroups kvmtune creates, a VM's cgroups
    /// libvirt removes when it stops).
    fn journals_restorable(&self) -> Result<(), TestCaseError> {
        let journals = self
            .b
            .state()
            .journals()
            .map_err(|e| fail(format!("journals after a crash: {e}")))?;
        for j in journals {
            for change in &j.changes {
                if let Change::File { path, .. } = change {
                    let may_vanish = path.starts_with("proc/irq/")
                        || path.contains("/kvmtune")
                        || path.contains("/machine.slice/");
                    prop_assert!(
                        may_vanish || self.b.kernel.path().join(path).exists(),
                        "journal of {} names {path}, which does not exist",
                        j.vm
                    );
                }
            }
        }
        Ok(())
    }

    fn check(&self, after: &Step) -> Result<(), TestCaseError> {
        let b = &self.b;
        let ledger = b.ledger();
        // The ledger holds exactly the prepared and running VMs.
        for (v, state) in self.vms.iter().enumerate() {
            let held = ledger.vms.get(NAMES[v]).map(|h| h.phase);
            let want = match state {
                Vm::Off => None,
                Vm::Prepared => Some(Phase::Prepared),
                Vm::Running => Some(Phase::Running),
            };
            prop_assert_eq!(
                held,
                want,
                "after {:?}: ledger phase of {}",
                after,
                NAMES[v]
            );
        }
        prop_assert!(
            b.state_files().iter().all(|f| f == "ledger.json"),
            "after {:?}: state files {:?}",
            after,
            b.state_files()
        );
        // Housekeeping never empty; every task may run somewhere.
        if let Some(iso) = &ledger.isolation {
            prop_assert!(!iso.housekeeping.is_empty());
        }
        if self.libvirt_cgroups() {
            let held = ledger.isolated_except("");
            let running = (0..3)
                .filter(|v| self.vms[*v] == Vm::Running)
                .filter_map(|v| ledger.vms.get(NAMES[v]))
                .fold(Default::default(), |all: kvmtune::cpulist::CpuSet, h| {
                    all.union(&h.isolate)
                });
            let isolated = b.kernel.cgroups(|c| c.isolated());
            prop_assert!(
                isolated.is_subset(&held) && running.is_subset(&isolated),
                "after {:?}: the kernel isolates {}, running VMs {}, held {}",
                after,
                isolated,
                running,
                held
            );
        } else if self.partitions {
            let held = ledger.isolated_except("");
            let isolated = b.kernel.cgroups(|c| c.isolated());
            prop_assert_eq!(
                isolated,
                held,
                "after {:?}: the kernel's isolated CPUs",
                after
            );
        }
        let pids: Vec<u32> = b.kernel.cgroups(|c| c.tasks.keys().copied().collect());
        for pid in pids {
            let allowed = b.kernel.cgroups(|c| c.allowed(pid));
            prop_assert!(
                !allowed.is_empty(),
                "after {:?}: pid {} may run nowhere",
                after,
                pid
            );
        }
        // Pools: running VMs' pages in use, prepared VMs' pages free.
        for node in 0..2u32 {
            let (mut used, mut promised) = (0, 0);
            for (v, state) in self.vms.iter().enumerate() {
                for (n, p) in pages(v) {
                    if n == node {
                        match state {
                            Vm::Running => used += p,
                            Vm::Prepared => promised += p,
                            Vm::Off => {}
                        }
                    }
                }
            }
            let pool = b.kernel.pool(node, 2048);
            prop_assert_eq!(
                pool.nr - pool.free,
                used,
                "after {:?}: node {} in use",
                after,
                node
            );
            prop_assert!(
                pool.free >= promised,
                "after {:?}: node {} has {} free pages for {} promised",
                after,
                node,
                pool.free,
                promised
            );
        }
        if self.vms.iter().all(|s| *s == Vm::Off) {
            let d = diff(&self.start, &b.snapshot());
            prop_assert!(
                d.is_empty(),
                "after {:?}: no VM left, host differs: {:?}",
                after,
                d
            );
        }
        Ok(())
    }
}

fn run_sequence(layout: Layout, partitions: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut w = World::new(layout, partitions);
    for s in steps {
        w.run(s)?;
        w.check(s)?;
    }
    // The end: every VM stops; the host is as at the start, the state directory empty.
    for v in 0..3 {
        w.run(&Step::Stop(v))?;
    }
    w.check(&Step::Stop(2))?;
    prop_assert_eq!(w.b.state_files(), Vec::<String>::new());
    Ok(())
}

#[test]
fn random_lifecycles_with_crashes_keep_every_invariant() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut config = Config {
        cases,
        max_global_rejects: cases * 4,
        failure_persistence: None,
        ..Config::default()
    };
    // The suite explores the same sequences on every run, so that CI's verdict is the code's
    // and not the dice's; PROPTEST_RNG_SEED=N explores others.
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x6b76_6d74_756e);
    }
    let mut runner = TestRunner::new(config);
    let strategy = (
        prop_oneof![
            Just((Layout::V1, false)),
            Just((Layout::V2, false)),
            Just((Layout::V2, true)),
            Just((Layout::Systemd, true))
        ],
        prop::collection::vec(step(), 1..24),
    );
    runner
        .run(&strategy, |((layout, partitions), steps)| {
            run_sequence(layout, partitions, &steps)
        })
        .unwrap();
}

/// Found by the random test: VM a prepared, b prepared and started (kvmtune's cpuset narrowed),
/// `recover` releases a (the cpuset widened again: its `cpus` file is in the baseline), then b's
/// release is killed after it removed the cpuset. Finishing that release must not write the
/// removed cpuset's `cpus` back.
#[test]
fn release_killed_after_the_cpuset_is_gone_recovers() {
    let steps = [
        Step::Crash {
            vm: 0,
            kind: Kind::Prepare,
            at: 19,
        },
        Step::Prepare(1),
        Step::Start(1),
        Step::Recover,
        Step::Crash {
            vm: 1,
            kind: Kind::Release,
            at: 19,
        },
    ];
    run_sequence(Layout::V1, false, &steps).unwrap();
}

/// Found by the random test (libvirt's VMs, partitions, Debian 13's systemd): VM b prepared,
/// not yet started, while a runs; a stops, and systemd takes cpuset from machine.slice (no VM
/// scope is left) before its release narrows machine.slice's exclusive CPUs to b's. That list
/// went with the controller: release must not fail on it, and b's `started` sets it again.
#[test]
fn release_narrowing_machine_slice_after_systemd_took_its_cpuset_succeeds() {
    let steps = [
        Step::Prepare(1),
        Step::Prepare(0),
        Step::Start(0),
        Step::Stop(0),
        Step::Start(1),
    ];
    run_sequence(Layout::Systemd, true, &steps).unwrap();
}
