#!/usr/bin/env bash
# One device call: install the carried wheels, then run the named steps (the plan: bench/README or the issue notes).
#   bash bench/device/run.sh STEP [STEP...]      steps: info prepare2 ladder16 ladder_small prepare_more gpu backfill cost16
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "pip install failed"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false BENCH_WORK=${BENCH_WORK:-/tmp/bench-work}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
quiet() { grep -v -i -E "warn|━|│|┍|┝|┕|is_causal|a\.grad|Loading weights|TracerWarning|^\s*$|if a.grad" || true; }
for step in "$@"; do
  echo "=== $step $(date +%T)"
  case $step in
    info) lscpu > "$OUT/lscpu.txt"; nvidia-smi -L; python3 -c "import openvino, nncf, colpali_engine, transformers, torch; print(openvino.__version__, nncf.__version__, transformers.__version__, torch.__version__)" 2>&1 | tail -1; free -g | head -2; df -h . | tail -1 ;;
    prepare2) timeout ${TP2:-330} python3 bench/models_cost.py --prepare --models "colqwen2@768,512,384" --backends torch,openvino 2>&1 | quiet | tail -15 ;;
    ladder16) timeout ${T16:-400} python3 bench/models_cost.py --label device-16 --cells "16,6:noamx" --backends torch,openvino \
        --models "colqwen2@768,512,384" --profile-cells "16,6:noamx" --reps 3 2>&1 | quiet | grep -E "^rep|^\{|error|Error|Traceback|exit" | tail -40 ;;
    l16) timeout ${T16:-150} python3 bench/models_cost.py --label device-16 --cells 16 --backends torch,openvino \
        --models "colqwen2@768,512,384" --profile-cells 16 --reps 3 2>&1 | quiet | grep -E "^rep|^\{|error|Error|Traceback|exit" | tail -20 ;;
    l6n) timeout ${T6:-170} python3 bench/models_cost.py --label device-6noamx --cells 6:noamx --backends torch,openvino \
        --models "colqwen2@768" --profile-cells 6:noamx --reps 3 2>&1 | quiet | grep -E "^rep|^\{|error|Error|Traceback|exit" | tail -20 ;;
    ladder_small) timeout ${TS:-560} python3 bench/models_cost.py --label device-small --cells "${SMALL_CELLS:-6+2+2:noamx,16:noamx}" --backends torch,openvino \
        --models "colqwen2@768,512,384" --reps 3 2>&1 | quiet | grep -E "^rep|^\{|error|Error|Traceback|exit" | tail -60 ;;
    prepare_more) timeout ${TP:-400} python3 bench/models_cost.py --prepare --models "colqwen3.5 colqwen3" 2>&1 | quiet | tail -8 ;;
    gpu) timeout ${TG:-200} python3 bench/models_cost.py --label device-gpu --cells gpu --models "${GPU_MODELS:-colqwen2 colqwen3.5 colqwen3}" --reps 3 2>&1 | quiet | grep -E "^rep|^\{|error|Error|Traceback" | tail -20 ;;
    backfill) timeout ${TB:-300} python3 bench/backfill_gpu.py --corpus bench/backfill_corpus --rounds 3 --workers 12 2>&1 | quiet | tail -25 ;;
    cost16) timeout ${TC:-300} python3 bench/models_cost.py --label device-cost --cells "${COST_CELLS:-16}" --models "${COST_MODELS:-colqwen3.5 colqwen3}" --reps 3 2>&1 | quiet | grep -E "^rep|^\{|error|Error|Traceback" | tail -20 ;;
  esac
  ls "$OUT"
done
