//! kvmtune's own `<metadata>` element (namespace `urn:kvmtune:1`): what one VM asks of the host.
//! Parsing only; whether the host policy allows it is `plan::bounds`.
//!
//! The value words (`Reserve`, `IsolateChoice`, `IrqChoice`, `Apply`) are parsed by their
//! `FromStr` here and nowhere else: the policy's `[defaults]` and `kvmtune run`'s options take
//! the same words through the same parser, so the three accept and refuse alike.

use std::fmt;
use std::str::FromStr;

use super::xml::Element;
use crate::cpulist::CpuSet;
use crate::error::BadValue;
use crate::size::parse_size;

/// The namespace of kvmtune's metadata, as set with `virsh metadata --uri`.
pub const NAMESPACE: &str = "urn:kvmtune:1";

/// `<kvmtune:hugepages reserve=…>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reserve {
    /// Reserve when the domain has `<memoryBacking><hugepages/>`.
    Auto,
    /// Reserve the VM's memory as hugepages even without `<memoryBacking>` (for QEMU command
    /// lines that back memory with hugetlbfs on their own).
    On,
    Off,
}

/// `<kvmtune:isolate cpus=…>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolateChoice {
    /// The host CPUs of the VM's `<vcpupin>`s, else of `<vcpu cpuset>`.
    Vcpus,
    List(CpuSet),
    Off,
}

/// `<kvmtune:irq cpus=…>`: where the VM's passthrough devices' interrupts go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IrqChoice {
    Vcpus,
    Housekeeping,
    List(CpuSet),
    Off,
}

/// `<kvmtune:balloon min=… max=…>`: the VM takes part in `kvmtune balance`, within these
/// bounds (an absent one: the policy's floor, the VM's `<memory>`). Sizes as in the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalloonBounds {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

/// `<kvmtune:thp apply=…>`, `<kvmtune:sysctl apply=…>` and (as `on`) `<kvmtune:ksm
/// run="off">`: whether the policy's host knobs of that group are held while the VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Apply {
    /// Held for this VM (the policy must list `metadata` for the group).
    On,
    /// Not for this VM, whatever the policy's `for` list says of it.
    Off,
    /// As the policy's `for` list says.
    Auto,
}

const RESERVE_WORDS: &str = "auto, on or off";
const ISOLATE_WORDS: &str = "vcpus, off or a CPU list";
const IRQ_WORDS: &str = "vcpus, housekeeping, off or a CPU list";
const APPLY_WORDS: &str = "on, off or auto";

impl FromStr for Reserve {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Reserve, BadValue> {
        match text.trim() {
            "auto" => Ok(Reserve::Auto),
            "on" => Ok(Reserve::On),
            "off" => Ok(Reserve::Off),
            v => Err(BadValue::new(v, RESERVE_WORDS)),
        }
    }
}

impl fmt::Display for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reserve::Auto => "auto",
            Reserve::On => "on",
            Reserve::Off => "off",
        })
    }
}

impl FromStr for IsolateChoice {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<IsolateChoice, BadValue> {
        match text.trim() {
            "vcpus" => Ok(IsolateChoice::Vcpus),
            "off" => Ok(IsolateChoice::Off),
            v => cpu_list(v, ISOLATE_WORDS).map(IsolateChoice::List),
        }
    }
}

impl fmt::Display for IsolateChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsolateChoice::Vcpus => f.write_str("vcpus"),
            IsolateChoice::Off => f.write_str("off"),
            IsolateChoice::List(set) => write!(f, "{set}"),
        }
    }
}

impl FromStr for IrqChoice {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<IrqChoice, BadValue> {
        match text.trim() {
            "vcpus" => Ok(IrqChoice::Vcpus),
            "housekeeping" => Ok(IrqChoice::Housekeeping),
            "off" => Ok(IrqChoice::Off),
            v => cpu_list(v, IRQ_WORDS).map(IrqChoice::List),
        }
    }
}

impl fmt::Display for IrqChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IrqChoice::Vcpus => f.write_str("vcpus"),
            IrqChoice::Housekeeping => f.write_str("housekeeping"),
            IrqChoice::Off => f.write_str("off"),
            IrqChoice::List(set) => write!(f, "{set}"),
        }
    }
}

