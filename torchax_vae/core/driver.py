"""One driver, two step backends.

Both paths decode the same way: validate the input, convert it to the backend's layout and place it
on the mesh, walk diffusers' frame steps carrying the causal conv cache, and hand the result back in
the caller's kind. Only the *step* differs: a backend supplies pure JAX functions

    decode_step(params, z, conv_cache) -> (video, conv_cache)     # conv_cache is None on the first step
    encode_step(params, x, conv_cache) -> (moments, conv_cache)

in its own layout (``"BCTHW"`` for torchax, ``"BTHWC"`` for native_flax). The driver jits each step
once per shape and reuses it for every later step and call, so compile cost does not grow with T:
one program for the first step (no cache), one for every steady step (cache in, cache out).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import kinds
from . import mesh as mesh_lib
from .checkpoint import CogVideoXVAEConfig

# diffusers AutoencoderKLCogVideoX.num_latent_frames_batch_size / num_sample_frames_batch_size
LATENT_FRAMES_PER_STEP = 2
SAMPLE_FRAMES_PER_STEP = 8

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

StepFn = Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]]


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """What a backend supplies: pure step functions in its own activation layout."""

  layout: str  # "BCTHW" or "BTHWC"
  decode_step: StepFn  # (params, z (B,·,T_step,·,·), cache | None) -> (video, cache)
  encode_step: StepFn  # (params, x, cache | None) -> (moments: mean ‖ logvar on channels, cache)


def frame_steps(num_frames: int, per_step: int) -> list[tuple[int, int]]:
  """diffusers' frame batching: ``[(start, end), …]``; the remainder joins the first step.

  Latents (``per_step=2``): T=13 -> (0,3),(3,5),…,(11,13); T=1 -> (0,1). Samples (``per_step=8``):
  F=49 -> (0,9),(9,17),…; F<8 -> one step.
  """
  num_steps = max(num_frames // per_step, 1)
  remainder = num_frames % per_step
  steps = []
  for i in range(num_steps):
    start = per_step * i + (0 if i == 0 else remainder)
    end = min(per_step * (i + 1) + remainder, num_frames)
    steps.append((start, end))
  return steps


def decoded_num_frames(num_latent_frames: int, config: CogVideoXVAEConfig | None = None) -> int:
  """Frames diffusers' decode returns: 4T-3 for odd T (13 -> 49), 4T for even T, 1 for T=1 (real configs)."""
  config = config or CogVideoXVAEConfig()
  # diffusers' decoder doubles time in the first log2(ratio) up blocks that have an upsampler.
  time_upsamplers = min(int(np.log2(config.temporal_compression_ratio)), len(config.block_out_channels) - 1)
  total = 0
  for start, end in frame_steps(num_latent_frames, LATENT_FRAMES_PER_STEP):
    t = end - start
    for _ in range(time_upsamplers):
      t = 2 * t - 1 if (t > 1 and t % 2 == 1) else (t if t == 1 else 2 * t)
    total += t
  return total


