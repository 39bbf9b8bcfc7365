use std::time::Duration;

use super::*;
use crate::balance::virsh::parse_memstat;
use crate::policy::balance::HostFree;

const GIB: u64 = 1 << 30;
const NOW: u64 = 1_795_302_700;

/// Round numbers: low 2 GiB, high 4 GiB (mid 3 GiB), 25% steps of 64 MiB..1 GiB, guests keep
/// 256 MiB free, 60 s between changes of one VM.
fn policy() -> BalancePolicy {
    BalancePolicy {
        interval: Duration::from_secs(10),
        host_free_low: HostFree::Bytes(2 * GIB),
        host_free_high: HostFree::Bytes(4 * GIB),
        step_percent: 25,
        min_step: 64 * MIB,
        max_step: GIB,
        vm_interval: Duration::from_secs(60),
        guest_free_min: 256 * MIB,
        min_floor: 512 * MIB,
    }
}

fn host(free: u64) -> HostMem {
    HostMem {
        total: 32 * GIB,
        available: free,
    }
}

/// A VM of `actual` with `unused` free, bounds `min..max`, never changed, fresh statistics.
fn vm(name: &str, actual: u64, unused: u64, min: u64, max: u64) -> VmState {
    VmState {
        name: name.into(),
        actual,
        unused,
        stats_at: NOW - 1,
        bounds: Bounds { min, max },
        last: None,
    }
}

/// `(vm, old, new)` of every decision.
fn moves(v: &Verdict) -> Vec<(&str, u64, u64)> {
    v.decisions
        .iter()
        .map(|d| (d.vm.as_str(), d.old, d.new))
        .collect()
}

#[test]
fn between_the_marks_nothing_moves() {
    for free in [2 * GIB, 3 * GIB, 4 * GIB] {
        let v = decide(
            host(free),
            &[vm("a", 4 * GIB, 3 * GIB, GIB, 8 * GIB)],
            &policy(),
            NOW,
        );
        assert_eq!(v.level, HostLevel::Steady, "free {free}");
        assert!(v.decisions.is_empty(), "free {free}: {:?}", v.decisions);
    }
}

#[test]
fn short_host_takes_a_step_of_the_most_idle_vm_first() {
    // Need: mid 3 GiB - free 2.5 GiB = 512 MiB. b has more room (3 GiB - 256 MiB free kept).
    let v = decide(
        host(2 * GIB + 512 * MIB),
        &[
            vm("a", 4 * GIB, GIB, GIB, 8 * GIB),
            vm("b", 4 * GIB, 3 * GIB, GIB, 8 * GIB),
        ],
        &policy(),
        NOW,
    );
    // Host free 2.5 GiB is above low: steady. Make it short.
    assert_eq!(v.level, HostLevel::Steady);
    let v = decide(
        host(GIB + 512 * MIB),
        &[
            vm("a", 4 * GIB, GIB, GIB, 8 * GIB),
            vm("b", 4 * GIB, 3 * GIB, GIB, 8 * GIB),
        ],
        &policy(),
        NOW,
    );
    assert_eq!(v.level, HostLevel::Short);
    // Need 1.5 GiB. b: room min(2.75 GiB, 3 GiB) → 25% = 704 MiB. a: room 768 MiB → 25% =
    // 192 MiB. 896 MiB in all, less than needed: both give their step.
    assert_eq!(
        moves(&v),
        vec![
            ("b", 4 * GIB, 4 * GIB - 704 * MIB),
            ("a", 4 * GIB, 4 * GIB - 192 * MIB)
        ]
    );
    assert!(v.decisions[0]
        .why
        .contains("host free 1.5 GiB below 2 GiB (low mark)"));
    assert!(v.decisions[0].why.contains("VM unused 3 GiB"));
}

