"""One measurement in one fresh process: ``python -m compare.worker --json-args '{"kind": …}'``.

Run by ``compare.bench``, one process per measurement, so no compiled program, cache or allocation
leaks from one measurement into the next. Kinds:

  devices  platform, device kind and count (the bench checks ``--mesh`` against it before any work)
  matmul   FLOP/s of a 2048x2048 float32 ``jnp.dot`` and bytes/s of an elementwise pass over 256 MiB
           (an accelerator: 8192x8192 in the bench's dtype, 4 GiB): the yardsticks for a decode's
           achieved FLOP/s and bytes/s
  torch    diffusers' eager ``vae.decode`` of the checkpoint's class (on CUDA when torch sees a GPU):
           latency, peak RSS (and CUDA peak allocation); saves its output as the reference ``.npy``
           the JAX paths are compared against
  jax      one JAX path (``torchax`` | ``native_flax``) from process start to first output, with the
           compile cache dir it is given. ``phase="cold"`` (empty cache): compile times and FLOPs.
           ``phase="warm"`` (cache filled by the cold process, stored executables ignored): whether
           the cache was hit, then decode latency, memory and the error against the reference.
           ``phase="warm_exe"``: warm start from the serialized executables the cold process stored
           (no tracing, no lowering). ``phase="compile_only"``: lower and compile the step programs
           a decode would run (nothing stored, nothing run): compile times, XLA's memory and cost
           analyses; for planning a size this machine could not decode.

With ``"tiling"`` (``enable_tiling``'s four arguments) a torch or jax measurement decodes with tiling
enabled, as diffusers' ``tiled_decode`` does; the JAX cold phase then compiles one program per tile
shape (and frame-step kind) and reports each one's XLA memory analysis.

Prints exactly one JSON line on stdout, ``{"ok": true, …}`` or ``{"ok": false, "error": …}``; all
other output (library chatter included, even from C) goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import re
import resource
import statistics
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

# The package to import and the modules its load() pulls in, imported up front so that the "imports"
# phase of a start stays apart from its "weights" phase; the second tuple only where the process
# traces (cold, warm from JAX's cache, compile-only): a warm start from stored executables needs none
# of torch, torchax or diffusers (torchax_vae.runtime), so its imports are what a user's are.
JAX_PATHS = {
  "torchax": (
    "torchax_vae",
    ("torchax_vae.runtime.adapters", "torchax_vae.core.loading"),
    ("torchax_vae.tracing.backend", "torchax_vae.tracing.models.cogvideox", "torchax_vae.tracing.models.wan",
     "torchax_vae.tracing.models.hunyuan_video", "torchax_vae.tracing.models.hunyuan_video15",
     "torchax_vae.tracing.models.ltx_video", "torchax_vae.tracing.models.ltx2_video",
     "torchax_vae.tracing.generic_module"),
  ),
  "native_flax": ("native_flax", ("native_flax.backend", "native_flax.convert"), ()),
  # torchax_vae.load(..., generic=True): diffusers' own decode traced whole, also for an adapter's class
  "generic": (
    "torchax_vae",
    ("torchax_vae.runtime.generic", "torchax_vae.core.loading"),
    ("torchax_vae.tracing.backend", "torchax_vae.tracing.generic_module"),
  ),
}
MATMUL_SIZE = 2048


class PathUnavailable(RuntimeError):
  """The path's package cannot be imported or loaded (e.g. a port that is not finished yet)."""


def latent(shape: list[int], seed: int):
  """The benchmark input: standard normal ``(B, C, T, H, W)`` float32, the same in every process."""
  import numpy as np

  return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


