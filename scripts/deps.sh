#!/usr/bin/env bash
# Installs what a fresh Debian or Ubuntu machine lacks to build and test linkedge:
# cmake (Pingora's vendored OpenSSL and zlib-ng build), redis-server (the event stream, and the
# tests' own Redis) and pebble (the tests' ACME CA and mock DNS). Runs apt-get only when
# something is missing.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update
  $sudo apt-get install -y "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs first" >&2
  exit 1
fi
