//! `kvmtune plan` shows what a start will do: for every golden scenario, the changes the plan
//! lists for `prepare` and for `started` are the changes their journals then record, in the
//! same order, and working the plan out changes nothing on the host.
//!
//! Where the two may differ is said here and in the plan's output: the host can change between
//! the plan and the start. A process born meanwhile is moved all the same (`MoveProcesses`
//! names cgroups, not processes, so the journal is unchanged), a kernel thread born meanwhile is
//! one more `Affinity` change, VFIO vectors a guest enables later are pinned when they appear
//! (by the watcher), and an IRQ the kernel manages refuses to move: `started` tries it and
//! drops it from its journal. The fake's IRQ 14 is such an IRQ; the comparison of `started`
//! leaves out exactly the IRQs the ledger then records as refused.

mod common;

use common::scenarios::{scenario, GOLDEN, OTHER_LAYOUTS};
use common::{diff, Bench};
use kvmtune::apply::{self};
use kvmtune::change::Change;
use kvmtune::cpulist::CpuSet;
use kvmtune::domain::Domain;
use kvmtune::host::snapshot::Snapshot;
use kvmtune::irq::irq_of;
use kvmtune::plan::changes::{preview, Preview};
use kvmtune::state::{Journal, Operation};

/// `kvmtune plan` on the bench as it is now, through the read-once snapshot it uses.
fn plan_of(b: &Bench, vm: &str, xml: &str) -> Preview {
    let domain = Domain::parse(xml).unwrap();
    let snapshot = Snapshot::new(&b.kernel, &b.kernel, &b.kernel);
    preview(&snapshot.probe(), &b.policy, &domain, vm, &b.ledger()).unwrap()
}

/// The changes the committed journals of `vm`'s `operation` record.
fn journaled(journals: &[Journal], vm: &str, operation: Operation) -> Vec<Change> {
    journals
        .iter()
        .filter(|j| j.vm == vm && j.operation == operation)
        .flat_map(|j| j.changes.iter().cloned())
        .collect()
}

/// `planned` without the affinity changes of IRQs the kernel refused (managed IRQs).
fn without_refused(planned: &[Change], refused: &std::collections::BTreeSet<u32>) -> Vec<Change> {
    planned
        .iter()
        .filter(|c| {
            !matches!(c, Change::File { path, .. }
                if irq_of(path).is_some_and(|irq| refused.contains(&irq)))
        })
        .cloned()
        .collect()
}

#[test]
fn the_plan_lists_every_change_the_journals_of_prepare_and_started_record() {
    for case in GOLDEN.into_iter().chain(OTHER_LAYOUTS) {
        let s = scenario(case);
        let b = &s.bench;
        let start = b.snapshot();

        let plan = plan_of(b, s.vm, &s.xml);
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "{case}: the plan changed the host"
        );
        assert!(
            !plan.prepare.is_empty(),
            "{case}: nothing planned, so the comparison would prove nothing"
        );

        let domain = Domain::parse(&s.xml).unwrap();
        let (prepared, journals) = b.journaled(|ctx| apply::prepare(ctx, s.vm, &domain));
        prepared.unwrap();
        assert_eq!(
            journaled(&journals, s.vm, Operation::Prepare),
            plan.prepare,
            "{case}: prepare"
        );

        let (started, journals) = b.journaled(|ctx| apply::started(ctx, s.vm));
        started.unwrap();
        let refused = b.ledger().irq.map(|h| h.refused).unwrap_or_default();
        assert_eq!(
            journaled(&journals, s.vm, Operation::Started),
            without_refused(&plan.started, &refused),
            "{case}: started"
        );
        b.release(s.vm).unwrap();
    }
}

#[test]
fn every_golden_tree_of_a_start_is_a_scenario_the_plan_is_held_to() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".txt").map(str::to_string))
        // `suggest` prints XML; it starts nothing.
        .filter(|n| !n.starts_with("suggest-"))
        .collect();
    cases.sort();
    let mut golden: Vec<String> = GOLDEN.iter().map(|c| c.to_string()).collect();
    golden.sort();
    assert_eq!(cases, golden);
}

