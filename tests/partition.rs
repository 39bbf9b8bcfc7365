//! The `partition` isolation method on the kernel-modelling fake (a kernel with isolated
//! partitions): a VM `kvmtune run` starts gets kvmtune's partition (cgroup v2 without systemd),
//! a VM libvirt starts gets one partition per vCPU inside libvirt's cgroups (cgroup v2 under
//! systemd), host tasks lose those CPUs without being moved, kernel threads are still moved, an
//! invalid partition fails the start with the kernel's reason, and release restores every byte.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::cgroupfs::{Layout, TaskModel, PF_KTHREAD, V2_MOUNT};
use common::libvirt::{scope, vcpu_tid};
use common::partition::NO_CPUS;
use common::{diff, kernel, Bench, GIB};
use kvmtune::cpulist::CpuSet;
use kvmtune::error::Error;
use kvmtune::host::HostFs;
use kvmtune::state::holds::Method;

const PARTITION: &str = "sys/fs/cgroup/kvmtune.isolated";
const QEMU: u32 = 400;

/// Two nodes (CPUs 0-1, 2-3), cgroup v2 without systemd, a kernel with partitions.
fn host() -> Bench {
    Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(Layout::V2)
            .with_partitions(),
    )
}

/// A VM that isolates `cpus`.
fn vm(name: &str, cpus: &str) -> String {
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='{cpus}'/></k:tune></metadata></domain>"
    )
}

fn set(list: &str) -> CpuSet {
    CpuSet::parse(list).unwrap()
}

fn read(b: &Bench, rel: &str) -> String {
    b.kernel.read(rel).unwrap().trim().to_string()
}

/// `kvmtune run` started the QEMU of `vm` in the partition (on the isolated CPU 3) and
/// recorded its PID.
fn qemu_runs(b: &Bench, vm: &str) {
    b.kernel.cgroups(|c| {
        c.tasks.insert(
            QEMU,
            TaskModel {
                comm: "qemu-system-x86".into(),
                flags: 0x400100,
                mask: set("3"),
                cgroup: PARTITION.to_string(),
            },
        );
        c.cmdlines.insert(
            QEMU,
            format!("/usr/bin/qemu-system-x86_64\0-name\0guest={vm}\0"),
        );
    });
    let state = b.state();
    let mut ledger = state.load_ledger().unwrap();
    ledger.vms.get_mut(vm).unwrap().pid = Some(QEMU);
    state.save_ledger(&ledger).unwrap();
}

/// That QEMU exits.
fn qemu_exits(b: &Bench) {
    b.kernel.cgroups(|c| {
        c.cmdlines.remove(&QEMU);
        c.tasks.remove(&QEMU)
    });
}

fn method(b: &Bench) -> Method {
    b.ledger().isolation.expect("isolation held").method
}

