#!/usr/bin/env bash
# End-to-end load benchmark: the release server and a no-op server on the same stack (TLS,
# HTTP/1.1 keep-alive, review decoding), driven by wrk at a fixed concurrency with realistic
# captured reviews. Prints a markdown table; BENCHMARKS.md records a run.
# Each comparison alternates the no-op and the real server for ROUNDS rounds. The table shows
# each side's round with the median throughput; the ratio line gives the median of the rounds'
# own ratios, and each of them, so drift on a shared machine hits both sides alike.
#   benches/load.sh [SECONDS] [CONNECTIONS] [ROUNDS]
# Reviews go as kube-apiserver sends them, compact; STORED=1 sends the captures as stored,
# indented, as every run before session 22 did.
# POLICIES=DIR serves another policy directory (BENCHMARKS.md: the 12 pod-security
# ValidatingPolicies of the Kyverno CEL suite in place of the native checks).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-16}
rounds=${3:-3}
policies=$(cd "${POLICIES:-policies}" && pwd)
. benches/common.sh

install_missing wrk
cargo build --release --quiet --bin portcullis --example noop_server

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The real server generates the development certificate; the no-op server reuses it.
(cd "$work" && exec "$OLDPWD/target/release/portcullis" serve --listen 127.0.0.1:18443 \
  --policies "$policies" --log-format json 2>"$work/server.log") &
pids+=($!); server=$!
until grep -q startup_ms "$work/server.log" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.05
done
startup=$(grep -o '"startup_ms":[0-9.]*' "$work/server.log" | head -1 | cut -d: -f2)
# Start-up without certificate generation: a second start with the certificate in place.
kill "$server"; wait "$server" 2>/dev/null || true
(cd "$work" && exec "$OLDPWD/target/release/portcullis" serve --listen 127.0.0.1:18443 \
  --policies "$policies" --log-format json 2>"$work/server2.log") &
pids+=($!); server=$!
until grep -q startup_ms "$work/server2.log" 2>/dev/null; do sleep 0.05; done
startup_warm=$(grep -o '"startup_ms":[0-9.]*' "$work/server2.log" | head -1 | cut -d: -f2)
target/release/examples/noop_server 127.0.0.1:19443 "$work/certs/tls.crt" "$work/certs/tls.key" 2>/dev/null &
pids+=($!); noop=$!
until curl -sk https://127.0.0.1:19443/readyz >/dev/null; do sleep 0.05; done

# The audit row's server, beside the enforcing one.
audit=""
if [ -z "${POLICIES:-}" ]; then
  (cd "$work" && exec "$OLDPWD/target/release/portcullis" serve --listen 127.0.0.1:18444 \
    --metrics-listen 127.0.0.1:19091 --policies "$audit_policies" \
    --log-format json 2>"$work/audit.log") &
  pids+=($!); audit=$!
  until grep -q startup_ms "$work/audit.log" 2>/dev/null; do sleep 0.05; done
fi

declare -A pid_of=([19443]=$noop [18443]=$server)
[ -n "$audit" ] && pid_of[18444]=$audit
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # the process's user + system CPU
# Besides wrk's figures, the server's CPU time per request: wrk shares the two cores, so
# throughput moves with the host's load, while CPU per request is what the handler costs.
run() { # PORT PATH DELAY_MS BODIES...
  local port=$1 path=$2 delay=$3; shift 3
  local before result
  before=$(ticks "${pid_of[$port]}")
  result=$(WRK_PATH=$path WRK_DELAY_MS=$delay WRK_AS_STORED=${STORED:-} wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s \
    -s benches/load.lua "https://127.0.0.1:$port" -- "$@" | grep '^RESULT' | sed 's/^RESULT //')
  awk -v r="$result" -v t=$(($(ticks "${pid_of[$port]}") - before)) -v hz="$(getconf CLK_TCK)" \
    -v s="$secs" 'BEGIN { split(r, f, /[ =]/)
           if (f[2] > 0) printf "%s cpu=%.1f\n", r, t / hz * 1e6 / (f[2] * s); else print r }'
}
field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
row() { # NAME RESULT
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(field "$2" rps)" "$(field "$2" cpu)" \
    "$(field "$2" p50)" "$(field "$2" p99)" "$(field "$2" p999)" "$(field "$2" errors)" "$(field "$2" non2xx)"
}