def peak_rss_mb() -> float:
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def timed_runs(fn, repeats: int) -> dict[str, Any]:
  """Runs ``fn`` (which must block until its result is ready) ``repeats`` times: median/min/max s."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def tile_layout(adapter, latent_hw: tuple[int, int], tiling: dict) -> dict | None:
  """How a tiled decode splits a latent of ``(H, W)``: ``None`` when it is not tiled at all.

  ``adapter``: the model adapter (``runner.adapter``, ``checkpoint.adapter``); ``tiling``: its
  ``enable_tiling``'s arguments. The tiles are those of diffusers' ``tiled_decode`` (and
  ``Runner._run_tiled``, which mirrors it):
  ``{"grid": [rows, cols], "count", "latent_tile": [h, w], "shapes": {"HxW": tiles}, "output_hw": [h, w]}``,
  ``output_hw`` being the stitched video's size (CogVideoX keeps ``tile - blend`` sample pixels of
  each tile, which equals the tile stride only for some tile sizes; Wan crops to the untiled size).
  Raises ``ValueError`` (from the adapter) for tiles too small for their overlap.
  """
  from collections import Counter

  grid = adapter.tile_grid(adapter.tiling_class(**tiling), "decode", *latent_hw)
  if grid is None:
    return None
  compression = adapter.spatial_compression
  tiles = grid.tiles(*latent_hw)
  heights = [rows.stop - rows.start for rows, _ in (row[0] for row in tiles)]
  widths = [cols.stop - cols.start for _, cols in tiles[0]]
  shapes = Counter(f"{h}x{w}" for h in heights for w in widths)
  if grid.crop is not None:  # stitched and cut to the untiled size
    output_hw = [latent_hw[0] * compression, latent_hw[1] * compression]
  else:
    output_hw = [sum(min(grid.keep[0], h * compression) for h in heights),
                 sum(min(grid.keep[1], w * compression) for w in widths)]  # fmt: skip
  return {
    "grid": [len(heights), len(widths)],
    "count": len(heights) * len(widths),
    "latent_tile": list(grid.tile),
    "shapes": dict(shapes),
    "output_hw": output_hw,
  }


# --- devices / matmul ----------------------------------------------------------------------------


def run_devices(args: dict) -> dict:
  """The host's devices; with ``"target"`` (a TPU topology), that topology's chips (compile-only)."""
  if args.get("target"):
    from torchax_vae.core.target import compiler_version, open_target

    target = open_target(args["target"])
    return {"platform": target.platform, "device_kind": target.device_kind, "device_count": len(target.devices),
            "hosts": target.hosts, "chip": dataclasses.asdict(target.chip), "libtpu": compiler_version()}  # fmt: skip
  import jax

  devices = jax.devices()
  return {"platform": devices[0].platform, "device_kind": devices[0].device_kind, "device_count": len(devices)}


COPY_ELEMENTS = 2**26
# On an accelerator the yardsticks must reach its ceilings: a product large enough for the matrix
# units, in the decode's dtype (bf16 is what their dense peak is quoted in), and a pass over 4 GiB
# (many times the L2), so launch overhead is a small part of what is timed.
ACCELERATOR_MATMUL_SIZE = 8192
ACCELERATOR_COPY_ELEMENTS = 2**30


def run_matmul(args: dict) -> dict:
  """FLOP/s of one ``(n, n) @ (n, n)`` product on the default device, and bytes/s of an elementwise
  float32 pass, read once and written once (median of 7 each): the compute and memory yardsticks.

  XLA:CPU: n = 2048 in float32 over 256 MiB. An accelerator: n = 8192 in ``args["dtype"]`` (default
  float32) over 4 GiB.
  """
  import jax
  import jax.numpy as jnp

  accelerator = jax.default_backend() != "cpu"
  n = ACCELERATOR_MATMUL_SIZE if accelerator else MATMUL_SIZE
  dtype = jnp.dtype(args.get("dtype", "float32")) if accelerator else jnp.dtype(jnp.float32)
  elements = ACCELERATOR_COPY_ELEMENTS if accelerator else COPY_ELEMENTS
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dtype)  # random, not zeros: zeros run faster than real data
  b = jax.random.normal(kb, (n, n), dtype)
  dot = jax.jit(jnp.dot)
  for _ in range(2):  # compile, then one run to settle thread pools
    dot(a, b).block_until_ready()
  stats = timed_runs(lambda: dot(a, b).block_until_ready(), 7)
  # The pass's input: the product's random operand repeated (its speed does not depend on the values).
  # Drawing all of them afresh took longer than everything timed here (XLA:CPU: 5 s of 15).
  x = jnp.resize(a.astype(jnp.float32).ravel(), elements)
  step = jax.jit(lambda v: v * 0.5 + 1.0)
  for _ in range(2):
    step(x).block_until_ready()
  copy = timed_runs(lambda: step(x).block_until_ready(), 7)
  return {
    "matmul_size": n, "matmul_dtype": str(dtype), "matmul_s": stats["median"],
    "matmul_flops_per_s": 2 * n**3 / stats["median"],
    "copy_bytes": 2 * 4 * elements, "copy_bytes_per_s": 2 * 4 * elements / copy["median"],
  }  # fmt: skip


# --- torch ---------------------------------------------------------------------------------------


def run_torch(args: dict) -> dict:
  """diffusers' eager decode (``torch.no_grad``, default threads); saves the reference output.

  The class is the checkpoint's (``config.json``'s ``_class_name``). Runs on CUDA when torch sees a
  GPU (TF32 off for float32, so the reference stays exact), else on the CPU. With
  ``args["tiling"]``: ``model.enable_tiling(**tiling)`` first.
  """
  import diffusers
  import numpy as np
  import torch

  class_name = json.loads((Path(args["model"]) / "config.json").read_text()).get("_class_name")
  model_class = getattr(diffusers, class_name or "AutoencoderKLCogVideoX")

  phases = {"imports": time.time() - args["spawned_at"]}
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args["dtype"]]
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  if cuda:
    torch.backends.cudnn.allow_tf32 = False  # on by default for convolutions
    torch.backends.cuda.matmul.allow_tf32 = False
  start = time.perf_counter()
  model = model_class.from_pretrained(args["model"], torch_dtype=dtype).eval().to(device)
  phases["weights"] = time.perf_counter() - start
  if args.get("tiling"):
    model.enable_tiling(**args["tiling"])
  if args.get("framewise"):  # diffusers' attribute: frame tiles (HunyuanVideo's default, LTX's option)
    model.use_framewise_decoding = True
  z = torch.from_numpy(latent(args["latent_shape"], args["seed"])).to(device=device, dtype=dtype)
  outputs = []

  def decode():
    out = model.decode(z)
    # .sample of diffusers' DecoderOutput; some classes' decode returns a tensor or a tuple.
    outputs[:] = [out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out]
    if cuda:
      torch.cuda.synchronize(device)

  with torch.no_grad():
    if cuda:
      torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    decode()  # the warm-up: oneDNN (cuDNN) picks its kernels on the first call
    phases["first_run"] = time.perf_counter() - start
    decode_s = timed_runs(decode, args["repeats"])
  video = outputs[0].float().cpu().numpy()
  if args.get("reference"):
    Path(args["reference"]).parent.mkdir(parents=True, exist_ok=True)
    np.save(args["reference"], video)
  return {
    "decode_s": decode_s,
    "start_breakdown_s": phases,
    "output_shape": list(video.shape),
    "peak_rss_mb": peak_rss_mb(),
    "device": str(device),
    "device_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
  }


# --- JAX paths -----------------------------------------------------------------------------------


class CompilerLog(logging.Handler):
  """Collects the messages of JAX's compiler logger (persistent-cache hits and misses are DEBUG)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.messages: list[str] = []
    logger = logging.getLogger("jax._src.compiler")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(self)

  def emit(self, record: logging.LogRecord) -> None:
    self.messages.append(record.getMessage())

  @contextlib.contextmanager
  def window(self):
    """Yields the list of messages logged inside the ``with`` block."""
    start = len(self.messages)
    seen: list[str] = []
    try:
      yield seen
    finally:
      seen.extend(self.messages[start:])


