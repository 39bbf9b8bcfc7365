//! What only the QEMU process itself can carry, set on it just before `exec`: the NUMA memory
//! policy of the VM's nodes (so QEMU's own allocations, not only guest RAM, are node-local),
//! RLIMIT_MEMLOCK for a VM that locks its memory, and for `kvmtune run` the CPUs it runs on.
//! Memory policy, resource limits and CPU affinity all survive `execve`.
//!
//! Everything is computed before `fork`: in the child only the raw system calls remain, which
//! are safe between `fork` and `exec`.

use crate::cpulist::CpuSet;
use crate::domain::{Domain, MemMode, NodeBinding};

/// `set_mempolicy(2)` modes.
const MPOL_PREFERRED: libc::c_int = 1;
const MPOL_BIND: libc::c_int = 2;
const MPOL_INTERLEAVE: libc::c_int = 3;

const WORD_BITS: usize = libc::c_ulong::BITS as usize;

/// The memory policy for the whole process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemPolicy {
    pub mode: MemMode,
    pub nodes: CpuSet,
}

impl MemPolicy {
    /// The policy for QEMU's own allocations: the VM's `<numatune><memory>` (or QEMU's backend
    /// binding of all guest RAM). A VM whose cells are bound one by one gets the union of their
    /// nodes, in their mode when they share one, else bound. `restrictive` is libvirt's cgroup
    /// only mode: no policy.
    pub fn for_domain(domain: &Domain) -> Option<MemPolicy> {
        let bindings: Vec<&NodeBinding> = match &domain.numatune.memory {
            Some(b) => vec![b],
            None => domain.numatune.memnodes.iter().map(|(_, b)| b).collect(),
        };
        let mut nodes = CpuSet::new();
        let mut mode = None;
        for b in bindings {
            let Some(set) = &b.nodeset else { continue };
            if b.mode == MemMode::Restrictive {
                continue;
            }
            nodes = nodes.union(set);
            mode = match mode {
                None => Some(b.mode),
                Some(m) if m == b.mode => Some(m),
                Some(_) => Some(MemMode::Strict),
            };
        }
        let mode = mode?;
        Some(MemPolicy { mode, nodes })
    }

    /// The kernel's form: mode, node mask words, and `maxnode` (the kernel reads one bit fewer
    /// than it is told, hence the `+ 1`, as libnuma does).
    fn raw(&self) -> (libc::c_int, Vec<libc::c_ulong>, libc::c_ulong) {
        let (mode, nodes) = match self.mode {
            MemMode::Strict | MemMode::Restrictive => (MPOL_BIND, self.nodes.clone()),
            // One preferred node: the first of the set.
            MemMode::Preferred => (MPOL_PREFERRED, CpuSet::from_ids(self.nodes.first())),
            MemMode::Interleave => (MPOL_INTERLEAVE, self.nodes.clone()),
        };
        let words = nodes
            .iter()
            .last()
            .map_or(1, |n| n as usize / WORD_BITS + 1);
        let mut mask = vec![0 as libc::c_ulong; words];
        for n in nodes.iter() {
            mask[n as usize / WORD_BITS] |= 1 << (n as usize % WORD_BITS);
        }
        (mode, mask, (words * WORD_BITS + 1) as libc::c_ulong)
    }
}

impl std::fmt::Display for MemPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            MemMode::Strict | MemMode::Restrictive => "bind",
            MemMode::Preferred => "preferred",
            MemMode::Interleave => "interleave",
        };
        write!(f, "{mode}:{}", self.nodes)
    }
}

/// RLIMIT_MEMLOCK to give the process: unlimited (what libvirt gives a VM with `<locked/>` and
/// no hard limit of its own) when it may be raised, else as far as the hard limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemLock {
    pub soft: u64,
    pub hard: u64,
}

impl MemLock {
    /// The limit a locking VM gets, given the limit now and whether we may raise the hard one
    /// (CAP_SYS_RESOURCE). `None`: nothing to change.
    pub fn for_locking(now: (u64, u64), may_raise: bool) -> Option<MemLock> {
        let inf = libc::RLIM_INFINITY;
        let want = if may_raise {
            MemLock {
                soft: inf,
                hard: inf,
            }
        } else {
            MemLock {
                soft: now.1,
                hard: now.1,
            }
        };
        (want
            != MemLock {
                soft: now.0,
                hard: now.1,
            })
        .then_some(want)
    }

    /// The current limit (soft, hard) of this process.
    pub fn current() -> (u64, u64) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        (lim.rlim_cur, lim.rlim_max)
    }
}

/// Everything to set on the QEMU process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub mempolicy: Option<MemPolicy>,
    pub memlock: Option<MemLock>,
    /// CPUs QEMU runs on (the isolated ones, for `kvmtune run`).
    pub cpus: Option<CpuSet>,
}

/// Which step of `Settings::apply` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    MemPolicy = 1,
    MemLock = 2,
    Affinity = 3,
}