#[test]
fn a_vm_kvmtune_run_starts_gets_an_isolated_partition_and_release_restores_every_byte() {
    let b = host().under_kvmtune_run();
    let start = b.snapshot();

    b.prepare("run1", &vm("run1", "3")).unwrap();

    assert_eq!(method(&b), Method::Partition);
    assert_eq!(
        read(&b, &format!("{PARTITION}/cpuset.cpus.partition")),
        "isolated"
    );
    assert_eq!(read(&b, &format!("{PARTITION}/cpuset.cpus.exclusive")), "3");
    assert_eq!(read(&b, &format!("{V2_MOUNT}/cpuset.cpus.isolated")), "3");
    b.kernel.cgroups(|c| {
        // sshd stays in the root cgroup and loses CPU 3 all the same.
        assert_eq!(c.tasks[&100].cgroup, V2_MOUNT);
        assert_eq!(c.allowed(100), set("0-2"));
        // kswapd0 (an unbound kernel thread) is off the partition; the unbound workqueue
        // mask, which the kernel moves itself only from 6.8, is moved.
        assert_eq!(c.allowed(4), set("0-2"));
        assert_eq!(c.workqueue, set("0-2"));
    });

    b.release("run1").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn no_host_process_is_moved_into_a_housekeeping_cgroup() {
    let b = host().under_kvmtune_run();
    b.prepare("run1", &vm("run1", "3")).unwrap();
    let moved: Vec<String> = b
        .kernel
        .writes()
        .into_iter()
        .filter(|(path, _)| path.ends_with("cgroup.procs"))
        .map(|(path, pid)| format!("{path} {pid}"))
        .collect();
    assert_eq!(moved, Vec::<String>::new());
    assert!(!b.kernel.exists("sys/fs/cgroup/kvmtune.housekeeping"));
}

#[test]
fn a_process_started_later_never_reaches_the_isolated_cpus() {
    let b = host().under_kvmtune_run();
    b.prepare("run1", &vm("run1", "3")).unwrap();
    b.kernel.cgroups(|c| {
        let mut late = c.tasks[&101].clone();
        late.comm = "late".into();
        c.tasks.insert(500, late);
        assert_eq!(c.allowed(500), set("0-2"));
    });
}

#[test]
fn qemu_in_the_partition_runs_on_the_isolated_cpus() {
    let b = host().under_kvmtune_run();
    b.prepare("run1", &vm("run1", "3")).unwrap();
    // What `kvmtune run` does between fork and exec (`placement::enter_partition`).
    b.kernel.cgroups(|c| {
        c.tasks.insert(
            QEMU,
            TaskModel {
                comm: "qemu-system-x86".into(),
                flags: 0x400100,
                mask: set("0-3"),
                cgroup: V2_MOUNT.to_string(),
            },
        )
    });
    kvmtune::launch::placement::enter_partition(&b.kernel, QEMU).unwrap();
    b.kernel.cgroups(|c| {
        assert_eq!(c.tasks[&QEMU].cgroup, PARTITION);
        assert_eq!(c.allowed(QEMU), set("3"));
    });
}

#[test]
fn an_invalid_partition_fails_the_start_with_the_kernels_reason_and_changes_nothing() {
    let b = host().under_kvmtune_run();
    // An operator's partition holds CPUs 0-2: the root would keep no CPU for its own tasks.
    b.kernel.cgroups(|c| {
        c.cgroups
            .get_mut(V2_MOUNT)
            .unwrap()
            .subtree
            .insert("cpuset".into());
        c.create(&format!("{V2_MOUNT}/admin")).unwrap().unwrap();
        c.set_exclusive(&format!("{V2_MOUNT}/admin"), "0-2")
            .unwrap();
        c.set_partition(&format!("{V2_MOUNT}/admin"), "root")
            .unwrap();
    });
    let start = b.snapshot();

    let err = b.prepare("run1", &vm("run1", "3")).unwrap_err();

    let text = err.to_string();
    assert!(matches!(err, Error::Refused(_)), "{text}");
    assert!(
        text.contains(&format!(
            "CPUs 3 an isolated partition: {NO_CPUS} (/sys/fs/cgroup/kvmtune.isolated/cpuset.cpus.partition reads 'isolated invalid')"
        )),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert!(b.ledger().vms.is_empty());
}

#[test]
fn a_second_vm_widens_the_partition_and_the_first_release_narrows_it() {
    let b = host().under_kvmtune_run();
    let start = b.snapshot();
    b.prepare("a", &vm("a", "3")).unwrap();
    b.prepare("b", &vm("b", "1")).unwrap();
    assert_eq!(
        read(&b, &format!("{PARTITION}/cpuset.cpus.effective")),
        "1,3"
    );
    assert_eq!(read(&b, &format!("{V2_MOUNT}/cpuset.cpus.isolated")), "1,3");

    b.release("a").unwrap();
    assert_eq!(
        read(&b, &format!("{PARTITION}/cpuset.cpus.partition")),
        "isolated"
    );
    assert_eq!(read(&b, &format!("{V2_MOUNT}/cpuset.cpus.isolated")), "1");
    b.kernel
        .cgroups(|c| assert_eq!(c.allowed(100), set("0,2-3")));

    b.release("b").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn auto_falls_back_on_a_kernel_without_partitions_and_says_why() {
    let b = Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]).with_cgroups(Layout::V2))
        .under_kvmtune_run();
    b.prepare("run1", &vm("run1", "3")).unwrap();
    let hold = b.ledger().isolation.unwrap();
    assert_eq!(hold.method, Method::CgroupV2);
    assert!(hold.why.contains("cpuset.cpus.isolated"), "{}", hold.why);
}

#[test]
fn the_partition_policy_refuses_a_kernel_without_partitions_and_changes_nothing() {
    let b = Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]).with_cgroups(Layout::V2))
        .under_kvmtune_run()
        .with_policy("[cpus]\nisolation = \"partition\"\n");
    let start = b.snapshot();
    let err = b.prepare("run1", &vm("run1", "3")).unwrap_err().to_string();
    assert!(err.contains("cpus.isolation = \"partition\""), "{err}");
    assert!(err.contains("cpuset.cpus.isolated"), "{err}");
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn status_names_the_method_and_why_it_was_chosen() {
    let b = host().under_kvmtune_run();
    b.prepare("run1", &vm("run1", "3")).unwrap();
    let text = kvmtune::status::render(&b.status());
    assert!(
        text.contains("isolated CPUs 3 with isolated cpuset partition"),
        "{text}"
    );
    assert!(
        text.contains("method chosen: auto: the kernel offers isolated partitions"),
        "{text}"
    );
}

