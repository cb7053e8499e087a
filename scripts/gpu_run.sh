#!/usr/bin/env bash
# The measured GPU run, as ONE command on a lent GPU machine (see README "A GPU run"):
#
#   scripts/gpu_run.sh FORM [DTYPE] [LATENT]      FORM: 3d | taps (the 3D convolution's form)
#
# installs the carried wheels (.whl/, made by scripts/gpu_wheels.sh) into /tmp/site, records the
# versions and the GPU, then runs the benchmark: torch's CUDA decode (the reference), torchax and
# native_flax (cold compile, warm start from JAX's cache and from executables, decode median, device
# memory, error vs torch), each in a fresh process, with TORCHAX_VAE_CONV=FORM for the JAX paths.
# Default: bfloat16 at latent 1,16,13,60,90 (CogVideoX-2b config, 49 x 480 x 720). Results land in
# $OUT (the device tool's) or gpu-out/: results.json, the table, the logs. One form per call keeps a
# call within the device tool's limits; the two calls give the two forms side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
form="${1:?usage: scripts/gpu_run.sh 3d|taps [float32|bfloat16] [B,C,T,H,W]}"
dtype="${2:-bfloat16}"
latent="${3:-1,16,13,60,90}"
out="${OUT:-gpu-out}/$form-$dtype"
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TORCHAX_VAE_CONV="$form"
# float32 on a GPU: XLA may take TF32 for convolutions by default; parity with torch (TF32 off) needs full precision.
if [ "$dtype" = float32 ]; then export JAX_DEFAULT_MATMUL_PRECISION=highest; fi
python3 - <<'PY' | tee "$out/versions.txt"
import importlib.metadata as m, platform, subprocess
print("python", platform.python_version())
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "torch", "torchax", "diffusers"):
  try:
    print(name, m.version(name))
  except m.PackageNotFoundError:
    print(name, "missing")
print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip())
PY
python3 -m compare.bench --latent "$latent" --dtype "$dtype" --repeats 3 --out "$out" 2>&1 | tee "$out/bench.log"
