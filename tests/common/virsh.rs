//! A fake `virsh` on PATH: a shell script over a directory of domains, that looks a domain
//! argument up as the real one does (an id first, then a UUID, then a name), so that a test
//! can show kvmtune is not confused by a domain named like an id or like another's UUID. Every
//! call is appended to `virsh.log` beside it, one line of arguments each.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One defined domain.
pub struct Domain<'a> {
    /// `Some(id)` while it runs.
    pub id: Option<u32>,
    pub name: &'a str,
    pub uuid: String,
    pub xml: &'a str,
}

/// The `n`th test UUID.
pub fn uuid(n: u32) -> String {
    format!("0f0e0d0c-0000-4000-8000-{n:012x}")
}

const SCRIPT: &str = r#"#!/bin/sh
# fake virsh: list [--all] --uuid | domuuid [--domain] [--] D | domname [--domain] D |
# dumpxml [--domain] [--] D; D is looked up as an id, then a UUID, then a name.
PATH=/usr/bin:/bin
here=$(dirname "$0")
dir=$here/domains
printf '%s\n' "$*" >> "$here/virsh.log"
while :; do
  case "$1" in
    -q) shift ;;
    -c) shift 2 ;;
    *) break ;;
  esac
done
cmd=$1
shift
all=
arg=
while [ $# -gt 0 ]; do
  case "$1" in
    --all) all=1 ;;
    --uuid|--name) ;;
    --domain) shift; arg=$1 ;;
    --) shift; arg=$1; break ;;
    *) arg=$1 ;;
  esac
  shift
done
# lookup D [noname]: the domain's directory
lookup() {
  case "$1" in
    ''|*[!0-9]*) ;;
    *) for d in "$dir"/*; do
         [ -f "$d/id" ] && [ "$(cat "$d/id")" = "$1" ] && { echo "$d"; return 0; }
       done ;;
  esac
  case "$1" in
    *-*-*-*-*) [ -d "$dir/$1" ] && { echo "$dir/$1"; return 0; } ;;
  esac
  [ -n "$2" ] && return 1
  for d in "$dir"/*; do
    [ "$(cat "$d/name")" = "$1" ] && { echo "$d"; return 0; }
  done
  return 1
}
missing() { echo "error: failed to get domain '$arg'" >&2; exit 1; }
case "$cmd" in
  list)
    for d in "$dir"/*; do
      [ -d "$d" ] || continue
      { [ -n "$all" ] || [ -f "$d/id" ]; } && basename "$d"
    done
    echo ;;
  domuuid) d=$(lookup "$arg") || missing; basename "$d" ;;
  domname) d=$(lookup "$arg" noname) || missing; cat "$d/name"; echo ;;
  dumpxml) d=$(lookup "$arg") || missing; cat "$d/xml" ;;
  *) echo "error: unknown command '$cmd'" >&2; exit 1 ;;
esac
"#;

/// Put the fake `virsh` in `bin` (created), serving `domains`; returns its path.
pub fn install(bin: &Path, domains: &[Domain]) -> PathBuf {
    let dir = bin.join("domains");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for d in domains {
        let one = dir.join(&d.uuid);
        std::fs::create_dir(&one).unwrap();
        std::fs::write(one.join("name"), d.name).unwrap();
        std::fs::write(one.join("xml"), d.xml).unwrap();
        if let Some(id) = d.id {
            std::fs::write(one.join("id"), id.to_string()).unwrap();
        }
    }
    let path = bin.join("virsh");
    std::fs::write(&path, SCRIPT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The calls made so far, one string of arguments each.
pub fn calls(bin: &Path) -> Vec<String> {
    std::fs::read_to_string(bin.join("virsh.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