#[test]
fn other_irqs_and_irqbalance_leave_the_isolated_cpus_with_a_partition_too() {
    let b = Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(Layout::V2)
            .with_partitions()
            .with_irqs(),
    )
    .under_kvmtune_run();
    b.kernel.irqs(|i| i.irqbalance = Some(set("0")));
    let start = b.snapshot();

    b.prepare("run1", &vm("run1", "3")).unwrap();
    b.started("run1").unwrap();

    assert_eq!(method(&b), Method::Partition);
    b.kernel.irqs(|i| {
        assert_eq!(i.irqs[&10].affinity, set("0-2"));
        assert_eq!(i.default_affinity, set("0-2"));
        assert_eq!(i.irqbalance, Some(set("0,3")));
    });
    b.release("run1").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn the_watcher_sees_nothing_to_repair_while_the_partition_holds() {
    let b = host().under_kvmtune_run();
    b.prepare("run1", &vm("run1", "3")).unwrap();
    qemu_runs(&b, "run1");
    b.started("run1").unwrap();
    let mut w = kvmtune::watch::Watcher::new();
    let pass = b.watch(&mut w).unwrap();
    assert!(
        pass.repairs.is_empty() && pass.unrepaired.is_empty(),
        "{pass:?}"
    );
    let text = kvmtune::status::render(&b.status());
    assert!(b.status().verdict.kept, "{text}");
}

#[test]
fn a_partition_someone_turned_back_into_a_member_is_made_isolated_again() {
    let b = host().under_kvmtune_run();
    let start = b.snapshot();
    b.prepare("run1", &vm("run1", "3")).unwrap();
    qemu_runs(&b, "run1");
    b.started("run1").unwrap();
    let mut w = kvmtune::watch::Watcher::new();
    b.watch(&mut w).unwrap();
    b.kernel
        .write(&format!("{PARTITION}/cpuset.cpus.partition"), "member")
        .unwrap();
    assert!(!b.status().verdict.kept);

    let pass = b.watch(&mut w).unwrap();

    assert_eq!(pass.repairs.len(), 1, "{pass:?}");
    assert_eq!(
        read(&b, &format!("{PARTITION}/cpuset.cpus.partition")),
        "isolated"
    );
    b.kernel.cgroups(|c| {
        assert_eq!(c.allowed(100), set("0-2"));
        assert_eq!(c.allowed(QEMU), set("3"));
    });
    qemu_exits(&b);
    b.release("run1").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

/// A systemd host with cgroup v2 and partitions, as the Debian 13 hypervisor: libvirt's VMs.
fn libvirt_host() -> Bench {
    Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(Layout::Systemd)
            .with_partitions()
            .with_cpuset_unused(),
    )
}

/// A VM whose vCPU N is pinned to `pins[N]`, isolating its vCPUs' CPUs.
fn pinned_vm(name: &str, pins: &[&str]) -> String {
    let cputune: String = pins
        .iter()
        .enumerate()
        .map(|(n, cpus)| format!("<vcpupin vcpu='{n}' cpuset='{cpus}'/>"))
        .collect();
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory><vcpu>{}</vcpu>\
         <cputune>{cputune}</cputune>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/></k:tune></metadata></domain>",
        pins.len()
    )
}

const LIBVIRT_QEMU: u32 = 600;

/// libvirt's VM `vm` (QEMU `LIBVIRT_QEMU`) stops and is released: the host is as at `start`.
fn stops_as_at_start(b: &Bench, vm: &str, start: &BTreeMap<PathBuf, Vec<u8>>) {
    b.kernel.cgroups(|c| c.libvirt_stops(LIBVIRT_QEMU));
    b.release(vm).unwrap();
    assert_eq!(diff(start, &b.snapshot()), Vec::<String>::new());
}

/// libvirt starts VM "lv", its one vCPU pinned to CPU 3, which it isolates.
fn start_on_cpu_3(b: &Bench) {
    b.prepare("lv", &pinned_vm("lv", &["3"])).unwrap();
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["3"]));
    b.started("lv").unwrap();
}

fn exclusive(b: &Bench, dir: &str) -> String {
    read(b, &format!("{dir}/cpuset.cpus.exclusive"))
}

