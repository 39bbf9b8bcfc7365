//! `plan`: what will change, worked out and never made.
//!
//! This file: what `prepare` must reserve for a VM (`plan::plan` → `Plan`), given the host now
//! and what other VMs hold. Pure: no I/O, so most behaviour is tested here with hand-built
//! hosts. The submodules turn a `Plan`, the ledger and one snapshot of the host
//! (`host::snapshot::Probe`, which refuses writes) into every change of every resource:
//! `changes` (what `prepare` and `started` will change, and `kvmtune plan`'s preview),
//! `isolation`, `irq` and `knob_changes`. `apply` makes what they work out.

pub mod bounds;
pub mod changes;
pub mod hugepages;
pub mod irq;
pub mod isolation;
pub mod knob_changes;
pub mod knobs;
pub mod partition_fit;

use serde::Serialize;

use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::domain::{Domain, PciAddress};
use crate::error::{Error, Result};
use crate::host::{Host, PoolKey, PoolState};
use crate::policy::Policy;
use crate::size::{human, page_size_name};
use crate::state::Ledger;

/// Everything prepare will do for one VM.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub vm: String,
    pub hugepages: Vec<PoolGrowth>,
    /// CPUs the VM asks to isolate, checked against the policy (empty: none).
    pub isolate: CpuSet,
    /// Where its passthrough devices' IRQs go, checked against the policy.
    pub irq: Option<CpuSet>,
    /// Its PCI passthrough devices (`DDDD:BB:DD.F`).
    pub devices: Vec<PciAddress>,
    /// Host knobs it wants held while it runs.
    pub knobs: Vec<knobs::KnobWant>,
    /// Why isolated partitions cannot hold its isolated CPUs under libvirt
    /// (`partition_fit::misfit`); `None` when they can, or when it isolates nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_misfit: Option<String>,
}

/// One pool the VM uses: what it needs, what the free pool covers, what must be added.
#[derive(Debug, Clone, Serialize)]
pub struct PoolGrowth {
    pub pool: PoolKey,
    /// Pages the VM needs from this pool.
    pub pages: u64,
    /// The pool as it is now.
    pub before: PoolState,
    /// Free pages already promised to other prepared VMs, or reserved by a mapping that has
    /// not touched them yet (a QEMU started without preallocation).
    pub promised: u64,
    /// Pages to add to the pool.
    pub grow: u64,
}

impl PoolGrowth {
    /// Free pages this VM can use without growing the pool.
    pub fn covered(&self) -> u64 {
        self.before
            .free
            .saturating_sub(self.promised)
            .min(self.pages)
    }

    /// The `nr_hugepages` value to write: the persistent pool grown by `grow`, with the node's
    /// surplus pages (which `nr_hugepages` includes) left as they are.
    pub fn target_nr(&self) -> u64 {
        self.before.nr + self.grow
    }

    pub fn change(&self) -> Option<Change> {
        (self.grow > 0).then(|| Change::File {
            path: self.pool.nr_path(),
            before: self.before.nr.to_string(),
            after: self.target_nr().to_string(),
        })
    }
}

impl Plan {
    /// The plan of a VM that asks for nothing.
    pub fn nothing(vm: &str) -> Plan {
        Plan {
            vm: vm.to_string(),
            hugepages: Vec::new(),
            isolate: CpuSet::new(),
            irq: None,
            devices: Vec::new(),
            knobs: Vec::new(),
            partition_misfit: None,
        }
    }

    /// The pool growths, in the order apply makes them. Every other change (knobs, isolation,
    /// IRQs) is worked out from the host by `plan::changes`, which puts these among them.
    pub fn changes(&self) -> Vec<Change> {
        self.hugepages
            .iter()
            .filter_map(PoolGrowth::change)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.changes().is_empty()
    }
}

/// Whether the VM's metadata and the policy's defaults ask for nothing at all (no hugepage
/// reservation, no isolation, no IRQ placement): then there is nothing to check or change.
pub fn asks_nothing(domain: &Domain, policy: &Policy) -> bool {
    use crate::domain::metadata::{IrqChoice, IsolateChoice, Reserve};
    let reserve = domain.tune.hugepages.unwrap_or(policy.default_hugepages);
    let no_pages = match reserve {
        Reserve::Off => true,
        Reserve::Auto => domain.hugepages.is_none(),
        Reserve::On => false,
    };
    let isolate = domain
        .tune
        .isolate
        .as_ref()
        .unwrap_or(&policy.default_isolate);
    let irq = domain.tune.irq.as_ref().unwrap_or(&policy.default_irq);
    // The host's node count is not known here: assume several, at worst a slower answer.
    let traits = knobs::Traits {
        isolated: false,
        hugepages: !no_pages,
        nosharepages: domain.nosharepages,
        multi_node: true,
    };
    let no_knobs = knobs::wanted(&domain.tune, &domain.name, &policy.knobs, &traits)
        .is_ok_and(|w| w.is_empty());
    no_pages && *isolate == IsolateChoice::Off && *irq == IrqChoice::Off && no_knobs
}

/// Work out the plan, refusing (with one line) anything the policy or the host does not allow.
pub fn plan(
    domain: &Domain,
    vm: &str,
    policy: &Policy,
    host: &Host,
    ledger: &Ledger,
) -> Result<Plan> {
    let cpus = bounds::cpu_settings(domain, vm, policy, &host.topology).map_err(Error::Refused)?;
    if !cpus.isolate.is_empty() {
        if policy.isolation == crate::policy::IsolationMethod::Off {
            return Err(Error::Refused(format!(
                "VM '{vm}' asks to isolate CPUs {}, but the policy turns isolation off (cpus.isolation = \"off\"). Nothing was changed.",
                cpus.isolate
            )));
        }
        let holders = ledger.isolating(&cpus.isolate, vm);
        if !policy.allow_overlap && !holders.is_empty() {
            let shared = cpus.isolate.intersection(&ledger.isolated_except(vm));
            return Err(Error::Refused(format!(
                "VM '{vm}' asks to isolate CPUs {}, but CPUs {shared} are already isolated for VM '{}' (cpus.overlap = \"refuse\"). Nothing was changed.",
                cpus.isolate,
                holders.join("', '")
            )));
        }
    }
    let reserve = domain.tune.hugepages.unwrap_or(policy.default_hugepages);
    let mut named = domain.clone();
    named.name = vm.to_string();
    let need = hugepages::need(&named, reserve, host).map_err(Error::Refused)?;

    // Saturating: a domain may claim memory near 2^64 bytes (found through the fuzz target); such a total
    // is refused below, never wrapped into a small one.
    let total = need
        .iter()
        .map(|(k, pages)| k.page_bytes().saturating_mul(*pages))
        .fold(0u64, u64::saturating_add);
    if let Some(limit) = policy.max_per_vm {
        if total > limit {
            return Err(Error::Refused(format!(
                "VM '{vm}' asks for {} of hugepages; the policy allows at most {} per VM (hugepages.max_per_vm). Nothing was changed.",
                human(total),
                human(limit)
            )));
        }
    }

    let growth: Vec<PoolGrowth> = need
        .iter()
        .map(|(&pool, &pages)| {
            let before = host.pool(pool).copied().unwrap_or_default();
            // The kernel's count of reserved-but-untouched pages is global per size; taking it
            // from each node's free count is exact on one node and cautious on several.
            let promised = ledger.promised(pool, vm) + host.reserved(pool.page_kib);
            let available = before.free.saturating_sub(promised);
            PoolGrowth {
                pool,
                pages,
                before,
                promised,
                grow: pages.saturating_sub(available),
            }
        })
        .collect();
    check_memory_floor(vm, &growth, policy, host)?;
    let traits = knobs::Traits {
        isolated: !cpus.isolate.is_empty(),
        hugepages: !growth.is_empty(),
        nosharepages: domain.nosharepages,
        multi_node: host.topology.nodes.len() > 1,
    };
    let knobs = knobs::wanted(&domain.tune, vm, &policy.knobs, &traits).map_err(Error::Refused)?;
    knobs::check_held(vm, &knobs, ledger).map_err(Error::Refused)?;
    let partition_misfit = partition_fit::misfit(domain, &cpus.isolate);
    Ok(Plan {
        vm: vm.to_string(),
        hugepages: growth,
        isolate: cpus.isolate,
        irq: cpus.irq,
        devices: domain.hostdevs.clone(),
        knobs,
        partition_misfit,
    })
}

/// Refuse growth that would leave a node with less than the policy's floor of ordinary memory.
fn check_memory_floor(vm: &str, growth: &[PoolGrowth], policy: &Policy, host: &Host) -> Result<()> {
    for node in &host.topology.nodes {
        let on_node: Vec<&PoolGrowth> = growth
            .iter()
            .filter(|g| g.pool.node == node.id && g.grow > 0)
            .collect();
        let bytes = on_node
            .iter()
            .map(|g| g.grow.saturating_mul(g.pool.page_bytes()))
            .fold(0u64, u64::saturating_add);
        if bytes == 0 {
            continue;
        }
        let usable = node.mem_available.saturating_sub(policy.node_memory_floor);
        if bytes > usable {
            let first = on_node[0];
            return Err(Error::Refused(format!(
                "VM '{vm}' needs {} x {} pages on node {} ({} more than the free pool holds); node {} has {} available and the policy keeps {} for the host. Nothing was changed.",
                first.pages,
                page_size_name(first.pool.page_kib),
                node.id,
                human(bytes),
                node.id,
                human(node.mem_available),
                human(policy.node_memory_floor)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
