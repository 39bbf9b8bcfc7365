#!/usr/bin/env bash
# The package tier: build the .deb and the .rpm (scripts/package.sh), check the .deb (its files,
# lintian, systemd-analyze verify on its units), install it with dpkg on this machine, run the
# libvirtd end-to-end tests against the installed package (not the build tree), upgrade it,
# purge it, and check that the machine is as it was.
#
#   tests/package/run.sh            # root; LT_ONLY=... narrows the libvirt tests run against it
#
# Holds the real-host lock (/run/lock/kvmtune-real-host.lock) from before dpkg installs until
# after it purges, and hands it down to the libvirt tier it runs. Refuses to run where kvmtune
# is installed already or something else sits at the package's paths: it never replaces them.
# Output: "PASS package/<name>" or "FAIL package/<name>: reason" per test, the libvirt tier's
# own lines, then "N passed, M failed" for this tier's own tests.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo" || exit 1
# shellcheck source=tests/libvirt/lib.sh
source "$repo/tests/libvirt/lib.sh"

PKG=kvmtune
# Two libvirt tests run against the package on this host: the installed hook's path to hugepages,
# and isolation and IRQs under the policy the package ships. The plain libvirt tier runs them
# all on the build, and the hypervisor tier runs the installed .deb under systemd through every
# scenario (a reconnect after a restart, metadata, status included); more here would repeat
# them at the cost of CI's time budget.
PKG_LT_ONLY=${LT_ONLY:-test_hugepage_vm test_isolated_vm_irqs}

PASSED=0
FAILED=0
pass() { echo "PASS package/$1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL package/$1: $2"; FAILED=$((FAILED + 1)); }
info() { echo "  info package/$1: $2"; }
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
  exit
}

[ "$(id -u)" = 0 ] || { fail setup "needs root (dpkg, libvirtd)"; finish; }
WORK=$(mktemp -d /tmp/kvmtune-package.XXXXXX)
trap 'rm -rf "$WORK"' EXIT   # until the host is touched; then cleanup() below

# ---- build -------------------------------------------------------------------------------------

T0=$(date +%s)
if ! scripts/package.sh >"$WORK/build.out" 2>"$WORK/build.err"; then
  fail build "scripts/package.sh failed: $(tail -5 "$WORK/build.err" | tr '\n' ' ')"
  finish
fi
DEB=$(grep '\.deb$' "$WORK/build.out" | tail -1)
RPM=$(grep '\.rpm$' "$WORK/build.out" | tail -1)
VERSION=$(dpkg-deb -f "$DEB" Version)
info build "$DEB, $RPM in $(($(date +%s) - T0)) s"

# ---- what the .deb holds -------------------------------------------------------------------------