#[test]
fn a_vm_libvirt_starts_gets_one_isolated_partition_per_vcpu_and_release_restores_every_byte() {
    let b = libvirt_host();
    let start = b.snapshot();
    b.prepare("lv", &pinned_vm("lv", &["1", "3"])).unwrap();
    assert_eq!(method(&b), Method::Partition);
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["1", "3"]));

    b.started("lv").unwrap();

    let scope = scope("lv");
    assert_eq!(exclusive(&b, "sys/fs/cgroup/machine.slice"), "1,3");
    assert_eq!(exclusive(&b, &scope), "1,3");
    assert_eq!(exclusive(&b, &format!("{scope}/libvirt")), "1,3");
    for (n, cpu) in [(0, "1"), (1, "3")] {
        let vcpu = format!("{scope}/libvirt/vcpu{n}");
        assert_eq!(exclusive(&b, &vcpu), cpu);
        assert_eq!(
            read(&b, &format!("{vcpu}/cpuset.cpus.partition")),
            "isolated"
        );
    }
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "1,3");
    b.kernel.cgroups(|c| {
        assert_eq!(c.allowed(vcpu_tid(LIBVIRT_QEMU, 0)), set("1"));
        assert_eq!(c.allowed(vcpu_tid(LIBVIRT_QEMU, 1)), set("3"));
        // sshd and QEMU's emulator thread lose the CPUs; no unit was given AllowedCPUs.
        assert_eq!(c.allowed(100), set("0,2"));
        assert_eq!(c.allowed(LIBVIRT_QEMU), set("0,2"));
        assert_eq!(c.systemctl_calls, Vec::<String>::new());
    });

    stops_as_at_start(&b, "lv", &start);
}

#[test]
fn an_invalid_vcpu_partition_fails_started_with_the_kernels_reason_and_changes_nothing() {
    // (Kernel threads stay where they are: the kernel would refuse them the housekeeping CPUs,
    // which the operator's partition holds.)
    let b = libvirt_host().with_policy("[cpus]\nmove_kernel_threads = false\n");
    // An operator's partition holds CPUs 0 and 2: the root would keep no CPU once the VM's
    // second vCPU partition takes CPU 3.
    b.kernel.cgroups(|c| {
        let admin = format!("{V2_MOUNT}/admin");
        c.create(&admin).unwrap().unwrap();
        c.set_exclusive(&admin, "0,2").unwrap();
        c.set_partition(&admin, "root").unwrap();
    });
    b.prepare("lv", &pinned_vm("lv", &["1", "3"])).unwrap();
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["1", "3"]));
    let prepared = b.snapshot();

    let err = b.started("lv").unwrap_err().to_string();

    assert!(
        err.contains(&format!(
            "CPUs 3 an isolated partition: {NO_CPUS} (/{}/libvirt/vcpu1/cpuset.cpus.partition reads 'isolated invalid')",
            scope("lv")
        )),
        "{err}"
    );
    assert_eq!(diff(&prepared, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn a_second_libvirt_vm_widens_machine_slices_exclusive_cpus_and_the_first_to_go_narrows_them() {
    let b = libvirt_host();
    let start = b.snapshot();
    b.prepare("a", &pinned_vm("a", &["3"])).unwrap();
    b.kernel.cgroups(|c| c.libvirt_starts("a", 601, &["3"]));
    b.started("a").unwrap();
    b.prepare("b", &pinned_vm("b", &["1"])).unwrap();
    b.kernel.cgroups(|c| c.libvirt_starts("b", 602, &["1"]));
    b.started("b").unwrap();
    assert_eq!(exclusive(&b, "sys/fs/cgroup/machine.slice"), "1,3");
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "1,3");

    b.kernel.cgroups(|c| c.libvirt_stops(601));
    b.release("a").unwrap();
    assert_eq!(exclusive(&b, "sys/fs/cgroup/machine.slice"), "1");
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "1");
    b.kernel
        .cgroups(|c| assert_eq!(c.allowed(vcpu_tid(602, 0)), set("1")));

    b.kernel.cgroups(|c| c.libvirt_stops(602));
    b.release("b").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn a_vcpu_partition_someone_turned_back_into_a_member_is_made_isolated_again_by_the_watcher() {
    let b = libvirt_host();
    let start = b.snapshot();
    start_on_cpu_3(&b);
    let mut w = kvmtune::watch::Watcher::new();
    let first = b.watch(&mut w).unwrap();
    assert!(first.repairs.is_empty(), "{first:?}");
    let vcpu = format!("{}/libvirt/vcpu0", scope("lv"));
    b.kernel
        .write(&format!("{vcpu}/cpuset.cpus.partition"), "member")
        .unwrap();
    b.kernel.cgroups(|c| assert_eq!(c.allowed(100), set("0-3")));

    let pass = b.watch(&mut w).unwrap();

    assert_eq!(pass.repairs.len(), 1, "{pass:?}");
    assert_eq!(
        read(&b, &format!("{vcpu}/cpuset.cpus.partition")),
        "isolated"
    );
    b.kernel.cgroups(|c| assert_eq!(c.allowed(100), set("0-2")));
    stops_as_at_start(&b, "lv", &start);
}

#[test]
fn status_keeps_its_promise_while_a_libvirt_vm_is_prepared_and_once_it_runs() {
    let b = libvirt_host();
    b.prepare("lv", &pinned_vm("lv", &["3"])).unwrap();
    let prepared = b.status();
    assert!(
        prepared.verdict.kept,
        "{}",
        kvmtune::status::render(&prepared)
    );
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["3"]));
    b.started("lv").unwrap();
    let running = b.status();
    assert!(
        running.verdict.kept,
        "{}",
        kvmtune::status::render(&running)
    );
}

