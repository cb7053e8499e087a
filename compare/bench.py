"""Cold compile, warm start, decode latency, memory and error of each path: ``python -m compare.bench``.

    python -m compare.bench --mesh dp=2,tp=4                  # real 2b config, random weights
    python -m compare.bench --paths torchax,torch --frames 2,13 --latent 1,16,2,8,8
    python -m compare.bench --latent 1,16,2,16,16 --tiled --tile-sample-size 96,80
    python -m compare.bench --model wan2.1 --latent 1,16,3,16,16  # Wan 2.1 config (wan2.2: C=48)

``--model`` is a preset name (random weights of a released config, written once and cached:
``compare.checkpoints.PRESETS``: cogvideox-2b (default), cogvideox-5b, cogvideox-1.5, wan2.1, wan2.2,
hunyuanvideo, hunyuanvideo-1.5, ltx-video-0.9.0, ltx-video-0.9.1, ltx-2, flux.1),
a hub id or a local VAE/pipeline dir.

Every measurement runs in a fresh process (``compare.worker``), so nothing leaks between them. Per
path and latent length T:

  torch        diffusers eager decode; its output is the reference the JAX paths are compared to
  JAX, cold    an empty compile cache: trace+lower and XLA compile of the step programs, timed apart
  JAX, warm    a second process on the now filled JAX persistent cache (stored executables ignored):
               process start -> first output, split into imports / weights / trace_lower /
               cache_fetch / first_run; then the decode latency
  JAX, exe     a third process starting from the serialized executables the cold process stored:
               the same split, where trace_lower is 0 and cache_fetch is the deserialization

With ``--tiled`` every path is measured twice, without and with tiling (``enable_tiling``, as
diffusers' ``tiled_decode``; tile size ``--tile-sample-size`` or diffusers' default, half the
config's sample size), the tiled rows side by side with the untiled ones; the JAX tiled rows are
compared to torch's tiled output. Memory: each process's peak RSS (host memory), torch's CUDA peak
allocation when it runs on a GPU, and for the JAX paths XLA's memory analysis of the step programs
(temp = activations, the device memory tiling saves; max over the programs a decode runs).

``--target TOPOLOGY`` (e.g. ``v6e:2x4``) compiles each JAX path's programs for that TPU topology with the
TPU compiler on this host (compile-only; docs/tpu.md): per-chip memory against the chip's HBM,
collectives per program and the compiler's decode-time estimate (``compare.estimate``: an estimate,
never a measurement); the optimised programs are kept as ``OUT/hlo/*.hlo.txt``.

Output: progress on stderr, a Markdown table on stdout, ``OUT/results.json`` and ``OUT/bench.png``.
All arguments are checked before any measurement; a bad one exits with status 2. A measurement
that fails is kept in the results with its ``"error"``, the others go on, and the exit status is 1.
A path that has no port of the model (a VAE the torchax path runs before its native port exists) is
reported as not available (``"unavailable": true``, its reason in ``"error"``) and does not fail the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = ("torchax", "native_flax", "torch", "generic")
DEFAULT_PATHS = ("torchax", "native_flax", "torch")  # generic: torchax_vae.load(generic=True), asked for by name
DTYPES = ("float32", "bfloat16")
VERSIONED = ("torch", "torchax", "jax", "jaxlib", "flax", "diffusers")
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT_S = 3600
SEED = 0
CONV_ENV = "TORCHAX_VAE_CONV"  # torchax_vae.core.conv.ENV_VAR (not imported: the bench imports no JAX)


class UsageError(ValueError):
  """A bad command line; reported before any work with exit status 2."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure, checked: every measurement's process gets its settings from here."""

  paths: list[str]  # in run order per shape; torch (the reference) always runs first
  shapes: list[tuple[int, ...]]  # latent (B, C, T, H, W), one per --frames value
  model: Path  # local VAE dir
  model_name: str  # as given, or a description of the preset
  model_class: str  # the diffusers class (config.json's _class_name)
  mesh: str | None
  devices: int  # the mesh's device count (1 without a mesh)
  simulated: bool  # CPU host devices standing in for the mesh's
  host: dict  # platform, device_kind, device_count, as the workers see them
  env: dict[str, str]  # the workers' environment
  dtype: str
  repeats: int
  out: Path
  tiling: dict | None = None  # enable_tiling's four arguments (--tiled), else None
  framewise: bool = False  # --framewise: use_framewise_decoding = True on every path
  compile_only: bool = False  # --compile-only: lower + compile + memory analysis, no decode, no torch
  tiles: dict | None = None  # how --tiled splits the latent: compare.worker.tile_layout
  # --conv: the 3D convolution forms each JAX path is measured in ($TORCHAX_VAE_CONV per process);
  # (None,) = the platform's default (or an inherited $TORCHAX_VAE_CONV), as before --conv existed.
  conv_forms: tuple[str | None, ...] = (None,)
  # --frames-per-step: the latent frames per steady step each adapter path is measured at (Wan);
  # (None,) = the runner's default for the platform.
  step_sizes: tuple[int | None, ...] = (None,)
  # --target: a TPU topology compiled for by the TPU compiler (compile-only), and its chip's
  # datasheet figures (core.target.Chip) for the estimate.
  target: str | None = None
  chip: dict | None = None

  def step_sizes_for(self, path: str) -> tuple[int | None, ...]:
    """``--frames-per-step`` values for ``path``: the generic path runs diffusers' own loop (one row)."""
    return (None,) if path == "generic" else self.step_sizes

  def tilings(self) -> list[dict | None]:
    """Per shape and path, untiled first, then (--tiled) tiled."""
    return [None] if self.tiling is None else [None, self.tiling]


