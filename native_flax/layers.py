"""The PyTorch layers diffusers' VAEs are built from, as Flax NNX modules, channels-last; shared by the ports.

``Conv3d``/``Conv2d`` (``torch.nn``, zeros padding; kernels ``DHWIO``/``HWIO``) compute through
``torchax_vae.core.conv`` and ``GroupNorm`` through ``torchax_vae.core.norm``, the same code the
torchax path's op overrides use; ``Linear``; diffusers' ``get_activation``. Parameter names are
Flax's (``kernel``, ``scale``, ``bias``); ``native_flax.convert`` maps diffusers' names and layouts.
Random init follows PyTorch's bounds, from one draw per layer (:func:`_draw`); loading replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from torchax_vae.core.conv import conv_channels_last
from torchax_vae.core.norm import group_norm_channels_last

Array = jax.Array
DType = Any

__all__ = ["ACTIVATIONS", "Conv2d", "Conv3d", "GroupNorm", "Linear", "get_activation"]


def _mish(x: Array) -> Array:
  return x * jnp.tanh(jax.nn.softplus(x))


# diffusers.models.activations.ACT2CLS, as functions (torch's nn.GELU default is the exact erf form).
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
  "swish": jax.nn.silu,
  "silu": jax.nn.silu,
  "mish": _mish,
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "relu": jax.nn.relu,
}


def get_activation(act_fn: str) -> Callable[[Array], Array]:
  """diffusers ``get_activation``: the activation named ``act_fn`` (case-insensitive)."""
  name = act_fn.lower()
  if name not in ACTIVATIONS:
    raise ValueError(f"activation function {act_fn} not found in ACT2FN mapping {list(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _ntuple(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
  return tuple(value) if isinstance(value, tuple | list) else (value,) * n


def _draw(stream: nnx.RngStream) -> Array:
  """``stream()``: the same key and counter step, without flax's cost under ``nnx.eval_shape``.

  flax steps the counter with ``count[...] += 1``; under the loader's abstract build that assignment
  compares the traced value's ``sharding``, and the tracer's error message for it walks the whole
  program traced so far, so the build grew with the square of the draws (2b config: 1.35 s for 304
  draws). Replacing the counter's value whole skips that comparison.
  """
  key = jax.random.fold_in(stream.key[...], stream.count[...])
  stream.count.set_value(stream.count[...] + 1)
  return key


def _kernel_and_bias(
  rngs: nnx.Rngs, kernel_shape: tuple[int, ...], bias: bool, bound: float, dtype: DType
) -> tuple[nnx.Param, nnx.Param | None]:
  """PyTorch's init (uniform ±bound) of a layer's kernel ``(..., I, O)`` and bias ``(O,)``, from one
  draw of ``rngs.params`` per layer (:func:`_draw`)."""
  key = _draw(rngs.params)

  def uniform(index: int, shape: tuple[int, ...]) -> Array:
    return jax.random.uniform(jax.random.fold_in(key, index), shape, jnp.float32, -bound, bound).astype(dtype)

  return nnx.Param(uniform(0, kernel_shape)), (nnx.Param(uniform(1, kernel_shape[-1:])) if bias else None)


# ----------------------------------------------------------------------------------------------
# PyTorch layers (the leaves diffusers builds on); channels-last, parameter names of Flax
# ----------------------------------------------------------------------------------------------


class _ConvNd(nnx.Module):
  """``torch.nn.Conv{RANK}d`` (zeros padding), channels-last; ``kernel`` is ``(*spatial, I, O)``.

  Random init follows PyTorch's bounds (uniform ±1/sqrt(fan_in)); loading replaces it anyway.
  """

  RANK: int

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, ...],
    stride: int | tuple[int, ...] = 1,
    padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    bias: bool = True,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.kernel_size = _ntuple(kernel_size, self.RANK)
    self.stride = _ntuple(stride, self.RANK)
    self.padding = _ntuple(padding, self.RANK)
    self.dilation = _ntuple(dilation, self.RANK)
    bound = 1.0 / np.sqrt(in_channels * int(np.prod(self.kernel_size)))
    kernel_shape = (*self.kernel_size, in_channels, out_channels)
    self.kernel, self.bias = _kernel_and_bias(rngs, kernel_shape, bias, bound, param_dtype)

  def __call__(self, x: Array) -> Array:
    bias = None if self.bias is None else self.bias[...]
    return conv_channels_last(x, self.kernel[...], bias, self.stride, self.padding, self.dilation)


class Conv3d(_ConvNd):
  """``torch.nn.Conv3d`` (zeros padding) on ``(B, T, H, W, C)``; ``kernel`` is ``DHWIO``."""

  RANK = 3


class Conv2d(_ConvNd):
  """``torch.nn.Conv2d`` (zeros padding) on ``(N, H, W, C)``; ``kernel`` is ``HWIO``."""

  RANK = 2


class GroupNorm(nnx.Module):
  """``torch.nn.GroupNorm`` computed channels-last, with no transpose.

  The statistics (float32, biased variance, the channel axis split into ``(G, C // G)``) come from
  ``torchax_vae.core.norm``, shared with the torchax path; the width axis is never merged.
  """

  def __init__(
    self,
    num_groups: int,
    num_channels: int,
    eps: float = 1e-5,
    affine: bool = True,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs | None = None,
  ):
    if num_channels % num_groups:
      raise ValueError(f"num_channels must be divisible by num_groups, got {num_channels} and {num_groups}")
    self.num_groups = num_groups
    self.num_channels = num_channels
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((num_channels,), param_dtype)) if affine else None
    self.bias = nnx.Param(jnp.zeros((num_channels,), param_dtype)) if affine else None

  def __call__(self, x: Array) -> Array:
    out, _, _ = group_norm_channels_last(x, self.num_groups, self.eps)
    if self.scale is not None:
      out = out * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return out.astype(x.dtype)


class Linear(nnx.Module):
  """``torch.nn.Linear``; ``kernel`` is ``(in_features, out_features)`` (PyTorch's weight transposed)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    bias: bool = True,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    bound = 1.0 / np.sqrt(in_features)
    self.kernel, self.bias = _kernel_and_bias(rngs, (in_features, out_features), bias, bound, param_dtype)

  def __call__(self, x: Array) -> Array:
    out = x @ self.kernel[...].astype(x.dtype)
    if self.bias is not None:
      out = out + self.bias[...].astype(out.dtype)
    return out
