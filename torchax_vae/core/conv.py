"""Channels-last convolutions shaped for XLA's fast kernels; shared by both paths (torch-free).

Why this module exists: XLA's CPU backend hands 2D channels-last convolutions to YNNPACK but runs
3D ones (and channels-first layouts, through transposes) in its generic Eigen kernel, ~2x slower
at the VAE's shapes (128 ch, 8x64x64: 330 ms as one 3D conv, 170 ms as three 2D convs plus their
sum). So a 3D convolution is computed as the sum over its time taps of per-frame 2D convolutions:
the same products and sums in another order (fp32 agrees to ~1e-6). Frames fold into the batch
axis; H and W stay their own axes, so a width-sharded input keeps its sharding and GSPMD still
exchanges only halos. On TPU/GPU the form is equally valid (the taps are ordinary convolutions).

A second XLA:CPU fact (jaxlib 0.10.2): a convolution with no padding ("VALID") takes a slow path,
4-14x slower than the same window with padding (3x3, 96 ch, 4x130x130 -> 128x128: 327 ms; with
padding 1 on the same input and the 1-pixel border of the output cut off, 63 ms; 96 -> 3 ch: 142 vs
10 ms). diffusers' ``WanCausalConv3d`` pads with ``F.pad`` and convolves without padding, and in
the time-tap form that pad is not next to the convolution, so XLA cannot fold it in. On CPU, a
stride-1 convolution without padding is therefore computed padded and cut (:func:`conv2d`): the
same windows for every kept output (fp32 agrees to ~1e-6), 3% more FLOPs at 128x128. Only on CPU:
TPU/GPU kernels have no such cliff that anyone measured, so there the convolution is left as asked.

Both are facts about XLA:CPU, so both are per-platform choices (:func:`conv3d_form`,
:func:`pad_valid_convolutions`): on TPU and GPU, where XLA has its own fast 3D convolutions (cuDNN,
the TPU's convolution units), a 3D convolution is one ``conv_general_dilated`` and an unpadded one is
left as asked (on GPU measured, on TPU by the TPU compiler's counts: :data:`DEFAULT_FORMS`). ``TORCHAX_VAE_CONV=taps|3d``
overrides the 3D form on any platform (for measuring); both forms are exact.

``native_flax`` calls :func:`conv_channels_last` from its ``Conv3d``/``Conv2d``; ``torchax_vae`` from
its ``aten.convolution`` override (``torchax_vae.tracing.backend``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

from . import target as target_lib

Array = jax.Array

ENV_VAR = "TORCHAX_VAE_CONV"
FORMS = ("taps", "3d")
# The 3D form each platform defaults to. CPU: measured (module docstring). GPU: measured on an H200
# (2026-12-04, jax 0.11.2 + CUDA 13, CogVideoX-2b config 49x480x720 bf16, README "A GPU run"): decode
# 1.248 s in 3d vs 1.223 s in taps (2%, as far apart as the two paths' decodes of the same programs:
# 1.248 vs 1.278 s), but XLA compiles the taps programs in 2.1x the time (71.6 vs 33.8 s), and the
# memory is the same (temp 11.4 vs 11.5 GB): one 3D convolution. TPU: decided by the TPU compiler on
# this CPU host (2026-12-07, libtpu 0.0.42.1, v6e, Wan 2.1 config bf16, torchax, latent 1,16,2,32,20 on
# one chip, docs/tpu.md): the steady step moves 15.3 GB in 3d against 30.0 GB in taps, for the same
# 1.52 TFLOP; scratch 223 vs 476 MB; the compiler's estimate 9.8 vs 18.4 ms; compile 397 vs 838 s.
DEFAULT_FORMS = {"cpu": "taps", "gpu": "3d", "tpu": "3d"}


_active_form: contextvars.ContextVar[str | None] = contextvars.ContextVar("conv3d_form", default=None)


def conv3d_form(platform: str | None = None) -> str:
  """``"taps"`` (per-time-tap 2D convolutions summed) or ``"3d"`` (one 3D convolution).

  Inside :func:`using_form`, that form; else ``$TORCHAX_VAE_CONV`` if set, else the default of the
  platform the program is built for (``taps`` on CPU, ``3d`` elsewhere; a TPU target on a CPU host
  gets the TPU's). The backends read it once when a model is loaded, trace their
  steps under :func:`using_form` with it, and put it in their stored executables' key.
  """
  active = _active_form.get()
  if active is not None:
    return active
  form = os.environ.get(ENV_VAR, "").strip().lower()
  if form:
    if form not in FORMS:
      raise ValueError(f"${ENV_VAR}={os.environ[ENV_VAR]!r}: expected one of {', '.join(FORMS)} (or unset: per platform)")
    return form
  return DEFAULT_FORMS.get(platform or target_lib.current_platform(), "3d")


@contextlib.contextmanager
def using_form(form: str) -> Iterator[None]:
  """Traces the convolutions inside in ``form`` (``"taps"`` or ``"3d"``), whatever the environment says."""
  if form not in FORMS:
    raise ValueError(f"conv3d form: expected one of {', '.join(FORMS)}, got {form!r}")
  token = _active_form.set(form)
  try:
    yield
  finally:
    _active_form.reset(token)


def pad_valid_convolutions() -> bool:
  """Whether :func:`conv2d` computes an unpadded stride-1 convolution padded, then cuts the border:
  on XLA:CPU, where that is 4-14x faster (module docstring); not on TPU/GPU. The platform is the one
  the program is built for (:func:`torchax_vae.core.target.current_platform`), not the host's."""
  return target_lib.current_platform() == "cpu"


def conv2d(
  x: Array,
  kernel: Array,
  stride: tuple[int, int],
  padding: tuple[int, int],
  dilation: tuple[int, int],
  accumulate_dtype: Any = None,
) -> Array:
  """``(N, H, W, C)`` * ``(kH, kW, C, O)`` -> ``(N, H', W', O)``, symmetric padding as PyTorch's."""
  reach = tuple(d * (k - 1) for d, k in zip(dilation, kernel.shape[:2]))  # input rows/cols a window spans - 1
  cut = tuple(r // 2 for r in reach)
  if padding == (0, 0) and stride == (1, 1) and any(cut) and pad_valid_convolutions():
    # Padded by half the window: output row i + cut is the unpadded convolution's row i.
    out = _convolution(x, kernel, stride, cut, dilation, accumulate_dtype)
    rows = jax.lax.slice_in_dim(out, cut[0], cut[0] + x.shape[1] - reach[0], axis=1)
    return jax.lax.slice_in_dim(rows, cut[1], cut[1] + x.shape[2] - reach[1], axis=2)
  return _convolution(x, kernel, stride, padding, dilation, accumulate_dtype)


def _convolution(x, kernel, stride, padding, dilation, accumulate_dtype):
  """Channels-last 2D ``(N, H, W, C) * (kH, kW, C, O)`` or 3D ``(N, T, H, W, C) * (kT, kH, kW, C, O)``,
  symmetric ``padding`` per axis, summed in ``accumulate_dtype``."""
  spatial = "DHW"[-(x.ndim - 2) :]
  return jax.lax.conv_general_dilated(
    x,
    kernel.astype(x.dtype),
    window_strides=stride,
    padding=[(p, p) for p in padding],
    rhs_dilation=dilation,
    dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
    preferred_element_type=accumulate_dtype,
  )


def conv3d_by_time_taps(
  x: Array,
  kernel: Array,
  bias: Array | None,
  stride: tuple[int, int, int],
  padding: tuple[int, int, int],
  dilation: tuple[int, int, int],
) -> Array:
  """``(N, T, H, W, C)`` * ``(kT, kH, kW, C, O)`` (+ bias) -> ``(N, T', H', W', O)``.

  Output frame ``t`` is ``sum_i conv2d(x[t * s_t + i * d_t], kernel[i])``. The taps and the bias
  are summed in float32 for reduced-precision inputs (then cast back to ``x.dtype``), as a single
  convolution accumulates.
  """
  (st, *stride_hw), (pt, *padding_hw), (dt, *dilation_hw) = stride, padding, dilation
  if pt:
    x = jnp.pad(x, [(0, 0), (pt, pt), (0, 0), (0, 0), (0, 0)])
  batch, frames, height, width, channels = x.shape
  out_frames = (frames - dt * (kernel.shape[0] - 1) - 1) // st + 1
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  out = None
  for i in range(kernel.shape[0]):
    taps = jax.lax.slice_in_dim(x, i * dt, i * dt + (out_frames - 1) * st + 1, stride=st, axis=1)
    frames_2d = taps.reshape(batch * out_frames, height, width, channels)
    y = conv2d(frames_2d, kernel[i], tuple(stride_hw), tuple(padding_hw), tuple(dilation_hw), accumulate)
    out = y if out is None else out + y
  if bias is not None:
    out = out + bias.astype(out.dtype)
  return out.astype(x.dtype).reshape(batch, out_frames, *out.shape[1:])


def conv3d(
  x: Array,
  kernel: Array,
  bias: Array | None,
  stride: tuple[int, int, int],
  padding: tuple[int, int, int],
  dilation: tuple[int, int, int],
) -> Array:
  """``(N, T, H, W, C)`` * ``(kT, kH, kW, C, O)`` (+ bias) as one 3D convolution (the TPU/GPU form).

  For reduced-precision inputs the result and the bias are summed in float32 and rounded once, as
  PyTorch's convolution (bias inside) and :func:`conv3d_by_time_taps` do.
  """
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  out = _convolution(x, kernel, stride, padding, dilation, accumulate)
  if bias is not None:
    out = out + bias.astype(accumulate)
  return out.astype(x.dtype)


def conv_channels_last(
  x: Array,
  kernel: Array,
  bias: Array | None,
  stride: tuple[int, ...],
  padding: tuple[int, ...],
  dilation: tuple[int, ...],
) -> Array:
  """2D ``(N, H, W, C)`` or 3D ``(N, T, H, W, C)`` convolution (+ bias); 3D in the platform's form
  (:func:`conv3d_form`), 2D as one."""
  if kernel.ndim == 5:
    if conv3d_form() == "taps":
      return conv3d_by_time_taps(x, kernel, bias, stride, padding, dilation)
    return conv3d(x, kernel, bias, stride, padding, dilation)
  out = conv2d(x, kernel, stride, padding, dilation)
  return out if bias is None else out + bias.astype(out.dtype)
