//! What `kvmtune status` shows of host knobs: KSM and THP as the kernel has them now, and every
//! knob kvmtune holds, with its VMs and the value that comes back.

use serde::Serialize;

use crate::error::Result;
use crate::host::knobs::{read_ksm, read_value, shown, KsmState, THP_DEFRAG, THP_ENABLED};
use crate::host::HostFs;
use crate::state::Ledger;

#[derive(Debug, Serialize)]
pub struct KnobsStatus {
    /// `None` on a kernel without KSM.
    pub ksm: Option<KsmState>,
    /// `None` on a kernel without transparent hugepages.
    pub thp: Option<ThpState>,
    /// The knobs kvmtune holds for running VMs.
    pub held: Vec<HeldKnob>,
}

#[derive(Debug, Serialize)]
pub struct ThpState {
    pub enabled: String,
    pub defrag: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HeldKnob {
    pub path: String,
    /// The value kvmtune holds it at.
    pub value: String,
    /// What the kernel shows now (differs when someone changed it since).
    pub now: Option<String>,
    /// The value that comes back when its last VM stops.
    pub restore: String,
    pub vms: Vec<String>,
}

pub fn gather(fs: &dyn HostFs, ledger: &Ledger) -> Result<KnobsStatus> {
    let thp = match read_value(fs, THP_ENABLED)? {
        Some(enabled) => Some(ThpState {
            enabled,
            defrag: read_value(fs, THP_DEFRAG)?,
        }),
        None => None,
    };
    let held = ledger
        .knobs
        .iter()
        .map(|(path, restore)| {
            let holders = ledger.knob_holders(path, "");
            HeldKnob {
                path: shown(path),
                value: holders.first().map(|(_, v)| v.clone()).unwrap_or_default(),
                now: read_value(fs, path).ok().flatten(),
                restore: restore.clone(),
                vms: holders.into_iter().map(|(name, _)| name).collect(),
            }
        })
        .collect();
    Ok(KnobsStatus {
        ksm: read_ksm(fs)?,
        thp,
        held,
    })
}

pub fn render(s: &KnobsStatus) -> String {
    let mut out = String::from("Host knobs:\n");
    if let Some(ksm) = &s.ksm {
        out.push_str(&format!(
            "  KSM: run {}, merge_across_nodes {}, {} page(s) shared, {} sharing\n",
            ksm.run,
            ksm.merge_across_nodes
                .as_deref()
                .unwrap_or("(none: no NUMA)"),
            ksm.pages_shared,
            ksm.pages_sharing
        ));
    }
    if let Some(thp) = &s.thp {
        out.push_str(&format!(
            "  THP: enabled {}, defrag {}\n",
            thp.enabled,
            thp.defrag.as_deref().unwrap_or("(none)")
        ));
    }
    if s.held.is_empty() {
        out.push_str("  none held by kvmtune\n");
    }
    for k in &s.held {
        let vms: Vec<String> = k.vms.iter().map(|v| format!("{v:?}")).collect();
        let drift = match &k.now {
            Some(now) if *now != k.value => {
                format!(" (now {now}: changed since; put back at the next VM event)")
            }
            None => " (the file is gone)".to_string(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {} = {} for VM {}, back to {} after{drift}\n",
            k.path,
            k.value,
            vms.join(", "),
            k.restore
        ));
    }
    out
}
