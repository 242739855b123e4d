#!/usr/bin/env bash
# Release build of every Lambda function with cargo-lambda (from .venv), for arm64 (template.yaml's
# architecture). Falls back to x86_64 only when the aarch64 standard library cannot be installed,
# and says so. Prints each function's binary and zip size.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
functions=(webhook-receiver pc-to-crm crm-poller crm-to-pc webhook-registration)
export PATH="$root/.venv/bin:$PATH"

if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
  || rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
  arch=arm64 flag=--arm64
else
  arch=x86_64 flag=--x86-64
  echo "NOTE: the aarch64-unknown-linux-gnu standard library could not be installed;"
  echo "      building x86_64 Lambda binaries instead (deploy them with Architectures: [x86_64])."
fi
# One directory per architecture: cargo-lambda writes <dir>/<bin>/bootstrap for both.
out="${CARGO_TARGET_DIR:-$root/target}/lambda/$arch"
packages=()
for f in "${functions[@]}"; do packages+=(-p "$f"); done
cargo lambda build --release "$flag" --lambda-dir "$out" "${packages[@]}"

printf '%-22s %-7s %12s %12s\n' function arch binary zip
for f in "${functions[@]}"; do
  bin="$out/$f/bootstrap"
  zip_bytes=$(python3 - "$bin" <<'PY'
import io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(buf.getvalue()))
PY
)
  printf '%-22s %-7s %12s %12s\n' "$f" "$arch" "$(stat -c %s "$bin")" "$zip_bytes"
done
