//! The policy's bounds on what a VM's metadata may ask for CPUs: which CPUs may be isolated,
//! where device IRQs may go. Checked at `prepare`, before anything changes, even though they
//! are used at later events.

use crate::cpulist::CpuSet;
use crate::domain::metadata::{IrqChoice, IsolateChoice};
use crate::domain::Domain;
use crate::host::Topology;
use crate::policy::{CpuPolicy, Policy};

/// The CPU settings of a VM after the policy has checked them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSettings {
    pub isolate: CpuSet,
    pub irq: Option<CpuSet>,
}

/// The housekeeping CPUs: never isolated.
pub fn housekeeping(policy: &Policy, topology: &Topology) -> CpuSet {
    match &policy.housekeeping {
        CpuPolicy::Auto => topology.first_core_of_each_node(),
        CpuPolicy::List(set) => set.clone(),
    }
}

/// The CPUs metadata may isolate: the policy's list (or every online CPU) minus housekeeping.
pub fn isolatable(policy: &Policy, topology: &Topology) -> CpuSet {
    let base = match &policy.isolatable {
        CpuPolicy::Auto => topology.online_cpus.clone(),
        CpuPolicy::List(set) => set.clone(),
    };
    base.difference(&housekeeping(policy, topology))
}

pub fn cpu_settings(
    domain: &Domain,
    vm: &str,
    policy: &Policy,
    topology: &Topology,
) -> Result<CpuSettings, String> {
    let pinned = domain.vcpu_host_cpus();
    let housekeeping = housekeeping(policy, topology);
    let online = &topology.online_cpus;

    let (isolate_choice, isolate_said) = match &domain.tune.isolate {
        Some(c) => (c.clone(), true),
        None => (policy.default_isolate.clone(), false),
    };
    let isolate = match isolate_choice {
        IsolateChoice::Off => CpuSet::new(),
        IsolateChoice::Vcpus if pinned.is_empty() => {
            if isolate_said {
                return Err(format!(
                    "VM '{vm}' asks to isolate its vCPUs' CPUs, but has no <vcpupin> or <vcpu cpuset>. Nothing was changed."
                ));
            }
            CpuSet::new() // a policy default cannot apply to an unpinned VM
        }
        IsolateChoice::Vcpus => pinned.clone(),
        IsolateChoice::List(set) => set,
    };
    if !isolate.is_empty() {
        let offline = isolate.difference(online);
        if !offline.is_empty() {
            return Err(format!(
                "VM '{vm}' asks to isolate CPUs {isolate}, but {offline} are not online (online: {online}). Nothing was changed."
            ));
        }
        let hk = isolate.intersection(&housekeeping);
        if !hk.is_empty() {
            return Err(format!(
                "VM '{vm}' asks to isolate CPUs {isolate}, but {hk} are housekeeping CPUs (cpus.housekeeping: {housekeeping}). Nothing was changed."
            ));
        }
        let allowed = isolatable(policy, topology);
        let outside = isolate.difference(&allowed);
        if !outside.is_empty() {
            return Err(format!(
                "VM '{vm}' asks to isolate CPUs {isolate}, but the policy allows only {allowed} (cpus.isolatable). Nothing was changed."
            ));
        }
    }

    let (irq_choice, irq_said) = match &domain.tune.irq {
        Some(c) => (c.clone(), true),
        None => (policy.default_irq.clone(), false),
    };
    let irq = match irq_choice {
        IrqChoice::Off => None,
        IrqChoice::Housekeeping => Some(housekeeping.clone()),
        IrqChoice::Vcpus if pinned.is_empty() => {
            if irq_said {
                return Err(format!(
                    "VM '{vm}' asks for its device IRQs on its vCPUs' CPUs, but has no <vcpupin> or <vcpu cpuset>. Nothing was changed."
                ));
            }
            None
        }
        IrqChoice::Vcpus => Some(pinned.clone()),
        IrqChoice::List(set) => {
            let offline = set.difference(online);
            if !offline.is_empty() {
                return Err(format!(
                    "VM '{vm}' asks for its device IRQs on CPUs {set}, but {offline} are not online (online: {online}). Nothing was changed."
                ));
            }
            Some(set)
        }
    };
    Ok(CpuSettings { isolate, irq })
}
