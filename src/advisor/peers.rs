//! The other VMs on this host. Outside the hook: every defined domain, from `virsh list --all
//! --uuid` and `virsh dumpxml` by UUID (`host::virsh`). Inside the hook, where calling libvirt deadlocks (the hook holds
//! the VM's lock): the running domains' status files libvirtd keeps in `/run/libvirt/qemu/`
//! (`NAME.xml`, the live XML wrapped in `<domstatus>`), read through `HostFs`.
//! A VM that cannot be read becomes a note, not a failure.

use super::facts::Peer;
use crate::host::process::LIBVIRT_RUN_DIR;
use crate::host::virsh::Virsh;
use crate::host::HostFs;

/// Running domains from libvirtd's status files, except `except`.
pub fn running(fs: &dyn HostFs, except: &str) -> (Vec<Peer>, Vec<String>) {
    let mut peers = Vec::new();
    let mut notes = Vec::new();
    let Ok(names) = fs.list(LIBVIRT_RUN_DIR) else {
        return (peers, notes);
    };
    for file in names {
        let Some(name) = file.strip_suffix(".xml") else {
            continue;
        };
        if name == except {
            continue;
        }
        let rel = format!("{LIBVIRT_RUN_DIR}/{file}");
        match fs.read(&rel).and_then(|text| Peer::from_xml(name, &text)) {
            Ok(mut p) => {
                p.running = true;
                peers.push(p);
            }
            Err(e) => notes.push(format!("VM '{name}' not considered: {e}")),
        }
    }
    (peers, notes)
}

/// Every defined domain but `except`, through virsh (`LIBVIRT_DEFAULT_URI` applies), each by
/// its UUID: its name is the one its XML gives.
pub fn defined(except: &str) -> (Vec<Peer>, Vec<String>) {
    let virsh = Virsh::new(None);
    let mut notes = Vec::new();
    let uuids = match virsh.uuids(true) {
        Ok(uuids) => uuids,
        Err(e) => {
            notes.push(format!("other VMs not compared: {e}"));
            return (Vec::new(), notes);
        }
    };
    let mut peers = Vec::new();
    for uuid in uuids {
        let peer = virsh.dumpxml(&uuid).and_then(|xml| {
            let mut p = Peer::from_xml("", &xml)?;
            p.name = p.domain.name.clone();
            Ok(p)
        });
        match peer {
            Ok(p) if p.name == except => {}
            Ok(p) => peers.push(p),
            Err(e) => notes.push(format!("VM {uuid} not compared: {e}")),
        }
    }
    (peers, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RootFs;

    #[test]
    fn status_files_of_running_domains_are_read_and_bad_ones_noted() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join(LIBVIRT_RUN_DIR);
        std::fs::create_dir_all(run.join("channel")).unwrap();
        std::fs::write(
            run.join("web.xml"),
            "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.\n-->\n<domstatus state='running' pid='42'>\n  <domain type='kvm' id='7'><name>web</name><memory unit='GiB'>1</memory><vcpu cpuset='2-3'>2</vcpu></domain>\n</domstatus>\n",
        )
        .unwrap();
        std::fs::write(run.join("web.pid"), "42").unwrap();
        std::fs::write(
            run.join("me.xml"),
            "<domstatus><domain><name>me</name></domain></domstatus>",
        )
        .unwrap();
        std::fs::write(run.join("bad.xml"), "<domstatus>").unwrap();
        let (peers, notes) = running(&RootFs::new(dir.path()), "me");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].name, "web");
        assert!(peers[0].running);
        assert_eq!(peers[0].vcpu_cpus().to_string(), "2-3");
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("'bad'"), "{notes:?}");
    }

    #[test]
    fn no_libvirt_run_dir_means_no_peers() {
        let dir = tempfile::tempdir().unwrap();
        let (peers, notes) = running(&RootFs::new(dir.path()), "x");
        assert!(peers.is_empty() && notes.is_empty());
    }
}
