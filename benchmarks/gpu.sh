#!/usr/bin/env bash
# The GPU benchmarks in one prepared run (under 8 minutes on one H100/H200), merged into one JSON file:
#
#   1. extract_throughput.py --arch llava-1.5-7b   random weights, bfloat16, built on meta, materialised on the GPU
#   2. extract_throughput.py --arch qwen2-vl-7b    the same for Qwen2-VL-7B-Instruct's shapes
#      each: reference (batch 1, every step to the CPU), plain batched generate, mmconcepts extract in generate
#      and teacher modes at batch 16 and 64, 30 new tokens, 640x480 JPEGs, 8 loader workers; images/s and peak
#      GPU memory (torch.cuda.max_memory_allocated) of each pattern
#   3. decompose.py  mmconcepts SemiNMF vs overcomplete's SemiNMF, n = 100,000, D = 4,096, K = 20, on the GPU:
#      time to within 1% of the best error, peak GPU memory
#   4. sae_speed.py  our TopK and BatchTopK SAEs vs overcomplete's, dictionary_learning's and SAELens' (those installed),
#      n = 200,000, D = 4,096, K = 16,384, k = 64, at most 15 s of training each: time to equal error and L0
#
# Writes benchmarks/results/gpu-<date>.json (and copies it to $OUT when that is set, so a remote run returns it).
#
#   bash benchmarks/gpu.sh            # on a machine with a CUDA GPU
#   bash benchmarks/gpu.sh --smoke    # anywhere, on the CPU: tiny shapes, same code, -> results/gpu-smoke-<date>.json
#
# Python: $PYTHON, else .venv/bin/python when present, else python3. mmconcepts is read from src/ (no install
# needed). Wheels in .whl/ (e.g. overcomplete, `pip download overcomplete --no-deps -d .whl`) are installed into a
# temporary folder first, for a machine without network; without overcomplete step 3 runs mmconcepts alone.
set -euo pipefail

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (use --smoke or nothing)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATE="$(date +%Y-%m-%d)"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
TMP="$(mktemp -d -t mmc-gpu-XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

if [[ -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMP/site" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$TMP/site"
fi

if [[ $SMOKE == 1 ]]; then
  NAME="gpu-smoke-$DATE"
  LLAVA=(--arch tiny-llava --device cpu --dtype float32 --n 8 --n-reference 2 --batch-size 4 8 --new-tokens 6
         --image-size 640x480 --num-workers 1 --threads 1)
  QWEN=(--arch tiny-qwen2-vl --device cpu --dtype float32 --n 8 --n-reference 2 --batch-size 4 8 --new-tokens 6
        --image-size 640x480 --num-workers 1 --threads 1)
  DECOMP=(--device cpu --n 2000 --d 64 --k 20 --max-iter 100)
  SAES=(--device cpu --quick --families topk,batchtopk --budget 5)
else
  NAME="gpu-$DATE"
  LLAVA=(--arch llava-1.5-7b --device cuda --dtype bfloat16 --n 128 --n-reference 8 --batch-size 16 64 --new-tokens 30
         --image-size 640x480 --num-workers 8)
  QWEN=(--arch qwen2-vl-7b --device cuda --dtype bfloat16 --n 128 --n-reference 8 --batch-size 16 64 --new-tokens 30
        --image-size 640x480 --num-workers 8)
  DECOMP=(--device cuda --n 100000 --d 4096 --k 20 --max-iter 500)
  SAES=(--device cuda --n 200000 --d 4096 --k-concepts 16384 --k 64 --epochs 3 --batch-size 4096
        --families topk,batchtopk --budget 15)
fi
mkdir -p benchmarks/results
RESULT="benchmarks/results/$NAME.json"
STEPS="$TMP/steps.tsv"
: >"$STEPS"

step() {  # step NAME COMMAND...: run it, print and record its wall time and exit status
  local name="$1"; shift
  local t0 t1 rc=0
  echo "=== $name: $*"
  t0=$(date +%s.%N)
  "$@" || rc=$?
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$secs" "$rc" >>"$STEPS"
  echo "=== $name: ${secs} s (exit $rc)"
  return "$rc"
}

step environment "$PY" - "$SMOKE" "$TMP/env.json" <<'EOF'
import importlib.util, json, os, platform, sys
import torch, transformers
smoke = sys.argv[1] == "1"
if not smoke and not torch.cuda.is_available():
    sys.exit("no CUDA GPU visible: run on a GPU machine, or use --smoke on the CPU")
env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
       "cpu_cores": os.cpu_count(), "smoke": smoke,
       "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
       "gpu_memory_gb": (torch.cuda.get_device_properties(0).total_memory / 2**30) if torch.cuda.is_available() else None}
env["overcomplete"] = importlib.util.find_spec("overcomplete") is not None  # decompose.py imports a submodule
env["dictionary_learning"] = importlib.util.find_spec("dictionary_learning") is not None
env["sae_lens"] = importlib.util.find_spec("sae_lens") is not None
with open(sys.argv[2], "w") as f:
    json.dump(env, f)
print(json.dumps(env))
EOF
SOLVERS=ours,overcomplete
if ! grep -q '"overcomplete": true' "$TMP/env.json"; then
  echo "overcomplete is not installed: the Semi-NMF step runs mmconcepts alone (carry its wheel in .whl/)" >&2
  SOLVERS=ours
fi
SAE_LIBS=ours
grep -q '"overcomplete": true' "$TMP/env.json" && SAE_LIBS="$SAE_LIBS,overcomplete"
grep -q '"dictionary_learning": true' "$TMP/env.json" && SAE_LIBS="$SAE_LIBS,dictionary_learning"
grep -q '"sae_lens": true' "$TMP/env.json" && SAE_LIBS="$SAE_LIBS,sae_lens"

# a failing step does not stop the others (a lent GPU's minutes are few): its exit status is recorded and the
# script exits non-zero at the end
FAILED=0
step llava "$PY" benchmarks/extract_throughput.py "${LLAVA[@]}" --json "$TMP/llava.json" || FAILED=1
step qwen2_vl "$PY" benchmarks/extract_throughput.py "${QWEN[@]}" --json "$TMP/qwen2_vl.json" || FAILED=1
step semi_nmf "$PY" benchmarks/decompose.py "${DECOMP[@]}" --solvers "$SOLVERS" --json "$TMP/semi_nmf.json" \
  || FAILED=1
step sae_speed "$PY" benchmarks/sae_speed.py "${SAES[@]}" --libraries "$SAE_LIBS" --json "$TMP/sae_speed.json" \
  || FAILED=1

"$PY" - "$TMP" "$RESULT" "$DATE" <<'EOF'
import json, sys
from pathlib import Path
tmp, result, date = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
merged = {"date": date, "environment": json.loads((tmp / "env.json").read_text()), "steps": {}}
for line in (tmp / "steps.tsv").read_text().splitlines():
    name, secs, rc = line.split("\t")
    merged["steps"][name] = {"seconds": float(secs), "exit": int(rc)}
for name in ("llava", "qwen2_vl", "semi_nmf", "sae_speed"):
    file = tmp / f"{name}.json"
    merged[name] = json.loads(file.read_text()) if file.exists() else None  # None: the step failed
result.write_text(json.dumps(merged, indent=1))
print(f"wrote {result}")
for name, s in merged["steps"].items():
    print(f"  {name:<12}{s['seconds']:>8.1f} s")
print(f"  {'total':<12}{sum(s['seconds'] for s in merged['steps'].values()):>8.1f} s")
EOF
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then cp "$RESULT" "$OUT/"; fi
exit "$FAILED"