/// `on|off|auto` of `<kvmtune:thp apply>` and `<kvmtune:sysctl apply>`. (`<kvmtune:ksm run>`
/// says `off|auto`, where `off` asks for the knob: see `parse_tune`.)
impl FromStr for Apply {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Apply, BadValue> {
        match text.trim() {
            "on" => Ok(Apply::On),
            "off" => Ok(Apply::Off),
            "auto" => Ok(Apply::Auto),
            v => Err(BadValue::new(v, APPLY_WORDS)),
        }
    }
}

impl fmt::Display for Apply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Apply::On => "on",
            Apply::Off => "off",
            Apply::Auto => "auto",
        })
    }
}

/// A CPU list where a keyword may stand instead: not empty (`""`, `^0` alone), each number
/// within `cpulist::MAX_ID`, no reversed range.
fn cpu_list(value: &str, expected: &'static str) -> Result<CpuSet, BadValue> {
    let set = CpuSet::parse(value).map_err(|why| BadValue::because(value, expected, why))?;
    if set.is_empty() {
        return Err(BadValue::because(value, expected, "the CPU list is empty"));
    }
    Ok(set)
}

/// Everything a VM's metadata says; `None` = not said, the policy's `[defaults]` decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tune {
    pub hugepages: Option<Reserve>,
    pub isolate: Option<IsolateChoice>,
    pub irq: Option<IrqChoice>,
    /// `<kvmtune:ksm run="off|auto">`: `On` = stop KSM while the VM runs.
    pub ksm: Option<Apply>,
    pub thp: Option<Apply>,
    pub sysctl: Option<Apply>,
    pub balloon: Option<BalloonBounds>,
    /// `<kvmtune:migrate remap="on|off">`: rewrite pins and node sets to fit the destination
    /// host at `migrate begin` (see `advisor::remap`).
    pub migrate_remap: Option<bool>,
}

/// Find and parse `<metadata><kvmtune:tune>` under the domain root. Other tools' metadata is
/// ignored; ours is parsed strictly, because a misspelt attribute that silently did nothing
/// would leave an operator believing a VM is tuned when it is not.
pub fn parse(domain: &Element) -> Result<Tune, String> {
    let Some(metadata) = domain.child("metadata") else {
        return Ok(Tune::default());
    };
    let mut ours = metadata.children.iter().filter(|c| c.name == "tune");
    let Some(tune) = ours.find(|c| is_ours(c)) else {
        if let Some(other) = metadata.children.iter().find(|c| {
            c.name == "tune"
                && c.ns
                    .as_deref()
                    .is_some_and(|n| n.starts_with("urn:kvmtune:"))
        }) {
            return Err(format!(
                "kvmtune metadata namespace '{}' is not supported (use '{NAMESPACE}')",
                other.ns.as_deref().unwrap_or_default()
            ));
        }
        return Ok(Tune::default());
    };
    parse_tune(tune)
}

fn is_ours(el: &Element) -> bool {
    el.ns.as_deref() == Some(NAMESPACE)
}

