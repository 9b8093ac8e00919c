#!/usr/bin/env bash
# `make image`: builds Dockerfile.lambda with the legacy builder (no BuildKit frontend to pull), on the host
# network (the build's apt/pip steps; this Docker daemon runs without a bridge network), from LAMBDA_BASE.
# The build args it used go to .build/image.env: `make image-test` runs `sam build` with the same values as
# template parameters (then every build step is a cache hit, so sam build needs no network here).
#
#   make image                                   # stand-in base, tiny model
#   make image MODEL_SOURCE=models/colqwen2-v1.0 # a real model directory in the build context
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-docvision:local}
LAMBDA_BASE=${LAMBDA_BASE:-docvision-base/debian:bookworm-standin}
MODEL_SOURCE=${MODEL_SOURCE:-tiny}
MODEL_REVISION=${MODEL_REVISION:-}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
ALLOW_CUDA_TORCH=${ALLOW_CUDA_TORCH:-0}

probe() {  # a PEP 503 index that serves both torch and torchvision
  python3 - "$1" <<'PY'
import sys, urllib.request
base = sys.argv[1].rstrip("/")
try:
    for name in ("torch", "torchvision"):
        urllib.request.urlopen(f"{base}/{name}/", timeout=10).read(1)
except Exception:
    sys.exit(1)
PY
}
if ! probe "$TORCH_INDEX_URL"; then
  # This sandbox reaches PyPI only; PyPI has no CPU build of torchvision for x86_64 (its torchvision needs the
  # CUDA torch: `operator torchvision::nms does not exist` beside a CPU torch), so the image gets the same
  # torch/torchvision wheels as the tests' venv, CUDA libraries included (they run on the CPU).
  echo "image: WARNING: $TORCH_INDEX_URL is unreachable; building with PyPI's torch/torchvision (CUDA builds," \
       "ALLOW_CUDA_TORCH=1). bench/results/image.json reports the nvidia/triton share of the image." >&2
  TORCH_INDEX_URL=https://pypi.org/simple
  ALLOW_CUDA_TORCH=1
fi

# A TLS-intercepting proxy's CA (this sandbox has one) reaches the build stages only, never the final image.
mkdir -p .build
rm -f .build/extra-ca.crt
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cat /usr/local/share/ca-certificates/*.crt > .build/extra-ca.crt
fi

cat > .build/image.env <<ENV
IMAGE=$IMAGE
LAMBDA_BASE=$LAMBDA_BASE
TORCH_INDEX_URL=$TORCH_INDEX_URL
ALLOW_CUDA_TORCH=$ALLOW_CUDA_TORCH
MODEL_SOURCE=$MODEL_SOURCE
MODEL_REVISION=$MODEL_REVISION
ENV
old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
start=$(date +%s)
DOCKER_BUILDKIT=0 docker build --network host -f Dockerfile.lambda -t "$IMAGE" \
  --build-arg LAMBDA_BASE="$LAMBDA_BASE" \
  --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
  --build-arg ALLOW_CUDA_TORCH="$ALLOW_CUDA_TORCH" \
  --build-arg MODEL_SOURCE="$MODEL_SOURCE" \
  --build-arg MODEL_REVISION="$MODEL_REVISION" \
  .
echo "image: $IMAGE built in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
echo "BUILD_SECONDS=$(( $(date +%s) - start ))" >> .build/image.env
# Docker layer caching: the build and app stages get tags (instant: every step is a cache hit), so they stay
# the cache of the next build while the stages of earlier builds, now untagged, are pruned (the disk holds
# a few GB per build).
for stage in build app; do
  DOCKER_BUILDKIT=0 docker build -q --network host -f Dockerfile.lambda --target "$stage" -t "docvision-cache:$stage" \
    --build-arg LAMBDA_BASE="$LAMBDA_BASE" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
    --build-arg ALLOW_CUDA_TORCH="$ALLOW_CUDA_TORCH" --build-arg MODEL_SOURCE="$MODEL_SOURCE" \
    --build-arg MODEL_REVISION="$MODEL_REVISION" . >/dev/null 2>&1
done
new=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
docker image prune -f >/dev/null
echo "image: docker disk use: $(docker system df --format '{{.Type}} {{.Size}}' | tr '\n' ' ')"
