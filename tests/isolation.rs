//! CPU isolation on the kernel-modelling fake root: cgroup v1 (hybrid, as on this machine),
//! cgroup v2 without systemd (as in the real-kernel guest) and systemd, each restored exactly.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::cgroupfs::{Layout, V1_MOUNT, V2_MOUNT};
use common::{diff, kernel, Bench, GIB};
use kvmtune::cpulist::CpuSet;
use kvmtune::isolation::SYSTEMD_CONFINED_UNITS;

fn host(layout: Layout) -> Bench {
    Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]).with_cgroups(layout))
}

/// A VM with vCPU 0 pinned to `cpu`, asking to isolate its vCPUs' CPUs.
fn isolated_vm(name: &str, cpu: u32) -> String {
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <cputune><vcpupin vcpu='0' cpuset='{cpu}'/></cputune>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/></k:tune></metadata></domain>"
    )
}

fn set(list: &str) -> CpuSet {
    CpuSet::parse(list).unwrap()
}

/// The CPUs /proc shows a task may use.
fn allowed(b: &Bench, pid: u32) -> CpuSet {
    b.kernel.cgroups(|c| c.allowed(pid))
}

fn cgroup_of(b: &Bench, pid: u32) -> String {
    b.kernel.cgroups(|c| c.tasks[&pid].cgroup.clone())
}

/// Host tasks (init 1, sshd 100, cron 101) are confined; libvirtd (200) and the VM's QEMU
/// (300) are not touched; movable kernel threads (2, 4) follow; the per-CPU kworker (3) stays.
fn assert_confined(b: &Bench, housekeeping: &str) {
    for pid in [1, 100, 101, 2, 4] {
        assert_eq!(allowed(b, pid), set(housekeeping), "pid {pid}");
    }
    assert_eq!(allowed(b, 200), set("0-3"), "libvirtd must keep every CPU");
    assert_eq!(
        allowed(b, 300),
        set("3"),
        "the VM's QEMU is libvirt's to place"
    );
    assert_eq!(
        allowed(b, 3),
        set("0"),
        "a per-CPU kernel thread cannot move"
    );
    let wq = b.kernel.cgroups(|c| c.workqueue.clone());
    assert_eq!(wq, set(housekeeping), "workqueue cpumask");
}