fn parse_tune(tune: &Element) -> Result<Tune, String> {
    let mut out = Tune::default();
    // libvirt keeps the namespace on the element given to `virsh metadata --set` only; its
    // children may come back with or without the prefix, so both are accepted.
    for child in &tune.children {
        if child.ns.is_some() && !is_ours(child) {
            continue;
        }
        // The one element with two attributes.
        if child.name == "balloon" {
            out.balloon = Some(balloon_bounds(child)?);
            continue;
        }
        let value = single_attribute(child)?;
        let bad = |attr: &str, e: BadValue| match &e.why {
            None => bad_value(child, attr, value, e.expected),
            Some(why) => format!(
                "kvmtune metadata <{} {attr}='{value}'>: {why} (expected {})",
                child.name, e.expected
            ),
        };
        match child.name.as_str() {
            "hugepages" => {
                expect_attr(child, "reserve")?;
                out.hugepages = Some(value.parse().map_err(|e| bad("reserve", e))?);
            }
            "isolate" => {
                expect_attr(child, "cpus")?;
                out.isolate = Some(value.parse().map_err(|e| bad("cpus", e))?);
            }
            "irq" => {
                expect_attr(child, "cpus")?;
                out.irq = Some(value.parse().map_err(|e| bad("cpus", e))?);
            }
            "migrate" => {
                expect_attr(child, "remap")?;
                out.migrate_remap = Some(match value {
                    "on" => true,
                    "off" => false,
                    v => return Err(bad_value(child, "remap", v, "on or off")),
                });
            }
            "ksm" => {
                expect_attr(child, "run")?;
                out.ksm = Some(match value {
                    "off" => Apply::On,
                    "auto" => Apply::Auto,
                    v => return Err(bad_value(child, "run", v, "off or auto")),
                });
            }
            "thp" | "sysctl" => {
                expect_attr(child, "apply")?;
                let apply: Apply = value.parse().map_err(|e| bad("apply", e))?;
                if child.name == "thp" {
                    out.thp = Some(apply);
                } else {
                    out.sysctl = Some(apply);
                }
            }
            other => {
                return Err(format!(
                    "kvmtune metadata has an unknown element <{other}> (known: hugepages, isolate, irq, ksm, thp, sysctl, balloon, migrate)"
                ))
            }
        }
    }
    Ok(out)
}

fn balloon_bounds(el: &Element) -> Result<BalloonBounds, String> {
    let mut bounds = BalloonBounds::default();
    for attr in &el.attrs {
        let slot = match attr.name.as_str() {
            "min" => &mut bounds.min,
            "max" => &mut bounds.max,
            other => {
                return Err(format!(
                    "kvmtune metadata <balloon> has an unknown attribute '{other}' (expected 'min', 'max')"
                ))
            }
        };
        let value = attr.value.trim();
        *slot = Some(
            parse_size(value)
                .map_err(|e| format!("kvmtune metadata <balloon {}='{value}'>: {e}", attr.name))?,
        );
    }
    if let (Some(min), Some(max)) = (bounds.min, bounds.max) {
        if min > max {
            return Err(format!(
                "kvmtune metadata <balloon min='{}' max='{}'>: min is above max",
                el.attr("min").unwrap_or_default().trim(),
                el.attr("max").unwrap_or_default().trim()
            ));
        }
    }
    Ok(bounds)
}

fn single_attribute(el: &Element) -> Result<&str, String> {
    match el.attrs.as_slice() {
        [one] => Ok(one.value.trim()),
        [] => Err(format!("kvmtune metadata <{}> has no value", el.name)),
        _ => Err(format!(
            "kvmtune metadata <{}> has more than one attribute",
            el.name
        )),
    }
}

fn expect_attr(el: &Element, name: &str) -> Result<(), String> {
    match el.attrs.first() {
        Some(a) if a.name == name => Ok(()),
        Some(a) => Err(format!(
            "kvmtune metadata <{}> has an unknown attribute '{}' (expected '{name}')",
            el.name, a.name
        )),
        None => Err(format!("kvmtune metadata <{}> has no '{name}'", el.name)),
    }
}

fn bad_value(el: &Element, attr: &str, value: &str, expected: &str) -> String {
    format!(
        "kvmtune metadata <{} {attr}='{value}'> is not valid (expected {expected})",
        el.name
    )
}

#[cfg(test)]
mod balloon_tests {
    use crate::domain::Domain;