# --- arguments -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m compare.bench",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--mesh", default=None, help="e.g. dp=2,tp=4 (default: one device); simulated on a CPU host")
  parser.add_argument(
    "--paths", default=",".join(DEFAULT_PATHS),
    help=f"comma-separated subset of {','.join(PATHS)} (default: %(default)s; generic: the torchax path through "
    "diffusers' own decode, one program per input, also for a class with an adapter)",
  )  # fmt: skip
  parser.add_argument(
    "--model",
    default=None,
    help="a preset (random weights of a released config, offline: "
    "cogvideox-2b (default), cogvideox-5b, cogvideox-1.5, wan2.1, wan2.2, hunyuanvideo, ltx-video-0.9.0, "
    "ltx-video-0.9.1, ltx-2, flux.1), a hub id or a local VAE dir",
  )
  parser.add_argument("--latent", default="1,16,2,8,8", help="latent shape B,C,T,H,W (default: %(default)s)")
  parser.add_argument("--frames", default=None, help="latent T values to measure, e.g. 2,13 (overrides T in --latent)")
  parser.add_argument("--dtype", default="float32", choices=DTYPES, help="model and input dtype, all paths")
  parser.add_argument("--repeats", type=int, default=3, help="timed decodes per path (default: %(default)s)")
  parser.add_argument("--out", default="bench-out", help="output dir (default: %(default)s)")
  parser.add_argument(
    "--compile-only",
    action="store_true",
    help="only lower and compile each JAX path's step programs (one fresh process each; nothing is run): "
    "compile times, FLOPs and XLA's per-device memory analysis (program_memory_mb), for sizes this machine "
    "cannot decode; no torch, no decode or warm-start figures",
  )
  parser.add_argument(
    "--target",
    default=None,
    metavar="TOPOLOGY",
    help="compile for a TPU topology with the TPU compiler, on this host, no TPU needed (implies --compile-only): "
    "e.g. v6e:2x4 (v6e-8), v5e:2x4, v5e:2x2, v6e:4x4 (16 chips, 4 hosts); one chip of it without --mesh. Adds "
    "per-chip memory against the chip's HBM, collectives per program and the compiler's decode-time estimate "
    "(an estimate, not a measurement); needs the TPU compiler scripts/setup installs",
  )
  parser.add_argument(
    "--conv",
    default=None,
    metavar="FORMS",
    help="the 3D convolution forms to measure each JAX path in, e.g. 3d,taps (rows side by side, one torch "
    "reference); default: the platform's (XLA:CPU taps, else 3d) or $TORCHAX_VAE_CONV",
  )
  parser.add_argument(
    "--frames-per-step",
    default=None,
    metavar="K",
    help="Wan: the latent frames per steady step to measure each adapter path at, e.g. 1,5 (rows side by side; "
    "load(frames_per_step=K)); default: the runner's for the platform. Not for the generic path",
  )
  parser.add_argument(
    "--framewise",
    action="store_true",
    help="every path with diffusers' use_framewise_decoding = True (frame tiles: HunyuanVideo's default, LTX's "
    "option); the JAX adapter runs one program per tile length",
  )
  parser.add_argument(
    "--tiled",
    action="store_true",
    help="also measure every path with tiling enabled (enable_tiling), side by side with the untiled decode",
  )
  parser.add_argument(
    "--tile-sample-size",
    default=None,
    metavar="H,W",
    help="with --tiled: tile size in sample pixels (diffusers' tile_sample_min_height/width; a multiple of the "
    "model's spatial compression: 8, 16 for Wan 2.2). Default: diffusers' (CogVideoX: half the config's sample "
    "size, 240,360, which tiles only latents larger than 30x45; Wan: 256,256)",
  )
  parser.add_argument(
    "--tile-sample-stride",
    default=None,
    metavar="H,W",
    help="with --tiled, Wan only: distance between tile starts in sample pixels (diffusers' "
    "tile_sample_stride_height/width). Default: diffusers' 192,192, or 3/4 of --tile-sample-size "
    "(the same ratio), rounded down to the spatial compression",
  )
  return parser


def parse_ints(text: str, what: str, count: int | None = None) -> tuple[int, ...]:
  """``"1,16,2,8,8"`` -> ``(1, 16, 2, 8, 8)``; positive ints only, ``count`` of them if given."""
  parts = [p.strip() for p in text.split(",")]
  if not all(p.isdigit() and int(p) > 0 for p in parts) or (count is not None and len(parts) != count):
    n = f"{count} " if count else ""
    raise UsageError(f"{what} {text!r}: expected {n}comma-separated positive integers")
  return tuple(int(p) for p in parts)


def parse_conv_forms(text: str | None) -> tuple[str | None, ...]:
  """``--conv 3d,taps`` -> ``("3d", "taps")``; unset -> ``(None,)`` (the platform's default)."""
  if text is None:
    return (None,)
  from torchax_vae.core.conv import FORMS

  forms = tuple(dict.fromkeys(f.strip() for f in text.split(",")))
  unknown = [f for f in forms if f not in FORMS]
  if unknown or not forms:
    raise UsageError(f"--conv {text!r}: expected a comma-separated subset of {','.join(FORMS)}")
  return forms


def parse_paths(text: str) -> list[str]:
  paths = [p.strip() for p in text.split(",") if p.strip()]
  unknown = [p for p in paths if p not in PATHS]
  if unknown or not paths:
    raise UsageError(f"--paths {text!r}: unknown path(s) {unknown}; expected a subset of {','.join(PATHS)}")
  paths = list(dict.fromkeys(paths))
  return sorted(paths, key=lambda p: p != "torch")  # torch first: its output is the reference


def resolve_model(model: str | None) -> tuple[Path, str]:
  """``(local VAE dir, description)``: a preset's cached random checkpoint, or ``--model`` resolved
  (hub id, pipeline or VAE dir)."""
  from compare.checkpoints import DEFAULT_PRESET, PRESETS, preset_checkpoint
  from torchax_vae.core.checkpoint import CheckpointError, resolve_checkpoint_dir

  name = DEFAULT_PRESET if model is None else model
  if name in PRESETS:
    progress(f"model: random-initialised {name} config (written once, then cached)")
    return preset_checkpoint(name, seed=SEED), f"random-initialised {name} config (compare.checkpoints.PRESETS, seed {SEED})"
  try:
    return resolve_checkpoint_dir(model), model
  except CheckpointError as err:
    raise UsageError(f"--model: {err} (or a preset: {', '.join(PRESETS)})") from err


@dataclasses.dataclass(frozen=True)
class GenericModel:
  """A class without an adapter, as the bench needs it: the torchax path runs it through the generic
  path (``torchax_vae.runtime.generic``); native_flax has no port (reported as not available)."""

  class_name: str
  latent_channels: int | None  # config.json's latent_channels, if it has one (checked against --latent)


def read_model_adapter(directory: Path):
  """The model adapter of the checkpoint's config (its class, channels, tiling rule), or a
  :class:`GenericModel` for a class without one."""
  from torchax_vae.core import models
  from torchax_vae.core.checkpoint import CheckpointError, read_config, read_raw_config
  from torchax_vae.core.loading import generic_class_name

  class_name = generic_class_name(directory)
  if class_name is not None:
    channels = read_raw_config(directory).get("latent_channels")
    return GenericModel(class_name, channels if isinstance(channels, int) else None)
  try:
    return models.adapter_for(read_config(directory))
  except CheckpointError as err:
    raise UsageError(f"--model: {err}") from err