#[test]
fn two_vms_on_one_cpu_are_refused_even_where_the_policy_allows_overlap() {
    let b = libvirt_host().with_policy("[cpus]\noverlap = \"allow\"\n");
    b.prepare("a", &pinned_vm("a", &["3"])).unwrap();
    let before = b.snapshot();
    let err = b
        .prepare("b", &pinned_vm("b", &["3"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("VM 'b' and VM 'a' both isolate CPUs 3"),
        "{err}"
    );
    assert_eq!(diff(&before, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn libvirts_pid_file_is_trusted_only_while_that_process_names_the_vm() {
    let b = libvirt_host();
    b.prepare("lv", &pinned_vm("lv", &["3"])).unwrap();
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["3"]));
    let mounts = kvmtune::host::cgroup::detect(&b.kernel).unwrap();
    let found = |b: &Bench| kvmtune::isolation::partition::libvirt_cgroup(&b.kernel, &mounts, "lv");
    let libvirt = Some(format!("{}/libvirt", scope("lv")));

    common::kernel::put(
        b.kernel.path(),
        "run/libvirt/qemu/lv.pid",
        &format!("{LIBVIRT_QEMU}\n"),
    );
    assert_eq!(found(&b), libvirt);
    // A stale file whose PID is now sshd's: QEMU is found by its command line.
    common::kernel::put(b.kernel.path(), "run/libvirt/qemu/lv.pid", "100\n");
    assert_eq!(found(&b), libvirt);
}

#[test]
fn vcpu_cgroups_without_cpuset_files_fail_started_in_one_line_and_change_nothing() {
    let b = libvirt_host();
    b.prepare("lv", &pinned_vm("lv", &["3"])).unwrap();
    b.kernel.cgroups(|c| {
        c.libvirt_starts("lv", LIBVIRT_QEMU, &["3"]);
        let libvirt = format!("{}/libvirt", scope("lv"));
        c.cgroups
            .get_mut(&libvirt)
            .unwrap()
            .subtree
            .remove("cpuset");
    });
    let prepared = b.snapshot();

    let err = b.started("lv").unwrap_err().to_string();

    assert!(err.contains("libvirt/vcpu0 has no cpuset files"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(diff(&prepared, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn a_kvmtune_run_vm_joins_a_libvirt_vms_partitions_and_leaves_first() {
    let mut b = libvirt_host();
    let start = b.snapshot();
    b.prepare("lv", &pinned_vm("lv", &["1"])).unwrap();
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["1"]));
    b.started("lv").unwrap();
    b.kvmtune_run = true;
    b.prepare("run1", &vm("run1", "3")).unwrap();
    b.kvmtune_run = false;
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "1,3");

    b.release("run1").unwrap();

    // kvmtune's partition is a member again, holding nothing; the vCPU's partition stays.
    assert_eq!(
        read(&b, &format!("{PARTITION}/cpuset.cpus.partition")),
        "member"
    );
    assert_eq!(exclusive(&b, PARTITION), "");
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "1");
    b.kernel.cgroups(|c| {
        assert_eq!(c.allowed(100), set("0,2-3"));
        assert_eq!(c.allowed(vcpu_tid(LIBVIRT_QEMU, 0)), set("1"));
    });
    stops_as_at_start(&b, "lv", &start);
}

#[test]
fn a_vcpu_plugged_later_gets_its_partition_at_the_watchers_next_look() {
    let b = libvirt_host();
    let start = b.snapshot();
    // Two vCPUs pinned to CPUs 1 and 3, one of them online at start.
    b.prepare("lv", &pinned_vm("lv", &["1", "3"])).unwrap();
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["1"]));
    b.started("lv").unwrap();
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "1");
    let mut w = kvmtune::watch::Watcher::new();
    let settled = b.watch(&mut w).unwrap();
    assert!(settled.repairs.is_empty(), "{settled:?}");

    b.kernel
        .cgroups(|c| c.libvirt_plugs_vcpu(LIBVIRT_QEMU, 1, "3"));
    let pass = b.watch(&mut w).unwrap();

    assert_eq!(pass.repairs.len(), 1, "{pass:?}");
    let vcpu1 = format!("{}/libvirt/vcpu1", scope("lv"));
    assert_eq!(
        read(&b, &format!("{vcpu1}/cpuset.cpus.partition")),
        "isolated"
    );
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "1,3");
    b.kernel.cgroups(|c| {
        assert_eq!(c.allowed(vcpu_tid(LIBVIRT_QEMU, 1)), set("3"));
        assert_eq!(c.allowed(100), set("0,2"));
    });
    stops_as_at_start(&b, "lv", &start);
}

