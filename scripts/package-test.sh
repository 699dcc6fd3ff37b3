#!/usr/bin/env bash
# Installs the Debian package on this machine and checks what an operator gets: the binary,
# the conffile passing `linkedge check --offline`, the linkedge user owning the spool, the unit;
# then runs it as that user on free loopback ports against its own redis-server, follows a link
# (302, and the click in the stream), reloads it as the unit's ExecReload does, follows the link
# again, stops it, and purges the package, checking nothing is left. Needs root (dpkg). CI runs it after the tests.
#   scripts/package-test.sh [path/to/linkedge.deb]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "needs root (dpkg -i)" >&2; exit 1; }
deb=${1:-}
if [ -z "$deb" ]; then
  deb=$(scripts/package.sh | tail -1 | cut -d' ' -f1)
fi
fail() {
  echo "package-test: $*" >&2
  # What the served process said, before the cleanup removes it.
  [ -n "${work:-}" ] && [ -f "$work/log" ] && tail -n 40 "$work/log" >&2
  exit 1
}
if dpkg -s linkedge >/dev/null 2>&1; then dpkg --purge linkedge >/dev/null; fi
work=$(mktemp -d /tmp/linkedge-package-test.XXXXXX)
chmod 755 "$work"
cleanup() {
  [ -n "${le:-}" ] && kill "$le" 2>/dev/null || true
  [ -n "${new:-}" ] && kill "$new" 2>/dev/null || true
  [ -n "${rootle:-}" ] && kill "$rootle" 2>/dev/null || true
  [ -n "${redis:-}" ] && kill "$redis" 2>/dev/null || true
  dpkg --purge linkedge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "installing $deb ($(du -h "$deb" | cut -f1))"
dpkg -i "$deb" >/dev/null
[ -x /usr/bin/linkedge ] || fail "no /usr/bin/linkedge"
[ -f /lib/systemd/system/linkedge.service ] || fail "no systemd unit"
dpkg-query -W -f='${Conffiles}\n' linkedge | grep -q /etc/linkedge/linkedge.yaml || fail "config is not a conffile"
getent passwd linkedge >/dev/null || fail "no linkedge user"
[ "$(stat -c %U /var/lib/linkedge/spool)" = linkedge ] || fail "spool not owned by linkedge"
[ "$(stat -c '%U:%G %a' /etc/linkedge/linkedge.yaml)" = "root:linkedge 640" ] || fail "config permissions $(stat -c '%U:%G %a' /etc/linkedge/linkedge.yaml)"
/usr/bin/linkedge check --offline --config /etc/linkedge/linkedge.yaml
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify /lib/systemd/system/linkedge.service 2>&1 || true)
  [ -z "$out" ] || fail "the unit does not verify: $out"
fi

# Run the installed binary as the linkedge user, as the unit does, on free loopback ports.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rp=$(port); hp=$(port); sp=$(port); mp=$(port)
redis-server --port "$rp" --save "" --appendonly no >/dev/null & redis=$!
echo "package-test-link-key-not-a-secret-0123456789" > "$work/key"
chown linkedge "$work/key"; chmod 600 "$work/key"
cat > "$work/linkedge.yaml" <<Y
listen: { http: 127.0.0.1:$hp, https: 127.0.0.1:$sp, metrics: 127.0.0.1:$mp }
tls: { cert: $PWD/certs-dev/leaf.pem, key: $work/leaf.key }
redis: { url: "redis://127.0.0.1:$rp/" }
links: { mint_key: 1, keys: [{ id: 1, secret_file: $work/key }] }
events: { spool: { dir: /var/lib/linkedge/spool } }
server: { threads: 1, pid_file: $work/run/pid, upgrade_sock: $work/run/upgrade.sock, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }
Y
cp certs-dev/leaf.key "$work/leaf.key"; chown linkedge "$work/leaf.key"; chmod 600 "$work/leaf.key"
install -d -o linkedge "$work/run"
runuser -u linkedge -- /usr/bin/linkedge check --config "$work/linkedge.yaml"
url=$(/usr/bin/linkedge link mint --config "$work/linkedge.yaml" --host 127.0.0.1 --url https://example.com/landing)
path=/c/${url##*/c/}

# An operator's mistake first: linkedge served once as root, its Redis unreachable, so the click
# it took is spooled in a root-owned directory under the package's spool. The linkedge user's
# process must still start (naming that directory in its log) and replay it once it is chowned.
closed=$(port)
sed -e "s|127.0.0.1:$rp/|127.0.0.1:$closed/|" -e "s|$work/run/|$work/rootrun/|g" \
  "$work/linkedge.yaml" > "$work/root.yaml"
mkdir -p "$work/rootrun"
/usr/bin/linkedge serve --config "$work/root.yaml" >"$work/rootlog" 2>&1 & rootle=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$hp/health" && break; sleep 0.1; done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hp$path")
[ "$code" = 302 ] || fail "link answered $code when served as root"
kill "$rootle"; wait "$rootle" 2>/dev/null || true
ls /var/lib/linkedge/spool/*/*.evz >/dev/null 2>&1 || { cat "$work/rootlog" >&2; fail "the root run spooled nothing"; }
[ "$(stat -c %U /var/lib/linkedge/spool/*/ | sort -u)" = root ] || fail "the root run's spool is not root's"