median() { # RESULT lines on stdin → the one with the median rps
  sort -t= -k2 -n | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'
}
rows=()
ratios=()
# NAME PORT PATH BODIES...: the no-op and portcullis alternately, ROUNDS times each; then
# both unsaturated (each connection pauses 5-15 ms between requests).
compare() {
  local name=$1 port=$2 path=$3; shift 3
  local noop=() real=()
  for _ in $(seq "$rounds"); do
    noop+=("$(run 19443 "$path" 0 "$@")")
    real+=("$(run "$port" "$path" 0 "$@")")
  done
  local n r calm calm_noop
  n=$(printf '%s\n' "${noop[@]}" | median)
  r=$(printf '%s\n' "${real[@]}" | median)
  # The no-op unsaturated too: its p99 is the floor this machine's scheduler sets.
  calm_noop=$(run 19443 "$path" 10 "$@")
  calm=$(run "$port" "$path" 10 "$@")
  rows+=("$(row "no-op, $name" "$n")" "$(row "portcullis, $name" "$r")"
         "$(row "no-op, $name, not saturated (5-15 ms pause per connection)" "$calm_noop")"
         "$(row "portcullis, $name, not saturated (5-15 ms pause per connection)" "$calm")")
  # Each round's own ratio too: their spread is how far this host lets one run be trusted.
  local each="" i
  for i in "${!noop[@]}"; do
    each+="${each:+, }$(awk -v r="$(field "${real[$i]}" rps)" -v n="$(field "${noop[$i]}" rps)" \
      'BEGIN { if (n > 0) printf "%.2f", r / n; else printf "n/a" }')"
  done
  # The headline is the median of the rounds' own ratios: each pairs two runs made next to
  # each other, so slow drift of the host cancels, where the table's median rows need not
  # come from the same round.
  local mid
  mid=$(echo "$each" | tr ',' '\n' | sort -n | awk '{ l[NR] = $1 } END { print l[int((NR + 1) / 2)] }')
  ratios+=("$name: portcullis/no-op $mid (rounds: $each), server CPU per request $(field "$r" cpu) µs (no-op $(field "$n" cpu) µs), p99 not saturated $(field "$calm" p99) µs (no-op $(field "$calm_noop" p99) µs)")
}
compare "/validate mix" 18443 /validate "${validate_bodies[@]}"
compare "/validate, every review denied" 18443 /validate "${denied_bodies[@]}"
if [ -n "$audit" ]; then
  compare "/validate, every review denied, every check in audit mode" 18444 /validate "${denied_bodies[@]}"
fi
compare "/mutate" 18443 /mutate "${mutate_bodies[@]}"
form="as kube-apiserver sends them (compact)"
[ -n "${STORED:-}" ] && form="as stored (indented)"
rss_kib=$(grep VmHWM "/proc/$server/status" | awk '{print $2}')

echo "machine: $(nproc) cores, $(grep 'model name' /proc/cpuinfo | head -1 | cut -d: -f2 | sed 's/^ *//'); wrk -t1 -c$conns -d${secs}s over HTTPS keep-alive; median of $rounds alternating rounds; reviews $form"
echo
echo "| run | requests/s | server CPU µs/request | p50 µs | p99 µs | p99.9 µs | errors | non-2xx |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
printf '%s\n' "${ratios[@]}"
echo "peak RSS of the portcullis server: $((rss_kib / 1024)) MiB ($rss_kib KiB)"
echo "start-up to ready: ${startup_warm} ms (with certificate present); ${startup} ms when generating the development certificate"
