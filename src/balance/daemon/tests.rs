use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::balance::virsh::MemStats;
use crate::host::RootFs;
use crate::policy::balance::HostFree;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const T0: u64 = 1_795_302_600;

/// A libvirt whose guests follow a new target at once and report statistics when `tick`s.
#[derive(Default)]
struct FakeLibvirt {
    /// By UUID: (xml, statistics, memory the guest itself uses).
    vms: BTreeMap<String, (String, MemStats, u64)>,
    setmem: Vec<(String, u64)>,
    refuse_setmem: bool,
    list_fails: bool,
}

impl FakeLibvirt {
    fn add(&mut self, uuid: &str, xml: String, stats: MemStats, used: u64) {
        self.vms.insert(uuid.into(), (xml, stats, used));
    }

    /// The guest drivers report at `now`.
    fn tick(&mut self, now: u64) {
        for (_, s, _) in self.vms.values_mut() {
            if s.unused.is_some() {
                s.last_update = Some(now);
            }
        }
    }
}

impl Libvirt for FakeLibvirt {
    fn running(&mut self) -> Result<Vec<String>> {
        if self.list_fails {
            return Err(Error::Refused(
                "virsh list --uuid failed: no libvirtd".into(),
            ));
        }
        Ok(self.vms.keys().cloned().collect())
    }

    fn domain_xml(&mut self, uuid: &str) -> Result<String> {
        self.vms
            .get(uuid)
            .map(|v| v.0.clone())
            .ok_or_else(|| Error::Refused(format!("no domain {uuid}")))
    }

    fn mem_stats(&mut self, uuid: &str) -> Result<MemStats> {
        Ok(self.vms[uuid].1.clone())
    }

    fn set_target_kib(&mut self, uuid: &str, kib: u64) -> Result<()> {
        self.setmem.push((uuid.into(), kib));
        if self.refuse_setmem {
            return Err(Error::Refused("virsh setmem failed: no".into()));
        }
        let (_, s, used) = self.vms.get_mut(uuid).unwrap();
        s.actual = kib * 1024;
        s.unused = s.unused.map(|_| s.actual.saturating_sub(*used));
        Ok(())
    }
}

fn domain(name: &str, id: u32, meta: &str) -> String {
    format!(
        "<domain type='qemu' id='{id}'><name>{name}</name><memory unit='GiB'>4</memory>\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'>{meta}</k:tune></metadata>\
         <devices><memballoon model='virtio'><stats period='2'/></memballoon></devices></domain>"
    )
}

fn stats(actual: u64, unused: u64, at: u64) -> MemStats {
    MemStats {
        actual,
        unused: Some(unused),
        available: Some(actual - 64 * MIB),
        usable: Some(unused),
        rss: Some(actual / 2),
        last_update: Some(at),
    }
}

/// A host root whose /proc/meminfo says `free` of 32 GiB is available.
fn host(free: u64) -> (tempfile::TempDir, RootFs) {
    let dir = tempfile::tempdir().unwrap();
    set_free(dir.path(), free);
    let fs = RootFs::new(dir.path());
    (dir, fs)
}

fn set_free(root: &std::path::Path, free: u64) {
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::write(
        root.join("proc/meminfo"),
        format!(
            "MemTotal:       {} kB\nMemFree:        1024 kB\nMemAvailable:   {} kB\n",
            32 * GIB / 1024,
            free / 1024
        ),
    )
    .unwrap();
}

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

fn changes(events: &[Event]) -> Vec<(String, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Changed(d) | Event::WouldChange(d) => Some((d.vm.clone(), d.old, d.new)),
            _ => None,
        })
        .collect()
}