#[test]
fn shrinking_stops_once_the_host_would_reach_mid() {
    // Need mid 3 GiB - free 1.9 GiB = 1.1 GiB; the first VM's step (max_step 1 GiB) nearly
    // covers it, the second gives only the rest (at least min_step), the third nothing.
    let free = 3 * GIB - GIB - 100 * MIB;
    let vms = [
        vm("a", 16 * GIB, 12 * GIB, GIB, 16 * GIB),
        vm("b", 16 * GIB, 11 * GIB, GIB, 16 * GIB),
        vm("c", 16 * GIB, 10 * GIB, GIB, 16 * GIB),
    ];
    let v = decide(host(free), &vms, &policy(), NOW);
    assert_eq!(
        moves(&v),
        vec![
            ("a", 16 * GIB, 15 * GIB),
            ("b", 16 * GIB, 16 * GIB - 100 * MIB)
        ]
    );
}

#[test]
fn shrinking_never_goes_below_min_and_lands_on_it_exactly() {
    // Room is bounded by min (1 GiB + 5 MiB above it): one change of 5 MiB, smaller than
    // min_step but landing exactly on the bound.
    let min = GIB + 12 * 1024;
    let v = decide(
        host(GIB),
        &[vm("a", min + 5 * MIB, 900 * MIB, min, 2 * GIB)],
        &policy(),
        NOW,
    );
    assert_eq!(moves(&v), vec![("a", min + 5 * MIB, min)]);
    // At min: nothing more to take, however short the host.
    let v = decide(
        host(0),
        &[vm("a", min, 900 * MIB, min, 2 * GIB)],
        &policy(),
        NOW,
    );
    assert!(v.decisions.is_empty(), "{:?}", v.decisions);
}

#[test]
fn shrinking_leaves_the_guest_its_free_memory() {
    // 300 MiB free, 256 MiB kept: room 44 MiB < min_step, not on a bound: no change.
    let v = decide(
        host(GIB),
        &[vm("a", 4 * GIB, 300 * MIB, GIB, 8 * GIB)],
        &policy(),
        NOW,
    );
    assert!(v.decisions.is_empty(), "{:?}", v.decisions);
    // 600 MiB free: room 344 MiB, 25% = 86 MiB.
    let v = decide(
        host(GIB),
        &[vm("a", 4 * GIB, 600 * MIB, GIB, 8 * GIB)],
        &policy(),
        NOW,
    );
    assert_eq!(moves(&v), vec![("a", 4 * GIB, 4 * GIB - 86 * MIB)]);
}

#[test]
fn comfortable_host_grows_the_neediest_vm_first_within_headroom() {
    // Headroom: free 4.5 GiB - mid 3 GiB = 1.5 GiB. a (256 MiB unused) gets 25% of its 4 GiB
    // gap = 1 GiB; b (2 GiB unused) the remaining 512 MiB of its 1 GiB step.
    let v = decide(
        host(4 * GIB + 512 * MIB),
        &[
            vm("b", 4 * GIB, 2 * GIB, GIB, 8 * GIB),
            vm("a", 4 * GIB, 256 * MIB, GIB, 8 * GIB),
        ],
        &policy(),
        NOW,
    );
    assert_eq!(v.level, HostLevel::Comfortable);
    assert_eq!(
        moves(&v),
        vec![("a", 4 * GIB, 5 * GIB), ("b", 4 * GIB, 4 * GIB + 512 * MIB)]
    );
    assert!(v.decisions[0].why.contains("above 4 GiB (high mark)"));
}

#[test]
fn growing_never_goes_above_max_and_lands_on_it_exactly() {
    let max = 2 * GIB - 4096;
    let v = decide(
        host(20 * GIB),
        &[vm("a", max - 3 * MIB, 100 * MIB, GIB, max)],
        &policy(),
        NOW,
    );
    assert_eq!(moves(&v), vec![("a", max - 3 * MIB, max)]);
    let v = decide(
        host(20 * GIB),
        &[vm("a", max, 100 * MIB, GIB, max)],
        &policy(),
        NOW,
    );
    assert!(v.decisions.is_empty());
}

