"""Command line: ``python -m torchax_vae decode LATENTS -o OUT.mp4 [--model HUB_ID_OR_DIR]``,
``python -m torchax_vae precompile --latent B,C,T,H,W [--model ...]`` (build the programs ahead of serving),
and the dataset jobs (:mod:`torchax_vae.jobs`): ``python -m torchax_vae encode VIDEOS... -o OUT_DIR``
(videos -> latent files) and ``python -m torchax_vae decode LATENTS... -o OUT_DIR`` (latent files -> MP4s),
resumable, with a manifest, over every device of every host.

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
    "latents",
    type=Path,
    nargs="+",
    metavar="LATENTS",
    help="a .safetensors, .npy or .pt file: (B, T, C, H, W) for CogVideoX, (B, C, T, H, W) for Wan; for a job "
    "(-o OUT_DIR): files, directories (recursively) and .txt/.jsonl lists, an encode job's manifest among them",
  )
  decode.add_argument(
    "-o",
    "--output",
    type=Path,
    required=True,
    help="OUT.mp4 (OUT-0.mp4, OUT-1.mp4, … for B > 1); or a directory OUT_DIR: a job, one MP4 per latent file "
    "(PNG for an image VAE), named after it, with OUT_DIR/manifest.jsonl; a re-run redoes only what is missing",
  )
  add_model_arguments(decode)
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
    "--scaling-factor",
    type=float,
    default=None,
    help="CogVideoX and classes without an adapter: override the VAE config's scaling_factor",
  )
  decode.add_argument(
    "--raw",
    action="store_true",
    help="classes without an adapter: the latents are the VAE's own input (no scaling_factor/shift_factor)",
  )
  decode.add_argument(
    "--video-shape",
    default=None,
    metavar="F,H,W",
    help="LTX-Video's packed (B, S, C) latents (LTXPipeline output_type='latent'): the video's frames, height, width",
  )
  decode.add_argument(
    "--decode-timestep", type=float, default=None, help="LTX-Video 0.9.1+: LTXPipeline's decode_timestep (default 0.0)"
  )
  decode.add_argument(
    "--decode-noise-scale", type=float, default=None, help="LTX-Video 0.9.1+: LTXPipeline's decode_noise_scale (default: the timestep)"
  )
  decode.add_argument(
    "--noise-seed",
    type=int,
    default=0,
    help="LTX-Video 0.9.1+: seed of the decode noise (one file: jax.random.key(SEED) over its batch; a job: each "
    "sample its own key from the seed and the file's name, whatever the batching) (default: %(default)s)",
  )
  decode.add_argument("--no-progress", action="store_true", help="no progress bar")
  add_job_arguments(decode, "latent files decoded together (of one shape)")
  add_distributed_arguments(decode)
  decode.set_defaults(run=run_decode)

  encode = commands.add_parser(
    "encode",
    help="videos -> latent files (a dataset job)",
    description="Encode videos to latents, one .safetensors per video (named after it, keeping the inputs' "
    "subdirectories), in the model's pipeline layout and scaling, with metadata; OUT_DIR/manifest.jsonl says "
    "what was done or failed and why. Exactly once: a re-run (after a kill, too) redoes only what is missing. "
    "Exit 1 when an input failed.",
  )
  encode.add_argument(
    "inputs", type=Path, nargs="+", metavar="INPUT", help="video files, directories (recursively), .txt/.jsonl lists"
  )
  encode.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR", help="directory of the latent files")
  add_model_arguments(encode)
  encode.add_argument("--size", default=None, metavar="H,W", help="resize the short side to cover H,W and centre-crop (default: as recorded)")
  encode.add_argument(
    "--frames", type=int, default=None, help="frames per video, 1 + 4k (default: the most each video allows); fewer fail"
  )
  encode.add_argument("--fps", type=float, default=None, help="sample frames at this rate (default: consecutive frames)")
  encode.add_argument(
    "--sample", type=int, default=None, metavar="SEED", help="a posterior sample keyed by SEED and the item (default: the mode)"
  )
  encode.add_argument("--no-progress", action="store_true", help="no progress bar")
  add_job_arguments(encode, "videos encoded together (of one shape)")
  add_distributed_arguments(encode)
  encode.set_defaults(run=run_encode)

  precompile = commands.add_parser(
    "precompile",
    help="build (or load) the programs a decode of given latent shapes runs, and keep them in the cache dir",
    description="Ahead of serving: build or load every step program a decode (with --encode, also an encode) "
    "of each --latent shape runs, into the compilation cache dir as JAX cache entries and serialized "
    "executables, without decoding. A later process with the same model, dtype, mesh, tiling and cache dir "
    "starts from them. Prints where each program came from and what it took.",
  )
  add_model_arguments(precompile)
  precompile.add_argument(
    "--latent",
    action="append",
    required=True,
    metavar="B,C,T,H,W",
    help="a latent shape, in the VAE's layout (B, C, T, H, W); repeat for several, e.g. --latent 1,16,13,60,90",
  )
  precompile.add_argument("--encode", action="store_true", help="also the encode of the video those latents decode to")
  precompile.add_argument(
    "--target",
    default=None,
    metavar="TOPOLOGY",
    help="compile for a TPU topology (e.g. v6e:2x4) with the TPU compiler on this host, no TPU needed; --mesh "
    "over its chips (one chip without). The programs are stored keyed for that target, for a TPU host "
    "(docs/tpu.md says what loading them there needs); nothing is run",
  )
  precompile.set_defaults(run=run_precompile)
  return parser


def add_model_arguments(command: argparse.ArgumentParser) -> None:
  """What loads the model and decides its programs: shared by ``decode`` and ``precompile``."""
  command.add_argument(
    "--model",
    default=DEFAULT_MODEL,
    help="hub id or local VAE/pipeline dir of a CogVideoX or Wan VAE (default: %(default)s); its latent "
    "scaling (scaling_factor; latents_mean/std) must be the pipeline's",
  )
  command.add_argument("--subfolder", default=None, help="subfolder of --model holding the VAE (default: auto)")
  command.add_argument("--revision", default=None, help="hub revision")
  command.add_argument("--path", choices=PATHS, default="torchax", help="implementation (default: %(default)s)")
  command.add_argument("--mesh", default=None, help="e.g. dp=2,tp=4: batch on dp, width on tp (default: one device)")
  command.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="(default: %(default)s)")
  command.add_argument("--tiled", action="store_true", help="in overlapping tiles (diffusers' enable_tiling)")
  command.add_argument("--cache-dir", default=None, help="compilation cache dir ('off' to disable)")
  command.add_argument(
    "--frames-per-step",
    type=int,
    default=None,
    metavar="K",
    help="Wan: latent frames per steady step (encode: 4K video frames); same result, other speed and memory "
    "(default: the platform's)",
  )


def add_job_arguments(command: argparse.ArgumentParser, batch_help: str) -> None:
  command.add_argument("--batch", type=int, default=1, help=f"{batch_help}; batch over the mesh's dp (default: %(default)s)")
  command.add_argument("--readers", type=int, default=None, help="reader threads (default: min(4, cores))")


def add_distributed_arguments(command: argparse.ArgumentParser) -> None:
  dist = command.add_argument_group(
    "multi-host (jax.distributed.initialize)",
    "a job (encode, decode -o OUT_DIR) splits its inputs by process index, each process on its own devices; "
    "a single decode spans every host's devices",
  )
  dist.add_argument(
    "--distributed",
    action="store_true",
    help="initialize JAX's multi-controller runtime (auto-detected on TPU pods, Slurm, …; or the flags below)",
  )
  dist.add_argument("--coordinator-address", default=None, help="HOST:PORT of process 0")
  dist.add_argument("--num-processes", type=int, default=None)
  dist.add_argument("--process-id", type=int, default=None)


class UsageError(ValueError):
  """A command-line value that cannot be used (exit 2, nothing done)."""


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  from .core.checkpoint import CheckpointError
  from .core.errors import InputError, StepSizeError
  from .core.mesh import MeshError
  from .core.target import TargetError
  from .jobs import JobInputError
  from .pipeline import LatentsError, OutputPathError

  try:
    return args.run(args)
  except (UsageError, LatentsError, OutputPathError, MeshError, CheckpointError, InputError, JobInputError, TargetError,
          StepSizeError) as err:  # fmt: skip
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


def _cache_dir(args: argparse.Namespace):
  """``--cache-dir``: ``False`` for ``off``/``none`` (no persistent cache), else as given (None: default)."""
  return False if args.cache_dir is not None and args.cache_dir.strip().lower() in ("off", "none") else args.cache_dir


def _load(args: argparse.Namespace, mesh=None):
  """The runner ``--path``, ``--model`` and the shared model arguments describe, tiled with ``--tiled``
  (diffusers' ``enable_tiling()`` defaults; for a class without an adapter, its own). ``mesh``: a
  built mesh instead of ``--mesh``."""
  runner = _loader(args.path)(
    args.model,
    subfolder=args.subfolder,
    dtype=args.dtype,
    mesh=args.mesh if mesh is None else mesh,
    cache_dir=_cache_dir(args),
    revision=args.revision,
    **({"target": args.target} if getattr(args, "target", None) else {}),
    frames_per_step=args.frames_per_step,  # add_model_arguments: every command that loads has it
  )
  if args.tiled:
    runner.enable_tiling()
  return runner


def _loader(path: str):
  if path == "native_flax":
    import native_flax

    return native_flax.load
  import torchax_vae

  return torchax_vae.load


def _is_job(args: argparse.Namespace) -> bool:
  """``decode`` as a job: ``-o`` names a directory (no suffix), not an ``.mp4``/``.png`` file."""
  return args.output.suffix == ""


def run_decode(args: argparse.Namespace) -> int:
  start = time.perf_counter()
  if _is_job(args):
    return run_decode_job(args)
  if len(args.latents) != 1:
    raise UsageError(f"-o {args.output}: one output file takes one LATENTS file; for several, give a directory (-o OUT_DIR)")
  if args.latents[0].is_dir():
    raise UsageError(f"{args.latents[0]}: a directory of latent files decodes as a job: give -o OUT_DIR")
  if args.distributed or args.coordinator_address:
    _initialize_distributed(args)  # before anything else touches JAX's backends
  import jax

  from . import pipeline
  from .core.progress import ProgressBar

  lead = jax.process_index() == 0  # under multi-host, only process 0 writes files and prints

  latents = pipeline.load_latents(args.latents[0], key=args.key)
  from .core.checkpoint import CheckpointError
  from .core.loading import generic_class_name

  try:
    class_name = generic_class_name(_directory(args))
  except CheckpointError:  # reported by the adapters' path below, after the latents and the output are checked
    class_name = None
  if class_name is not None:
    return _run_generic_decode(args, latents, class_name, start, lead)
  if args.raw:
    raise UsageError("--raw: this model has an adapter, which scales latents as its pipelines do")
  adapter = None
  if args.video_shape is not None:  # packed tokens (LTX): the model's config unpacks them, before any check
    adapter = _adapter(args)
    try:
      latents = adapter.unpack_latents(latents, _ints(args.video_shape, "--video-shape", 3))
    except ValueError as err:
      raise pipeline.LatentsError(str(err)) from None
  pipeline.check_latents(latents, args.layout or pipeline.VAE_LAYOUT)  # rank, dtype: before anything else
  batch = latents.shape[0]
  paths = pipeline.output_paths(args.output, batch)
  if lead:
    pipeline.check_writable(paths)
  # The model's config (torch-free, no weights): its pipeline layout and channels check the latents
  # before any weights are read.
  adapter = adapter or _adapter(args)
  layout = args.layout or adapter.pipeline_layout
  pipeline.check_latents(latents, layout, adapter.latent_channels, adapter.class_name)
  if args.scaling_factor is not None and not adapter.scales_by_factor:
    raise pipeline.LatentsError(
      f"--scaling-factor: {adapter.class_name}'s pipelines do not scale latents by a factor "
      f"({adapter.describe_latent_scaling()}); leave it unset"
    )

  runner = _load(args)
  loaded = time.perf_counter()

  progress = ProgressBar(enabled=lead and not args.no_progress)
  try:
    # uint8 frames made on the device: a quarter of float32's bytes come to the host
    frames = pipeline.decode_latents(
      runner, latents, layout=layout, scaling_factor=args.scaling_factor, progress=progress, output_type="uint8",
      decode_timestep=args.decode_timestep if adapter.takes_decode_timestep else None,
      decode_noise_scale=args.decode_noise_scale if adapter.takes_decode_timestep else None,
      generator=_noise_key(args.noise_seed) if adapter.takes_decode_timestep else None,
    )  # (B, F, H, W, 3) numpy; gathered onto every process
  finally:
    progress.close()
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

def _run_generic_decode(args: argparse.Namespace, latents, class_name: str, start: float, lead: bool) -> int:
  """A class without an adapter: latents (the VAE's own layout) scaled as image pipelines do (or
  ``--raw``), decoded through the generic path; 4-D latents make PNG images, 5-D ones MP4 videos."""
  from . import pipeline
  from .core import mesh as mesh_lib

  if args.layout not in (None, pipeline.VAE_LAYOUT):
    raise UsageError(f"--layout {args.layout}: {class_name} has no adapter; pass latents in the VAE's own layout")
  pipeline.check_generic_latents(latents, class_name)
  image = latents.ndim == 4
  paths = pipeline.output_paths(args.output, latents.shape[0], ".png" if image else ".mp4")
  if lead:
    pipeline.check_writable(paths)
  runner = _load(args)
  loaded = time.perf_counter()
  progress = lead and not args.no_progress
  frames = pipeline.generic_uint8_frames(runner, latents, raw=args.raw, scaling_factor=args.scaling_factor, progress=progress)
  decoded = time.perf_counter()
  if lead:
    for item, path in zip(frames, paths):
      if image:
        pipeline.write_png(item[0], path)
      else:
        pipeline.write_mp4(item, path, fps=args.fps, quality=args.quality)
    scaling = "as given (--raw)" if args.raw else "/ scaling_factor + shift_factor of the config"
    print(
      f"decoded latents {tuple(latents.shape)} ({scaling}) -> {latents.shape[0]} "
      f"{'image' if image else 'video'}(s) {'x'.join(map(str, frames.shape[2:4]))} in {decoded - loaded:.2f} s "
      f"(load {loaded - start:.2f} s; {class_name} through the generic path, {args.dtype}, "
      f"{mesh_lib.describe(runner.mesh)}) -> {', '.join(str(p) for p in paths)}"
    )
  return 0


def _job_start(args: argparse.Namespace, suffixes: tuple[str, ...]):
  """What both jobs do first: the inputs (checked before anything else), the multi-controller runtime,
  the runner on this process's own devices, and the checkpoint's identity for the job keys."""
  from . import jobs

  if args.batch < 1:
    raise UsageError(f"--batch {args.batch}: expected a positive number of items")
  if args.readers is not None and args.readers < 1:
    raise UsageError(f"--readers {args.readers}: expected a positive number of threads")
  if args.output.exists() and not args.output.is_dir():
    raise UsageError(f"-o {args.output}: expected a directory for the outputs, got a file")
  items = jobs.collect_inputs(args.inputs, suffixes)
  if not items:
    raise UsageError(f"no inputs ending in {', '.join(suffixes)} in {', '.join(map(str, args.inputs))}")
  if args.distributed or args.coordinator_address:
    _initialize_distributed(args)
  import jax

  from .core import mesh as mesh_lib

  # Each process runs its own share on its own devices: a mesh over the local ones only.
  mesh = mesh_lib.make_mesh(args.mesh, devices=jax.local_devices()) if args.mesh else None
  directory = _directory(args)
  return items, directory, jobs.model_identity(directory), mesh


def run_encode(args: argparse.Namespace) -> int:
  from . import jobs
  from .core.loading import generic_class_name

  items, directory, identity, mesh = _job_start(args, jobs.VIDEO_SUFFIXES)
  class_name = generic_class_name(directory)
  if class_name is not None:
    raise UsageError(
      f"encode: {class_name} runs through the generic path, which knows neither its frame rule "
      "nor its pipelines' latent scaling; the encode job takes the video VAEs with an adapter "
      "(AutoencoderKLCogVideoX, AutoencoderKLWan)"
    )
  settings = jobs.EncodeSettings(size=_size(args.size), frames=args.frames, fps=args.fps, sample_seed=args.sample)
  jobs.check_encode_settings(_adapter(args), settings)  # before any weights are read
  return _run_job_command(jobs.encode_job, args, items, settings, identity, mesh)


def run_decode_job(args: argparse.Namespace) -> int:
  from . import jobs, pipeline
  from .core.loading import generic_class_name

  args.inputs = args.latents
  items, directory, identity, mesh = _job_start(args, pipeline.LATENT_SUFFIXES)
  timestep = False  # whether the decoder takes a decode timestep (LTX 0.9.1 on): only then do its flags count
  if generic_class_name(directory) is None:  # checked on the config, before any weights are read
    adapter = _adapter(args)
    timestep = adapter.takes_decode_timestep
    if args.raw:
      raise UsageError("--raw: this model has an adapter, which scales latents as its pipelines do")
    if args.scaling_factor is not None and not adapter.scales_by_factor:
      raise UsageError(f"--scaling-factor: {adapter.class_name}'s pipelines do not scale latents by a factor; leave it unset")
  settings = jobs.DecodeSettings(
    layout=args.layout, key=args.key, scaling_factor=args.scaling_factor, raw=args.raw, fps=args.fps, quality=args.quality,
    video_shape=None if args.video_shape is None else _ints(args.video_shape, "--video-shape", 3),
    # Unused flags stay out of the job's settings (its outputs' keys): a model without a decode
    # timestep ignores them, as the single-file decode and LTXPipeline do.
    decode_timestep=args.decode_timestep if timestep else None,
    decode_noise_scale=args.decode_noise_scale if timestep else None,
    noise_seed=args.noise_seed if timestep else 0,
  )  # fmt: skip
  return _run_job_command(jobs.decode_job, args, items, settings, identity, mesh)


def _noise_key(seed: int):
  import jax

  return jax.random.key(seed)


def _run_job_command(job, args: argparse.Namespace, items, settings, identity, mesh) -> int:
  """Loads the runner, runs ``job`` (``jobs.encode_job`` / ``jobs.decode_job``), prints its summary;
  exit 1 when an input failed."""
  runner = _load(args, mesh)
  summary = job(
    runner, items, args.output, settings, model=identity, batch=args.batch, readers=args.readers,
    progress=not args.no_progress,
  )  # fmt: skip
  print(summary.describe())
  return 1 if summary.failed else 0


def _ints(text: str, flag: str, count: int) -> tuple[int, ...]:
  """``"49,480,720"`` -> ``(49, 480, 720)``; :class:`UsageError` unless ``count`` positive integers."""
  try:
    values = tuple(int(v) for v in text.split(","))
  except ValueError:
    values = ()
  if len(values) != count or min(values, default=0) < 1:
    raise UsageError(f"{flag} {text!r}: expected {count} positive integers separated by commas")
  return values


def _size(text: str | None) -> tuple[int, int] | None:
  if text is None:
    return None
  try:
    h, w = (int(v) for v in text.split(","))
  except ValueError:
    raise UsageError(f"--size {text!r}: expected two integers H,W, e.g. 480,720") from None
  return h, w


def _directory(args: argparse.Namespace):
  from .core.checkpoint import resolve_checkpoint_dir

  return resolve_checkpoint_dir(args.model, subfolder=args.subfolder, revision=args.revision)


def parse_latent_shape(text: str, channels: int | None, model: str) -> tuple[int, ...]:
  """``"1,16,13,60,90"`` -> ``(1, 16, 13, 60, 90)``, checked against the model's latent channels.
  ``channels=None`` (a class without an adapter): 3 to 5 positive integers, the decode's own check."""
  try:
    shape = tuple(int(n) for n in text.split(","))
  except ValueError:
    shape = ()
  if channels is None:
    if not 3 <= len(shape) <= 5 or min(shape) < 1:
      raise UsageError(f"--latent {text!r}: expected 3 to 5 positive integers (B,C,T,H,W; B,C,H,W; B,C,L)")
    return shape
  if len(shape) != 5 or min(shape) < 1:
    raise UsageError(f"--latent {text!r}: expected 5 positive integers B,C,T,H,W")
  if shape[1] != channels:
    raise UsageError(f"--latent {text!r}: {model} has {channels} latent channels, the shape has {shape[1]}")
  return shape


def run_precompile(args: argparse.Namespace) -> int:
  start = time.perf_counter()
  from .core.compile_cache import resolve_cache_dir

  if resolve_cache_dir(_cache_dir(args)) is None:
    raise UsageError(
      "the compilation cache is off (--cache-dir or $TORCHAX_VAE_CACHE_DIR): precompile keeps its programs "
      "there; with none there is nothing to keep"
    )
  from .core.loading import generic_class_name

  class_name = generic_class_name(_directory(args))
  if class_name is not None:  # the generic path: any rank, checked by tracing
    shapes = [parse_latent_shape(text, None, class_name) for text in args.latent]
  else:
    adapter = _adapter(args)  # config only: shapes are checked before any weights are read
    shapes = [parse_latent_shape(text, adapter.latent_channels, adapter.class_name) for text in args.latent]
  runner = _load(args)
  loaded = time.perf_counter()
  from .core.mesh import describe

  store = runner.programs.store
  if store.directory is None:  # the directory could not be written (load warned why)
    raise UsageError(f"cannot keep programs in {resolve_cache_dir(_cache_dir(args))}: it is not writable")

  for shape in shapes:
    for program in runner.precompile([shape], encode=args.encode):
      print(f"{'x'.join(map(str, shape))} {program.describe()}")
  sources = runner.programs.sources
  print(
    f"precompiled {sum(sources.values())} programs ({', '.join(f'{k} {v}' for k, v in sources.items())}) in "
    f"{time.perf_counter() - loaded:.2f} s (load {loaded - start:.2f} s; {args.path}, {args.dtype}, "
    f"{describe(runner.mesh)}{', tiled' if args.tiled else ''}"
    f"{f', for {runner.target.name} ({runner.target.device_kind})' if runner.target else ''}) -> {store.directory.parent}"
  )
  if store.refused:  # warned: another user could write there, so nothing was stored or read
    print(f"python -m torchax_vae precompile: error: nothing was stored in {store.directory} (see the warning)", file=sys.stderr)
    return 1
  return 0



if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())
