//! The `[balance]` section of the host policy: the watermarks, steps and intervals of
//! `kvmtune balance`'s rule (see `balance::rule`), and the floor no VM is ballooned below.
//! Parsed and checked here, embedded in `Policy`.

use std::time::Duration;

use serde::Deserialize;

use crate::size::{human, parse_size};

/// The section as written (unknown keys are errors, like the rest of the policy).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSection {
    interval: String,
    host_free_low: String,
    host_free_high: String,
    step: String,
    min_step: String,
    max_step: String,
    vm_interval: String,
    guest_free_min: String,
    min_floor: String,
}

impl Default for BalanceSection {
    fn default() -> Self {
        BalanceSection {
            interval: "10s".into(),
            host_free_low: "10%".into(),
            host_free_high: "20%".into(),
            step: "25%".into(),
            min_step: "32MiB".into(),
            max_step: "1GiB".into(),
            vm_interval: "60s".into(),
            guest_free_min: "256MiB".into(),
            min_floor: "512MiB".into(),
        }
    }
}

/// A host free-memory mark: a size, or a percentage of the host's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFree {
    Bytes(u64),
    /// Whole percent of MemTotal.
    Percent(u64),
}

impl HostFree {
    /// The mark in bytes on a host with `total` bytes of memory.
    pub fn resolve(self, total: u64) -> u64 {
        match self {
            HostFree::Bytes(b) => b,
            HostFree::Percent(p) => total / 100 * p + total % 100 * p / 100,
        }
    }
}

/// The validated `[balance]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancePolicy {
    /// How often the daemon looks.
    pub interval: Duration,
    /// Host MemAvailable below this: the host is short and VMs give memory back.
    pub host_free_low: HostFree,
    /// Host MemAvailable above this: the host is comfortable and VMs get memory back.
    pub host_free_high: HostFree,
    /// Share of a VM's spare memory (or of its distance to max) moved in one change, percent.
    pub step_percent: u64,
    /// Changes smaller than this are not made, unless they land exactly on a VM's bound.
    pub min_step: u64,
    /// The largest single change.
    pub max_step: u64,
    /// Least time between two changes of the same VM.
    pub vm_interval: Duration,
    /// Memory a guest keeps unused (MemFree) after a shrink.
    pub guest_free_min: u64,
    /// No VM is ballooned below this, whatever its metadata asks.
    pub min_floor: u64,
}

impl Default for BalancePolicy {
    fn default() -> Self {
        BalancePolicy::from_section(BalanceSection::default()).expect("built-in defaults are valid")
    }
}

impl BalancePolicy {
    /// Validate the section; messages name `balance.KEY` and the value.
    pub fn from_section(s: BalanceSection) -> Result<BalancePolicy, String> {
        let size = |key: &str, v: &str| parse_size(v).map_err(|e| format!("balance.{key}: {e}"));
        let duration = |key: &str, v: &str| {
            super::parse_duration(v).map_err(|e| format!("balance.{key}: {e}"))
        };
        let p = BalancePolicy {
            interval: duration("interval", &s.interval)?,
            host_free_low: host_free("host_free_low", &s.host_free_low)?,
            host_free_high: host_free("host_free_high", &s.host_free_high)?,
            step_percent: match percent(&s.step) {
                Some(p) if (1..=100).contains(&p) => p,
                _ => {
                    return Err(format!(
                        "balance.step = '{}': expected a percentage from 1% to 100%",
                        s.step
                    ))
                }
            },
            min_step: size("min_step", &s.min_step)?,
            max_step: size("max_step", &s.max_step)?,
            vm_interval: duration("vm_interval", &s.vm_interval)?,
            guest_free_min: size("guest_free_min", &s.guest_free_min)?,
            min_floor: size("min_floor", &s.min_floor)?,
        };
        if p.interval.is_zero() {
            return Err("balance.interval must be more than 0".into());
        }
        if p.max_step == 0 || p.min_step > p.max_step {
            return Err(format!(
                "balance.min_step ({}) must not exceed balance.max_step ({}), which must be more than 0",
                human(p.min_step),
                human(p.max_step)
            ));
        }
        // Hysteresis needs a band: low and high of the same kind can be checked now.
        match (p.host_free_low, p.host_free_high) {
            (HostFree::Bytes(l), HostFree::Bytes(h)) | (HostFree::Percent(l), HostFree::Percent(h))
                if l < h => {}
            (HostFree::Bytes(_), HostFree::Bytes(_))
            | (HostFree::Percent(_), HostFree::Percent(_)) => {
                return Err(format!(
                    "balance.host_free_low ('{}') must be below balance.host_free_high ('{}')",
                    s.host_free_low, s.host_free_high
                ))
            }
            _ => {
                return Err(format!(
                    "balance.host_free_low ('{}') and balance.host_free_high ('{}') must both be sizes or both percentages",
                    s.host_free_low, s.host_free_high
                ))
            }
        }
        Ok(p)
    }
}