/// The XML fits partitions (prepare chose them), but libvirt pins otherwise (a hook's XML can
/// be older than `virsh vcpupin --config` made it): `started` fails in one line and changes
/// nothing, for a vCPU on two CPUs and for two vCPUs on one.
#[test]
fn vcpus_libvirt_pins_unlike_their_xml_fail_started_in_one_line_and_change_nothing() {
    let cases: [(&[&str], &[&str]); 2] = [
        (
            &["1,3", "3"],
            &[
                "libvirt/vcpu0/cpuset.cpus is 1,3",
                "pin each vCPU to one isolated CPU",
            ],
        ),
        (&["3", "3"], &["two vCPUs are pinned to CPU 3"]),
    ];
    for (pins, said) in cases {
        let b = libvirt_host();
        b.prepare("lv", &pinned_vm("lv", &["1", "3"])).unwrap();
        b.kernel
            .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, pins));
        let prepared = b.snapshot();

        let err = b.started("lv").unwrap_err().to_string();

        for words in said {
            assert!(err.contains(words), "{pins:?}: {err}");
        }
        assert!(!err.contains('\n'), "{err}");
        assert_eq!(
            diff(&prepared, &b.snapshot()),
            Vec::<String>::new(),
            "{pins:?}"
        );
    }
}

#[test]
fn systemd_taking_cpuset_from_machine_slice_during_release_holds_nothing_back_and_the_vm_starts_again(
) {
    let b = libvirt_host();
    let start = b.snapshot();
    for round in 0..2 {
        b.prepare("lv", &pinned_vm("lv", &["3"])).unwrap();
        b.kernel
            .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["3"]));
        b.started("lv").unwrap();
        assert_eq!(
            exclusive(&b, "sys/fs/cgroup/machine.slice"),
            "3",
            "round {round}"
        );
        assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "3");
        // libvirt removes the VM's scope before the release hook; systemd then takes cpuset
        // from machine.slice (its last VM is gone) after release's reads, before its writes.
        b.kernel.cgroups(|c| c.libvirt_stops(LIBVIRT_QEMU));
        b.release("lv").unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "round {round}"
        );
    }
}

#[test]
fn auto_isolates_a_kvmtune_run_vm_with_systemd_where_systemd_runs_and_says_why() {
    let mut b = libvirt_host();
    let start = b.snapshot();
    b.kvmtune_run = true;

    b.prepare("run1", &vm("run1", "3")).unwrap();

    let text = kvmtune::status::render(&b.status());
    assert!(
        text.contains("method chosen: auto: systemd runs on cgroup v2 (no partition: systemd runs, and would take the cpuset controller from kvmtune's own partition)"),
        "{text}"
    );
    assert!(!b.kernel.path().join(PARTITION).exists());
    b.release("run1").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

/// `pinned_vm` with its emulator pinned to `emulator`.
fn vm_with_emulatorpin(name: &str, pins: &[&str], emulator: &str) -> String {
    pinned_vm(name, pins).replace(
        "</cputune>",
        &format!("<emulatorpin cpuset='{emulator}'/></cputune>"),
    )
}

const EMULATOR_MISFIT: &str = "isolated partitions cannot hold VM 'emu''s isolated CPUs: its emulator is pinned to isolated CPUs 3 (<emulatorpin cpuset='3'>), which a vCPU's partition would take from it";

#[test]
fn auto_isolates_a_vm_whose_emulator_shares_its_isolated_cpu_with_systemd_and_says_why() {
    let b = libvirt_host();
    let start = b.snapshot();

    b.prepare("emu", &vm_with_emulatorpin("emu", &["3"], "3"))
        .unwrap();
    b.kernel
        .cgroups(|c| c.libvirt_starts("emu", LIBVIRT_QEMU, &["3"]));
    b.started("emu").unwrap();

    let text = kvmtune::status::render(&b.status());
    assert!(
        text.contains(&format!(
            "method chosen: auto: systemd runs on cgroup v2 (no partition: {EMULATOR_MISFIT})"
        )),
        "{text}"
    );
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "");
    b.kernel.cgroups(|c| assert_eq!(c.allowed(100), set("0-2")));
    stops_as_at_start(&b, "emu", &start);
}