def resolve_tiling(args: argparse.Namespace, adapter, shape: tuple[int, ...]) -> tuple[dict | None, dict | None]:
  """``(enable_tiling's arguments, the tile layout)`` for ``--tiled``, or ``(None, None)``.

  The tile must be a multiple of the model's spatial compression (a latent tile is tile / 8 pixels;
  diffusers truncates otherwise) and must actually split the latent (diffusers only tiles a latent
  larger than one tile): anything else is a UsageError. A size whose stitching is not exact (CogVideoX
  keeps ``tile - blend`` pixels of each tile, not the tile stride, and crops even a side it does not
  split) only warns: the tiled video then has another size than the untiled one, in torch as in the
  JAX paths.
  """
  import dataclasses

  from compare.worker import tile_layout

  if not args.tiled:
    for flag, value in (("--tile-sample-size", args.tile_sample_size), ("--tile-sample-stride", args.tile_sample_stride)):
      if value is not None:
        raise UsageError(f"{flag} needs --tiled")
    return None, None
  compression = adapter.spatial_compression
  strided = "tile_sample_stride_height" in {f.name for f in dataclasses.fields(adapter.tiling_class)}
  if args.tile_sample_stride is not None and not strided:
    raise UsageError(f"--tile-sample-stride: {adapter.class_name} tiles by overlap factors, not by a stride")
  tiling = adapter.default_tiling()
  if args.tile_sample_size is None:
    given = f"diffusers' default tile ({tiling.tile_sample_min_height}x{tiling.tile_sample_min_width} sample px)"
  else:
    height, width = _multiples(args.tile_sample_size, "--tile-sample-size", compression)
    tiling = tiling.updated(tile_sample_min_height=height, tile_sample_min_width=width)
    if "tile_latent_min_height" in {f.name for f in dataclasses.fields(tiling)}:  # HunyuanVideo 1.5: its own attribute
      tiling = tiling.updated(tile_latent_min_height=height // compression, tile_latent_min_width=width // compression)
    given = f"--tile-sample-size {args.tile_sample_size!r}"
    if strided and args.tile_sample_stride is None:  # diffusers' 192 / 256, in whole latent pixels
      stride = [max(compression, size * 3 // 4 // compression * compression) for size in (height, width)]
      tiling = tiling.updated(tile_sample_stride_height=stride[0], tile_sample_stride_width=stride[1])
  if args.tile_sample_stride is not None:
    height, width = _multiples(args.tile_sample_stride, "--tile-sample-stride", compression)
    tiling = tiling.updated(tile_sample_stride_height=height, tile_sample_stride_width=width)
    given += f", --tile-sample-stride {args.tile_sample_stride!r}"
  settings = dataclasses.asdict(tiling)
  try:
    layout = tile_layout(adapter, shape[3:], settings)
  except ValueError as err:
    raise UsageError(f"{given}: {err}") from err
  if layout is None:
    latent_tile = (tiling.tile_sample_min_height // compression, tiling.tile_sample_min_width // compression)
    raise UsageError(
      f"--tiled: {given} is a {latent_tile[0]}x{latent_tile[1]} latent tile, not smaller than the latent "
      f"{shape[3]}x{shape[4]}, so nothing would be tiled (diffusers decodes it whole); pass a smaller "
      f"--tile-sample-size (a multiple of {compression}) or a larger --latent"
    )
  untiled = [shape[3] * compression, shape[4] * compression]
  if layout["output_hw"] != untiled:  # (CogVideoX only: Wan crops to the untiled size)
    progress(
      f"warning: with {given}, diffusers' tiled_decode stitches a {layout['output_hw'][0]}x{layout['output_hw'][1]} "
      f"video, not {untiled[0]}x{untiled[1]}: it keeps tile - blend pixels of every tile, which here is not the "
      f"tile stride (or crops a side that is not split); with both sides split, tiles of {6 * compression}k x "
      f"{5 * compression}k sample px stitch exactly. Measured anyway; the JAX paths are compared to torch's "
      "tiled output"
    )
  return settings, layout


def _multiples(text: str, flag: str, compression: int) -> tuple[int, int]:
  height, width = parse_ints(text, flag, 2)
  if height % compression or width % compression:
    raise UsageError(
      f"{flag} {text!r}: expected multiples of {compression} (the model's spatial "
      f"compression: a latent tile is {compression}x smaller)"
    )
  return height, width


def mesh_devices(spec: str | None) -> int:
  """Devices the mesh needs (1 without one); raises UsageError on a malformed spec."""
  if spec is None:
    return 1
  from torchax_vae.core.mesh import MeshError, parse_mesh_spec

  try:
    return math.prod(parse_mesh_spec(spec).values())
  except MeshError as err:
    raise UsageError(f"--mesh: {err}") from err


def worker_env(devices: int) -> dict[str, str]:
  """The workers' environment: exactly ``devices`` host devices (simulated when the host is a CPU).

  The flag only shapes the CPU platform, so it is harmless on an accelerator host; any device count
  already in XLA_FLAGS (e.g. the tests' 8) is replaced, so the workers see the mesh's count.
  """
  env = dict(os.environ)
  flags = re.sub(rf"{DEVICE_COUNT_FLAG}=\d+", "", env.get("XLA_FLAGS", "")).split()
  if devices > 1:
    flags.append(f"{DEVICE_COUNT_FLAG}={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
  env["HF_HUB_OFFLINE"] = "1"  # workers only ever get a local directory
  return env


def validate(args: argparse.Namespace) -> Plan:
  """Checks every argument and the host; returns the plan. Raises UsageError before any work."""
  paths = parse_paths(args.paths)
  if args.target:
    args.compile_only = True
  if args.compile_only:
    paths = [p for p in paths if p != "torch"]  # nothing to compile
    if not paths:
      raise UsageError("--compile-only measures the JAX paths; --paths names none of torchax, native_flax")
  shape = parse_ints(args.latent, "--latent")
  if not 3 <= len(shape) <= 5:
    raise UsageError(f"--latent {args.latent!r}: expected B,C,T,H,W (video), B,C,H,W (image) or B,C,L (audio)")
  frames = parse_ints(args.frames, "--frames") if args.frames else (shape[2],)
  if args.repeats < 1:
    raise UsageError(f"--repeats {args.repeats}: expected a positive integer")
  needed = mesh_devices(args.mesh)
  conv_forms = parse_conv_forms(args.conv)
  step_sizes = tuple(dict.fromkeys(parse_ints(args.frames_per_step, "--frames-per-step"))) if args.frames_per_step else (None,)
  for flag, value in (("--tile-sample-size", args.tile_sample_size), ("--tile-sample-stride", args.tile_sample_stride)):
    if value is not None:  # its format, before the (possibly slow) model resolution
      parse_ints(value, flag, 2)
  model, model_name = resolve_model(args.model)
  adapter = read_model_adapter(model)
  generic = isinstance(adapter, GenericModel)
  if generic and args.tiled:
    raise UsageError(f"--tiled: {adapter.class_name} runs through the generic path (diffusers tiles inside its own "
                     "decode); its tiled parity is compare.conformance's 'tiled err' column")  # fmt: skip
  if len(shape) != 5 and (not generic or args.frames):
    raise UsageError(f"--latent {args.latent!r}: expected 5 ints B,C,T,H,W" + (" with --frames" if generic else ""))
  channels = adapter.latent_channels
  if channels is not None and shape[1] != channels:
    raise UsageError(
      f"--latent {args.latent!r}: C={shape[1]}, but the model ({adapter.class_name}, {model}) has {channels} "
      "latent channels"
    )
  if args.frames_per_step and (generic or getattr(adapter, "frames_per_step_defaults", None) is None):
    raise UsageError(f"--frames-per-step: {adapter.class_name}'s frame steps are fixed; only Wan's take a step size")
  tiling, tiles = resolve_tiling(args, adapter, shape)
  env = worker_env(1 if args.target else needed)  # a target's chips are its own, not simulated host devices
  host = run_worker({"kind": "devices", "target": args.target}, env)
  if not host.get("ok"):
    if args.target:
      raise UsageError(f"--target {args.target!r}: {host.get('error')}")
    raise UsageError(f"cannot start JAX to count devices: {host.get('error')}")
  if host["platform"] != "cpu" and needed > host["device_count"]:
    present = f"{host['device_count']} {host['platform']} device(s)" + (f" in {args.target}" if args.target else "")
    raise UsageError(f"--mesh {args.mesh!r} needs {needed} devices, but only {present} are present")
  return Plan(
    paths=paths,
    shapes=[(*shape[:2], t, *shape[3:]) for t in frames] if len(shape) == 5 else [shape],
    model=model,
    model_name=model_name,
    model_class=adapter.class_name,
    mesh=args.mesh,
    devices=needed,
    simulated=host["platform"] == "cpu" and needed > 1 and not args.target,
    host=host,
    env=env,
    dtype=args.dtype,
    repeats=args.repeats,
    out=Path(args.out),
    tiling=tiling,
    tiles=tiles,
    framewise=args.framewise,
    compile_only=args.compile_only,
    conv_forms=conv_forms,
    step_sizes=step_sizes,
    target=args.target,
    chip=host.get("chip"),
  )


# --- workers -------------------------------------------------------------------------------------


def progress(message: str) -> None:
  print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_worker(request: dict, env: dict[str, str], log: Path | None = None) -> dict:
  """Runs one ``compare.worker`` process and returns its JSON result (``ok: false`` on failure).

  The worker's stderr goes to ``log`` (kept for inspection); its last stdout line is the result.
  ``spawned_at`` lets the worker count interpreter start-up into its ``imports`` phase.
  """
  request = {**request, "spawned_at": time.time()}
  command = [sys.executable, "-m", "compare.worker", "--json-args", json.dumps(request)]
  stderr = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 (closed below)
  try:
    proc = subprocess.run(
      command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=WORKER_TIMEOUT_S
    )
  except subprocess.TimeoutExpired:
    return {"ok": False, "error": f"worker timed out after {WORKER_TIMEOUT_S} s"}
  finally:
    if log:
      stderr.close()
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if not lines:
    tail = (log.read_text() if log else proc.stderr or "")[-2000:]
    return {"ok": False, "error": f"worker exited with status {proc.returncode} and no result; stderr ends:\n{tail}"}
  return json.loads(lines[-1])


def tiled_suffix(tiling: dict | None) -> str:
  """``""``, or ``"-tiled64x64"``: tells apart the files of the tiled measurement."""
  return "" if tiling is None else f"-tiled{tiling['tile_sample_min_height']}x{tiling['tile_sample_min_width']}"


def describe(path: str, shape: tuple[int, ...], tiling: dict | None) -> str:
  return f"{path} T={shape[2]}{' tiled' if tiling else ''}"


def measure_torch(plan: Plan, shape: tuple[int, ...], tiling: dict | None = None) -> tuple[dict, Path | None]:
  """The torch row for one latent shape (tiled: with ``enable_tiling(**tiling)``), and the reference
  .npy it wrote (None if it failed)."""
  name = f"torch-{'x'.join(map(str, shape))}-{plan.dtype}{tiled_suffix(tiling)}"
  reference = plan.out / "reference" / f"{name}.npy"
  reference.unlink(missing_ok=True)  # never compare against a previous run's output
  progress(f"{describe('torch', shape, tiling)}: eager decode")
  request = {"kind": "torch", "model": str(plan.model), "latent_shape": shape, "dtype": plan.dtype, "seed": SEED,
             "repeats": plan.repeats, "reference": str(reference), "tiling": tiling, "framewise": plan.framewise}  # fmt: skip
  result = run_worker(request, plan.env, plan.out / "logs" / f"torch-T{shape[2]}{tiled_suffix(tiling)}.log")
  record = empty_record("torch", None, shape, plan.dtype, tiling, plan.tiles)
  if not result.get("ok"):
    progress(f"{describe('torch', shape, tiling)}: {result['error'].splitlines()[0]}")
    return {**record, "error": result["error"]}, None
  record.update(
    decode_s=result["decode_s"],
    peak_rss_mb=result["peak_rss_mb"],
    torch_device=result["device"],
    device_memory_mb=result["device_memory_mb"],
    output_shape=result["output_shape"],
  )
  return record, reference


PHASES = {
  "cold": "empty compile cache",
  "warm": "JAX persistent cache filled: trace + lower, then fetch",
  "warm_exe": "serialized executables: no trace, no lower",
}


def form_env(plan: Plan, form: str | None) -> dict[str, str]:
  """The workers' environment for one 3D convolution form (``None``: the plan's, unchanged)."""
  return plan.env if form is None else {**plan.env, CONV_ENV: form}


def form_suffix(form: str | None, steps: int | None = None) -> str:
  """``""``, ``"-taps"`` or ``"-taps-k5"``: tells apart the files of one form's (``--conv``) and one
  step size's (``--frames-per-step``) measurement."""
  return ("" if form is None else f"-{form}") + ("" if steps is None else f"-k{steps}")


def variant_label(form: str | None, steps: int | None) -> str:
  return (f" conv={form}" if form else "") + (f" K={steps}" if steps else "")


def measure_jax(
  plan: Plan,
  path: str,
  shape: tuple[int, ...],
  reference: Path | None,
  caches: Path,
  tiling: dict | None = None,
  form: str | None = None,
  steps: int | None = None,
) -> dict:
  """A cold (empty cache) then two warm processes (JAX cache; stored executables) for one path and
  shape; tiled (``enable_tiling(**tiling)``) with a cache of its own, compared to torch's tiled output;
  with ``form`` (``--conv``), every process under ``$TORCHAX_VAE_CONV=form``; with ``steps``
  (``--frames-per-step``), ``load(frames_per_step=steps)``."""
  label = describe(path, shape, tiling) + variant_label(form, steps)
  name = f"{path}-T{shape[2]}{tiled_suffix(tiling)}{form_suffix(form, steps)}"
  cache_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=caches))
  request = {"kind": "jax", "path": path, "model": str(plan.model), "latent_shape": shape, "dtype": plan.dtype,
             "mesh": plan.mesh, "cache_dir": str(cache_dir), "seed": SEED, "repeats": plan.repeats,
             "reference": str(reference) if reference else None, "tiling": tiling, "framewise": plan.framewise,
             "frames_per_step": steps}  # fmt: skip
  record = empty_record(path, plan.mesh, shape, plan.dtype, tiling, plan.tiles)
  results = {}
  for phase in ("cold", "warm", "warm_exe"):
    progress(f"{label}: {phase} start ({PHASES[phase]})")
    log = plan.out / "logs" / f"{name}-{phase}.log"
    results[phase] = run_worker({**request, "phase": phase}, form_env(plan, form), log)
    if not results[phase].get("ok"):
      progress(f"{label}: {results[phase]['error'].splitlines()[0]}")
      return {**record, "conv3d": form, "conv_form": form, "error": results[phase]["error"],
              "unavailable": bool(results[phase].get("unavailable"))}  # fmt: skip
  return {**fill_jax_record(record, results["cold"], results["warm"], results["warm_exe"]), "conv_form": form,
          "frames_per_step": results["cold"].get("frames_per_step")}


def measure_compile_only(
  plan: Plan,
  path: str,
  shape: tuple[int, ...],
  caches: Path,
  tiling: dict | None = None,
  form: str | None = None,
  steps: int | None = None,
) -> dict:
  """One fresh process with an empty compile cache: lower and compile the step programs a decode of
  ``shape`` runs, and read XLA's analyses; nothing is run (``--compile-only``)."""
  label = describe(path, shape, tiling) + variant_label(form, steps)
  name = f"{path}-T{shape[2]}{tiled_suffix(tiling)}{form_suffix(form, steps)}"
  cache_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=caches))
  request = {"kind": "jax", "path": path, "model": str(plan.model), "latent_shape": shape, "dtype": plan.dtype,
             "mesh": plan.mesh, "cache_dir": str(cache_dir), "seed": SEED, "repeats": 0, "reference": None,
             "tiling": tiling, "framewise": plan.framewise, "phase": "compile_only", "target": plan.target,
             "hlo_dir": str(plan.out / "hlo"), "hlo_name": name, "frames_per_step": steps}  # fmt: skip
  record = empty_record(path, plan.mesh, shape, plan.dtype, tiling, plan.tiles)
  where = f"for {plan.target} with the TPU compiler" if plan.target else "empty compile cache"
  progress(f"{label}: compile only ({where}; nothing run)")
  log = plan.out / "logs" / f"{name}-compile-only.log"
  result = run_worker(request, form_env(plan, form), log)
  if not result.get("ok"):
    progress(f"{label}: {result['error'].splitlines()[0]}")
    return {**record, "conv3d": form, "conv_form": form, "error": result["error"],
            "unavailable": bool(result.get("unavailable"))}  # fmt: skip
  record.update(
    **compile_fields(result),
    cold_start_breakdown_s=result["start_breakdown_s"],
    compile_peak_rss_mb=result["peak_rss_mb"],
    **program_memory_mb(result["program_memory"]),
    flops=result["flops"],
    bytes_accessed=result.get("bytes_accessed"),
    output_shape=result["output_shape"],
    programs=result["programs"],
    conv3d=result["conv3d"],
    conv_form=form,
    frames_per_step=result.get("frames_per_step"),
    notes=result["notes"],
    collectives=result.get("collectives"),
    custom_calls=result.get("custom_calls"),
    compile_cpu_s=result.get("compile_cpu_s"),
    cost=result.get("cost"),
  )
  if plan.target:
    record.update(target_fields(plan, record, result))
  return record


def target_fields(plan: Plan, record: dict, result: dict) -> dict:
  """A TPU target's row: per-chip memory against the chip's HBM and the decode's estimate
  (compare.estimate: the TPU compiler's, never a measurement)."""
  from compare.estimate import decode_estimate

  chip = plan.chip
  # Each program needs its own arguments, outputs and scratch at once; the largest program's sum
  # is what a chip must hold (the alias part is in both argument and output: counted once).
  per_program = record["program_memory_per_program_mb"] or {}
  totals = [m.get("temp", 0) + m.get("argument", 0) + m.get("output", 0) - m.get("alias", 0) for m in per_program.values()]
  peak_mb = max(totals) if totals else None
  return {
    "target": plan.target,
    "chip_memory_mb": peak_mb,
    "chip_memory_fraction": None if peak_mb is None else peak_mb * 2**20 / chip["hbm_bytes"],
    "fits": None if peak_mb is None else peak_mb * 2**20 <= chip["hbm_bytes"],
    "estimate": decode_estimate(result.get("cost") or {}, result["programs"], chip),
  }


def empty_record(
  path: str, mesh: str | None, shape: tuple, dtype: str, tiling: dict | None = None, tiles: dict | None = None
) -> dict:
  """A results row with every schema key; measurements fill it, a failure leaves nulls and an error.

  ``tiled``/``tiling``/``tiles``: whether the decode ran with ``enable_tiling(**tiling)``, and how
  that split the latent (compare.worker.tile_layout). ``program_memory_mb``: XLA's memory analysis
  of the JAX step programs (temp, argument, output, alias, generated_code), each the max over
  the programs a decode runs (one per tile shape when tiled), per device;
  ``program_memory_per_program_mb`` the same per program. ``torch_device``: where torch ran (torch
  rows only; its ``device_memory_mb`` is ``torch.cuda.max_memory_allocated`` there).
  """
  return {
    "path": path, "mesh": mesh, "latent_shape": list(shape), "dtype": dtype,
    "tiled": tiling is not None, "tiling": tiling, "tiles": tiles if tiling is not None else None,
    "compile_s": None, "compile_breakdown_s": None, "cache_load_s": None, "cache_load_breakdown_s": None,
    "exe_load_s": None, "exe_load_breakdown_s": None, "exe_hit": None,
    "cache_hit": None, "decode_s": None, "peak_rss_mb": None, "device_memory_mb": None,
    "program_memory_mb": None, "program_memory_per_program_mb": None, "flops": None,
    "flops_fraction_of_matmul": None, "bytes_accessed": None, "bytes_fraction_of_copy": None,
    "max_abs_err": None, "output_shape": None, "programs": None,
    "cold_start_breakdown_s": None, "torch_device": None, "notes": [], "error": None, "unavailable": False,
    "conv3d": None, "conv_form": None, "frames_per_step": None, "weights_yardstick_s": None, "collectives": None, "custom_calls": None,
    "cost": None,
  }  # fmt: skip


def compile_fields(cold: dict) -> dict:
  """``compile_s`` (trace + lower + compile of the programs a decode runs) and its breakdown per
  program, from a worker that compiled them (cold or compile-only)."""
  breakdown = {
    name: None if times is None else {"trace_lower": times["trace_lower"], "compile": times["compile"]}
    for name, times in cold["breakdown"].items()
  }
  used = [times for times in breakdown.values() if times is not None]
  return {"compile_s": sum(t["trace_lower"] + t["compile"] for t in used), "compile_breakdown_s": breakdown}


def fill_jax_record(record: dict, cold: dict, warm: dict, warm_exe: dict) -> dict:
  """Merges the cold and both warm workers' results into one row (see the module doc for the phases)."""
  record.update(
    **compile_fields(cold),
    cache_load_s=sum(warm["start_breakdown_s"].values()),
    cache_load_breakdown_s=warm["start_breakdown_s"],
    cold_start_breakdown_s=cold["start_breakdown_s"],
    cache_hit=warm["cache_hit"],
    exe_load_s=sum(warm_exe["start_breakdown_s"].values()),
    exe_load_breakdown_s=warm_exe["start_breakdown_s"],
    exe_hit=warm_exe["deserialized"],
    cache_new_files=len(warm["cache_new_files"]),
    weights_yardstick_s=warm_exe.get("weights_yardstick_s") or warm.get("weights_yardstick_s"),
    decode_s=warm["decode_s"],
    peak_rss_mb=warm["peak_rss_mb"],
    compile_peak_rss_mb=cold["peak_rss_mb"],
    device_memory_mb=warm["device_memory_mb"],
    **program_memory_mb(cold["program_memory"]),
    flops=cold["flops"],
    bytes_accessed=cold.get("bytes_accessed"),
    max_abs_err=warm.get("max_abs_err"),
    output_shape=warm["output_shape"],
    programs=cold["programs"],
    conv3d=cold.get("conv3d"),
    notes=cold["notes"] + warm["notes"] + warm_exe["notes"],
  )
  if cold["tiles"] != record["tiles"]:  # the worker's view of the tiling against the plan's
    record["notes"].append(f"decode tiled the latent as {cold['tiles']}, not as planned: {record['tiles']}")
  if not warm["cache_hit"]:
    record["notes"].append(
      f"warm start missed the cache: new entries {warm['cache_new_files'][:5]}; "
      f"cold run logged {cold['cache_log']}; warm run logged {warm['cache_log']}"
    )
  return record


def program_memory_mb(per_program: dict[str, dict | None]) -> dict:
  """The record's ``program_memory_mb`` (each field's max over the programs) and ``…_per_program_mb``.

  ``None`` when the backend gives no memory analysis for some program.
  """
  if not per_program or None in per_program.values():
    return {"program_memory_mb": None, "program_memory_per_program_mb": None}
  mb = {name: {field: b / 2**20 for field, b in stats.items()} for name, stats in per_program.items()}
  fields = set.intersection(*(set(stats) for stats in mb.values()))
  largest = {field: max(stats[field] for stats in mb.values()) for field in sorted(fields)}
  return {"program_memory_mb": largest, "program_memory_per_program_mb": mb}


def add_flops_fraction(results: list[dict], yardsticks: dict, parallel_devices: int) -> None:
  """Achieved FLOP/s and bytes/s of each decode as fractions of the matmul's and the elementwise
  pass's (times the devices working at once): how near each decode is to either limit."""
  for record in results:
    if not record["decode_s"]:
      continue
    seconds = record["decode_s"]["median"]
    if record["flops"] and yardsticks.get("matmul_flops_per_s"):
      record["flops_fraction_of_matmul"] = record["flops"] / seconds / (yardsticks["matmul_flops_per_s"] * parallel_devices)
    if record.get("bytes_accessed") and yardsticks.get("copy_bytes_per_s"):
      record["bytes_fraction_of_copy"] = record["bytes_accessed"] / seconds / (yardsticks["copy_bytes_per_s"] * parallel_devices)


# --- report --------------------------------------------------------------------------------------


def versions() -> dict[str, str | None]:
  found = {}
  for name in VERSIONED:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = None
  return found


def build_meta(plan: Plan, matmul: dict) -> dict:
  host = plan.host
  return {
    "versions": versions(),
    "python": platform.python_version(),
    "platform": host["platform"],
    "device_kind": host["device_kind"],
    "device_count": host["device_count"],
    "simulated": plan.simulated,
    "mesh": plan.mesh,
    "dtype": plan.dtype,
    "compile_only": plan.compile_only,
    "target": plan.target,
    "chip": plan.chip,
    "hosts": host.get("hosts"),
    "libtpu": host.get("libtpu"),
    "model": plan.model_name,
    "model_class": plan.model_class,
    "repeats": plan.repeats,
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "tiling": plan.tiling,
    "framewise": plan.framewise,
    "tiles": plan.tiles,
    "cpu_count": os.cpu_count(),
    "matmul_size": matmul.get("matmul_size"),
    "matmul_dtype": matmul.get("matmul_dtype"),
    "matmul_flops_per_s": matmul.get("matmul_flops_per_s"),
    "copy_bytes": matmul.get("copy_bytes"),
    "copy_bytes_per_s": matmul.get("copy_bytes_per_s"),
    # SPMD programs are per device, and a dimension the mesh does not divide is padded: that work counts too.
    "flops_note": "XLA cost analysis of the step programs x runs per decode x devices (flops and bytes "
    "accessed); of matmul / of copy: achieved per second against the matmul's FLOP/s and an elementwise "
    "pass's bytes/s",
    "memory_note": "peak_rss_mb: the process's peak resident host memory; program_memory_mb: XLA memory analysis "
    "of the JAX step programs, per device, max over the programs a decode runs (temp = activations); "
    "device_memory_mb: the device's peak bytes in use (JAX) or torch.cuda.max_memory_allocated, when reported",
  }


def fmt(value: float | None, spec: str = ".2f") -> str:
  return "–" if value is None else format(value, spec)


TABLE_COLUMNS = ("path", "latent", "tiles", "compile s", "warm start s", "cache hit", "warm start (exe) s",
                 "weights s (yardstick)",
                 "decode s (median)", "peak RSS MB", "temp MB", "GFLOP", "of matmul", "GB moved", "of copy",
                 "max abs err")  # fmt: skip


def tiles_cell(r: dict) -> str:
  """``–`` untiled; ``3x3 of 64x64 px`` tiled (rows x cols of tiles, tile size in sample pixels)."""
  if not r.get("tiled"):
    return "–"
  size = f"{r['tiling']['tile_sample_min_height']}x{r['tiling']['tile_sample_min_width']} px"
  return f"{r['tiles']['grid'][0]}x{r['tiles']['grid'][1]} of {size}" if r.get("tiles") else size


def weights_cell(r: dict) -> str:
  """The weights phase of the warm start from executables, and beside it the same run's yardstick
  (reading the weight files' bytes + one device_put of as many): ``1.87 (0.93)``."""
  phase = (r.get("exe_load_breakdown_s") or {}).get("weights")
  yardstick = (r.get("weights_yardstick_s") or {}).get("total")
  return "–" if phase is None else fmt(phase) + ("" if yardstick is None else f" ({fmt(yardstick)})")


def path_cell(r: dict) -> str:
  """``torchax``, ``torchax (taps)`` for a row of a ``--conv`` run (the form it was measured in), and
  ``K=5`` where the runner steps more than one latent frame at a time."""
  notes = [r["conv_form"]] if r.get("conv_form") else []
  if (r.get("frames_per_step") or 1) > 1:
    notes.append(f"K={r['frames_per_step']}")
  return r["path"] + (f" ({', '.join(notes)})" if notes else "")


def table_cells(r: dict) -> list[str]:
  """One results row as table cells; a failed measurement shows its error instead of numbers."""
  latent = "x".join(map(str, r["latent_shape"]))
  if r["error"]:
    reason = r["error"].splitlines()[0][:100].replace("|", "/")
    what = "not available" if r.get("unavailable") else "failed"
    return [path_cell(r), latent, tiles_cell(r), f"{what}: {reason}"] + [""] * (len(TABLE_COLUMNS) - 4)
  fraction, moved = r["flops_fraction_of_matmul"], r.get("bytes_fraction_of_copy")
  return [
    path_cell(r),
    latent,
    tiles_cell(r),
    fmt(r["compile_s"]),
    fmt(r["cache_load_s"]),
    {None: "–", True: "yes", False: "NO"}[r["cache_hit"]],
    fmt(r["exe_load_s"]) + ("" if r["exe_hit"] in (None, True) else " (miss)"),
    weights_cell(r),
    fmt(r["decode_s"] and r["decode_s"]["median"], ".3f"),
    fmt(r["peak_rss_mb"], ".0f"),
    fmt(r["program_memory_mb"] and r["program_memory_mb"].get("temp"), ".0f"),
    fmt(r["flops"] and r["flops"] / 1e9, ".1f"),
    "–" if fraction is None else f"{100 * fraction:.1f}%",
    fmt(r.get("bytes_accessed") and r["bytes_accessed"] / 1e9, ".1f"),
    "–" if moved is None else f"{100 * moved:.1f}%",
    fmt(r["max_abs_err"], ".2e"),
  ]


def failed_measurements(results: list[dict]) -> list[dict]:
  """The rows that failed: an error, other than a path that has no port of the model (``unavailable``)."""
  return [r for r in results if r["error"] and not r.get("unavailable")]


def markdown_table(results: list[dict]) -> str:
  rows = [TABLE_COLUMNS, ["---"] * len(TABLE_COLUMNS)] + [table_cells(r) for r in results]
  return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


MEMORY_COLUMNS = ("path", "latent", "mesh", "dtype", "conv3d", "compile s", "temp MB", "argument MB", "output MB",
                  "temp + argument + output MB")  # fmt: skip


def memory_table(results: list[dict]) -> str:
  """``--compile-only``: XLA's memory analysis per device (max over the decode's programs), one row each."""
  rows = [MEMORY_COLUMNS, ["---"] * len(MEMORY_COLUMNS)]
  for r in results:
    mem = r["program_memory_mb"] or {}
    parts = [mem.get(k) for k in ("temp", "argument", "output")]
    rows.append([
      path_cell(r), "x".join(map(str, r["latent_shape"])), r["mesh"] or "1 device", r["dtype"], r.get("conv3d") or "–",
      fmt(r["compile_s"]), *(fmt(v, ".0f") for v in parts),
      fmt(sum(parts) if None not in parts else None, ".0f"),
    ])  # fmt: skip
  return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in rows)