#[test]
fn an_isolated_vm_with_a_device_and_ksm_off_plans_cgroups_threads_irqs_and_ksm() {
    let s = scenario("05-isolated-device-ksm");
    let plan = plan_of(&s.bench, s.vm, &s.xml);
    let count =
        |changes: &[Change], what: fn(&Change) -> bool| changes.iter().filter(|c| what(c)).count();
    let file_under = |prefix: &'static str| move |c: &Change| matches!(c, Change::File { path, .. } if path.starts_with(prefix));
    assert!(plan.plan.changes().is_empty(), "no pool grows");
    assert_eq!(
        count(&plan.prepare, |c| matches!(c, Change::CreateCgroup { .. })),
        1
    );
    assert_eq!(
        count(&plan.prepare, |c| matches!(c, Change::MoveProcesses { .. })),
        1
    );
    assert!(
        count(&plan.prepare, |c| matches!(c, Change::Affinity { .. })) > 0,
        "kernel threads"
    );
    assert_eq!(
        plan.prepare
            .iter()
            .filter(|c| file_under("sys/kernel/mm/ksm/")(c))
            .count(),
        1
    );
    assert_eq!(
        plan.started
            .iter()
            .filter(|c| file_under("proc/irq/")(c))
            .count(),
        // Device IRQs 16, 40, 41 to CPU 3; 10-14 and the default affinity off CPU 3.
        9,
        "{:#?}",
        plan.started
    );
}

/// A host that changes between the plan and the start: a kernel thread born in between (a
/// driver loading: the kernel gives it every CPU) is confined too, one change more than the
/// plan could show; an ordinary process born in between is moved by the change the plan showed
/// (it names the cgroup, not the processes), so that journal entry is as planned.
#[test]
fn a_kernel_thread_born_after_the_plan_is_one_change_more_and_a_new_process_none() {
    let s = scenario("05-isolated-device-ksm");
    let b = &s.bench;
    let plan = plan_of(b, s.vm, &s.xml);
    b.kernel.cgroups(|c| {
        let mut hwrng = c.tasks[&4].clone();
        hwrng.comm = "hwrng".into();
        hwrng.mask = CpuSet::parse("0-3").unwrap();
        c.tasks.insert(600, hwrng);
        let mut shell = c.tasks[&100].clone();
        shell.comm = "bash".into();
        c.tasks.insert(700, shell);
    });

    let domain = Domain::parse(&s.xml).unwrap();
    let (prepared, journals) = b.journaled(|ctx| apply::prepare(ctx, s.vm, &domain));
    prepared.unwrap();

    let journal = journaled(&journals, s.vm, Operation::Prepare);
    let unplanned: Vec<&Change> = journal
        .iter()
        .filter(|c| !plan.prepare.contains(c))
        .collect();
    assert_eq!(
        unplanned,
        [&Change::Affinity {
            pid: 600,
            comm: "hwrng".into(),
            before: CpuSet::parse("0-3").unwrap(),
            after: CpuSet::parse("0-2").unwrap(),
        }]
    );
    assert_eq!(
        journal.len(),
        plan.prepare.len() + 1,
        "nothing planned is missing"
    );
    assert_eq!(
        b.kernel.cgroups(|c| c.allowed(700)),
        CpuSet::parse("0-2").unwrap(),
        "the new process is confined"
    );
}

/// With a VM already running isolated, the plan of a second one widens what is in place
/// (isolation narrows the housekeeping set, the other VM's IRQs stay) rather than setting it
/// up: the journals record that plan too.
#[test]
fn the_plan_of_a_second_isolated_vm_is_what_its_journals_record() {
    for case in [
        "05-isolated-device-ksm",
        "05-isolated-device-ksm-v2",
        "05-isolated-device-ksm-systemd",
    ] {
        let s = scenario(case);
        let b = &s.bench;
        let domain = Domain::parse(&s.xml).unwrap();
        b.journaled(|ctx| apply::prepare(ctx, s.vm, &domain))
            .0
            .unwrap();
        b.started(s.vm).unwrap();
        let second = common::scenarios::knob_vm(
            "rt2",
            "<k:isolate cpus='vcpus'/>",
            "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune>",
        );

        let plan = plan_of(b, "rt2", &second);
        // Narrowing the housekeeping set is changes at both steps (cgroups, then IRQs).
        assert!(
            !plan.prepare.is_empty() && !plan.started.is_empty(),
            "{case}: {plan:#?}"
        );
        let domain = Domain::parse(&second).unwrap();
        let (prepared, journals) = b.journaled(|ctx| apply::prepare(ctx, "rt2", &domain));
        prepared.unwrap();
        assert_eq!(
            journaled(&journals, "rt2", Operation::Prepare),
            plan.prepare,
            "{case}: prepare"
        );
        let (started, journals) = b.journaled(|ctx| apply::started(ctx, "rt2"));
        started.unwrap();
        let refused = b.ledger().irq.map(|h| h.refused).unwrap_or_default();
        assert_eq!(
            journaled(&journals, "rt2", Operation::Started),
            without_refused(&plan.started, &refused),
            "{case}: started"
        );
    }
}
