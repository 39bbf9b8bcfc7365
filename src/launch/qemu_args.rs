//! What a QEMU command line asks of the host, read from QEMU's own arguments: `-m`, `-smp`,
//! `-numa node`, `-object memory-backend-{file,memfd,ram}` (size, hugetlbfs or `hugetlb=on`,
//! `host-nodes`, `policy`), `-machine memory-backend=`, `-mem-path`, `-device vfio-pci`,
//! `-overcommit mem-lock=on`, `-name`. Both QEMU's `key=value` syntax and the JSON objects
//! libvirt writes are read. Every other argument is left for QEMU alone: it is skipped here
//! (with its value, for options that take one) and passed on untouched.
//!
//! `to_domain` turns the result into the same `Domain` the hook gets from libvirt's XML, so
//! `kvmtune run` plans, applies and releases through the hook's own path.

use super::opts::{size, Opts};
use crate::cpulist::CpuSet;
use crate::domain::{Domain, GuestCell, MemMode, NodeBinding, NumaTune, PageSpec, PciAddress};

/// QEMU 7.2's options that take no value (qemu-options.hx without HAS_ARG, and old spellings
/// still accepted). Every other option takes the next argument as its value.
const FLAGS: &[&str] = &[
    "S",
    "alt-grab",
    "async-teardown",
    "audio-help",
    "ctrl-grab",
    "curses",
    "daemonize",
    "enable-fips",
    "enable-kvm",
    "enable-sync-profile",
    "full-screen",
    "h",
    "help",
    "mem-prealloc",
    "no-acpi",
    "no-fd-bootchk",
    "no-frame",
    "no-hpet",
    "no-kvm",
    "no-quit",
    "no-reboot",
    "no-shutdown",
    "no-user-config",
    "nodefaults",
    "nographic",
    "old-param",
    "only-migratable",
    "portrait",
    "preconfig",
    "s",
    "sdl",
    "semihosting",
    "singlestep",
    "snapshot",
    "usb",
    "version",
    "win2k-hack",
    "xen-attach",
    "xen-domid-restrict",
];

/// Options whose value may be `help` or `?` (QEMU lists the choices and exits). Elsewhere such
/// a value is data (a kernel command line, a file name).
const HELP_OPTIONS: &[&str] = &[
    "accel",
    "audiodev",
    "blockdev",
    "chardev",
    "cpu",
    "d",
    "device",
    "display",
    "M",
    "machine",
    "net",
    "netdev",
    "nic",
    "object",
    "trace",
    "vga",
    "watchdog-action",
];

/// QEMU's default guest memory when `-m` is not given.
pub const DEFAULT_MEMORY: u64 = 128 << 20;

/// What the arguments say, before the host is consulted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuArgs {
    /// `-name [guest=]NAME`.
    pub name: Option<String>,
    /// `-m [size=]SIZE` in bytes.
    pub memory: Option<u64>,
    pub vcpus: Option<u32>,
    pub numa_nodes: Vec<NumaNode>,
    pub backends: Vec<MemoryBackend>,
    /// `-machine memory-backend=ID`: the backend of the guest's RAM without NUMA nodes.
    pub machine_memdev: Option<String>,
    /// `-mem-path DIR`: all guest RAM in files under DIR.
    pub mem_path: Option<String>,
    /// `-device vfio-pci,host=…|sysfsdev=…`.
    pub vfio: Vec<PciAddress>,
    /// `-overcommit mem-lock=on` (or the older `-realtime mlock=on`).
    pub mem_lock: bool,
    pub daemonize: bool,
    /// `-help`, `-version`, `-device help`…: QEMU prints something and exits.
    pub query: bool,
}

/// `-numa node,nodeid=N,memdev=ID` (or the older `mem=SIZE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    pub id: Option<u32>,
    pub memdev: Option<String>,
    pub mem: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    File {
        mem_path: String,
    },
    Memfd {
        hugetlb: bool,
        page_bytes: Option<u64>,
    },
    Ram,
}

/// `-object memory-backend-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBackend {
    pub id: String,
    pub kind: BackendKind,
    pub size: Option<u64>,
    pub binding: Option<NodeBinding>,
}