#[test]
fn the_partition_policy_refuses_a_vm_whose_emulator_shares_its_isolated_cpu_at_prepare() {
    let b = libvirt_host().with_policy("[cpus]\nisolation = \"partition\"\n");
    let start = b.snapshot();

    let err = b
        .prepare("emu", &vm_with_emulatorpin("emu", &["3"], "3"))
        .unwrap_err()
        .to_string();

    assert!(err.contains(EMULATOR_MISFIT), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn a_vm_partitions_cannot_hold_is_refused_while_partitions_hold_another_vm() {
    let b = libvirt_host();
    b.prepare("lv", &pinned_vm("lv", &["1"])).unwrap();
    b.kernel
        .cgroups(|c| c.libvirt_starts("lv", LIBVIRT_QEMU, &["1"]));
    b.started("lv").unwrap();
    let running = b.snapshot();

    let err = b
        .prepare("emu", &vm_with_emulatorpin("emu", &["3"], "3"))
        .unwrap_err()
        .to_string();

    assert!(
        err.contains(&format!(
            "{EMULATOR_MISFIT}, and other VMs hold theirs with partitions. Nothing was changed."
        )),
        "{err}"
    );
    assert_eq!(diff(&running, &b.snapshot()), Vec::<String>::new());
}

/// When a partition comes or goes the kernel gives the root's kernel threads the CPUs no
/// partition holds: one bound to the partition's CPUs (kswapd1 on node 1's, on 6.12: the
/// kernel refuses it those CPUs while the partition holds them, EINVAL) and one already on
/// exactly the housekeeping CPUs (kswapd0 on node 0's, which kvmtune need not move) both get
/// their own CPUs back at release, once the partition is gone. While it holds, each keeps those
/// of its own CPUs that are housekeeping ones (kswapd1 on 2-3 runs on 2), or gets them all.
#[test]
fn kernel_threads_bound_to_some_cpus_get_them_back_after_the_partition_goes() {
    for (mask, while_isolated) in [("3", "0-2"), ("0-2", "0-2"), ("2-3", "2"), ("1", "1")] {
        let b = host().under_kvmtune_run();
        b.kernel
            .cgroups(|c| c.tasks.get_mut(&4).unwrap().mask = set(mask));
        let start = b.snapshot();
        b.prepare("run1", &vm("run1", "3")).unwrap();
        b.kernel
            .cgroups(|c| assert_eq!(c.allowed(4), set(while_isolated), "{mask}"));

        b.release("run1").unwrap();

        b.kernel
            .cgroups(|c| assert_eq!(c.allowed(4), set(mask), "{mask}"));
        assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new(), "{mask}");
    }
}

/// No work per process: the partition method moves none, so it reads the kernel threads
/// (kthreadd's children) and not one process's /proc files.
#[test]
fn the_partition_method_reads_no_process_but_the_kernel_threads() {
    let b = host().under_kvmtune_run();
    let processes: Vec<u32> = b.kernel.cgroups(|c| {
        c.tasks
            .iter()
            .filter(|(_, t)| t.flags & PF_KTHREAD == 0)
            .map(|(pid, _)| *pid)
            .collect()
    });
    assert!(processes.contains(&100), "{processes:?}");
    b.kernel.reads();

    b.prepare("run1", &vm("run1", "3")).unwrap();
    b.release("run1").unwrap();

    let read: Vec<String> = b
        .kernel
        .reads()
        .into_iter()
        .filter(|path| {
            processes
                .iter()
                .any(|pid| path.starts_with(&format!("proc/{pid}/")))
        })
        .collect();
    assert_eq!(read, Vec::<String>::new());
}

/// `virsh emulatorpin --live` onto a vCPU's partition CPU (Debian 13, 6.12): libvirt's command
/// fails (EINVAL) but leaves the emulator cgroup's list on the CPU, and the kernel makes the
/// partition invalid while keeping its CPU from every other cgroup; left so when the VM stops,
/// that CPU stays isolated for good. The watcher makes the partition a member (the CPU goes
/// back: nothing can leak), says why it cannot be isolated, and makes it isolated again once
/// the emulator is pinned elsewhere.
#[test]
fn an_emulator_pinned_live_onto_a_vcpu_partition_leaves_no_invalid_partition_and_it_comes_back() {
    let b = libvirt_host();
    let start = b.snapshot();
    start_on_cpu_3(&b);
    let mut w = kvmtune::watch::Watcher::new();
    assert!(b.watch(&mut w).unwrap().repairs.is_empty());
    let state = format!("{}/libvirt/vcpu0/cpuset.cpus.partition", scope("lv"));

    let pinned = b
        .kernel
        .cgroups(|c| c.libvirt_pins_live(LIBVIRT_QEMU, "emulator", "3"));
    assert_eq!(pinned, Err(libc::EINVAL));
    assert!(read(&b, &state).starts_with("isolated invalid"));
    let err = b.watch(&mut w).unwrap_err().to_string();

    assert!(
        err.contains("the kernel does not make CPUs 3 an isolated partition: Cpu list in cpuset.cpus not exclusive"),
        "{err}"
    );
    assert_eq!(read(&b, &state), "member");
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "");
    let text = kvmtune::status::render(&b.status());
    assert!(
        text.contains("reads 'member', kvmtune set isolated"),
        "{text}"
    );

    b.kernel
        .cgroups(|c| c.libvirt_pins_live(LIBVIRT_QEMU, "emulator", "0"))
        .unwrap();
    let pass = b.watch(&mut w).unwrap();
    assert_eq!(pass.repairs.len(), 1, "{pass:?}");
    assert_eq!(read(&b, &state), "isolated");
    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "3");
    b.kernel.cgroups(|c| assert_eq!(c.allowed(100), set("0-2")));

    stops_as_at_start(&b, "lv", &start);
}

