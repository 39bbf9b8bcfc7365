//! `kvmtune watch` on the kernel-modelling fake root: every kind of repair (late VFIO vectors,
//! reset IRQs, a process born in the root cgroup, a kernel thread born on every CPU, a rewritten cpuset or unit, a shrunk pool, a
//! changed knob, a VM whose QEMU died while libvirtd was down), each one line and one count;
//! a look that finds nothing takes no lock and writes nothing; what cannot be repaired is tried
//! once, not in a loop.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cgroupfs::{Layout, V1_MOUNT, V2_MOUNT};
use common::{diff, kernel, Bench, GIB};
use kvmtune::apply::{self, Recover};
use kvmtune::cpulist::CpuSet;
use kvmtune::state::stats::RepairKind;
use kvmtune::watch::look::GONE_GRACE;
use kvmtune::watch::{Pass, Watcher};

fn host(layout: Layout) -> Bench {
    Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(layout)
            .with_irqs(),
    )
}

/// A 64 MiB hugepage VM bound to node 1, its vCPU pinned to `cpu` and isolated there, with the
/// passthrough device 0000:06:00.0 whose IRQs go to its vCPU.
fn vm(name: &str, cpu: u32) -> String {
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory>\
         <memoryBacking><hugepages/></memoryBacking><vcpu>1</vcpu>\
         <cputune><vcpupin vcpu='0' cpuset='{cpu}'/></cputune>\
         <numatune><memory mode='strict' nodeset='1'/></numatune>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/><k:irq cpus='vcpus'/></k:tune></metadata>\
         <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
         <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev></devices></domain>"
    )
}

/// libvirt starts the VM: prepare, QEMU (the model's pid 300) runs named after it and takes its
/// 32 pages, started.
fn running(b: &Bench, name: &str, cpu: u32) {
    b.prepare(name, &vm(name, cpu)).unwrap();
    b.kernel.cgroups(|c| {
        c.cmdlines.insert(
            300,
            format!("/usr/bin/qemu-system-x86_64\0-name\0guest={name},debug-threads=on\0-S\0"),
        )
    });
    b.kernel.consume(1, 2048, 32);
    b.started(name).unwrap();
}

/// QEMU exits: its pages are free again and its process is gone.
fn qemu_exits(b: &Bench) {
    b.kernel.give_back(1, 2048, 32);
    b.kernel.cgroups(|c| c.cmdlines.remove(&300));
}

fn set(list: &str) -> CpuSet {
    CpuSet::parse(list).unwrap()
}

fn allowed(b: &Bench, pid: u32) -> CpuSet {
    b.kernel.cgroups(|c| c.allowed(pid))
}

fn affinity(b: &Bench, irq: u32) -> CpuSet {
    b.kernel.irqs(|i| i.irqs[&irq].affinity.clone())
}

fn kinds(pass: &Pass) -> Vec<RepairKind> {
    pass.repairs.iter().map(|r| r.kind).collect()
}

/// The pass made one repair, of `kind`, and its line says `says`; `what` names the case.
fn repaired_once(pass: &Pass, kind: RepairKind, says: &str, what: &str) {
    assert_eq!(kinds(pass), [kind], "{what}: {pass:?}");
    let line = &pass.repairs[0].line;
    assert!(line.contains(says), "{what}: {line}");
}

/// QEMU exits and libvirt releases `vm`: the host is byte for byte as at `start`.
fn released_as_before(b: &Bench, vm: &str, start: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    qemu_exits(b);
    b.release(vm).unwrap();
    assert_eq!(diff(start, &b.snapshot()), Vec::<String>::new(), "{what}");
}

/// A watcher that has had its first look at a host where everything holds.
fn settled(b: &Bench) -> Watcher {
    let mut w = Watcher::new();
    let first = b.watch(&mut w).unwrap();
    assert!(
        first.repairs.is_empty() && first.unrepaired.is_empty(),
        "nothing to repair on a settled host: {first:?}"
    );
    w
}

/// A file that looks like the temp file of a killed kvmtune: whoever takes the lock removes it
/// (`StateDir::repair`). While it stays, no one took the lock.
fn lock_probe(b: &Bench) -> std::path::PathBuf {
    let probe = common::state_path(b).join(".ledger.json.tmp999999");
    std::fs::write(&probe, "").unwrap();
    probe
}