/// Read the arguments that follow the QEMU program. Errors name the option and its value.
pub fn parse(args: &[String]) -> Result<QemuArgs, String> {
    let mut out = QemuArgs::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(option) = option_name(arg) else {
            continue; // a disk image, or `-` alone
        };
        if FLAGS.contains(&option) {
            match option {
                "daemonize" => out.daemonize = true,
                "h" | "help" | "version" | "audio-help" => out.query = true,
                _ => {}
            }
            continue;
        }
        let Some(value) = args.get(i) else {
            break; // QEMU itself reports the missing value
        };
        i += 1;
        if HELP_OPTIONS.contains(&option) && asks_for_help(value) {
            out.query = true;
            continue;
        }
        let context = |e: String| format!("QEMU argument -{option} '{value}': {e}");
        match option {
            "name" => {
                let o = Opts::parse(value, Some("guest")).map_err(context)?;
                out.name = o.get("guest").map(str::to_string);
            }
            "m" => {
                let o = Opts::parse(value, Some("size")).map_err(context)?;
                if let Some(s) = o.get("size") {
                    out.memory = Some(size(s, 1 << 20).map_err(context)?);
                }
            }
            "smp" => out.vcpus = Some(vcpus(value).map_err(context)?),
            "numa" => {
                let o = Opts::parse(value, Some("type")).map_err(context)?;
                if o.get("type") == Some("node") {
                    out.numa_nodes.push(numa_node(&o).map_err(context)?);
                }
            }
            "object" => {
                let o = Opts::parse(value, Some("qom-type")).map_err(context)?;
                if let Some(b) = backend(&o).map_err(context)? {
                    out.backends.push(b);
                }
            }
            "machine" | "M" => {
                let o = Opts::parse(value, Some("type")).map_err(context)?;
                if let Some(id) = o.get("memory-backend") {
                    out.machine_memdev = Some(id.to_string());
                }
            }
            "mem-path" => out.mem_path = Some(value.clone()),
            "device" => {
                let o = Opts::parse(value, Some("driver")).map_err(context)?;
                if o.get("driver") == Some("vfio-pci") {
                    if let Some(addr) = vfio_address(&o).map_err(context)? {
                        out.vfio.push(addr);
                    }
                }
            }
            "overcommit" => {
                let o = Opts::parse(value, None).map_err(context)?;
                out.mem_lock |= o.get("mem-lock") == Some("on");
            }
            "realtime" => {
                let o = Opts::parse(value, None).map_err(context)?;
                out.mem_lock |= o.flag("mlock");
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `-m` → `m`, `--smp` → `smp`; `None` for a value that is not an option.
fn option_name(arg: &str) -> Option<&str> {
    let name = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    (!name.is_empty()).then_some(name)
}

/// `help` or `?` as the value, or as an element of it (`-device vfio-pci,help`).
fn asks_for_help(value: &str) -> bool {
    !value.trim_start().starts_with('{')
        && value.split(',').any(|part| part == "help" || part == "?")
}

fn vcpus(value: &str) -> Result<u32, String> {
    let o = Opts::parse(value, Some("cpus"))?;
    let number = |key: &str| -> Result<Option<u32>, String> {
        o.get(key)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("{key}={v} is not a number"))
            })
            .transpose()
    };
    if let Some(n) = number("cpus")?.filter(|n| *n > 0) {
        return Ok(n);
    }
    let mut product = 1u32;
    for key in ["sockets", "dies", "clusters", "cores", "threads"] {
        product = product.saturating_mul(number(key)?.unwrap_or(1));
    }
    Ok(product.max(1))
}

fn numa_node(o: &Opts) -> Result<NumaNode, String> {
    Ok(NumaNode {
        id: o
            .get("nodeid")
            .map(|v| v.parse().map_err(|_| format!("nodeid={v} is not a number")))
            .transpose()?,
        memdev: o.get("memdev").map(str::to_string),
        mem: o.get("mem").map(|v| size(v, 1 << 20)).transpose()?,
    })
}