#[test]
fn bounds_are_enforced_first_but_a_short_host_grows_nobody() {
    let vms = [
        vm("over", 6 * GIB, GIB, GIB, 4 * GIB),
        vm("under", 512 * MIB, 100 * MIB, GIB, 4 * GIB),
    ];
    let v = decide(host(3 * GIB), &vms, &policy(), NOW);
    assert_eq!(
        moves(&v),
        vec![("over", 6 * GIB, 4 * GIB), ("under", 512 * MIB, GIB)]
    );
    assert_eq!(v.decisions[0].why, "above its max 4 GiB");
    let v = decide(host(GIB), &vms, &policy(), NOW);
    assert_eq!(moves(&v), vec![("over", 6 * GIB, 4 * GIB)]);
}

#[test]
fn a_vm_waits_for_its_interval_and_for_fresh_statistics() {
    let mut a = vm("a", 4 * GIB, 3 * GIB, GIB, 8 * GIB);
    a.last = Some(LastChange {
        at: NOW - 30,
        target: 4 * GIB,
    });
    assert!(decide(host(GIB), &[a.clone()], &policy(), NOW)
        .decisions
        .is_empty());
    // 60 s later, but the guest has not reported since the change.
    a.last = Some(LastChange {
        at: NOW - 60,
        target: 4 * GIB,
    });
    a.stats_at = NOW - 60;
    assert!(decide(host(GIB), &[a.clone()], &policy(), NOW)
        .decisions
        .is_empty());
    a.stats_at = NOW - 59;
    assert_eq!(decide(host(GIB), &[a], &policy(), NOW).decisions.len(), 1);
}

#[test]
fn a_balloon_still_moving_is_not_pushed_further_the_same_way() {
    // kvmtune asked for 3 GiB; the guest is still at 3.5 GiB.
    let mut a = vm("a", 3 * GIB + 512 * MIB, 3 * GIB, GIB, 8 * GIB);
    a.last = Some(LastChange {
        at: NOW - 600,
        target: 3 * GIB,
    });
    assert!(decide(host(GIB), &[a.clone()], &policy(), NOW)
        .decisions
        .is_empty());
    // It may grow, though, when the host has plenty.
    assert_eq!(
        decide(host(20 * GIB), &[a.clone()], &policy(), NOW)
            .decisions
            .len(),
        1
    );
    // Within SETTLED of the target counts as arrived.
    a.actual = 3 * GIB + MIB;
    assert_eq!(decide(host(GIB), &[a], &policy(), NOW).decisions.len(), 1);
}

#[test]
fn percent_marks_resolve_against_host_memory() {
    let mut p = policy();
    p.host_free_low = HostFree::Percent(10);
    p.host_free_high = HostFree::Percent(20);
    // 32 GiB host: low 3.2 GiB, high 6.4 GiB.
    let v = decide(host(3 * GIB), &[], &p, NOW);
    assert_eq!(v.level, HostLevel::Short);
    assert_eq!(v.low, 32 * GIB / 10);
    let v = decide(host(7 * GIB), &[], &p, NOW);
    assert_eq!(v.level, HostLevel::Comfortable);
}

/// Statistics recorded from a Debian 6.1 guest with virtio_balloon under libvirt 9.0
/// (`virsh dommemstat`, 512 MiB VM), just booted and after `setmem 262144`.
const BOOTED: &str = "actual 524288\nswap_in 0\nswap_out 0\nmajor_fault 0\nminor_fault 978\nunused 439612\navailable 468548\nusable 439216\nlast_update 1795302612\ndisk_caches 2212\nhugetlb_pgalloc 0\nhugetlb_pgfail 0\nrss 218060\n";
const SQUEEZED: &str = "actual 262144\nswap_in 0\nswap_out 0\nmajor_fault 0\nminor_fault 1273\nunused 179460\navailable 206404\nusable 179064\nlast_update 1795302616\ndisk_caches 2212\nhugetlb_pgalloc 0\nhugetlb_pgfail 0\nrss 189332\n";

fn recorded(text: &str, bounds: Bounds, last: Option<LastChange>) -> VmState {
    let s = parse_memstat(text).unwrap();
    VmState {
        name: "guest".into(),
        actual: s.actual,
        unused: s.unused.unwrap(),
        stats_at: s.last_update.unwrap(),
        bounds,
        last,
    }
}

