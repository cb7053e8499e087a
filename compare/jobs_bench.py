"""The dataset jobs measured: ``python -m compare.jobs_bench [--model cogvideox-2b] [--items 8] ...``.

Writes ``--items`` synthetic MP4s (smooth random videos of ``--source`` size, so that the reader's
resize and crop do real work), then, in this one process on the default device (or ``--mesh``):

1. a warm-up encode and decode of one batch (compiles the programs; not timed),
2. the encode job over every video (``--size``, ``--frames``, ``--batch``),
3. the decode job over the latent files it wrote.

Each job reports items/s and frames/s, and how the wall time splits: ``device`` (from handing a batch
over to having its results on the host), ``input wait`` (the device waiting for the prefetching
reader) and ``write wait``. The goal is device busy >= 90% of the wall time: the host side (ffmpeg
reading, resizing, MP4 writing) is never the bottleneck, so a job runs at the speed ``compare.bench``
measures for encode and decode. Results go to ``--out/jobs.json`` with versions and the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_videos(directory: Path, count: int, frames: int, height: int, width: int, seed: int = 0) -> list[Path]:
  """``count`` smooth random videos (8 x 8 blocks of noise, H.264 quality 8)."""
  from torchax_vae.pipeline import write_mp4

  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(count):
    coarse = rng.integers(0, 255, (frames, height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    video = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :height, :width]
    paths.append(write_mp4(video, directory / f"clip{i:03d}.mp4", fps=24, quality=8))
  return paths


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m compare.jobs_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="cogvideox-2b", help="a compare.checkpoints preset (random weights) or a VAE dir")
  parser.add_argument("--path", choices=("torchax", "native_flax"), default="torchax")
  parser.add_argument("--items", type=int, default=8)
  parser.add_argument("--frames", type=int, default=9, help="frames encoded per video (default: %(default)s)")
  parser.add_argument("--size", default="64,64", help="H,W encoded (default: %(default)s)")
  parser.add_argument("--source", default="72,88", help="H,W of the synthetic source videos (default: %(default)s)")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--mesh", default=None)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--readers", type=int, default=None)
  parser.add_argument("--out", type=Path, default=Path("bench-out"))
  args = parser.parse_args(argv)

  import jax

  import compare.bench as bench
  from compare.checkpoints import PRESETS, preset_checkpoint
  from torchax_vae import jobs
  from torchax_vae.cli import _loader

  vae_dir = preset_checkpoint(args.model) if args.model in PRESETS else Path(args.model)
  size = tuple(int(v) for v in args.size.split(","))
  source = tuple(int(v) for v in args.source.split(","))
  work = Path(tempfile.mkdtemp(prefix="jobs-bench-"))
  try:
    videos = make_videos(work / "videos", args.items, args.frames + 3, *source)
    warm_videos = make_videos(work / "warm", args.batch, args.frames + 3, *source, seed=1)
    started = time.perf_counter()
    runner = _loader(args.path)(vae_dir, dtype=args.dtype, mesh=args.mesh)
    load_s = time.perf_counter() - started
    identity = jobs.model_identity(vae_dir)
    settings = jobs.EncodeSettings(size=size, frames=args.frames)
    common = {"model": identity, "batch": args.batch, "readers": args.readers}

    started = time.perf_counter()  # warm-up: compiles (or loads) every program the timed jobs run
    jobs.encode_job(runner, jobs.collect_inputs(warm_videos, jobs.VIDEO_SUFFIXES), work / "warm-latents", settings, **common)
    jobs.decode_job(runner, jobs.collect_inputs([work / "warm-latents"], (".safetensors",)), work / "warm-mp4", **common)
    warm_s = time.perf_counter() - started

    encoded = jobs.encode_job(runner, jobs.collect_inputs(videos, jobs.VIDEO_SUFFIXES), work / "latents", settings, **common)
    decoded = jobs.decode_job(runner, jobs.collect_inputs([work / "latents"], (".safetensors",)), work / "mp4", **common)
  finally:
    shutil.rmtree(work, ignore_errors=True)

  device = jax.devices()[0]
  result = {
    "model": args.model, "path": args.path, "dtype": args.dtype, "mesh": args.mesh, "batch": args.batch,
    "items": args.items, "frames": args.frames, "size": list(size), "source_size": list(source),
    "load_s": round(load_s, 3), "warm_up_s": round(warm_s, 3),
    "encode": encoded.to_dict(), "decode": decoded.to_dict(),
    "versions": bench.versions(), "python": platform.python_version(), "platform": device.platform,
    "device_kind": device.device_kind, "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
    "date": time.strftime("%Y-%m-%d"),
  }  # fmt: skip
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "jobs.json").write_text(json.dumps(result, indent=1))
  print(f"{args.model} ({args.path}, {args.dtype}, {args.mesh or 'one device'}, {device.device_kind}): "
        f"{args.items} videos of {args.frames} frames at {size[0]}x{size[1]} (from {source[0]}x{source[1]}), batch {args.batch}; "
        f"load {load_s:.1f} s, warm-up {warm_s:.1f} s")  # fmt: skip
  print("| job | items/s | frames/s | wall s | device busy | input wait | write wait | failed |")
  print("|---|---|---|---|---|---|---|---|")
  for summary in (encoded, decoded):
    s = summary
    print(
      f"| {s.kind} | {s.done / s.seconds:.3f} | {s.frames / s.seconds:.2f} | {s.seconds:.2f} | {100 * s.device_busy:.1f}% "
      f"| {100 * s.input_wait_s / s.seconds:.1f}% | {100 * s.output_wait_s / s.seconds:.1f}% | {s.failed} |"
    )
  print(f"-> {args.out / 'jobs.json'}")
  return 0 if not (encoded.failed or decoded.failed) else 1


if __name__ == "__main__":
  raise SystemExit(main())