impl Settings {
    /// The settings a VM calls for; `may_raise_memlock` when this process holds
    /// CAP_SYS_RESOURCE.
    pub fn for_domain(domain: &Domain, may_raise_memlock: bool) -> Settings {
        Settings {
            mempolicy: MemPolicy::for_domain(domain),
            memlock: domain
                .locked
                .then(|| MemLock::for_locking(MemLock::current(), may_raise_memlock))
                .flatten(),
            cpus: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &Settings::default()
    }

    /// The raw forms, computed before `fork` (no allocation is needed after it).
    pub fn raw(&self) -> RawSettings {
        RawSettings {
            mempolicy: self.mempolicy.as_ref().map(MemPolicy::raw),
            memlock: self.memlock.map(|m| libc::rlimit {
                rlim_cur: m.soft,
                rlim_max: m.hard,
            }),
            cpus: self.cpus.as_ref().map(|set| {
                // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET stays in bounds
                // for CPUs below CPU_SETSIZE, which is all `sched_setaffinity` takes.
                let mut raw: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                for cpu in set
                    .iter()
                    .filter(|c| (*c as usize) < libc::CPU_SETSIZE as usize)
                {
                    unsafe { libc::CPU_SET(cpu as usize, &mut raw) };
                }
                raw
            }),
        }
    }

    /// Describe a failed step for the one-line error.
    pub fn describe(&self, step: Step, errno: i32) -> String {
        let why = std::io::Error::from_raw_os_error(errno);
        match step {
            Step::MemPolicy => format!(
                "cannot set QEMU's memory policy to {}: {why}",
                self.mempolicy
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            ),
            Step::MemLock => format!("cannot set QEMU's RLIMIT_MEMLOCK: {why}"),
            Step::Affinity => format!(
                "cannot run QEMU on CPUs {}: {why}",
                self.cpus
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// `Settings` in the form the system calls take.
pub struct RawSettings {
    mempolicy: Option<(libc::c_int, Vec<libc::c_ulong>, libc::c_ulong)>,
    memlock: Option<libc::rlimit>,
    cpus: Option<libc::cpu_set_t>,
}

impl RawSettings {
    /// Set everything on the calling process. Only system calls: safe after `fork`.
    pub fn apply(&self) -> Result<(), (Step, i32)> {
        let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if let Some((mode, mask, maxnode)) = &self.mempolicy {
            // SAFETY: the mask outlives the call and holds `maxnode - 1` bits.
            let rc =
                unsafe { libc::syscall(libc::SYS_set_mempolicy, *mode, mask.as_ptr(), *maxnode) };
            if rc != 0 {
                return Err((Step::MemPolicy, errno()));
            }
        }
        if let Some(lim) = &self.memlock {
            // SAFETY: a valid rlimit struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, lim) } != 0 {
                return Err((Step::MemLock, errno()));
            }
        }
        if let Some(set) = &self.cpus {
            // SAFETY: a valid cpu_set_t of the size given.
            let rc =
                unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
            if rc != 0 {
                return Err((Step::Affinity, errno()));
            }
        }
        Ok(())
    }
}

/// Whether this process may raise its hard RLIMIT_MEMLOCK.
pub fn may_raise_memlock() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NumaTune;

    fn binding(mode: MemMode, nodes: &str) -> NodeBinding {
        NodeBinding {
            mode,
            nodeset: Some(CpuSet::parse(nodes).unwrap()),
        }
    }

    fn domain(numatune: NumaTune) -> Domain {
        Domain {
            numatune,
            ..Domain::default()
        }
    }

    #[test]
    fn the_vms_memory_binding_becomes_the_process_policy() {
        let d = domain(NumaTune {
            memory: Some(binding(MemMode::Strict, "1")),
            memnodes: vec![(0, binding(MemMode::Interleave, "0-1"))],
        });
        assert_eq!(MemPolicy::for_domain(&d).unwrap().to_string(), "bind:1");
        let d = domain(NumaTune::default());
        assert_eq!(MemPolicy::for_domain(&d), None);
    }

    #[test]
    fn cells_bound_one_by_one_give_the_union_in_their_shared_mode() {
        let same = domain(NumaTune {
            memory: None,
            memnodes: vec![
                (0, binding(MemMode::Interleave, "0")),
                (1, binding(MemMode::Interleave, "2")),
            ],
        });
        assert_eq!(
            MemPolicy::for_domain(&same).unwrap().to_string(),
            "interleave:0,2"
        );
        let mixed = domain(NumaTune {
            memory: None,
            memnodes: vec![
                (0, binding(MemMode::Preferred, "0")),
                (1, binding(MemMode::Strict, "1")),
            ],
        });
        assert_eq!(
            MemPolicy::for_domain(&mixed).unwrap().to_string(),
            "bind:0-1"
        );
        let restrictive = domain(NumaTune {
            memory: Some(binding(MemMode::Restrictive, "0")),
            memnodes: vec![],
        });
        assert_eq!(MemPolicy::for_domain(&restrictive), None);
    }

    #[test]
    fn node_masks_for_the_kernel() {
        let p = MemPolicy {
            mode: MemMode::Strict,
            nodes: CpuSet::parse("0,3,64").unwrap(),
        };
        let (mode, mask, maxnode) = p.raw();
        assert_eq!(mode, MPOL_BIND);
        assert_eq!(mask, vec![0b1001, 1]);
        assert_eq!(maxnode, 129);
        let p = MemPolicy {
            mode: MemMode::Preferred,
            nodes: CpuSet::parse("2-3").unwrap(),
        };
        assert_eq!(p.raw().1, vec![0b100]);
    }

    #[test]
    fn a_locking_vm_gets_unlimited_or_the_hard_limit() {
        let inf = libc::RLIM_INFINITY;
        assert_eq!(
            MemLock::for_locking((64 << 10, 8 << 20), true),
            Some(MemLock {
                soft: inf,
                hard: inf
            })
        );
        assert_eq!(
            MemLock::for_locking((64 << 10, 8 << 20), false),
            Some(MemLock {
                soft: 8 << 20,
                hard: 8 << 20
            })
        );
        assert_eq!(MemLock::for_locking((inf, inf), false), None);
    }
}