#[test]
fn recorded_guest_statistics_table() {
    // The test policy of the libvirt tier: 1 s / 2 s intervals, 50% steps of 8..64 MiB,
    // guests keep 32 MiB free; bounds 288..448 MiB of a 512 MiB VM.
    let p = BalancePolicy {
        interval: Duration::from_secs(1),
        host_free_low: HostFree::Bytes(900 * GIB),
        host_free_high: HostFree::Bytes(1000 * GIB),
        step_percent: 50,
        min_step: 8 * MIB,
        max_step: 64 * MIB,
        vm_interval: Duration::from_secs(2),
        guest_free_min: 32 * MIB,
        min_floor: 128 * MIB,
    };
    let b = Bounds {
        min: 288 * MIB,
        max: 448 * MIB,
    };
    let t = 1_795_302_620;
    struct Row {
        stats: &'static str,
        last: Option<LastChange>,
        now: u64,
        /// (old, new) in MiB.
        expect: Vec<(u64, u64)>,
    }
    let changed = |at, target| Some(LastChange { at, target });
    let table = [
        // Booted at 512 MiB, above max: down to max whatever the host.
        Row {
            stats: BOOTED,
            last: None,
            now: t,
            expect: vec![(512, 448)],
        },
        // Just changed to 448 MiB: waits for its interval (2 s).
        Row {
            stats: BOOTED,
            last: changed(t - 1, 448 * MIB),
            now: t,
            expect: vec![],
        },
        // Asked for 448 MiB 10 s ago, still at 512 MiB (stats fresh): not pushed further.
        Row {
            stats: BOOTED,
            last: changed(1_795_302_600, 448 * MIB),
            now: t,
            expect: vec![],
        },
        // Squeezed to 256 MiB (below min) by someone else, host short: stays there.
        Row {
            stats: SQUEEZED,
            last: None,
            now: t,
            expect: vec![],
        },
    ];
    for (i, row) in table.into_iter().enumerate() {
        let v = decide(
            host(20 * GIB),
            &[recorded(row.stats, b, row.last)],
            &p,
            row.now,
        );
        let got: Vec<(u64, u64)> = v
            .decisions
            .iter()
            .map(|d| (d.old / MIB, d.new / MIB))
            .collect();
        assert_eq!(got, row.expect, "row {i}: {:?}", v.decisions);
    }
    // At max (448 MiB, 363 MiB unused) on the short host: 50% of the room to min (160 MiB),
    // capped at 64 MiB.
    let mut at_max = recorded(BOOTED, b, None);
    at_max.actual = 448 * MIB;
    at_max.unused = 363 * MIB;
    let v = decide(host(20 * GIB), &[at_max], &p, t);
    assert_eq!(moves(&v), vec![("guest", 448 * MIB, 384 * MIB)]);
    // The same squeezed guest on a comfortable host goes back to its min first.
    let mut comfortable = p.clone();
    comfortable.host_free_low = HostFree::Bytes(16 * MIB);
    comfortable.host_free_high = HostFree::Bytes(32 * MIB);
    let v = decide(
        host(20 * GIB),
        &[recorded(SQUEEZED, b, None)],
        &comfortable,
        t,
    );
    assert_eq!(moves(&v), vec![("guest", 256 * MIB, 288 * MIB)]);
}

/// A host that feels every balloon change at once (the worst case for oscillation): its free
/// memory is `total - demand - sum of the guests' sizes`; guests use `used` of their memory.
struct Sim {
    total: u64,
    demand: u64,
    vms: Vec<(VmState, u64)>,
    now: u64,
    history: Vec<Vec<u64>>,
}

impl Sim {
    fn new(demand: u64, guests: &[(&str, u64, u64, Bounds)]) -> Sim {
        Sim {
            total: 32 * GIB,
            demand,
            vms: guests
                .iter()
                .map(|&(n, actual, used, bounds)| {
                    (
                        VmState {
                            name: n.into(),
                            actual,
                            unused: actual - used,
                            stats_at: NOW,
                            bounds,
                            last: None,
                        },
                        used,
                    )
                })
                .collect(),
            now: NOW,
            history: Vec::new(),
        }
    }

    fn free(&self) -> u64 {
        let guests: u64 = self.vms.iter().map(|(v, _)| v.actual).sum();
        self.total - self.demand - guests
    }