def cache_files(directory: Path) -> set[str]:
  """The entries of a persistent compile cache (JAX's own probe files and ours excluded)."""
  if not directory.is_dir():
    return set()
  return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")}


def import_path(path: str, tracing: bool = True):
  """Imports the path's package and the modules its ``load`` uses (``tracing``: also those its
  programs are traced with); raises PathUnavailable."""
  package_name, modules, traced_with = JAX_PATHS[path]
  try:
    package = importlib.import_module(package_name)
    for name in (*modules, *(traced_with if tracing else ())):
      importlib.import_module(name)
  except Exception as err:  # ImportError, or any error a half-written module raises at import
    raise PathUnavailable(f"{path} path unavailable: import failed: {type(err).__name__}: {err}") from err
  if not callable(getattr(package, "load", None)):
    raise PathUnavailable(f"{path} path unavailable: {package_name}.load is missing")
  return package


def runner_tile_layout(runner, latent_hw) -> dict | None:
  """:func:`tile_layout` of the runner's current tiling (``None`` when tiling is off or not needed)."""
  import dataclasses

  if runner.tiling is None or runner.generic:
    return None  # the generic path tiles inside diffusers' own decode: one program, no layout of ours
  return tile_layout(runner.adapter, tuple(latent_hw), dataclasses.asdict(runner.tiling))


