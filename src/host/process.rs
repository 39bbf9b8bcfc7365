//! Finding a VM's QEMU process in /proc (for `recover` and the watcher: is a VM still running?),
//! and where libvirt keeps the files of the VMs it runs (`LIBVIRT_RUN_DIR`).

use super::fs::HostFs;

/// libvirt's status directory for its QEMU VMs: `NAME.xml` and `NAME.pid` of each running VM.
pub const LIBVIRT_RUN_DIR: &str = "run/libvirt/qemu";

/// Whether a process runs whose command line names the VM as libvirt does
/// (`-name guest=NAME,debug-threads=on`, commas in NAME doubled) or plainly (`-name NAME`).
pub fn qemu_running(fs: &dyn HostFs, vm: &str) -> bool {
    !processes_naming(fs, vm).is_empty()
}

/// The processes whose command line names the VM (see `qemu_running`).
pub fn processes_naming(fs: &dyn HostFs, vm: &str) -> Vec<u32> {
    let Ok(entries) = fs.list("proc") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| e.parse::<u32>().ok())
        .filter(|pid| {
            fs.read(&format!("proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| names_vm(&cmdline, vm))
        })
        .collect()
}

/// Whether process `pid` still runs with a command line naming the VM (one read: the watcher
/// checks the QEMU it found last time instead of every process of the host).
pub fn names_vm_at(fs: &dyn HostFs, pid: u32, vm: &str) -> bool {
    fs.read(&format!("proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| names_vm(&cmdline, vm))
}

fn names_vm(cmdline: &str, vm: &str) -> bool {
    let args: Vec<&str> = cmdline.split('\0').collect();
    args.windows(2).any(|w| {
        w[0] == "-name" && {
            let value = w[1];
            let escaped = vm.replace(',', ",,");
            value == vm
                || value.strip_prefix("guest=").is_some_and(|rest| {
                    rest == escaped
                        || rest
                            .strip_prefix(escaped.as_str())
                            .is_some_and(|tail| tail.starts_with(',') && !tail.starts_with(",,"))
                })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_and_plain_name_forms_match() {
        let libvirt = "/usr/bin/qemu-system-x86_64\0-name\0guest=db1,debug-threads=on\0-S\0";
        assert!(names_vm(libvirt, "db1"));
        assert!(!names_vm(libvirt, "db"));
        assert!(names_vm("qemu\0-name\0db1\0", "db1"));
        let comma = "qemu\0-name\0guest=a,,b,debug-threads=on\0";
        assert!(names_vm(comma, "a,b"));
        assert!(!names_vm(comma, "a"));
    }
}