    /// `n` passes of 10 s; returns the levels seen.
    fn run(&mut self, n: usize, p: &BalancePolicy) -> Vec<HostLevel> {
        let mut levels = Vec::new();
        for _ in 0..n {
            self.now += 10;
            let host = HostMem {
                total: self.total,
                available: self.free(),
            };
            let states: Vec<VmState> = self.vms.iter().map(|(v, _)| v.clone()).collect();
            let verdict = decide(host, &states, p, self.now);
            levels.push(verdict.level);
            for d in verdict.decisions {
                let (vm, used) = self.vms.iter_mut().find(|(v, _)| v.name == d.vm).unwrap();
                assert!(d.new >= vm.bounds.min && d.new <= vm.bounds.max, "{d}");
                vm.actual = d.new;
                vm.unused = d.new.saturating_sub(*used);
                vm.last = Some(LastChange {
                    at: self.now,
                    target: d.new,
                });
            }
            for (vm, _) in &mut self.vms {
                vm.stats_at = self.now + 1;
            }
            self.history
                .push(self.vms.iter().map(|(v, _)| v.actual).collect());
        }
        levels
    }

    /// Each VM's size moved in one direction only over the passes recorded since `from`.
    fn monotonic_since(&self, from: usize) -> bool {
        (0..self.vms.len()).all(|i| {
            let sizes: Vec<u64> = self.history[from..].iter().map(|h| h[i]).collect();
            sizes.windows(2).all(|w| w[0] >= w[1]) || sizes.windows(2).all(|w| w[0] <= w[1])
        })
    }
}

#[test]
fn with_steady_demand_no_vm_is_squeezed_and_refilled_in_turn() {
    let p = policy();
    let b = Bounds {
        min: 2 * GIB,
        max: 8 * GIB,
    };
    // Host free 32 - 22 - 8 = 2 GiB... make it short: demand 23 GiB → free 1 GiB.
    let mut sim = Sim::new(
        23 * GIB,
        &[("a", 4 * GIB, GIB, b), ("b", 4 * GIB, 3 * GIB, b)],
    );
    let levels = sim.run(40, &p);
    assert_eq!(levels[0], HostLevel::Short);
    assert!(sim.monotonic_since(0), "{:?}", sim.history);
    let free = sim.free();
    assert!((2 * GIB..=4 * GIB).contains(&free), "settled at {free}");
    assert!(levels[30..].iter().all(|l| *l == HostLevel::Steady));
    // Demand drops by 6 GiB: guests grow back, again in one direction, and settle in the band.
    let phase = sim.history.len();
    sim.demand -= 6 * GIB;
    let levels = sim.run(60, &p);
    assert_eq!(levels[0], HostLevel::Comfortable);
    assert!(
        sim.monotonic_since(phase - 1),
        "{:?}",
        &sim.history[phase..]
    );
    let free = sim.free();
    assert!((2 * GIB..=4 * GIB).contains(&free), "settled at {free}");
    let sizes = sim.history.last().unwrap().clone();
    assert!(sizes.iter().all(|s| *s <= 8 * GIB));
    // Steady: the last 20 passes changed nothing.
    assert!(sim.history[sim.history.len() - 20..]
        .iter()
        .all(|h| *h == sizes));
}

#[test]
fn demand_moving_inside_the_band_moves_nobody() {
    let p = policy();
    let b = Bounds {
        min: GIB,
        max: 8 * GIB,
    };
    // Free 3 GiB (mid); demand wobbles by ±900 MiB: free stays within 2..4 GiB.
    let mut sim = Sim::new(21 * GIB, &[("a", 4 * GIB, GIB, b), ("b", 4 * GIB, GIB, b)]);
    for wobble in [0i64, 900, -900, 500, -500, 900, -900] {
        sim.demand = (21 * GIB as i64 + wobble * MIB as i64) as u64;
        let levels = sim.run(3, &p);
        assert!(levels.iter().all(|l| *l == HostLevel::Steady));
    }
    assert!(sim.history.iter().all(|h| *h == vec![4 * GIB, 4 * GIB]));
}
