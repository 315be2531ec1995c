#!/usr/bin/env bash
# One short GPU check (about 5 minutes at most): the 7B feature timing (bench_gpu_plan.py) and
# the CUDA tests (tests/unit/test_cuda.py), logs under $OUT (default ./gpu_out).
#
#   bash bench/gpu_check.sh            # from the repository root, on a machine with a CUDA GPU
#
# It installs nothing when the machine's Python already has a CUDA torch (the device image's
# /opt/torch/.venv does); a missing tomli_w (only used to write TOML) is replaced by a stub.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee "$LOG") 2>&1
T0=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*"; }

PY="${GPU_CHECK_PYTHON:-}"  # set it to skip the search (and the CUDA check)
[ -n "$PY" ] || for cand in /opt/torch/.venv/bin/python3 "$PWD/.venv/bin/python" python3; do
    if command -v "$cand" >/dev/null 2>&1 && \
       "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
    then PY="$cand"; break; fi
done
if [ -z "$PY" ]; then
    say "no Python with a CUDA-enabled torch found (tried /opt/torch/.venv, .venv, python3)"
    nvidia-smi || true
    exit 2
fi
say "python: $PY"
"$PY" - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0),
      f"{torch.cuda.mem_get_info()[1] / 1e9:.1f} GB", "bf16", torch.cuda.is_bf16_supported())
for name in ("transformers", "peft", "safetensors", "tokenizers", "numpy", "pandas", "pytest"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "MISSING", exc)
EOF
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm --format=csv || true

SHIM="$(mktemp -d)"
if ! "$PY" -c "import tomli_w" 2>/dev/null; then
    printf 'def dumps(obj, **kw):\n    raise ModuleNotFoundError("tomli_w is not installed")\n' \
        > "$SHIM/tomli_w.py"
    say "tomli_w missing: a stub that refuses to write TOML is on PYTHONPATH"
fi
export PYTHONPATH="$PWD:$SHIM" PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

say "1/2 bench_gpu_plan: Llama-2-7B shape, LoRA r=128, 2048 tokens (limit 190 s)"
timeout 190 "$PY" bench/bench_gpu_plan.py 2>&1 | tee "$OUT/bench_gpu_plan.txt"
BENCH=${PIPESTATUS[0]}
say "bench exit $BENCH"

say "2/2 CUDA tests (limit 140 s)"
timeout 140 "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_cuda.py 2>&1 \
    | tee "$OUT/test_cuda.txt"
TESTS=${PIPESTATUS[0]}
say "tests exit $TESTS"

echo "==== summary ===="
grep -h "^tokens_per_s=" "$OUT/bench_gpu_plan.txt" || echo "bench: no timing line (exit $BENCH)"
tail -n 1 "$OUT/test_cuda.txt"
say "done"
[ "$BENCH" = 0 ] && [ "$TESTS" = 0 ]