fn host_free(key: &str, value: &str) -> Result<HostFree, String> {
    if value.trim().ends_with('%') {
        return match percent(value) {
            Some(p) if p <= 100 => Ok(HostFree::Percent(p)),
            _ => Err(format!(
                "balance.{key} = '{value}': expected a size or a whole percentage up to 100%"
            )),
        };
    }
    parse_size(value)
        .map(HostFree::Bytes)
        .map_err(|e| format!("balance.{key}: {e}"))
}

/// `25%` → 25; whole percent only.
fn percent(text: &str) -> Option<u64> {
    text.trim().strip_suffix('%')?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = BalancePolicy::default();
        assert_eq!(p.interval, Duration::from_secs(10));
        assert_eq!(p.host_free_low, HostFree::Percent(10));
        assert_eq!(p.host_free_high, HostFree::Percent(20));
        assert_eq!(p.step_percent, 25);
        assert_eq!((p.min_step, p.max_step), (32 << 20, 1 << 30));
        assert_eq!(p.vm_interval, Duration::from_secs(60));
        assert_eq!((p.guest_free_min, p.min_floor), (256 << 20, 512 << 20));
    }

    #[test]
    fn percentages_resolve_against_host_memory() {
        assert_eq!(HostFree::Percent(10).resolve(24 << 30), 24 * (1 << 30) / 10);
        assert_eq!(HostFree::Percent(100).resolve(u64::MAX), u64::MAX);
        assert_eq!(HostFree::Bytes(5).resolve(1), 5);
    }

    #[test]
    fn section_is_read_from_the_policy_file() {
        let p = Policy::parse(
            "[balance]\ninterval = \"1s\"\nhost_free_low = \"1GiB\"\nhost_free_high = \"3GiB\"\nstep = \"50%\"\nmin_step = \"8MiB\"\nmax_step = \"64MiB\"\nvm_interval = \"2s\"\nguest_free_min = \"32MiB\"\nmin_floor = \"128MiB\"\n",
        )
        .unwrap();
        let b = p.balance;
        assert_eq!(b.interval, Duration::from_secs(1));
        assert_eq!(b.host_free_low, HostFree::Bytes(1 << 30));
        assert_eq!(b.host_free_high, HostFree::Bytes(3 << 30));
        assert_eq!(b.step_percent, 50);
        assert_eq!((b.min_step, b.max_step), (8 << 20, 64 << 20));
        assert_eq!(b.vm_interval, Duration::from_secs(2));
        assert_eq!((b.guest_free_min, b.min_floor), (32 << 20, 128 << 20));
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        let cases = [
            ("host_free_low = \"30%\"", "host_free_low"),
            (
                "host_free_low = \"2GiB\"\nhost_free_high = \"1GiB\"",
                "host_free_low",
            ),
            (
                "host_free_high = \"4GiB\"",
                "must both be sizes or both percentages",
            ),
            (
                "host_free_high = \"120%\"",
                "balance.host_free_high = '120%'",
            ),
            ("step = \"0%\"", "balance.step = '0%'"),
            ("step = \"half\"", "balance.step = 'half'"),
            ("min_step = \"2GiB\"", "balance.min_step"),
            ("interval = \"0s\"", "balance.interval"),
            ("vm_interval = \"soon\"", "balance.vm_interval"),
            ("min_floor = \"lots\"", "balance.min_floor"),
        ];
        for (text, expect) in cases {
            let err = Policy::parse(&format!("[balance]\n{text}\n")).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn unknown_key_in_balance_is_an_error() {
        let err = Policy::parse("[balance]\nhost_free_lo = \"1%\"\n").unwrap_err();
        assert!(err.contains("host_free_lo"), "{err}");
    }
}