fn backend(o: &Opts) -> Result<Option<MemoryBackend>, String> {
    let kind = match o.get("qom-type") {
        Some("memory-backend-file") => BackendKind::File {
            mem_path: o.get("mem-path").unwrap_or_default().to_string(),
        },
        Some("memory-backend-memfd") => BackendKind::Memfd {
            hugetlb: o.flag("hugetlb"),
            page_bytes: o.get("hugetlbsize").map(|s| size(s, 1)).transpose()?,
        },
        Some("memory-backend-ram") => BackendKind::Ram,
        _ => return Ok(None),
    };
    let id = o.get("id").unwrap_or_default().to_string();
    let mut nodes = CpuSet::new();
    for list in o.all("host-nodes") {
        let set = CpuSet::parse(list)
            .map_err(|e| format!("host-nodes={list} is not a node list: {e}"))?;
        nodes = nodes.union(&set);
    }
    // QEMU refuses host-nodes without a policy, and `default` with host-nodes.
    let mode = match o.get("policy") {
        Some("bind") => Some(MemMode::Strict),
        Some("preferred") => Some(MemMode::Preferred),
        Some("interleave") => Some(MemMode::Interleave),
        _ => None,
    };
    let binding = mode.filter(|_| !nodes.is_empty()).map(|mode| NodeBinding {
        mode,
        nodeset: Some(nodes),
    });
    Ok(Some(MemoryBackend {
        id,
        kind,
        size: o.get("size").map(|s| size(s, 1)).transpose()?,
        binding,
    }))
}

/// `host=[DDDD:]BB:SS.F` or `sysfsdev=/sys/bus/pci/devices/DDDD:BB:SS.F`.
fn vfio_address(o: &Opts) -> Result<Option<PciAddress>, String> {
    let text = match (o.get("host"), o.get("sysfsdev")) {
        (Some(host), _) => host,
        (None, Some(path)) => path.trim_end_matches('/').rsplit('/').next().unwrap_or(""),
        (None, None) => return Ok(None),
    };
    text.parse()
        .map(Some)
        .map_err(|e: crate::error::BadValue| format!("-device vfio-pci: {e}"))
}

/// The host's hugetlbfs mounts, to tell which `mem-path` holds hugepages, and of what size.
#[derive(Debug, Clone, Default)]
pub struct Hugetlbfs {
    /// Mount point (absolute) and page size in KiB.
    pub mounts: Vec<(String, u64)>,
}

impl Hugetlbfs {
    /// From a mount table (`/proc/mounts` format); `default_page_kib` for mounts without
    /// `pagesize=`.
    pub fn parse(table: &str, default_page_kib: u64) -> Hugetlbfs {
        let Ok(table) = table.parse::<crate::host::mounts::MountTable>();
        let mounts = table
            .of_type("hugetlbfs")
            .map(|m| {
                let page_kib = m
                    .option("pagesize")
                    .and_then(|s| size(s, 1).ok())
                    .map(|bytes| bytes / 1024)
                    .unwrap_or(default_page_kib);
                (m.point.clone(), page_kib)
            })
            .collect();
        Hugetlbfs { mounts }
    }

    /// The page size of the hugetlbfs mount that holds `path` (the deepest one), if any.
    pub fn page_kib(&self, path: &str) -> Option<u64> {
        self.mounts
            .iter()
            .filter(|(point, _)| {
                let point = point.trim_end_matches('/');
                path == point
                    || path
                        .strip_prefix(point)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(point, _)| point.len())
            .map(|(_, kib)| *kib)
    }
}

/// The domain these arguments describe, given the host's hugetlbfs mounts and default page size.
pub fn to_domain(
    args: &QemuArgs,
    huge: &Hugetlbfs,
    default_page_kib: u64,
) -> Result<Domain, String> {
    let backend = |id: &str| -> Result<&MemoryBackend, String> {
        args.backends
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| format!("QEMU argument memdev '{id}' names no -object memory-backend"))
    };
    let page_of = |b: &MemoryBackend| -> Option<u64> {
        match &b.kind {
            BackendKind::File { mem_path } => huge.page_kib(mem_path),
            BackendKind::Memfd {
                hugetlb: true,
                page_bytes,
            } => Some(page_bytes.map_or(default_page_kib, |b| b / 1024)),
            _ => None,
        }
    };
    let legacy_page = args.mem_path.as_deref().and_then(|p| huge.page_kib(p));
    let mut domain = Domain {
        name: args.name.clone().unwrap_or_default(),
        memory_bytes: args.memory.unwrap_or(DEFAULT_MEMORY),
        vcpus: args.vcpus.unwrap_or(1),
        locked: args.mem_lock,
        hostdevs: args.vfio.clone(),
        ..Domain::default()
    };

