//! The advisor: `kvmtune check` judges a VM's design against this host (NUMA placement, pins
//! and SMT siblings, hugepages, memory, devices), `kvmtune suggest` writes the placement of a
//! VM that fits the host now, and the migration remap rewrites an incoming VM's pins with the
//! same fitting code. Nothing here changes the host.
//!
//! facts (host + other VMs, read once) → rules (pure) → findings
//!                                     → fit (pure) → suggest / remap / the rules' fixes

pub mod facts;
pub mod findings;
pub mod fit;
pub mod peers;
pub mod remap;
pub mod rules;
pub mod suggest;
pub mod xmledit;

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::host::HostFs;
use crate::policy::Policy;
pub use facts::{HostFacts, Peer};
pub use findings::{Finding, Report, Severity};

/// Judge one VM: every rule over its XML, the host and the other VMs.
pub fn check(
    vm: &str,
    text: &str,
    facts: &HostFacts,
    peers: &[Peer],
    notes: Vec<String>,
) -> Result<Report> {
    let (domain, design) = Domain::parse_with_design(text)?;
    let subject = rules::Subject::new(&domain, &design, facts, peers);
    Ok(Report::new(
        vm,
        facts.summary(),
        rules::check(&subject),
        notes,
    ))
}

/// `kvmtune check`: the report on stdout; an error-level finding makes the command fail.
pub fn run_check(
    fs: &dyn HostFs,
    policy: &Policy,
    text: &str,
    name: Option<&str>,
    json: bool,
) -> Result<()> {
    let (domain, _) = Domain::parse_with_design(text)?;
    let vm = name.unwrap_or(&domain.name).to_string();
    let facts = HostFacts::read(fs, policy, &domain.hostdevs)?;
    let (peers, notes) = peers::defined(&vm);
    let report = check(&vm, text, &facts, &peers, notes)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        print!("{}", report.render());
    }
    if report.has_errors() {
        return Err(Error::Refused(format!(
            "VM '{vm}': {} error-level finding(s)",
            report.errors
        )));
    }
    Ok(())
}

/// `kvmtune suggest`: the XML on stdout, or why nothing fits.
pub fn run_suggest(fs: &dyn HostFs, policy: &Policy, args: &suggest::SuggestArgs) -> Result<()> {
    let facts = HostFacts::read(fs, policy, &[])?;
    let (peers, notes) = peers::defined("");
    for note in notes {
        eprintln!("kvmtune: note: {note}");
    }
    print!("{}", suggest::suggest(args, &facts, &peers)?);
    Ok(())
}
