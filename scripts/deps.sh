#!/usr/bin/env bash
# Installs what a fresh Debian or Ubuntu machine lacks to build and test linkedge:
# cmake (Pingora's vendored OpenSSL and zlib-ng build), redis-server (the event stream, and the
# tests' own Redis), pebble (the tests' ACME CA and mock DNS) and prometheus (its promtool tests
# the alerting rules in deploy/prometheus; where systemd runs, the package also enables a
# prometheus service on :9090) and kubernetes-client (kubectl kustomize builds deploy/kubernetes
# in a test). Runs apt-get only when something is missing.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
need_promtool=0
command -v promtool >/dev/null 2>&1 || need_promtool=1
if [ ${#missing[@]} -gt 0 ] || [ $need_promtool -eq 1 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $sudo apt-get install -y "${missing[@]}"
  fi
  if [ $need_promtool -eq 1 ]; then
    echo "installing: prometheus (for promtool)"
    # Without recommends: they would bring node-exporter and its service.
    $sudo apt-get install -y --no-install-recommends prometheus
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs first" >&2
  exit 1
fi
