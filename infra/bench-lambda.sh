#!/usr/bin/env bash
# Section 5 of BENCHMARKS.md: the Lambda functions' cold init, peak memory and sizes.
#   infra/bench-lambda.sh [--out BENCHMARKS.md]
# Starts the local AWS emulator (moto, for Secrets Manager, DynamoDB and SQS: the functions read
# their secrets and build their clients at init), builds the five functions' host release binaries
# and the benchmark, and runs `cosell-bench --lambda`, which replaces that section of the report.
# The arm64 sizes are read from infra/lambda-build.sh's output directory (COSELL_ARM64_DIR to point
# elsewhere); run that script first to have them. Takes a minute or two once built.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
# Not the test suite's port: a benchmark may run beside the tests.
export COSELL_MOTO_PORT="${COSELL_MOTO_PORT:-45693}"

env_file="$(mktemp)"
trap 'infra/local-aws.sh stop; rm -f "$env_file"' EXIT
infra/local-aws.sh start >"$env_file"
# shellcheck disable=SC1090
source "$env_file"
echo "local AWS emulator at $AWS_ENDPOINT_URL"

cargo build --release -p webhook-receiver -p pc-to-crm -p crm-poller -p crm-to-pc -p webhook-registration
cargo build --release -p cosell-bench
"$target/release/cosell-bench" --lambda --functions "$target/release" \
  --arm64 "${COSELL_ARM64_DIR:-$target/lambda/arm64}" "$@"
