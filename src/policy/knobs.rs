//! The policy's `[ksm]`, `[thp]` and `[sysctl]` sections: which host knobs kvmtune holds, at
//! what value, for which VMs. Parsed with the rest of the policy (unknown keys are errors),
//! checked here so every message names the key and the value.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::host::knobs::{sysctl_path, sysctl_value, KSM_MERGE_ACROSS_NODES};

/// Which VMs want a group of knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Selector {
    /// VMs whose metadata asks (`<kvmtune:ksm run="off"/>`, `<kvmtune:thp apply="on"/>`,
    /// `<kvmtune:sysctl apply="on"/>`). Without it in the list, such metadata fails the start.
    Metadata,
    /// VMs with isolated CPUs.
    Isolated,
    /// VMs kvmtune reserves hugepages for.
    Hugepages,
    /// VMs with `<memoryBacking><nosharepages/>`.
    Nosharepages,
    /// Every VM.
    All,
}

impl Selector {
    fn parse(word: &str) -> Option<Selector> {
        Some(match word {
            "metadata" => Selector::Metadata,
            "isolated" => Selector::Isolated,
            "hugepages" => Selector::Hugepages,
            "nosharepages" => Selector::Nosharepages,
            "all" => Selector::All,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Selector::Metadata => "metadata",
            Selector::Isolated => "isolated",
            Selector::Hugepages => "hugepages",
            Selector::Nosharepages => "nosharepages",
            Selector::All => "all",
        })
    }
}

/// One sysctl the policy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// As written in the policy, for messages.
    pub key: String,
    /// Under the root: `proc/sys/…`.
    pub path: String,
    pub value: String,
}

/// The validated knob policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobPolicy {
    /// VMs that stop KSM's scanning (`run` = 0) while they run.
    pub ksm_stop_for: BTreeSet<Selector>,
    /// `merge_across_nodes` to hold on multi-node hosts (`None`: keep).
    pub ksm_merge_across_nodes: Option<String>,
    pub ksm_merge_for: BTreeSet<Selector>,
    /// THP `enabled` and `defrag` words to hold (`None`: keep).
    pub thp_enabled: Option<String>,
    pub thp_defrag: Option<String>,
    pub thp_for: BTreeSet<Selector>,
    /// Sorted by path.
    pub sysctls: Vec<Sysctl>,
    pub sysctl_for: BTreeSet<Selector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KsmSection {
    stop_for: Vec<String>,
    merge_across_nodes: toml::Value,
    merge_for: Vec<String>,
}