def compile_decode_programs(runner, z) -> tuple[dict, dict]:
  """The step programs ``runner.decode(z)`` runs, obtained ahead of it (``Runner.precompile``), so
  decode afterwards neither retraces nor recompiles.

  z: latents ``(B, C, T, H, W)``. Returns ``(breakdown, compiled)``: per program (``"first"``,
  ``"steady"``; tiled: ``"first HxW"``, ``"steady HxW"`` per tile shape)
  ``{"trace_lower", "compile", "cache_hit", "deserialized"}`` and the program; a ``"steady"``
  entry is ``None`` when decode has a single frame step (CogVideoX T ≤ 3, Wan T = 1). ``compile``
  is the XLA compile, a persistent-cache fetch when the cache is warm, or the deserialization.
  """
  breakdown: dict[str, Any] = {}
  compiled: dict[str, Any] = {}
  for program in runner.precompile([z.shape]):
    breakdown[program.name] = {
      "trace_lower": program.trace_lower_s,
      "compile": program.compile_s,
      "cache_hit": program.source in ("jax_cache", "deserialized"),
      "deserialized": program.source == "deserialized",
    }
    compiled[program.name] = program.executable
    if program.name.startswith("first"):
      breakdown.setdefault(program.name.replace("first", "steady", 1), None)
  return breakdown, compiled


def program_runs(
  adapter, num_latent_frames: int, tiles: dict | None = None, *, temporal=None, frames_per_step: int | None = None
) -> dict[str, int]:
  """How often decode runs each program: CogVideoX T=2 -> first 1, steady 0; T=13 -> first 1, steady 5;
  Wan T=21 -> first 1, steady 20 (``frames_per_step=5``: steady 4).

  Tiled (``tiles``: a :func:`tile_layout`): per tile shape, e.g. ``{"first 6x5": 1, "steady 6x5": 0, …}``,
  each tile of that shape running the first program once and the steady one per later frame step.
  In frame tiles (``temporal``: ``runner.temporal_tiles("decode", T)``, HunyuanVideo): per tile length, e.g. T=11 ->
  ``{"first t5": 3, "first t2": 1}`` (with spatial tiles, ``"first t5 6x5"``, …).
  """
  from collections import Counter

  lengths = [num_latent_frames] if temporal is None else [end - start for start, end in temporal.spans]
  runs: Counter[str] = Counter()
  for length in lengths:
    prefix = "" if temporal is None else f" t{length}"
    steady = len(adapter.plan("decode", length, frames_per_step)) - 1
    for shape, count in ({"": 1} if tiles is None else {f" {k}": v for k, v in tiles["shapes"].items()}).items():
      runs[f"first{prefix}{shape}"] += count
      runs[f"steady{prefix}{shape}"] += count * steady
  return dict(runs)


def program_cost(compiled, field: str = "flops") -> float | None:
  """One field of XLA's cost analysis of a compiled program (per device under SPMD): ``"flops"`` or
  ``"bytes accessed"`` (what its operations read and write in memory); ``None`` if unavailable."""
  return (program_costs(compiled) or {}).get(field)


def program_costs(compiled) -> dict[str, float] | None:
  """XLA's cost analysis of one program (per device under SPMD): ``flops``, ``bytes accessed``,
  ``transcendentals``, on TPU ``optimal_seconds``, …; ``None`` if the backend has none."""
  try:
    analysis = compiled.cost_analysis()
  except NotImplementedError:
    return None
  # A dict in recent jax, a list of per-computation dicts in older ones.
  entries = analysis if isinstance(analysis, list | tuple) else [analysis]
  merged: dict[str, float] = {}
  for entry in entries:
    for key, value in (entry if isinstance(entry, dict) else {}).items():
      if isinstance(value, int | float) and "{" not in key:  # not the per-operand breakdown ("bytes accessed0{}")
        merged[key] = merged.get(key, 0.0) + float(value)
  return merged


MEMORY_FIELDS = {  # our name -> CompiledMemoryStats attribute
  "temp": "temp_size_in_bytes",
  "argument": "argument_size_in_bytes",
  "output": "output_size_in_bytes",
  "alias": "alias_size_in_bytes",
  "generated_code": "generated_code_size_in_bytes",
}


