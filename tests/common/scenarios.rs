//! The golden scenarios, in one place: the golden-tree tests (`golden.rs`, `knobs.rs`) and
//! the test that holds `kvmtune plan` equal to the journals (`plan_journal.rs`) run the same
//! hosts and VMs. A scenario is a fresh bench, the VM's name and its domain XML.

use super::cgroupfs::Layout;
use super::{bound, huge_vm, kernel, Bench, GIB};

/// Every scenario with a golden tree `tests/golden/<case>.txt`.
pub const GOLDEN: [&str; 9] = [
    "01-strict-node1",
    "02-interleave",
    "03-1g-node1",
    "04-memnode-cells",
    "05-isolated-device-ksm",
    "knobs-ksm-merge",
    "knobs-ksm-run",
    "knobs-sysctl",
    "knobs-thp",
];

/// The scenario of `05-isolated-device-ksm` on the other isolation methods (no golden tree:
/// `isolation.rs` holds their trees).
pub const OTHER_LAYOUTS: [&str; 2] = [
    "05-isolated-device-ksm-v2",
    "05-isolated-device-ksm-systemd",
];

pub struct Scenario {
    pub case: &'static str,
    pub bench: Bench,
    pub vm: &'static str,
    pub xml: String,
}

/// A VM without hugepages, with kvmtune metadata `meta` (and `extra` XML inside <domain>).
pub fn knob_vm(name: &str, meta: &str, extra: &str) -> String {
    format!(
        "<domain><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>{extra}\
         <metadata><k:tune xmlns:k='urn:kvmtune:1'>{meta}</k:tune></metadata></domain>"
    )
}

pub const KSM_OFF: &str = "<k:ksm run='off'/>";
pub const THP_ON: &str = "<k:thp apply='on'/>";

/// KSM is running with `shared` pages merged (ksmd merges them again whenever it runs).
pub fn ksm_running(b: &Bench, shared: u64) {
    b.kernel.knobs(|k| {
        let ksm = k.ksm();
        ksm.run = 1;
        ksm.pages_shared = shared;
        ksm.pages_sharing = shared * 3;
        ksm.mergeable = shared;
        ksm.mergeable_sharing = shared * 3;
    });
}

fn two_nodes() -> Bench {
    Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]))
}

/// A VM on CPU 3 that isolates its vCPU, sends the IRQs of its passthrough device
/// 0000:06:00.0 there, and stops KSM while it runs: every kind of change but hugepages.
fn isolated_device_ksm(layout: Layout) -> (Bench, String) {
    let b = Bench::new(
        kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
            .with_cgroups(layout)
            .with_irqs(),
    );
    ksm_running(&b, 0);
    let xml = knob_vm(
        "rt",
        &format!("<k:isolate cpus='vcpus'/><k:irq cpus='vcpus'/>{KSM_OFF}"),
        "<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>\
         <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
         <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev></devices>",
    );
    (b, xml)
}

/// The scenario called `case` (one of `GOLDEN` or `OTHER_LAYOUTS`), on a fresh bench.
pub fn scenario(case: &'static str) -> Scenario {
    let (bench, vm, xml) = match case {
        "01-strict-node1" => (two_nodes(), "db1", huge_vm("db1", 512, &bound("strict", "1"))),
        "02-interleave" => (two_nodes(), "il", huge_vm("il", 256, &bound("interleave", "0-1"))),
        "03-1g-node1" => (
            two_nodes(),
            "g",
            format!(
                "<domain><name>g</name><memory unit='GiB'>2</memory><memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>{}</domain>",
                bound("strict", "1")
            ),
        ),
        "04-memnode-cells" => (
            two_nodes(),
            "c",
            "<domain><name>c</name><memory unit='MiB'>384</memory>\
             <memoryBacking><hugepages/></memoryBacking>\
             <numatune><memnode cellid='0' mode='strict' nodeset='1'/><memnode cellid='1' mode='strict' nodeset='0'/></numatune>\
             <cpu><numa><cell id='0' cpus='0' memory='256' unit='MiB'/><cell id='1' cpus='1' memory='128' unit='MiB'/></numa></cpu></domain>"
                .to_string(),
        ),
        "05-isolated-device-ksm" => {
            let (b, xml) = isolated_device_ksm(Layout::V1);
            (b, "rt", xml)
        }
        "05-isolated-device-ksm-v2" => {
            let (b, xml) = isolated_device_ksm(Layout::V2);
            (b, "rt", xml)
        }
        "05-isolated-device-ksm-systemd" => {
            let (b, xml) = isolated_device_ksm(Layout::Systemd);
            (b, "rt", xml)
        }
        "knobs-ksm-run" => {
            let b = two_nodes();
            ksm_running(&b, 100);
            (b, "quiet", knob_vm("quiet", KSM_OFF, ""))
        }
        "knobs-ksm-merge" => {
            let b = two_nodes().with_policy("[ksm]\nmerge_across_nodes = 0\n");
            ksm_running(&b, 100);
            (b, "numa", knob_vm("numa", "", ""))
        }
        "knobs-thp" => (
            two_nodes().with_policy("[thp]\nenabled = \"never\"\ndefrag = \"never\"\n"),
            "rt",
            knob_vm("rt", THP_ON, ""),
        ),
        "knobs-sysctl" => (
            two_nodes().with_policy(
                "[sysctl]\nfor = [\"all\"]\nvalues = { \"vm.stat_interval\" = 120, \"kernel/printk\" = \"3 4 1 7\" }\n",
            ),
            "rt",
            knob_vm("rt", "", ""),
        ),
        other => panic!("no golden scenario called {other:?}"),
    };
    Scenario {
        case,
        bench,
        vm,
        xml,
    }
}
