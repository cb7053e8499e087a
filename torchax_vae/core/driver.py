"""One driver, many models, two step backends.

Every path decodes the same way: validate the input, convert it to the backend's layout and place
it on the mesh, walk the model's frame steps carrying the causal conv cache (and the tiles, when
tiling), and hand the result back in the caller's kind. Two things vary, each in one place:

* the **model** (CogVideoX, Wan, …): an adapter (:mod:`.models`) declares its channels and
  compression, frame plans, tiling rule, what comes before encode / after decode, its posterior;
* the **backend** (torchax on the unmodified diffusers module; the NNX port): pure JAX functions

    decode_step(params, z, conv_cache, *condition) -> (video, conv_cache)   # conv_cache is None on the first step
    encode_step(params, x, conv_cache) -> (moments, conv_cache)

  in its own layout (``"BCTHW"`` for torchax, ``"BTHWC"`` for native_flax). ``condition``: what
  diffusers' decode takes besides the latents, as the adapter prepares it (LTX's decode timestep
  ``temb``, ``(B,)``); empty for most models. A step's cache must
  have the same structure and shapes whatever the number of frames in the step (it depends only
  on batch and spatial size), so one steady program serves every later step.

The driver names no model. It jits each step kind once per shape and reuses it for every later
step and call, so compile cost does not grow with T: one program for the first step (no cache),
one for every steady step (cache in, cache out).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import executables, kinds
from . import mesh as mesh_lib
from . import progress as progress_lib
from . import target as target_lib
from .progress import ProgressArg
from .models import DECODE, ENCODE, FIRST, STEADY, FrameStep, TilingSettings, VideoVAE
from .target import Target
from .tiling import TemporalTiles, TileGrid

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

StepFn = Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]]


def _eager_slice(x: jax.Array, start: int, end: int, *, axis: int) -> jax.Array:
  return jax.lax.slice_in_dim(x, start, end, axis=axis)


# The walk's slices as one jitted function: lowered on shapes, its output sharding is the one the
# eager slice of a placed array gets (eager dispatch compiles the same primitive the same way).
_SLICE = jax.jit(jax.lax.slice_in_dim, static_argnames=("start_index", "limit_index", "stride", "axis"))


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """What a backend supplies: pure step functions in its own activation layout."""

  layout: str  # "BCTHW" or "BTHWC"
  decode_step: StepFn  # (params, z (B,·,T_step,·,·), cache | None) -> (video, cache)
  encode_step: StepFn  # (params, x, cache | None) -> (moments: mean ‖ logvar on channels, cache)
  # What the compiled programs depend on besides config, dtype and inputs (package versions, a
  # digest of the step code): part of the key of stored executables.
  fingerprint: dict[str, str] = dataclasses.field(default_factory=dict)
  # The layout of the cache's 5-D leaves, if not ``layout`` (torchax's steps keep their cache
  # channels-last, as the convolutions read and write it: core.transposes). Opaque to the driver
  # except for sharding: batch on dp, width on tp, wherever the layout puts them.
  cache_layout: str | None = None


@dataclasses.dataclass(frozen=True)
class Precompiled:
  """One step program :meth:`Runner.precompile` built or loaded."""

  kind: str  # "decode" or "encode"
  name: str  # "first" / "steady"; tiled: "first 30x45" (the tile's size in the walk's pixels)
  # "compiled" (a fresh XLA compile, stored as an executable), "jax_cache" (traced, lowered, fetched
  # from JAX's persistent cache), "deserialized" (a stored executable) or "memory" (this runner had it)
  source: str
  trace_lower_s: float  # preparing the inputs, tracing and lowering (no tracing for a stored executable)
  compile_s: float  # XLA compile, JAX cache fetch, or deserialization
  executable: Any  # the compiled program: memory_analysis(), cost_analysis(), as_text()

  def describe(self) -> str:
    source = "already built by this runner" if self.source == "memory" else self.source
    return f"{self.kind} {self.name}: {source} in {self.trace_lower_s + self.compile_s:.2f} s"


def obtain_recorded(
  programs: executables.Programs, label: str, jitted: Callable, args: tuple, *, kind: str, name: str, prepare_s: float = 0.0
) -> Precompiled:
  """``programs.get(label, jitted, args)`` as a :class:`Precompiled`: where the program came from and
  what it cost (read off ``programs``' running timings and source counts around the call)."""
  timings, sources = dict(programs.timings), dict(programs.sources)
  executable = programs.get(label, jitted, args)
  spent = {k: v - timings[k] for k, v in programs.timings.items()}
  came = [k for k, v in programs.sources.items() if v > sources[k]]
  return Precompiled(
    kind=kind,
    name=name,
    source=came[0] if came else "memory",
    trace_lower_s=prepare_s + spent["trace_lower"],
    compile_s=spent["compile"] + spent["deserialize"],
    executable=executable,
  )


class Runner:
  """``decode``/``encode`` with diffusers' contract over a backend's step functions.

  ``generic`` is ``False`` here and ``True`` for ``torchax_vae.runtime.generic.GenericRunner`` (a class
  without an adapter: its own decode, one program per call signature).

  Args:
    steps: the backend's step functions.
    params: the backend's weights (a pytree of ``jax.Array``), replicated over the mesh here.
    adapter: the model adapter (:mod:`.models`): plans, tiling rule, before/after, posterior.
    mesh: ``None``, a ``Mesh`` or a spec such as ``"dp=2,tp=4"``.
    dtype: ``"float32"`` or ``"bfloat16"``; inputs are cast to it, outputs come back in it.
    name: the path's name, for messages.
    executable_dir: where compiled step programs are stored as serialized executables and found
      again by later processes (warm start without tracing); ``None``: memory only.
    target: a compile-only TPU topology (:class:`~torchax_vae.core.target.Target`): the mesh is over
      its chips (one chip without a mesh), ``params`` are taken as shapes, and :meth:`precompile`
      compiles with the TPU compiler; nothing can run (``decode``/``encode`` refuse).
    frames_per_step: latent frames per steady step, for a model whose result does not depend on it
      (Wan; encode: 4x as many video frames a step); ``None``: the model's default for the
      platform the programs are for (:attr:`~.models.VideoVAE.frames_per_step_defaults`). Settable
      later as ``runner.frames_per_step``; each value has its own steady program.
  """

  generic = False

  def __init__(
    self,
    steps: StepFunctions,
    params: Any,
    adapter: VideoVAE,
    *,
    mesh: Mesh | str | None = None,
    dtype: str = "float32",
    name: str = "vae",
    executable_dir: str | os.PathLike | None = None,
    target: Target | None = None,
    frames_per_step: int | None = None,
  ):
    if dtype not in DTYPES:
      raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    self.steps = steps
    self.adapter = adapter
    self.config = adapter.config  # the model's frozen config (diffusers' config.json)
    self.target = target
    self.mesh = mesh_lib.make_mesh(mesh, devices=None if target is None else list(target.devices))
    self.devices = target_lib.program_devices(self.mesh, target)
    self.dtype = dtype
    self.compute_dtype = DTYPES[dtype]
    self.name = name
    if target is not None:  # nothing can be placed on a compile-only chip: the weights are shapes
      params = target_lib.as_shapes(params, self._placement(None))
    elif self.mesh is not None:  # mesh_lib.put: also under multi-controller JAX (a mesh over several processes)
      params = jax.tree.map(functools.partial(mesh_lib.put, sharding=mesh_lib.replicated(self.mesh)), params)
    self.params = params
    self._activation = mesh_lib.activation_sharding(self.mesh, steps.layout)
    self._cache_activation = mesh_lib.activation_sharding(self.mesh, steps.cache_layout or steps.layout)
    # How often each step function was traced: a retrace means a new program was built.
    self.trace_counts: Counter[str] = Counter()
    self.programs = executables.Programs(
      dict(steps.fingerprint, name=name, model=adapter.class_name, config=adapter.config.to_dict(), dtype=dtype,
           mesh=mesh_lib.describe(self.mesh),
           driver=executables.source_digest(sys.modules[__name__], kinds, mesh_lib, *_adapter_modules(adapter))),
      executables.ExecutableStore(executable_dir),
      devices=self.devices,
      target=target,
    )
    self.tiling: TilingSettings | None = None  # enable_tiling's settings while tiling is on
    self._tiling_values: TilingSettings | None = None  # the last ones set, kept while off (as diffusers keeps them)
    # diffusers' attributes of the same names: temporal tiles (HunyuanVideo, LTX) on or off.
    self.use_framewise_decoding = adapter.framewise_decoding
    self.use_framewise_encoding = adapter.framewise_encoding
    self._frames_per_step = adapter.default_frames_per_step(self.programs.platform)
    if frames_per_step is not None:
      self.frames_per_step = frames_per_step
    self._jitted = {
      f"{kind}_{label}": self._jit_step(step, f"{kind}_{label}", first=label == FIRST)
      for kind, step in ((DECODE, steps.decode_step), (ENCODE, steps.encode_step))
      for label in (FIRST, STEADY)
    }

  @property
  def frames_per_step(self) -> int | None:
    """Latent frames per steady step (Wan; ``None``: the model's steps are fixed)."""
    return self._frames_per_step

  @frames_per_step.setter
  def frames_per_step(self, value: int) -> None:
    self._frames_per_step = self.adapter.check_frames_per_step(value)

  # --- jitted programs -------------------------------------------------------------------------

  def _constrain(self, tree: Any, sharding: Any = None) -> Any:
    """Each leaf of ``tree`` constrained to ``sharding`` (default: the activations')."""
    sharding = sharding or self._activation
    if sharding is None:
      return tree
    # Inside jit, GSPMD pads a dimension the mesh axis does not divide, so uneven batch or width
    # is still split (and exact); device_put outside jit would refuse it.
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)

  def _constrain_cache(self, cache: Any) -> Any:
    return self._constrain(cache, self._cache_activation)

  def _split_sizes(self, ndim: int) -> tuple[int, ...]:
    """Devices each axis of a cache leaf of rank ``ndim`` is split over (1: not split)."""
    spec = tuple(self._cache_activation.spec) + (None,) * ndim
    return tuple(int(np.prod([self.mesh.shape[n] for n in jax.tree.leaves(spec[i])])) for i in range(ndim))

  def _pad_cache(self, cache: Any) -> Any:
    """Pads every split axis of the cache leaves up to a multiple of its device count.

    A ``jax.Array`` that leaves a program must divide evenly over the mesh. Inside jit, GSPMD splits
    an uneven axis (e.g. latent width 90 on tp=4) by padding its last shard; returned as it is, the
    cache would be all-gathered to replicated at the end of every step (and its split rebuilt in
    the next). Padded to that same size, each device keeps its shard: no collective at the boundary.
    """
    if self._activation is None:
      return cache

    def pad(a):
      widths = [(0, -n % m) for n, m in zip(a.shape, self._split_sizes(a.ndim))]
      return jnp.pad(a, widths) if any(w for _, w in widths) else a

    return jax.tree.map(pad, cache)

  def _unpad_cache(self, cache: Any, step: StepFn, params: Any, inputs: jax.Array, kind: str, condition: tuple = ()) -> Any:
    """Inverse of :meth:`_pad_cache`; the true shapes are those a first step returns for ``inputs``.

    A step's cache depends only on batch and spatial size, not on how many frames the step has (the
    backends' contract), so a first step on the frames a walk over ``inputs`` alone would start
    with gives them (a model's first step may differ from its steady one in more than the cache:
    it must get the frames it is planned for).
    Costs one abstract trace, only under a mesh.
    """
    if self._activation is None:
      return cache
    first = self.plan(kind, inputs.shape[self._time_axis()])[0]
    first_in = self._slice_time(inputs, first.start, first.end)
    _, true = jax.eval_shape(lambda p, x, c: step(p, x, None, *c), params, first_in, condition)
    return jax.tree.map(lambda a, t: a if a.shape == t.shape else a[tuple(slice(0, n) for n in t.shape)], cache, true)

  def _jit_step(self, step: StepFn, label: str, *, first: bool) -> Callable:
    if first:

      def program(params, inputs, *condition):
        self.trace_counts[label] += 1
        out, cache = step(params, self._constrain(inputs), None, *condition)
        return self._constrain(out), self._constrain_cache(self._pad_cache(cache))

    else:

      def program(params, inputs, cache, *condition):
        self.trace_counts[label] += 1
        cache = self._unpad_cache(self._constrain_cache(cache), step, params, inputs, label.split("_")[0], condition)
        out, cache = step(params, self._constrain(inputs), cache, *condition)
        return self._constrain(out), self._constrain_cache(self._pad_cache(cache))

    program.__name__ = f"{self.name}_{label}"
    # The steady program's cache in has the shapes of its cache out (padded alike on a mesh), and the
    # walk never uses a cache again once passed on: donated, XLA writes the new cache into the old
    # one's buffers instead of holding both.
    return jax.jit(program) if first else jax.jit(program, donate_argnums=(2,))

  def step_programs(self, kind: str) -> tuple[Callable, Callable]:
    """The jitted (first, steady) programs for ``kind`` in ``{"decode", "encode"}`` (for lowering/benchmarks)."""
    return self._jitted[f"{kind}_first"], self._jitted[f"{kind}_steady"]

  @staticmethod
  def steady_cache_spec(first_compiled) -> Any:
    """The conv cache the steady program takes after ``first_compiled`` ran, abstract.

    The compiled first program's own output info (no trace, also for a deserialized one): shapes
    as it pads them and its output shardings, exactly what a decode hands the steady program (a
    width the mesh does not divide is padded inside jit, so no sharding built outside would match).
    For lowering the steady program ahead of a decode (:meth:`precompile`).
    """
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), first_compiled.out_info[1])

  def precompile(self, latent_shapes: Any, *, encode: bool = False) -> list[Precompiled]:
    """Builds or loads every step program a ``decode`` of each latent shape ``(B, C, T, H, W)`` runs
    (first and steady step; each tile shape, with tiling as now enabled), without running one.

    With ``encode=True`` also those an ``encode`` of the video such latents decode to runs. A decode
    or encode of those shapes afterwards traces and compiles no step program (the small programs
    around the steps, e.g. slicing and joining, still compile on first use, in milliseconds).
    Returns one :class:`Precompiled` per program, saying where it came from and what it cost.
    """
    single = len(latent_shapes) > 0 and isinstance(latent_shapes[0], numbers.Integral)
    shapes = [tuple(latent_shapes)] if single else list(latent_shapes)
    if not shapes:
      raise ValueError("precompile: expected one or more latent shapes (B, C, T, H, W), got none")
    records = []
    for shape in shapes:
      shape = self._check_shape(shape, "latent_shapes", self.adapter.latent_channels, "latent channels")
      records += self._precompile(DECODE, shape)
      if encode:
        video = self.adapter.decoded_shape(shape)
        self.adapter.check_sample(jax.ShapeDtypeStruct(video, self.compute_dtype), "video")
        records += self._precompile(ENCODE, video)
    return records

  def _check_shape(self, shape: Any, name: str, channels: int, channel_name: str) -> tuple[int, ...]:
    try:
      shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
      raise ValueError(f"{name}: expected shapes of 5 ints (B, C, T, H, W), got {shape!r}") from None
    kinds.validate_video(jax.ShapeDtypeStruct(shape, self.compute_dtype), name, channels=channels, channel_name=channel_name)
    return shape

  def _precompile(self, kind: str, shape: tuple[int, ...]) -> list[Precompiled]:
    """The programs of a ``kind`` walk over an input of ``shape`` (the caller's), obtained with the
    arguments that walk gives them, from shapes alone (no array is made: a compile-only target has
    no memory): the input as :meth:`_prepare` places it and sliced (to the frame tile, the spatial
    tile and the step) as the walk slices it (:meth:`_abstract_slice`), over only the frames the
    first two steps take; the cache as the first program leaves it. Temporal tiles: each distinct
    tile length's programs."""
    start = time.perf_counter()
    temporal = self.temporal_tiles(kind, shape[2])
    lengths = [shape[2]] if temporal is None else temporal.lengths()
    condition = self._abstract_condition(shape[0]) if kind == DECODE else ()
    grid = self.tile_grid(kind, *shape[3:])  # decided on the caller's sizes, as decode/encode do
    records = []
    for length in lengths:
      plan = self.plan(kind, length)
      frames = plan[min(1, len(plan) - 1)].end
      x = self._abstract_input(kind, (*shape[:2], frames, *shape[3:]))
      prefix = "" if temporal is None else f" t{length}"
      walks = {prefix: x}
      if grid is not None:
        h_axis, w_axis = self._spatial_axes()
        for rows, cols in (tile for row in grid.tiles(x.shape[h_axis], x.shape[w_axis]) for tile in row):
          suffix = f"{prefix} {rows.stop - rows.start}x{cols.stop - cols.start}"
          if suffix not in walks:  # the first tile of each shape: its programs serve the others
            walks[suffix] = self._tile(x, rows, cols, slicer=self._abstract_slice)
        del walks[prefix]
      for suffix, walk_in in walks.items():
        first_in = self._slice_time(walk_in, plan[0].start, plan[0].end, slicer=self._abstract_slice)
        records.append(self._obtain(kind, FIRST + suffix, (self.params, first_in, *condition), time.perf_counter() - start))
        if len(plan) > 1:
          start = time.perf_counter()
          cache = self.steady_cache_spec(records[-1].executable)
          # (a plan pads only a shorter last step, so the second step's frames are the steady program's)
          steady_in = self._slice_time(walk_in, plan[1].start, plan[1].end, slicer=self._abstract_slice)
          records.append(
            self._obtain(kind, STEADY + suffix, (self.params, steady_in, cache, *condition), time.perf_counter() - start)
          )
        start = time.perf_counter()
    return records

  def _abstract_input(self, kind: str, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """What ``_prepare`` makes of a ``kind`` walk's input of ``shape`` (the caller's layout;
    ``before_encode`` first for an encode): its shape, dtype and placement, without an array."""
    before = self.adapter.before_encode if kind == ENCODE else (lambda x: x)
    laid_out = jax.eval_shape(lambda x: self._laid_out(before(x)), jax.ShapeDtypeStruct(shape, self.compute_dtype))
    return jax.ShapeDtypeStruct(laid_out.shape, laid_out.dtype, sharding=self._placement(laid_out.shape))

  def _abstract_slice(self, x: jax.ShapeDtypeStruct, start: int, end: int, axis: int) -> jax.ShapeDtypeStruct:
    """``jax.lax.slice_in_dim`` of an abstract ``x`` with the sharding the walk's eager slice of a
    placed array gets. Under a mesh that is GSPMD's choice (a width the mesh no longer divides loses
    its split), so the slice alone is compiled (milliseconds) and its output read, exactly as eager
    dispatch compiles it; one device keeps its device."""
    if self.mesh is None:
      out = jax.eval_shape(lambda a: jax.lax.slice_in_dim(a, start, end, axis=axis), x)
      return jax.ShapeDtypeStruct(out.shape, out.dtype, sharding=x.sharding)
    with target_lib.compiling_for(self.programs.platform):
      out = _SLICE.lower(x, start_index=start, limit_index=end, axis=axis).compile().out_info
    return jax.ShapeDtypeStruct(out.shape, out.dtype, sharding=out.sharding)

  def _abstract_condition(self, batch: int) -> tuple:
    """What a decode of ``batch`` samples passes the programs besides the latents (:meth:`_decode_condition`
    of the adapter's example), as shapes."""
    values = self.adapter.decode_condition(self.adapter.decode_condition_example(batch), batch)
    laid_out = [jax.eval_shape(self._laid_out_condition, jax.ShapeDtypeStruct(np.shape(v), np.result_type(v))) for v in values]
    return tuple(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=self._placement(None)) for v in laid_out)

  def _obtain(self, kind: str, name: str, args: tuple, prepare_s: float) -> Precompiled:
    """One program through :class:`executables.Programs` (memory, store, compile), timed and sourced."""
    label = f"{kind}_{name.split()[0]}"
    return obtain_recorded(self.programs, label, self._jitted[label], args, kind=kind, name=name, prepare_s=prepare_s)

  # --- layouts ---------------------------------------------------------------------------------

  def _to_backend_layout(self, x: jax.Array) -> jax.Array:
    return x if self.steps.layout == "BCTHW" else jnp.moveaxis(x, 1, -1)

  def _from_backend_layout(self, x: jax.Array) -> jax.Array:
    return x if self.steps.layout == "BCTHW" else jnp.moveaxis(x, -1, 1)

  def _time_axis(self) -> int:
    return 2 if self.steps.layout == "BCTHW" else 1

  def _slice_time(self, x: jax.Array, start: int, end: int, *, slicer: Callable = _eager_slice) -> jax.Array:
    return slicer(x, start, end, axis=self._time_axis())

  # --- the frame-step walk ---------------------------------------------------------------------

  def plan(self, kind: str, num_frames: int) -> list[FrameStep]:
    """The model's frame plan of a ``kind`` (``"decode"``/``"encode"``) walk over ``num_frames``."""
    plan = self.adapter.plan(kind, num_frames, self.frames_per_step)
    if not plan or plan[0].label != FIRST or any(step.label != STEADY for step in plan[1:]):
      raise AssertionError(f"{self.adapter}: a {kind} plan must be one first step, then steady steps: {plan}")
    return plan

  def _walk(
    self, kind: str, x: jax.Array, tick: Callable[[], None] | None = None, condition: tuple = ()
  ) -> Iterator[jax.Array]:
    cache = None
    for step in self.plan(kind, x.shape[self._time_axis()]):
      chunk = self._slice_time(x, step.start, step.end)
      if step.pad:  # a shorter last step, padded to the steady program's frames
        chunk = self._pad_time(chunk, step.pad)
      if step.label == FIRST:
        out, cache = self._call(f"{kind}_{FIRST}", self.params, chunk, *condition)
      else:
        out, cache = self._call(f"{kind}_{STEADY}", self.params, chunk, cache, *condition)
      if step.pad:  # what the padding made: output frames in proportion to input frames
        frames = out.shape[self._time_axis()]
        out = self._slice_time(out, 0, frames * (step.end - step.start) // step.size)
      if tick is not None:  # report a finished step, not a dispatched one
        jax.block_until_ready(out)
        tick()
      yield out

  def _pad_time(self, chunk: jax.Array, frames: int) -> jax.Array:
    """``chunk`` with ``frames`` zero frames after its own, placed as ``chunk`` is (the steady
    program was built for a slice's placement)."""
    widths = [(0, 0)] * chunk.ndim
    widths[self._time_axis()] = (0, frames)
    padded = jnp.pad(chunk, widths)
    return padded if self.mesh is None else mesh_lib.put(padded, chunk.sharding)

  def _walk_concat(self, kind: str, x: jax.Array, tick: Callable[[], None] | None, condition: tuple = ()) -> jax.Array:
    """All frame steps of ``x``, their outputs joined along time (backend layout)."""
    outputs = list(self._walk(kind, x, tick, condition))
    return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=self._time_axis())

  def _call(self, label: str, *args):
    """Runs the compiled program for these inputs, compiling or loading it on first use."""
    return self.programs.get(label, self._jitted[label], args)(*args)

  def _run(
    self,
    kind: str,
    x: jax.Array,
    grid: TileGrid | None,
    progress: Callable[[int, int], None] | None = None,
    condition: tuple = (),
  ) -> jax.Array:
    """The whole ``kind`` walk over ``x`` (backend layout in, driver layout out): frame tiles when
    the model tiles in time (:meth:`temporal_tiles`), each over the spatial tiles of ``grid`` (or
    whole), each through the model's frame plan, as diffusers nests them."""
    temporal = self.temporal_tiles(kind, x.shape[self._time_axis()])
    spans = [(0, x.shape[self._time_axis()])] if temporal is None else temporal.spans
    h_axis, w_axis = self._spatial_axes()
    tiles = 1 if grid is None else sum(map(len, grid.tiles(x.shape[h_axis], x.shape[w_axis])))
    tick = _ticker(progress, sum(tiles * len(self.plan(kind, end - start)) for start, end in spans))
    if temporal is None:
      out = self._walk_space(kind, x, grid, tick, condition)
    else:
      out = self._walk_frame_tiles(kind, x, temporal, grid, tick, condition)
    return self._from_backend_layout(out)

  def _walk_frame_tiles(
    self,
    kind: str,
    x: jax.Array,
    temporal: TemporalTiles,
    grid: TileGrid | None,
    tick: Callable[[], None] | None,
    condition: tuple = (),
  ) -> jax.Array:
    """diffusers' ``_temporal_tiled_decode``/``_temporal_tiled_encode``: each frame tile walked on its
    own (no cache between tiles), every later one without ``drop`` frames (its first, or its last with
    ``drop_last``) and blended over
    the previous (blended) one's tail, each cut to what it keeps, joined and cut to ``total``.
    Tiles of one length share one program set, so a video of any length runs at most two."""
    t_axis = self._time_axis()
    kept, previous = [], None
    for index, (start, end) in enumerate(temporal.spans):
      out = self._walk_space(kind, self._slice_time(x, start, end), grid, tick, condition)
      if index:
        frames = out.shape[t_axis]
        head, tail = (0, max(frames - temporal.drop, 0)) if temporal.drop_last else (min(temporal.drop, frames), frames)
        out = jax.lax.slice_in_dim(out, head, tail, axis=t_axis)
        out = _blend(previous, out, temporal.blend, t_axis)
      previous = out
      keep = temporal.keep if index else temporal.keep_first
      kept.append(jax.lax.slice_in_dim(out, 0, min(keep, out.shape[t_axis]), axis=t_axis))
    out = kept[0] if len(kept) == 1 else jnp.concatenate(kept, axis=t_axis)
    return jax.lax.slice_in_dim(out, 0, min(temporal.total, out.shape[t_axis]), axis=t_axis)

  def _walk_space(
    self, kind: str, x: jax.Array, grid: TileGrid | None, tick: Callable[[], None] | None, condition: tuple = ()
  ) -> jax.Array:
    """``x`` (backend layout) through the frame steps, whole or over the spatial tiles of ``grid``."""
    if grid is None:
      return self._walk_concat(kind, x, tick, condition)
    return self._walk_tiles(kind, x, grid, tick, condition)

  def temporal_tiles(self, kind: str, num_frames: int) -> TemporalTiles | None:
    """The frame tiles a ``kind`` walk over ``num_frames`` input frames takes, or ``None`` (the
    model's frame plan over all of them): the adapter's rule with the current ``enable_tiling``
    values and ``use_framewise_decoding``/``use_framewise_encoding``."""
    framewise = getattr(self, self.adapter.framewise_flag(kind))
    return self.adapter.temporal_tiles(self.tiling_values, kind, num_frames, framewise=framewise)

  def _batch_padding(self, batch: int) -> int:
    """Zero samples :meth:`_prepare` adds so that the mesh's batch split is even.

    Left uneven (3 videos on dp=2, or 1), GSPMD would pad the batch inside every program, and the
    per-frame 2D convolutions, which merge batch with time, would lose that split: 88 all-gathers
    per program pair on a tiny CogVideoX config. Samples are independent (normalisation statistics
    are per sample), so the added ones change nothing, and :meth:`_result` removes them.
    """
    return 0 if self.mesh is None else -batch % self.mesh.shape.get(mesh_lib.BATCH_AXIS, 1)

  def _result(self, out: jax.Array, batch: int, kind: str) -> Any:
    """``out`` (batch on axis 0) in the caller's kind, without the batch padding.

    Host results are cut on the host: cut on device, an uneven batch cannot stay split over dp, so
    the whole output would be copied to every dp device first. A ``jax.Array`` result of an uneven
    batch is therefore replicated over dp.
    """
    if out.shape[0] == batch:
      return kinds.from_jax(out, kind)
    return out[:batch] if kind == kinds.JAX else kinds.from_jax(out, kind)[:batch]

  def _prepare(self, array: jax.Array) -> jax.Array:
    """Cast, backend layout, batch padded to the mesh (:meth:`_batch_padding`), placed on the mesh."""
    array = self._laid_out(array)
    if self.mesh is not None:
      array = mesh_lib.put(array, self._placement(array.shape))
    return array

  def _laid_out(self, array: jax.Array) -> jax.Array:
    """Cast, backend layout, batch padded to the mesh (:meth:`_batch_padding`): ``_prepare`` before placing."""
    array = self._to_backend_layout(array.astype(self.compute_dtype))
    padding = self._batch_padding(array.shape[0])
    if padding:
      array = jnp.pad(array, [(0, padding)] + [(0, 0)] * (array.ndim - 1))
    return array

  def _placement(self, shape: tuple[int, ...] | None) -> Any:
    """Where :meth:`_prepare` puts an input of ``shape`` (laid out): split as the activations when the
    mesh divides it, else replicated; ``None`` shape: replicated (weights, decode conditions). One
    device: that device."""
    if self.mesh is None:
      return jax.sharding.SingleDeviceSharding(self.devices[0])
    if shape is not None and kinds.divides(shape, self._activation):
      return self._activation
    return mesh_lib.replicated(self.mesh)


  # --- tiles ----------------------------------------------------------------------------------

  def enable_tiling(self, *args: Any, **kwargs: Any) -> None:
    """diffusers' ``enable_tiling`` of the model: the fields of its adapter's ``tiling_class``, in
    diffusers' order (positional or by name), its defaults and blending; ``None`` keeps a value."""
    self.tiling = self._tiling_values = self.tiling_values.updated(*args, **kwargs)

  @property
  def tiling_values(self) -> TilingSettings:
    """The ``enable_tiling`` values now: the last ones set (also while tiling is off), else the model's defaults."""
    return self._tiling_values or self.adapter.default_tiling()

  def disable_tiling(self) -> None:
    self.tiling = None

  def _spatial_axes(self) -> tuple[int, int]:
    return (3, 4) if self.steps.layout == "BCTHW" else (2, 3)

  def _tile(self, x: jax.Array, rows: slice, cols: slice, *, slicer: Callable = _eager_slice) -> jax.Array:
    """The part of ``x`` (backend layout) a tile covers; ``slicer``: :meth:`_abstract_slice` for shapes."""
    h_axis, w_axis = self._spatial_axes()
    x = slicer(x, rows.start, rows.stop, axis=h_axis)
    return slicer(x, cols.start, cols.stop, axis=w_axis)

  def tile_grid(self, kind: str, height: int, width: int) -> TileGrid | None:
    """The tiles a ``kind`` walk over an input of ``(height, width)`` (the caller's sizes) takes, or
    ``None`` when it is not tiled (tiling off, or the input no larger than a tile)."""
    return None if self.tiling is None else self.adapter.tile_grid(self.tiling, kind, height, width)

  def _walk_tiles(
    self, kind: str, x: jax.Array, grid: TileGrid, tick: Callable[[], None] | None, condition: tuple = ()
  ) -> jax.Array:
    """diffusers' ``tiled_decode``/``tiled_encode``: overlapping tiles, each walked through the
    frame steps, blended into their upper and left neighbours (blended in place, as diffusers
    does), cut to what each keeps, stitched and (where the model does) cropped. Tiles of one shape
    share one compiled program per step kind. Backend layout in and out."""
    h_axis, w_axis = self._spatial_axes()
    tiles = grid.tiles(x.shape[h_axis], x.shape[w_axis])
    rows = []
    for tile_row in tiles:
      row = []
      for tile_rows, tile_cols in tile_row:
        tile_out = self._walk_concat(kind, self._tile(x, tile_rows, tile_cols), tick, condition)
        if rows:
          tile_out = _blend(rows[-1][len(row)], tile_out, grid.blend[0], h_axis)
        if row:
          tile_out = _blend(row[-1], tile_out, grid.blend[1], w_axis)
        row.append(tile_out)
      rows.append(row)
    stitched = [
      jnp.concatenate([_crop(t, grid.keep, (h_axis, w_axis)) for t in row], axis=w_axis) for row in rows
    ]
    out = jnp.concatenate(stitched, axis=h_axis)
    if grid.crop is not None:
      out = _crop(out, grid.crop, (h_axis, w_axis))
    return out

  # --- public API ------------------------------------------------------------------------------

  def decode(self, z: Any, temb: Any = None, *, check_finite: bool = True, progress: ProgressArg = None) -> Any:
    """Latents ``(B, C, T, H, W)`` -> video ``(B, 3, F, H * s, W * s)``, as diffusers' ``vae.decode(z, temb).sample``.

    ``temb``: the decode timestep of a timestep-conditioned decoder (LTX-Video 0.9.1+: one value per
    sample, ``(B,)``, or one for all); other models take none. No latent scaling is applied. ``z`` may be a torch tensor, numpy array or ``jax.Array``; the
    result is of the same kind (a ``jax.Array`` stays on device), in the model's dtype.
    ``progress``: ``True`` shows a bar; a callable ``progress(done, total)`` is called after each frame
    step (of each tile) has run; off by default.
    """
    target_lib.check_runnable(self.target, "precompile(latent_shapes)")
    progress = progress_lib.callback(progress)
    array, kind = kinds.to_jax(z, "z")
    kinds.validate_video(array, "z", channels=self.adapter.latent_channels, channel_name="latent channels")
    if check_finite:
      kinds.check_finite(array, "z")
    condition = self._decode_condition(self.adapter.decode_condition(temb, array.shape[0]))
    prepared = self._prepare(array)
    grid = self.tile_grid(DECODE, *array.shape[3:])
    out = self._run(DECODE, prepared, grid, progress, condition)
    return self._result(self.adapter.after_decode(out), array.shape[0], kind)

  def _decode_condition(self, values: tuple) -> tuple:
    """The adapter's decode inputs besides the latents (``(B, …)`` each), as the programs take them:
    cast, batch padded like the latents (:meth:`_batch_padding`), replicated over the mesh."""
    prepared = [self._laid_out_condition(jnp.asarray(value)) for value in values]
    return tuple(value if self.mesh is None else mesh_lib.put(value, mesh_lib.replicated(self.mesh)) for value in prepared)

  def _laid_out_condition(self, value: jax.Array) -> jax.Array:
    value = value.astype(self.compute_dtype)
    padding = self._batch_padding(value.shape[0])
    return jnp.pad(value, [(0, padding)] + [(0, 0)] * (value.ndim - 1)) if padding else value

  def encode(self, x: Any, key: jax.Array | None = None, *, check_finite: bool = True) -> Any:
    """Video ``(B, 3, F, H, W)`` in [-1, 1] -> latents ``(B, C, T, H / s, W / s)``.

    Without ``key``: the posterior mean (diffusers ``latent_dist.mode()``). With a JAX PRNG ``key``:
    a sample ``mean + std * N(0, 1)`` drawn with that key (diffusers' ``latent_dist.sample()``).
    """
    moments, kind = self._encode_moments(x, check_finite)
    return kinds.from_jax(self.adapter.posterior(moments, key), kind)

  def encode_moments(self, x: Any, *, check_finite: bool = True) -> Any:
    """Video ``(B, 3, F, H, W)`` -> the posterior's parameters ``(B, 2C, T, H / s, W / s)``: mean, then
    log-variance on channels, as diffusers hands them to ``DiagonalGaussianDistribution`` (for a
    sampler of the caller's own, e.g. a torch generator)."""
    moments, kind = self._encode_moments(x, check_finite)
    return kinds.from_jax(moments, kind)

  def _encode_moments(self, x: Any, check_finite: bool) -> tuple[jax.Array, str]:
    target_lib.check_runnable(self.target, "precompile(latent_shapes)")
    array, kind = kinds.to_jax(x, "x")
    kinds.validate_video(array, "x", channels=self.adapter.sample_channels, channel_name="image channels")
    self.adapter.check_sample(array, "x")
    if check_finite:
      kinds.check_finite(array, "x")
    grid = self.tile_grid(ENCODE, *array.shape[3:])  # decided on the caller's sizes, as diffusers does
    prepared = self._prepare(self.adapter.before_encode(array))
    moments = self._run(ENCODE, prepared, grid)
    if moments.shape[0] != array.shape[0]:  # cut before sampling: a key's noise must not see the batch padding
      moments = moments[: array.shape[0]]
    return moments, kind

  def as_diffusers(self, *, device: Any = "cpu") -> Any:
    """This model as the ``vae`` of a diffusers pipeline (``torchax_vae.tracing.diffusers_vae.DiffusersVAE``):
    ``CogVideoXPipeline(..., vae=runner.as_diffusers())`` or ``pipe.vae = runner.as_diffusers()``.
    ``device``: the torch device it reports (Wan pipelines move latents there first)."""
    from torchax_vae.tracing.diffusers_vae import DiffusersVAE

    return DiffusersVAE(self, device=device)


