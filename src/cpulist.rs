//! Sets of CPU or NUMA node numbers in the kernel's list syntax (`0-3,8,10-11`), plus libvirt's
//! `^N` exclusions (`<vcpu cpuset='0-7,^3'>`).

use std::fmt;

/// Highest CPU or node number accepted. The kernel's NR_CPUS tops out at 8192 on x86; a larger
/// number in a domain or policy is a typo or an attack (`0-99999999`), not a machine.
pub const MAX_ID: u32 = 8191;

/// An ordered set of CPU (or node) numbers: a bit per CPU, 64 to a word, without trailing
/// empty words (so that equal sets are equal words). Hosts with a thousand CPUs and thousands
/// of IRQs parse, compare and print these lists for every IRQ on every hook call: a bitset
/// does that in a few word operations where a tree of numbers allocated a node per CPU.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet(Vec<u64>);

impl CpuSet {
    pub fn new() -> Self {
        CpuSet(Vec::new())
    }

    /// Parse a list such as `0-3,8,^2`. Whitespace around items (and a trailing newline from
    /// sysfs) is ignored; an empty string is the empty set.
    pub fn parse(text: &str) -> Result<CpuSet, String> {
        let mut set = CpuSet::new();
        let mut excluded = CpuSet::new();
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
            target.insert_range(lo, hi);
        }
        Ok(set.difference(&excluded))
    }

    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut set = CpuSet::new();
        for id in ids {
            set.insert(id);
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(i as u32 * 64 + bit)
            })
        })
    }

    pub fn insert(&mut self, id: u32) {
        let word = id as usize / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (id % 64);
    }

    /// Insert `lo..=hi`, a word at a time.
    fn insert_range(&mut self, lo: u32, hi: u32) {
        let last = hi as usize / 64;
        if self.0.len() <= last {
            self.0.resize(last + 1, 0);
        }
        for word in lo as usize / 64..=last {
            let from = if word == lo as usize / 64 { lo % 64 } else { 0 };
            let to = if word == last { hi % 64 } else { 63 };
            let bits = (u64::MAX >> (63 - to)) & (u64::MAX << from);
            self.0[word] |= bits;
        }
    }

    pub fn first(&self) -> Option<u32> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i as u32 * 64 + w.trailing_zeros())
    }

    fn last(&self) -> Option<u32> {
        let w = self.0.last()?;
        Some((self.0.len() as u32 - 1) * 64 + 63 - w.leading_zeros())
    }

    /// The runs of consecutive ids, `(first, last)` each, found a word at a time: a large
    /// host's lists ("0-1023") are printed for every kernel thread and IRQ a journal holds,
    /// and an id at a time that is a thousand steps each.
    fn runs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut from = 0;
        std::iter::from_fn(move || {
            let start = self.next_from(from, true)?;
            let end = self
                .next_from(start, false)
                .unwrap_or(self.0.len() as u32 * 64);
            from = end;
            Some((start, end - 1))
        })
    }

    /// The first id from `from` on that is in the set (`member`) or not.
    fn next_from(&self, from: u32, member: bool) -> Option<u32> {
        let bits = |w: usize| if member { self.0[w] } else { !self.0[w] };
        let mut word = from as usize / 64;
        if word >= self.0.len() {
            return None;
        }
        let mut current = bits(word) & (u64::MAX << (from % 64));
        loop {
            if current != 0 {
                return Some(word as u32 * 64 + current.trailing_zeros());
            }
            word += 1;
            if word >= self.0.len() {
                return None;
            }
            current = bits(word);
        }
    }

    /// Drop trailing empty words: the one representation of each set.
    fn normalized(mut self) -> CpuSet {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
        self
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        let (long, short) = if self.0.len() >= other.0.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut words = long.0.clone();
        for (w, o) in words.iter_mut().zip(&short.0) {
            *w |= o;
        }
        CpuSet(words)
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.iter().zip(&other.0).map(|(a, b)| a & b).collect()).normalized()
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        let words = self
            .0
            .iter()
            .enumerate()
            .map(|(i, a)| a & !other.0.get(i).copied().unwrap_or(0))
            .collect();
        CpuSet(words).normalized()
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0
            .iter()
            .enumerate()
            .all(|(i, a)| a & !other.0.get(i).copied().unwrap_or(0) == 0)
    }

    /// Parse the kernel's hexadecimal mask format (`ff,ffffffff`: 32-bit groups, most
    /// significant first), as in workqueue `cpumask` and `/proc/irq/*/smp_affinity`.
    pub fn parse_mask(text: &str) -> Result<CpuSet, String> {
        let groups: Vec<&str> = text.trim().split(',').collect();
        let mut words = vec![0u64; groups.len().div_ceil(2)];
        for (i, group) in groups.iter().rev().enumerate() {
            let bits = u32::from_str_radix(group, 16)
                .map_err(|_| format!("'{}' is not a CPU mask", text.trim()))?;
            words[i / 2] |= (bits as u64) << (32 * (i % 2));
        }
        let set = CpuSet(words).normalized();
        match set.last() {
            Some(id) if id > MAX_ID => Err(format!("CPU mask '{}' names CPU {id}", text.trim())),
            _ => Ok(set),
        }
    }

    /// Format as the kernel's hexadecimal mask with at least `groups` 32-bit groups (the
    /// kernel prints as many as its CPU count needs; one group without leading zeros).
    pub fn to_mask(&self, groups: usize) -> String {
        let needed = self.last().map_or(1, |max| max as usize / 32 + 1);
        let n = groups.max(needed);
        let group = |i: usize| -> u32 {
            let word = self.0.get(i / 2).copied().unwrap_or(0);
            (word >> (32 * (i % 2))) as u32
        };
        if n == 1 {
            return format!("{:x}", group(0));
        }
        let parts: Vec<String> = (0..n).rev().map(|i| format!("{:08x}", group(i))).collect();
        parts.join(",")
    }
}

