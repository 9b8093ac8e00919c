#!/usr/bin/env bash
# Copy this worktree's code (+ the wheels a call needs) into the ignored folder of the checkout the device tool
# sends (the session's checkout, not a helper's worktree): /work/main/.cpu-device, named in the call's carry.
#   bash bench/device/sync.sh [WHEEL_GLOB...]
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
dst=${DEVICE_CHECKOUT:-/work/main}/.cpu-device
grep -qx "/.cpu-device/" "${DEVICE_CHECKOUT:-/work/main}/.git/info/exclude" 2>/dev/null || { mkdir -p "${DEVICE_CHECKOUT:-/work/main}/.git/info"; echo "/.cpu-device/" >> "${DEVICE_CHECKOUT:-/work/main}/.git/info/exclude"; }
rm -rf "$dst"; mkdir -p "$dst"
tar -C "$src" --exclude=.git --exclude=.venv --exclude=.stamps --exclude=.whl --exclude='models/tiny-*' \
  --exclude=bench/work --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache --exclude=build \
  --exclude=baml_client --exclude='*.egg-info' --exclude=.demo --exclude=tests --exclude=docs -cf - . | tar -C "$dst" -xf -
mkdir -p "$dst/.whl"
for g in "$@"; do cp "$src"/.whl/$g "$dst/.whl/"; done
du -sh "$dst"; ls "$dst/.whl"
