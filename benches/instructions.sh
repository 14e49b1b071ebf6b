#!/usr/bin/env bash
# Instructions per review, the no-op and the release server side by side under callgrind:
# BENCHMARKS.md's "model ratio". On this 2-core host the wall-clock ratios of load.sh spread
# by up to 0.4 between the rounds of one run, since wrk and the server share the cores;
# counted instructions do not move with the host. For each of load.sh's rows each server runs
# under valgrind's callgrind, its counters are zeroed once it is ready, wrk drives it with two
# connections for SECONDS, and the count dumped then is divided by the reviews it answered.
# The ratio is the no-op's count over portcullis's: the throughput ratio if a review cost its
# instructions and nothing else.
#   benches/instructions.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
policies=$(cd policies && pwd)
. benches/common.sh

install_missing valgrind wrk
cargo build --release --quiet --bin portcullis --example noop_server

work=$(mktemp -d)
pid=""
# The server's pid is kept in a file as well: `count` runs in a subshell, whose variables the
# EXIT trap does not see.
cleanup() {
  [ -f "$work/server.pid" ] && kill "$(cat "$work/server.pid")" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
listen=127.0.0.1:18543

# The development certificate, which the server writes on its first start; the no-op reuses
# it.
(cd "$work" && exec "$OLDPWD/target/release/portcullis" serve --listen "$listen" \
  --metrics-listen 127.0.0.1:19191 2>"$work/first.log") &
pid=$!
until grep -q startup_ms "$work/first.log" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/first.log"; exit 1; }
  sleep 0.05
done
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

count() { # PATH POLICIES BODIES... -> instructions per review; POLICIES "" is the no-op
  local path=$1 served=$2; shift 2
  local out=$work/callgrind.out
  rm -f "$out"*
  local vg=(valgrind --tool=callgrind "--callgrind-out-file=$out")
  if [ -z "$served" ]; then
    "${vg[@]}" target/release/examples/noop_server "$listen" "$work/certs/tls.crt" \
      "$work/certs/tls.key" >/dev/null 2>"$work/server.log" &
  else
    (cd "$work" && exec "${vg[@]}" "$OLDPWD/target/release/portcullis" serve --listen "$listen" \
      --metrics-listen 127.0.0.1:19191 --policies "$served" --log-format json \
      >/dev/null 2>"$work/server.log") &
  fi
  pid=$!
  echo "$pid" >"$work/server.pid"
  until curl -sk "https://$listen/readyz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.2
  done
  # Start-up and the readiness probes are left out: counting starts as wrk connects. Its two
  # TLS handshakes stay in, spread over thousands of reviews, for both servers alike.
  callgrind_control -z "$pid" >/dev/null 2>&1
  local report answered
  report=$(WRK_PATH=$path wrk -t1 -c2 -d"${secs}s" --timeout 10s -s benches/load.lua \
    "https://$listen" -- "$@")
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$work/server.pid"
  # Only answered reviews count: a refused or failed request would make a cheap one.
  answered=$(echo "$report" | awk '/requests in/ { print $1 }')
  if [ "${answered:-0}" -eq 0 ] || ! echo "$report" | grep -q 'errors=0 non2xx=0'; then
    echo "$path: not every request was answered with 2xx:" >&2
    echo "$report" >&2
    exit 1
  fi
  # The first dump holds what was counted between the zeroing and it: wrk's reviews.
  local counted
  counted=$(awk '/^totals:/ { print $2 }' "$out".1)
  awk -v c="$counted" -v n="$answered" 'BEGIN { printf "%.1f\n", c / n / 1000 }'
}

row() { # NAME NO-OP PORTCULLIS (thousands of instructions per review)
  awk -v name="$1" -v n="$2" -v p="$3" \
    'BEGIN { printf "| %s | %.1fk | %.1fk | %+.1fk | %.2f |\n", name, n, p, p - n, n / p }'
}

mix_noop=$(count /validate "" "${validate_bodies[@]}")
mix=$(count /validate "$policies" "${validate_bodies[@]}")
denied_noop=$(count /validate "" "${denied_bodies[@]}")
denied=$(count /validate "$policies" "${denied_bodies[@]}")
audit=$(count /validate "$audit_policies" "${denied_bodies[@]}")
mutate_noop=$(count /mutate "" "${mutate_bodies[@]}")
mutate=$(count /mutate "$policies" "${mutate_bodies[@]}")

echo "callgrind, instructions per review; wrk -t1 -c2 -d${secs}s over HTTPS keep-alive; reviews as kube-apiserver sends them (compact)"
echo
echo "| row | no-op | portcullis | own work | model ratio |"
echo "|---|---|---|---|---|"
row "/validate mix" "$mix_noop" "$mix"
row "/validate, every review denied" "$denied_noop" "$denied"
# The audit row sends the denied row's reviews: the no-op's count is the same.
row "/validate, every review denied, every check in audit mode" "$denied_noop" "$audit"
row "/mutate" "$mutate_noop" "$mutate"
