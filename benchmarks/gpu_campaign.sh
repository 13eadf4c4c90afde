#!/usr/bin/env bash
# The reproduction campaign on a lent GPU, in one device call of about 10 minutes:
#   1. print the GPU;  2. measure each campaign model's training images/s (BENCH_S seconds in all);
#   3. advance every unfinished run of every stage at once on the one device until the time is
#      nearly spent;  4. stop them with SIGTERM (each writes its checkpoint);  5. pack the run
#      folders and any finished weights into $OUT (pieces of 15 MiB, at most 4: 8 files of
#      16 MiB come back) to be unpacked here and committed.
#
# The data does not travel with the tree (../shared stays behind): carry it in pieces first, one
# transfer each (each call carries at most 64 MiB with the working tree), checked by sha256 on
# arrival. Here:  python -m resnetlab.reproduce.campaign pack-data _gpu/data --part-mb 40
# then one device call per piece:  carry=["_gpu/data/part-00", "_gpu/data/manifest.json"]  command="true"
# (the machine keeps ignored files between calls while it is warm), and last:
#   carry=["_gpu/data/part-04", ...]  command="bash benchmarks/gpu_campaign.sh"  timeout_s=600
# Back here:  cat /work/.device/.../campaign.tar.part-* | tar -xf -   then commit results/.
#
# CPU rehearsal (no GPU; shortened runs in another root, nothing of results/campaign touched):
#   REHEARSAL=40 ROOT=/tmp/rehearsal OUT=/tmp/rehearsal-out BUDGET_S=240 BENCH_S=10 bash benchmarks/gpu_campaign.sh
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S=${BUDGET_S:-480}      # the whole script but the last checkpoints and packing: the call has 600 s
BENCH_S=${BENCH_S:-30}         # step 2, all models together
STOP_S=${STOP_S:-45}           # kept for the checkpoints and the packing
ROOT=${ROOT:-results/campaign}
OUT=${OUT:?OUT must name the folder whose files come back}
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}  # `make demo`'s venv here, the device's python there
REHEARSAL=${REHEARSAL:-}
rehearsal=(); [ -n "$REHEARSAL" ] && rehearsal=(--rehearsal "$REHEARSAL")
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

# resnetlab itself: the machine has torch; install ours without touching its packages
if ! "$PY" -c "import resnetlab" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || export PYTHONPATH="$PWD/src"
fi

echo "== 1. device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi (CPU rehearsal)"
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

echo "== 2. data"
if [ ! -e _data/cifar-10-batches-py ] && [ -f _gpu/data/manifest.json ]; then
  "$PY" -m resnetlab.reproduce.campaign unpack-data _gpu/data
fi

echo "== 3. training images/s of each model (the engine's step against an eager NCHW loop), $BENCH_S s in all"
"$PY" - "$BENCH_S" "$OUT/bench.jsonl" <<'EOF_BENCH'
import json, sys, time
from resnetlab.bench import bench_train
from resnetlab.reproduce.campaign import RUNS
budget, out = float(sys.argv[1]), sys.argv[2]
models = list(dict.fromkeys(run.model for run in RUNS.values()))
start = time.perf_counter()
with open(out, "a") as f:
    for i, model in enumerate(models):
        left = budget - (time.perf_counter() - start)
        if left <= 0:
            print(f"{model:<17} not measured: the {budget:.0f} s are spent")
            continue
        # 2 loops x (1 warm-up + 3 repeats) of min_time each, the rest of the budget shared by the models left
        r = bench_train(model, device="auto", repeats=3, warmup=1, min_time=max(0.05, left / (len(models) - i) / 8))
        f.write(json.dumps(r) + "\n")
        print(f"{model:<17} ours {r['img_s']:>9.1f} img/s  eager {r['baseline_img_s']:>9.1f} img/s  {r['speedup']:.2f}x",
              flush=True)
EOF_BENCH

echo "== 4. advancing every unfinished run"
"$PY" -m resnetlab.reproduce.campaign start --root "$ROOT" --all-stages "${rehearsal[@]}"
deadline=$((START + BUDGET_S - STOP_S))
while [ "$(date +%s)" -lt "$deadline" ]; do
  running=$(pgrep -f "resnetlab.reproduce.campaign train .*--root $ROOT" | wc -l || true)
  [ "$running" -eq 0 ] && break
  sleep 5
done
pkill -TERM -f "resnetlab.reproduce.campaign train .*--root $ROOT" || true
for _ in $(seq 1 "$STOP_S"); do
  pgrep -f "resnetlab.reproduce.campaign train .*--root $ROOT" >/dev/null || break
  sleep 1
done
"$PY" -m resnetlab.reproduce.campaign status --root "$ROOT" "${rehearsal[@]}" | tee "$OUT/status.txt"
for log in "$ROOT"/*.log; do echo "== $log"; tail -c 1500 "$log" | tr '\r' '\n' | tail -5; done > "$OUT/logs.txt" 2>&1 || true

echo "== 5. packing"
weights=(); [ -z "$REHEARSAL" ] && [ -d results/cifar10 ] && weights=(results/cifar10)
tar -cf - --exclude="*.lock" --exclude="*.log" "$ROOT" "${weights[@]}" | split -b 15M -d - "$OUT/campaign.tar.part-"
ls -l "$OUT"
parts=$(ls "$OUT"/campaign.tar.part-* | wc -l)
[ "$parts" -le 4 ] || echo "WARNING: $parts pieces: only 8 files of 16 MiB (64 MiB in all) come back"
echo "done in $(( $(date +%s) - START )) s"
