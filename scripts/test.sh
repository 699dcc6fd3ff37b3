#!/usr/bin/env bash
# Runs the whole test suite: unit and property tests, and the integration tests that start their
# own redis-server and linkedge on free loopback ports. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo test --all-targets
