#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU run: the wheels the accelerator image lacks, for its
# Python 3.12, into .whl/ (git-ignored through .git/info/exclude, carried by the device tool).
# The image has jax 0.11 + CUDA 13 plugin, flax, torch 2.11 (CUDA), huggingface_hub, safetensors,
# numpy, matplotlib; it has no network. See README "A GPU run".
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
pip="${PYTHON:-python3} -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp"
for platform in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do pip="$pip --platform $platform"; done
# importlib_metadata 10 needs lazy-importer, which the image lacks (its zipp is there).
$pip -d .whl torchax==0.0.13 diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer
ls -l .whl
