//! The host policy (`/etc/kvmtune/kvmtune.toml`): what the administrator allows VMs to ask for.
//! Parsing (`PolicyFile`, serde, unknown keys are errors) is kept apart from checking
//! (`Policy::from_file`), so every message can name the key and the value. Each value word is
//! read by its type's `FromStr` (`[defaults]` by the metadata's own, so the policy takes and
//! refuses exactly what a VM's metadata would), and everything is checked when the file is
//! read: a policy that loads cannot fail an operation later.
//!
//! Only `prepare`, `started`/`reconnect`, `migrate` and the daemons read the policy; `release`
//! and `recover` work from the ledger (`apply::Base`), so a broken policy stops no release.
//!
//! Every section is parsed and checked here; two have their own file:
//! - `balance`: the `[balance]` section of `kvmtune balance`;
//! - `knobs`: the `[ksm]`, `[thp]` and `[sysctl]` sections of the host knobs.

pub mod balance;
pub mod knobs;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::cpulist::CpuSet;
use crate::domain::metadata::{IrqChoice, IsolateChoice, Reserve};
use crate::error::{BadValue, Error, Result};
use crate::privilege::Privilege;
use crate::size::parse_size;
use balance::{BalancePolicy, BalanceSection};
use knobs::{KnobPolicy, KsmSection, SysctlSection, ThpSection};

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 1 << 20;

/// The file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PolicyFile {
    cpus: CpusSection,
    irq: IrqSection,
    hugepages: HugepagesSection,
    defaults: DefaultsSection,
    ksm: KsmSection,
    thp: ThpSection,
    sysctl: SysctlSection,
    balance: BalanceSection,
    emulator: EmulatorSection,
    metrics: MetricsSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetricsSection {
    textfile_dir: String,
    interval: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            // Where Debian's prometheus-node-exporter reads *.prom files (its
            // --collector.textfile.directory).
            textfile_dir: DEFAULT_TEXTFILE_DIR.into(),
            interval: "15s".into(),
        }
    }
}

/// node_exporter's textfile directory as Debian's package sets it.
pub const DEFAULT_TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EmulatorSection {
    qemu: String,
}