TARGET_COLUMNS = ("path", "latent", "mesh", "tiles", "conv3d", "compile s", "per chip GB", "of HBM", "collectives",
                  "GFLOP / chip", "GB moved / chip", "est. decode s", "roofline s", "unpriced ops")  # fmt: skip


def collectives_cell(per_program: dict | None) -> str:
  """``steady: 198 collective-permute; first: 120 collective-permute, 2 all-gather`` (none: ``0``)."""
  if not per_program:
    return "–"
  cells = []
  for name, counts in per_program.items():
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    cells.append(f"{name}: {found or '0'}")
  return "; ".join(cells)


def target_table(results: list[dict]) -> str:
  """``--target``: per chip, the largest program's memory against the HBM, collectives per program,
  the decode's FLOPs and bytes (per chip, all runs) and the TPU compiler's estimate (never a measurement)."""
  rows = [TARGET_COLUMNS, ["---"] * len(TARGET_COLUMNS)]
  for r in results:
    latent = "x".join(map(str, r["latent_shape"]))
    if r["error"]:
      rows.append([path_cell(r), latent, r["mesh"] or "1 chip", "failed: " + r["error"].splitlines()[0][:100]] + [""] * 10)
      continue
    est = r.get("estimate") or {}
    chips = mesh_devices(r["mesh"])
    unpriced = sorted({p["unpriced_ops"] for p in (est.get("per_program") or {}).values() if p["unpriced_ops"] is not None})
    rows.append([
      path_cell(r), latent, r["mesh"] or "1 chip", tiles_cell(r), r.get("conv3d") or "–", fmt(r["compile_s"], ".1f"),
      fmt(r.get("chip_memory_mb") and r["chip_memory_mb"] / 1024, ".2f"),
      "–" if r.get("chip_memory_fraction") is None else f"{100 * r['chip_memory_fraction']:.0f}%",
      collectives_cell(r.get("collectives")),
      fmt(r["flops"] and r["flops"] / chips / 1e9, ".0f"),
      fmt(r.get("bytes_accessed") and r["bytes_accessed"] / chips / 1e9, ".1f"),
      fmt(est.get("estimated_decode_s"), ".4g"), fmt(est.get("roofline_decode_s"), ".4g"),
      "/".join(map(str, unpriced)) or "–",
    ])  # fmt: skip
  return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in rows)


