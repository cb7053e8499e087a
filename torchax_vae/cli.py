"""Command line: ``python -m torchax_vae decode LATENTS -o OUT.mp4 [--model HUB_ID_OR_DIR]``.

LATENTS is a ``.safetensors``, ``.npy`` or ``.pt`` file holding what the model's pipeline returns
with ``output_type="latent"``: ``(B, T, C, H, W)`` from ``CogVideoXPipeline``, ``(B, C, T, H, W)`` from
``WanPipeline``. They are scaled and decoded as that pipeline does (CogVideoX: ``1 / scaling_factor``;
Wan: ``* latents_std + latents_mean``), turned into uint8 frames as diffusers' video processor does,
and written as one MP4 per batch item (``OUT.mp4``; ``OUT-0.mp4``, ``OUT-1.mp4``, … when B > 1).

Multi-host (e.g. a TPU pod slice): run the same command on every host with ``--distributed``; each
process reads LATENTS, the mesh spans all hosts' devices, the batch splits over ``dp`` across them,
and process 0 writes the MP4s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_MODEL = "THUDM/CogVideoX-2b"
PATHS = ("torchax", "native_flax")
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m torchax_vae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  decode = commands.add_parser(
    "decode",
    help="pipeline latents -> MP4",
    description="Decode CogVideoX or Wan pipeline latents (.safetensors/.npy/.pt) to MP4, as diffusers' pipeline does.",
  )
  decode.add_argument(
    "latents", type=Path, help="a .safetensors, .npy or .pt file: (B, T, C, H, W) for CogVideoX, (B, C, T, H, W) for Wan"
  )
  decode.add_argument("-o", "--output", type=Path, required=True, help="OUT.mp4 (OUT-0.mp4, OUT-1.mp4, … for B > 1)")
  decode.add_argument(
    "--model",
    default=DEFAULT_MODEL,
    help="hub id or local VAE/pipeline dir of a CogVideoX or Wan VAE (default: %(default)s); its latent "
    "scaling (scaling_factor; latents_mean/std) must be the pipeline's",
  )
  decode.add_argument("--subfolder", default=None, help="subfolder of --model holding the VAE (default: auto)")
  decode.add_argument("--revision", default=None, help="hub revision")
  decode.add_argument("--path", choices=PATHS, default="torchax", help="implementation (default: %(default)s)")
  decode.add_argument("--mesh", default=None, help="e.g. dp=2,tp=4: batch on dp, width on tp (default: one device)")
  decode.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="(default: %(default)s)")
  decode.add_argument("--tiled", action="store_true", help="decode in overlapping tiles (diffusers' enable_tiling)")
  decode.add_argument("--fps", type=float, default=8, help="frames per second of the MP4 (default: %(default)s)")
  decode.add_argument(
    "--quality", type=float, default=5, help="H.264 quality 1-10, 10 best (default: %(default)s, as diffusers)"
  )
  decode.add_argument(
    "--layout",
    choices=("BTCHW", "BCTHW"),
    default=None,
    help="default: the model's pipeline output (CogVideoX: BTCHW; Wan: BCTHW, the VAE's own layout)",
  )
  decode.add_argument("--key", default=None, help="tensor name in a file holding several")
  decode.add_argument(
    "--scaling-factor", type=float, default=None, help="CogVideoX: override the VAE config's scaling_factor"
  )
  decode.add_argument("--cache-dir", default=None, help="compilation cache dir ('off' to disable)")
  decode.add_argument("--no-progress", action="store_true", help="no progress bar")
  dist = decode.add_argument_group("multi-host (jax.distributed.initialize)")
  dist.add_argument(
    "--distributed",
    action="store_true",
    help="initialize JAX's multi-controller runtime (auto-detected on TPU pods, Slurm, …; or the flags below)",
  )
  dist.add_argument("--coordinator-address", default=None, help="HOST:PORT of process 0")
  dist.add_argument("--num-processes", type=int, default=None)
  dist.add_argument("--process-id", type=int, default=None)
  decode.set_defaults(run=run_decode)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  from .core.checkpoint import CheckpointError
  from .core.mesh import MeshError
  from .pipeline import LatentsError, OutputPathError

  try:
    return args.run(args)
  except (LatentsError, OutputPathError, MeshError, CheckpointError) as err:
    print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
    return EXIT_USAGE


def _initialize_distributed(args: argparse.Namespace) -> None:
  import jax

  jax.distributed.initialize(
    coordinator_address=args.coordinator_address, num_processes=args.num_processes, process_id=args.process_id
  )


def _adapter(args: argparse.Namespace):
  """The model adapter of ``--model``'s config (resolves the hub id / dir; weights are not read here)."""
  from .core.checkpoint import read_config, resolve_checkpoint_dir
  from .core.models import adapter_for

  return adapter_for(read_config(resolve_checkpoint_dir(args.model, subfolder=args.subfolder, revision=args.revision)))


