#!/usr/bin/env bash
# The image's dependency set must install on the image's platform (Debian 12 bookworm: Python 3.11, glibc
# 2.36, x86_64; Dockerfile.lambda): resolve pyproject.toml (with the `lambda` extra: awslambdaric) for that
# Python and platform, wheels only (the build stage compiles nothing), and fail on any incompatibility.
# `make lint` runs it; tests/unit/test_template.py keeps IMAGE_PYTHON in step with the Dockerfile's base.
#
#   infra/check_image_deps.sh                       # the image's platform
#   IMAGE_PLATFORM=x86_64-manylinux_2_17 infra/check_image_deps.sh   # an older glibc (Amazon Linux 2): fails
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE_PYTHON=${IMAGE_PYTHON:-3.11}
IMAGE_PLATFORM=${IMAGE_PLATFORM:-x86_64-manylinux_2_36}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
UV=${UV:-uv}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "image deps: resolving pyproject.toml for Python $IMAGE_PYTHON on $IMAGE_PLATFORM (wheels only)"
$UV pip compile pyproject.toml --extra lambda --quiet --python-version "$IMAGE_PYTHON" --python-platform "$IMAGE_PLATFORM" \
  --only-binary :all: -o "$out/image.txt"

# The CPU builds of torch/torchvision the Dockerfile installs first (same pins as pyproject.toml).
torch_pins=$(grep -oE '"(torch|torchvision)==[^"]+"' pyproject.toml | tr -d '"' | sed 's/$/+cpu/')
printf '%s\n' $torch_pins > "$out/torch-cpu.in"
if python3 - "$TORCH_INDEX_URL" <<'PY'
import sys, urllib.request
try:
    for name in ("torch", "torchvision"):
        urllib.request.urlopen(sys.argv[1].rstrip("/") + f"/{name}/", timeout=10)
except Exception:
    sys.exit(1)
PY
then
  echo "image deps: resolving $(echo $torch_pins) from $TORCH_INDEX_URL for $IMAGE_PLATFORM"
  $UV pip compile "$out/torch-cpu.in" --quiet --python-version "$IMAGE_PYTHON" --python-platform "$IMAGE_PLATFORM" \
    --only-binary :all: --index-url "$TORCH_INDEX_URL" -o "$out/torch-cpu.txt"
  if grep -qiE '^nvidia-|^triton' "$out/torch-cpu.txt"; then
    echo "image deps: the CPU torch index resolved CUDA packages:" >&2
    grep -iE '^nvidia-|^triton' "$out/torch-cpu.txt" >&2
    exit 1
  fi
else
  # No network to the PyTorch index (e.g. a sandbox that reaches only PyPI, where `make image` falls back to
  # PyPI's CUDA builds): the +cpu wheels carry the same manylinux_2_28 tag as PyPI's torch 2.13.0 wheels
  # checked above, but say plainly what was not checked.
  echo "image deps: NOT CHECKED: $TORCH_INDEX_URL is unreachable from here, so the +cpu pins ($(echo $torch_pins)) were not resolved"
fi
echo "image deps: OK ($(grep -cE '^[a-z0-9]' "$out/image.txt") packages install on $IMAGE_PLATFORM, Python $IMAGE_PYTHON)"
