//! Golden trees: a fake root that models the kernel; prepare changes exactly the files in
//! `tests/golden/<case>.txt` (rewrite them with UPDATE_GOLDEN=1 after a deliberate change),
//! and release leaves the tree byte-identical to the start.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::scenarios::scenario;
use common::{bound, diff, huge_vm, kernel, Bench, GIB, MIB};

fn two_nodes() -> Bench {
    Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]))
}

fn assert_golden(case: &str, lines: &[String]) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{case}.txt"));
    let actual = lines.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        actual,
        expected,
        "prepare's changes differ from {}",
        path.display()
    );
}

/// prepare → compare with the golden file → release → byte-identical, nothing left in state.
fn round_trip(case: &str, b: &Bench, vm: &str, xml: &str) {
    let start = b.snapshot();
    b.prepare(vm, xml).unwrap();
    assert_golden(case, &diff(&start, &b.snapshot()));
    b.started(vm).unwrap();
    b.release(vm).unwrap();
    assert_eq!(
        diff(&start, &b.snapshot()),
        Vec::<String>::new(),
        "tree not restored"
    );
    assert_eq!(b.state_files(), Vec::<String>::new(), "state left behind");
}

/// The golden scenario `case` (`common::scenarios`) through `round_trip`; its bench after.
fn golden_round_trip(case: &'static str) -> Bench {
    let s = scenario(case);
    round_trip(s.case, &s.bench, s.vm, &s.xml);
    s.bench
}

#[test]
fn node_bound_vm_grows_only_its_node_and_release_restores_bytes() {
    let b = golden_round_trip("01-strict-node1");
    assert!(
        b.kernel.writes().iter().all(|(p, _)| p.contains("node1")),
        "{:?}",
        b.kernel.writes()
    );
}

#[test]
fn interleave_grows_both_nodes_by_half() {
    golden_round_trip("02-interleave");
}

#[test]
fn one_gib_pages_come_from_the_one_gib_pool() {
    golden_round_trip("03-1g-node1");
}

#[test]
fn guest_cells_bound_by_memnode_reserve_per_cell() {
    golden_round_trip("04-memnode-cells");
}

#[test]
fn an_isolated_vm_with_a_device_and_ksm_off_changes_cgroups_threads_irqs_and_ksm_and_release_restores_bytes(
) {
    let b = golden_round_trip("05-isolated-device-ksm");
    let written = |prefix: &str| b.kernel.writes().iter().any(|(p, _)| p.starts_with(prefix));
    assert!(
        written("sys/fs/cgroup/cpuset/") && written("proc/irq/") && written("sys/kernel/mm/ksm/"),
        "{:?}",
        b.kernel.writes()
    );
}

