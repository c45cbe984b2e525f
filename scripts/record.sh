#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running recorder with defaults:
# installs the packages, builds `dnsledger` (release) and records into /var/lib/dnsledger
# until Ctrl-C / SIGTERM. Extra arguments go to `dnsledger record`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-debian.sh
cargo build --release -p dnsledger-recorder --bin dnsledger
exec ./target/release/dnsledger record "$@"