def _adapter_modules(adapter: VideoVAE) -> list:
  """The modules an adapter's plans and rules come from: its class's and its bases' (e.g. the
  frame-tiled base of HunyuanVideo and LTX), for the stored programs' key."""
  names = dict.fromkeys(cls.__module__ for cls in type(adapter).__mro__ if cls.__module__ != "builtins")
  return [sys.modules[name] for name in names]


def _ticker(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None] | None:
  """``progress(done, total)`` as a no-argument callback counting the steps done."""
  if progress is None:
    return None
  done = 0

  def tick() -> None:
    nonlocal done
    done += 1
    progress(done, total)

  return tick


@functools.partial(jax.jit, static_argnames=("extent", "axis"))
def _blend(before: jax.Array, after: jax.Array, extent: int, axis: int) -> jax.Array:
  """diffusers ``blend_v``/``blend_h``: the first ``extent`` rows of ``after`` fade in over the last of ``before``."""
  extent = min(before.shape[axis], after.shape[axis], extent)
  if extent == 0:
    return after
  shape = [1] * after.ndim
  shape[axis] = extent
  weight = (jnp.arange(extent, dtype=jnp.float32) / extent).reshape(shape).astype(after.dtype)
  head = jax.lax.slice_in_dim(before, before.shape[axis] - extent, before.shape[axis], axis=axis)
  mixed = head * (1 - weight) + jax.lax.slice_in_dim(after, 0, extent, axis=axis) * weight
  return jax.lax.dynamic_update_slice_in_dim(after, mixed.astype(after.dtype), 0, axis=axis)


def _crop(tile: jax.Array, keep: tuple[int, int], axes: tuple[int, int]) -> jax.Array:
  tile = jax.lax.slice_in_dim(tile, 0, min(keep[0], tile.shape[axes[0]]), axis=axes[0])
  return jax.lax.slice_in_dim(tile, 0, min(keep[1], tile.shape[axes[1]]), axis=axes[1])