/// `virsh vcpupin --live` of an isolated vCPU to another CPU: the kernel refuses the thread
/// that CPU (EINVAL: the partition holds it) and libvirt's command fails; the vCPU stays on
/// its isolated CPU and the partition holds. Pinned to its CPU and another, the partition
/// still holds the vCPU to its CPU alone, and status says the pin is not one CPU.
#[test]
fn a_vcpu_pinned_live_elsewhere_stays_in_its_partition() {
    let b = libvirt_host();
    start_on_cpu_3(&b);
    let state = format!("{}/libvirt/vcpu0/cpuset.cpus.partition", scope("lv"));

    let moved = b
        .kernel
        .cgroups(|c| c.libvirt_pins_live(LIBVIRT_QEMU, "vcpu0", "2"));

    assert_eq!(moved, Err(libc::EINVAL));
    assert_eq!(read(&b, &state), "isolated");
    b.kernel
        .cgroups(|c| assert_eq!(c.allowed(vcpu_tid(LIBVIRT_QEMU, 0)), set("3")));

    b.kernel
        .cgroups(|c| c.libvirt_pins_live(LIBVIRT_QEMU, "vcpu0", "2-3"))
        .unwrap();
    assert_eq!(read(&b, &state), "isolated");
    b.kernel
        .cgroups(|c| assert_eq!(c.allowed(vcpu_tid(LIBVIRT_QEMU, 0)), set("3")));
    let text = kvmtune::status::render(&b.status());
    assert!(
        text.contains(
            "vcpu0/cpuset.cpus is 2-3 (isolated CPUs 3); pin each vCPU to one isolated CPU"
        ),
        "{text}"
    );
}

/// The same, but the VM stops before the watcher looks: 6.12 keeps the invalid partition's CPU
/// isolated after its cgroup goes, for good (a reboot gives it back). Release still gives back
/// everything kvmtune changed, and status says what the kernel kept and why.
#[test]
fn a_cpu_the_kernel_keeps_isolated_after_an_invalid_partition_went_is_named_by_status() {
    let b = libvirt_host();
    start_on_cpu_3(&b);
    let pinned = b
        .kernel
        .cgroups(|c| c.libvirt_pins_live(LIBVIRT_QEMU, "emulator", "3"));
    assert_eq!(pinned, Err(libc::EINVAL));
    b.kernel.cgroups(|c| c.libvirt_stops(LIBVIRT_QEMU));

    b.release("lv").unwrap();

    assert_eq!(read(&b, "sys/fs/cgroup/cpuset.cpus.isolated"), "3");
    let status = b.status();
    assert!(!status.verdict.kept);
    let text = kvmtune::status::render(&status);
    assert!(
        text.contains("the kernel keeps CPUs 3 isolated (")
            && text.contains("cpuset.cpus.isolated) though no isolated partition holds them"),
        "{text}"
    );
}
