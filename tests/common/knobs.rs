//! The host knobs of the fake kernel: KSM, transparent hugepages and a few sysctls, with the
//! kernel's rules for writes (mm/ksm.c, mm/huge_memory.c, kernel/sysctl.c):
//! - `ksm/run`: 0, 1 or 2, anything else EINVAL; 2 stops KSM and unmerges every page at once
//!   (`pages_shared`, `pages_sharing` drop to 0); 1 lets ksmd merge again (here: at once, what
//!   `mergeable` and `mergeable_sharing` say); a write of the value it has does nothing.
//! - `ksm/merge_across_nodes`: 0 or 1; a change while any page is merged fails with EBUSY, as
//!   does one while stale stable-tree nodes remain (`busy_stable_nodes`, each failed write
//!   frees one, as the kernel frees them a little later); a write of the value it has is a no-op.
//! - `transparent_hugepage/{enabled,defrag}`: shown as `always [madvise] never`; a write takes
//!   one offered word (a trailing newline is fine), anything else EINVAL.
//! - sysctls of integers: a write of non-integers is EINVAL; a vector (`kernel/printk`) takes
//!   up to its length and reads back tab-separated; `vm/drop_caches` is write-only (a read
//!   fails with EACCES even for root); the counters under `ksm/` are read-only (EACCES).

use std::collections::BTreeMap;

pub const KSM: &str = "sys/kernel/mm/ksm";
pub const THP: &str = "sys/kernel/mm/transparent_hugepage";
pub const STAT_INTERVAL: &str = "proc/sys/vm/stat_interval";
pub const PRINTK: &str = "proc/sys/kernel/printk";
pub const DROP_CACHES: &str = "proc/sys/vm/drop_caches";

pub const THP_ENABLED_WORDS: [&str; 3] = ["always", "madvise", "never"];
pub const THP_DEFRAG_WORDS: [&str; 5] = ["always", "defer", "defer+madvise", "madvise", "never"];

#[derive(Debug, Clone)]
pub struct Ksm {
    pub run: u32,
    pub merge_across_nodes: u32,
    pub pages_shared: u64,
    pub pages_sharing: u64,
    /// What ksmd merges once it runs again: pages shared, and the pages sharing them.
    pub mergeable: u64,
    pub mergeable_sharing: u64,
    /// Changes of merge_across_nodes that still fail with EBUSY after an unmerge.
    pub busy_stable_nodes: u32,
    /// How many times the kernel unmerged everything (run = 2).
    pub unmerges: u32,
}

#[derive(Debug, Clone)]
pub struct Thp {
    pub enabled: String,
    pub defrag: String,
}

#[derive(Debug, Clone)]
pub struct KnobModel {
    /// `None`: a kernel without KSM.
    pub ksm: Option<Ksm>,
    /// `None`: a kernel without transparent hugepages.
    pub thp: Option<Thp>,
    /// Integer sysctls: path → values.
    pub sysctls: BTreeMap<String, Vec<i64>>,
}

impl Default for KnobModel {
    /// Debian's kernel as it boots: KSM stopped, THP always (madvise for defrag).
    fn default() -> Self {
        KnobModel {
            ksm: Some(Ksm {
                run: 0,
                merge_across_nodes: 1,
                pages_shared: 0,
                pages_sharing: 0,
                mergeable: 0,
                mergeable_sharing: 0,
                busy_stable_nodes: 0,
                unmerges: 0,
            }),
            thp: Some(Thp {
                enabled: "always".into(),
                defrag: "madvise".into(),
            }),
            sysctls: [
                (STAT_INTERVAL.to_string(), vec![1]),
                (PRINTK.to_string(), vec![4, 4, 1, 7]),
            ]
            .into(),
        }
    }
}

fn choices(words: &[&str], selected: &str) -> String {
    let shown: Vec<String> = words
        .iter()
        .map(|w| {
            if *w == selected {
                format!("[{w}]")
            } else {
                w.to_string()
            }
        })
        .collect();
    format!("{}\n", shown.join(" "))
}