# The .deb's files, unpacked, and one line per file or symlink: "TYPE /PATH[ -> TARGET]", the
# target as an absolute path (e.g. "l /etc/libvirt/hooks/qemu.d/kvmtune -> /usr/sbin/kvmtune").
DATA=$WORK/data
dpkg-deb -x "$DEB" "$DATA"
(cd "$DATA" && find . ! -type d | sort) | while read -r f; do
  p=${f#.}
  if [ -L "$DATA$p" ]; then
    echo "l $p -> $(lt_link_target "$DATA$p" | sed "s|^$DATA||")"
  else
    echo "- $p"
  fi
done >"$WORK/contents"
ls_contents() { tr '\n' ';' <"$WORK/contents"; }

test_deb_contents() {
  local t=deb-contents want missing=() p
  want=(
    "- /usr/sbin/kvmtune"
    "l /etc/libvirt/hooks/qemu.d/kvmtune -> /usr/sbin/kvmtune"
    "l /usr/libexec/kvmtune/qemu-system-x86_64 -> /usr/sbin/kvmtune"
    "- /etc/kvmtune/kvmtune.toml"
    "- /usr/lib/systemd/system/kvmtune-recover.service"
    "- /usr/lib/systemd/system/kvmtune-watch.service"
    "- /usr/lib/systemd/system/kvmtune-balance.service"
    "- /usr/share/man/man8/kvmtune.8.gz"
    "- /usr/share/man/man5/kvmtune.toml.5.gz"
    "- /usr/share/bash-completion/completions/kvmtune"
    "- /usr/share/zsh/vendor-completions/_kvmtune"
    "- /usr/share/fish/vendor_completions.d/kvmtune.fish"
    "- /usr/share/doc/kvmtune/changelog.gz"
    "- /usr/share/doc/kvmtune/changelog.Debian.gz"
    "- /usr/share/doc/kvmtune/copyright"
    "- /usr/share/lintian/overrides/kvmtune"
  )
  for p in "${want[@]}"; do grep -qxF -- "$p" "$WORK/contents" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    fail $t "missing from the .deb: $(printf '%s; ' "${missing[@]}")[it holds: $(ls_contents)]"
  elif grep -q '^. /etc/libvirt/hooks/qemu$' "$WORK/contents"; then
    fail $t "the .deb ships /etc/libvirt/hooks/qemu, which is the administrator's"
  elif [ "$(stat -c %A "$DATA/usr/sbin/kvmtune")" != -rwxr-xr-x ]; then
    fail $t "/usr/sbin/kvmtune is not -rwxr-xr-x: $(ls -l "$DATA/usr/sbin/kvmtune")"
  else
    pass $t
  fi
}

test_deb_control() {
  local t=deb-control conffiles scripts s
  dpkg-deb -e "$DEB" "$WORK/control"
  conffiles=$(cat "$WORK/control/conffiles" 2>/dev/null)
  scripts=$(cd "$WORK/control" && ls)
  if [ "$conffiles" != /etc/kvmtune/kvmtune.toml ]; then
    fail $t "conffiles should be exactly /etc/kvmtune/kvmtune.toml, is: $(echo "$conffiles" | tr '\n' ' ')"
    return
  fi
  for s in postinst prerm postrm; do
    if ! cmp -s "$WORK/control/$s" "pkg/debian/$s"; then
      fail $t "the .deb's $s is not pkg/debian/$s (control files: $(echo "$scripts" | tr '\n' ' '))"
      return
    fi
  done
  if ! cmp -s "$DATA/etc/kvmtune/kvmtune.toml" conf/kvmtune.toml; then
    fail $t "the .deb's /etc/kvmtune/kvmtune.toml differs from conf/kvmtune.toml"
  else
    pass $t
  fi
}

# The man pages are roff made from man/*.md, and say what their markdown says.
test_man_pages() {
  local t=man-pages page name out
  local title section
  for page in man/*.md; do
    name=$(basename "$page" .md)
    # The markdown's title line: "% KVMTUNE(8) kvmtune 0.1.0".
    title=$(head -1 "$page" | awk '{print $2}')
    section=${title#*(}
    section=${section%)}
    title=${title%%(*}
    out=$(gzip -dc "$DATA/usr/share/man/man$section/$name.gz")
    if ! grep -q "^\.TH \"$title\" \"$section\"" <<<"$out"; then
      fail $t "$name.gz has no '.TH \"$title\" \"$section\"' line: $(grep -m1 '^\.TH' <<<"$out")"
      return
    elif ! grep -q '^\.SH NAME' <<<"$out"; then
      fail $t "$name.gz has no NAME section"
      return
    fi
  done
  # A command every page must name: each subcommand of the CLI is in kvmtune(8).
  out=$(gzip -dc "$DATA/usr/share/man/man8/kvmtune.8.gz")
  for name in status plan recover watch; do
    grep -q -- "$name" <<<"$out" || { fail $t "kvmtune.8 does not mention '$name'"; return; }
  done
  pass $t
}

# Completions come from the CLI's definition: every subcommand is offered, in every shell.
test_completions() {
  local t=completions f sub
  for f in /usr/share/bash-completion/completions/kvmtune /usr/share/zsh/vendor-completions/_kvmtune \
    /usr/share/fish/vendor_completions.d/kvmtune.fish; do
    for sub in status plan recover watch hook; do
      grep -q -- "$sub" "$DATA$f" 2>/dev/null || { fail $t "$f does not offer '$sub'"; return; }
    done
  done
  bash -n "$DATA/usr/share/bash-completion/completions/kvmtune" || { fail $t "the bash completion is not valid bash"; return; }
  pass $t
}

# apt-get install PACKAGE when COMMAND is missing (updating apt's lists once if needed).
need_command() {  # COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1; }
  command -v "$1" >/dev/null
}

# lintian, Debian's package checker, has no error and no warning about the .deb. What it reports
# wrongly for this package is overridden in the package (pkg/debian/kvmtune.lintian-overrides),
# each override with its reason.
test_lintian() {
  local t=lintian out rc
  need_command lintian lintian || { fail $t "lintian is missing and apt-get could not install it"; return; }
  # (On stderr lintian says that it runs as root; not a finding.)
  out=$(lintian --fail-on error,warning "$DEB" 2>"$WORK/lintian.err")
  rc=$?
  if [ $rc != 0 ] || grep -q '^[EW]: ' <<<"$out"; then
    fail $t "$(lintian --version) exited $rc: $(grep '^[EW]: ' <<<"$out" | paste -sd';') $(grep -v 'root privileges' "$WORK/lintian.err" | paste -sd' ')"
  else
    info $t "$(lintian --version): no error or warning"
    pass $t
  fi
}

# Every unit in pkg/systemd/, as the .deb ships it, passes `systemd-analyze verify` with nothing
# to say (it exits 0 after warnings such as an unknown key: any line it prints fails the test).
# It runs on the .deb's tree with this host's units beside ours (for the targets they name), so
# that ExecStart= is checked against the packaged /usr/sbin/kvmtune and Documentation= against
# the packaged man pages (systemd-analyze asks man(1), which searches MANPATH).
test_systemd_units() {
  local t=systemd-units root=$WORK/unit-root units=() u unit out rc man=--man=yes
  need_command systemd-analyze systemd || { fail $t "systemd-analyze is missing and apt-get could not install systemd"; return; }
  dpkg-deb -x "$DEB" "$root"
  # -n: the units of the .deb stay, the host's are added around them.
  cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
  for u in pkg/systemd/*; do
    unit=$root/usr/lib/systemd/system/$(basename "$u")
    if ! cmp -s "$u" "$unit"; then
      fail $t "the .deb's /usr/lib/systemd/system/$(basename "$u") is missing or is not $u"
      return
    fi
    units+=("$unit")
  done
  if ! command -v man >/dev/null; then
    man=--man=no
    info $t "no man(1) here: Documentation= not checked (man-pages checks the pages themselves)"
  fi
  out=$(MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" "$man" "${units[@]}" 2>&1)
  rc=$?
  if [ $rc != 0 ] || [ -n "$out" ]; then
    fail $t "systemd-analyze verify exited $rc: $(echo "$out" | sed "s|$root||g" | paste -sd';')"
  else
    info $t "$(systemd-analyze --version | head -1): ${#units[@]} units verified"
    pass $t
  fi
  rm -rf "$root"
}

# The .rpm: built from the same metadata; inspected with rpm when the machine has it (Debian
# cannot install it, so its scriptlets are only checked to be the ones in pkg/rpm/).
test_rpm() {
  local t=rpm files want p missing=()
  [ -f "$RPM" ] || { fail $t "no .rpm was built (scripts/package.sh printed: $(tr '\n' ' ' <"$WORK/build.out"))"; return; }
  if ! command -v rpm >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends rpm >/dev/null 2>&1 \
      || { info $t "rpm is not installable here: built, not inspected"; pass $t; return; }
  fi
  files=$(rpm -qlp "$RPM" 2>/dev/null)
  want=(/usr/sbin/kvmtune /etc/kvmtune/kvmtune.toml /usr/lib/systemd/system/kvmtune-recover.service
    /usr/lib/systemd/system/kvmtune-watch.service /usr/lib/systemd/system/kvmtune-balance.service
    /usr/share/man/man8/kvmtune.8.gz
    /usr/share/man/man5/kvmtune.toml.5.gz /usr/share/bash-completion/completions/kvmtune)
  for p in "${want[@]}"; do grep -qxF "$p" <<<"$files" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    fail $t "missing from the .rpm: ${missing[*]} [rpm -qlp: $(echo "$files" | tr '\n' ' ')]"
  elif [ "$(rpm -qp --configfiles "$RPM" 2>/dev/null)" != /etc/kvmtune/kvmtune.toml ]; then
    fail $t "the .rpm's config files are not exactly /etc/kvmtune/kvmtune.toml: $(rpm -qp --configfiles "$RPM" 2>&1 | tr '\n' ' ')"
  elif ! rpm -qp --scripts "$RPM" 2>/dev/null | grep -qF 'kvmtune: not erasing'; then
    fail $t "the .rpm's scriptlets are not pkg/rpm/*.sh: $(rpm -qp --scripts "$RPM" 2>&1 | head -5 | tr '\n' ' ')"
  else
    info $t "$(echo "$files" | wc -l) files, $(du -k "$RPM" | cut -f1) KiB"
    pass $t
  fi
}

test_deb_contents
test_deb_control
test_man_pages
test_completions
test_lintian
test_systemd_units
test_rpm

# ---- the machine, before -------------------------------------------------------------------------

# Everything installing the package may touch: each path the .deb holds and the directories
# around them, systemd's enablement links and deb-systemd-helper's records,
# and dpkg's own view of the package. (kvmtune's state, /run/kvmtune, must be gone after purge.)
snapshot() {  # FILE
  local p
  {
    while read -r _ p _; do
      if [ -e "$p" ] || [ -L "$p" ]; then
        echo "$p $(stat -c '%F %a %U:%G' "$p") $(readlink "$p") $( [ -L "$p" ] || [ ! -f "$p" ] || md5sum <"$p" | cut -c1-32)"
      else
        echo "$p absent"
      fi
    done <"$WORK/contents"
    find /etc/libvirt/hooks /etc/kvmtune /usr/libexec/kvmtune /usr/share/doc/kvmtune /etc/systemd/system \
      /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
      -printf '%p %y %m %l\n' 2>/dev/null | sort
    echo "dpkg: $(dpkg-query -W -f='${Status} ${Version}' "$PKG" 2>&1)"
    ls /var/lib/dpkg/info/"$PKG".* 2>/dev/null
  } >"$1"
}

# One user of the real host at a time, from before dpkg until after the purge; lt_setup here
# and the libvirt tier below take the same lock through this descriptor.
exec {PKG_LOCK_FD}>"${LT_HOST_LOCK:-/run/lock/kvmtune-real-host.lock}"
T_WAIT=$(date +%s)
flock "$PKG_LOCK_FD"
T_WAIT=$(($(date +%s) - T_WAIT))
[ "$T_WAIT" = 0 ] || info lock "waited $T_WAIT s for the real-host lock"
export LT_HOST_LOCK_FD=$PKG_LOCK_FD

# Refuse to run where the package or anything at its paths exists: we would replace or remove it.
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'installed\|config-files\|unpacked'; then
  fail preflight "$PKG is installed on this machine ($(dpkg-query -W -f='${Status} ${Version}' "$PKG")): this tier installs and purges it; 'dpkg --purge $PKG' first"
  finish
fi
while read -r _ p _; do
  if [ -e "$p" ] || [ -L "$p" ]; then
    fail preflight "$p exists and is not from the package: this tier would replace it"
    finish
  fi
done <"$WORK/contents"
# kvmtune's state belongs to the package once it is installed, and purge removes it: a state
# directory that holds something for a VM is someone's kvmtune at work.
if [ -e "$LT_STATE_DIR" ] && ! target/release/kvmtune --state-dir "$LT_STATE_DIR" status 2>/dev/null \
  | sed -n '/^VMs:$/{n;p;}' | grep -qx '  none'; then
  fail preflight "$LT_STATE_DIR holds state for VMs (another kvmtune is in use here): purging the package would remove it"
  finish
fi

snapshot "$WORK/before"

# One run of dpkg ARGS…, its output and status in DPKG_OUT and DPKG_RC; false when dpkg could
# not take its lock (apt or another dpkg runs). (Run through lt_wait_until.)
# shellcheck disable=SC2317
dpkg_try() {
  DPKG_OUT=$(dpkg "$@" </dev/null 2>&1)
  DPKG_RC=$?
  ! grep -q 'dpkg frontend lock\|dpkg status database is locked' <<<"$DPKG_OUT"
}
# dpkg ARGS…: dpkg, run again while its lock is taken, for up to 5 minutes (then its output
# ends with a line that says so).
dpkg_() {
  lt_wait_until 300 dpkg_try "$@" || DPKG_OUT+=$'\n'"package/run.sh: dpkg's lock was still taken after 5 minutes"
  printf '%s\n' "$DPKG_OUT"
  return "$DPKG_RC"
}

INSTALLED_BY_US=0
# Whatever happens, a package this run installed does not outlive it. (Run by the EXIT trap.)
# shellcheck disable=SC2317
cleanup() {
  lt_teardown
  if [ "$INSTALLED_BY_US" = 1 ] && dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q installed; then
    echo "  info package/cleanup: purging $PKG left installed by a failed step" >&2
    dpkg --purge "$PKG" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}

# ---- install while libvirtd runs: a reload makes it see the hook, running VMs stay --------------

PAGE_KB=$(awk '/^Hugepagesize:/{print $2}' /proc/meminfo)
pool() { lt_pool 0 "$PAGE_KB" "${1:-nr_hugepages}"; }
qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }
# True when `kvmtune status` lists VM NAME as holding something (kvmtune's prepare ran for it).
held_by_kvmtune() { "$LT_PACKAGE_BIN" status 2>/dev/null | grep -qxF "  \"$1\" (running)"; }

# How many times libvirtd found a QEMU hook (its own hook or one in qemu.d/), from the debug
# log lt_start_libvirtd has it write: one line each time it looks for hooks (when it starts
# and on each SIGHUP) and finds one.
qemu_hook_scans() {
  local n
  n=$(grep -c 'Found hook script /etc/libvirt/hooks/qemu' "$LT_LOG_DIR/libvirtd-debug.log" 2>/dev/null)
  echo "${n:-0}"
}
# True once libvirtd found a QEMU hook more often than N times. (Run through lt_wait_until.)
# shellcheck disable=SC2317
qemu_hook_rescanned() { [ "$(qemu_hook_scans)" -gt "$1" ]; }

# Other QEMU hooks make libvirtd read qemu.d/ on every call: then it needs no reload to find ours.
other_hooks() {
  [ -x /etc/libvirt/hooks/qemu ] && echo /etc/libvirt/hooks/qemu
  find /etc/libvirt/hooks/qemu.d -mindepth 1 -maxdepth 1 -perm -u+x 2>/dev/null
}

export LT_INSTALLED=1
LT_SKIP_DEPS=${LT_SKIP_DEPS:-0} lt_setup "$LT_PACKAGE_BIN"
trap cleanup EXIT
LT_SKIP_DEPS=1   # tests/deps.sh ran in lt_setup

test_install_reload() {
  local t=install-while-libvirtd-runs a=${LT_DOMAIN_PREFIX}pkg-a b=${LT_DOMAIN_PREFIX}pkg-b
  local lpid apid out rc need nr0 free0 grow nr1 others before scans
  lpid=$(lt_our_libvirtd)
  [ -n "$lpid" ] || { fail $t "libvirtd was not started by this run"; return 1; }
  others=$(other_hooks)
  printf '%s\n' "$(lt_domain_xml "$a" 6b0c7a52-0000-4000-8000-0000000000a1 128 none)" >"$WORK/a.xml"
  printf '%s\n' "$(lt_domain_xml "$b" 6b0c7a52-0000-4000-8000-0000000000a2 128 hugepages)" >"$WORK/b.xml"
  if ! lt_define "$a" "$WORK/a.xml" || ! lt_define "$b" "$WORK/b.xml"; then
    fail $t "virsh define failed"
    return 1
  fi
  out=$(virsh_ start "$a" 2>&1) || { fail $t "virsh start $a (before install) failed: $out"; return 1; }
  apid=$(qemu_pid "$a")
  need=$((128 * 1024 / PAGE_KB))

  INSTALLED_BY_US=1
  out=$(dpkg_ -i "$DEB")
  rc=$?
  info $t "dpkg -i said: $(echo "$out" | grep -v '^(Reading\|^Selecting\|^Preparing\|^Unpacking\|^Setting up\|^Processing' | tr '\n' '|')"
  if [ $rc != 0 ]; then
    fail $t "dpkg -i $DEB exited $rc: $(echo "$out" | tr '\n' ' ')"
    return 1
  fi
  if [ -d /run/systemd/system ]; then
    grep -q "reloaded libvirtd.service" <<<"$out" || { fail $t "postinst did not reload libvirtd.service: $(echo "$out" | tr '\n' ' ')"; return 1; }
  elif ! grep -qF "libvirtd (pid $lpid)" <<<"$out" || ! grep -qF "kill -HUP $lpid" <<<"$out"; then
    fail $t "without systemd, postinst should tell to run 'kill -HUP $lpid' for libvirtd (pid $lpid): $(echo "$out" | tr '\n' ' ')"
    return 1
  fi

  # Before the reload: a daemon that found no QEMU hook when it started does not look again
  # (libvirt caches whether any exists), so nothing reserves the hugepage VM's pages and QEMU
  # cannot start it. Recorded, not asserted: it is libvirt's behaviour, not the package's.
  if out=$(virsh_ start "$b" 2>&1); then
    if held_by_kvmtune "$b"; then before="started, kvmtune ran"; else before="started without kvmtune"; fi
    virsh_ destroy "$b" >/dev/null 2>&1
  else
    before="virsh start failed: $(echo "$out" | grep -o 'kvmtune: .*\|[^:]*memory[^:]*' | head -1)"
  fi
  [ -z "$others" ] || before="$before; other hooks present: $(echo "$others" | paste -sd' ')"

  if [ ! -d /run/systemd/system ]; then
    # libvirtd looks for hooks again in a thread its SIGHUP handler starts, some time after the
    # signal: the VM that needs the hook is started once its debug log shows that new look.
    scans=$(qemu_hook_scans)
    kill -HUP "$lpid"   # what postinst told the admin to do
    if ! lt_wait_until 30 qemu_hook_rescanned "$scans"; then
      fail $t "libvirtd (pid $lpid) did not find a QEMU hook within 30 s of SIGHUP (no new 'Found hook script /etc/libvirt/hooks/qemu...' in $LT_LOG_DIR/libvirtd-debug.log; the hook: $(ls -l "$LT_HOOK" 2>&1))"
      return 1
    fi
    lt_libvirt_answers || { fail $t "libvirtd does not answer after SIGHUP"; return 1; }
  fi
  nr0=$(pool) free0=$(pool free_hugepages)
  grow=$((need > free0 ? need - free0 : 0))
  out=$(virsh_ start "$b" 2>&1) || { fail $t "virsh start $b (after the reload) failed: $out"; return 1; }
  nr1=$(pool)
  if [ "$(lt_our_libvirtd)" != "$lpid" ]; then
    fail $t "libvirtd's pid changed from $lpid to $(lt_our_libvirtd): it was restarted, not reloaded"
  elif [ "$(lt_domain_state "$a")" != running ] || [ "$(qemu_pid "$a")" != "$apid" ]; then
    fail $t "$a (QEMU pid $apid before the install) is '$(lt_domain_state "$a")' with QEMU pid $(qemu_pid "$a") after the install and reload"
  elif ! held_by_kvmtune "$b"; then
    fail $t "after the reload, libvirtd started $b without kvmtune: 'kvmtune status' does not list it$(c=$(lt_hook_calls "$b"); [ -z "$c" ] || echo " [hook calls: $c]")"
  elif [ "$nr1" != $((nr0 + grow)) ]; then
    fail $t "after the reload, node0's pool is $nr1 while $b runs, expected $((nr0 + grow)) ($nr0 + what the $free0 free pages did not cover of $need)"
  else
    info $t "before the reload: $before; after: kvmtune ran, node0 pool $nr0 -> $nr1; $a kept QEMU pid $apid"
    pass $t
    return 0
  fi
  return 1
}

# While kvmtune holds pages for a running VM, removing the package is refused: nothing would
# give them back when the VM stops.
test_remove_refused() {
  local t=remove-refused-while-vm-holds b=${LT_DOMAIN_PREFIX}pkg-b out rc
  out=$(dpkg_ -r "$PKG")
  rc=$?
  if [ $rc = 0 ]; then
    fail $t "dpkg -r succeeded while $b runs with pages kvmtune reserved"
    INSTALLED_BY_US=0
  elif ! grep -qF "$b" <<<"$out" || ! grep -q 'kvmtune: not removing' <<<"$out"; then
    fail $t "prerm's refusal does not say why and name $b: $(echo "$out" | tr '\n' ' ')"
  elif [ "$(dpkg-query -W -f='${db:Status-Status}' "$PKG")" != installed ] || ! lt_hook_is_package; then
    fail $t "after the refused removal: dpkg says '$(dpkg-query -W -f='${Status}' "$PKG")', hook: $(ls -l "$LT_HOOK" 2>&1)"
  else
    pass $t
  fi
  virsh_ destroy "$b" >/dev/null 2>&1
  lt_destroy_quiet "${LT_DOMAIN_PREFIX}pkg-a"
}

# The installed binary, run as libvirt runs it (argv[0] the hook's path), logs its failure to
# the syslog socket under its root (facility daemon, ident kvmtune): a socket this test owns.
test_syslog() {
  local t=syslog-from-installed-hook root=$WORK/root out rc msg
  command -v python3 >/dev/null || { echo "SKIP package/$t: needs python3 for the socket"; return; }
  mkdir -p "$root/dev" "$root/state"
  chmod 0700 "$root/state"
  printf '[cpus]\nno_such_key = 1\n' >"$root/bad.toml"
  lt_domain_xml pkg-syslog 6b0c7a52-0000-4000-8000-0000000000a3 128 none >"$root/domain.xml"
  python3 - "$root/dev/log" >"$WORK/syslog.msg" 2>"$WORK/syslog.err" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(10)
print(s.recv(4096).decode(errors="replace"), flush=True)
PY
  local listener=$!
  for _ in $(seq 1 50); do [ -S "$root/dev/log" ] && break; sleep 0.1; done
  out=$(env -i PATH=/usr/sbin:/usr/bin:/bin KVMTUNE_ROOT="$root" KVMTUNE_STATE_DIR="$root/state" \
    KVMTUNE_CONFIG="$root/bad.toml" "$LT_HOOK" pkg-syslog prepare begin - <"$root/domain.xml" 2>&1)
  rc=$?
  wait "$listener"
  msg=$(cat "$WORK/syslog.msg")
  if [ "$rc" != 2 ]; then
    fail $t "$LT_HOOK with a bad policy exited $rc, not 2: $out"
  elif [[ $msg != "<27>"* ]] || ! grep -q 'kvmtune' <<<"$msg" || ! grep -q 'pkg-syslog' <<<"$msg" \
    || ! grep -q 'no_such_key' <<<"$msg"; then
    fail $t "the socket got '$msg' (want <27>, facility daemon/err, ident kvmtune, the VM and the bad key)$(tr '\n' ' ' <"$WORK/syslog.err")"
  else
    pass $t
  fi
}

test_installed_files() {
  local t=installed-files v
  v=$("$LT_PACKAGE_BIN" --version 2>&1)
  if [ "$v" != "kvmtune ${VERSION%%-*}" ]; then
    fail $t "/usr/sbin/kvmtune --version says '$v', package $VERSION"
  elif [ "$(readlink "$LT_HOOK")" != "$LT_PACKAGE_BIN" ]; then
    # Absolute (policy 10.5: a link from /etc to /usr), so it stays right wherever it is read.
    fail $t "the hook should be an absolute symlink to $LT_PACKAGE_BIN: $(ls -l "$LT_HOOK" 2>&1)"
  elif [ "$(dpkg-query -S "$LT_HOOK" 2>&1)" != "$PKG: $LT_HOOK" ]; then
    fail $t "dpkg does not say that $PKG owns the hook: dpkg -S $LT_HOOK says '$(dpkg-query -S "$LT_HOOK" 2>&1)'"
  elif [ "$(lt_link_target /usr/libexec/kvmtune/qemu-system-x86_64)" != "$LT_PACKAGE_BIN" ] \
    || [ ! -x /usr/libexec/kvmtune/qemu-system-x86_64 ]; then
    fail $t "/usr/libexec/kvmtune/qemu-system-x86_64: $(ls -l /usr/libexec/kvmtune/qemu-system-x86_64 2>&1)"
  elif ! cmp -s /etc/kvmtune/kvmtune.toml conf/kvmtune.toml; then
    fail $t "/etc/kvmtune/kvmtune.toml is not conf/kvmtune.toml"
  elif ! "$LT_PACKAGE_BIN" status >"$WORK/status" 2>&1; then
    fail $t "kvmtune status under the shipped policy failed: $(tr '\n' ' ' <"$WORK/status")"
  else
    pass $t
  fi
}

if test_install_reload; then
  test_remove_refused
fi
test_installed_files
test_syslog
lt_teardown   # our libvirtd stops; the libvirt tier starts its own, with the hook in place

# ---- the libvirt tier, against the installed package -------------------------------------------

if lt_hook_is_package; then
  T1=$(date +%s)
  LT_ONLY=$PKG_LT_ONLY LT_SKIP_DEPS=1 "$repo/tests/libvirt/run.sh"
  rc=$?
  info libvirt "LT_INSTALLED=1 LT_ONLY='$PKG_LT_ONLY' tests/libvirt/run.sh: exit $rc in $(($(date +%s) - T1)) s"
  [ $rc = 0 ] || fail libvirt-against-package "the libvirt tier failed against the installed package (its lines above)"
else
  fail libvirt-against-package "the package's hook is not in place: $(ls -l "$LT_HOOK" 2>&1)"
fi

# ---- upgrade: the admin's policy stays ------------------------------------------------------------

test_upgrade() {
  local t=upgrade next=${VERSION}+pkgtest out rc NEXT_DEB
  # cargo-deb clears target/debian of other packages: the one built above is put back after.
  cp "$DEB" "$WORK/"
  if ! NEXT_DEB=$(scripts/package.sh --no-build --deb-only --deb-version "$next" 2>"$WORK/next.err" | tail -1) \
    || [ ! -f "$NEXT_DEB" ]; then
    fail $t "could not build the $next package: $(tr '\n' ' ' <"$WORK/next.err")"
    return
  fi
  mv "$NEXT_DEB" "$WORK/"
  NEXT_DEB=$WORK/$(basename "$NEXT_DEB")
  cp "$WORK/$(basename "$DEB")" "$DEB"
  echo '# an edit by the administrator' >>/etc/kvmtune/kvmtune.toml
  cp /etc/kvmtune/kvmtune.toml "$WORK/edited.toml"
  out=$(dpkg_ -i "$NEXT_DEB")
  rc=$?
  if [ $rc != 0 ]; then
    fail $t "dpkg -i of $next over $VERSION exited $rc: $(echo "$out" | tr '\n' ' ')"
  elif [ "$(dpkg-query -W -f='${Version}' "$PKG")" != "$next" ]; then
    fail $t "after the upgrade dpkg has version $(dpkg-query -W -f='${Version}' "$PKG"), not $next"
  elif ! cmp -s /etc/kvmtune/kvmtune.toml "$WORK/edited.toml"; then
    fail $t "the upgrade changed the administrator's /etc/kvmtune/kvmtune.toml"
  elif ls /etc/kvmtune/*.dpkg-* >/dev/null 2>&1; then
    fail $t "the upgrade left $(ls /etc/kvmtune/*.dpkg-*) (the package's policy did not change)"
  elif ! lt_hook_is_package; then
    fail $t "after the upgrade the hook is $(ls -l "$LT_HOOK" 2>&1)"
  else
    pass $t
  fi
}
test_upgrade

# ---- purge: the machine as before ----------------------------------------------------------------

# Purge removes the package's files, its policy (edited or not) and kvmtune's state, and leaves
# what the administrator added: a file of theirs in /etc/kvmtune stays (this test then removes
# it, and the directory when it made it, before comparing the machine with how it was).
test_purge() {
  local t=purge out rc notes=/etc/kvmtune/site-notes etc_existed=0 kept
  grep -qx '/etc/kvmtune d .*' "$WORK/before" && etc_existed=1
  echo "the administrator's own file" >"$notes"
  # kvmtune's state, as any use of the installed binary leaves it (the libvirt tests' teardown
  # removed theirs): purge must take it away.
  "$LT_PACKAGE_BIN" recover --all >/dev/null 2>&1
  [ -d "$LT_STATE_DIR" ] || info $t "$LT_STATE_DIR was not there to purge"
  out=$(dpkg_ --purge "$PKG")
  rc=$?
  kept=$(cat "$notes" 2>/dev/null)
  rm -f "$notes"
  [ "$etc_existed" = 1 ] || rmdir /etc/kvmtune 2>/dev/null
  snapshot "$WORK/after"
  if [ $rc != 0 ]; then
    fail $t "dpkg --purge exited $rc: $(echo "$out" | tr '\n' ' ')"
  elif [ "$kept" != "the administrator's own file" ]; then
    fail $t "the purge removed or changed $notes, which the administrator added"
  elif [ -e "$LT_STATE_DIR" ]; then
    fail $t "$LT_STATE_DIR is still there after the purge: $(find "$LT_STATE_DIR" -mindepth 1 | tr '\n' ' ')"
  elif ! cmp -s "$WORK/before" "$WORK/after"; then
    fail $t "the machine differs from before the install (before/after): $(diff "$WORK/before" "$WORK/after" | grep '^[<>]' | head -12 | tr '\n' ';')"
  else
    INSTALLED_BY_US=0
    info $t "$(wc -l <"$WORK/before") paths and records compared"
    pass $t
  fi
}
test_purge

info total "$(($(date +%s) - T0 - T_WAIT)) s, not counting the wait for the lock"
finish
