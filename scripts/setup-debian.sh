#!/usr/bin/env bash
# Installs the Debian 12 packages dnsledger needs to build, record and run its tests.
# Idempotent: packages already present are left alone.
# --test also sets up what only the test suite needs: systemd (`systemd-analyze verify` checks the
# shipped units), systemd-resolved unpacked (not installed) under <repo>/.cache for the stub test
# (scripts/fetch-resolved.sh), and DuckDB from PyPI in <repo>/.venv, an independent Parquet reader the tests and
# the benchmarks check segments with, and what --deb installs plus lintian and man-db (the
# package test, scripts/test-deb.sh). --venv sets up only that .venv (bench/run.sh).
# --deb: what building the Debian package needs (scripts/build-deb.sh): dpkg-dev and cargo-deb
# (the version below, with `cargo install --locked`, only when that version is missing).
# Python packages go into the project's .venv, made from Debian's /usr/bin/python3, never into
# a system Python (PEP 668 refuses that on Debian 12).
set -euo pipefail
test_extras=0
venv_only=0
deb=0
cargo_deb_version=3.8.0
for arg in "$@"; do
  case "$arg" in
    --test) test_extras=1; deb=1 ;;
    --venv) venv_only=1 ;;
    --deb) deb=1 ;;
    *) echo "error: unknown argument '$arg' (expected --test, --venv or --deb)" >&2; exit 2 ;;
  esac
done

packages=(
  # build: libbpf-sys builds libbpf (needs libelf, zlib), clang compiles the BPF C
  gcc libc6-dev make pkg-config libelf-dev zlib1g-dev clang
  # libFuzzer's C++ (libfuzzer-sys), compiled by the test suite's check of the fuzz binaries
  g++
  # inspection and the SIGKILL test
  bpftool
  # end-to-end tests: real DNS servers and clients
  dnsmasq-base bind9-dnsutils knot-dnsutils ldnsutils python3 util-linux iproute2 tmux
  # the encrypted-DNS bypass test: a TLS server and client (DoT), curl --doh-url (DoH)
  openssl curl
  # the libc lookups test: a client linked against musl (musl-gcc), readelf to check it
  musl-tools binutils
  # independent oracle for the pcap import test
  tshark
)
if [ "$test_extras" -eq 1 ]; then
  # systemd-analyze checks the units; Java runs Spark, a lake engine the tests read the lake with;
  # headless chromium renders `dnsql report`'s page offline (with a font for its text)
  packages+=(python3-venv systemd openjdk-17-jre-headless chromium fonts-dejavu-core)
fi
if [ "$deb" -eq 1 ]; then
  # cargo-deb computes the package's dependencies with dpkg-shlibdeps
  packages+=(dpkg-dev)
fi
if [ "$test_extras" -eq 1 ]; then
  # the package test: Debian's package checker, and `man` to open the installed pages
  packages+=(lintian man-db)
fi
if [ "$venv_only" -eq 1 ]; then
  packages=(python3 python3-venv)
fi

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
if [ "$venv_only" -eq 0 ] && ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed" >&2
  echo "hint: install Rust >= 1.94 with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi

if [ "$test_extras" -eq 1 ] || [ "$venv_only" -eq 1 ]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  venv="$root/.venv"
  requirements="$root/scripts/requirements-test.txt"
  # Re-install only when the requirements changed since the last install (stamp = a copy).
  if ! cmp -s "$requirements" "$venv/.requirements-installed" 2>/dev/null; then
    [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.requirements-installed"
  fi
fi

if [ "$test_extras" -eq 1 ]; then
  # systemd-resolved for the stub-link test, unpacked under <repo>/.cache, never installed
  # (installing it would repoint this host's /etc/resolv.conf)
  "$(dirname "$0")/fetch-resolved.sh"
fi

if [ "$deb" -eq 1 ] && ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
  cargo install cargo-deb --version "$cargo_deb_version" --locked
fi
