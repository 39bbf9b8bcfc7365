//! Which host knobs a VM wants held while it runs (see the `knobs` module): each group of the
//! policy (KSM's stop, KSM's `merge_across_nodes`, THP, sysctls) for the VMs its `for` list
//! selects, or whose metadata asks where the policy lets it. Pure: whether this host has the
//! files is checked at prepare (`plan::knob_changes::check`).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::domain::metadata::{Apply, Tune};
use crate::host::knobs::{
    same_value, shown, KSM_MERGE_ACROSS_NODES, KSM_RUN, THP_DEFRAG, THP_ENABLED,
};
use crate::policy::knobs::{KnobPolicy, Selector};
use crate::state::Ledger;

/// One knob a VM wants held at a value while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnobWant {
    /// The file, relative to the root.
    pub path: String,
    pub value: String,
    /// The policy key and the kind of VM that make this VM want it (`thp.for: isolated`).
    pub why: String,
}

/// What the policy's selectors look at in a VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traits {
    pub isolated: bool,
    pub hugepages: bool,
    pub nosharepages: bool,
    /// The host has more than one NUMA node (`merge_across_nodes` means nothing on one).
    pub multi_node: bool,
}

/// One group of knobs: its selectors, what the VM's metadata says of it, its values.
struct Group<'a> {
    key: &'static str,
    element: &'static str,
    selectors: &'a BTreeSet<Selector>,
    asked: Option<Apply>,
    values: Vec<(String, String)>,
}

fn selects(selector: Selector, t: &Traits) -> bool {
    match selector {
        Selector::Metadata => false, // only through the VM's metadata, below
        Selector::Isolated => t.isolated,
        Selector::Hugepages => t.hugepages,
        Selector::Nosharepages => t.nosharepages,
        Selector::All => true,
    }
}

/// The knobs `vm` wants, refusing metadata that asks where the policy does not allow it.
pub fn wanted(
    tune: &Tune,
    vm: &str,
    policy: &KnobPolicy,
    traits: &Traits,
) -> Result<Vec<KnobWant>, String> {
    let pair =
        |path: &str, value: &Option<String>| value.as_ref().map(|v| (path.to_string(), v.clone()));
    let groups = [
        Group {
            key: "ksm.stop_for",
            element: "<kvmtune:ksm run=\"off\"/>",
            selectors: &policy.ksm_stop_for,
            asked: tune.ksm,
            values: vec![(KSM_RUN.to_string(), "0".to_string())],
        },
        Group {
            key: "ksm.merge_for",
            element: "",
            selectors: &policy.ksm_merge_for,
            asked: None,
            values: pair(KSM_MERGE_ACROSS_NODES, &policy.ksm_merge_across_nodes)
                .filter(|_| traits.multi_node)
                .into_iter()
                .collect(),
        },
        Group {
            key: "thp.for",
            element: "<kvmtune:thp apply=\"on\"/>",
            selectors: &policy.thp_for,
            asked: tune.thp,
            values: [
                pair(THP_ENABLED, &policy.thp_enabled),
                pair(THP_DEFRAG, &policy.thp_defrag),
            ]
            .into_iter()
            .flatten()
            .collect(),
        },
        Group {
            key: "sysctl.for",
            element: "<kvmtune:sysctl apply=\"on\"/>",
            selectors: &policy.sysctl_for,
            asked: tune.sysctl,
            values: policy
                .sysctls
                .iter()
                .map(|s| (s.path.clone(), s.value.clone()))
                .collect(),
        },
    ];
    let mut out = Vec::new();
    for g in groups {
        let by = match g.asked {
            Some(Apply::Off) => None,
            Some(Apply::On) if g.selectors.contains(&Selector::Metadata) => {
                Some(Selector::Metadata)
            }
            Some(Apply::On) => {
                return Err(format!(
                    "VM '{vm}' asks for {} in its metadata, but the policy's {} does not list \"metadata\". Nothing was changed.",
                    g.element, g.key
                ))
            }
            Some(Apply::Auto) | None => g.selectors.iter().copied().find(|s| selects(*s, traits)),
        };
        let Some(by) = by else { continue };
        out.extend(g.values.into_iter().map(|(path, value)| KnobWant {
            path,
            value,
            why: format!("{}: {by}", g.key),
        }));
    }
    Ok(out)
}

