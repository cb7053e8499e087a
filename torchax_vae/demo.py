"""Decode random latents with a random-initialised released VAE config: torch vs torchax.

    python -m torchax_vae.demo --latent 1,16,2,8,8
    python -m torchax_vae.demo --model wan2.1 --latent 1,16,3,8,8     # wan2.2: 1,48,3,4,4
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--latent", default="1,16,2,8,8", help="B,C,T,H,W (default: %(default)s)")
  parser.add_argument(
    "--model", default="cogvideox-2b", help="a compare.checkpoints preset: cogvideox-2b (default), cogvideox-5b, "
    "cogvideox-1.5, wan2.1, wan2.2"
  )
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args(argv)
  shape = tuple(int(s) for s in args.latent.split(","))

  import diffusers
  import torch

  import torchax_vae
  from compare.checkpoints import PRESETS, preset_checkpoint

  if args.model not in PRESETS:
    parser.error(f"--model {args.model!r}: expected one of {', '.join(PRESETS)}")
  directory = preset_checkpoint(args.model)
  z = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)

  t0 = time.perf_counter()
  vae = torchax_vae.load(directory)
  print(f"torchax load: {time.perf_counter() - t0:.2f} s ({directory})")
  t0 = time.perf_counter()
  out = vae.decode(z)
  print(f"torchax first decode (trace + compile + run): {time.perf_counter() - t0:.2f} s -> {out.shape}")
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    out = vae.decode(z)
    times.append(time.perf_counter() - t0)
  print(f"torchax decode {shape} -> {out.shape}: median {np.median(times):.2f} s over {len(times)}")

  model = getattr(diffusers, vae.adapter.class_name).from_pretrained(directory).eval()
  times = []
  with torch.no_grad():
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      ref = model.decode(torch.from_numpy(z)).sample
      times.append(time.perf_counter() - t0)
  print(f"torch   decode {shape} -> {tuple(ref.shape)}: median {np.median(times):.2f} s over {len(times)}")
  print(f"max abs difference torchax vs torch: {np.abs(out - ref.numpy()).max():.3g}")


if __name__ == "__main__":
  main()
