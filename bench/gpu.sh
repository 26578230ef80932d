#!/usr/bin/env bash
# One prepared command for a lent GPU (minutes, rarely): the CUDA tests, the peer rows on CUDA,
# whole-volume rows (512 x 512 x 300 CT per slice, nnU-Net-sized 3D U-Net) with timings and peak
# GPU memory, written as JSON. Runs within 5 minutes on one H100.
#
#   bash bench/gpu.sh                 # on the GPU machine; results in bench/results/gpu/
#   bash bench/gpu.sh --dry-run       # on a CPU: every step imports and starts, at tiny sizes
#   bash bench/gpu.sh --out DIR       # write the JSON (and the test report) into DIR
#
# Steps (each under its own time limit, 300 s together on the GPU; a failing step is recorded and
# the next one still runs; the dry run's limits are generous, for a busy CPU):
#   1. pytest -m cuda over the test files that hold CUDA tests (dry run: collected only)
#   2. bench.peers.run: plain inference, XAIExplain Grad-CAM, five CAMs in one pass, captum,
#      MONAI and pytorch-grad-cam rows (those installed) on a 300 x 512 x 512 CT and a 3D volume
#   3. bench.gpu_volumes: per-slice Grad-CAM of the 512 x 512 x 300 CT, 3D Grad-CAM of an
#      nnU-Net-sized U-Net on 256 x 320 x 320 (128^3 windows)
#   4. bench.peers.bench_nnunet --plan full: nnU-Net's own predictor beside ours (if nnunetv2 is installed)
# gpu.json lists every step's status and seconds. The exit status is 0 only when every step passed.
set -uo pipefail

cd "$(dirname "$0")/.."
DRY=0
OUT=bench/results/gpu
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) shift; OUT="${1:?--out needs a folder}" ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument '$1' (use --dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/XAIExplain:$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
STEPS="$OUT/steps.jsonl"
: > "$STEPS"

if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: no CUDA GPU visible to torch here; run it on the GPU machine, or use --dry-run" >&2
    exit 2
fi
if [ "$DRY" = 1 ]; then DEVICE=cpu; else DEVICE=cuda; fi

# step NAME LIMIT_SECONDS COMMAND...: run it, record status and seconds
step() {
    local name="$1" limit="$2"
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local started status
    started=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@"
    status=$?
    local seconds
    seconds=$("$PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$started" "$(date +%s.%N)")
    echo "{\"step\": \"$name\", \"status\": $status, \"seconds\": $seconds}" >> "$STEPS"
    echo "== $name: exit $status after ${seconds}s"
}

# the test files that hold CUDA tests: every one marks them with pytest.mark.cuda
mapfile -t CUDA_TESTS < <(grep -rl --include='test_*.py' "mark.cuda" Testing | sort)
if [ "$DRY" = 1 ]; then
    step "cuda tests (collected)" 300 "$PY" -m pytest -q -p no:cacheprovider --collect-only -m cuda "${CUDA_TESTS[@]}"
    step "peer rows" 300 "$PY" -m bench.peers.run --device cpu --slices 4 --size 32 --width 8 --batch 2 \
        --repeats 1 --rounds 1 --skip-3d --out "$OUT/peers.json"
    step "whole volumes" 300 "$PY" -m bench.gpu_volumes --dry-run --out "$OUT/gpu_volumes.json"
else
    step "cuda tests" 60 "$PY" -m pytest -q -p no:cacheprovider -m cuda "${CUDA_TESTS[@]}" \
        --junitxml="$OUT/cuda_tests.xml"
    step "peer rows" 100 "$PY" -m bench.peers.run --device cuda --rounds 1 --repeats 2 --out "$OUT/peers.json"
    step "whole volumes" 70 "$PY" -m bench.gpu_volumes --device cuda --out "$OUT/gpu_volumes.json"
fi
if "$PY" -c "import nnunetv2" 2>/dev/null; then
    if [ "$DRY" = 1 ]; then PLAN=tiny LIMIT=300; else PLAN=full LIMIT=70; fi
    step "nnU-Net rows" "$LIMIT" "$PY" -m bench.peers.bench_nnunet --plan "$PLAN" --device "$DEVICE" --rounds 1 \
        --threads 4 --out "$OUT/nnunet.json"
else
    echo "{\"step\": \"nnU-Net rows\", \"status\": \"skipped: nnunetv2 is not installed\", \"seconds\": 0}" >> "$STEPS"
fi

"$PY" - "$OUT" "$DRY" <<'EOF'
import json, platform, sys
from pathlib import Path

out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
result = {"dry_run": dry, "platform": platform.platform(), "steps": steps}
for name in ("peers", "gpu_volumes", "nnunet"):
    path = out / f"{name}.json"
    if path.exists():
        result[name] = json.loads(path.read_text())
(out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"{'step':24} {'status':>8} {'seconds':>8}")
for s in steps:
    print(f"{s['step']:24} {str(s['status']):>8} {s['seconds']:>8}")
print(f"wrote {out / 'gpu.json'}")
failed = [s["step"] for s in steps if isinstance(s["status"], int) and s["status"] != 0]
sys.exit(1 if failed else 0)
EOF
