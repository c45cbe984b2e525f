#!/usr/bin/env bash
# Installs the Debian 12 packages dnsledger needs to build, record and run its tests.
# Idempotent: packages already present are left alone.
set -euo pipefail

packages=(
  # build: libbpf-sys builds libbpf (needs libelf, zlib), clang compiles the BPF C
  gcc libc6-dev make pkg-config libelf-dev zlib1g-dev clang
  # inspection and the SIGKILL test
  bpftool
  # end-to-end tests: real DNS servers and clients
  dnsmasq-base bind9-dnsutils knot-dnsutils ldnsutils python3 util-linux iproute2
  # independent oracle for the pcap import test
  tshark
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages: ${missing[*]}" >&2
    echo "hint: run as root (sudo $0)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed" >&2
  echo "hint: install Rust >= 1.94 with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi
