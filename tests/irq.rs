//! IRQ affinity on the kernel-modelling fake root: a VM's passthrough device IRQs go to its
//! vCPUs' CPUs at `started`, other IRQs leave isolated CPUs, late VFIO vectors are pinned by
//! `irq-watch`, managed IRQs are skipped, irqbalance is told, and release restores everything.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::cgroupfs::Layout;
use common::{diff, kernel, Bench, GIB};
use kvmtune::cpulist::CpuSet;

fn host() -> Bench {
    Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(Layout::V1)
            .with_irqs(),
    )
}

/// A VM pinned to CPU `cpu` with the passthrough device 0000:06:00.0; `isolate` adds isolation.
fn vm(name: &str, cpu: u32, isolate: bool, irq: &str) -> String {
    let iso = if isolate {
        "<k:isolate cpus='vcpus'/>"
    } else {
        ""
    };
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <cputune><vcpupin vcpu='0' cpuset='{cpu}'/></cputune>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'>{iso}<k:irq cpus='{irq}'/></k:tune></metadata>\
         <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
         <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev></devices></domain>"
    )
}

fn affinity(b: &Bench, irq: u32) -> CpuSet {
    b.kernel.irqs(|i| i.irqs[&irq].affinity.clone())
}

fn set(list: &str) -> CpuSet {
    CpuSet::parse(list).unwrap()
}

#[test]
fn device_irqs_follow_the_vcpus_and_other_irqs_leave_isolated_cpus() {
    let b = host();
    let start = b.snapshot();
    b.prepare("gpu", &vm("gpu", 3, true, "vcpus")).unwrap();
    assert_eq!(
        affinity(&b, 40),
        set("0-3"),
        "device IRQs wait for started (QEMU opens the device)"
    );
    b.started("gpu").unwrap();
    for irq in [40, 41, 16] {
        assert_eq!(
            affinity(&b, irq),
            set("3"),
            "device IRQ {irq} (MSI-X and INTx)"
        );
    }
    for irq in 10..14 {
        assert_eq!(
            affinity(&b, irq),
            set("0-2"),
            "other IRQ {irq} off the isolated CPU"
        );
    }
    assert_eq!(b.kernel.irqs(|i| i.default_affinity.clone()), set("0-2"));
    assert_eq!(
        affinity(&b, 14),
        set("0-3"),
        "a managed IRQ stays where the kernel put it"
    );
    let state = b.state();
    let status = kvmtune::status::gather(&b.kernel, Some(&state), &b.policy).unwrap();
    let irqs = status.irqs.as_ref().expect("irqs in status");
    assert_eq!(irqs.refused, vec![14]);
    assert_eq!(irqs.pinned.len(), 3);
    assert_eq!(
        irqs.moved, 4,
        "IRQs 10-13 (default_smp_affinity is not an IRQ)"
    );
    b.release("gpu").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn irq_target_housekeeping_or_list_without_isolation() {
    for (target, expected) in [("housekeeping", "0,2"), ("1-2", "1-2")] {
        let b = host();
        let start = b.snapshot();
        b.prepare("v", &vm("v", 3, false, target)).unwrap();
        b.started("v").unwrap();
        assert_eq!(affinity(&b, 40), set(expected), "{target}");
        assert_eq!(
            affinity(&b, 10),
            set("0-3"),
            "{target}: nothing isolated, other IRQs untouched"
        );
        b.release("v").unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "{target}"
        );
    }
}

