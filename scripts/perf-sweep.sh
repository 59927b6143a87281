#!/usr/bin/env bash
# Reproduces the measurements in docs/performance.md: builds the release
# binaries, runs jitssh-load (closed loop at several concurrencies, open loop
# at several rates, one run against a separate `jitssh-ca serve` process, and
# optionally a soak), writes one JSON file per run into $OUT and draws
# $OUT/performance.svg with scripts/perf-plot.py.
#
#   scripts/perf-sweep.sh                 # ~15 minutes on 2 cores
#   SOAK=600 scripts/perf-sweep.sh        # plus a 10-minute soak at $SOAK_RATE/s
#   QUICK=1 scripts/perf-sweep.sh         # fewer, shorter runs (a smoke check)
#
# Knobs: OUT (docs/perf), ALG (rs256: what most IdPs sign with), RATES,
# CONCURRENCIES, SOAK (seconds), SOAK_RATE (1000), PORT (8443), IDP_PORT (7400).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-docs/perf}
ALG=${ALG:-rs256}
CONCURRENCIES=${CONCURRENCIES:-"1 2 4 8 16 32 64 128"}
RATES=${RATES:-"250 500 1000 1500 2000 2500"}
RATE_SECONDS=${RATE_SECONDS:-20}
PORT=${PORT:-8443}
IDP_PORT=${IDP_PORT:-7400}
SOAK_RATE=${SOAK_RATE:-1000}
if [ -n "${QUICK:-}" ]; then
  CONCURRENCIES="1 8 64"
  RATES="500 2000"
  RATE_SECONDS=5
fi
requests_for() { if [ "$1" -le 2 ]; then echo 2000; else echo 20000; fi; }

cargo build --release -p ca-server --bin jitssh-ca -p jitssh-e2e --bin jitssh-load
LOAD=target/release/jitssh-load
CA=target/release/jitssh-ca
mkdir -p "$OUT"
host="$(nproc) cores, $(uname -m)"

echo "== closed loop, in-process CA, $ALG tokens"
for c in $CONCURRENCIES; do
  "$LOAD" --alg "$ALG" -c "$c" -n "$(requests_for "$c")" --label "$host" \
    --json "$OUT/closed-$ALG-c$c.json"
done
echo "== closed loop, concurrency 64, the other token algorithms"
for alg in rs256 es256 eddsa; do
  [ "$alg" = "$ALG" ] && continue
  "$LOAD" --alg "$alg" -c 64 -n 20000 --label "$host" --json "$OUT/closed-$alg-c64.json"
done

echo "== open loop (fixed rate), in-process CA, $ALG tokens"
for rate in $RATES; do
  "$LOAD" --alg "$ALG" --rate "$rate" --duration "$RATE_SECONDS" --label "$host" \
    --json "$OUT/open-$ALG-r$rate.json"
done

# A separate `jitssh-ca serve` process, configured as `init` writes it
# (default rate limit, synchronous=FULL, info logging to a file), trusting
# the issuer jitssh-load serves on $IDP_PORT.
serve_ca() {
  dir=$(mktemp -d)
  "$CA" init --dir "$dir" --issuer "http://127.0.0.1:$IDP_PORT" --audience jitssh-load \
    --login-claim email --email-domain example.com >/dev/null
  "$CA" serve --config "$dir/config.toml" --listen "127.0.0.1:$PORT" >"$dir/ca.log" 2>&1 &
  ca_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
}
stop_ca() { kill "$ca_pid" 2>/dev/null || true; wait "$ca_pid" 2>/dev/null || true; rm -rf "$dir"; }
trap 'stop_ca 2>/dev/null || true' EXIT

echo "== closed loop, concurrency 64, a served CA (separate process)"
serve_ca
"$LOAD" --url "http://127.0.0.1:$PORT" --idp-listen "127.0.0.1:$IDP_PORT" --db "$dir/audit.db" \
  --ca-bin "$CA" --server-pid "$ca_pid" --alg "$ALG" -c 64 -n 20000 --label "$host" \
  --json "$OUT/served-closed-$ALG-c64.json"
"$LOAD" --url "http://127.0.0.1:$PORT" --idp-listen "127.0.0.1:$IDP_PORT" --db "$dir/audit.db" \
  --ca-bin "$CA" --server-pid "$ca_pid" --alg "$ALG" --rate 1000 --duration "$RATE_SECONDS" \
  --label "$host" --json "$OUT/served-open-$ALG-r1000.json"
stop_ca

if [ -n "${SOAK:-}" ]; then
  echo "== soak: $SOAK s at $SOAK_RATE/s against a served CA, memory sampled every 5 s"
  # 60-second tokens: the replay guard (one entry per token until it expires
  # plus 120 s) reaches its steady state within the first ~6 minutes.
  serve_ca
  "$LOAD" --url "http://127.0.0.1:$PORT" --idp-listen "127.0.0.1:$IDP_PORT" --db "$dir/audit.db" \
    --ca-bin "$CA" --server-pid "$ca_pid" --alg eddsa --mint inline --token-ttl 60 \
    --rate "$SOAK_RATE" --duration "$SOAK" --sample-every 5 --label "$host" \
    --json "$OUT/soak-eddsa-r$SOAK_RATE.json"
  stop_ca
fi

python3 scripts/perf-plot.py "$OUT"/*.json -o "$OUT/performance.svg"
