//! The domain XML a command reads: `--xml FILE` (`-` for stdin) or, outside the hook,
//! libvirt's for the domain called NAME.

use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The XML from `--xml FILE` or, outside the hook, libvirt's for the domain called NAME.
pub(super) fn domain_xml(
    xml: Option<&Path>,
    name: Option<&str>,
) -> Result<(String, Option<String>)> {
    if let Some(path) = xml {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("read", "stdin", e))?;
            s
        } else {
            std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?
        };
        return Ok((text, name.map(str::to_string)));
    }
    let name = name.ok_or_else(|| Error::Usage("give a VM NAME or --xml FILE".into()))?;
    // By its UUID: a VM called `7` is not the running domain with id 7.
    let text = crate::host::virsh::Virsh::new(None)
        .domain_xml(name)
        .map_err(|e| match e {
            // A name libvirt does not know is the caller's mistake (exit 2).
            Error::Domain(m) => Error::Usage(m),
            other => other,
        })?;
    Ok((text, Some(name.to_string())))
}
