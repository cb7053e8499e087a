"""diffusers' CogVideoX VAE (``AutoencoderKLCogVideoX``) as Flax NNX modules, channels-last.

A line-by-line port of ``diffusers/models/autoencoders/autoencoder_kl_cogvideox.py`` (diffusers
0.42), plus ``CogVideoXDownsample3D`` (``downsampling.py``), ``CogVideoXUpsample3D``
(``upsampling.py``) and ``DiagonalGaussianDistribution`` (``vae.py``). Classes run from the smallest
to the largest and carry diffusers' class and attribute names, so every diffusers state-dict key maps
1:1 to an NNX path (``decoder.up_blocks.0.resnets.1.conv1.conv.weight`` ->
``decoder.up_blocks.0.resnets.1.conv1.conv.kernel``; the layout rules live in ``convert.py``). The
PyTorch leaf layers (``Conv3d``, ``Conv2d``, ``GroupNorm``, ``Linear``) are in ``native_flax.layers``.

Conventions:

* Activations are channels-last, ``(B, T, H, W, C)``. Conv3d kernels are ``DHWIO``, Conv2d ``HWIO``.
* No op merges the width axis with another axis (group norm splits only C, nearest-neighbour
  resizing repeats one axis at a time, per-frame 2D convs merge only B and T), so a width-sharded
  activation keeps its sharding through the whole model.
* The causal conv cache is an explicit pytree: every ``__call__`` that touches it takes
  ``conv_cache`` (``None`` or the dict the previous step returned) and returns
  ``(output, new_conv_cache)``. The dict keys are diffusers' (``conv_in``, ``mid_block``,
  ``up_block_0``, ``resnet_1``, ``norm1``, ``conv_y``, ...); leaves are channels-last
  ``(B, k_t - 1, H, W, C)``. Where diffusers' cache holds nothing a later step reads, the leaf is
  ``None`` (see :class:`CogVideoXCausalConv3d`).
* Activations are computed in the input's dtype (parameters are cast to it); group norm statistics
  are float32, like PyTorch's. Dropout is omitted (the VAE is inference-only here; diffusers' dropout
  is 0.0 and the module is in eval mode).
* No ``jax.jit``, mesh or caching in here: the driver (``torchax_vae.core.driver``) jits pure step
  functions built from these modules (``native_flax.backend``).
* Every submodule is callable on its own, and ``CogVideoXEncoder3D``/``CogVideoXDecoder3D`` return
  their block outputs with ``return_intermediates=True`` (big_vision style), for parity debugging.

On TPU/GPU, fp32 parity with PyTorch needs full-precision convolutions, e.g.
``with jax.default_matmul_precision("highest"):``; on CPU, fp32 convolutions are full precision.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from torchax_vae.core import resize as resize_lib
from torchax_vae.core.checkpoint import CogVideoXVAEConfig

# The PyTorch leaf layers are shared with the other ports (re-exported here for the port's readers).
from .layers import ACTIVATIONS, Conv2d, Conv3d, GroupNorm, Linear, _ntuple, get_activation  # noqa: F401

Array = jax.Array
ConvCache = dict[str, Any]
DType = Any

__all__ = [
  "AutoencoderKLCogVideoX",
  "CogVideoXCausalConv3d",
  "CogVideoXDecoder3D",
  "CogVideoXDownBlock3D",
  "CogVideoXDownsample3D",
  "CogVideoXEncoder3D",
  "CogVideoXMidBlock3D",
  "CogVideoXResnetBlock3D",
  "CogVideoXSafeConv3d",
  "CogVideoXSpatialNorm3D",
  "CogVideoXUpBlock3D",
  "CogVideoXUpsample3D",
  "Conv2d",
  "Conv3d",
  "DiagonalGaussianDistribution",
  "GroupNorm",
  "Linear",
  "get_activation",
  "interpolate_nearest",
]

# Channels-last axes of a (B, T, H, W, C) activation.
T_AXIS, H_AXIS, W_AXIS = 1, 2, 3


# ----------------------------------------------------------------------------------------------
# Functional pieces
# ----------------------------------------------------------------------------------------------


def _nearest_source_indices(in_size: int, out_size: int) -> np.ndarray:
  """PyTorch's ``F.interpolate(mode="nearest")`` source index for each output index along one axis.

  ATen ``nearest_idx``: identity when sizes match, ``dst >> 1`` when doubling, else
  ``min(floor(dst * scale), in - 1)`` with ``scale = (float)in / out`` in float32.
  """
  dst = np.arange(out_size, dtype=np.int64)
  if out_size == in_size:
    return dst
  if out_size == 2 * in_size:
    return dst >> 1
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


def interpolate_nearest(x: Array, size: tuple[int, ...], axes: tuple[int, ...]) -> Array:
  """``F.interpolate(x, size, mode="nearest")`` on the given axes, one axis at a time (no axis merge):
  an integer upscale is a ``repeat`` (a broadcast, no gather; ``core.resize``)."""
  indices = [_nearest_source_indices(x.shape[axis], out_size) for axis, out_size in zip(axes, size, strict=True)]
  return resize_lib.take_axes(x, indices, axes)


def _upsample2x_nearest(x: Array, axes: tuple[int, ...]) -> Array:
  """``F.interpolate(scale_factor=2.0)`` (nearest): source index ``dst >> 1``, i.e. repeat each axis twice."""
  for axis in axes:
    x = jnp.repeat(x, 2, axis=axis)
  return x


def _avg_pool_time(x: Array) -> Array:
  """``F.avg_pool1d(kernel_size=2, stride=2)`` over the time axis (a trailing odd frame is dropped)."""
  n = x.shape[T_AXIS] // 2
  even = jax.lax.slice_in_dim(x, 0, 2 * n, stride=2, axis=T_AXIS)
  odd = jax.lax.slice_in_dim(x, 1, 2 * n, stride=2, axis=T_AXIS)
  return (even + odd) / 2


# ----------------------------------------------------------------------------------------------
# CogVideoX modules, smallest to largest
# ----------------------------------------------------------------------------------------------


class CogVideoXSafeConv3d(Conv3d):
  """diffusers ``CogVideoXSafeConv3d``: a plain Conv3d here.

  diffusers splits inputs above 2 GiB (counted at 2 bytes/element) into time chunks, each with the
  previous chunk's last ``k_t - 1`` frames prepended, convolves them one by one and concatenates.
  With stride 1 that computes exactly the frames of one full convolution, so it only bounds peak
  memory of cuDNN's workspace on CUDA. XLA plans the convolution's memory itself (and the driver
  already bounds activations by walking 1-3 latent frames per step and tiling), so the port does
  one convolution: same result, no data-dependent Python branch in the traced program.
  """


class CogVideoXCausalConv3d(nnx.Module):
  """diffusers ``CogVideoXCausalConv3d``: time-causal 3D conv with an explicit frame cache.

  ``pad_mode="constant"`` (diffusers' default; the VAE passes ``"first"``, which takes the same
  branch): the input is prefixed with ``conv_cache`` (the previous step's last ``k_t - 1`` padded
  input frames) or, on the first step, with ``k_t - 1`` copies of its first frame; H and W are
  zero-padded by the convolution. The returned cache is the last ``k_t - 1`` frames of that
  prefixed input, ``(B, k_t - 1, H, W, C)``.

  For ``k_t == 1`` diffusers slices ``inputs[:, :, -0:]`` and so "caches" the whole input, which no
  later step reads (a 1-frame kernel takes no prefix). The port returns ``None`` there instead of
  carrying a full-resolution tensor between steps; outputs are unaffected.

  ``pad_mode="replicate"``: edge padding of time (front), H and W; no cache (``None``), as diffusers.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int, int],
    stride: int = 1,
    dilation: int = 1,
    pad_mode: str = "constant",
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    time_kernel_size, height_kernel_size, width_kernel_size = _ntuple(kernel_size, 3)
    self.pad_mode = pad_mode
    self.time_pad = time_kernel_size - 1
    self.height_pad = (height_kernel_size - 1) // 2
    self.width_pad = (width_kernel_size - 1) // 2
    self.time_kernel_size = time_kernel_size
    # diffusers passes padding=(0, width_pad, height_pad) to a Conv3d, whose padding is (D, H, W):
    # H is padded by width_pad and W by height_pad. Mirrored as is (equal for square kernels).
    self.const_padding_conv3d = (0, self.width_pad, self.height_pad)
    stride_t = stride if isinstance(stride, tuple) else (stride, 1, 1)
    self.conv = CogVideoXSafeConv3d(
      in_channels,
      out_channels,
      kernel_size=(time_kernel_size, height_kernel_size, width_kernel_size),
      stride=stride_t,
      dilation=(dilation, 1, 1),
      padding=0 if pad_mode == "replicate" else self.const_padding_conv3d,
      param_dtype=param_dtype,
      rngs=rngs,
    )

  def fake_context_parallel_forward(self, inputs: Array, conv_cache: Array | None = None) -> Array:
    if self.pad_mode == "replicate":
      pads = [(0, 0), (self.time_pad, 0), (self.height_pad,) * 2, (self.width_pad,) * 2, (0, 0)]
      return jnp.pad(inputs, pads, mode="edge")
    k = self.time_kernel_size
    if k > 1:
      if conv_cache is not None:
        prefix = conv_cache.astype(inputs.dtype)
      else:
        prefix = jnp.repeat(inputs[:, :1], k - 1, axis=T_AXIS)
      inputs = jnp.concatenate([prefix, inputs], axis=T_AXIS)
    return inputs

  def __call__(self, inputs: Array, conv_cache: Array | None = None) -> tuple[Array, Array | None]:
    inputs = self.fake_context_parallel_forward(inputs, conv_cache)
    if self.pad_mode == "replicate" or self.time_kernel_size == 1:
      new_cache = None
    else:
      new_cache = inputs[:, inputs.shape[T_AXIS] - (self.time_kernel_size - 1) :]
    return self.conv(inputs), new_cache


