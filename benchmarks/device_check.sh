#!/usr/bin/env bash
# There (the lent GPU machine, 16 cores): the issue-6 device checks in one call, about 4 minutes.
#   1. rltransfer installed over the image's torch (wheels from benchmarks/device_wheels.sh in .whl/);
#   2. the device tests and a tiny `rltransfer run --device cuda` grid (manifests record the GPU);
#   3. benchmarks/gpu_trunk.py: a 1024x1024-trunk multi-task run, CUDA vs the CPU (all cores);
#   4. benchmarks/grid_scaling.py with one process per core;
#   5. benchmarks/pool_start.py with one worker per core.
# Everything it prints is also written under $OUT (or ./device-out where OUT is unset).
# A dry run of the script on a machine without a GPU: DEVICE=cpu bash benchmarks/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-$REPO/device-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME COMMAND...: run, keep its output in $OUT/NAME.txt, note its exit code
    local name=$1; shift
    log "$name: $*"
    "$@" 2>&1 | tee "$OUT/$name.txt"
    log "$name: exit ${PIPESTATUS[0]}"
}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# The build below runs on /tmp/site's setuptools (from .whl), whatever the image's is.
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . || exit 1
# Outside the checkout: its rltransfer/ folder lacks the envs and policies subpackages the install maps in.
cd /tmp
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
log "cores: $(nproc); $(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())')"
step devices python3 -m pytest -q -p no:cacheprovider -c "$REPO/pyproject.toml" --rootdir "$REPO" \
    "$REPO/tests/test_devices.py" "$REPO/tests/test_ppo_lean.py" -k "device"
cat > /tmp/gpu-grid.yaml <<'YAML'
name: gpu-smoke
family: cartpole
source: {timesteps: 2048}
targets: [long, longer]
arms: [scratch, finetune]
seeds: 2
timesteps: 4096
eval: {freq: 2048, episodes: 2}
YAML
rm -rf /tmp/gpu-grid  # a rerun on the same machine starts the grid afresh
step grid rltransfer run /tmp/gpu-grid.yaml --device "$DEVICE" --workers 2 --out /tmp/gpu-grid --quiet
# The source pretrains in a pool worker beside the scratch runs: both manifests must name the device.
python3 -c "import json; print('run device:', json.load(open('/tmp/gpu-grid/finetune/seed0/manifest.json'))['device'])" \
    2>&1 | tee -a "$OUT/summary.txt"
python3 -c "import json; print('source device:', json.load(open('/tmp/gpu-grid/source/manifest.json'))['device'])" \
    2>&1 | tee -a "$OUT/summary.txt"
if [ "$DEVICE" = cpu ]; then
    step gpu_trunk python3 "$REPO/benchmarks/gpu_trunk.py" --devices cpu --timesteps 2048 --repeats 1
else
    step gpu_trunk python3 "$REPO/benchmarks/gpu_trunk.py" --timesteps 16384 --repeats 3
fi
step grid_scaling python3 "$REPO/benchmarks/grid_scaling.py" --processes "$(nproc)" --timesteps 16384 --repeats 2
# Pool workers forked from the forkserver vs spawned, one per core (16 concurrent imports vs one).
step pool_start python3 "$REPO/benchmarks/pool_start.py" --workers "$(nproc)" --repeats 2