    if args.numa_nodes.is_empty() {
        let main = args.machine_memdev.as_deref().map(backend).transpose()?;
        let page = main.map_or(legacy_page, page_of);
        if let Some(b) = main {
            if args.memory.is_none() {
                domain.memory_bytes = b.size.unwrap_or(DEFAULT_MEMORY);
            }
            domain.numatune.memory = b.binding.clone();
        }
        domain.hugepages = page.map(|size_kib| {
            vec![PageSpec {
                size_kib,
                cells: None,
            }]
        });
        return Ok(domain);
    }

    // One guest cell per -numa node; its page size and binding are its backend's.
    let mut cells = Vec::new();
    let mut pages: Vec<(u32, Option<u64>)> = Vec::new();
    let mut memnodes = Vec::new();
    for (index, node) in args.numa_nodes.iter().enumerate() {
        let id = node.id.unwrap_or(index as u32);
        let (bytes, page) = match node.memdev.as_deref() {
            Some(memdev) => {
                let b = backend(memdev)?;
                if let Some(binding) = &b.binding {
                    memnodes.push((id, binding.clone()));
                }
                let bytes = b
                    .size
                    .ok_or_else(|| format!("QEMU argument -object id={memdev} has no size"))?;
                (bytes, page_of(b))
            }
            None => (node.mem.unwrap_or(0), legacy_page),
        };
        cells.push(GuestCell {
            id,
            memory_bytes: bytes,
        });
        pages.push((id, page));
    }
    if pages.iter().any(|(_, p)| p.is_some()) {
        // The Domain model backs all of a VM's memory with hugepages or none: a cell QEMU backs
        // with ordinary memory needs no reservation, so it counts as holding none.
        for cell in &mut cells {
            if pages.iter().any(|(id, p)| *id == cell.id && p.is_none()) {
                cell.memory_bytes = 0;
            }
        }
        let mut specs: Vec<PageSpec> = Vec::new();
        for (id, page) in &pages {
            let Some(size_kib) = page else { continue };
            match specs.iter_mut().find(|s| s.size_kib == *size_kib) {
                Some(spec) => spec.cells.get_or_insert_with(CpuSet::new).insert(*id),
                None => specs.push(PageSpec {
                    size_kib: *size_kib,
                    cells: Some(CpuSet::from_ids([*id])),
                }),
            }
        }
        domain.hugepages = Some(specs);
    }
    domain.cells = cells;
    domain.numatune = NumaTune {
        memory: None,
        memnodes,
    };
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn hugetlbfs() -> Hugetlbfs {
        Hugetlbfs::parse(
            "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
             none /mnt/huge1g hugetlbfs rw,pagesize=1024M 0 0\n\
             tmpfs /dev/shm tmpfs rw 0 0\n",
            2048,
        )
    }

    fn domain(line: &str) -> Domain {
        to_domain(&parse(&args(line)).unwrap(), &hugetlbfs(), 2048).unwrap()
    }

    fn bind(mode: MemMode, nodes: &str) -> Option<NodeBinding> {
        Some(NodeBinding {
            mode,
            nodeset: Some(CpuSet::parse(nodes).unwrap()),
        })
    }