/// Sets compare as their ascending lists of numbers do (`{0,5} < {1}`), as ordered sets of
/// numbers always have here.
impl Ord for CpuSet {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for CpuSet {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
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
        for (i, (start, end)) in self.runs().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
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
    fn display_finds_runs_across_word_boundaries_and_full_words() {
        for list in [
            "0-1023",
            "63-64",
            "0,62,64,127-130",
            "64-127",
            "5",
            "1-2,4-6,1000-1023",
        ] {
            assert_eq!(CpuSet::parse(list).unwrap().to_string(), list);
        }
        let mut every_other = CpuSet::new();
        for id in (0..200).step_by(2) {
            every_other.insert(id);
        }
        let expected: Vec<String> = (0..200).step_by(2).map(|i: u32| i.to_string()).collect();
        assert_eq!(every_other.to_string(), expected.join(","));
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
    fn ranges_across_words_and_set_operations() {
        let a = CpuSet::parse("60-130,1000").unwrap();
        assert_eq!(a.len(), 72);
        assert_eq!(a.first(), Some(60));
        assert_eq!(a.to_string(), "60-130,1000");
        let b = CpuSet::parse("0-63").unwrap();
        assert_eq!(a.intersection(&b).to_string(), "60-63");
        assert_eq!(a.difference(&b).to_string(), "64-130,1000");
        assert_eq!(a.union(&b).to_string(), "0-130,1000");
        assert!(CpuSet::parse("61-62").unwrap().is_subset(&a));
        assert!(!b.is_subset(&a));
        // Equal sets are equal however they were made (no trailing empty words).
        assert_eq!(
            a.difference(&CpuSet::from_ids([1000])),
            CpuSet::parse("60-130").unwrap()
        );
        assert_eq!(
            CpuSet::parse("1000").unwrap().intersection(&b),
            CpuSet::new()
        );
        assert!(CpuSet::parse("0-8191").unwrap().contains(8191));
        assert_eq!(
            CpuSet::parse("0,5").unwrap().cmp(&CpuSet::from_ids([1])),
            std::cmp::Ordering::Less
        );
        assert_eq!(
            CpuSet::parse_mask("80000000,00000000,00000001")
                .unwrap()
                .to_string(),
            "0,95"
        );
    }

    #[test]
    fn round_trip_display_parse() {
        let text = "0,2,4-9,100";
        assert_eq!(CpuSet::parse(text).unwrap().to_string(), text);
    }
}