impl KnobModel {
    pub fn ksm(&mut self) -> &mut Ksm {
        self.ksm.as_mut().expect("a kernel with KSM")
    }

    /// Every file, in the kernel's format.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(k) = &self.ksm {
            for (name, value) in [
                ("run", k.run as u64),
                ("merge_across_nodes", k.merge_across_nodes as u64),
                ("pages_shared", k.pages_shared),
                ("pages_sharing", k.pages_sharing),
            ] {
                out.push((format!("{KSM}/{name}"), format!("{value}\n")));
            }
        }
        if let Some(t) = &self.thp {
            out.push((
                format!("{THP}/enabled"),
                choices(&THP_ENABLED_WORDS, &t.enabled),
            ));
            out.push((
                format!("{THP}/defrag"),
                choices(&THP_DEFRAG_WORDS, &t.defrag),
            ));
        }
        for (path, values) in &self.sysctls {
            let text: Vec<String> = values.iter().map(i64::to_string).collect();
            out.push((path.clone(), format!("{}\n", text.join("\t"))));
        }
        out.push((DROP_CACHES.to_string(), String::new()));
        out
    }

    /// A read the kernel refuses: `Some(errno)`.
    pub fn read(&self, rel: &str) -> Option<i32> {
        (rel == DROP_CACHES).then_some(libc::EACCES)
    }

    /// A write to one of the model's files: `None` when it is not one.
    pub fn write(&mut self, rel: &str, value: &str) -> Option<Result<(), i32>> {
        let v = value.trim();
        if let Some(name) = rel.strip_prefix(&format!("{KSM}/")) {
            let k = self.ksm.as_mut()?;
            let number: Option<u32> = v.parse().ok();
            return Some(match name {
                "run" => match number {
                    Some(n @ 0..=2) => {
                        if n != k.run {
                            k.run = n;
                            match n {
                                2 => {
                                    k.pages_shared = 0;
                                    k.pages_sharing = 0;
                                    k.unmerges += 1;
                                }
                                1 => {
                                    k.pages_shared = k.mergeable;
                                    k.pages_sharing = k.mergeable_sharing;
                                }
                                _ => {}
                            }
                        }
                        Ok(())
                    }
                    _ => Err(libc::EINVAL),
                },
                "merge_across_nodes" => match number {
                    None | Some(2..) => Err(libc::EINVAL),
                    Some(n) if n == k.merge_across_nodes => Ok(()),
                    Some(_) if k.pages_shared > 0 => Err(libc::EBUSY),
                    Some(_) if k.busy_stable_nodes > 0 => {
                        k.busy_stable_nodes -= 1;
                        Err(libc::EBUSY)
                    }
                    Some(n) => {
                        k.merge_across_nodes = n;
                        Ok(())
                    }
                },
                _ => Err(libc::EACCES),
            });
        }
        if let Some(name) = rel.strip_prefix(&format!("{THP}/")) {
            let t = self.thp.as_mut()?;
            let (words, slot): (&[&str], &mut String) = match name {
                "enabled" => (&THP_ENABLED_WORDS, &mut t.enabled),
                "defrag" => (&THP_DEFRAG_WORDS, &mut t.defrag),
                _ => return None,
            };
            return Some(if words.contains(&v) {
                *slot = v.to_string();
                Ok(())
            } else {
                Err(libc::EINVAL)
            });
        }
        if rel == DROP_CACHES {
            return Some(match v.parse::<u32>() {
                Ok(1..=3) => Ok(()),
                _ => Err(libc::EINVAL),
            });
        }
        let values = self.sysctls.get_mut(rel)?;
        let parsed: Result<Vec<i64>, _> = v.split_whitespace().map(str::parse).collect();
        Some(match parsed {
            Ok(new) if !new.is_empty() && new.len() <= values.len() => {
                values[..new.len()].copy_from_slice(&new);
                Ok(())
            }
            _ => Err(libc::EINVAL),
        })
    }
}