    /// Table: command line → (memory, vcpus, page sizes per cell set, binding of all memory).
    #[test]
    fn command_lines_become_domains() {
        struct Case {
            line: &'static str,
            memory: u64,
            vcpus: u32,
            hugepages: Option<Vec<(u64, Option<&'static str>)>>,
            memory_binding: Option<NodeBinding>,
        }
        let cases = [
            Case {
                line: "-machine none",
                memory: DEFAULT_MEMORY,
                vcpus: 1,
                hugepages: None,
                memory_binding: None,
            },
            Case {
                line: "-m 64 -smp 2 -mem-path /dev/hugepages",
                memory: 64 << 20,
                vcpus: 2,
                hugepages: Some(vec![(2048, None)]),
                memory_binding: None,
            },
            Case {
                line: "-m 1G -mem-path /dev/shm",
                memory: 1 << 30,
                vcpus: 1,
                hugepages: None,
                memory_binding: None,
            },
            Case {
                line: "-m size=2G -smp sockets=2,cores=2,threads=2 -object memory-backend-file,id=ram,size=2G,mem-path=/mnt/huge1g/vm,share=on,host-nodes=1,policy=bind -machine q35,memory-backend=ram",
                memory: 2 << 30,
                vcpus: 8,
                hugepages: Some(vec![(1 << 20, None)]),
                memory_binding: bind(MemMode::Strict, "1"),
            },
            Case {
                line: "-m 512M -object memory-backend-memfd,id=m,size=512M,hugetlb=on,host-nodes=0-1,policy=interleave -machine pc,memory-backend=m",
                memory: 512 << 20,
                vcpus: 1,
                hugepages: Some(vec![(2048, None)]),
                memory_binding: bind(MemMode::Interleave, "0-1"),
            },
            Case {
                line: "-m 1G -object memory-backend-memfd,id=m,size=1G,hugetlb=on,hugetlbsize=1G -M pc,memory-backend=m",
                memory: 1 << 30,
                vcpus: 1,
                hugepages: Some(vec![(1 << 20, None)]),
                memory_binding: None,
            },
            Case {
                line: "-m 256 -object memory-backend-ram,id=m,size=256M,host-nodes=0,policy=preferred -machine memory-backend=m",
                memory: 256 << 20,
                vcpus: 1,
                hugepages: None,
                memory_binding: bind(MemMode::Preferred, "0"),
            },
        ];
        for case in cases {
            let d = domain(case.line);
            assert_eq!(d.memory_bytes, case.memory, "{}", case.line);
            assert_eq!(d.vcpus, case.vcpus, "{}", case.line);
            let want = case.hugepages.map(|specs| {
                specs
                    .into_iter()
                    .map(|(size_kib, cells)| PageSpec {
                        size_kib,
                        cells: cells.map(|c| CpuSet::parse(c).unwrap()),
                    })
                    .collect::<Vec<_>>()
            });
            assert_eq!(d.hugepages, want, "{}", case.line);
            assert_eq!(d.numatune.memory, case.memory_binding, "{}", case.line);
        }
    }

    #[test]
    fn libvirt_json_objects_are_read() {
        // As libvirt 9.0 starts a hugepage-backed domain with <numatune> (seen on this machine).
        let line = r#"-name guest=db1,debug-threads=on -machine pc-i440fx-7.2,usb=off,memory-backend=pc.ram -m 128 -object {"qom-type":"thread-context","id":"tc-pc.ram","node-affinity":[0]} -object {"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/dev/hugepages/libvirt/qemu/1-db1","prealloc":true,"size":134217728,"host-nodes":[0],"policy":"bind"} -overcommit mem-lock=off -smp 1,sockets=1,cores=1,threads=1 -device {"driver":"vfio-pci","host":"0000:03:00.1","id":"hostdev0"}"#;
        let parsed = parse(&args(line)).unwrap();
        assert_eq!(parsed.name.as_deref(), Some("db1"));
        assert!(!parsed.mem_lock);
        let d = to_domain(&parsed, &hugetlbfs(), 2048).unwrap();
        assert_eq!(d.memory_bytes, 128 << 20);
        assert_eq!(d.hugepages.as_ref().unwrap()[0].size_kib, 2048);
        assert_eq!(d.numatune.memory, bind(MemMode::Strict, "0"));
        assert_eq!(d.hostdevs[0].to_string(), "0000:03:00.1");
    }

    #[test]
    fn numa_nodes_become_cells_with_their_backends_page_size_and_binding() {
        let d = domain(
            "-m 3G -object memory-backend-file,id=m0,size=1G,mem-path=/dev/hugepages,host-nodes=0,policy=bind \
             -object memory-backend-file,id=m1,size=1G,mem-path=/mnt/huge1g,host-nodes=1,policy=preferred \
             -object memory-backend-ram,id=m2,size=1G \
             -numa node,nodeid=0,memdev=m0,cpus=0 -numa node,nodeid=1,memdev=m1 -numa node,memdev=m2",
        );
        let ids: Vec<(u32, u64)> = d.cells.iter().map(|c| (c.id, c.memory_bytes)).collect();
        // The ordinary-memory cell reserves nothing.
        assert_eq!(ids, [(0, 1 << 30), (1, 1 << 30), (2, 0)]);
        let specs = d.hugepages.unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].size_kib, 2048);
        assert_eq!(specs[0].cells, Some(CpuSet::from_ids([0])));
        assert_eq!(specs[1].size_kib, 1 << 20);
        assert_eq!(specs[1].cells, Some(CpuSet::from_ids([1])));
        assert_eq!(d.numatune.memnodes.len(), 2);
        assert_eq!(
            d.numatune.memnodes[1].1,
            bind(MemMode::Preferred, "1").unwrap()
        );
    }

    #[test]
    fn options_with_values_are_skipped_whole() {
        // `-m 8G` inside -append's value, or a disk image named like an option value, is not ours.
        let a = parse(&args(
            "-append -m -kernel vmlinuz disk.img -nographic -m 96",
        ))
        .unwrap();
        assert_eq!(a.memory, Some(96 << 20));
        // A flag takes no value: -m after -nographic is still read.
        let a = parse(&args("-nographic -S -m 48")).unwrap();
        assert_eq!(a.memory, Some(48 << 20));
        let a = parse(&args("--m 32 --nodefaults")).unwrap();
        assert_eq!(a.memory, Some(32 << 20));
    }

    #[test]
    fn names_queries_daemonize_and_locking() {
        let a = parse(&args(
            "-name a,,b,process=x -daemonize -overcommit mem-lock=on",
        ))
        .unwrap();
        assert_eq!(a.name.as_deref(), Some("a,b"));
        assert!(a.daemonize && a.mem_lock && !a.query);
        assert_eq!(
            parse(&args("-name plain")).unwrap().name.as_deref(),
            Some("plain")
        );
        for query in [
            "-version",
            "-help",
            "-h",
            "-device help",
            "-machine ?",
            "-device vfio-pci,help",
            "-cpu help",
        ] {
            assert!(parse(&args(query)).unwrap().query, "{query}");
        }
        assert!(parse(&args("-realtime mlock=on")).unwrap().mem_lock);
        // `help` in a kernel command line or as a file name is data.
        assert!(!parse(&args("-append help -kernel help")).unwrap().query);
    }

    #[test]
    fn vfio_devices_by_host_or_sysfsdev() {
        let a = parse(&args(
            "-device vfio-pci,host=01:00.0,id=gpu -device vfio-pci,sysfsdev=/sys/bus/pci/devices/0000:02:1f.7 -device virtio-net-pci,host=9",
        ))
        .unwrap();
        let names: Vec<String> = a.vfio.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["0000:01:00.0", "0000:02:1f.7"]);
        assert!(parse(&args("-device vfio-pci,host=01:20.0")).is_err());
        assert!(parse(&args("-device vfio-pci,host=zz")).is_err());
    }

    #[test]
    fn bad_values_and_dangling_references_name_the_option() {
        let e = parse(&args("-m lots")).unwrap_err();
        assert!(e.contains("-m 'lots'"), "{e}");
        let e = parse(&args("-smp cpus=x")).unwrap_err();
        assert!(e.contains("-smp"), "{e}");
        let e = to_domain(
            &parse(&args("-numa node,memdev=nope")).unwrap(),
            &hugetlbfs(),
            2048,
        )
        .unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn the_deepest_hugetlbfs_mount_decides_the_page_size() {
        let h = Hugetlbfs::parse(
            "hugetlbfs /dev/hugepages hugetlbfs rw 0 0\nhugetlbfs /dev/hugepages/big hugetlbfs rw,pagesize=1G 0 0\n",
            2048,
        );
        assert_eq!(h.page_kib("/dev/hugepages/libvirt/qemu/1-x"), Some(2048));
        assert_eq!(h.page_kib("/dev/hugepages/big/vm"), Some(1 << 20));
        assert_eq!(h.page_kib("/dev/hugepagesX"), None);
        assert_eq!(h.page_kib("/dev/hugepages"), Some(2048));
    }
}