def plot(results: list[dict], path: Path, model: str = "VAE") -> bool:
  """compile / warm start / decode s per row, one panel each (own scale); skipped without matplotlib."""
  try:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
  except ImportError:
    progress("matplotlib is not installed: skipping the plot (pip install matplotlib)")
    return False
  rows = [r for r in results if not r["error"]]
  labels = [f"{r['path']}\nT={r['latent_shape'][2]}{' tiled' if r.get('tiled') else ''}" for r in rows]
  colors = {"torch": "tab:blue", "torchax": "tab:orange", "native_flax": "tab:green", "generic": "tab:red"}
  panels = [
    ("cold compile (s)", [r["compile_s"] for r in rows]),
    ("warm start, JAX cache (s)", [r["cache_load_s"] for r in rows]),
    ("warm start, executables (s)", [r["exe_load_s"] for r in rows]),
    ("decode, median (s)", [r["decode_s"]["median"] if r["decode_s"] else None for r in rows]),
    ("peak RSS, host (MB)", [r["peak_rss_mb"] for r in rows]),
    ("program temp, max (MB)", [r["program_memory_mb"] and r["program_memory_mb"].get("temp") for r in rows]),
  ]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
  for ax, (title, values) in zip(axes, panels):
    bars = ax.bar(
      range(len(rows)),
      [v or 0.0 for v in values],
      color=[colors.get(r["path"], "gray") for r in rows],
      hatch=["//" if r.get("tiled") else "" for r in rows],
    )
    ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.4g}" for v in values], fontsize=8)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_title(title)
  shapes = sorted({"x".join(map(str, r["latent_shape"])) for r in rows})
  tiled = next((r["tiling"] for r in rows if r.get("tiled")), None)
  tiles = ""
  if tiled:
    tiles = f"; hatched: tiled, {tiled['tile_sample_min_height']}x{tiled['tile_sample_min_width']} px tiles"
  fig.suptitle(f"{model} decode, latent {', '.join(shapes)}{tiles}")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