    fn tune(inner: &str) -> Result<super::Tune, String> {
        Domain::parse(&format!(
            "<domain><name>m</name><memory>1024</memory><metadata><k:tune xmlns:k=\"urn:kvmtune:1\">{inner}</k:tune></metadata></domain>"
        ))
        .map(|d| d.tune)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn balloon_bounds_are_read_with_either_or_both() {
        let t = tune(r#"<k:balloon min="2GiB" max="8GiB"/>"#).unwrap();
        assert_eq!(t.balloon.unwrap().min, Some(2 << 30));
        assert_eq!(t.balloon.unwrap().max, Some(8 << 30));
        let t = tune(r#"<k:balloon max="512MiB"/>"#).unwrap();
        assert_eq!(t.balloon.unwrap().min, None);
        assert_eq!(t.balloon.unwrap().max, Some(512 << 20));
        assert_eq!(
            tune("<k:balloon/>").unwrap().balloon,
            Some(Default::default())
        );
        assert_eq!(tune("").unwrap().balloon, None);
    }

    #[test]
    fn balloon_mistakes_name_the_attribute_and_value() {
        for (inner, expected) in [
            (r#"<k:balloon min="lots"/>"#, "<balloon min='lots'>"),
            (
                r#"<k:balloon minimum="1GiB"/>"#,
                "unknown attribute 'minimum'",
            ),
            (
                r#"<k:balloon min="4GiB" max="2GiB"/>"#,
                "min='4GiB' max='2GiB'>: min is above max",
            ),
        ] {
            let err = tune(inner).unwrap_err();
            assert!(err.contains(expected), "{inner}: {err}");
        }
    }
}

#[cfg(test)]
mod word_tests {
    use super::*;

    fn list(text: &str) -> CpuSet {
        CpuSet::parse(text).unwrap()
    }

    #[test]
    fn reserve_takes_auto_on_off_and_prints_them_back() {
        for (text, want) in [
            ("auto", Reserve::Auto),
            ("on", Reserve::On),
            ("off", Reserve::Off),
            (" on\n", Reserve::On),
        ] {
            let got: Reserve = text.parse().unwrap();
            assert_eq!(got, want, "{text:?}");
            assert_eq!(got.to_string().parse::<Reserve>().unwrap(), got);
        }
        for bad in ["", "yes", "ON", "auto,on", "1"] {
            let err = bad.parse::<Reserve>().unwrap_err();
            assert_eq!(err.value, bad.trim());
            assert_eq!(
                err.to_string(),
                format!("'{bad}': expected auto, on or off")
            );
        }
    }

    #[test]
    fn isolate_takes_vcpus_off_or_a_cpu_list_that_is_not_empty() {
        for (text, want) in [
            ("vcpus", IsolateChoice::Vcpus),
            ("off", IsolateChoice::Off),
            ("3", IsolateChoice::List(list("3"))),
            (" 2-3,6 ", IsolateChoice::List(list("2-3,6"))),
            ("0-7,^3", IsolateChoice::List(list("0-2,4-7"))),
        ] {
            let got: IsolateChoice = text.parse().unwrap();
            assert_eq!(got, want, "{text:?}");
            assert_eq!(got.to_string().parse::<IsolateChoice>().unwrap(), got);
        }
        for (bad, why) in [
            ("", "empty"),
            ("^0", "empty"),
            (" , ", "empty"),
            ("3-1", "reversed"),
            ("0-99999999", "larger than 8191"),
            ("housekeeping", "housekeeping"),
            ("VCPUS", "VCPUS"),
        ] {
            let err = bad.parse::<IsolateChoice>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(why), "{bad:?}: {text}");
            assert!(
                text.ends_with("(expected vcpus, off or a CPU list)"),
                "{text}"
            );
        }
    }

    #[test]
    fn irq_takes_housekeeping_too() {
        for (text, want) in [
            ("vcpus", IrqChoice::Vcpus),
            ("housekeeping", IrqChoice::Housekeeping),
            ("off", IrqChoice::Off),
            ("0,2", IrqChoice::List(list("0,2"))),
        ] {
            let got: IrqChoice = text.parse().unwrap();
            assert_eq!(got, want, "{text:?}");
            assert_eq!(got.to_string().parse::<IrqChoice>().unwrap(), got);
        }
        for bad in ["", "^1", "house", "1-", "a"] {
            let err = bad.parse::<IrqChoice>().unwrap_err();
            assert_eq!(
                err.expected, "vcpus, housekeeping, off or a CPU list",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn apply_takes_on_off_auto() {
        for (text, want) in [
            ("on", Apply::On),
            ("off", Apply::Off),
            ("auto", Apply::Auto),
        ] {
            assert_eq!(text.parse::<Apply>().unwrap(), want);
            assert_eq!(want.to_string(), text);
        }
        assert_eq!(
            "yes".parse::<Apply>().unwrap_err().reason(),
            "expected on, off or auto"
        );
    }
}
