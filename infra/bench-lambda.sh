#!/usr/bin/env bash
# Section 5 of BENCHMARKS.md: the Lambda functions' cold init, peak memory and sizes.
#   infra/bench-lambda.sh [--out BENCHMARKS.md]
# Starts the local AWS emulator (moto, for Secrets Manager, DynamoDB and SQS: the functions read
# their secrets and build their clients at init) and cargo-lambda's Lambda emulator
# (`cargo lambda watch --only-lambda-apis`, from .venv), builds the five functions' host release
# binaries and the benchmark, and runs `cosell-bench --lambda`, which replaces that section of the report.
# The arm64 sizes are read from infra/lambda-build.sh's output directory (COSELL_ARM64_DIR to point
# elsewhere); run that script first to have them. Takes a minute or two once built.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
# Not the test suite's port: a benchmark may run beside the tests.
export COSELL_MOTO_PORT="${COSELL_MOTO_PORT:-45693}"

watch_port="${COSELL_WATCH_PORT:-45694}"
[ -x .venv/bin/cargo-lambda ] || {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-deploy.txt
}

cargo build --release -p webhook-receiver -p pc-to-crm -p crm-poller -p crm-to-pc -p webhook-registration
cargo build --release -p cosell-bench

env_file="$(mktemp)"
watch_pid=""
cleanup() {
  if [ -n "$watch_pid" ]; then kill "$watch_pid" 2>/dev/null || true; fi
  infra/local-aws.sh stop
  rm -f "$env_file"
}
trap cleanup EXIT
infra/local-aws.sh start >"$env_file"
# shellcheck disable=SC1090
source "$env_file"
echo "local AWS emulator at $AWS_ENDPOINT_URL"
mkdir -p .local
.venv/bin/cargo-lambda lambda watch --only-lambda-apis -A 127.0.0.1 -P "$watch_port" >.local/cargo-lambda-watch.log 2>&1 &
watch_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$watch_port") 2>/dev/null && break
  sleep 0.1
done
echo "cargo lambda watch (Lambda emulator) at 127.0.0.1:$watch_port"

timeout 600 "$target/release/cosell-bench" --lambda --functions "$target/release" \
  --arm64 "${COSELL_ARM64_DIR:-$target/lambda/arm64}" --watch "127.0.0.1:$watch_port" "$@"