fn repairs_counted(b: &Bench, kind: RepairKind) -> u64 {
    b.state()
        .counters()
        .repairs
        .get(kind.name())
        .copied()
        .unwrap_or(0)
}

#[test]
fn late_vfio_vectors_are_pinned_within_one_pass_in_one_line() {
    let b = host(Layout::V1);
    running(&b, "gpu", 3);
    let mut w = settled(&b);
    // The guest driver enables more MSI-X vectors: they show in /proc/interrupts only.
    b.kernel
        .irqs(|i| i.add_vfio_vectors("0000:06:00.0", &[50, 51]));
    let pass = b.watch(&mut w).unwrap();
    assert_eq!(kinds(&pass), [RepairKind::Irq], "{pass:?}");
    let line = &pass.repairs[0].line;
    assert!(
        line.contains("/proc/irq/50/smp_affinity_list") && line.contains("/proc/irq/51/"),
        "{line}"
    );
    assert_eq!((affinity(&b, 50), affinity(&b, 51)), (set("3"), set("3")));
    assert_eq!(repairs_counted(&b, RepairKind::Irq), 1);
    assert!(b.watch(&mut w).unwrap().repairs.is_empty(), "done once");
}

#[test]
fn a_device_irq_a_driver_reset_is_put_back_at_the_next_look() {
    let b = host(Layout::V1);
    running(&b, "gpu", 3);
    let mut w = settled(&b);
    b.kernel.irqs(|i| {
        i.irqs.get_mut(&41).unwrap().affinity = set("0-3");
        i.irqs.get_mut(&10).unwrap().affinity = set("0-3");
    });
    let pass = b.watch(&mut w).unwrap();
    assert_eq!(
        kinds(&pass),
        [RepairKind::Irq],
        "one line for the pass: {pass:?}"
    );
    assert_eq!(affinity(&b, 41), set("3"), "the device IRQ, on its vCPU");
    assert_eq!(
        affinity(&b, 10),
        set("0-2"),
        "another IRQ, put back by the same repair"
    );
}

/// Reading every IRQ of the host is most of what a look costs: other IRQs that came back onto
/// an isolated CPU are seen by the full look (every metrics.interval), and put back then.
#[test]
fn another_irq_back_on_the_isolated_cpu_is_put_back_at_the_next_full_look() {
    let b = host(Layout::V1);
    running(&b, "gpu", 3);
    let mut w = settled(&b);
    b.kernel
        .irqs(|i| i.irqs.get_mut(&10).unwrap().affinity = set("0-3"));
    assert!(
        b.watch(&mut w).unwrap().repairs.is_empty(),
        "not a cheap look's"
    );
    let later = Instant::now() + b.policy.metrics_interval + Duration::from_secs(1);
    let pass = b.watch_at(&mut w, later).unwrap();
    assert!(pass.metrics);
    assert_eq!(kinds(&pass), [RepairKind::Irq], "{pass:?}");
    assert_eq!(affinity(&b, 10), set("0-2"));
}

/// irqbalance restarted while a VM runs (a package upgrade): the new one starts from its own
/// set and would balance IRQs onto the isolated CPU every 10 s. The full look sees it free to
/// use that CPU and bans it again; a look that finds it banned repairs nothing.
#[test]
fn a_restarted_irqbalance_is_banned_from_isolated_cpus_again_at_the_next_full_look() {
    let b = host(Layout::V1);
    b.kernel.irqs(|i| {
        i.irqbalance = Some(set("0"));
        i.irqbalance_waits_for_round = true;
    });
    running(&b, "gpu", 3);
    let mut w = settled(&b);
    b.kernel.irqs(|i| i.irqbalance_round());
    b.kernel.irqs(|i| i.irqbalance_restart(set("0")));

    let later = Instant::now() + b.policy.metrics_interval + Duration::from_secs(1);
    let pass = b.watch_at(&mut w, later).unwrap();

    assert!(pass.metrics);
    assert_eq!(kinds(&pass), [RepairKind::Irq], "{pass:?}");
    let banned = b.kernel.irqs(|i| {
        i.irqbalance_round();
        i.irqbalance.clone()
    });
    assert_eq!(banned, Some(set("0,3")));
    let again = b
        .watch_at(&mut w, later + b.policy.metrics_interval)
        .unwrap();
    assert!(again.repairs.is_empty(), "{again:?}");
}