impl Default for EmulatorSection {
    fn default() -> Self {
        EmulatorSection {
            qemu: "auto".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CpusSection {
    housekeeping: String,
    isolatable: String,
    isolation: String,
    overlap: String,
    move_kernel_threads: bool,
    governor: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IrqSection {
    move_others: bool,
    irqbalance: String,
    watch_interval: String,
}

impl Default for IrqSection {
    fn default() -> Self {
        IrqSection {
            move_others: true,
            irqbalance: "auto".into(),
            watch_interval: "500ms".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HugepagesSection {
    node_memory_floor: String,
    compaction: bool,
    timeout: String,
    max_per_vm: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DefaultsSection {
    hugepages: String,
    isolate: String,
    irq: String,
}

impl Default for CpusSection {
    fn default() -> Self {
        CpusSection {
            housekeeping: "auto".into(),
            isolatable: "auto".into(),
            isolation: "auto".into(),
            overlap: "refuse".into(),
            move_kernel_threads: true,
            governor: String::new(),
        }
    }
}

impl Default for HugepagesSection {
    fn default() -> Self {
        HugepagesSection {
            node_memory_floor: "256MiB".into(),
            compaction: true,
            timeout: "10s".into(),
            max_per_vm: "unlimited".into(),
        }
    }
}

impl Default for DefaultsSection {
    fn default() -> Self {
        DefaultsSection {
            hugepages: "auto".into(),
            isolate: "off".into(),
            irq: "off".into(),
        }
    }
}

/// A CPU set given in the policy, resolved against the host's topology when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuPolicy {
    /// `housekeeping`: the first core of each NUMA node with its SMT siblings.
    /// `isolatable`: every online CPU outside the housekeeping set.
    Auto,
    List(CpuSet),
}

/// How host tasks are kept off isolated CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationMethod {
    /// An isolated cpuset partition where the kernel offers one and kvmtune places the VM's
    /// QEMU (`kvmtune run`); else systemd's runtime `AllowedCPUs` where systemd runs on
    /// cgroup v2; else cgroupfs.
    Auto,
    Systemd,
    /// A housekeeping cpuset in the cgroup v1 or v2 hierarchy that host processes move into.
    Cgroupfs,
    /// A cgroup v2 isolated partition holding the VM's QEMU (`isolation::partition`).
    Partition,
    /// Isolation is not done; a VM that asks for it fails to start.
    Off,
}

/// The validated host policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub housekeeping: CpuPolicy,
    pub isolatable: CpuPolicy,
    pub isolation: IsolationMethod,
    /// Whether two VMs may isolate the same CPU.
    pub allow_overlap: bool,
    /// Move unbound kernel threads and the workqueue cpumasks to housekeeping CPUs too.
    pub move_kernel_threads: bool,
    /// cpufreq governor for isolated CPUs while isolated (`None`: left alone).
    pub governor: Option<String>,
    /// Move IRQs that are not a VM's off isolated CPUs (and `default_smp_affinity`).
    pub move_other_irqs: bool,
    /// Tell a running irqbalance to keep off isolated CPUs.
    pub irqbalance: bool,
    /// How often `kvmtune watch` looks at the host (new device IRQs, drift, stray processes,
    /// VMs gone).
    pub irq_watch_interval: Duration,
    /// Where `kvmtune watch` writes `kvmtune.prom` for node_exporter's textfile collector,
    /// relative to the root (`None`: nowhere).
    pub metrics_dir: Option<String>,
    /// How often `kvmtune watch` rewrites it (and looks at every task of the host).
    pub metrics_interval: Duration,
    /// Memory each NUMA node keeps free of hugepages after a reservation.
    pub node_memory_floor: u64,
    pub compaction: bool,
    /// Time bound for one VM's reservation, compaction retries included.
    pub reserve_timeout: Duration,
    /// Most memory one VM may have reserved as hugepages; `None` = no limit.
    pub max_per_vm: Option<u64>,
    pub default_hugepages: Reserve,
    pub default_isolate: IsolateChoice,
    pub default_irq: IrqChoice,
    /// Host knobs held while VMs that want them run (`[ksm]`, `[thp]`, `[sysctl]`).
    pub knobs: KnobPolicy,
    /// `kvmtune balance`: watermarks, steps and intervals of the balloon rule.
    pub balance: BalancePolicy,
    /// The real QEMU the emulator mode runs; `None` = `auto` (`/usr/bin/` + the name kvmtune
    /// was started as, `qemu-system-x86_64` for `kvmtune-qemu`).
    pub emulator_qemu: Option<std::path::PathBuf>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_file(PolicyFile::default()).expect("built-in defaults are valid")
    }
}

impl Policy {
    /// Read the policy at `path`; a missing file means the built-in defaults. The file decides
    /// what less trusted domain editors may do, so one that others could write is refused: it
    /// must belong to root or to `privilege`'s uid.
    pub fn load(path: &Path, privilege: &Privilege) -> Result<Policy> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: a FIFO in the policy's place must not hang the hook.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
            Err(e) => return Err(Error::io("read policy", path, e)),
        };
        // The checks look at the file that is read (not at a path someone may swap meanwhile).
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat policy", path, e))?;
        if !meta.is_file() {
            return Err(Error::Config(format!(
                "policy {} is not a regular file",
                path.display()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Error::Config(format!(
                "policy {} is writable by group or others (mode {:o}); chmod go-w it",
                path.display(),
                meta.mode() & 0o7777
            )));
        }
        if meta.uid() != privilege.uid && meta.uid() != 0 {
            return Err(Error::Config(format!(
                "policy {} is owned by uid {}, not root",
                path.display(),
                meta.uid()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let dmeta = std::fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
            // Whoever can write the directory can put another file in the policy's place.
            if dmeta.mode() & 0o022 != 0 && dmeta.mode() & 0o1000 == 0 {
                return Err(Error::Config(format!(
                    "policy directory {} is writable by group or others (mode {:o}); chmod go-w it",
                    dir.display(),
                    dmeta.mode() & 0o7777
                )));
            }
        }
        // A policy is a page of TOML: more is not a policy.
        let mut text = String::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => {
                    Error::Config(format!("policy {} is not UTF-8 text", path.display()))
                }
                _ => Error::io("read policy", path, e),
            })?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(Error::Config(format!(
                "policy {} is larger than {MAX_POLICY_BYTES} bytes",
                path.display()
            )));
        }
        Policy::parse(&text).map_err(|e| Error::Config(format!("policy {}: {e}", path.display())))
    }

    /// Parse and validate policy text.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        Policy::from_file(file)
    }

    fn from_file(f: PolicyFile) -> Result<Policy, String> {
        Ok(Policy {
            housekeeping: word(&f.cpus.housekeeping, "cpus.housekeeping")?,
            isolatable: word(&f.cpus.isolatable, "cpus.isolatable")?,
            isolation: word(&f.cpus.isolation, "cpus.isolation")?,
            allow_overlap: match f.cpus.overlap.as_str() {
                "refuse" => false,
                "allow" => true,
                v => return Err(format!("cpus.overlap = '{v}': expected refuse or allow")),
            },
            move_kernel_threads: f.cpus.move_kernel_threads,
            move_other_irqs: f.irq.move_others,
            irqbalance: match f.irq.irqbalance.as_str() {
                "auto" => true,
                "off" => false,
                v => return Err(format!("irq.irqbalance = '{v}': expected auto or off")),
            },
            irq_watch_interval: bounded_duration(
                &f.irq.watch_interval,
                "irq.watch_interval",
                Duration::from_millis(10),
            )?,
            governor: match f.cpus.governor.trim() {
                "" => None,
                g if g.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    Some(g.to_string())
                }
                g => return Err(format!("cpus.governor = '{g}' is not a governor name")),
            },
            node_memory_floor: parse_size(&f.hugepages.node_memory_floor)
                .map_err(|e| format!("hugepages.node_memory_floor: {e}"))?,
            compaction: f.hugepages.compaction,
            reserve_timeout: bounded_duration(
                &f.hugepages.timeout,
                "hugepages.timeout",
                Duration::ZERO,
            )?,
            max_per_vm: match f.hugepages.max_per_vm.trim() {
                "unlimited" => None,
                s => Some(parse_size(s).map_err(|e| format!("hugepages.max_per_vm: {e}"))?),
            },
            // The metadata's words, through the metadata's parsers: a value the policy takes
            // is one a VM could say, and a blank list fails here, not at `started`.
            default_hugepages: word(&f.defaults.hugepages, "defaults.hugepages")?,
            default_isolate: word(&f.defaults.isolate, "defaults.isolate")?,
            default_irq: word(&f.defaults.irq, "defaults.irq")?,
            knobs: KnobPolicy::from_sections(f.ksm, f.thp, f.sysctl)?,
            balance: BalancePolicy::from_section(f.balance)?,
            metrics_dir: match f.metrics.textfile_dir.trim() {
                "" => None,
                d if d.starts_with('/') => Some(d.trim_start_matches('/').to_string()),
                d => {
                    return Err(format!(
                        "metrics.textfile_dir = '{d}': expected an absolute path, or \"\" for none"
                    ))
                }
            },
            metrics_interval: bounded_duration(
                &f.metrics.interval,
                "metrics.interval",
                Duration::from_secs(1),
            )?,
            emulator_qemu: match f.emulator.qemu.trim() {
                "auto" => None,
                p if p.starts_with('/') => Some(p.into()),
                p => {
                    return Err(format!(
                        "emulator.qemu = '{p}': expected \"auto\" or an absolute path"
                    ))
                }
            },
        })
    }
}

/// A value word of the policy, by its type's `FromStr`; the message names the key.
fn word<T: FromStr<Err = BadValue>>(value: &str, key: &str) -> Result<T, String> {
    value.parse().map_err(|e| format!("{key} = {e}"))
}

impl FromStr for CpuPolicy {
    type Err = BadValue;

    /// `auto`, or a CPU list that is not empty.
    fn from_str(text: &str) -> Result<CpuPolicy, BadValue> {
        const EXPECTED: &str = "auto or a CPU list";
        match text.trim() {
            "auto" => Ok(CpuPolicy::Auto),
            v => {
                let set = CpuSet::parse(v).map_err(|why| BadValue::because(v, EXPECTED, why))?;
                if set.is_empty() {
                    return Err(BadValue::because(v, EXPECTED, "the CPU list is empty"));
                }
                Ok(CpuPolicy::List(set))
            }
        }
    }
}

impl FromStr for IsolationMethod {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<IsolationMethod, BadValue> {
        match text.trim() {
            "auto" => Ok(IsolationMethod::Auto),
            "systemd" => Ok(IsolationMethod::Systemd),
            "cgroupfs" => Ok(IsolationMethod::Cgroupfs),
            "partition" => Ok(IsolationMethod::Partition),
            "off" => Ok(IsolationMethod::Off),
            v => Err(BadValue::new(
                v,
                "auto, systemd, cgroupfs, partition or off",
            )),
        }
    }
}

/// Longest duration the policy takes: libvirt waits for the hook without a time limit, and
/// `watch` must notice a new VM; anything longer is a typo (and a huge one would overflow
/// the clock arithmetic).
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A duration between `min` and `MAX_DURATION`.
fn bounded_duration(text: &str, key: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| format!("{key}: {e}"))?;
    if d < min || d > MAX_DURATION {
        return Err(format!(
            "{key} = '{}' is out of range ({}ms to 1h)",
            text.trim(),
            min.as_millis()
        ));
    }
    Ok(d)
}

/// `10s`, `500ms`, `2m`; a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{t}' is not a duration such as 10s or 500ms"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" | "min" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{t}' is too long")),
        u => Err(format!("'{t}': unknown unit '{u}' (ms, s or m)")),
    }
}

