//! Which running VMs the balancer may touch, and within which bounds: from the live domain XML
//! and the balloon statistics. Pure; the daemon says each skip reason once.

use std::fmt;

use super::rule::Bounds;
use super::virsh::MemStats;
use crate::domain::{xml, Domain};
use crate::policy::balance::BalancePolicy;
use crate::size::human;

/// Statistics older than this many stats periods (and at least `STALE_MIN_SECS`) mean the
/// guest driver stopped answering (guest hung, paused, or the module unloaded).
const STALE_PERIODS: u64 = 5;
const STALE_MIN_SECS: u64 = 30;

/// A VM whose XML allows balancing: what is known before asking for its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balloonable {
    pub name: String,
    /// `<domain id>`: a new one means the VM was restarted, and its history is void.
    pub id: Option<u32>,
    pub bounds: Bounds,
    /// `<memballoon><stats period>`, seconds (0: not set).
    pub period: u64,
}

/// A VM the balancer may change now: its bounds and its guest's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub vm: Balloonable,
    pub actual: u64,
    pub unused: u64,
    pub stats_at: u64,
}

/// Why a running VM is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    BadXml(String),
    NotAnnotated,
    Hugepages,
    Locked,
    Passthrough,
    NoBalloon,
    NoStats,
    /// Older than this many seconds (the limit, not the age: the message must stay the same
    /// from one pass to the next to be said only once).
    StaleStats(u64),
    EmptyBounds(Bounds),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::BadXml(e) => write!(f, "its domain XML cannot be read: {e}"),
            Skip::NotAnnotated => f.write_str("no <kvmtune:balloon> in its metadata"),
            Skip::Hugepages => {
                f.write_str("hugepage-backed (<memoryBacking><hugepages/>): a balloon frees nothing")
            }
            Skip::Locked => f.write_str("<memoryBacking><locked/>: its memory stays pinned"),
            Skip::Passthrough => f.write_str(
                "has PCI passthrough devices: its memory is pinned for DMA and a balloon frees nothing",
            ),
            Skip::NoBalloon => f.write_str("no balloon device (<memballoon model='none'> or none)"),
            Skip::NoStats => f.write_str(
                "no balloon statistics: no guest driver (virtio_balloon) answering, or no <memballoon><stats period='N'/>",
            ),
            Skip::StaleStats(limit) => write!(
                f,
                "balloon statistics are more than {limit} s old: the guest driver stopped answering (guest paused or hung?)"
            ),
            Skip::EmptyBounds(b) => write!(
                f,
                "its balloon bounds are empty: min {} (after the policy floor) is above max {} (at most its <memory>)",
                human(b.min),
                human(b.max)
            ),
        }
    }
}