/// irqbalance narrows the other IRQs to some of the CPUs kvmtune left them (Debian 13: IRQ 25
/// on CPU 2 of 0-2): still off the isolated CPUs, so no broken promise and nothing to repair.
#[test]
fn another_irq_irqbalance_narrowed_within_the_housekeeping_cpus_is_no_drift() {
    let b = host(Layout::V1);
    running(&b, "gpu", 3);
    let mut w = settled(&b);
    b.kernel
        .irqs(|i| i.irqs.get_mut(&10).unwrap().affinity = set("2"));

    let later = Instant::now() + b.policy.metrics_interval + Duration::from_secs(1);
    let pass = b.watch_at(&mut w, later).unwrap();

    assert!(pass.metrics);
    assert!(pass.repairs.is_empty(), "{pass:?}");
    assert_eq!(affinity(&b, 10), set("2"));
    let status = b.status();
    assert!(status.verdict.kept, "{:?}", status.verdict);
}

#[test]
fn a_process_born_in_the_root_cgroup_on_a_cgroupfs_host_is_swept_within_one_pass() {
    for layout in [Layout::V1, Layout::V2] {
        let b = host(layout);
        let start = b.snapshot();
        running(&b, "rt", 3);
        let mut w = settled(&b);
        // A process started after isolation began, by something outside any cgroup.
        b.kernel.cgroups(|c| {
            let mut late = c.tasks[&100].clone();
            late.comm = "late".into();
            late.cgroup = c.mount().into();
            c.tasks.insert(500, late);
        });
        assert_eq!(allowed(&b, 500), set("0-3"), "{layout:?}: born on CPU 3");
        let pass = b.watch(&mut w).unwrap();
        repaired_once(
            &pass,
            RepairKind::Sweep,
            "pid 500 \"late\"",
            &format!("{layout:?}"),
        );
        assert_eq!(allowed(&b, 500), set("0-2"), "{layout:?}: swept");
        assert_eq!(repairs_counted(&b, RepairKind::Sweep), 1);
        // At release it goes back with the others, and the host is as it was.
        qemu_exits(&b);
        b.release("rt").unwrap();
        assert_eq!(allowed(&b, 500), set("0-3"), "{layout:?}");
        b.kernel.cgroups(|c| c.tasks.remove(&500));
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "{layout:?}"
        );
    }
}

#[test]
fn a_watcher_started_before_isolation_began_moves_itself_too() {
    let b = host(Layout::V1);
    let me = std::process::id();
    b.kernel.cgroups(|c| {
        let mut watcher = c.tasks[&100].clone();
        watcher.comm = "kvmtune".into();
        watcher.cgroup = V1_MOUNT.into();
        c.tasks.insert(me, watcher);
    });
    let mut w = Watcher::new();
    b.watch(&mut w).unwrap();
    running(&b, "rt", 3);
    // The hooks' sweep leaves out the process that makes it; in the model that is this test.
    assert_eq!(allowed(&b, me), set("0-3"));
    let pass = b.watch(&mut w).unwrap();
    assert_eq!(kinds(&pass), [RepairKind::Sweep], "{pass:?}");
    assert_eq!(allowed(&b, me), set("0-2"));
}

#[test]
fn a_rewritten_housekeeping_cpuset_is_put_back_and_release_still_restores_exactly() {
    let b = host(Layout::V1);
    let start = b.snapshot();
    running(&b, "rt", 3);
    let mut w = settled(&b);
    b.kernel.cgroups(|c| {
        c.cgroups
            .get_mut(&format!("{V1_MOUNT}/kvmtune"))
            .unwrap()
            .cpus = set("0-3")
    });
    assert_eq!(allowed(&b, 100), set("0-3"));
    let pass = b.watch(&mut w).unwrap();
    repaired_once(
        &pass,
        RepairKind::Isolation,
        "/sys/fs/cgroup/cpuset/kvmtune/cpuset.cpus: 0-3 -> 0-2",
        "a rewritten cpuset",
    );
    assert_eq!(allowed(&b, 100), set("0-2"));
    released_as_before(&b, "rt", &start, "after release");
}

