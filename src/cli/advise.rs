//! `kvmtune check` and `kvmtune suggest`: the advisor's two commands, from their arguments
//! to `advisor::run_check`/`run_suggest`. Nothing here changes the host.

use std::path::Path;

use crate::advisor::suggest::{parse_page_size, SuggestArgs};
use crate::assemble::Roots;
use crate::error::{Error, Result};
use crate::host::RootFs;
use crate::privilege::Privilege;
use crate::size::parse_size;

use super::xml::domain_xml;

/// `kvmtune check`: judge the VM of `--xml FILE` or NAME against this host.
pub(super) fn check(
    roots: &Roots,
    privilege: &Privilege,
    xml: Option<&Path>,
    name: Option<&str>,
    json: bool,
) -> Result<()> {
    let policy = roots.policy(privilege)?;
    let (text, vm) = domain_xml(xml, name)?;
    crate::advisor::run_check(
        &RootFs::new(&roots.root),
        &policy,
        &text,
        vm.as_deref(),
        json,
    )
}

/// What `kvmtune suggest` was asked for, as the command line gave it.
pub(super) struct Asked<'a> {
    pub vcpus: u32,
    pub memory: &'a str,
    pub hugepages: Option<&'a str>,
    pub node: &'a str,
    pub isolate: bool,
}

/// `kvmtune suggest`: the placement XML of a VM of this size that fits this host now.
pub(super) fn suggest(roots: &Roots, privilege: &Privilege, asked: &Asked) -> Result<()> {
    let policy = roots.policy(privilege)?;
    let args = SuggestArgs {
        vcpus: asked.vcpus,
        memory_bytes: parse_size(asked.memory)
            .map_err(|e| Error::Usage(format!("--memory: {e}")))?,
        page_kib: asked.hugepages.map(parse_page_size).transpose()?,
        node: match asked.node {
            "auto" => None,
            n => Some(n.parse().map_err(|_| {
                Error::Usage(format!("--node {n:?}: expected auto or a node number"))
            })?),
        },
        isolate: asked.isolate,
    };
    crate::advisor::run_suggest(&RootFs::new(&roots.root), &policy, &args)
}