def _loader(path: str):
  if path == "native_flax":
    import native_flax

    return native_flax.load
  import torchax_vae

  return torchax_vae.load


class _Progress:
  """A tqdm bar over frame steps (and tiles), filled by the driver's ``progress(done, total)``."""

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self.bar = None

  def __call__(self, done: int, total: int) -> None:
    if not self.enabled:
      return
    if self.bar is None:
      from tqdm.auto import tqdm

      self.bar = tqdm(total=total, desc="decode", unit="step", file=sys.stderr, leave=False)
    self.bar.update(done - self.bar.n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def run_decode(args: argparse.Namespace) -> int:
  start = time.perf_counter()
  if args.distributed or args.coordinator_address:
    _initialize_distributed(args)  # before anything else touches JAX's backends
  import jax

  from . import pipeline

  lead = jax.process_index() == 0  # under multi-host, only process 0 writes files and prints

  latents = pipeline.load_latents(args.latents, key=args.key)
  pipeline.check_latents(latents, args.layout or pipeline.VAE_LAYOUT)  # rank, dtype: before anything else
  batch = latents.shape[0]
  paths = pipeline.output_paths(args.output, batch)
  if lead:
    pipeline.check_writable(paths)
  # The model's config (torch-free, no weights): its pipeline layout and channels check the latents
  # before any weights are read.
  adapter = _adapter(args)
  layout = args.layout or adapter.pipeline_layout
  pipeline.check_latents(latents, layout, adapter.latent_channels, adapter.class_name)
  if args.scaling_factor is not None and not adapter.scales_by_factor:
    raise pipeline.LatentsError(
      f"--scaling-factor: {adapter.class_name}'s pipelines do not scale latents by a factor "
      f"({adapter.describe_latent_scaling()}); leave it unset"
    )

  cache_dir = False if args.cache_dir in ("off", "none") else args.cache_dir
  runner = _loader(args.path)(
    args.model, subfolder=args.subfolder, dtype=args.dtype, mesh=args.mesh, cache_dir=cache_dir, revision=args.revision
  )
  if args.tiled:
    runner.enable_tiling()
  loaded = time.perf_counter()

  progress = _Progress(lead and not args.no_progress)
  try:
    video = pipeline.decode_latents(
      runner, latents, layout=layout, scaling_factor=args.scaling_factor, progress=progress
    )
  finally:
    progress.close()
  frames = pipeline.to_uint8_frames(video)  # (B, F, H, W, 3); gathered onto every process
  decoded = time.perf_counter()

  if lead:
    for item, path in zip(frames, paths):
      pipeline.write_mp4(item, path, fps=args.fps, quality=args.quality)
    _, num_frames, height, width, _ = frames.shape
    scaling = runner.adapter.describe_latent_scaling(args.scaling_factor)
    from .core import mesh as mesh_lib

    print(
      f"decoded latents {tuple(latents.shape)} ({layout}, {scaling}) -> {batch} x {num_frames} frames "
      f"{height}x{width} in {decoded - loaded:.2f} s (load {loaded - start:.2f} s; {args.path}, {args.dtype}, "
      f"{mesh_lib.describe(runner.mesh)}"
      + (f", {jax.process_count()} processes" if jax.process_count() > 1 else "")
      + f") -> {', '.join(str(p) for p in paths)}"
    )
  return 0


if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())
