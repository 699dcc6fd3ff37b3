#!/usr/bin/env bash
# Builds the Debian package (release binary, /etc/linkedge/linkedge.yaml as a conffile, the
# systemd unit, the linkedge user and spool directory made on install) with cargo-deb, which it
# installs from crates.io if missing. Prints the .deb's path.
#   scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh >/dev/null
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
command -v dpkg-deb >/dev/null 2>&1 || { echo "needs dpkg-deb (Debian or Ubuntu)" >&2; exit 1; }
deb=$(cargo deb --locked 2>/dev/null | tail -1)
[ -f "$deb" ] || { cargo deb --locked; exit 1; }
echo "$deb ($(du -h "$deb" | cut -f1))"