#[test]
fn a_systemd_slice_someone_widened_is_confined_again_and_its_drop_in_still_goes_at_release() {
    let b = host(Layout::Systemd);
    let start = b.snapshot();
    running(&b, "rt", 3);
    let mut w = settled(&b);
    b.kernel.cgroups(|c| {
        c.systemctl_set("system.slice", "AllowedCPUs", "0-3")
            .unwrap()
    });
    assert_eq!(allowed(&b, 100), set("0-3"));
    let pass = b.watch(&mut w).unwrap();
    repaired_once(
        &pass,
        RepairKind::Isolation,
        "system.slice AllowedCPUs: 0-3 -> 0-2",
        "a widened slice",
    );
    assert_eq!(allowed(&b, 100), set("0-2"));
    released_as_before(&b, "rt", &start, "after release");
}

#[test]
fn a_pool_someone_shrank_is_grown_back() {
    let b = host(Layout::V1);
    running(&b, "db", 3);
    let mut w = settled(&b);
    // The admin writes 0: the VM's pages are in use, so they become surplus pages, which
    // would vanish when the VM stops.
    b.kernel.admin_set_pool(1, 2048, 0);
    assert_eq!(b.kernel.pool(1, 2048).surplus, 32);
    let pass = b.watch(&mut w).unwrap();
    assert_eq!(kinds(&pass), [RepairKind::Hugepages], "{pass:?}");
    let pool = b.kernel.pool(1, 2048);
    assert_eq!((pool.nr - pool.surplus, pool.surplus), (32, 0));
}

#[test]
fn a_knob_someone_changed_is_set_back_to_the_held_value() {
    let b = host(Layout::V1).with_policy("[thp]\nenabled = \"never\"\n");
    running(&b, "rt", 3);
    let thp = |b: &Bench| b.kernel.knobs(|k| k.thp.as_ref().unwrap().enabled.clone());
    assert_eq!(thp(&b), "never", "held for the isolated VM");
    let mut w = settled(&b);
    b.kernel
        .knobs(|k| k.thp.as_mut().unwrap().enabled = "always".into());
    let pass = b.watch(&mut w).unwrap();
    assert_eq!(kinds(&pass), [RepairKind::Knob], "{pass:?}");
    assert_eq!(thp(&b), "never");
}