# --- main ----------------------------------------------------------------------------------------


def run(plan: Plan) -> tuple[dict, list[dict]]:
  """All measurements, one fresh process each: per shape torch first (the reference), then the JAX paths."""
  if plan.compile_only:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-caches-") as caches:
      for shape in plan.shapes:
        for path in plan.paths:
          for tiling in plan.tilings():
            for form in plan.conv_forms:
              for steps in plan.step_sizes_for(path):
                results.append(measure_compile_only(plan, path, shape, Path(caches), tiling, form, steps))
                save_partial(plan, build_meta(plan, {}), results)
    return build_meta(plan, {}), results
  progress(f"matmul reference ({plan.devices} device(s){', simulated' if plan.simulated else ''})")
  matmul = run_worker({"kind": "matmul", "dtype": plan.dtype}, plan.env, plan.out / "logs" / "matmul.log")
  if not matmul.get("ok"):
    progress(f"matmul reference failed: {matmul['error']}")
  results = []
  with tempfile.TemporaryDirectory(prefix="bench-caches-") as caches:
    for shape in plan.shapes:
      # torch first (its output is the reference), each path untiled then tiled: rows side by side.
      references = dict.fromkeys(map(tiled_suffix, plan.tilings()))
      for path in plan.paths:
        for tiling in plan.tilings():
          if path == "torch":
            record, references[tiled_suffix(tiling)] = measure_torch(plan, shape, tiling)
            results.append(record)
            save_partial(plan, build_meta(plan, matmul), results)
            continue
          for form in plan.conv_forms:
            for steps in plan.step_sizes_for(path):
              reference = references[tiled_suffix(tiling)]
              results.append(measure_jax(plan, path, shape, reference, Path(caches), tiling, form, steps))
              save_partial(plan, build_meta(plan, matmul), results)
  parallel = 1 if plan.simulated else plan.devices  # simulated devices share the host's cores
  add_flops_fraction(results, matmul, parallel)
  return build_meta(plan, matmul), results