#[test]
fn fragmented_node_is_compacted_and_the_reservation_succeeds() {
    let b = two_nodes();
    b.kernel.with_node(1, |n| n.fragmented = n.free - 100 * MIB);
    let start = b.snapshot();
    b.prepare("f", &huge_vm("f", 1024, &bound("strict", "1")))
        .unwrap();
    assert!(b.kernel.compactions() >= 1);
    assert_eq!(b.kernel.pool(1, 2048).nr, 512);
    b.release("f").unwrap();
    assert_eq!(b.kernel.pool(1, 2048).nr, 0);
    // Compaction changed no file the kernel exposes to us except through the pool counters.
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn unmovable_fragmentation_fails_cleanly_with_one_line_and_no_change() {
    let b = two_nodes();
    b.kernel
        .with_node(1, |n| n.pinned_fragments = n.free - 1024 * MIB - 512 * MIB);
    let start = b.snapshot();
    let err = b
        .prepare("db1", &huge_vm("db1", 2048, &bound("strict", "1")))
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 1);
    assert!(
        msg.starts_with(
            "VM 'db1' needs 1024 x 2 MiB pages on node 1; 768 could be reserved after compaction ("
        ) && msg.ends_with("free on node 1, too fragmented for 2 MiB pages). Nothing was changed."),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
    // Counted for the metrics, in the state directory: one failure, the compactions it tried.
    let counters = b.state().counters();
    assert_eq!(counters.reservation_failures, 1);
    assert_eq!(
        counters.compaction_retries,
        u64::from(b.kernel.compactions())
    );
    assert!(counters.compaction_retries >= 1);
    // libvirt then calls release for the failed start: a no-op.
    b.release("db1").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn a_shortfall_on_the_second_node_puts_the_first_node_back() {
    let b = two_nodes();
    b.kernel
        .with_node(1, |n| n.pinned_fragments = n.free - 300 * MIB);
    let start = b.snapshot();
    let err = b
        .prepare("il", &huge_vm("il", 1024, &bound("interleave", "0-1")))
        .unwrap_err();
    assert!(err.to_string().contains("on node 1"), "{err}");
    assert!(
        b.kernel
            .writes()
            .iter()
            .any(|(p, v)| p.contains("node0") && v == "256"),
        "node 0 was grown first"
    );
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn compaction_off_fails_without_compacting() {
    let b = two_nodes().with_policy("[hugepages]\ncompaction = false\n");
    b.kernel.with_node(1, |n| n.fragmented = n.free - 100 * MIB);
    let err = b
        .prepare("f", &huge_vm("f", 1024, &bound("strict", "1")))
        .unwrap_err();
    assert!(err.to_string().contains("(compaction is off)"), "{err}");
    assert_eq!(b.kernel.compactions(), 0);
}

#[test]
fn admin_pool_is_used_not_doubled_and_kept_after_release() {
    let b = two_nodes();
    b.kernel.admin_set_pool(1, 2048, 16);
    let start = b.snapshot();
    b.prepare("small", &huge_vm("small", 32, &bound("strict", "1")))
        .unwrap();
    assert_eq!(b.kernel.pool(1, 2048).nr, 16);
    assert!(b
        .kernel
        .writes()
        .iter()
        .all(|(p, _)| !p.contains("nr_hugepages")));
    b.release("small").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn two_vms_on_one_node_release_in_either_order() {
    for first_out in ["a", "b"] {
        let b = two_nodes();
        b.kernel.admin_set_pool(1, 2048, 8);
        let start = b.snapshot();
        b.prepare("a", &huge_vm("a", 64, &bound("strict", "1")))
            .unwrap();
        b.started("a").unwrap();
        b.kernel.consume(1, 2048, 32);
        b.prepare("b", &huge_vm("b", 128, &bound("strict", "1")))
            .unwrap();
        b.started("b").unwrap();
        b.kernel.consume(1, 2048, 64);
        assert_eq!(
            b.kernel.pool(1, 2048).nr,
            96,
            "8 admin pages + 24 for a + 64 for b"
        );

        let (gone, stays, pages) = if first_out == "a" {
            ("a", "b", 32)
        } else {
            ("b", "a", 64)
        };
        b.kernel.give_back(1, 2048, pages);
        b.release(gone).unwrap();
        let p = b.kernel.pool(1, 2048);
        // What stays: the admin's 8 pages plus what kvmtune added for the VM still running.
        let (needed, added_for_stays) = if stays == "b" { (64, 64) } else { (32, 24) };
        assert!(
            p.nr - p.surplus >= needed,
            "{first_out}: pool {p:?} no longer covers {stays}"
        );
        assert_eq!(
            p.nr,
            8 + added_for_stays,
            "{first_out}: only what {gone} added was given back"
        );

        b.kernel.give_back(1, 2048, needed);
        b.release(stays).unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "{first_out} first"
        );
        assert_eq!(b.state_files(), Vec::<String>::new());
    }
}

#[test]
fn pages_of_a_prepared_vm_are_promised_to_it() {
    let b = two_nodes();
    b.prepare("a", &huge_vm("a", 64, &bound("strict", "0")))
        .unwrap();
    // a has not started: its 32 pages are free but promised; b must get its own.
    b.prepare("b", &huge_vm("b", 64, &bound("strict", "0")))
        .unwrap();
    assert_eq!(b.kernel.pool(0, 2048).nr, 64);
}

#[test]
fn more_than_the_node_has_is_refused_before_any_write() {
    let b = two_nodes();
    let start = b.snapshot();
    let err = b
        .prepare("big", &huge_vm("big", 64 * 1024, &bound("strict", "1")))
        .unwrap_err();
    assert!(err.to_string().contains("Nothing was changed"), "{err}");
    assert_eq!(b.kernel.writes(), Vec::<(String, String)>::new());
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn the_global_pool_is_never_written() {
    let b = two_nodes();
    b.prepare("u", &huge_vm("u", 256, "")).unwrap();
    b.release("u").unwrap();
    assert!(!b.kernel.writes().is_empty());
    assert!(b
        .kernel
        .writes()
        .iter()
        .all(|(p, _)| p.starts_with("sys/devices/system/node/")));
}

#[test]
fn release_of_an_unknown_vm_and_vm_without_hugepages_change_nothing() {
    let b = two_nodes();
    let start = b.snapshot();
    b.release("never-prepared").unwrap();
    b.prepare(
        "plain",
        "<domain><name>plain</name><memory unit='MiB'>512</memory></domain>",
    )
    .unwrap();
    b.release("plain").unwrap();
    assert!(b.kernel.writes().is_empty());
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn a_second_prepare_of_the_same_vm_replaces_the_stale_one() {
    let b = two_nodes();
    let start = b.snapshot();
    b.prepare("a", &huge_vm("a", 64, &bound("strict", "1")))
        .unwrap();
    b.prepare("a", &huge_vm("a", 64, &bound("strict", "1")))
        .unwrap();
    assert_eq!(b.kernel.pool(1, 2048).nr, 32);
    b.release("a").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

/// Kill kvmtune before each write of prepare in turn; the next call must leave the host as it
/// was before the VM.
#[test]
fn a_crash_at_any_write_of_prepare_is_undone_by_the_next_call() {
    let xml = huge_vm("il", 256, &bound("interleave", "0-1"));
    let total = {
        let b = two_nodes();
        b.prepare("il", &xml).unwrap();
        b.kernel.writes().len()
    };
    assert!(total >= 2);
    for n in 0..total {
        let b = two_nodes();
        let start = b.snapshot();
        b.kernel.crash_at_write(Some(n));
        let crashed = catch_unwind(AssertUnwindSafe(|| b.prepare("il", &xml)));
        assert!(crashed.is_err(), "write {n}: no crash injected");
        assert!(
            !b.state_files().is_empty(),
            "write {n}: no journal left by the crash"
        );
        // libvirt saw the hook fail: it calls release, which finishes the undo.
        b.release("il").unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "crash at write {n}"
        );
        assert_eq!(b.state_files(), Vec::<String>::new(), "crash at write {n}");
    }
}

/// Kill kvmtune before each write of release in turn; `recover` finishes the release.
#[test]
fn a_crash_at_any_write_of_release_is_finished_by_recover() {
    let xml = huge_vm("il", 256, &bound("interleave", "0-1"));
    for n in 0..2 {
        let b = two_nodes();
        let start = b.snapshot();
        b.prepare("il", &xml).unwrap();
        b.started("il").unwrap();
        b.kernel.crash_at_write(Some(n));
        let crashed = catch_unwind(AssertUnwindSafe(|| b.release("il")));
        assert!(crashed.is_err(), "write {n}: no crash injected");
        assert_eq!(b.recover_all().unwrap(), Vec::<String>::new());
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "crash at write {n}"
        );
        assert_eq!(b.state_files(), Vec::<String>::new());
    }
}

#[test]
fn recover_releases_vms_whose_qemu_is_gone() {
    let b = two_nodes();
    let start = b.snapshot();
    b.prepare("gone", &huge_vm("gone", 64, &bound("strict", "1")))
        .unwrap();
    b.started("gone").unwrap();
    // No process in the fake /proc names it: it is gone (libvirtd crashed, no release came).
    assert_eq!(b.recover_all().unwrap(), vec!["gone".to_string()]);
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(
        b.recover_all().unwrap(),
        Vec::<String>::new(),
        "recover is idempotent"
    );
}

#[test]
fn recover_keeps_vms_whose_qemu_still_runs() {
    let b = two_nodes();
    b.prepare("alive", &huge_vm("alive", 64, &bound("strict", "1")))
        .unwrap();
    common::kernel::put(
        b.kernel.path(),
        "proc/4242/cmdline",
        "/usr/bin/qemu-system-x86_64\0-name\0guest=alive,debug-threads=on\0",
    );
    assert_eq!(b.recover_all().unwrap(), Vec::<String>::new());
    assert_eq!(b.kernel.pool(1, 2048).nr, 32);
}