/// toml's messages span several lines with a source excerpt; libvirt shows one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let p = Policy::parse("").unwrap();
        assert_eq!(p.housekeeping, CpuPolicy::Auto);
        assert_eq!(p.node_memory_floor, 256 << 20);
        assert!(p.compaction);
        assert_eq!(p.reserve_timeout, Duration::from_secs(10));
        assert_eq!(p.max_per_vm, None);
        assert_eq!(p.default_hugepages, Reserve::Auto);
        assert_eq!(p.default_isolate, IsolateChoice::Off);
        assert_eq!(p.default_irq, IrqChoice::Off);
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Policy::parse("[hugepages]\nnode_memory_flor = \"1GiB\"\n").unwrap_err();
        assert!(err.contains("node_memory_flor"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let err = Policy::parse("[cpus]\nhousekeeping = \"3-1\"\n").unwrap_err();
        assert!(
            err.contains("cpus.housekeeping") && err.contains("3-1"),
            "{err}"
        );
        let err = Policy::parse("[hugepages]\ntimeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("hugepages.timeout"), "{err}");
        let err = Policy::parse("[defaults]\nhugepages = \"yes\"\n").unwrap_err();
        assert!(err.contains("defaults.hugepages"), "{err}");
    }

    #[test]
    fn sizes_durations_and_lists_are_read() {
        let p = Policy::parse(
            "[cpus]\nhousekeeping = \"0-1\"\n[hugepages]\nnode_memory_floor = \"1GiB\"\ntimeout = \"500ms\"\nmax_per_vm = \"64GiB\"\n[defaults]\nisolate = \"vcpus\"\n",
        )
        .unwrap();
        assert_eq!(
            p.housekeeping,
            CpuPolicy::List(CpuSet::parse("0-1").unwrap())
        );
        assert_eq!(p.node_memory_floor, 1 << 30);
        assert_eq!(p.reserve_timeout, Duration::from_millis(500));
        assert_eq!(p.max_per_vm, Some(64 << 30));
        assert_eq!(p.default_isolate, IsolateChoice::Vcpus);
    }

    #[test]
    fn blank_or_empty_cpu_lists_are_refused_when_the_policy_loads_naming_the_key() {
        for (text, key) in [
            ("[defaults]\nisolate = \"\"\n", "defaults.isolate = ''"),
            ("[defaults]\nirq = \" \"\n", "defaults.irq = ''"),
            ("[defaults]\nirq = \"^0\"\n", "defaults.irq = '^0'"),
            ("[cpus]\nhousekeeping = \"\"\n", "cpus.housekeeping = ''"),
            ("[cpus]\nisolatable = \",\"\n", "cpus.isolatable = ','"),
        ] {
            let err = Policy::parse(text).unwrap_err();
            assert!(err.starts_with(key), "{text}: {err}");
            assert!(err.contains("the CPU list is empty"), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn policy_words_are_the_types_parsers() {
        for (text, want) in [
            ("auto", IsolationMethod::Auto),
            ("systemd", IsolationMethod::Systemd),
            (" cgroupfs ", IsolationMethod::Cgroupfs),
            ("partition", IsolationMethod::Partition),
            ("off", IsolationMethod::Off),
        ] {
            assert_eq!(text.parse::<IsolationMethod>().unwrap(), want);
        }
        let err = "cgroups".parse::<IsolationMethod>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "'cgroups': expected auto, systemd, cgroupfs, partition or off"
        );
        assert_eq!("auto".parse::<CpuPolicy>().unwrap(), CpuPolicy::Auto);
        assert_eq!(
            "0,8".parse::<CpuPolicy>().unwrap(),
            CpuPolicy::List(CpuSet::parse("0,8").unwrap())
        );
        assert!("Auto".parse::<CpuPolicy>().is_err());
        let p = Policy::parse("[defaults]\nirq = \"housekeeping\"\nhugepages = \" on\"\n").unwrap();
        assert_eq!(p.default_irq, IrqChoice::Housekeeping);
        assert_eq!(p.default_hugepages, Reserve::On);
    }

    #[test]
    fn emulator_qemu_is_auto_or_an_absolute_path() {
        assert_eq!(Policy::parse("").unwrap().emulator_qemu, None);
        let p = Policy::parse("[emulator]\nqemu = \"/opt/qemu/bin/qemu-system-x86_64\"\n").unwrap();
        assert_eq!(
            p.emulator_qemu.as_deref(),
            Some(Path::new("/opt/qemu/bin/qemu-system-x86_64"))
        );
        let err = Policy::parse("[emulator]\nqemu = \"qemu-system-x86_64\"\n").unwrap_err();
        assert!(err.contains("emulator.qemu"), "{err}");
    }

    #[test]
    fn metrics_dir_is_absolute_or_empty_and_is_kept_relative_to_the_root() {
        let p = Policy::parse("").unwrap();
        assert_eq!(
            p.metrics_dir.as_deref(),
            Some("var/lib/prometheus/node-exporter")
        );
        assert_eq!(p.metrics_interval, Duration::from_secs(15));
        let p = Policy::parse("[metrics]\ntextfile_dir = \"\"\n").unwrap();
        assert_eq!(p.metrics_dir, None);
        let err = Policy::parse("[metrics]\ntextfile_dir = \"prom\"\n").unwrap_err();
        assert!(
            err.contains("metrics.textfile_dir") && err.contains("prom"),
            "{err}"
        );
        let err = Policy::parse("[metrics]\ninterval = \"10ms\"\n").unwrap_err();
        assert!(err.contains("metrics.interval"), "{err}");
    }

    #[test]
    fn shipped_example_parses_to_the_built_in_defaults() {
        let text = include_str!("../../conf/kvmtune.toml");
        assert_eq!(Policy::parse(text).unwrap(), Policy::default());
    }

    #[test]
    fn missing_file_is_defaults_and_group_writable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvmtune.toml");
        let me = Privilege::root_as(nix::unistd::geteuid().as_raw());
        assert_eq!(Policy::load(&path, &me).unwrap(), Policy::default());
        std::fs::write(&path, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = Policy::load(&path, &me).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("writable"), "{err}");
    }
}
