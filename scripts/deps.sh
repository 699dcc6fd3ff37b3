#!/usr/bin/env bash
# Installs what a fresh Debian or Ubuntu machine lacks to build and test linkedge:
# cmake (Pingora's vendored OpenSSL and zlib-ng build), redis-server (the event stream, and the
# tests' own Redis), pebble (the tests' ACME CA and mock DNS) and prometheus (its promtool tests
# the alerting rules in deploy/prometheus; where systemd runs, the package also enables a
# prometheus service on :9090) and kubernetes-client (kubectl kustomize builds deploy/kubernetes
# in a test) and nginx-light (a customer's own proxy in front of linkedge, in
# tests/customer_proxies.rs), iproute2 (the namespaces of tests/fleet.rs), and python3, nodejs
# and golang-go (the minting clients in clients/ run the test vectors). Runs apt-get only when
# something is missing.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# ip netns and veth pairs for tests/fleet.rs (run as root).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing+=(iproute2)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
# The minting clients' tests (clients/python, clients/node, clients/go).
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
need_promtool=0
command -v promtool >/dev/null 2>&1 || need_promtool=1
# Debian's nginx is in /usr/sbin, which an ordinary user's PATH may lack.
need_nginx=0
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_nginx=1
if [ ${#missing[@]} -gt 0 ] || [ $need_promtool -eq 1 ] || [ $need_nginx -eq 1 ]; then
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
  if [ $need_nginx -eq 1 ]; then
    echo "installing: nginx-light (the tests start their own)"
    # The package starts an nginx service on :80 when the port is free (systemd's, else the
    # init script), and its install fails when that start fails: where IPv6 is off, say, as its
    # default site also listens on [::]:80. Starting no service during the install, as Docker
    # images do with a policy-rc.d, avoids both; where systemd runs, the service stays enabled
    # for the next boot (`systemctl disable nginx` keeps it off).
    policy=/usr/sbin/policy-rc.d
    if [ -e $policy ]; then
      $sudo apt-get install -y nginx-light
    else
      trap '$sudo rm -f $policy' EXIT
      printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null
      $sudo chmod 755 $policy
      $sudo apt-get install -y nginx-light
      $sudo rm -f $policy
      trap - EXIT
    fi
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs first" >&2
  exit 1
fi