fn said(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| matches!(e, Event::Skipped { .. } | Event::Balanced { .. }))
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_short_host_sets_new_targets_in_kib_and_remembers_them() {
    let (_d, fs) = host(GIB);
    let mut lv = FakeLibvirt::default();
    lv.add(
        "u-a",
        domain("a", 1, "<k:balloon min='1GiB'/>"),
        stats(4 * GIB, 3 * GIB, T0),
        GIB,
    );
    let mut b = Balancer::new(policy(), false);
    let events = b.pass(&mut lv, &fs, T0 + 1).unwrap();
    // Room min(3 GiB - 256 MiB, 3 GiB) → 25% = 704 MiB.
    assert_eq!(
        changes(&events),
        vec![("a".into(), 4 * GIB, 4 * GIB - 704 * MIB)]
    );
    assert_eq!(
        lv.setmem,
        vec![("u-a".into(), (4 * GIB - 704 * MIB) / 1024)]
    );
    assert!(events.contains(&Event::Level {
        level: HostLevel::Short,
        free: GIB,
        low: 2 * GIB,
        high: 4 * GIB
    }));
    let line = events
        .iter()
        .find(|e| matches!(e, Event::Changed(_)))
        .unwrap()
        .to_string();
    assert_eq!(
        line,
        "VM \"a\": balloon 4 GiB → 3.3 GiB: host free 1 GiB below 2 GiB (low mark), VM unused 3 GiB"
    );
    // 30 s later, fresh statistics, host still short: the VM waits for its interval.
    lv.tick(T0 + 31);
    let events = b.pass(&mut lv, &fs, T0 + 31).unwrap();
    assert!(changes(&events).is_empty(), "{events:?}");
    // 61 s after the change: the next step.
    lv.tick(T0 + 62);
    let events = b.pass(&mut lv, &fs, T0 + 62).unwrap();
    assert_eq!(changes(&events).len(), 1, "{events:?}");
    assert_eq!(lv.setmem.len(), 2);
}

#[test]
fn skip_reasons_are_said_once_and_again_when_they_change() {
    let (_d, fs) = host(3 * GIB);
    let mut lv = FakeLibvirt::default();
    lv.add(
        "u-plain",
        domain("plain", 1, ""),
        stats(4 * GIB, GIB, T0),
        GIB,
    );
    let booting = MemStats {
        actual: 4 * GIB,
        rss: Some(GIB),
        ..MemStats::default()
    };
    lv.add("u-boot", domain("boot", 2, "<k:balloon/>"), booting, GIB);
    let mut b = Balancer::new(policy(), false);
    let first = said(&b.pass(&mut lv, &fs, T0).unwrap());
    assert_eq!(
        first,
        vec![
            "VM \"boot\": not balanced: no balloon statistics: no guest driver (virtio_balloon) answering, or no <memballoon><stats period='N'/>".to_string(),
            "VM \"plain\": not balanced: no <kvmtune:balloon> in its metadata".to_string(),
        ]
    );
    for t in 1..5 {
        assert!(said(&b.pass(&mut lv, &fs, T0 + t).unwrap()).is_empty());
    }
    // The guest driver loads: the VM is introduced once.
    lv.vms.get_mut("u-boot").unwrap().1 = stats(4 * GIB, 3 * GIB, T0 + 5);
    let events = b.pass(&mut lv, &fs, T0 + 6).unwrap();
    assert_eq!(
        said(&events),
        vec!["VM \"boot\": balanced within 512 MiB .. 4 GiB".to_string()]
    );
    assert!(said(&b.pass(&mut lv, &fs, T0 + 7).unwrap()).is_empty());
    // The guest stops answering: said once, though the statistics age on every pass.
    for t in [40, 41, 42] {
        let events = b.pass(&mut lv, &fs, T0 + t).unwrap();
        assert_eq!(
            said(&events).len(),
            usize::from(t == 40),
            "at +{t}: {events:?}"
        );
    }
    lv.tick(T0 + 43);
    assert_eq!(
        said(&b.pass(&mut lv, &fs, T0 + 43).unwrap()),
        vec!["VM \"boot\": balanced within 512 MiB .. 4 GiB".to_string()]
    );
    // It stops and comes back: introduced again.
    let vm = lv.vms.remove("u-boot").unwrap();
    b.pass(&mut lv, &fs, T0 + 8).unwrap();
    lv.vms.insert("u-boot".into(), vm);
    assert_eq!(said(&b.pass(&mut lv, &fs, T0 + 9).unwrap()).len(), 1);
}

#[test]
fn dry_run_changes_nothing_and_says_what_it_would_do() {
    let (_d, fs) = host(GIB);
    let mut lv = FakeLibvirt::default();
    lv.add(
        "u-a",
        domain("a", 1, "<k:balloon/>"),
        stats(4 * GIB, 3 * GIB, T0),
        GIB,
    );
    let mut b = Balancer::new(policy(), true);
    let events = b.pass(&mut lv, &fs, T0 + 1).unwrap();
    assert!(lv.setmem.is_empty());
    assert!(matches!(
        events.iter().find(|e| matches!(e, Event::WouldChange(_))),
        Some(Event::WouldChange(d)) if d.new == 4 * GIB - 704 * MIB
    ));
    assert!(events.iter().any(|e| e
        .to_string()
        .starts_with("would set VM \"a\": balloon 4 GiB →")));
}