#[test]
fn cgroup_v1_housekeeping_cpuset_beside_machine_and_exact_restore() {
    let b = host(Layout::V1);
    let start = b.snapshot();
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    assert_eq!(cgroup_of(&b, 100), format!("{V1_MOUNT}/kvmtune"));
    assert_eq!(
        cgroup_of(&b, 200),
        V1_MOUNT,
        "libvirtd stays in the root cpuset"
    );
    assert_eq!(
        cgroup_of(&b, 300),
        format!("{V1_MOUNT}/machine"),
        "libvirt's cpuset untouched"
    );
    assert_confined(&b, "0-2");
    b.started("rt").unwrap();
    b.release("rt").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn cgroup_v2_without_systemd_moves_root_processes_and_restores() {
    let b = host(Layout::V2);
    let start = b.snapshot();
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    assert_eq!(cgroup_of(&b, 1), format!("{V2_MOUNT}/kvmtune.housekeeping"));
    assert_eq!(
        cgroup_of(&b, 2),
        V2_MOUNT,
        "kernel threads stay in the root cgroup"
    );
    assert_confined(&b, "0-2");
    b.release("rt").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn systemd_confines_the_three_top_level_units_and_everything_started_in_them_later() {
    let b = host(Layout::Systemd);
    let start = b.snapshot();
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    let calls = b.kernel.cgroups(|c| c.systemctl_calls.clone());
    assert_eq!(
        calls,
        [
            "set-property --runtime system.slice AllowedCPUs=0-2",
            "set-property --runtime user.slice AllowedCPUs=0-2",
            "set-property --runtime init.scope AllowedCPUs=0-2",
        ],
        "whole slices, not the units inside them"
    );
    for pid in [1, 100, 101, 200, 2, 4] {
        assert_eq!(allowed(&b, pid), set("0-2"), "pid {pid}");
    }
    assert_eq!(
        allowed(&b, 300),
        set("3"),
        "the VM's QEMU is libvirt's to place"
    );
    let files = b.snapshot();
    for drop_in in [
        "run/systemd/system.control/system.slice.d/50-AllowedCPUs.conf",
        "run/systemd/system.control/user.slice.d/50-AllowedCPUs.conf",
        "run/systemd/transient/init.scope.d/50-AllowedCPUs.conf",
    ] {
        assert!(
            files.keys().any(|p| p.ends_with(drop_in)),
            "{drop_in} while isolated"
        );
    }
    // A unit started after prepare is born in a confined slice.
    b.kernel.cgroups(|c| {
        let cgroup = format!("{V2_MOUNT}/system.slice/late.service");
        c.cgroups.insert(cgroup.clone(), Default::default());
        let mut late = c.tasks[&100].clone();
        late.cgroup = cgroup;
        c.tasks.insert(500, late);
    });
    assert_eq!(allowed(&b, 500), set("0-2"), "a service started later");
    b.kernel.cgroups(|c| c.tasks.remove(&500));
    b.kernel.cgroups(|c| {
        c.cgroups
            .remove(&format!("{V2_MOUNT}/system.slice/late.service"))
    });
    b.release("rt").unwrap();
    for pid in [1, 100, 101, 200, 2, 4] {
        assert_eq!(allowed(&b, pid), set("0-3"), "pid {pid} after release");
    }
    assert!(b.kernel.cgroups(|c| c.units.values().all(String::is_empty)));
    assert_eq!(
        diff(&start, &b.snapshot()),
        Vec::<String>::new(),
        "no runtime drop-in left under run/systemd"
    );
}

#[test]
fn systemd_release_widens_then_clears_then_removes_the_drop_ins_it_created() {
    let b = host(Layout::Systemd);
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    b.kernel.cgroups(|c| c.systemctl_calls.clear());
    b.release("rt").unwrap();
    let calls = b.kernel.cgroups(|c| c.systemctl_calls.clone());
    // An empty AllowedCPUs would leave the live cpuset narrow: widen, then clear; the drop-in
    // systemd then holds says nothing, and is removed (with a reload) so none is left behind.
    for unit in SYSTEMD_CONFINED_UNITS {
        let widen = calls
            .iter()
            .position(|c| *c == format!("set-property --runtime {unit} AllowedCPUs=0-3"));
        let clear = calls
            .iter()
            .position(|c| *c == format!("set-property --runtime {unit} AllowedCPUs="));
        assert!(
            matches!((widen, clear), (Some(w), Some(c)) if w < c),
            "{unit}: {calls:?}"
        );
    }
    assert_eq!(calls.last().map(String::as_str), Some("daemon-reload"));
    assert_eq!(
        calls.iter().filter(|c| *c == "daemon-reload").count(),
        1,
        "one reload for the whole release (each costs seconds): {calls:?}"
    );
    assert!(b.kernel.cgroups(|c| c.drop_ins.is_empty()));
}

#[test]
fn systemd_keeps_a_runtime_drop_in_the_operator_made_and_puts_its_value_back() {
    let b = host(Layout::Systemd);
    b.kernel.cgroups(|c| {
        c.systemctl_set("user.slice", "AllowedCPUs", "0-3").unwrap();
        c.systemctl_calls.clear();
    });
    let start = b.snapshot();
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    b.release("rt").unwrap();
    assert_eq!(
        b.kernel.cgroups(|c| c.drop_ins.get("user.slice").cloned()),
        Some("0-3".into())
    );
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn two_vms_release_in_either_order_and_only_the_last_restores() {
    for first in ["a", "b"] {
        let b = host(Layout::V1);
        let start = b.snapshot();
        b.prepare("a", &isolated_vm("a", 3)).unwrap();
        b.prepare("b", &isolated_vm("b", 1)).unwrap();
        assert_eq!(allowed(&b, 100), set("0,2"));
        let (gone, stays, left) = if first == "a" {
            ("a", "b", "0,2-3")
        } else {
            ("b", "a", "0-2")
        };
        b.release(gone).unwrap();
        assert_eq!(
            allowed(&b, 100),
            set(left),
            "{gone} released first: {stays}'s CPU stays isolated"
        );
        assert_eq!(allowed(&b, 4), set(left));
        b.release(stays).unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "{first} first"
        );
    }
}

/// A kernel thread someone pinned, or the kernel bound to a node (kswapd1 on node 1's 2-3),
/// keeps those of its CPUs that stay housekeeping ones while VMs isolate others, through a
/// second VM narrowing the housekeeping CPUs and its release widening them again: it is
/// placed from where it was before kvmtune moved it, not from where kvmtune put it. With none
/// of its CPUs left, it gets every housekeeping CPU. The last release gives its own back.
#[test]
fn kernel_threads_keep_their_own_housekeeping_cpus_while_isolation_narrows_and_widens() {
    for layout in [Layout::V1, Layout::V2, Layout::Systemd] {
        // kswapd0 of the model (pid 4), as (its own CPUs, with 3 isolated, with 1 and 3).
        for (own, one_vm, two_vms) in [
            ("0", "0", "0"),
            ("2-3", "2", "2"),
            ("1", "1", "0,2"),
            ("3", "0-2", "0,2"),
        ] {
            let b = host(layout);
            b.kernel
                .cgroups(|c| c.tasks.get_mut(&4).unwrap().mask = set(own));
            let start = b.snapshot();
            let what = format!("{layout:?}, kernel thread on {own}");
            b.prepare("a", &isolated_vm("a", 3)).unwrap();
            assert_eq!(allowed(&b, 4), set(one_vm), "{what}, 3 isolated");
            b.prepare("b", &isolated_vm("b", 1)).unwrap();
            assert_eq!(allowed(&b, 4), set(two_vms), "{what}, 1 and 3 isolated");
            b.release("b").unwrap();
            assert_eq!(allowed(&b, 4), set(one_vm), "{what}, 3 isolated again");
            b.release("a").unwrap();
            assert_eq!(allowed(&b, 4), set(own), "{what}, released");
            assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new(), "{what}");
        }
    }
}

#[test]
fn overlapping_isolation_is_refused_unless_the_policy_allows_it() {
    let b = host(Layout::V1);
    b.prepare("a", &isolated_vm("a", 3)).unwrap();
    let err = b
        .prepare("b", &isolated_vm("b", 3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already isolated for VM 'a'") && err.contains("cpus.overlap"),
        "{err}"
    );
    let b = host(Layout::V1).with_policy("[cpus]\noverlap = \"allow\"\n");
    let start = b.snapshot();
    b.prepare("a", &isolated_vm("a", 3)).unwrap();
    b.prepare("b", &isolated_vm("b", 3)).unwrap();
    b.release("a").unwrap();
    assert_eq!(allowed(&b, 100), set("0-2"), "b still holds CPU 3");
    b.release("b").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn isolating_a_housekeeping_cpu_changes_nothing() {
    let b = host(Layout::V1);
    let start = b.snapshot();
    let err = b
        .prepare("hk", &isolated_vm("hk", 2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("housekeeping"), "{err}");
    assert!(b.kernel.writes().is_empty());
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn isolation_off_in_the_policy_refuses_the_vm() {
    let b = host(Layout::V1).with_policy("[cpus]\nisolation = \"off\"\n");
    let err = b
        .prepare("rt", &isolated_vm("rt", 3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cpus.isolation"), "{err}");
    assert!(b.kernel.writes().is_empty());
}

#[test]
fn processes_started_later_are_swept_at_the_next_vm_event_and_given_back() {
    let b = host(Layout::V1);
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    // A service started by the root cpuset's init after isolation began.
    b.kernel.cgroups(|c| {
        let mut late = c.tasks[&100].clone();
        late.comm = "late".into();
        late.cgroup = V1_MOUNT.into();
        c.tasks.insert(500, late);
    });
    assert_eq!(allowed(&b, 500), set("0-3"));
    b.prepare(
        "plain",
        "<domain><name>plain</name><memory unit='MiB'>64</memory></domain>",
    )
    .unwrap();
    assert_eq!(allowed(&b, 500), set("0-2"), "swept into housekeeping");
    b.release("rt").unwrap();
    assert_eq!(cgroup_of(&b, 500), V1_MOUNT);
    assert_eq!(allowed(&b, 500), set("0-3"));
}

#[test]
fn governor_of_isolated_cpus_is_set_and_restored() {
    let b = host(Layout::V1).with_policy("[cpus]\ngovernor = \"performance\"\n");
    for cpu in 0..4 {
        common::kernel::put(
            b.kernel.path(),
            &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
            "schedutil\n",
        );
    }
    let start = b.snapshot();
    let gov = |cpu: u32| {
        std::fs::read_to_string(b.kernel.path().join(format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )))
        .unwrap()
    };
    b.prepare("a", &isolated_vm("a", 3)).unwrap();
    b.prepare("b", &isolated_vm("b", 1)).unwrap();
    assert_eq!(
        (gov(1).trim(), gov(3).trim(), gov(0).trim()),
        ("performance", "performance", "schedutil")
    );
    b.release("b").unwrap();
    assert_eq!((gov(1).trim(), gov(3).trim()), ("schedutil", "performance"));
    b.release("a").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

/// Kill kvmtune before each change of an isolating prepare; libvirt's release (or any next
/// call) must leave the host exactly as before.
#[test]
fn a_crash_at_any_change_of_isolation_is_undone() {
    for layout in [Layout::V1, Layout::V2] {
        let xml = isolated_vm("rt", 3);
        let total = {
            let b = host(layout);
            b.prepare("rt", &xml).unwrap();
            b.kernel.writes().len()
        };
        assert!(total >= 5, "{layout:?}: only {total} changes");
        for n in 0..total {
            let b = host(layout);
            let start = b.snapshot();
            b.kernel.crash_at_write(Some(n));
            let crashed = catch_unwind(AssertUnwindSafe(|| b.prepare("rt", &xml)));
            assert!(crashed.is_err(), "{layout:?} change {n}: no crash");
            b.release("rt").unwrap();
            assert_eq!(
                diff(&start, &b.snapshot()),
                Vec::<String>::new(),
                "{layout:?}: crash at change {n}"
            );
            assert_eq!(b.state_files(), Vec::<String>::new());
        }
    }
}

#[test]
fn a_crash_during_the_last_release_is_finished_by_recover() {
    let xml = isolated_vm("rt", 3);
    let total = {
        let b = host(Layout::V1);
        b.prepare("rt", &xml).unwrap();
        let before = b.kernel.writes().len();
        b.release("rt").unwrap();
        b.kernel.writes().len() - before
    };
    for n in 0..total {
        let b = host(Layout::V1);
        let start = b.snapshot();
        b.prepare("rt", &xml).unwrap();
        b.kernel.crash_at_write(Some(n));
        assert!(catch_unwind(AssertUnwindSafe(|| b.release("rt"))).is_err());
        b.recover_all().unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "crash at change {n}"
        );
    }
}

#[test]
fn status_shows_isolated_cpus_and_who_may_still_run_there() {
    let b = host(Layout::V1);
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    let state = b.state();
    let status = kvmtune::status::gather(&b.kernel, Some(&state), &b.policy).unwrap();
    let iso = status.isolation.as_ref().expect("isolation shown");
    assert_eq!(
        (iso.isolated.clone(), iso.housekeeping.clone()),
        (set("3"), set("0-2"))
    );
    let names: Vec<&str> = iso.unconfined.iter().map(|t| t.comm.as_str()).collect();
    assert_eq!(names, vec!["libvirtd"], "only the daemon, by design");
    assert_eq!(iso.per_cpu_kernel_threads, 1, "kworker bound to CPU 3");
    assert_eq!(status.vms[0].isolate, set("3"));
    let text = kvmtune::status::render(&status);
    assert!(
        text.contains("CPUs 3 isolated, host tasks on 0-2"),
        "{text}"
    );
    assert!(text.contains("kept unconfined"), "{text}");
    b.release("rt").unwrap();
    let status = kvmtune::status::gather(&b.kernel, Some(&b.state()), &b.policy).unwrap();
    assert!(status.isolation.is_none());
}

/// Kernels before 6.2 (Debian 12's 6.1) reset a task's own CPU mask when it changes cpuset or
/// when the cpuset controller is enabled above it: libvirt's vCPU pins and an admin's
/// `taskset` would be lost. kvmtune notes pinned threads and puts them back.
#[test]
fn pinned_threads_keep_their_cpus_on_kernels_that_reset_masks() {
    for layout in [Layout::V1, Layout::V2] {
        let b = host(layout);
        b.kernel.cgroups(|c| {
            c.resets_masks = true;
            // An admin pinned cron to CPU 1 (a housekeeping CPU stays usable for it).
            c.tasks.get_mut(&101).unwrap().mask = set("1");
        });
        let start = b.snapshot();
        b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
        assert_eq!(
            allowed(&b, 300),
            set("3"),
            "{layout:?}: the VM's vCPU pin survives"
        );
        assert_eq!(
            allowed(&b, 101),
            set("1"),
            "{layout:?}: the admin's pin survives confinement"
        );
        assert_eq!(
            allowed(&b, 100),
            set("0-2"),
            "{layout:?}: unpinned tasks are confined"
        );
        b.release("rt").unwrap();
        assert_eq!(
            allowed(&b, 101),
            set("1"),
            "{layout:?}: the admin's pin after release"
        );
        assert_eq!(allowed(&b, 300), set("3"), "{layout:?}");
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "{layout:?}"
        );
    }
}

/// From 6.2 the kernel keeps a thread's own mask across cpuset changes, so kvmtune looks at no
/// thread there (on a large host that is a read of every thread's status per call) and notes
/// no pins; before 6.2 it notes them. The fake kernel keeps masks either way: the pin survives.
#[test]
fn pinned_threads_are_noted_only_on_kernels_before_6_2() {
    for (release, noted) in [("6.18.0\n", false), ("6.1.0\n", true)] {
        let b = host(Layout::V1);
        common::kernel::put(b.kernel.path(), "proc/sys/kernel/osrelease", release);
        b.kernel
            .cgroups(|c| c.tasks.get_mut(&101).unwrap().mask = set("1"));
        b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
        let ledger = b.state().load_ledger().unwrap();
        let pins = ledger.isolation.expect("isolation is held").pinned;
        assert_eq!(
            pins.iter().any(|p| p.pid == 101),
            noted,
            "Linux {release}: {pins:?}"
        );
        assert_eq!(allowed(&b, 101), set("1"), "Linux {release}");
        b.release("rt").unwrap();
        assert_eq!(allowed(&b, 101), set("1"), "Linux {release}");
    }
}

/// A host task pinned to the CPU being isolated must leave it (that is the point), and gets its
/// pin back when isolation ends.
#[test]
fn a_task_pinned_to_the_isolated_cpu_is_confined_then_given_its_pin_back() {
    let b = host(Layout::V1);
    b.kernel.cgroups(|c| {
        c.resets_masks = true;
        c.tasks.get_mut(&101).unwrap().mask = set("3");
    });
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    assert_eq!(allowed(&b, 101), set("0-2"));
    b.release("rt").unwrap();
    assert_eq!(allowed(&b, 101), set("3"));
}

/// Processes fork while kvmtune moves them: a child born after `cgroup.procs` was read must
/// be moved too (else it runs on the isolated CPU), and must not keep kvmtune's cpuset busy
/// at release (EBUSY on rmdir).
#[test]
fn children_forked_during_the_move_are_moved_too() {
    let b = host(Layout::V1);
    b.kernel.cgroups(|c| c.forks_during_moves = 3);
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    let left = b.kernel.cgroups(|c| {
        c.tasks
            .iter()
            .filter(|(_, t)| {
                t.cgroup == V1_MOUNT
                    && t.flags & common::cgroupfs::PF_KTHREAD == 0
                    && t.comm != "libvirtd"
            })
            .map(|(p, t)| format!("{p} {}", t.comm))
            .collect::<Vec<_>>()
    });
    assert_eq!(
        left,
        Vec::<String>::new(),
        "user tasks left in the root cpuset"
    );
    b.kernel.cgroups(|c| c.forks_during_moves = 3);
    b.release("rt").unwrap();
    assert!(
        !b.kernel.path().join(format!("{V1_MOUNT}/kvmtune")).exists(),
        "cpuset removed"
    );
    assert_eq!(b.state_files(), Vec::<String>::new());
}

/// libvirtd restarts and calls `reconnect` for running VMs: whatever drifted meanwhile (a
/// process put back in the root cpuset, the workqueue mask reset) is put back, and nothing
/// that holds is touched.
#[test]
fn reconnect_puts_back_what_drifted() {
    let b = host(Layout::V1);
    let start = b.snapshot();
    b.prepare("rt", &isolated_vm("rt", 3)).unwrap();
    b.started("rt").unwrap();
    let writes = b.kernel.writes().len();
    b.started("rt").unwrap(); // a reconnect with nothing drifted
    let sweep_only = b.kernel.writes()[writes..]
        .iter()
        .all(|(p, _)| p.ends_with("cgroup.procs"));
    assert!(sweep_only, "{:?}", &b.kernel.writes()[writes..]);
    b.kernel.cgroups(|c| {
        c.tasks.get_mut(&100).unwrap().cgroup = V1_MOUNT.into();
        c.workqueue = set("0-3");
    });
    assert_eq!(allowed(&b, 100), set("0-3"));
    b.started("rt").unwrap();
    assert_eq!(allowed(&b, 100), set("0-2"));
    assert_eq!(b.kernel.cgroups(|c| c.workqueue.clone()), set("0-2"));
    assert_eq!(b.state_files(), vec!["ledger.json".to_string()]);
    b.release("rt").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}
