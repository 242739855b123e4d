#!/usr/bin/env bash
# The README's test command: every test of the workspace, against the local AWS emulator.
# Needs only the Rust toolchain and Python 3 with venv; installs the rest into .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Test-only Python clients (third-party API clients pointed at our simulators).
if [ -f infra/requirements-test.txt ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-test.txt
fi
export COSELL_PYTHON="$root/.venv/bin/python"

# The status page is tested in a real headless browser (Debian's chromium), installed when missing.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "chromium is missing: install it (sudo apt-get install chromium) for the status page tests" >&2
  fi
fi

env_file="$(mktemp)"
trap 'infra/local-aws.sh stop; rm -f "$env_file"' EXIT
infra/local-aws.sh start >"$env_file"
# shellcheck disable=SC1090
source "$env_file"
echo "local AWS emulator at $AWS_ENDPOINT_URL"

export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
log="$root/.local/test.log"
set +e
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