runuser -u linkedge -- /usr/bin/linkedge serve --config "$work/linkedge.yaml" >"$work/log" 2>&1 & le=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$hp/health" && break; sleep 0.1; done
[ "$(ps -o user= -p "$(pgrep -f "serve --config $work/linkedge.yaml" | tail -1)")" = linkedge ] || fail "not running as linkedge"
grep -q "a directory of another user" "$work/log" || fail "the root-owned spool directory is not reported"
code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$hp$path")
[ "$code" = "302 https://example.com/landing" ] || fail "link answered '$code'"
for _ in $(seq 1 50); do [ "$(redis-cli -p "$rp" XLEN linkedge:events)" = 1 ] && break; sleep 0.1; done
[ "$(redis-cli -p "$rp" XLEN linkedge:events)" = 1 ] || fail "the click is not in the stream"
# The unit's ExecReload, as the linkedge user: a new process takes the listeners over.
old=$(cat "$work/run/pid")
out=$(runuser -u linkedge -- /usr/bin/linkedge reload --config "$work/linkedge.yaml" --log "$work/run/log") \
  || fail "reload failed: $out"
wait "$le" 2>/dev/null || true; le=""
new=$(cat "$work/run/pid")
[ "$new" != "$old" ] && [ "$(ps -o user= -p "$new")" = linkedge ] || fail "after reload: pid $old -> $new ($out)"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hp$path")
[ "$code" = 302 ] || fail "link answered $code after the reload"
for _ in $(seq 1 50); do [ "$(redis-cli -p "$rp" XLEN linkedge:events)" = 2 ] && break; sleep 0.1; done
[ "$(redis-cli -p "$rp" XLEN linkedge:events)" = 2 ] || fail "the click after the reload is not in the stream"
# The operator gives the root run's directory to linkedge: the running process takes it over.
chown -R linkedge /var/lib/linkedge/spool
for _ in $(seq 1 50); do [ "$(redis-cli -p "$rp" XLEN linkedge:events)" = 3 ] && break; sleep 0.1; done
[ "$(redis-cli -p "$rp" XLEN linkedge:events)" = 3 ] || fail "the root run's spooled click is not replayed after chown"
kill "$new"
for _ in $(seq 1 100); do kill -0 "$new" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$new" 2>/dev/null || fail "pid $new still runs after SIGTERM"
[ "$(redis-cli -p "$rp" XLEN linkedge:events)" = 3 ] || fail "$(redis-cli -p "$rp" XLEN linkedge:events) events at the end, not 3"
echo "ran as linkedge: link 302, click in the stream, reloaded (pid $old -> $new), link 302 again, root-owned spool reported and replayed after chown"

dpkg --purge linkedge >/dev/null
for f in /usr/bin/linkedge /etc/linkedge /var/lib/linkedge /lib/systemd/system/linkedge.service; do
  [ ! -e "$f" ] || fail "$f left after purge"
done
echo "package-test: ok (installed, checked, ran as linkedge, purged clean)"
