//! Sets of CPU or NUMA node numbers in the kernel's list syntax (`0-3,8,10-11`), plus libvirt's
//! `^N` exclusions (`<vcpu cpuset='0-7,^3'>`).

use std::collections::BTreeSet;
use std::fmt;

/// Highest CPU or node number accepted. The kernel's NR_CPUS tops out at 8192 on x86; a larger
/// number in a domain or policy is a typo or an attack (`0-99999999`), not a machine.
pub const MAX_ID: u32 = 8191;

/// An ordered set of CPU (or node) numbers.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<u32>);

impl CpuSet {
    pub fn new() -> Self {
        CpuSet(BTreeSet::new())
    }

    /// Parse a list such as `0-3,8,^2`. Whitespace around items (and a trailing newline from
    /// sysfs) is ignored; an empty string is the empty set.
    pub fn parse(text: &str) -> Result<CpuSet, String> {
        let mut set = BTreeSet::new();
        let mut excluded = BTreeSet::new();
        for item in text
            .trim()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (target, body) = match item.strip_prefix('^') {
                Some(rest) => (&mut excluded, rest),
                None => (&mut set, item),
            };
            let (lo, hi) = match body.split_once('-') {
                Some((a, b)) => (parse_id(a, item)?, parse_id(b, item)?),
                None => {
                    let n = parse_id(body, item)?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(format!("range '{item}' is reversed"));
            }
            target.extend(lo..=hi);
        }
        for n in excluded {
            set.remove(&n);
        }
        Ok(CpuSet(set))
    }

    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Self {
        CpuSet(ids.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn insert(&mut self, id: u32) {
        self.0.insert(id);
    }

    pub fn first(&self) -> Option<u32> {
        self.0.first().copied()
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Parse the kernel's hexadecimal mask format (`ff,ffffffff`: 32-bit groups, most
    /// significant first), as in workqueue `cpumask` and `/proc/irq/*/smp_affinity`.
    pub fn parse_mask(text: &str) -> Result<CpuSet, String> {
        let mut set = CpuSet::new();
        let groups: Vec<&str> = text.trim().split(',').collect();
        for (i, group) in groups.iter().rev().enumerate() {
            let bits = u32::from_str_radix(group, 16)
                .map_err(|_| format!("'{}' is not a CPU mask", text.trim()))?;
            for bit in 0..32 {
                if bits & (1 << bit) != 0 {
                    let id = i as u32 * 32 + bit;
                    if id > MAX_ID {
                        return Err(format!("CPU mask '{}' names CPU {id}", text.trim()));
                    }
                    set.insert(id);
                }
            }
        }
        Ok(set)
    }

    /// Format as the kernel's hexadecimal mask with at least `groups` 32-bit groups (the
    /// kernel prints as many as its CPU count needs; one group without leading zeros).
    pub fn to_mask(&self, groups: usize) -> String {
        let needed = self.0.last().map_or(1, |max| *max as usize / 32 + 1);
        let n = groups.max(needed);
        let mut words = vec![0u32; n];
        for id in &self.0 {
            words[*id as usize / 32] |= 1 << (id % 32);
        }
        if n == 1 {
            return format!("{:x}", words[0]);
        }
        let parts: Vec<String> = words.iter().rev().map(|w| format!("{w:08x}")).collect();
        parts.join(",")
    }
}

fn parse_id(text: &str, item: &str) -> Result<u32, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{item}' is not a CPU list item"))?;
    if n > MAX_ID {
        return Err(format!("{n} in '{item}' is larger than {MAX_ID}"));
    }
    Ok(n)
}

/// Formats as the kernel does: ascending, runs collapsed (`0-3,8,10-11`); empty set as ``.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = ids.next() {
            let mut end = start;
            while ids.peek() == Some(&(end + 1)) {
                end = ids.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CpuSet::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ranges_singles_and_exclusions() {
        let set = CpuSet::parse("0-3,8,10-11,^2").unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 3, 8, 10, 11]);
    }

    #[test]
    fn display_collapses_runs_like_the_kernel() {
        let set = CpuSet::from_ids([0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(set.to_string(), "0-3,8,10-11");
        assert_eq!(CpuSet::new().to_string(), "");
    }

    #[test]
    fn parse_accepts_sysfs_newline_and_empty() {
        assert_eq!(CpuSet::parse("0-1\n").unwrap().len(), 2);
        assert!(CpuSet::parse("\n").unwrap().is_empty());
    }

    #[test]
    fn parse_rejects_reversed_huge_and_garbage() {
        assert!(CpuSet::parse("3-1").unwrap_err().contains("reversed"));
        assert!(CpuSet::parse("0-99999999").unwrap_err().contains("larger"));
        assert!(CpuSet::parse("a-b").is_err());
        assert!(CpuSet::parse("1-").is_err());
        assert!(CpuSet::parse("0-7:2").is_err());
    }

    #[test]
    fn hex_masks_parse_and_format_like_the_kernel() {
        assert_eq!(CpuSet::parse_mask("3\n").unwrap(), CpuSet::from_ids([0, 1]));
        assert_eq!(
            CpuSet::parse_mask("00000001,00000000").unwrap(),
            CpuSet::from_ids([32])
        );
        assert_eq!(CpuSet::from_ids([0, 1]).to_mask(1), "3");
        assert_eq!(CpuSet::from_ids([0, 33]).to_mask(2), "00000002,00000001");
        assert!(CpuSet::parse_mask("xyz").is_err());
    }

    #[test]
    fn round_trip_display_parse() {
        let text = "0,2,4-9,100";
        assert_eq!(CpuSet::parse(text).unwrap().to_string(), text);
    }
}