/// The balloon device of the live XML: `(model, stats period in seconds)`.
fn memballoon(root: &xml::Element) -> Option<(String, u64)> {
    let dev = root.path(&["devices", "memballoon"])?;
    let model = dev.attr("model").unwrap_or("virtio").to_string();
    let period = dev
        .child("stats")
        .and_then(|s| s.attr("period"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    Some((model, period))
}

/// Whether the balancer may touch this VM, from its live XML, and within which bounds:
/// metadata's min raised to the policy's `min_floor`, its max lowered to `<memory>` (a balloon
/// cannot give a guest more than it booted with).
pub fn classify(xml_text: &str, policy: &BalancePolicy) -> Result<Balloonable, Skip> {
    let domain = Domain::parse(xml_text).map_err(|e| Skip::BadXml(e.to_string()))?;
    let root = xml::parse(xml_text).map_err(Skip::BadXml)?;
    let Some(asked) = domain.tune.balloon else {
        return Err(Skip::NotAnnotated);
    };
    if domain.hugepages.is_some() {
        return Err(Skip::Hugepages);
    }
    if domain.locked {
        return Err(Skip::Locked);
    }
    if !domain.hostdevs.is_empty() {
        return Err(Skip::Passthrough);
    }
    let period = match memballoon(&root) {
        Some((model, _)) if model == "none" => return Err(Skip::NoBalloon),
        None => return Err(Skip::NoBalloon),
        Some((_, period)) => period,
    };
    // Whole KiB inward, as `virsh setmem` takes them.
    let min = asked.min.unwrap_or(0).max(policy.min_floor).div_ceil(1024) * 1024;
    let max = asked
        .max
        .unwrap_or(domain.memory_bytes)
        .min(domain.memory_bytes)
        / 1024
        * 1024;
    let bounds = Bounds { min, max };
    if min > max {
        return Err(Skip::EmptyBounds(bounds));
    }
    Ok(Balloonable {
        name: domain.name,
        id: root.attr("id").and_then(|i| i.parse().ok()),
        bounds,
        period,
    })
}

impl Balloonable {
    /// With its statistics at Unix time `now`: missing (no guest driver yet) or stale ones
    /// leave the VM alone.
    pub fn with_stats(self, stats: &MemStats, now: u64) -> Result<Candidate, Skip> {
        let (Some(unused), Some(at)) = (stats.unused, stats.last_update) else {
            return Err(Skip::NoStats);
        };
        let limit = (STALE_PERIODS * self.period).max(STALE_MIN_SECS);
        if now.saturating_sub(at) > limit {
            return Err(Skip::StaleStats(limit));
        }
        Ok(Candidate {
            vm: self,
            actual: stats.actual,
            unused,
            stats_at: at,
        })
    }
}

/// Both steps at once (for tests and callers that already have the statistics).
pub fn candidate(
    xml_text: &str,
    stats: &MemStats,
    policy: &BalancePolicy,
    now: u64,
) -> Result<Candidate, Skip> {
    classify(xml_text, policy)?.with_stats(stats, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const NOW: u64 = 1_795_302_620;

    fn xml(meta: &str, backing: &str, devices: &str) -> String {
        format!(
            "<domain type='qemu' id='7'><name>g</name><memory unit='MiB'>512</memory>\
             <metadata><k:tune xmlns:k='urn:kvmtune:1'>{meta}</k:tune></metadata>\
             <memoryBacking>{backing}</memoryBacking><devices>{devices}</devices></domain>"
        )
    }

    const BALLOON: &str = "<memballoon model='virtio'><stats period='2'/></memballoon>";

    fn stats() -> MemStats {
        MemStats {
            actual: 512 * MIB,
            unused: Some(400 * MIB),
            available: Some(460 * MIB),
            usable: Some(400 * MIB),
            rss: Some(200 * MIB),
            last_update: Some(NOW - 2),
        }
    }

    fn policy() -> BalancePolicy {
        BalancePolicy {
            min_floor: 128 * MIB,
            ..BalancePolicy::default()
        }
    }

    #[test]
    fn an_annotated_vm_with_a_balloon_and_statistics_is_balanced_within_its_bounds() {
        let c = candidate(
            &xml("<k:balloon min='288MiB' max='448MiB'/>", "", BALLOON),
            &stats(),
            &policy(),
            NOW,
        )
        .unwrap();
        assert_eq!(c.vm.name, "g");
        assert_eq!(c.vm.id, Some(7));
        assert_eq!(
            c.vm.bounds,
            Bounds {
                min: 288 * MIB,
                max: 448 * MIB
            }
        );
        assert_eq!(
            (c.actual, c.unused, c.stats_at),
            (512 * MIB, 400 * MIB, NOW - 2)
        );
    }

    #[test]
    fn bounds_are_clamped_to_the_policy_floor_and_the_vm_memory() {
        let c = candidate(
            &xml("<k:balloon min='1MiB' max='64GiB'/>", "", BALLOON),
            &stats(),
            &policy(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            c.vm.bounds,
            Bounds {
                min: 128 * MIB,
                max: 512 * MIB
            }
        );
        // Neither given: floor..memory. Odd sizes round inward to whole KiB.
        let c = candidate(
            &xml("<k:balloon min='134217729b'/>", "", BALLOON),
            &stats(),
            &policy(),
            NOW,
        )
        .unwrap();
        assert_eq!(c.vm.bounds.min, 128 * MIB + 1024);
        let err = candidate(
            &xml("<k:balloon min='600MiB'/>", "", BALLOON),
            &stats(),
            &policy(),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, Skip::EmptyBounds(_)));
        assert!(err.to_string().contains("min 600 MiB"), "{err}");
    }

    #[test]
    fn vms_the_balloon_cannot_help_are_skipped_with_the_reason() {
        let bal = "<k:balloon/>";
        let cases: Vec<(String, MemStats, Skip)> = vec![
            (xml("", "", BALLOON), stats(), Skip::NotAnnotated),
            (xml(bal, "<hugepages/>", BALLOON), stats(), Skip::Hugepages),
            (xml(bal, "<locked/>", BALLOON), stats(), Skip::Locked),
            (
                xml(
                    bal,
                    "",
                    &format!("{BALLOON}<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='6' slot='2' function='1'/></source></hostdev>"),
                ),
                stats(),
                Skip::Passthrough,
            ),
            (xml(bal, "", ""), stats(), Skip::NoBalloon),
            (
                xml(bal, "", "<memballoon model='none'/>"),
                stats(),
                Skip::NoBalloon,
            ),
            (
                xml(bal, "", BALLOON),
                MemStats {
                    actual: 512 * MIB,
                    rss: Some(200 * MIB),
                    ..MemStats::default()
                },
                Skip::NoStats,
            ),
            (
                xml(bal, "", BALLOON),
                MemStats {
                    last_update: Some(NOW - 31),
                    ..stats()
                },
                Skip::StaleStats(30),
            ),
        ];
        for (text, s, expected) in cases {
            assert_eq!(
                candidate(&text, &s, &policy(), NOW),
                Err(expected),
                "{text}"
            );
        }
        // A long stats period tolerates older statistics (5 periods).
        let slow = "<memballoon model='virtio'><stats period='10'/></memballoon>";
        let s = MemStats {
            last_update: Some(NOW - 45),
            ..stats()
        };
        assert!(candidate(&xml(bal, "", slow), &s, &policy(), NOW).is_ok());
    }

    #[test]
    fn bad_metadata_is_a_skip_naming_the_problem() {
        let err = candidate(
            &xml("<k:balloon min='lots'/>", "", BALLOON),
            &stats(),
            &policy(),
            NOW,
        )
        .unwrap_err();
        assert!(err.to_string().contains("min='lots'"), "{err}");
    }
}