/// libvirtd is stopped; QEMU is killed; nobody calls release. The watcher sees the VM run in
/// the ledger with no QEMU for `GONE_GRACE` (libvirt's own release would have come by then),
/// and releases it: pools, CPUs and IRQs back, exactly.
#[test]
fn a_vm_whose_qemu_died_while_libvirtd_was_down_is_released_after_the_grace() {
    let b = host(Layout::V1);
    let start = b.snapshot();
    running(&b, "rt", 3);
    let mut w = settled(&b);
    qemu_exits(&b);
    let t0 = Instant::now();
    // On a normal stop libvirt's own release comes a moment after QEMU exits: not the
    // watcher's to make.
    let soon = b.watch_at(&mut w, t0).unwrap();
    assert!(soon.repairs.is_empty(), "{soon:?}");
    assert!(b.ledger().vms.contains_key("rt"));
    let almost = b.watch_at(&mut w, t0 + GONE_GRACE / 2).unwrap();
    assert!(almost.repairs.is_empty(), "{almost:?}");
    let pass = b.watch_at(&mut w, t0 + GONE_GRACE).unwrap();
    assert_eq!(kinds(&pass), [RepairKind::GoneVm], "{pass:?}");
    assert!(pass.repairs[0].line.contains("released VM 'rt'"));
    assert!(b.ledger().vms.is_empty());
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
    assert_eq!(repairs_counted(&b, RepairKind::GoneVm), 1);
    // libvirtd comes back and calls release: nothing left to do.
    b.release("rt").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn a_vm_whose_qemu_is_back_within_the_grace_is_kept() {
    let b = host(Layout::V1);
    running(&b, "rt", 3);
    let mut w = settled(&b);
    let t0 = Instant::now();
    b.kernel.cgroups(|c| c.cmdlines.remove(&300));
    assert!(b.watch_at(&mut w, t0).unwrap().repairs.is_empty());
    // (libvirt restarted it: prepare and started again, a new QEMU)
    b.kernel.cgroups(|c| {
        c.cmdlines.insert(
            300,
            "/usr/bin/qemu-system-x86_64\0-name\0guest=rt,debug-threads=on\0".into(),
        )
    });
    assert!(b
        .watch_at(&mut w, t0 + GONE_GRACE / 2)
        .unwrap()
        .repairs
        .is_empty());
    b.kernel.cgroups(|c| c.cmdlines.remove(&300));
    let pass = b.watch_at(&mut w, t0 + GONE_GRACE).unwrap();
    assert!(pass.repairs.is_empty(), "the grace starts again: {pass:?}");
    assert!(b.ledger().vms.contains_key("rt"));
}

#[test]
fn a_prepared_vm_has_no_qemu_yet_and_is_not_released() {
    let b = host(Layout::V1);
    b.prepare("rt", &vm("rt", 3)).unwrap();
    let mut w = Watcher::new();
    let pass = b.watch(&mut w).unwrap();
    assert!(!kinds(&pass).contains(&RepairKind::GoneVm), "{pass:?}");
    assert!(b.ledger().vms.contains_key("rt"));
}

/// The look runs without the lock: a VM it saw without QEMU may have been started again before
/// the repair takes the lock. Under the lock, a VM whose QEMU runs is kept.
#[test]
fn under_the_lock_a_vm_whose_qemu_runs_again_is_not_released() {
    let b = host(Layout::V1);
    running(&b, "rt", 3);
    let state = b.state();
    let base = b.base(&state);
    let released = apply::recover(&base, Recover::Gone(&["rt".to_string()])).unwrap();
    assert!(released.is_empty());
    assert!(b.ledger().vms.contains_key("rt"));
}

#[test]
fn a_look_that_finds_nothing_takes_no_lock_and_changes_nothing() {
    let b = host(Layout::V1);
    running(&b, "rt", 3);
    let mut w = settled(&b);
    let probe = lock_probe(&b);
    let writes = b.kernel.writes().len();
    let points = b.kernel.points();
    for _ in 0..3 {
        let pass = b.watch(&mut w).unwrap();
        assert!(pass.repairs.is_empty() && pass.unrepaired.is_empty());
    }
    assert!(probe.exists(), "the lock was taken");
    assert_eq!(b.kernel.writes().len(), writes, "a host file was written");
    assert_eq!(b.kernel.points(), points, "a state file was written");
    // The probe does see the lock: a repair takes it.
    b.kernel
        .irqs(|i| i.irqs.get_mut(&41).unwrap().affinity = set("0-3"));
    b.watch(&mut w).unwrap();
    assert!(!probe.exists());
}

/// A release killed midway (libvirt's, or recover's): the host is half given back, which the
/// watcher's look sees as drift. Taking the lock finishes the release first; with nothing left
/// to repair, nothing is reported as beyond repair.
#[test]
fn a_release_killed_midway_is_finished_under_the_lock_and_not_reported() {
    common::quiet_injected_crashes();
    let b = host(Layout::V1);
    let start = b.snapshot();
    running(&b, "rt", 3);
    let mut w = settled(&b);
    qemu_exits(&b);
    b.kernel.crash_at_write(Some(2));
    assert!(catch_unwind(AssertUnwindSafe(|| b.release("rt"))).is_err());
    assert!(
        b.ledger().vms.contains_key("rt"),
        "the release did not commit"
    );
    let probe = lock_probe(&b);
    let pass = b.watch(&mut w).unwrap();
    assert!(
        !probe.exists(),
        "the look saw the half-restored host and took the lock"
    );
    assert!(
        pass.repairs.is_empty() && pass.unrepaired.is_empty(),
        "{pass:?}"
    );
    assert!(
        b.ledger().vms.is_empty(),
        "the interrupted release was finished"
    );
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

/// A device IRQ that turned managed refuses every write: the repair changes nothing. It is
/// said once and not tried again while it stays so: no lock taken every interval.
#[test]
fn what_cannot_be_repaired_is_tried_once_then_left_until_it_changes() {
    let b = host(Layout::V1);
    running(&b, "gpu", 3);
    let mut w = settled(&b);
    b.kernel.irqs(|i| {
        let irq = i.irqs.get_mut(&41).unwrap();
        irq.managed = true;
        irq.affinity = set("0-3");
    });
    let first = b.watch(&mut w).unwrap();
    assert!(first.repairs.is_empty(), "{first:?}");
    assert_eq!(first.unrepaired.len(), 1, "{first:?}");
    assert_eq!(first.unrepaired[0].kind, RepairKind::Irq);
    let probe = lock_probe(&b);
    for _ in 0..3 {
        let pass = b.watch(&mut w).unwrap();
        assert!(
            pass.repairs.is_empty() && pass.unrepaired.is_empty(),
            "{pass:?}"
        );
    }
    assert!(
        probe.exists(),
        "the lock was taken again for the same finding"
    );
    // Something else comes up: that is repaired as usual.
    b.kernel
        .irqs(|i| i.irqs.get_mut(&40).unwrap().affinity = set("0-3"));
    assert_eq!(kinds(&b.watch(&mut w).unwrap()), [RepairKind::Irq]);
    assert_eq!(affinity(&b, 40), set("3"));
}

/// A movable kernel thread put back on the isolated CPU: the cheap look does not read every
/// task, the full look (when the metrics are written) does, and the next pass confines it.
#[test]
fn a_kernel_thread_moved_back_is_confined_after_the_next_full_look() {
    let b = host(Layout::V1);
    running(&b, "rt", 3);
    let mut w = settled(&b);
    b.kernel
        .cgroups(|c| c.set_affinity(4, &set("0-3")).unwrap());
    assert_eq!(allowed(&b, 4), set("0-3"));
    let cheap = b.watch(&mut w).unwrap();
    assert!(cheap.repairs.is_empty(), "not seen by the cheap look");
    let later = Instant::now() + b.policy.metrics_interval + Duration::from_secs(1);
    let full = b.watch_at(&mut w, later).unwrap();
    assert!(full.metrics, "the full look is due");
    let pass = b.watch_at(&mut w, later).unwrap();
    repaired_once(
        &pass,
        RepairKind::Isolation,
        "task 4 (kswapd0)",
        "a kernel thread moved back",
    );
    assert_eq!(allowed(&b, 4), set("0-2"));
}

/// A kernel thread a driver starts while the VM runs (virtio-rng's hwrng, seen in the guest
/// tier): the kernel gives a new kernel thread every CPU, not kthreadd's confined mask. The next
/// pass confines it, once, on every layout; release gives it back the CPUs it was born with.
#[test]
fn a_kernel_thread_born_after_isolation_is_confined_within_one_pass() {
    for layout in [Layout::V1, Layout::V2, Layout::Systemd] {
        let b = host(layout);
        let start = b.snapshot();
        running(&b, "rt", 3);
        let mut w = settled(&b);
        assert_eq!(allowed(&b, 2), set("0-2"), "{layout:?}: kthreadd confined");
        b.kernel.cgroups(|c| {
            let mut hwrng = c.tasks[&4].clone();
            hwrng.comm = "hwrng".into();
            hwrng.mask = set("0-3");
            c.tasks.insert(600, hwrng);
        });
        let pass = b.watch(&mut w).unwrap();
        repaired_once(
            &pass,
            RepairKind::Isolation,
            "task 600 (hwrng)",
            &format!("{layout:?}"),
        );
        assert_eq!(allowed(&b, 600), set("0-2"), "{layout:?}: confined");
        let again = b.watch(&mut w).unwrap();
        assert!(again.repairs.is_empty(), "{layout:?}: {again:?}");
        qemu_exits(&b);
        b.release("rt").unwrap();
        assert_eq!(allowed(&b, 600), set("0-3"), "{layout:?}: as born");
        b.kernel.cgroups(|c| c.tasks.remove(&600));
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "{layout:?}"
        );
    }
}

/// `irq-watch`, the old name, keeps doing what it did: IRQs only.
#[test]
fn irq_watch_pins_irqs_and_leaves_the_rest_to_watch() {
    let b = host(Layout::V2);
    running(&b, "gpu", 3);
    let mut w = Watcher::irqs_only();
    b.kernel.irqs(|i| i.add_vfio_vectors("0000:06:00.0", &[50]));
    b.kernel.cgroups(|c| {
        let mut late = c.tasks[&100].clone();
        late.cgroup = V2_MOUNT.into();
        c.tasks.insert(500, late);
    });
    qemu_exits(&b);
    let pass = b.watch(&mut w).unwrap();
    assert_eq!(kinds(&pass), [RepairKind::Irq]);
    assert!(!pass.metrics);
    assert_eq!(affinity(&b, 50), set("3"));
    assert_eq!(allowed(&b, 500), set("0-3"), "no sweep");
    assert!(b.ledger().vms.contains_key("gpu"), "no release");
}