class CogVideoXSpatialNorm3D(nnx.Module):
  """diffusers ``CogVideoXSpatialNorm3D``: ``GroupNorm(f) * conv_y(zq) + conv_b(zq)``.

  ``zq`` is resized (nearest) to ``f``'s (T, H, W); for odd ``T > 1`` its first frame is resized on
  its own to ``f``'s first frame and the rest to the rest. The GroupNorm's eps is 1e-6 whatever the
  config says (hard-coded in diffusers).
  """

  def __init__(
    self,
    f_channels: int,
    zq_channels: int,
    groups: int = 32,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.norm_layer = GroupNorm(
      num_channels=f_channels, num_groups=groups, eps=1e-6, affine=True, param_dtype=param_dtype
    )
    self.conv_y = CogVideoXCausalConv3d(zq_channels, f_channels, kernel_size=1, stride=1, **kw)
    self.conv_b = CogVideoXCausalConv3d(zq_channels, f_channels, kernel_size=1, stride=1, **kw)

  def __call__(self, f: Array, zq: Array, conv_cache: ConvCache | None = None) -> tuple[Array, ConvCache]:
    new_conv_cache: ConvCache = {}
    conv_cache = conv_cache or {}
    spatial_axes = (T_AXIS, H_AXIS, W_AXIS)
    frames, height, width = f.shape[1:4]

    latent_frames = zq.shape[T_AXIS]
    if frames > 1 and frames % 2 == 1:  # first frame to first frame, the rest to the rest
      time_index = np.concatenate([[0], 1 + _nearest_source_indices(latent_frames - 1, frames - 1)])
    else:
      time_index = _nearest_source_indices(latent_frames, frames)
    indices = [time_index] + [_nearest_source_indices(zq.shape[a], n) for a, n in ((H_AXIS, height), (W_AXIS, width))]

    def resize(z: Array) -> Array:
      # diffusers concatenates the two resized pieces; taking the one time index (at the latent's
      # resolution: the pieces are runs of it) gives the same tensor without a full-size concatenation.
      return resize_lib.take_axes(z, indices, spatial_axes)

    # diffusers resizes zq, then applies the two 1x1x1 convs. Nearest resizing only copies pixels
    # and a 1x1x1 conv maps each pixel on its own, so convolving first and resizing the results is
    # the same computation at latent resolution (up to 64x fewer pixels); the resize then fuses
    # into the elementwise ``norm_f * conv_y + conv_b``.
    conv_y, new_conv_cache["conv_y"] = self.conv_y(zq, conv_cache=conv_cache.get("conv_y"))
    conv_b, new_conv_cache["conv_b"] = self.conv_b(zq, conv_cache=conv_cache.get("conv_b"))
    conv_y, conv_b = resize(conv_y), resize(conv_b)

    norm_f = self.norm_layer(f)
    new_f = norm_f * conv_y + conv_b
    return new_f, new_conv_cache


class CogVideoXResnetBlock3D(nnx.Module):
  """diffusers ``CogVideoXResnetBlock3D`` (GroupNorm, or SpatialNorm3D when ``spatial_norm_dim``).

  Attributes absent in diffusers for a configuration (``temb_proj`` with ``temb_channels=0``,
  ``conv_shortcut`` when in == out) are ``None`` here. ``dropout`` is accepted and ignored (eval).
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int | None = None,
    dropout: float = 0.0,
    temb_channels: int = 512,
    groups: int = 32,
    eps: float = 1e-6,
    non_linearity: str = "swish",
    conv_shortcut: bool = False,
    spatial_norm_dim: int | None = None,
    pad_mode: str = "first",
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    out_channels = out_channels or in_channels
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.nonlinearity = get_activation(non_linearity)
    self.use_conv_shortcut = conv_shortcut
    self.spatial_norm_dim = spatial_norm_dim
    kw = dict(param_dtype=param_dtype, rngs=rngs)

    if spatial_norm_dim is None:
      self.norm1 = GroupNorm(num_channels=in_channels, num_groups=groups, eps=eps, param_dtype=param_dtype)
      self.norm2 = GroupNorm(num_channels=out_channels, num_groups=groups, eps=eps, param_dtype=param_dtype)
    else:
      self.norm1 = CogVideoXSpatialNorm3D(f_channels=in_channels, zq_channels=spatial_norm_dim, groups=groups, **kw)
      self.norm2 = CogVideoXSpatialNorm3D(f_channels=out_channels, zq_channels=spatial_norm_dim, groups=groups, **kw)

    self.conv1 = CogVideoXCausalConv3d(in_channels, out_channels, kernel_size=3, pad_mode=pad_mode, **kw)
    self.temb_proj = Linear(temb_channels, out_channels, **kw) if temb_channels > 0 else None
    self.conv2 = CogVideoXCausalConv3d(out_channels, out_channels, kernel_size=3, pad_mode=pad_mode, **kw)

    shortcut = None
    if in_channels != out_channels:
      if conv_shortcut:
        shortcut = CogVideoXCausalConv3d(in_channels, out_channels, kernel_size=3, pad_mode=pad_mode, **kw)
      else:
        shortcut = CogVideoXSafeConv3d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, **kw)
    self.conv_shortcut = shortcut

  def __call__(
    self,
    inputs: Array,
    temb: Array | None = None,
    zq: Array | None = None,
    conv_cache: ConvCache | None = None,
  ) -> tuple[Array, ConvCache]:
    new_conv_cache: ConvCache = {}
    conv_cache = conv_cache or {}

    hidden_states = inputs
    if zq is not None:
      hidden_states, new_conv_cache["norm1"] = self.norm1(hidden_states, zq, conv_cache=conv_cache.get("norm1"))
    else:
      hidden_states = self.norm1(hidden_states)

    hidden_states = self.nonlinearity(hidden_states)
    hidden_states, new_conv_cache["conv1"] = self.conv1(hidden_states, conv_cache=conv_cache.get("conv1"))

    if temb is not None:
      hidden_states = hidden_states + self.temb_proj(self.nonlinearity(temb))[:, None, None, None, :]

    if zq is not None:
      hidden_states, new_conv_cache["norm2"] = self.norm2(hidden_states, zq, conv_cache=conv_cache.get("norm2"))
    else:
      hidden_states = self.norm2(hidden_states)

    hidden_states = self.nonlinearity(hidden_states)
    hidden_states, new_conv_cache["conv2"] = self.conv2(hidden_states, conv_cache=conv_cache.get("conv2"))

    if self.in_channels != self.out_channels:
      if self.use_conv_shortcut:
        inputs, new_conv_cache["conv_shortcut"] = self.conv_shortcut(inputs, conv_cache=conv_cache.get("conv_shortcut"))
      else:
        inputs = self.conv_shortcut(inputs)

    hidden_states = hidden_states + inputs
    return hidden_states, new_conv_cache


class CogVideoXDownsample3D(nnx.Module):
  """diffusers ``CogVideoXDownsample3D``: optional 2x time average pool, then a strided per-frame 2D conv.

  With ``compress_time``, odd T keeps the first frame and averages the rest in pairs; even T averages
  pairs. Then H and W are zero-padded by one at the end (bottom/right) and ``conv`` (stride 2) runs on
  every frame. Frames are folded into the batch axis (B and T merge; W stays its own axis).
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 2,
    padding: int = 0,
    compress_time: bool = False,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.conv = Conv2d(
      in_channels, out_channels, kernel_size, stride=stride, padding=padding, param_dtype=param_dtype, rngs=rngs
    )
    self.compress_time = compress_time

  def __call__(self, x: Array) -> Array:
    if self.compress_time:
      if x.shape[T_AXIS] % 2 == 1:
        x_first, x_rest = x[:, :1], x[:, 1:]
        if x_rest.shape[T_AXIS] > 0:
          x_rest = _avg_pool_time(x_rest)
        x = jnp.concatenate([x_first, x_rest], axis=T_AXIS)
      else:
        x = _avg_pool_time(x)

    x = jnp.pad(x, [(0, 0), (0, 0), (0, 1), (0, 1), (0, 0)])
    batch_size, frames, height, width, channels = x.shape
    x = self.conv(x.reshape(batch_size * frames, height, width, channels))
    return x.reshape(batch_size, frames, *x.shape[1:])


class CogVideoXUpsample3D(nnx.Module):
  """diffusers ``CogVideoXUpsample3D``: nearest 2x upsample, then a per-frame 2D conv.

  With ``compress_time``: odd ``T > 1`` upsamples the first frame in H, W only and the rest 2x in
  T, H and W (``T -> 2T - 1``); even ``T`` doubles T, H and W; ``T == 1`` only H and W. Without it,
  only H and W.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int = 1,
    compress_time: bool = False,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.conv = Conv2d(
      in_channels, out_channels, kernel_size, stride=stride, padding=padding, param_dtype=param_dtype, rngs=rngs
    )
    self.compress_time = compress_time

  def __call__(self, inputs: Array) -> Array:
    spatial, spatio_temporal = (H_AXIS, W_AXIS), (T_AXIS, H_AXIS, W_AXIS)
    frames = inputs.shape[T_AXIS]
    if self.compress_time and frames > 1 and frames % 2 == 1:
      x_first = _upsample2x_nearest(inputs[:, :1], spatial)
      x_rest = _upsample2x_nearest(inputs[:, 1:], spatio_temporal)
      inputs = jnp.concatenate([x_first, x_rest], axis=T_AXIS)
    elif self.compress_time and frames > 1:
      inputs = _upsample2x_nearest(inputs, spatio_temporal)
    else:
      inputs = _upsample2x_nearest(inputs, spatial)

    batch_size, frames, height, width, channels = inputs.shape
    out = self.conv(inputs.reshape(batch_size * frames, height, width, channels))
    return out.reshape(batch_size, frames, *out.shape[1:])


def _run_resnets(resnets, hidden_states, temb, zq, conv_cache):
  new_conv_cache: ConvCache = {}
  conv_cache = conv_cache or {}
  for i, resnet in enumerate(resnets):
    key = f"resnet_{i}"
    hidden_states, new_conv_cache[key] = resnet(hidden_states, temb, zq, conv_cache=conv_cache.get(key))
  return hidden_states, new_conv_cache


class CogVideoXDownBlock3D(nnx.Module):
  """diffusers ``CogVideoXDownBlock3D``: ``resnets`` then (unless last) one ``downsamplers`` entry."""

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    temb_channels: int,
    dropout: float = 0.0,
    num_layers: int = 1,
    resnet_eps: float = 1e-6,
    resnet_act_fn: str = "swish",
    resnet_groups: int = 32,
    add_downsample: bool = True,
    downsample_padding: int = 0,
    compress_time: bool = False,
    pad_mode: str = "first",
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.resnets = nnx.List(
      [
        CogVideoXResnetBlock3D(
          in_channels=in_channels if i == 0 else out_channels,
          out_channels=out_channels,
          dropout=dropout,
          temb_channels=temb_channels,
          groups=resnet_groups,
          eps=resnet_eps,
          non_linearity=resnet_act_fn,
          pad_mode=pad_mode,
          **kw,
        )
        for i in range(num_layers)
      ]
    )
    self.downsamplers = (
      nnx.List(
        [
          CogVideoXDownsample3D(
            out_channels, out_channels, padding=downsample_padding, compress_time=compress_time, **kw
          )
        ]
      )
      if add_downsample
      else None
    )

  def __call__(
    self,
    hidden_states: Array,
    temb: Array | None = None,
    zq: Array | None = None,
    conv_cache: ConvCache | None = None,
  ) -> tuple[Array, ConvCache]:
    hidden_states, new_conv_cache = _run_resnets(self.resnets, hidden_states, temb, zq, conv_cache)
    if self.downsamplers is not None:
      for downsampler in self.downsamplers:
        hidden_states = downsampler(hidden_states)
    return hidden_states, new_conv_cache


class CogVideoXMidBlock3D(nnx.Module):
  """diffusers ``CogVideoXMidBlock3D``: ``num_layers`` resnets at constant width."""

  def __init__(
    self,
    in_channels: int,
    temb_channels: int,
    dropout: float = 0.0,
    num_layers: int = 1,
    resnet_eps: float = 1e-6,
    resnet_act_fn: str = "swish",
    resnet_groups: int = 32,
    spatial_norm_dim: int | None = None,
    pad_mode: str = "first",
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.resnets = nnx.List(
      [
        CogVideoXResnetBlock3D(
          in_channels=in_channels,
          out_channels=in_channels,
          dropout=dropout,
          temb_channels=temb_channels,
          groups=resnet_groups,
          eps=resnet_eps,
          spatial_norm_dim=spatial_norm_dim,
          non_linearity=resnet_act_fn,
          pad_mode=pad_mode,
          param_dtype=param_dtype,
          rngs=rngs,
        )
        for _ in range(num_layers)
      ]
    )

  def __call__(
    self,
    hidden_states: Array,
    temb: Array | None = None,
    zq: Array | None = None,
    conv_cache: ConvCache | None = None,
  ) -> tuple[Array, ConvCache]:
    return _run_resnets(self.resnets, hidden_states, temb, zq, conv_cache)


class CogVideoXUpBlock3D(nnx.Module):
  """diffusers ``CogVideoXUpBlock3D``: spatially-normed ``resnets`` then (unless last) one ``upsamplers`` entry."""

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    temb_channels: int,
    dropout: float = 0.0,
    num_layers: int = 1,
    resnet_eps: float = 1e-6,
    resnet_act_fn: str = "swish",
    resnet_groups: int = 32,
    spatial_norm_dim: int = 16,
    add_upsample: bool = True,
    upsample_padding: int = 1,
    compress_time: bool = False,
    pad_mode: str = "first",
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.resnets = nnx.List(
      [
        CogVideoXResnetBlock3D(
          in_channels=in_channels if i == 0 else out_channels,
          out_channels=out_channels,
          dropout=dropout,
          temb_channels=temb_channels,
          groups=resnet_groups,
          eps=resnet_eps,
          non_linearity=resnet_act_fn,
          spatial_norm_dim=spatial_norm_dim,
          pad_mode=pad_mode,
          **kw,
        )
        for i in range(num_layers)
      ]
    )
    self.upsamplers = (
      nnx.List(
        [CogVideoXUpsample3D(out_channels, out_channels, padding=upsample_padding, compress_time=compress_time, **kw)]
      )
      if add_upsample
      else None
    )

  def __call__(
    self,
    hidden_states: Array,
    temb: Array | None = None,
    zq: Array | None = None,
    conv_cache: ConvCache | None = None,
  ) -> tuple[Array, ConvCache]:
    hidden_states, new_conv_cache = _run_resnets(self.resnets, hidden_states, temb, zq, conv_cache)
    if self.upsamplers is not None:
      for upsampler in self.upsamplers:
        hidden_states = upsampler(hidden_states)
    return hidden_states, new_conv_cache


class CogVideoXEncoder3D(nnx.Module):
  """diffusers ``CogVideoXEncoder3D``: video ``(B, F, H, W, in)`` -> ``(B, T', H/s, W/s, 2 * out_channels)``.

  ``norm_out`` uses eps 1e-6 and ``conv_act`` is SiLU whatever the config says (as diffusers); the
  resnets use ``norm_eps`` and ``act_fn``. The down blocks get diffusers' default ``pad_mode``.
  """

  def __init__(
    self,
    in_channels: int = 3,
    out_channels: int = 16,
    down_block_types: tuple[str, ...] = ("CogVideoXDownBlock3D",) * 4,
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512),
    layers_per_block: int = 3,
    act_fn: str = "silu",
    norm_eps: float = 1e-6,
    norm_num_groups: int = 32,
    dropout: float = 0.0,
    pad_mode: str = "first",
    temporal_compression_ratio: float = 4,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    temporal_compress_level = int(np.log2(temporal_compression_ratio))

    self.conv_in = CogVideoXCausalConv3d(in_channels, block_out_channels[0], kernel_size=3, pad_mode=pad_mode, **kw)
    down_blocks = []
    output_channel = block_out_channels[0]
    for i, down_block_type in enumerate(down_block_types):
      input_channel = output_channel
      output_channel = block_out_channels[i]
      is_final_block = i == len(block_out_channels) - 1
      compress_time = i < temporal_compress_level
      if down_block_type != "CogVideoXDownBlock3D":
        raise ValueError("Invalid `down_block_type` encountered. Must be `CogVideoXDownBlock3D`")
      down_blocks.append(
        CogVideoXDownBlock3D(
          in_channels=input_channel,
          out_channels=output_channel,
          temb_channels=0,
          dropout=dropout,
          num_layers=layers_per_block,
          resnet_eps=norm_eps,
          resnet_act_fn=act_fn,
          resnet_groups=norm_num_groups,
          add_downsample=not is_final_block,
          compress_time=compress_time,
          **kw,
        )
      )
    self.down_blocks = nnx.List(down_blocks)

    self.mid_block = CogVideoXMidBlock3D(
      in_channels=block_out_channels[-1],
      temb_channels=0,
      dropout=dropout,
      num_layers=2,
      resnet_eps=norm_eps,
      resnet_act_fn=act_fn,
      resnet_groups=norm_num_groups,
      pad_mode=pad_mode,
      **kw,
    )
    self.norm_out = GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6, param_dtype=param_dtype)
    self.conv_act = jax.nn.silu
    self.conv_out = CogVideoXCausalConv3d(
      block_out_channels[-1], 2 * out_channels, kernel_size=3, pad_mode=pad_mode, **kw
    )

  def __call__(
    self,
    sample: Array,
    temb: Array | None = None,
    conv_cache: ConvCache | None = None,
    *,
    return_intermediates: bool = False,
  ) -> tuple[Array, ConvCache] | tuple[Array, ConvCache, dict[str, Array]]:
    new_conv_cache: ConvCache = {}
    conv_cache = conv_cache or {}
    out: dict[str, Array] = {}

    hidden_states, new_conv_cache["conv_in"] = self.conv_in(sample, conv_cache=conv_cache.get("conv_in"))
    out["conv_in"] = hidden_states
    for i, down_block in enumerate(self.down_blocks):
      key = f"down_block_{i}"
      hidden_states, new_conv_cache[key] = down_block(hidden_states, temb, None, conv_cache.get(key))
      out[key] = hidden_states
    hidden_states, new_conv_cache["mid_block"] = self.mid_block(
      hidden_states, temb, None, conv_cache=conv_cache.get("mid_block")
    )
    out["mid_block"] = hidden_states

    hidden_states = self.norm_out(hidden_states)
    out["norm_out"] = hidden_states
    hidden_states = self.conv_act(hidden_states)
    hidden_states, new_conv_cache["conv_out"] = self.conv_out(hidden_states, conv_cache=conv_cache.get("conv_out"))
    out["conv_out"] = hidden_states
    if return_intermediates:
      return hidden_states, new_conv_cache, out
    return hidden_states, new_conv_cache


class CogVideoXDecoder3D(nnx.Module):
  """diffusers ``CogVideoXDecoder3D``: latents ``(B, T, h, w, in)`` -> video ``(B, F, h*s, w*s, out)``.

  Every norm after ``conv_in`` is a SpatialNorm3D conditioned on the step's latents (``sample``);
  up blocks have ``layers_per_block + 1`` resnets; ``conv_act`` is SiLU whatever the config says.
  """

  def __init__(
    self,
    in_channels: int = 16,
    out_channels: int = 3,
    up_block_types: tuple[str, ...] = ("CogVideoXUpBlock3D",) * 4,
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512),
    layers_per_block: int = 3,
    act_fn: str = "silu",
    norm_eps: float = 1e-6,
    norm_num_groups: int = 32,
    dropout: float = 0.0,
    pad_mode: str = "first",
    temporal_compression_ratio: float = 4,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    reversed_block_out_channels = list(reversed(block_out_channels))

    self.conv_in = CogVideoXCausalConv3d(
      in_channels, reversed_block_out_channels[0], kernel_size=3, pad_mode=pad_mode, **kw
    )
    self.mid_block = CogVideoXMidBlock3D(
      in_channels=reversed_block_out_channels[0],
      temb_channels=0,
      num_layers=2,
      resnet_eps=norm_eps,
      resnet_act_fn=act_fn,
      resnet_groups=norm_num_groups,
      spatial_norm_dim=in_channels,
      pad_mode=pad_mode,
      **kw,
    )

    up_blocks = []
    output_channel = reversed_block_out_channels[0]
    temporal_compress_level = int(np.log2(temporal_compression_ratio))
    for i, up_block_type in enumerate(up_block_types):
      prev_output_channel = output_channel
      output_channel = reversed_block_out_channels[i]
      is_final_block = i == len(block_out_channels) - 1
      compress_time = i < temporal_compress_level
      if up_block_type != "CogVideoXUpBlock3D":
        raise ValueError("Invalid `up_block_type` encountered. Must be `CogVideoXUpBlock3D`")
      up_blocks.append(
        CogVideoXUpBlock3D(
          in_channels=prev_output_channel,
          out_channels=output_channel,
          temb_channels=0,
          dropout=dropout,
          num_layers=layers_per_block + 1,
          resnet_eps=norm_eps,
          resnet_act_fn=act_fn,
          resnet_groups=norm_num_groups,
          spatial_norm_dim=in_channels,
          add_upsample=not is_final_block,
          compress_time=compress_time,
          pad_mode=pad_mode,
          **kw,
        )
      )
    self.up_blocks = nnx.List(up_blocks)

    self.norm_out = CogVideoXSpatialNorm3D(reversed_block_out_channels[-1], in_channels, groups=norm_num_groups, **kw)
    self.conv_act = jax.nn.silu
    self.conv_out = CogVideoXCausalConv3d(
      reversed_block_out_channels[-1], out_channels, kernel_size=3, pad_mode=pad_mode, **kw
    )

  def __call__(
    self,
    sample: Array,
    temb: Array | None = None,
    conv_cache: ConvCache | None = None,
    *,
    return_intermediates: bool = False,
  ) -> tuple[Array, ConvCache] | tuple[Array, ConvCache, dict[str, Array]]:
    new_conv_cache: ConvCache = {}
    conv_cache = conv_cache or {}
    out: dict[str, Array] = {}

    hidden_states, new_conv_cache["conv_in"] = self.conv_in(sample, conv_cache=conv_cache.get("conv_in"))
    out["conv_in"] = hidden_states
    hidden_states, new_conv_cache["mid_block"] = self.mid_block(
      hidden_states, temb, sample, conv_cache=conv_cache.get("mid_block")
    )
    out["mid_block"] = hidden_states
    for i, up_block in enumerate(self.up_blocks):
      key = f"up_block_{i}"
      hidden_states, new_conv_cache[key] = up_block(hidden_states, temb, sample, conv_cache=conv_cache.get(key))
      out[key] = hidden_states

    hidden_states, new_conv_cache["norm_out"] = self.norm_out(
      hidden_states, sample, conv_cache=conv_cache.get("norm_out")
    )
    out["norm_out"] = hidden_states
    hidden_states = self.conv_act(hidden_states)
    hidden_states, new_conv_cache["conv_out"] = self.conv_out(hidden_states, conv_cache=conv_cache.get("conv_out"))
    out["conv_out"] = hidden_states
    if return_intermediates:
      return hidden_states, new_conv_cache, out
    return hidden_states, new_conv_cache


class DiagonalGaussianDistribution:
  """diffusers ``DiagonalGaussianDistribution`` over channels-last moments ``mean ‖ logvar`` (last axis).

  ``logvar`` is clamped to [-30, 20]; ``sample(key)`` draws ``mean + std * N(0, 1)`` with a JAX key.
  """

  def __init__(self, parameters: Array, deterministic: bool = False):
    self.parameters = parameters
    self.mean, self.logvar = jnp.split(parameters, 2, axis=-1)
    self.logvar = jnp.clip(self.logvar, -30.0, 20.0)
    self.deterministic = deterministic
    self.std = jnp.exp(0.5 * self.logvar)
    self.var = jnp.exp(self.logvar)
    if deterministic:
      self.var = self.std = jnp.zeros_like(self.mean)

  def sample(self, key: Array) -> Array:
    noise = jax.random.normal(key, self.mean.shape, dtype=jnp.float32).astype(self.mean.dtype)
    return self.mean + self.std * noise

  def mode(self) -> Array:
    return self.mean


def _frame_steps(num_frames: int, per_step: int) -> list[tuple[int, int]]:
  # diffusers' _encode/_decode batching (same as torchax_vae.core.models.cogvideox.frame_steps).
  remainder = num_frames % per_step
  return [
    (per_step * i + (0 if i == 0 else remainder), min(per_step * (i + 1) + remainder, num_frames))
    for i in range(max(num_frames // per_step, 1))
  ]


class AutoencoderKLCogVideoX(nnx.Module):
  """diffusers ``AutoencoderKLCogVideoX``: ``encoder``, ``decoder``, ``quant_conv``, ``post_quant_conv``.

  Args:
    config: the checkpoint's config (every field diffusers' constructor honours is honoured).
    dtype: parameter dtype; activations are computed in the input's dtype.
    rngs: for the random init (use ``nnx.eval_shape`` to build without one, as ``convert`` does).

  ``quant_conv``/``post_quant_conv`` mirror diffusers exactly, including its channel counts:
  ``quant_conv`` is ``2 * out_channels -> 2 * out_channels`` and ``post_quant_conv`` is
  ``out_channels -> out_channels`` (image channels, not latent channels), so they only fit the
  encoder/decoder when ``latent_channels == out_channels``; every released CogVideoX VAE has both off.

  ``decode_step``/``encode_step`` are one frame step of diffusers' ``_decode``/``_encode`` loop
  (what the driver jits); ``decode``/``encode`` run the whole loop eagerly (no tiling), for tests.
  Latent scaling (``scaling_factor``) is not applied, as in diffusers' ``decode``/``encode``.
  """

  num_latent_frames_batch_size = 2
  num_sample_frames_batch_size = 8

  def __init__(self, config: CogVideoXVAEConfig, *, dtype: DType = jnp.float32, rngs: nnx.Rngs):
    self.config = config
    kw = dict(param_dtype=dtype, rngs=rngs)
    self.encoder = CogVideoXEncoder3D(
      in_channels=config.in_channels,
      out_channels=config.latent_channels,
      down_block_types=tuple(config.down_block_types),
      block_out_channels=tuple(config.block_out_channels),
      layers_per_block=config.layers_per_block,
      act_fn=config.act_fn,
      norm_eps=config.norm_eps,
      norm_num_groups=config.norm_num_groups,
      temporal_compression_ratio=config.temporal_compression_ratio,
      **kw,
    )
    self.decoder = CogVideoXDecoder3D(
      in_channels=config.latent_channels,
      out_channels=config.out_channels,
      up_block_types=tuple(config.up_block_types),
      block_out_channels=tuple(config.block_out_channels),
      layers_per_block=config.layers_per_block,
      act_fn=config.act_fn,
      norm_eps=config.norm_eps,
      norm_num_groups=config.norm_num_groups,
      temporal_compression_ratio=config.temporal_compression_ratio,
      **kw,
    )
    out_channels = config.out_channels
    self.quant_conv = (
      CogVideoXSafeConv3d(2 * out_channels, 2 * out_channels, 1, **kw) if config.use_quant_conv else None
    )
    self.post_quant_conv = (
      CogVideoXSafeConv3d(out_channels, out_channels, 1, **kw) if config.use_post_quant_conv else None
    )

  def encode_step(self, x: Array, conv_cache: ConvCache | None = None) -> tuple[Array, ConvCache]:
    """One ``_encode`` step: ``x`` (B, F_step, H, W, in) -> moments (B, T', H/s, W/s, 2 * latent), cache."""
    h, conv_cache = self.encoder(x, conv_cache=conv_cache)
    if self.quant_conv is not None:
      h = self.quant_conv(h)
    return h, conv_cache

  def decode_step(self, z: Array, conv_cache: ConvCache | None = None) -> tuple[Array, ConvCache]:
    """One ``_decode`` step: ``z`` (B, T_step, h, w, latent) -> video (B, F_step, h*s, w*s, out), cache."""
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z, conv_cache=conv_cache)

  def _loop(self, step, x: Array, per_step: int) -> Array:
    outputs, conv_cache = [], None
    for start, end in _frame_steps(x.shape[T_AXIS], per_step):
      out, conv_cache = step(x[:, start:end], conv_cache)
      outputs.append(out)
    return jnp.concatenate(outputs, axis=T_AXIS)

  def encode(self, x: Array) -> DiagonalGaussianDistribution:
    """diffusers ``encode(x).latent_dist`` (no slicing/tiling), channels-last."""
    return DiagonalGaussianDistribution(self._loop(self.encode_step, x, self.num_sample_frames_batch_size))

  def decode(self, z: Array) -> Array:
    """diffusers ``decode(z).sample`` (no slicing/tiling), channels-last."""
    return self._loop(self.decode_step, z, self.num_latent_frames_batch_size)

  def __call__(self, sample: Array, sample_posterior: bool = False, key: Array | None = None) -> Array:
    """diffusers ``forward``: encode, take the posterior's sample (needs ``key``) or mode, decode."""
    posterior = self.encode(sample)
    z = posterior.sample(key) if sample_posterior else posterior.mode()
    return self.decode(z)
