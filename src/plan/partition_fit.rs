//! Whether a libvirt VM's pins let isolated partitions hold its isolated CPUs, read from its
//! domain alone. The partition method makes each vCPU cgroup (`…/libvirt/vcpuN`) a partition
//! of the one CPU libvirt pins that vCPU to; the emulator's cgroup is their sibling, and the
//! kernel refuses a partition that would take a sibling's only CPUs (EINVAL). So, for every
//! isolated CPU: exactly one vCPU pinned to it alone, and no emulator pin on it.
//! `cpus.isolation = "auto"` takes another method for a VM that does not fit; `"partition"`
//! refuses it at `prepare`, before anything is changed.

use crate::cpulist::CpuSet;
use crate::domain::Domain;

/// Why partitions cannot hold `isolated` for `domain`, in words that follow "partitions
/// cannot hold its isolated CPUs: "; `None` when they can.
pub fn misfit(domain: &Domain, isolated: &CpuSet) -> Option<String> {
    if isolated.is_empty() {
        return None;
    }
    if let Some(emulator) = &domain.emulatorpin {
        let shared = emulator.intersection(isolated);
        if !shared.is_empty() {
            return Some(format!(
                "its emulator is pinned to isolated CPUs {shared} (<emulatorpin cpuset='{emulator}'>), which a vCPU's partition would take from it"
            ));
        }
    }
    let mut held = CpuSet::new();
    for vcpu in 0..domain.vcpus {
        let pin = domain
            .vcpupins
            .iter()
            .find(|(n, _)| *n == vcpu)
            .map(|(_, cpus)| cpus.clone())
            .or_else(|| domain.vcpu_cpuset.clone());
        let Some(pin) = pin else {
            return Some(format!(
                "vCPU {vcpu} is not pinned (an isolated partition holds one vCPU pinned to one CPU)"
            ));
        };
        if pin.intersection(isolated).is_empty() {
            continue;
        }
        if pin.len() != 1 {
            return Some(format!(
                "vCPU {vcpu} is pinned to CPUs {pin} (an isolated partition holds one vCPU pinned to one CPU)"
            ));
        }
        if !pin.intersection(&held).is_empty() {
            return Some(format!(
                "two vCPUs are pinned to CPU {pin} (an isolated partition holds one vCPU per CPU)"
            ));
        }
        held = held.union(&pin);
    }
    let empty = isolated.difference(&held);
    if !empty.is_empty() {
        return Some(format!(
            "no vCPU is pinned to isolated CPUs {empty}, which a partition would leave open to host tasks"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(vcpupins: &[&str], emulatorpin: Option<&str>) -> Domain {
        Domain {
            vcpus: vcpupins.len() as u32,
            vcpupins: vcpupins
                .iter()
                .enumerate()
                .map(|(n, c)| (n as u32, CpuSet::parse(c).unwrap()))
                .collect(),
            emulatorpin: emulatorpin.map(|c| CpuSet::parse(c).unwrap()),
            ..Domain::default()
        }
    }

    fn set(list: &str) -> CpuSet {
        CpuSet::parse(list).unwrap()
    }

    #[test]
    fn one_vcpu_per_isolated_cpu_with_the_emulator_elsewhere_fits() {
        assert_eq!(
            misfit(&domain(&["2", "3", "0"], Some("0")), &set("2-3")),
            None
        );
    }

    #[test]
    fn an_emulator_pinned_to_an_isolated_cpu_does_not_fit() {
        let why = misfit(&domain(&["3"], Some("3")), &set("3")).unwrap();
        assert!(
            why.starts_with("its emulator is pinned to isolated CPUs 3"),
            "{why}"
        );
    }

    #[test]
    fn a_vcpu_on_two_cpus_two_vcpus_on_one_and_an_unheld_cpu_do_not_fit() {
        let two_cpus = misfit(&domain(&["2-3"], None), &set("2-3")).unwrap();
        assert!(
            two_cpus.starts_with("vCPU 0 is pinned to CPUs 2-3"),
            "{two_cpus}"
        );
        let shared = misfit(&domain(&["3", "3"], None), &set("3")).unwrap();
        assert!(
            shared.starts_with("two vCPUs are pinned to CPU 3"),
            "{shared}"
        );
        let open = misfit(&domain(&["3"], None), &set("2-3")).unwrap();
        assert!(
            open.starts_with("no vCPU is pinned to isolated CPUs 2"),
            "{open}"
        );
        let unpinned = misfit(&domain(&[], None), &set("3"));
        assert!(unpinned.unwrap().starts_with("no vCPU is pinned"));
    }
}