def save_partial(plan: Plan, meta: dict, results: list[dict]) -> None:
  """``OUT/results.json`` after each measurement (``"partial": true``), so a run stopped from outside
  (a time limit) keeps every measurement it finished; ``main`` writes the final file."""
  write_results(plan.out / "results.json", {**meta, "partial": True}, results)


def write_results(path: Path, meta: dict, results: list[dict]) -> None:
  temporary = path.with_suffix(".json.tmp")  # replaced whole: a reader never sees half a file
  temporary.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
  temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    plan = validate(args)
  except UsageError as err:
    parser.error(str(err))  # exits with status 2
  (plan.out / "logs").mkdir(parents=True, exist_ok=True)
  started = time.perf_counter()
  meta, results = run(plan)
  write_results(plan.out / "results.json", meta, results)
  plot(results, plan.out / "bench.png", plan.model_class)
  print(target_table(results) if plan.target else memory_table(results) if plan.compile_only else markdown_table(results))
  for r in results:
    if r.get("unavailable"):
      progress(f"{r['path']}: not available for {plan.model_class}: {r['error'].splitlines()[0]}")
  failed = failed_measurements(results)
  progress(f"done in {time.perf_counter() - started:.0f} s: {plan.out / 'results.json'}")
  if failed:
    logs = plan.out / "logs"
    progress(f"{len(failed)} of {len(results)} measurements failed (see 'error' in results.json, logs in {logs})")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