def program_memory(compiled) -> dict[str, int] | None:
  """XLA's memory analysis of one compiled program, in bytes (per device under SPMD); ``None`` if unavailable.

  ``temp`` is the scratch the program needs beyond its arguments and outputs: the activations,
  the part tiling shrinks. ``argument`` includes the weights.
  """
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError, AttributeError):
    return None
  if stats is None:
    return None
  found = {name: getattr(stats, attr, None) for name, attr in MEMORY_FIELDS.items()}
  return {name: int(value) for name, value in found.items() if value is not None}


def device_memory_mb(devices) -> float | None:
  """Peak device memory summed over ``devices``, if the backend reports it (CPU does not)."""
  peaks = []
  for device in devices:
    try:
      stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
      stats = None
    if not stats or "peak_bytes_in_use" not in stats:
      return None
    peaks.append(stats["peak_bytes_in_use"])
  return sum(peaks) / 2**20


def abstract_weights() -> None:
  """Compile-only on the torchax paths: the weights placed as shapes, dtypes and shardings only.

  Lowering and compiling the step programs (and XLA's memory analysis of them) needs no weight values.
  Placed for real, every simulated device of a mesh holds its own replica: 8 of the 1.26B-parameter
  HunyuanVideo 1.5 VAE exhaust a 24 GB host before anything compiles. The checkpoint is still read and
  checked against the module as on any load.
  """
  import jax

  from torchax_vae.core import mesh as mesh_lib
  from torchax_vae.runtime import weights as weights_lib

  real_place = weights_lib.place_weights

  def place(weights, dtype, mesh=None, *, abstract=False):  # always as shapes (its own abstract=True)
    return real_place(weights, dtype, mesh, abstract=True)

  real_put = mesh_lib.put

  def put(value, sharding):  # the runner places params on its mesh: abstract ones stay abstract
    if isinstance(value, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)
    return real_put(value, sharding)

  weights_lib.place_weights = place
  mesh_lib.put = put


