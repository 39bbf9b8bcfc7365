//! `kvmtune plan`: what `prepare` (and then `started`) would change for a VM on this host
//! now, worked out through `host::snapshot::Snapshot` (every write refused, no lock), and
//! its text.

use std::path::Path;

use crate::assemble::Roots;
use crate::change::Change;
use crate::domain::Domain;
use crate::error::Result;
use crate::host::irqbalance::IrqbalanceSocket;
use crate::host::snapshot::Snapshot;
use crate::host::systemctl::SystemctlCommand;
use crate::host::{HostFs, RootFs};
use crate::plan::changes::{preview, Preview};
use crate::privilege::Privilege;
use crate::size::page_size_name;
use crate::state::StateDir;

use super::xml::domain_xml;

/// Print the plan for the VM of `--xml FILE` or NAME, as text or JSON.
pub(super) fn plan(
    roots: &Roots,
    privilege: &Privilege,
    xml: Option<&Path>,
    name: Option<&str>,
    json: bool,
) -> Result<()> {
    let policy = roots.policy(privilege)?;
    let (text, vm) = domain_xml(xml, name)?;
    let domain = Domain::parse(&text)?;
    let vm = vm.unwrap_or_else(|| domain.name.clone());
    let ledger = match StateDir::peek(&roots.state_dir, privilege)? {
        Some(s) => s.load_ledger()?,
        None => Default::default(),
    };
    let (fs, irqbalance) = (RootFs::new(&roots.root), IrqbalanceSocket::new(&roots.root));
    let systemctl = SystemctlCommand;
    let snapshot = Snapshot::new(&fs, &systemctl, &irqbalance);
    let preview = preview(&snapshot.probe(), &policy, &domain, &vm, &ledger)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&preview).expect("plan serializes")
        );
    } else {
        print!("{}", render_plan(&preview, &snapshot));
    }
    Ok(())
}

/// `kvmtune plan` as text: the decisions, then every change of `prepare` and of `started`,
/// one a line, as their journals will record them.
fn render_plan(preview: &Preview, fs: &dyn HostFs) -> String {
    let plan = &preview.plan;
    let mut out = format!("VM {:?}:\n", plan.vm);
    if plan.hugepages.is_empty() {
        out.push_str("  hugepages: none reserved (not hugepage-backed, or reserve=off)\n");
    }
    for g in &plan.hugepages {
        out.push_str(&format!(
            "  hugepages: node {} {}: needs {} pages; {} free, {} promised to other VMs; grow by {}\n",
            g.pool.node,
            page_size_name(g.pool.page_kib),
            g.pages,
            g.before.free,
            g.promised,
            g.grow
        ));
    }
    if !plan.isolate.is_empty() {
        out.push_str(&format!(
            "  isolate: CPUs {}: host tasks move off them while the VM runs\n",
            plan.isolate
        ));
    }
    if let Some(irq) = plan.irq.as_ref().filter(|_| !plan.devices.is_empty()) {
        out.push_str(&format!(
            "  irq: IRQs of passthrough devices {} go to CPUs {irq} from started on\n",
            plan.devices
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for k in &plan.knobs {
        let now = crate::host::knobs::read_value(fs, &k.path)
            .ok()
            .flatten()
            .unwrap_or_default();
        out.push_str(&format!(
            "  knob: /{} = {} while the VM runs ({}; now {now})\n",
            k.path, k.value, k.why
        ));
    }
    if preview.releases_stale_hold {
        out.push_str("  note: the ledger still holds this VM from a run whose release never came; prepare gives that back first (not counted below)\n");
    }
    render_changes(
        &mut out,
        "prepare",
        "as its journal will record them",
        &preview.prepare,
    );
    render_changes(
        &mut out,
        "started",
        "once QEMU runs; its journal records them",
        &preview.started,
    );
    if !preview.prepare.is_empty() || !preview.started.is_empty() {
        // Said, not hidden: `tests/plan_journal.rs` shows each of these.
        out.push_str("  note: the journals differ from this only if the host changes first: a kernel thread born meanwhile is one more change (a new process is moved by the change shown), IRQ vectors a guest enables later are pinned when they appear, and an IRQ the kernel manages refuses to move (started tries it, then leaves it out)\n");
    }
    out
}

/// One operation's changes under a heading that counts them.
fn render_changes(out: &mut String, operation: &str, when: &str, changes: &[Change]) {
    match changes.len() {
        0 => out.push_str(&format!("  {operation}: no change\n")),
        1 => out.push_str(&format!("  {operation}: 1 change, {when}:\n")),
        n => out.push_str(&format!("  {operation}: {n} changes, {when}:\n")),
    }
    for c in changes {
        out.push_str(&format!("    change: {c}\n"));
    }
}
