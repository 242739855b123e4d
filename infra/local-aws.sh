#!/usr/bin/env bash
# Starts or stops the local AWS emulator (moto server: DynamoDB + SQS) on loopback.
#   infra/local-aws.sh start   → installs it into .venv if missing, starts it, waits until healthy,
#                                prints the environment to export (AWS_ENDPOINT_URL, dummy credentials)
#   infra/local-aws.sh stop
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
state="$root/.local"
port="${COSELL_MOTO_PORT:-45671}"
pidfile="$state/moto.pid"
mkdir -p "$state"

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
  fi
  # pip is quick when everything pinned is already there.
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/infra/requirements.txt" >&2
}

case "${1:-}" in
  start)
    ensure_venv
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      "$0" stop >&2
    fi
    # moto with DynamoDB requests serialized, as DynamoDB applies each atomically (infra/moto-server.py).
    "$venv/bin/python" "$root/infra/moto-server.py" 127.0.0.1 "$port" >"$state/moto.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
        cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
ENV
        exit 0
      fi
      sleep 0.2
    done
    echo "moto did not become healthy on port $port; see $state/moto.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