def run_jax(args: dict) -> dict:
  """Process start -> first output of one JAX path, then (warm phase) latency, memory and error."""
  import jax
  import jax.numpy as jnp

  package = import_path(args["path"], tracing=args["phase"] != "warm_exe")
  start_s = {"imports": time.time() - args["spawned_at"]}
  log = CompilerLog()
  cache_dir = Path(args["cache_dir"])
  files_before = cache_files(cache_dir)

  start = time.perf_counter()
  from torchax_vae.core.errors import UnsupportedModelError

  target = args.get("target")  # a TPU topology: the load takes the weights as shapes itself
  if args["phase"] == "compile_only" and args["path"] in ("torchax", "generic") and not target:
    abstract_weights()
  try:
    options = {"generic": True} if args["path"] == "generic" else {}
    if target:
      options["target"] = target
    if args.get("frames_per_step"):
      options["frames_per_step"] = args["frames_per_step"]
    runner = package.load(args["model"], dtype=args["dtype"], mesh=args["mesh"], cache_dir=str(cache_dir), **options)
  except (NotImplementedError, UnsupportedModelError) as err:
    # A path that has no port of this model (yet): reported as not available, not as a failure.
    raise PathUnavailable(f"{args['path']} path unavailable: {err}") from err
  jax.block_until_ready(runner.params)
  start_s["weights"] = time.perf_counter() - start
  if args.get("tiling"):
    runner.enable_tiling(**args["tiling"])
  if args.get("framewise"):  # the generic path: the module's own attribute; an adapter: the runner's
    (runner.module if runner.generic else runner).use_framewise_decoding = True
  if args["phase"] != "warm_exe":
    # Cold: compile (and store executables for warm_exe). Warm: JAX's persistent cache alone, the
    # warm start most JAX programs get; the stored executables are not looked at. Compile-only:
    # nothing is stored.
    from torchax_vae.core.executables import ExecutableStore

    keep = args["phase"] == "cold"
    runner.programs.store = ExecutableStore(runner.programs.store.directory if keep else None)

  z = jnp.asarray(latent(args["latent_shape"], args["seed"]))
  traces = dict(runner.trace_counts)
  notes = []
  if args["phase"] == "warm_exe":
    # Exactly a user's warm start: the first decode finds the stored executables itself (the
    # explicit compile below would trace to learn the cache's shapes, which decode never does).
    before = dict(runner.programs.timings)
    with log.window():
      start = time.perf_counter()
      video = jax.block_until_ready(runner.decode(z))
      total = time.perf_counter() - start
    spent = {k: runner.programs.timings[k] - before[k] for k in before}
    start_s["trace_lower"] = spent["trace_lower"]
    start_s["cache_fetch"] = spent["compile"] + spent["deserialize"]
    start_s["first_run"] = total - start_s["trace_lower"] - start_s["cache_fetch"]
    used, breakdown, compiled = [], {}, {}
    sources = runner.programs.sources
    deserialized = sources["deserialized"] > 0 and sources["compiled"] == 0 and sources["jax_cache"] == 0
  else:
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    breakdown, compiled = compile_decode_programs(runner, z)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds the process spent obtaining them (every thread): the compiler's work, which two
    # compiles sharing a host's cores do not inflate as they do each other's wall time.
    compile_cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    used = [name for name, times in breakdown.items() if times is not None]
    start_s["trace_lower"] = sum(breakdown[name]["trace_lower"] for name in used)
    start_s["cache_fetch"] = sum(breakdown[name]["compile"] for name in used)
    deserialized = all(breakdown[name]["deserialized"] for name in used)
    traces = dict(runner.trace_counts)
  if args["phase"] == "compile_only":
    video = None
  elif args["phase"] != "warm_exe":
    # The first decode: in the cold phase it also fills the cache with the small programs decode
    # runs around the steps (input checks, slicing, concatenation), as a user's first run would.
    with log.window() as messages:
      start = time.perf_counter()
      video = jax.block_until_ready(runner.decode(z))
      start_s["first_run"] = time.perf_counter() - start
    recompiled = [m for m in messages if f"{runner.name}_decode_" in m and "cache" in m.lower()]
    if recompiled:
      notes.append(f"first decode compiled step programs again: {recompiled}")
  if args["phase"] != "warm_exe" and dict(runner.trace_counts) != traces:
    notes.append(f"first decode retraced step programs: {traces} -> {dict(runner.trace_counts)}")
  new_files = sorted(cache_files(cache_dir) - files_before)

  tiles = runner_tile_layout(runner, z.shape[3:])
  # The generic path runs the module's own decode: one program ("whole"), once.
  runs = {"whole": 1} if runner.generic else program_runs(
    runner.adapter, z.shape[2], tiles, temporal=runner.temporal_tiles("decode", z.shape[2]), frames_per_step=runner.frames_per_step
  )
  flops = [program_cost(compiled[name], "flops") for name in used]
  moved = [program_cost(compiled[name], "bytes accessed") for name in used]
  devices = runner.devices
  result = {
    "device_count": jax.device_count(),
    "programs": runs,
    "tiles": tiles,
    "breakdown": breakdown,
    # XLA's memory analysis of each step program (bytes; per device under SPMD): cold phase only.
    "program_memory": {name: program_memory(compiled[name]) for name in used},
    "start_breakdown_s": start_s,
    "cache_hit": all(breakdown[name]["cache_hit"] for name in used) and not new_files,
    "cache_new_files": new_files,
    # What JAX said about the step programs' cache entries (keys, hits, misses, writes): the
    # evidence when a warm start misses.
    "cache_log": [m[:240] for m in log.messages if f"{runner.name}_decode_" in m],
    # SPMD programs are per device: the work of a decode is that times the devices it runs on.
    "flops": None if None in flops else sum(f * runs[n] for f, n in zip(flops, used)) * len(devices),
    "bytes_accessed": None if None in moved else sum(b * runs[n] for b, n in zip(moved, used)) * len(devices),
    "output_shape": list(video.shape if video is not None else decoded_shape(runner, z.shape, compiled)),
    "notes": notes,
    # the 3D convolution form the programs use
    "conv3d": runner.conv3d_form if runner.generic else runner.steps.fingerprint.get("conv3d"),
    "frames_per_step": None if runner.generic else runner.frames_per_step,
  }
  if args["phase"] == "compile_only":
    from compare.collectives import count_collectives

    # Per program: the collectives in its optimised HLO and XLA's whole cost analysis (a TPU
    # target's includes the compiler's own optimal_seconds estimate: compare.estimate decodes it).
    texts = {name: compiled[name].as_text() for name in used}
    result["collectives"] = {name: count_collectives(text) for name, text in texts.items()}
    # The custom calls per program: on TPU, the ops the compiler's estimate has no figure for are
    # among them (compare.estimate).
    result["custom_calls"] = {name: dict(Counter(re.findall(r'custom_call_target="([^"]+)"', text))) for name, text in texts.items()}
    if args.get("hlo_dir"):  # the optimised programs, for reading where a step's bytes go
      hlo_dir = Path(args["hlo_dir"])
      hlo_dir.mkdir(parents=True, exist_ok=True)
      for name, text in texts.items():
        (hlo_dir / f"{args['hlo_name']}-{name.replace(' ', '_')}.hlo.txt").write_text(text)
    result["cost"] = {name: program_costs(compiled[name]) for name in used}
    result["compile_cpu_s"] = compile_cpu_s
  result["deserialized"] = deserialized
  if args["phase"] == "warm":
    result.update(steady_latency(runner, z, args["repeats"], args.get("reference")))
    result["device_memory_mb"] = device_memory_mb(devices)
  result["peak_rss_mb"] = peak_rss_mb()  # before the yardstick's buffer
  if args["phase"] in ("warm", "warm_exe"):
    result["weights_yardstick_s"] = weights_yardstick(args["model"], devices[0])
  return result