impl Default for KsmSection {
    fn default() -> Self {
        KsmSection {
            stop_for: vec!["metadata".into()],
            merge_across_nodes: toml::Value::String("keep".into()),
            merge_for: vec!["all".into()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThpSection {
    enabled: String,
    defrag: String,
    #[serde(rename = "for")]
    for_: Vec<String>,
}

impl Default for ThpSection {
    fn default() -> Self {
        ThpSection {
            enabled: "keep".into(),
            defrag: "keep".into(),
            for_: vec!["isolated".into(), "metadata".into()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysctlSection {
    #[serde(rename = "for")]
    for_: Vec<String>,
    values: BTreeMap<String, toml::Value>,
}

impl Default for SysctlSection {
    fn default() -> Self {
        SysctlSection {
            for_: vec!["isolated".into(), "metadata".into()],
            values: BTreeMap::new(),
        }
    }
}

impl KnobPolicy {
    pub fn from_sections(
        ksm: KsmSection,
        thp: ThpSection,
        sysctl: SysctlSection,
    ) -> Result<KnobPolicy, String> {
        let merge = match &ksm.merge_across_nodes {
            toml::Value::String(s) if s.trim() == "keep" => None,
            toml::Value::String(s) if s.trim() == "0" || s.trim() == "1" => {
                Some(s.trim().to_string())
            }
            toml::Value::Integer(n @ 0..=1) => Some(n.to_string()),
            other => {
                return Err(format!(
                    "ksm.merge_across_nodes = {other}: expected \"keep\", 0 or 1"
                ))
            }
        };
        let merge_for = selectors(&ksm.merge_for, "ksm.merge_for")?;
        if merge_for.contains(&Selector::Metadata) {
            // No metadata element asks for it: a VM cannot ask for one host-wide value.
            return Err(format!(
                "ksm.merge_for = [\"metadata\"]: no metadata asks for {}; use isolated, hugepages, nosharepages or all",
                crate::host::knobs::shown(KSM_MERGE_ACROSS_NODES)
            ));
        }
        let mut sysctls: Vec<Sysctl> = Vec::new();
        for (key, value) in &sysctl.values {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                other => {
                    return Err(format!(
                        "sysctl.values: '{key}' = {other}: expected a string or an integer"
                    ))
                }
            };
            let path = sysctl_path(key).map_err(|e| format!("sysctl.values: {e}"))?;
            let value = sysctl_value(key, &text).map_err(|e| format!("sysctl.values: {e}"))?;
            if let Some(twice) = sysctls.iter().find(|s| s.path == path) {
                return Err(format!(
                    "sysctl.values: '{key}' and '{}' are the same sysctl",
                    twice.key
                ));
            }
            sysctls.push(Sysctl {
                key: key.clone(),
                path,
                value,
            });
        }
        sysctls.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(KnobPolicy {
            ksm_stop_for: selectors(&ksm.stop_for, "ksm.stop_for")?,
            ksm_merge_across_nodes: merge,
            ksm_merge_for: merge_for,
            thp_enabled: thp_word(&thp.enabled, "thp.enabled")?,
            thp_defrag: thp_word(&thp.defrag, "thp.defrag")?,
            thp_for: selectors(&thp.for_, "thp.for")?,
            sysctls,
            sysctl_for: selectors(&sysctl.for_, "sysctl.for")?,
        })
    }
}

fn selectors(words: &[String], key: &str) -> Result<BTreeSet<Selector>, String> {
    words
        .iter()
        .map(|w| {
            Selector::parse(w.trim()).ok_or_else(|| {
                format!(
                    "{key}: '{w}' is not a kind of VM (expected metadata, isolated, hugepages, nosharepages or all)"
                )
            })
        })
        .collect()
}

/// "keep", or a word as the kernel spells its choices; whether this kernel offers it is
/// checked at prepare, against the file.
fn thp_word(value: &str, key: &str) -> Result<Option<String>, String> {
    match value.trim() {
        "keep" => Ok(None),
        w if !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c == '+' || c == '_') =>
        {
            Ok(Some(w.to_string()))
        }
        w => Err(format!(
            "{key} = '{w}': expected \"keep\" or a word the kernel offers there (such as never or madvise)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::Policy;

    #[test]
    fn defaults_hold_nothing_and_let_metadata_stop_ksm() {
        let k = Policy::parse("").unwrap().knobs;
        assert_eq!(
            k.ksm_stop_for
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            ["metadata"]
        );
        assert_eq!(k.ksm_merge_across_nodes, None);
        assert_eq!(k.thp_enabled, None);
        assert_eq!(k.thp_defrag, None);
        assert!(k.sysctls.is_empty());
    }

    #[test]
    fn values_and_selectors_are_read() {
        let k = Policy::parse(
            "[ksm]\nstop_for = [\"nosharepages\", \"isolated\"]\nmerge_across_nodes = 0\n\
             [thp]\nenabled = \"never\"\ndefrag = \"defer+madvise\"\nfor = [\"all\"]\n\
             [sysctl]\nvalues = { \"vm.stat_interval\" = 120, \"kernel/printk\" = \"4 4 1 7\" }\n",
        )
        .unwrap()
        .knobs;
        assert_eq!(k.ksm_stop_for.len(), 2);
        assert_eq!(k.ksm_merge_across_nodes.as_deref(), Some("0"));
        assert_eq!(k.thp_enabled.as_deref(), Some("never"));
        assert_eq!(k.thp_defrag.as_deref(), Some("defer+madvise"));
        let paths: Vec<(&str, &str)> = k
            .sysctls
            .iter()
            .map(|s| (s.path.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("proc/sys/kernel/printk", "4 4 1 7"),
                ("proc/sys/vm/stat_interval", "120")
            ]
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        for (toml, key, value) in [
            (
                "[ksm]\nstop_for = [\"sometimes\"]\n",
                "ksm.stop_for",
                "sometimes",
            ),
            (
                "[ksm]\nmerge_across_nodes = 2\n",
                "ksm.merge_across_nodes",
                "2",
            ),
            (
                "[ksm]\nmerge_for = [\"metadata\"]\n",
                "ksm.merge_for",
                "metadata",
            ),
            ("[thp]\nenabled = \"Never!\"\n", "thp.enabled", "Never!"),
            ("[thp]\nfor = [\"vms\"]\n", "thp.for", "vms"),
            (
                "[sysctl]\nvalues = { \"../../etc/passwd\" = 1 }\n",
                "sysctl.values",
                "../../etc/passwd",
            ),
            (
                "[sysctl]\nvalues = { \"vm.nr_hugepages\" = 8 }\n",
                "sysctl.values",
                "vm.nr_hugepages",
            ),
            (
                "[sysctl]\nvalues = { \"vm.stat_interval\" = true }\n",
                "sysctl.values",
                "vm.stat_interval",
            ),
            (
                "[sysctl]\nvalues = { \"vm.stat_interval\" = 1, \"vm/stat_interval\" = 2 }\n",
                "sysctl.values",
                "vm/stat_interval",
            ),
        ] {
            let err = Policy::parse(toml).unwrap_err();
            assert!(err.contains(key) && err.contains(value), "{toml}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn unknown_keys_in_the_knob_sections_are_errors() {
        let err = Policy::parse("[thp]\nenable = \"never\"\n").unwrap_err();
        assert!(err.contains("enable"), "{err}");
    }
}
