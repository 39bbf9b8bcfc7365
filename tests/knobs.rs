//! Host knobs on the kernel-modelling fake root (`common::knobs`): KSM's run and
//! merge_across_nodes, THP's enabled and defrag, sysctls. Each is held while the VMs that want
//! it run (golden files `tests/golden/knobs-*.txt`), refcounted across VMs, and restored byte
//! for byte; a crash at any knob change is undone or finished.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::knobs::{KSM, PRINTK, STAT_INTERVAL, THP};
use common::scenarios::{knob_vm as vm, ksm_running, scenario, KSM_OFF, THP_ON};
use common::{assert_golden, bound, diff, huge_vm, kernel, Bench, GIB};

fn two_nodes() -> Bench {
    Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]))
}

fn one_node() -> Bench {
    Bench::new(kernel(&[(4 * GIB, "0-1")]))
}

fn knob_writes(b: &Bench) -> Vec<(String, String)> {
    b.kernel
        .writes()
        .into_iter()
        .filter(|(p, _)| p.starts_with("sys/kernel/mm/") || p.starts_with("proc/sys/"))
        .collect()
}

fn w(path: &str, value: &str) -> (String, String) {
    (path.to_string(), value.to_string())
}

/// prepare → the golden file → started → release → byte-identical, nothing left in state.
fn round_trip(case: &str, b: &Bench, name: &str, xml: &str) {
    let start = b.snapshot();
    b.prepare(name, xml).unwrap();
    assert_golden(case, &diff(&start, &b.snapshot()));
    b.started(name).unwrap();
    b.release(name).unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

/// The golden scenario `case` (`common::scenarios`) through `round_trip`; its bench after.
fn golden_round_trip(case: &'static str) -> Bench {
    let s = scenario(case);
    round_trip(s.case, &s.bench, s.vm, &s.xml);
    s.bench
}

#[test]
fn ksm_stops_while_a_vm_whose_metadata_asks_runs_and_its_value_returns() {
    let b = golden_round_trip("knobs-ksm-run");
    assert_eq!(
        knob_writes(&b),
        [w(&format!("{KSM}/run"), "0"), w(&format!("{KSM}/run"), "1")]
    );
    assert_eq!(
        b.kernel.knobs(|k| k.ksm().unmerges),
        0,
        "stopping KSM keeps merged pages merged"
    );
}

#[test]
fn ksm_stops_for_vms_the_policy_selects() {
    let b = two_nodes().with_policy("[ksm]\nstop_for = [\"nosharepages\"]\n");
    ksm_running(&b, 0);
    let nosharing = vm("n", "", "<memoryBacking><nosharepages/></memoryBacking>");
    b.prepare("n", &nosharing).unwrap();
    assert_eq!(b.kernel.knobs(|k| k.ksm().run), 0);
    b.prepare("plain", &vm("plain", "", "")).unwrap();
    b.release("n").unwrap();
    assert_eq!(b.kernel.knobs(|k| k.ksm().run), 1);
    b.release("plain").unwrap();
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn isolated_vms_stop_ksm_and_hold_the_housekeeping_sysctls() {
    let b = Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]).with_cgroups(common::cgroupfs::Layout::V1),
    )
    .with_policy(
        "[ksm]\nstop_for = [\"isolated\"]\n[sysctl]\nvalues = { \"vm.stat_interval\" = 120 }\n",
    );
    ksm_running(&b, 0);
    let start = b.snapshot();
    let isolated = vm(
        "rt",
        "<k:isolate cpus='vcpus'/>",
        "<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>",
    );
    b.prepare("rt", &isolated).unwrap();
    assert_eq!(b.kernel.knobs(|k| k.ksm().run), 0);
    assert_eq!(b.kernel.knobs(|k| k.sysctls[STAT_INTERVAL].clone()), [120]);
    // A VM that isolates nothing is not counted: releasing it changes no knob.
    b.prepare("plain", &vm("plain", "", "")).unwrap();
    b.release("plain").unwrap();
    assert_eq!(b.kernel.knobs(|k| k.ksm().run), 0);
    b.started("rt").unwrap();
    b.release("rt").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn metadata_that_the_policy_does_not_let_stop_ksm_is_refused_with_one_line() {
    let b = two_nodes().with_policy("[ksm]\nstop_for = [\"isolated\"]\n");
    ksm_running(&b, 0);
    let start = b.snapshot();
    let err = b.prepare("q", &vm("q", KSM_OFF, "")).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        "VM 'q' asks for <kvmtune:ksm run=\"off\"/> in its metadata, but the policy's ksm.stop_for does not list \"metadata\". Nothing was changed."
    );
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert!(b.kernel.writes().is_empty());
}