/// Refuse a VM that wants a knob at another value than the one kvmtune holds it at for other
/// VMs (the policy changed while they run): one value at a time, or the first VM's would be
/// lost.
pub fn check_held(vm: &str, wants: &[KnobWant], ledger: &Ledger) -> Result<(), String> {
    for want in wants {
        let holders = ledger.knob_holders(&want.path, vm);
        let Some((_, held)) = holders.first() else {
            continue;
        };
        if !same_value(held, &want.value) {
            let names: Vec<&str> = holders.iter().map(|(name, _)| name.as_str()).collect();
            return Err(format!(
                "VM '{vm}' wants {} = {} ({}), but kvmtune holds it at {held} for VM '{}' (did the policy change while it runs?). Nothing was changed.",
                shown(&want.path),
                want.value,
                want.why,
                names.join("', '")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::state::{Phase, VmHold};

    fn knobs(toml: &str) -> KnobPolicy {
        Policy::parse(toml).unwrap().knobs
    }

    fn tune(ksm: Option<Apply>, thp: Option<Apply>, sysctl: Option<Apply>) -> Tune {
        Tune {
            ksm,
            thp,
            sysctl,
            ..Tune::default()
        }
    }

    fn paths(wants: &[KnobWant]) -> Vec<(&str, &str)> {
        wants
            .iter()
            .map(|w| (w.path.as_str(), w.value.as_str()))
            .collect()
    }

    const ISOLATED: Traits = Traits {
        isolated: true,
        hugepages: false,
        nosharepages: false,
        multi_node: true,
    };

    #[test]
    fn a_vm_that_asks_nothing_wants_nothing_by_default() {
        let w = wanted(&Tune::default(), "a", &knobs(""), &ISOLATED).unwrap();
        assert_eq!(w, vec![]);
    }

    #[test]
    fn metadata_stops_ksm_by_default() {
        let w = wanted(
            &tune(Some(Apply::On), None, None),
            "a",
            &knobs(""),
            &Traits::default(),
        )
        .unwrap();
        assert_eq!(paths(&w), [(KSM_RUN, "0")]);
        assert_eq!(w[0].why, "ksm.stop_for: metadata");
    }

    #[test]
    fn metadata_is_refused_where_the_policy_does_not_list_it() {
        let p = knobs("[ksm]\nstop_for = []\n[thp]\nenabled = \"never\"\nfor = [\"isolated\"]\n");
        let err = wanted(&tune(Some(Apply::On), None, None), "a", &p, &ISOLATED).unwrap_err();
        assert!(
            err.contains("VM 'a'")
                && err.contains("ksm run=\"off\"")
                && err.contains("ksm.stop_for"),
            "{err}"
        );
        let err = wanted(&tune(None, Some(Apply::On), None), "a", &p, &ISOLATED).unwrap_err();
        assert!(err.contains("thp.for"), "{err}");
    }

    #[test]
    fn selectors_pick_vms_by_what_they_are() {
        let p = knobs(
            "[ksm]\nstop_for = [\"nosharepages\", \"isolated\"]\n\
             [thp]\nenabled = \"never\"\ndefrag = \"never\"\nfor = [\"hugepages\"]\n\
             [sysctl]\nvalues = { \"vm.stat_interval\" = 120 }\n",
        );
        let plain = Traits::default();
        assert_eq!(wanted(&Tune::default(), "a", &p, &plain).unwrap(), vec![]);
        let nosharing = Traits {
            nosharepages: true,
            ..plain
        };
        assert_eq!(
            paths(&wanted(&Tune::default(), "a", &p, &nosharing).unwrap()),
            [(KSM_RUN, "0")]
        );
        let huge = Traits {
            hugepages: true,
            ..plain
        };
        assert_eq!(
            paths(&wanted(&Tune::default(), "a", &p, &huge).unwrap()),
            [(THP_ENABLED, "never"), (THP_DEFRAG, "never")]
        );
        let w = wanted(&Tune::default(), "a", &p, &ISOLATED).unwrap();
        assert_eq!(
            paths(&w),
            [(KSM_RUN, "0"), ("proc/sys/vm/stat_interval", "120")]
        );
        assert_eq!(w[1].why, "sysctl.for: isolated");
    }

    #[test]
    fn metadata_opts_a_vm_out_of_thp_and_sysctls() {
        let p = knobs(
            "[thp]\nenabled = \"never\"\nfor = [\"all\"]\n[sysctl]\nfor = [\"all\"]\nvalues = { \"vm.stat_interval\" = 9 }\n",
        );
        let out = tune(None, Some(Apply::Off), Some(Apply::Off));
        assert_eq!(wanted(&out, "a", &p, &ISOLATED).unwrap(), vec![]);
    }

    #[test]
    fn merge_across_nodes_only_on_multi_node_hosts() {
        let p = knobs("[ksm]\nmerge_across_nodes = 0\n");
        let one = Traits::default();
        assert_eq!(wanted(&Tune::default(), "a", &p, &one).unwrap(), vec![]);
        let two = Traits {
            multi_node: true,
            ..one
        };
        assert_eq!(
            paths(&wanted(&Tune::default(), "a", &p, &two).unwrap()),
            [(KSM_MERGE_ACROSS_NODES, "0")]
        );
    }

    #[test]
    fn a_value_other_than_the_held_one_is_refused() {
        let mut ledger = Ledger::default();
        ledger.vms.insert(
            "first".into(),
            VmHold {
                phase: Phase::Running,
                hugepages: vec![],
                isolate: Default::default(),
                irq: None,
                devices: vec![],
                knobs: [(THP_ENABLED.to_string(), "never".to_string())].into(),
                pid: None,
                kvmtune_run: false,
                partition_misfit: None,
            },
        );
        let want = |value: &str| KnobWant {
            path: THP_ENABLED.into(),
            value: value.into(),
            why: "thp.for: isolated".into(),
        };
        check_held("second", &[want("never")], &ledger).unwrap();
        let err = check_held("second", &[want("always")], &ledger).unwrap_err();
        assert!(
            err.contains("VM 'second' wants /sys/kernel/mm/transparent_hugepage/enabled = always")
                && err.contains("holds it at never for VM 'first'"),
            "{err}"
        );
        // Its own earlier hold (a stale entry being replaced) is no conflict.
        check_held("first", &[want("always")], &ledger).unwrap();
    }
}