#[test]
fn irq_cpus_outside_the_online_set_are_refused_at_prepare() {
    let b = host();
    let err = b
        .prepare("v", &vm("v", 3, false, "8-9"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not online"), "{err}");
    assert!(b.kernel.writes().is_empty());
}

#[test]
fn an_irq_freed_between_listing_and_writing_is_skipped() {
    let b = host();
    b.prepare("gpu", &vm("gpu", 3, true, "vcpus")).unwrap();
    b.kernel.irqs(|i| i.vanish_on_write = Some(12));
    b.started("gpu").unwrap();
    assert_eq!(affinity(&b, 40), set("3"));
    b.release("gpu").unwrap();
}

#[test]
fn late_vfio_vectors_are_pinned_by_irq_watch_and_given_back() {
    let b = host();
    let start = b.snapshot();
    b.prepare("gpu", &vm("gpu", 3, true, "vcpus")).unwrap();
    b.started("gpu").unwrap();
    assert_eq!(b.refresh_irqs().unwrap(), 0, "nothing to do: no write");
    // The guest driver enables more MSI-X vectors.
    b.kernel
        .irqs(|i| i.add_vfio_vectors("0000:06:00.0", &[50, 51]));
    assert_eq!(b.refresh_irqs().unwrap(), 2);
    assert_eq!((affinity(&b, 50), affinity(&b, 51)), (set("3"), set("3")));
    // Someone resets one; the next pass puts it back.
    b.kernel
        .irqs(|i| i.irqs.get_mut(&41).unwrap().affinity = set("0-3"));
    assert_eq!(b.refresh_irqs().unwrap(), 1);
    assert_eq!(affinity(&b, 41), set("3"));
    // The VM stops: its VFIO vectors are freed before release.
    b.kernel.irqs(|i| i.remove_vectors(&[50, 51]));
    b.release("gpu").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

#[test]
fn irqbalance_keeps_off_isolated_cpus_and_gets_its_set_back() {
    let b = host();
    b.kernel.irqs(|i| i.irqbalance = Some(set("0")));
    b.prepare("gpu", &vm("gpu", 3, true, "vcpus")).unwrap();
    b.started("gpu").unwrap();
    assert_eq!(b.kernel.irqs(|i| i.irqbalance.clone()), Some(set("0,3")));
    b.release("gpu").unwrap();
    assert_eq!(b.kernel.irqs(|i| i.irqbalance.clone()), Some(set("0")));
}

/// A host whose irqbalance (banned from CPU 0 on its own) applies `settings cpus` only at its
/// next round (`irqbalance_round`), as the real one does every 10 s, answering the set before
/// until then.
fn host_with_irqbalance_rounds() -> Bench {
    let b = host();
    b.kernel.irqs(|i| {
        i.irqbalance = Some(set("0"));
        i.irqbalance_waits_for_round = true;
    });
    b
}

/// irqbalance's banned CPUs after its next round.
fn banned_after_round(b: &Bench) -> Option<CpuSet> {
    b.kernel.irqs(|i| {
        i.irqbalance_round();
        i.irqbalance.clone()
    })
}

/// A VM that starts before the round that gives back the last VM's ban reads that ban back
/// from irqbalance. It must not take it for irqbalance's own set (a VM on CPU 1), nor for a
/// ban in force (a VM on CPU 3, the same: the give-back would lift it at that round; the
/// hypervisor tier saw CPU 3 unbanned under a VM).
#[test]
fn a_vm_starting_before_irqbalance_applied_the_give_back_gets_its_own_ban_only() {
    for (cpu, under_b) in [(1, "0-1"), (3, "0,3")] {
        let b = host_with_irqbalance_rounds();
        b.prepare("a", &vm("a", 3, true, "vcpus")).unwrap();
        b.started("a").unwrap();
        assert_eq!(banned_after_round(&b), Some(set("0,3")));
        b.release("a").unwrap();
        // No round yet: irqbalance still answers 0,3 when the next VM starts.
        b.prepare("b", &vm("b", cpu, true, "vcpus")).unwrap();
        b.started("b").unwrap();
        assert_eq!(banned_after_round(&b), Some(set(under_b)), "b on CPU {cpu}");
        b.release("b").unwrap();
        assert_eq!(
            banned_after_round(&b),
            Some(set("0")),
            "b on CPU {cpu}: irqbalance's own set, not the first VM's ban"
        );
    }
}

/// A VM that stops before irqbalance's next round: irqbalance still answers its own set, which
/// is what it gets back, yet the ban it has not applied yet would come into force at that round
/// and outlive the VM. kvmtune must tell it its own set anyway.
#[test]
fn a_vm_stopping_before_irqbalance_applied_its_ban_does_not_leave_the_ban_behind() {
    let b = host_with_irqbalance_rounds();
    b.prepare("a", &vm("a", 3, true, "vcpus")).unwrap();
    b.started("a").unwrap();
    b.release("a").unwrap();
    assert_eq!(banned_after_round(&b), Some(set("0")));
}

/// irqbalance restarted (a package upgrade) moments after kvmtune banned it from a running VM's
/// CPU: the new one starts from its own set and was told nothing. The next VM event tells it
/// again (what its predecessor was told is not in effect for it).
#[test]
fn a_restarted_irqbalance_is_banned_again_at_the_next_vm_event() {
    let b = host_with_irqbalance_rounds();
    b.prepare("rt", &vm("rt", 3, true, "vcpus")).unwrap();
    b.started("rt").unwrap();
    assert_eq!(banned_after_round(&b), Some(set("0,3")));
    b.kernel.irqs(|i| i.irqbalance_restart(set("0")));
    let plain = "<domain><name>plain</name><memory unit='MiB'>64</memory></domain>";
    b.prepare("plain", plain).unwrap();
    b.started("plain").unwrap();
    b.release("plain").unwrap();
    assert_eq!(banned_after_round(&b), Some(set("0,3")));
    b.release("rt").unwrap();
    assert_eq!(banned_after_round(&b), Some(set("0")));
}

#[test]
fn another_vm_stopping_does_not_give_back_irqs_an_isolated_vm_needs() {
    let b = host();
    let start = b.snapshot();
    b.prepare("rt", &vm("rt", 3, true, "vcpus")).unwrap();
    b.started("rt").unwrap();
    b.prepare(
        "plain",
        "<domain><name>plain</name><memory unit='MiB'>64</memory></domain>",
    )
    .unwrap();
    b.started("plain").unwrap();
    b.release("plain").unwrap();
    assert_eq!(affinity(&b, 10), set("0-2"));
    assert_eq!(affinity(&b, 40), set("3"));
    b.release("rt").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}

/// Kill kvmtune before each change of `started`; libvirt then aborts the start and calls
/// release, which must leave the host as it was.
#[test]
fn a_crash_at_any_change_of_started_is_undone() {
    let xml = vm("gpu", 3, true, "vcpus");
    let total = {
        let b = host();
        b.prepare("gpu", &xml).unwrap();
        let before = b.kernel.writes().len();
        b.started("gpu").unwrap();
        b.kernel.writes().len() - before
    };
    assert!(total >= 8, "only {total} changes at started");
    for n in 0..total {
        let b = host();
        let start = b.snapshot();
        b.prepare("gpu", &xml).unwrap();
        b.kernel.crash_at_write(Some(n));
        assert!(
            catch_unwind(AssertUnwindSafe(|| b.started("gpu"))).is_err(),
            "change {n}"
        );
        b.release("gpu").unwrap();
        assert_eq!(
            diff(&start, &b.snapshot()),
            Vec::<String>::new(),
            "crash at change {n}"
        );
        assert_eq!(b.state_files(), Vec::<String>::new());
    }
}

/// Two VMs isolate the same CPU (the policy allows it): the first one's release must leave
/// every IRQ off that CPU, and must not touch a managed IRQ.
#[test]
fn releasing_one_of_two_isolated_vms_keeps_irqs_off_their_cpu() {
    let b = host().with_policy("[cpus]\noverlap = \"allow\"\n");
    let start = b.snapshot();
    b.prepare("a", &vm("a", 3, true, "vcpus")).unwrap();
    b.started("a").unwrap();
    b.prepare("b", &vm("b", 3, true, "off")).unwrap();
    b.started("b").unwrap();
    b.release("a").unwrap();
    for irq in 10..14 {
        assert_eq!(
            affinity(&b, irq),
            set("0-2"),
            "IRQ {irq} while b still isolates CPU 3"
        );
    }
    assert_eq!(b.kernel.irqs(|i| i.default_affinity.clone()), set("0-2"));
    // a's device IRQs are ordinary IRQs now: kept off the CPU b still isolates.
    assert_eq!(affinity(&b, 40), set("0-2"));
    assert_eq!(
        affinity(&b, 14),
        set("0-3"),
        "the managed IRQ is left alone"
    );
    assert_eq!(b.state_files(), vec!["ledger.json".to_string()]);
    b.release("b").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}