class Runner:
  """``decode``/``encode`` with diffusers' contract over a backend's step functions.

  Args:
    steps: the backend's step functions.
    params: the backend's weights (a pytree of ``jax.Array``), placed by :meth:`place_params`.
    config: the model config.
    mesh: ``None``, a ``Mesh`` or a spec such as ``"dp=2,tp=4"``.
    dtype: ``"float32"`` or ``"bfloat16"``; inputs are cast to it, outputs come back in it.
    name: the path's name, for messages.
  """

  def __init__(
    self,
    steps: StepFunctions,
    params: Any,
    config: CogVideoXVAEConfig,
    *,
    mesh: Mesh | str | None = None,
    dtype: str = "float32",
    name: str = "vae",
  ):
    if dtype not in DTYPES:
      raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    self.steps = steps
    self.config = config
    self.mesh = mesh_lib.make_mesh(mesh)
    self.dtype = dtype
    self.compute_dtype = DTYPES[dtype]
    self.name = name
    self.params = jax.device_put(params, mesh_lib.replicated(self.mesh)) if self.mesh is not None else params
    self._activation = mesh_lib.activation_sharding(self.mesh, steps.layout)
    # How often each step function was traced: a retrace means a new program was built.
    self.trace_counts: Counter[str] = Counter()
    self._lock = threading.Lock()
    self._jitted = {
      "decode_first": self._jit_step(steps.decode_step, "decode_first", first=True),
      "decode_steady": self._jit_step(steps.decode_step, "decode_steady", first=False),
      "encode_first": self._jit_step(steps.encode_step, "encode_first", first=True),
      "encode_steady": self._jit_step(steps.encode_step, "encode_steady", first=False),
    }

  # --- jitted programs -------------------------------------------------------------------------

  def _constrain(self, tree: Any) -> Any:
    if self._activation is None:
      return tree
    # Inside jit, GSPMD pads a dimension the mesh axis does not divide, so uneven batch or width
    # is still split (and exact); device_put outside jit would refuse it.
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self._activation), tree)

  def _jit_step(self, step: StepFn, label: str, *, first: bool) -> Callable:
    if first:

      def program(params, inputs):
        self.trace_counts[label] += 1
        out, cache = step(params, self._constrain(inputs), None)
        return self._constrain(out), self._constrain(cache)

    else:

      def program(params, inputs, cache):
        self.trace_counts[label] += 1
        out, cache = step(params, self._constrain(inputs), self._constrain(cache))
        return self._constrain(out), self._constrain(cache)

    program.__name__ = f"{self.name}_{label}"
    return jax.jit(program)

  def step_programs(self, kind: str) -> tuple[Callable, Callable]:
    """The jitted (first, steady) programs for ``kind`` in ``{"decode", "encode"}`` (for lowering/benchmarks)."""
    return self._jitted[f"{kind}_first"], self._jitted[f"{kind}_steady"]

  # --- layouts ---------------------------------------------------------------------------------

  def _to_backend_layout(self, x: jax.Array) -> jax.Array:
    return x if self.steps.layout == "BCTHW" else jnp.moveaxis(x, 1, -1)

  def _from_backend_layout(self, x: jax.Array) -> jax.Array:
    return x if self.steps.layout == "BCTHW" else jnp.moveaxis(x, -1, 1)

  def _time_axis(self) -> int:
    return 2 if self.steps.layout == "BCTHW" else 1

  def _slice_time(self, x: jax.Array, start: int, end: int) -> jax.Array:
    return jax.lax.slice_in_dim(x, start, end, axis=self._time_axis())

  # --- the frame-step walk ---------------------------------------------------------------------

  def _walk(self, kind: str, x: jax.Array, per_step: int) -> Iterator[jax.Array]:
    first, steady = self.step_programs(kind)
    cache = None
    for start, end in frame_steps(x.shape[self._time_axis()], per_step):
      chunk = self._slice_time(x, start, end)
      if cache is None:
        out, cache = first(self.params, chunk)
      else:
        out, cache = steady(self.params, chunk, cache)
      yield out

  def _run(self, kind: str, x: jax.Array, per_step: int) -> jax.Array:
    outputs = list(self._walk(kind, x, per_step))
    out = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=self._time_axis())
    return self._from_backend_layout(out)

  def _prepare(self, array: jax.Array) -> jax.Array:
    array = self._to_backend_layout(array.astype(self.compute_dtype))
    if self.mesh is not None:
      sharding = self._activation if kinds.divides(array.shape, self._activation) else mesh_lib.replicated(self.mesh)
      array = jax.device_put(array, sharding)
    return array

  # --- public API ------------------------------------------------------------------------------

  def decode(self, z: Any, *, check_finite: bool = True) -> Any:
    """Latents ``(B, C, T, H, W)`` -> video ``(B, 3, F, 8H, 8W)``, as diffusers' ``vae.decode(z).sample``.

    No latent scaling is applied. ``z`` may be a torch tensor, numpy array or ``jax.Array``; the
    result is of the same kind (a ``jax.Array`` stays on device), in the model's dtype.
    """
    array, kind = kinds.to_jax(z, "z")
    kinds.validate_video(array, "z", channels=self.config.latent_channels, channel_name="latent channels")
    if check_finite:
      kinds.check_finite(array, "z")
    out = self._run("decode", self._prepare(array), LATENT_FRAMES_PER_STEP)
    return kinds.from_jax(out, kind)

  def encode(self, x: Any, key: jax.Array | None = None, *, check_finite: bool = True) -> Any:
    """Video ``(B, 3, F, H, W)`` in [-1, 1] -> latents ``(B, C, T, H/8, W/8)``.

    Without ``key``: the posterior mean (diffusers ``latent_dist.mode()``). With a JAX PRNG ``key``:
    a sample ``mean + std * N(0, 1)`` drawn with that key (diffusers' ``latent_dist.sample()``).
    """
    array, kind = kinds.to_jax(x, "x")
    kinds.validate_video(array, "x", channels=self.config.in_channels, channel_name="image channels")
    if check_finite:
      kinds.check_finite(array, "x")
    moments = self._run("encode", self._prepare(array), SAMPLE_FRAMES_PER_STEP)
    latents = _posterior(moments, key)
    return kinds.from_jax(latents, kind)


@jax.jit
def _posterior_mode(moments: jax.Array) -> jax.Array:
  mean, _ = jnp.split(moments, 2, axis=1)
  return mean


@jax.jit
def _posterior_sample(moments: jax.Array, key: jax.Array) -> jax.Array:
  # diffusers DiagonalGaussianDistribution: logvar clamped to [-30, 20], std = exp(logvar / 2).
  mean, logvar = jnp.split(moments, 2, axis=1)
  std = jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0))
  noise = jax.random.normal(key, mean.shape, dtype=jnp.float32).astype(mean.dtype)
  return mean + std * noise


def _posterior(moments: jax.Array, key: jax.Array | None) -> jax.Array:
  if key is None:
    return _posterior_mode(moments)
  if not isinstance(key, jax.Array | np.ndarray):
    raise TypeError(f"key: expected a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__}")
  return _posterior_sample(moments, key)
