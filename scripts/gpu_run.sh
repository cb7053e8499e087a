#!/usr/bin/env bash
# The measured GPU run, as ONE command on a lent GPU machine (see README "A GPU run"):
#
#   scripts/gpu_run.sh [BUDGET_S]          (default 540: the device tool's 10-minute call, less margin)
#
# Installs the carried wheels (.whl/, made here by scripts/gpu_wheels.sh) into /tmp/site, records the
# versions and the GPU, then, each stage under what is left of the budget:
#   1. CogVideoX-2b config, 49x480x720 (latent 1,16,13,60,90), bfloat16: torch's CUDA decode (the
#      reference), then torchax and native_flax in both 3D convolution forms (--conv 3d,taps): cold
#      compile, warm start from JAX's cache and from stored executables, decode median, memory, error;
#      every measurement a fresh process (compare.bench).
#   2. Wan 2.1 config, 81x480x832 (latent 1,16,21,60,104), bfloat16, in the form stage 1 measured
#      faster (torchax's decode median).
# The bench writes results.json after every measurement, so a stage cut by the budget keeps what it
# finished. The device tool brings back at most 8 files: everything (results, tables, logs, versions;
# not the reference videos) goes into $OUT/gpu-run.tar.gz, and each stage's results.json and table
# beside it. Without $OUT: gpu-out/. Latents can be made small for a dry run on a CPU:
# GPU_RUN_COGVIDEOX_LATENT, GPU_RUN_WAN_LATENT. A rerun can pick up what a first call left:
# GPU_RUN_STAGES (default "cogvideox wan"), GPU_RUN_PATHS (default torch,torchax,native_flax),
# GPU_RUN_FORMS (default 3d,taps; stage 2 then takes the first form given).
set -uo pipefail
cd "$(dirname "$0")/.."
budget="${1:-540}"
started=$(date +%s)
left() { echo $((budget - ($(date +%s) - started))); }
final="${OUT:-gpu-out}"
work="$(mktemp -d /tmp/gpu-run-XXXX)"
mkdir -p "$final"

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
unset TORCHAX_VAE_CONV  # the forms are the bench's --conv

python3 - <<'PY' | tee "$work/versions.txt"
import importlib.metadata as m, platform, subprocess
print("python", platform.python_version())
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "torch", "torchax", "diffusers", "huggingface_hub", "numpy"):
  try:
    print(name, m.version(name))
  except m.PackageNotFoundError:
    print(name, "missing")
import shutil
if shutil.which("nvidia-smi"):
  print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                       capture_output=True, text=True).stdout.strip())
PY

# stage NAME RESERVE_S ARGS...: compare.bench under the budget left, less RESERVE_S for what follows.
stage() {
  local name="$1" reserve="$2" limit
  shift 2
  limit=$(($(left) - reserve))
  if ((limit < 60)); then
    echo "[gpu_run] $name skipped: ${limit} s of the budget left" | tee -a "$work/skipped.txt"
    return 1
  fi
  echo "[gpu_run] $name: up to $limit s"
  timeout --kill-after=10 "$limit" python3 -m compare.bench "$@" --out "$work/$name" > "$work/$name.md" 2> "$work/$name.log"
  local status=$?
  cat "$work/$name.md"
  echo "[gpu_run] $name: exit status $status after $(($(date +%s) - started)) s"
  return $status
}

stages="${GPU_RUN_STAGES:-cogvideox wan}"
paths="${GPU_RUN_PATHS:-torch,torchax,native_flax}"
forms="${GPU_RUN_FORMS:-3d,taps}"
case " $stages " in *" cogvideox "*)
  stage cogvideox 20 --latent "${GPU_RUN_COGVIDEOX_LATENT:-1,16,13,60,90}" --dtype bfloat16 \
    --paths "$paths" --conv "$forms" --repeats 2 ;;
esac
# The faster form by torchax's decode median (native_flax's if torchax has none); else the first of --conv.
faster=$(python3 - "$work/cogvideox/results.json" "${forms%%,*}" <<'PY'
import json, sys
try:
  rows = json.load(open(sys.argv[1]))["results"]
except (OSError, ValueError):
  rows = []
for path in ("torchax", "native_flax"):
  timed = [(r["decode_s"]["median"], r["conv_form"]) for r in rows if r["path"] == path and r.get("decode_s") and r.get("conv_form")]
  if timed:
    print(min(timed)[1])
    break
else:
  print(sys.argv[2])
PY
)
echo "[gpu_run] faster form: $faster"
case " $stages " in *" wan "*)
  stage wan 15 --model wan2.1 --latent "${GPU_RUN_WAN_LATENT:-1,16,21,60,104}" --dtype bfloat16 \
    --paths "$paths" --conv "$faster" --repeats 2 ;;
esac

for name in cogvideox wan; do
  [ -f "$work/$name/results.json" ] && cp "$work/$name/results.json" "$final/$name-results.json"
  [ -s "$work/$name.md" ] && cp "$work/$name.md" "$final/$name-table.md"
done
tar czf "$final/gpu-run.tar.gz" --exclude=reference -C "$work" .
cp "$work/versions.txt" "$final/versions.txt"
echo "[gpu_run] done after $(($(date +%s) - started)) s: $final"
