#!/usr/bin/env bash
# Unpacks Debian's systemd-resolved (and libnss-resolve, its NSS module) into
# <repo>/.cache/systemd-resolved for the end-to-end test of the stub link
# (tests/e2e/bpf_resolved.rs), WITHOUT installing them: the package enables its service and
# points /etc/resolv.conf at 127.0.0.53 on install, which would change this host's resolver. The test runs the unpacked binary in a network and mount namespace of its own.
# The version is the one of the installed libsystemd-shared (the binary links its private
# libsystemd-shared-<major>.so, which must be the same build). Idempotent: a stamp names the
# version unpacked. Called by scripts/setup-debian.sh --test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/systemd-resolved"
version=$(dpkg-query -W -f='${Version}' libsystemd-shared 2>/dev/null || true)
if [ -z "$version" ]; then
  echo "error: libsystemd-shared is not installed (systemd-resolved links against it)" >&2
  echo "hint: apt-get install systemd (scripts/setup-debian.sh --test installs it)" >&2
  exit 1
fi
if [ "$(cat "$dest/.version" 2>/dev/null)" = "$version" ] && [ -x "$dest/lib/systemd/systemd-resolved" ] \
  && [ -e "$dest/usr/lib/x86_64-linux-gnu/libnss_resolve.so.2" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt's download user (_apt) must be able to write the directory it downloads into.
chmod 0755 "$work"
chown _apt "$work" 2>/dev/null || true
if ! (cd "$work" && apt-get download -q "systemd-resolved=$version" "libnss-resolve=$version" >&2); then
  echo "error: cannot download systemd-resolved and libnss-resolve $version (the version of libsystemd-shared)" >&2
  echo "hint: apt-get update; if the archive has a newer point release, upgrade systemd and libsystemd-shared to it first" >&2
  exit 1
fi
rm -rf "$dest"
mkdir -p "$dest"
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$dest"
done
echo "$version" > "$dest/.version"
echo "systemd-resolved and libnss-resolve $version unpacked in $dest (not installed)" >&2