#[test]
fn a_kernel_without_ksm_has_nothing_to_stop() {
    let b = two_nodes();
    b.kernel.knobs(|k| k.ksm = None);
    b.prepare("q", &vm("q", KSM_OFF, "")).unwrap();
    assert!(b.kernel.writes().is_empty());
    assert!(b.ledger().vms.is_empty(), "nothing held");
}

#[test]
fn merge_across_nodes_is_changed_between_an_unmerge_and_run_put_back() {
    let b = golden_round_trip("knobs-ksm-merge");
    let (run, merge) = (format!("{KSM}/run"), format!("{KSM}/merge_across_nodes"));
    assert_eq!(
        knob_writes(&b),
        [
            w(&run, "2"),
            w(&merge, "0"),
            w(&run, "1"),
            // release: the same dance back
            w(&run, "2"),
            w(&merge, "1"),
            w(&run, "1"),
        ]
    );
    assert_eq!(b.kernel.knobs(|k| k.ksm().unmerges), 2);
}

#[test]
fn merge_across_nodes_with_ksm_stopped_for_another_vm_leaves_it_stopped() {
    let b = two_nodes().with_policy("[ksm]\nmerge_across_nodes = 0\nmerge_for = [\"hugepages\"]\n");
    ksm_running(&b, 100);
    let start = b.snapshot();
    b.prepare("quiet", &vm("quiet", KSM_OFF, "")).unwrap();
    b.prepare("huge", &huge_vm("huge", 64, &bound("strict", "1")))
        .unwrap();
    let ksm = b.kernel.knobs(|k| k.ksm().clone());
    assert_eq!((ksm.run, ksm.merge_across_nodes), (0, 0));
    b.release("quiet").unwrap();
    let ksm = b.kernel.knobs(|k| k.ksm().clone());
    assert_eq!(
        (ksm.run, ksm.merge_across_nodes),
        (1, 0),
        "KSM runs again, merging within nodes"
    );
    b.release("huge").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn merge_across_nodes_is_left_alone_on_a_single_node_host() {
    let b = one_node().with_policy("[ksm]\nmerge_across_nodes = 0\n");
    ksm_running(&b, 100);
    b.prepare("numa", &vm("numa", "", "")).unwrap();
    assert!(b.kernel.writes().is_empty());
}

#[test]
fn merge_across_nodes_waits_while_stable_nodes_are_being_freed() {
    let b = two_nodes().with_policy("[ksm]\nmerge_across_nodes = 0\n");
    ksm_running(&b, 100);
    b.kernel.knobs(|k| k.ksm().busy_stable_nodes = 3);
    b.prepare("numa", &vm("numa", "", "")).unwrap();
    let merges = knob_writes(&b)
        .iter()
        .filter(|(p, _)| p.ends_with("merge_across_nodes"))
        .count();
    assert_eq!(merges, 4, "three EBUSY, then the change");
    assert_eq!(b.kernel.knobs(|k| k.ksm().merge_across_nodes), 0);
}

#[test]
fn merge_across_nodes_busy_for_good_fails_the_start_and_changes_nothing() {
    let b = two_nodes().with_policy("[ksm]\nmerge_across_nodes = 0\n");
    ksm_running(&b, 100);
    b.kernel.knobs(|k| k.ksm().busy_stable_nodes = u32::MAX);
    let start = b.snapshot();
    let err = b.prepare("numa", &vm("numa", "", "")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("/sys/kernel/mm/ksm/merge_across_nodes stays busy: 0 page(s) are still merged after unmerging KSM (run = 2), so it cannot become 0")
            && msg.ends_with("Nothing was changed."),
        "{msg}"
    );
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn thp_enabled_and_defrag_are_held_for_a_vm_that_asks() {
    let b = golden_round_trip("knobs-thp");
    assert_eq!(
        knob_writes(&b),
        [
            w(&format!("{THP}/defrag"), "never"),
            w(&format!("{THP}/enabled"), "never"),
            w(&format!("{THP}/defrag"), "madvise"),
            w(&format!("{THP}/enabled"), "always"),
        ],
        "bare words, never the bracketed line"
    );
}

#[test]
fn a_thp_word_this_kernel_does_not_offer_is_a_policy_error_before_any_change() {
    let b = two_nodes().with_policy("[thp]\nenabled = \"sometimes\"\nfor = [\"all\"]\n");
    let start = b.snapshot();
    let err = b.prepare("rt", &vm("rt", "", "")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.to_string(),
        "VM 'rt' wants /sys/kernel/mm/transparent_hugepage/enabled = sometimes (thp.for: all), but the kernel offers only always, madvise, never"
    );
    assert!(b.kernel.writes().is_empty());
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn a_vm_that_opts_out_is_not_counted_for_thp() {
    let b = two_nodes().with_policy("[thp]\nenabled = \"never\"\nfor = [\"all\"]\n");
    b.prepare("out", &vm("out", "<k:thp apply='off'/>", ""))
        .unwrap();
    assert!(b.kernel.writes().is_empty());
}

#[test]
fn sysctls_are_held_and_restored_and_vectors_compare_by_value() {
    let b = golden_round_trip("knobs-sysctl");
    assert_eq!(
        knob_writes(&b),
        [
            w(PRINTK, "3 4 1 7"),
            w(STAT_INTERVAL, "120"),
            w(PRINTK, "4 4 1 7"),
            w(STAT_INTERVAL, "1"),
        ]
    );
}

#[test]
fn a_sysctl_the_kernel_lacks_or_that_does_not_read_back_is_refused_before_any_change() {
    for (key, expected) in [
        (
            "vm.stat_intervall",
            "VM 'rt' wants /proc/sys/vm/stat_intervall = 5 (sysctl.for: all), but this kernel has no /proc/sys/vm/stat_intervall",
        ),
        (
            "vm.drop_caches",
            "/proc/sys/vm/drop_caches cannot be read (Permission denied (os error 13)): only settings that read back can be held and restored",
        ),
    ] {
        let b = two_nodes().with_policy(&format!(
            "[sysctl]\nfor = [\"all\"]\nvalues = {{ \"{key}\" = 5 }}\n"
        ));
        let err = b.prepare("rt", &vm("rt", "", "")).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{key}");
        assert_eq!(err.to_string(), expected);
        assert!(b.kernel.writes().is_empty(), "{key}");
    }
}

#[test]
fn a_value_the_kernel_refuses_undoes_everything_with_one_line() {
    let b = two_nodes().with_policy(
        "[thp]\nenabled = \"never\"\nfor = [\"all\"]\n[sysctl]\nfor = [\"all\"]\nvalues = { \"vm.stat_interval\" = \"soon\" }\n",
    );
    ksm_running(&b, 0);
    let start = b.snapshot();
    let err = b
        .prepare("rt", &huge_vm("rt", 64, &bound("strict", "1")))
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        "/proc/sys/vm/stat_interval refused soon (Invalid argument (os error 22)). Nothing was changed."
    );
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
    // libvirt's release for the failed start: nothing to do.
    b.release("rt").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn two_vms_share_a_knob_and_only_the_last_one_out_restores_it() {
    for first_out in ["a", "b"] {
        let b = two_nodes().with_policy("[thp]\nenabled = \"never\"\n");
        ksm_running(&b, 0);
        let start = b.snapshot();
        b.prepare("a", &vm("a", &format!("{KSM_OFF}{THP_ON}"), ""))
            .unwrap();
        b.started("a").unwrap();
        b.prepare("b", &vm("b", &format!("{KSM_OFF}{THP_ON}"), ""))
            .unwrap();
        b.started("b").unwrap();
        assert_eq!(
            b.ledger()
                .knobs
                .get("sys/kernel/mm/ksm/run")
                .map(String::as_str),
            Some("1"),
            "the value found before the first VM, not the one the first VM set"
        );
        let stays = if first_out == "a" { "b" } else { "a" };
        b.release(first_out).unwrap();
        let (run, enabled) = b
            .kernel
            .knobs(|k| (k.ksm().run, k.thp.as_ref().unwrap().enabled.clone()));
        assert_eq!((run, enabled.as_str()), (0, "never"), "{stays} still runs");
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
fn a_vm_wanting_another_value_than_the_one_held_is_refused() {
    let b = two_nodes().with_policy("[thp]\nenabled = \"never\"\n");
    b.prepare("a", &vm("a", THP_ON, "")).unwrap();
    // The admin edits the policy while 'a' runs.
    let b = Bench {
        policy: kvmtune::policy::Policy::parse("[thp]\nenabled = \"madvise\"\n").unwrap(),
        ..b
    };
    let before = b.snapshot();
    let err = b.prepare("b", &vm("b", THP_ON, "")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VM 'b' wants /sys/kernel/mm/transparent_hugepage/enabled = madvise (thp.for: metadata), but kvmtune holds it at never for VM 'a' (did the policy change while it runs?). Nothing was changed."
    );
    assert_eq!(diff(&before, &b.snapshot()), Vec::<String>::new());
    b.release("a").unwrap();
    assert_eq!(
        b.kernel.knobs(|k| k.thp.as_ref().unwrap().enabled.clone()),
        "always"
    );
}

#[test]
fn a_knob_changed_behind_kvmtunes_back_is_put_back_and_the_first_value_returns() {
    let b = two_nodes().with_policy("[thp]\nenabled = \"never\"\n");
    let start = b.snapshot();
    b.prepare("a", &vm("a", THP_ON, "")).unwrap();
    b.kernel
        .knobs(|k| k.thp.as_mut().unwrap().enabled = "madvise".into());
    let status = status_text(&b);
    assert!(
        status.contains("/sys/kernel/mm/transparent_hugepage/enabled = never for VM \"a\", back to always after (now madvise: changed since; put back at the next VM event)"),
        "{status}"
    );
    // libvirtd restarted: reconnect runs as started.
    b.started("a").unwrap();
    assert_eq!(
        b.kernel.knobs(|k| k.thp.as_ref().unwrap().enabled.clone()),
        "never"
    );
    b.release("a").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

fn status_text(b: &Bench) -> String {
    let state = b.state();
    let status = kvmtune::status::gather(&b.kernel, Some(&state), &b.policy).unwrap();
    kvmtune::status::render(&status)
}

#[test]
fn status_shows_ksm_thp_and_every_knob_held_with_its_vms() {
    let b = two_nodes().with_policy(
        "[ksm]\nmerge_across_nodes = 0\nmerge_for = [\"isolated\", \"hugepages\"]\n\
         [sysctl]\nfor = [\"metadata\"]\nvalues = { \"vm.stat_interval\" = 120 }\n",
    );
    ksm_running(&b, 7);
    let status = status_text(&b);
    assert!(
        status.contains("Host knobs:\n  KSM: run 1, merge_across_nodes 1, 7 page(s) shared, 21 sharing\n  THP: enabled always, defrag madvise\n  none held by kvmtune\n"),
        "{status}"
    );
    b.prepare(
        "a",
        &vm("a", &format!("{KSM_OFF}<k:sysctl apply='on'/>"), ""),
    )
    .unwrap();
    b.prepare("h", &huge_vm("h", 64, &bound("strict", "0")))
        .unwrap();
    let status = status_text(&b);
    for line in [
        "  \"a\" (prepared)\n    holds /proc/sys/vm/stat_interval = 120\n    holds /sys/kernel/mm/ksm/run = 0\n",
        "  KSM: run 0, merge_across_nodes 0, 0 page(s) shared, 0 sharing\n",
        "  /proc/sys/vm/stat_interval = 120 for VM \"a\", back to 1 after\n",
        "  /sys/kernel/mm/ksm/merge_across_nodes = 0 for VM \"h\", back to 1 after\n",
        "  /sys/kernel/mm/ksm/run = 0 for VM \"a\", back to 1 after\n",
    ] {
        assert!(status.contains(line), "missing {line:?} in\n{status}");
    }
    let state = b.state();
    let json =
        serde_json::to_value(kvmtune::status::gather(&b.kernel, Some(&state), &b.policy).unwrap())
            .unwrap();
    assert_eq!(json["knobs"]["ksm"]["merge_across_nodes"], "0");
    assert_eq!(json["knobs"]["held"][1]["vms"][0], "h");
    assert_eq!(json["vms"][0]["knobs"]["/sys/kernel/mm/ksm/run"], "0");
}

/// Every knob at once, with a hugepage reservation.
const ALL_KNOBS: &str = "[ksm]\nmerge_across_nodes = 0\n\
    [thp]\nenabled = \"never\"\ndefrag = \"defer\"\n\
    [sysctl]\nfor = [\"metadata\"]\nvalues = { \"vm.stat_interval\" = 120 }\n";

fn all_knobs_vm() -> String {
    huge_vm(
        "rt",
        64,
        &format!(
            "{}<metadata><k:tune xmlns:k='urn:kvmtune:1'>{KSM_OFF}{THP_ON}<k:sysctl apply='on'/></k:tune></metadata>",
            bound("strict", "1")
        ),
    )
}

/// Kill kvmtune before each write of prepare in turn; libvirt's release (or any next call)
/// leaves the host exactly as before.
#[test]
fn a_crash_at_any_knob_change_of_prepare_is_undone() {
    let xml = all_knobs_vm();
    let total = {
        let b = two_nodes().with_policy(ALL_KNOBS);
        ksm_running(&b, 100);
        b.prepare("rt", &xml).unwrap();
        b.kernel.writes().len()
    };
    assert_eq!(
        total, 7,
        "sysctl, defrag, enabled, run 2, merge, run 0, pool"
    );
    for n in 0..total {
        let b = two_nodes().with_policy(ALL_KNOBS);
        ksm_running(&b, 100);
        let start = b.snapshot();
        b.kernel.crash_at_write(Some(n));
        let crashed = catch_unwind(AssertUnwindSafe(|| b.prepare("rt", &xml)));
        assert!(crashed.is_err(), "write {n}: no crash injected");
        b.release("rt").unwrap();
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
fn a_crash_at_any_knob_change_of_release_is_finished_by_recover() {
    let xml = all_knobs_vm();
    let total = {
        let b = two_nodes().with_policy(ALL_KNOBS);
        ksm_running(&b, 100);
        b.prepare("rt", &xml).unwrap();
        let before = b.kernel.writes().len();
        b.release("rt").unwrap();
        b.kernel.writes().len() - before
    };
    assert_eq!(total, 7);
    for n in 0..total {
        let b = two_nodes().with_policy(ALL_KNOBS);
        ksm_running(&b, 100);
        let start = b.snapshot();
        b.prepare("rt", &xml).unwrap();
        b.started("rt").unwrap();
        b.kernel.crash_at_write(Some(n));
        assert!(catch_unwind(AssertUnwindSafe(|| b.release("rt"))).is_err());
        b.recover_all().unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "crash at write {n}"
        );
        assert_eq!(b.state_files(), Vec::<String>::new(), "crash at write {n}");
    }
}