def weights_yardstick(model: str, device) -> dict[str, float]:
  """What loading the weights cannot beat, in the same process: reading the checkpoint's weight
  files' bytes (as the start just did: from the page cache) and one ``device_put`` of that many
  bytes (a uint8 array) to the path's device; seconds, and the bytes."""
  import jax
  import numpy as np

  from torchax_vae.core.checkpoint import read_into, resolve_checkpoint_dir, weight_files

  files = weight_files(resolve_checkpoint_dir(model))
  start = time.perf_counter()
  data = np.empty(sum(path.stat().st_size for path in files), np.uint8)
  view, done = memoryview(data), 0
  for path in files:  # each file's bytes into one buffer, as the loader reads them
    done += read_into(path, view[done:])
  read_s = time.perf_counter() - start
  start = time.perf_counter()
  jax.device_put(data, device).block_until_ready()
  put_s = time.perf_counter() - start
  return {"read": read_s, "device_put": put_s, "total": read_s + put_s, "bytes": done}


def decoded_shape(runner, latent_shape, compiled) -> tuple[int, ...]:
  """The shape a decode of ``latent_shape`` returns, without running it: the adapter's rule, or the
  generic path's compiled program's output."""
  if runner.generic:
    import jax

    return tuple(jax.tree.leaves(compiled["whole"].out_info)[0].shape)
  return runner.adapter.decoded_shape(latent_shape)


def steady_latency(runner, z, repeats: int, reference: str | None) -> dict:
  """``runner.decode(z)`` on a ``jax.Array``: ``repeats`` timed runs, and the error vs torch's output.

  The first decode (``first_run``, just before) is the warm-up: it ran these same executables.
  """
  import jax
  import numpy as np

  outputs = []

  def decode():
    outputs[:] = [jax.block_until_ready(runner.decode(z))]

  result = {"decode_s": timed_runs(decode, repeats)}
  if reference and Path(reference).is_file():
    expected = np.load(reference)
    out = np.asarray(jax.device_get(outputs[0])).astype(np.float32)
    if out.shape != expected.shape:
      raise ValueError(f"output shape {out.shape} differs from the torch reference's {expected.shape}")
    result["max_abs_err"] = float(np.abs(out - expected).max())
  return result


KINDS = {"devices": run_devices, "matmul": run_matmul, "torch": run_torch, "jax": run_jax}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="One benchmark measurement (run by compare.bench).")
  parser.add_argument("--json-args", required=True, help="the measurement, as a JSON object")
  args = json.loads(parser.parse_args(argv).json_args)
  args.setdefault("spawned_at", time.time())
  with stdout_to_stderr():
    try:
      result = {"ok": True, **KINDS[args["kind"]](args)}
    except PathUnavailable as err:
      result = {"ok": False, "unavailable": True, "error": str(err)}
    except Exception as err:
      traceback.print_exc()
      result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
  print(json.dumps(result), flush=True)
  return 0 if result["ok"] else 1


@contextlib.contextmanager
def stdout_to_stderr():
  """Sends everything printed to stdout, even by C code (fd 1), to stderr while inside."""
  sys.stdout.flush()
  saved_fd, saved_stdout = os.dup(1), sys.stdout
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  try:
    yield
  finally:
    sys.stdout.flush()
    os.dup2(saved_fd, 1)
    os.close(saved_fd)
    sys.stdout = saved_stdout


if __name__ == "__main__":
  sys.exit(main())
