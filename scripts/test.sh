#!/usr/bin/env bash
# Runs the whole test suite: unit and property tests, the integration tests that start their
# own redis-server and linkedge on free loopback ports, and the minting clients in Python, Node
# and Go against the test vectors. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo test --all-targets
# The minting clients, each against tests/vectors/tokens.json (standard libraries only).
python3 -m unittest discover -s clients/python
node --test clients/node/test.js
(cd clients/go && go test -count=1 ./...)
