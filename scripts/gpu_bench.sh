#!/usr/bin/env bash
# One GPU session's benchmarks, on a borrowed CUDA machine that has torch/transformers/peft but no MLflow:
#   1. the MovieLens quality table: `python -m em3 bench quality --offline-dir` with a pool of workers
#      (small runs leave a GPU mostly idle, so several processes share it), and, alongside it,
#   2. the synthetic demo check of issue 3 (scripts/synthetic_signal.py), then
#   3. the efficiency table on CUDA with the time that is left.
# Everything lands in $OUT (logs, JSON, a tarball of the quality run records); back here,
#   python -m em3 bench quality --import-offline DIR --table-only
# copies the records into MLflow and writes the table (see docs/RESULTS.md).
#
# Usage, from the repo root:  OUT=/path DEADLINE_S=540 WORKERS=12 [SYNTHETIC=0] [EFFICIENCY=0] bash scripts/gpu_bench.sh
# Runs already finished at home travel as records in .device/quality_done/ (written by
#   python -m em3 bench quality --export-offline .device/quality_done
# ); the pool starts from them, so it trains only what is missing. EFFICIENCY=0 skips phase 3.
# Needs .device/ (git-ignored; `python scripts/make_device_bundle.py` builds it from ../shared): the
# MovieLens files and the two encoders, small enough to travel (carry [".device"]). DEVICE=cpu and a short DEADLINE_S rehearse it on a laptop.
set -u
: "${OUT:?set OUT to the directory the results go to}"
DEADLINE_S=${DEADLINE_S:-540}
WORKERS=${WORKERS:-12}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
T0=$(date +%s)
left() { echo $((DEADLINE_S - ($(date +%s) - T0))); }

D=$PWD/.device
export EM3_CACHE_DIR=${EM3_CACHE_DIR:-/tmp/em3-cache} EM3_MOVIELENS_DIR=${EM3_MOVIELENS_DIR:-$D/movielens-100k}
export EM3_IMAGE_ENCODER=${EM3_IMAGE_ENCODER:-$D/models/mobilenet_v2_1.0_224_coral}
export EM3_TEXT_ENCODER=${EM3_TEXT_ENCODER:-$D/models/all-MiniLM-L6-v2-2layer-fp16}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
QDIR=${QDIR:-/tmp/em3-quality}
mkdir -p "$OUT" "$QDIR"
if [ -d "$D/quality_done" ]; then cp -n "$D"/quality_done/*.json "$QDIR"/ 2>/dev/null; fi
echo "quality records to start from: $(ls "$QDIR"/*.json 2>/dev/null | wc -l)"

{ date -u; nproc --all; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== feature cache ($(left) s left)"
$PY - <<'EOF' 2>&1 | tee "$OUT/cache.log"
import time
from em3.config import preset
from em3.data.cache import build_item_tokens
from em3.data.load import load_dataset
from em3.data.samples import build_samples
cfg = preset("movielens")
t = time.perf_counter(); raw = load_dataset(cfg.data); samples = build_samples(raw, cfg.data)
t1 = time.perf_counter(); tokens = build_item_tokens(raw, samples, cfg.encoder, progress=False)
print(f"data {t1 - t:.1f} s, tokens {time.perf_counter() - t1:.1f} s: image {tokens.image.shape}, text {tokens.text.shape}")
EOF

echo "== quality pool of $WORKERS + synthetic demo ($(left) s left)"
EFFICIENCY=${EFFICIENCY:-1}
QUALITY_S=$(( $(left) - ( EFFICIENCY == 1 ? ${EFFICIENCY_MIN_S:-150} : 20 ) ))
timeout "$QUALITY_S" $PY -m em3 bench quality --offline-dir "$QDIR" --workers "$WORKERS" > "$OUT/quality.log" 2>&1 &
QPID=$!
if [ "${SYNTHETIC:-1}" = 1 ] && [ -f scripts/synthetic_signal.py ]; then
  timeout "$QUALITY_S" $PY scripts/synthetic_signal.py --preset demo --arms id_only,em3,em3_image_only,em3_text_only \
    --seeds 0,1 --device "$DEVICE" --json-out "$OUT/synthetic_demo.json" > "$OUT/synthetic.log" 2>&1 &
fi
wait
tail -n 25 "$OUT/quality.log"; tail -n 12 "$OUT/synthetic.log" 2>/dev/null
tar czf "$OUT/quality_records.tgz" -C "$QDIR" --exclude='*.claim' --exclude='*.tmp*' .
echo "quality records: $(ls "$QDIR"/*.json 2>/dev/null | wc -l)"

if [ "$EFFICIENCY" = 1 ]; then
  echo "== efficiency ($(left) s left)"
  timeout $(( $(left) - 15 )) $PY -m em3 bench efficiency --device "$DEVICE" --no-track --no-write \
    --lever-lengths 50 --json-out "$OUT/efficiency.json" > "$OUT/efficiency.log" 2>&1
  tail -n 40 "$OUT/efficiency.log"
fi
echo "== done in $(( $(date +%s) - T0 )) s"