#[test]
fn a_refused_change_is_reported_and_retried_after_the_interval() {
    let (_d, fs) = host(GIB);
    let mut lv = FakeLibvirt {
        refuse_setmem: true,
        ..FakeLibvirt::default()
    };
    lv.add(
        "u-a",
        domain("a", 1, "<k:balloon/>"),
        stats(4 * GIB, 3 * GIB, T0),
        GIB,
    );
    let mut b = Balancer::new(policy(), false);
    let events = b.pass(&mut lv, &fs, T0 + 1).unwrap();
    assert!(events.contains(&Event::Failed {
        vm: "a".into(),
        error: "virsh setmem failed: no".into()
    }));
    lv.tick(T0 + 30);
    b.pass(&mut lv, &fs, T0 + 30).unwrap();
    assert_eq!(lv.setmem.len(), 1);
    lv.tick(T0 + 62);
    b.pass(&mut lv, &fs, T0 + 62).unwrap();
    assert_eq!(lv.setmem.len(), 2);
}

#[test]
fn a_restarted_vm_starts_without_history() {
    let (_d, fs) = host(GIB);
    let mut lv = FakeLibvirt::default();
    lv.add(
        "u-a",
        domain("a", 1, "<k:balloon/>"),
        stats(4 * GIB, 3 * GIB, T0),
        GIB,
    );
    let mut b = Balancer::new(policy(), false);
    b.pass(&mut lv, &fs, T0 + 1).unwrap();
    assert_eq!(lv.setmem.len(), 1);
    // Same UUID, new domain id, booted at full size: not held back by the old change.
    lv.vms.insert(
        "u-a".into(),
        (
            domain("a", 2, "<k:balloon/>"),
            stats(4 * GIB, 3 * GIB, T0 + 4),
            GIB,
        ),
    );
    b.pass(&mut lv, &fs, T0 + 5).unwrap();
    assert_eq!(lv.setmem.len(), 2);
}

#[test]
fn a_comfortable_host_gives_memory_back_up_to_max_and_no_further() {
    let (dir, fs) = host(GIB);
    let mut lv = FakeLibvirt::default();
    lv.add(
        "u-a",
        domain("a", 1, "<k:balloon min='1GiB' max='3GiB'/>"),
        stats(3 * GIB, 2 * GIB + 512 * MIB, T0),
        512 * MIB,
    );
    let mut p = policy();
    p.vm_interval = Duration::from_secs(0);
    let mut b = Balancer::new(p, false);
    // Short until the VM is at its min.
    let mut now = T0;
    for _ in 0..30 {
        now += 10;
        lv.tick(now);
        b.pass(&mut lv, &fs, now).unwrap();
    }
    let low = lv.vms["u-a"].1.actual;
    assert_eq!(low, GIB);
    assert!(lv.setmem.iter().all(|(_, k)| *k * 1024 >= GIB));
    // Plenty: back to max, never above.
    set_free(dir.path(), 20 * GIB);
    let before = lv.setmem.len();
    for _ in 0..30 {
        now += 10;
        lv.tick(now);
        b.pass(&mut lv, &fs, now).unwrap();
    }
    assert_eq!(lv.vms["u-a"].1.actual, 3 * GIB);
    assert!(lv.setmem[before..]
        .iter()
        .all(|(_, k)| *k * 1024 <= 3 * GIB));
    // Each target strictly rose in the second phase.
    assert!(lv.setmem[before..].windows(2).all(|w| w[0].1 < w[1].1));
}

#[test]
fn without_libvirt_the_pass_fails_with_virsh_message() {
    let (_d, fs) = host(GIB);
    let mut lv = FakeLibvirt {
        list_fails: true,
        ..FakeLibvirt::default()
    };
    let err = Balancer::new(policy(), false)
        .pass(&mut lv, &fs, T0)
        .unwrap_err();
    assert!(err.to_string().contains("no libvirtd"), "{err}");
}

#[test]
fn meminfo_without_memavailable_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(dir.path().join("proc/meminfo"), "MemTotal: 1024 kB\n").unwrap();
    let err = read_host(&RootFs::new(dir.path())).unwrap_err().to_string();
    assert!(
        err.contains("proc/meminfo") && err.contains("MemAvailable"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("proc/meminfo"),
        "MemTotal:  2048 kB\nMemAvailable:   1024 kB\n",
    )
    .unwrap();
    assert_eq!(
        read_host(&RootFs::new(dir.path())).unwrap(),
        HostMem {
            total: 2 << 20,
            available: 1 << 20
        }
    );
}
