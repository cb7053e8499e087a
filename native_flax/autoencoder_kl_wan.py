"""diffusers' Wan VAE (``AutoencoderKLWan``: Wan 2.1 and Wan 2.2) as Flax NNX modules, channels-last.

A port of ``diffusers/models/autoencoders/autoencoder_kl_wan.py`` (diffusers 0.42), class for class
and smallest to largest, with diffusers' class and attribute names, so every diffusers state-dict key
maps 1:1 to an NNX path (``decoder.up_blocks.0.upsamplers.0.resample.1.weight`` ->
``decoder.up_blocks.0.upsamplers.0.resample.1.kernel``; the layout rules live in ``convert.py``).

Conventions (those of ``autoencoder_kl_cogvideox.py``):

* Activations are channels-last, ``(B, T, H, W, C)``; ``WanCausalConv3d`` kernels ``DHWIO``, the
  ``nn.Conv2d`` layers ``HWIO``. No op merges the width axis with another (the 2D layers fold T into
  B; attention keeps H and W as two axes), so a width-sharded activation keeps its split.
* The causal-conv cache is an explicit value. Where diffusers threads one list ``feat_cache`` with a
  counter ``feat_idx`` through every layer and mutates it, each module here takes its own cache
  (``None`` on the first chunk) and returns the new one: nested dicts with diffusers' attribute names
  (``conv_in``, ``mid_block``, ``up_blocks_0``, ``resnets_1``, ``conv1``, ``upsampler``, ``time_conv``,
  ...). Every cache has the same shapes on every step, so one steady program serves them all:
  a causal conv's cache is the last ``CACHE_T`` (2) frames of its time-padded input — exactly what
  diffusers computes with (it zero-pads to 2 frames before the cache; a chunk of 1 frame takes the
  previous cache's last frame), where diffusers keeps 1 frame after the first chunk and 2 later;
  ``upsample3d``'s first-chunk marker ``"Rep"`` ("pad with zeros next time") is 2 zero frames;
  ``downsample3d`` keeps the 1 frame it reads.
* ``first_chunk`` (the first latent frame of a decode) is static: it selects the first-step program.
* Activations are computed in the input's dtype (parameters are cast to it); the RMS norm's
  normalisation is float32 for reduced-precision inputs, as diffusers'. Dropout is omitted (eval).
* No ``jax.jit``, mesh or caching here: the driver jits the step functions of ``native_flax.backend``.
* ``WanEncoder3d``/``WanDecoder3d`` return their block outputs with ``return_intermediates=True``
  (big_vision style), for parity debugging.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from torchax_vae.core.checkpoint import WanVAEConfig

from .layers import Conv2d, Conv3d, _ntuple, get_activation

Array = jax.Array
Cache = dict[str, Any]
DType = Any

__all__ = [
  "AutoencoderKLWan",
  "AvgDown3D",
  "DupUp3D",
  "WanAttentionBlock",
  "WanCausalConv3d",
  "WanDecoder3d",
  "WanEncoder3d",
  "WanMidBlock",
  "WanRMS_norm",
  "WanResample",
  "WanResidualBlock",
  "WanResidualDownBlock",
  "WanResidualUpBlock",
  "WanUpBlock",
  "WanUpsample",
  "ZeroPad2d",
  "patchify",
  "unpatchify",
]

CACHE_T = 2  # diffusers' CACHE_T: frames a causal conv's cache holds
# Channels-last axes of a (B, T, H, W, C) activation.
T_AXIS, H_AXIS, W_AXIS = 1, 2, 3


def _per_frame(layer, x: Array) -> Array:
  """A 2D layer on every frame: ``(B, T, H, W, C)`` with T folded into B (W stays its own axis)."""
  b, t = x.shape[:2]
  out = layer(x.reshape(b * t, *x.shape[2:]))
  return out.reshape(b, t, *out.shape[1:])


def _last_frames(x: Array, n: int = CACHE_T) -> Array:
  """The last ``n`` frames of ``x``, zero frames in front where it has fewer."""
  x = x[:, max(x.shape[T_AXIS] - n, 0) :]
  missing = n - x.shape[T_AXIS]
  return jnp.pad(x, [(0, 0), (missing, 0), (0, 0), (0, 0), (0, 0)]) if missing else x


# ----------------------------------------------------------------------------------------------
# Wan modules, smallest to largest
# ----------------------------------------------------------------------------------------------


class AvgDown3D(nnx.Module):
  """diffusers ``AvgDown3D`` (Wan 2.2's down-block shortcut): space/time to channels, then a mean.

  T is zero-padded in front to a multiple of ``factor_t``; each ``factor_t x factor_s x factor_s``
  block becomes ``in_channels * factor`` channels (channel-major, then t, h, w offsets, as
  diffusers' view/permute), averaged in groups of ``group_size`` down to ``out_channels``.
  """

  def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1):
    factor = factor_t * factor_s * factor_s
    if in_channels * factor % out_channels != 0:
      raise ValueError(
        f"`in_channels` ({in_channels}) times the downsampling factor ({factor}) must be divisible by "
        f"`out_channels` ({out_channels})."
      )
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.factor_t = factor_t
    self.factor_s = factor_s
    self.factor = factor
    self.group_size = in_channels * factor // out_channels

  def __call__(self, x: Array) -> Array:
    pad_t = (self.factor_t - x.shape[T_AXIS] % self.factor_t) % self.factor_t
    x = jnp.pad(x, [(0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)])
    b, t, h, w, c = x.shape
    ft, fs = self.factor_t, self.factor_s
    x = x.reshape(b, t // ft, ft, h // fs, fs, w // fs, fs, c)
    x = jnp.transpose(x, (0, 1, 3, 5, 7, 2, 4, 6))  # (B, T', H', W', C, ft, fs, fs)
    x = x.reshape(b, t // ft, h // fs, w // fs, self.out_channels, self.group_size)
    return jnp.mean(x, axis=-1)


class DupUp3D(nnx.Module):
  """diffusers ``DupUp3D`` (Wan 2.2's up-block shortcut): channels to space/time by repetition.

  Each channel is repeated ``repeats`` times, the channels split into ``(out, t, h, w)`` offsets
  (diffusers' view/permute) and laid out as ``factor_t x factor_s x factor_s`` blocks. On the first
  chunk the first ``factor_t - 1`` frames are dropped (the upsampler does not double that chunk).
  """

  def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1):
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.factor_t = factor_t
    self.factor_s = factor_s
    self.factor = factor_t * factor_s * factor_s
    assert out_channels * self.factor % in_channels == 0
    self.repeats = out_channels * self.factor // in_channels

  def __call__(self, x: Array, first_chunk: bool = False) -> Array:
    b, t, h, w, _ = x.shape
    ft, fs = self.factor_t, self.factor_s
    x = jnp.repeat(x, self.repeats, axis=-1)
    x = x.reshape(b, t, h, w, self.out_channels, ft, fs, fs)
    x = jnp.transpose(x, (0, 1, 5, 2, 6, 3, 7, 4))  # (B, T, ft, H, fs, W, fs, C)
    x = x.reshape(b, t * ft, h * fs, w * fs, self.out_channels)
    if first_chunk:
      x = x[:, ft - 1 :]
    return x


class WanCausalConv3d(Conv3d):
  """diffusers ``WanCausalConv3d``: a Conv3d with its time padding moved in front of the input.

  The input is prefixed with ``cache_x`` (earlier frames) and zero-padded in front to ``2 *
  padding[0]`` frames in all; H and W are padded by the convolution itself (diffusers pads them with
  ``F.pad`` and convolves unpadded: the same windows). ``cache_x`` may be longer than the time
  padding needs (e.g. 2 frames for a stride-2 conv with no time padding): diffusers concatenates it
  all, and so does the port.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int, int],
    stride: int | tuple[int, int, int] = 1,
    padding: int | tuple[int, int, int] = 0,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    padding = _ntuple(padding, 3)
    super().__init__(
      in_channels, out_channels, kernel_size, stride, padding=(0, padding[1], padding[2]),
      param_dtype=param_dtype, rngs=rngs,
    )  # fmt: skip
    self.time_padding = 2 * padding[0]  # diffusers' _padding[4]

  def __call__(self, x: Array, cache_x: Array | None = None) -> Array:
    time_pad = self.time_padding
    if cache_x is not None and time_pad > 0:
      x = jnp.concatenate([cache_x.astype(x.dtype), x], axis=T_AXIS)
      time_pad -= cache_x.shape[T_AXIS]
    if time_pad > 0:
      x = jnp.pad(x, [(0, 0), (time_pad, 0), (0, 0), (0, 0), (0, 0)])
    return super().__call__(x)

  def cached(self, x: Array, cache: Array | None) -> tuple[Array, Array]:
    """diffusers' pattern around every cached causal conv: ``(conv(x, cache), new cache)``.

    diffusers: ``cache_x = x[:, :, -2:]`` with the previous cache's last frame in front when ``x``
    has one frame; then ``conv(x, cache)``. Here ``cache`` is always 2 frames (zeros before the
    first chunk: what the conv's own zero padding would add), so the new cache is simply the last
    2 frames of ``cache ‖ x``.
    """
    if cache is None:  # the first chunk: the conv zero-pads in front
      cache = jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype)
    new_cache = _last_frames(jnp.concatenate([cache.astype(x.dtype), x], axis=T_AXIS))
    return self(x, cache), new_cache


class WanRMS_norm(nnx.Module):  # noqa: N801 (diffusers' name)
  """diffusers ``WanRMS_norm``: ``F.normalize(x, dim=channels) * sqrt(dim) * gamma`` (+ bias).

  ``gamma`` keeps diffusers' shape (``(dim, 1, 1, 1)``, or ``(dim, 1, 1)`` for ``images=True``) so the
  weight loads as it is; it is read as ``(dim,)`` on the last (channel) axis. ``F.normalize`` is
  ``x / max(||x||_2, 1e-12)``, in float32 for reduced-precision inputs.
  """

  def __init__(
    self, dim: int, channel_first: bool = True, images: bool = True, bias: bool = False, *, param_dtype: DType = jnp.float32
  ):
    broadcastable_dims = (1, 1, 1) if not images else (1, 1)
    shape = (dim, *broadcastable_dims) if channel_first else (dim,)
    self.dim = dim
    self.channel_first = channel_first
    self.images = images
    self.scale = dim**0.5
    self.gamma = nnx.Param(jnp.ones(shape, param_dtype))
    self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if bias else None

  def __call__(self, x: Array) -> Array:
    reduced = x.dtype in (jnp.float16, jnp.bfloat16)
    xf = x.astype(jnp.float32) if reduced else x
    norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=-1, keepdims=True))
    normalized = (xf / jnp.maximum(norm, 1e-12)).astype(x.dtype)
    out = normalized * self.scale * self.gamma[...].reshape(-1).astype(x.dtype)
    if self.bias is not None:
      out = out + self.bias[...].reshape(-1).astype(x.dtype)
    return out


class WanUpsample(nnx.Module):
  """diffusers ``WanUpsample``: ``nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact")`` on
  ``(N, H, W, C)``. With an integer factor nearest-exact's source index ``floor((dst + 0.5) / 2)`` is
  ``dst // 2``: each row and column repeated (diffusers resizes in float32 and casts back: the same copy)."""

  def __init__(self, scale_factor: tuple[float, float] = (2.0, 2.0), mode: str = "nearest-exact"):
    if tuple(scale_factor) != (2.0, 2.0) or mode != "nearest-exact":
      raise ValueError(f"WanUpsample: only diffusers' scale_factor=(2.0, 2.0), nearest-exact; got {scale_factor}, {mode}")
    self.scale_factor = tuple(scale_factor)
    self.mode = mode

  def __call__(self, x: Array) -> Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ZeroPad2d(nnx.Module):
  """``torch.nn.ZeroPad2d((left, right, top, bottom))`` on ``(N, H, W, C)``."""

  def __init__(self, padding: tuple[int, int, int, int]):
    self.padding = tuple(padding)

  def __call__(self, x: Array) -> Array:
    left, right, top, bottom = self.padding
    return jnp.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])


class WanResample(nnx.Module):
  """diffusers ``WanResample``: 2D up/down sampling per frame, and for the 3D modes a causal time conv.

  ``resample`` is diffusers' ``nn.Sequential`` as a list (index 1 holds the ``Conv2d``, as its keys
  say). ``upsample3d``: the first chunk skips ``time_conv`` (no time doubling; the cache becomes zeros,
  diffusers' ``"Rep"``); later chunks run it (``dim -> 2 dim``) and interleave the two halves as frames
  ``2t, 2t+1``. ``downsample3d``: the first chunk keeps its last frame; later chunks convolve (stride 2
  in time) that frame followed by the chunk.
  """

  def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None, *, param_dtype: DType = jnp.float32, rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.dim = dim
    self.mode = mode
    if upsample_out_dim is None:
      upsample_out_dim = dim // 2
    time_conv = None
    if mode in ("upsample2d", "upsample3d"):
      self.resample = nnx.List([WanUpsample((2.0, 2.0), "nearest-exact"), Conv2d(dim, upsample_out_dim, 3, padding=1, **kw)])
      if mode == "upsample3d":
        time_conv = WanCausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0), **kw)
    elif mode in ("downsample2d", "downsample3d"):
      self.resample = nnx.List([ZeroPad2d((0, 1, 0, 1)), Conv2d(dim, dim, 3, stride=(2, 2), **kw)])
      if mode == "downsample3d":
        time_conv = WanCausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0), **kw)
    else:
      self.resample = nnx.List([])  # nn.Identity
    self.time_conv = time_conv

  def __call__(self, x: Array, cache: Cache | None = None) -> tuple[Array, Cache]:
    new_cache: Cache = {}
    first_chunk = cache is None
    if self.mode == "upsample3d":
      if first_chunk:  # diffusers stores "Rep": the next chunk pads with zeros
        new_cache["time_conv"] = jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype)
      else:
        b, t, h, w, c = x.shape
        x, new_cache["time_conv"] = self.time_conv.cached(x, cache["time_conv"])
        x = x.reshape(b, t, h, w, 2, c)
        x = jnp.moveaxis(x, 4, 2).reshape(b, 2 * t, h, w, c)  # frame 2t: first half, 2t+1: second
    for layer in self.resample:
      x = _per_frame(layer, x)
    if self.mode == "downsample3d":
      if first_chunk:
        new_cache["time_conv"] = x[:, -1:]
      else:
        new_cache["time_conv"] = x[:, -1:]
        x = self.time_conv(jnp.concatenate([cache["time_conv"].astype(x.dtype), x], axis=T_AXIS))
    return x, new_cache


class WanResidualBlock(nnx.Module):
  """diffusers ``WanResidualBlock``: ``shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))))))``.

  ``conv_shortcut`` is a 1x1x1 ``WanCausalConv3d`` when the width changes, else ``None`` (diffusers'
  ``nn.Identity``). ``dropout`` is accepted and ignored (eval).
  """

  def __init__(
    self, in_dim: int, out_dim: int, dropout: float = 0.0, non_linearity: str = "silu", *, param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):  # fmt: skip
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.in_dim = in_dim
    self.out_dim = out_dim
    self.nonlinearity = get_activation(non_linearity)
    self.norm1 = WanRMS_norm(in_dim, images=False, param_dtype=param_dtype)
    self.conv1 = WanCausalConv3d(in_dim, out_dim, 3, padding=1, **kw)
    self.norm2 = WanRMS_norm(out_dim, images=False, param_dtype=param_dtype)
    self.conv2 = WanCausalConv3d(out_dim, out_dim, 3, padding=1, **kw)
    self.conv_shortcut = WanCausalConv3d(in_dim, out_dim, 1, **kw) if in_dim != out_dim else None

  def __call__(self, x: Array, cache: Cache | None = None) -> tuple[Array, Cache]:
    cache = cache or {}
    new_cache: Cache = {}
    h = x if self.conv_shortcut is None else self.conv_shortcut(x)
    x = self.nonlinearity(self.norm1(x))
    x, new_cache["conv1"] = self.conv1.cached(x, cache.get("conv1"))
    x = self.nonlinearity(self.norm2(x))
    x, new_cache["conv2"] = self.conv2.cached(x, cache.get("conv2"))
    return x + h, new_cache


class WanAttentionBlock(nnx.Module):
  """diffusers ``WanAttentionBlock``: single-head self-attention over each frame's H x W positions.

  diffusers flattens H and W into one token axis; here they stay two axes (the scores are
  ``(N, H, W, H, W)``, the same numbers), so a width split is kept for the queries and only keys and
  values need every position. Scores are ``q . k / sqrt(C)`` with a float32 softmax, as PyTorch's
  ``scaled_dot_product_attention`` computes them.
  """

  def __init__(self, dim: int, *, param_dtype: DType = jnp.float32, rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.dim = dim
    self.norm = WanRMS_norm(dim, param_dtype=param_dtype)
    self.to_qkv = Conv2d(dim, dim * 3, 1, **kw)
    self.proj = Conv2d(dim, dim, 1, **kw)

  def attend(self, x: Array) -> Array:
    """``(N, H, W, C)`` per-frame input -> attention output before the projection."""
    q, k, v = jnp.split(self.to_qkv(self.norm(x)), 3, axis=-1)
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = jnp.einsum("nhwc,nyxc->nhwyx", q, k, preferred_element_type=jnp.float32) * scale
    n, h, w = scores.shape[:3]
    weights = jax.nn.softmax(scores.reshape(n, h, w, -1), axis=-1).reshape(scores.shape).astype(v.dtype)
    return jnp.einsum("nhwyx,nyxc->nhwc", weights, v)

  def __call__(self, x: Array) -> Array:
    return _per_frame(lambda frames: self.proj(self.attend(frames)), x) + x


class WanMidBlock(nnx.Module):
  """diffusers ``WanMidBlock``: ``resnets[0]``, then (attention, resnet) ``num_layers`` times."""

  def __init__(
    self, dim: int, dropout: float = 0.0, non_linearity: str = "silu", num_layers: int = 1, *,
    param_dtype: DType = jnp.float32, rngs: nnx.Rngs,
  ):  # fmt: skip
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.dim = dim
    self.resnets = nnx.List([WanResidualBlock(dim, dim, dropout, non_linearity, **kw) for _ in range(num_layers + 1)])
    self.attentions = nnx.List([WanAttentionBlock(dim, **kw) for _ in range(num_layers)])

  def __call__(self, x: Array, cache: Cache | None = None) -> tuple[Array, Cache]:
    cache = cache or {}
    new_cache: Cache = {}
    x, new_cache["resnets_0"] = self.resnets[0](x, cache.get("resnets_0"))
    for i, (attn, resnet) in enumerate(zip(self.attentions, self.resnets[1:]), start=1):
      x = attn(x)
      x, new_cache[f"resnets_{i}"] = resnet(x, cache.get(f"resnets_{i}"))
    return x, new_cache


class WanResidualDownBlock(nnx.Module):
  """diffusers ``WanResidualDownBlock`` (Wan 2.2): resnets and a downsampler, plus an ``AvgDown3D`` shortcut."""

  def __init__(
    self, in_dim: int, out_dim: int, dropout: float, num_res_blocks: int, temperal_downsample: bool = False,
    down_flag: bool = False, *, param_dtype: DType = jnp.float32, rngs: nnx.Rngs,
  ):  # fmt: skip
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.avg_shortcut = AvgDown3D(in_dim, out_dim, factor_t=2 if temperal_downsample else 1, factor_s=2 if down_flag else 1)
    resnets = []
    for _ in range(num_res_blocks):
      resnets.append(WanResidualBlock(in_dim, out_dim, dropout, **kw))
      in_dim = out_dim
    self.resnets = nnx.List(resnets)
    mode = "downsample3d" if temperal_downsample else "downsample2d"
    self.downsampler = WanResample(out_dim, mode=mode, **kw) if down_flag else None

  def __call__(self, x: Array, cache: Cache | None = None) -> tuple[Array, Cache]:
    cache = cache or {}
    new_cache: Cache = {}
    x_copy = x
    for i, resnet in enumerate(self.resnets):
      x, new_cache[f"resnets_{i}"] = resnet(x, cache.get(f"resnets_{i}"))
    if self.downsampler is not None:
      x, new_cache["downsampler"] = self.downsampler(x, cache.get("downsampler"))
    return x + self.avg_shortcut(x_copy), new_cache


class WanEncoder3d(nnx.Module):
  """diffusers ``WanEncoder3d``: video ``(B, F, H, W, in)`` -> ``(B, T', H/8, W/8, z_dim)`` (moments).

  ``down_blocks``: Wan 2.1's flat list of residual blocks, attention blocks (at ``attn_scales``) and
  resamplers, or Wan 2.2's ``WanResidualDownBlock``s (``is_residual``).
  """

  def __init__(
    self,
    in_channels: int = 3,
    dim: int = 128,
    z_dim: int = 4,
    dim_mult: tuple[int, ...] = (1, 2, 4, 4),
    num_res_blocks: int = 2,
    attn_scales: tuple[float, ...] = (),
    temperal_downsample: tuple[bool, ...] = (True, True, False),
    dropout: float = 0.0,
    non_linearity: str = "silu",
    is_residual: bool = False,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.dim = dim
    self.z_dim = z_dim
    self.dim_mult = tuple(dim_mult)
    self.num_res_blocks = num_res_blocks
    self.attn_scales = tuple(attn_scales)
    self.temperal_downsample = tuple(temperal_downsample)
    self.nonlinearity = get_activation(non_linearity)

    dims = [dim * u for u in [1, *dim_mult]]
    scale = 1.0
    self.conv_in = WanCausalConv3d(in_channels, dims[0], 3, padding=1, **kw)
    down_blocks = []
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      if is_residual:
        down_blocks.append(
          WanResidualDownBlock(
            in_dim, out_dim, dropout, num_res_blocks,
            temperal_downsample=temperal_downsample[i] if i != len(dim_mult) - 1 else False,
            down_flag=i != len(dim_mult) - 1, **kw,
          )  # fmt: skip
        )
      else:
        for _ in range(num_res_blocks):
          down_blocks.append(WanResidualBlock(in_dim, out_dim, dropout, **kw))
          if scale in attn_scales:
            down_blocks.append(WanAttentionBlock(out_dim, **kw))
          in_dim = out_dim
        if i != len(dim_mult) - 1:
          mode = "downsample3d" if temperal_downsample[i] else "downsample2d"
          down_blocks.append(WanResample(out_dim, mode=mode, **kw))
          scale /= 2.0
    self.down_blocks = nnx.List(down_blocks)
    self.mid_block = WanMidBlock(out_dim, dropout, non_linearity, num_layers=1, **kw)
    self.norm_out = WanRMS_norm(out_dim, images=False, param_dtype=param_dtype)
    self.conv_out = WanCausalConv3d(out_dim, z_dim, 3, padding=1, **kw)

  def __call__(
    self, x: Array, cache: Cache | None = None, *, return_intermediates: bool = False
  ) -> tuple[Array, Cache] | tuple[Array, Cache, dict[str, Array]]:
    cache = cache or {}
    new_cache: Cache = {}
    out: dict[str, Array] = {}
    x, new_cache["conv_in"] = self.conv_in.cached(x, cache.get("conv_in"))
    out["conv_in"] = x
    for i, layer in enumerate(self.down_blocks):
      key = f"down_blocks_{i}"
      if isinstance(layer, WanAttentionBlock):
        x = layer(x)
      else:
        x, new_cache[key] = layer(x, cache.get(key))
      out[key] = x
    x, new_cache["mid_block"] = self.mid_block(x, cache.get("mid_block"))
    out["mid_block"] = x
    x = self.nonlinearity(self.norm_out(x))
    x, new_cache["conv_out"] = self.conv_out.cached(x, cache.get("conv_out"))
    out["conv_out"] = x
    return (x, new_cache, out) if return_intermediates else (x, new_cache)


class WanResidualUpBlock(nnx.Module):
  """diffusers ``WanResidualUpBlock`` (Wan 2.2): ``num_res_blocks + 1`` resnets, an upsampler and a
  ``DupUp3D`` shortcut (dropping its first frame on the first chunk, as the upsampler does not double it)."""

  def __init__(
    self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float = 0.0, temperal_upsample: bool = False,
    up_flag: bool = False, non_linearity: str = "silu", *, param_dtype: DType = jnp.float32, rngs: nnx.Rngs,
  ):  # fmt: skip
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.in_dim = in_dim
    self.out_dim = out_dim
    self.avg_shortcut = (
      DupUp3D(in_dim, out_dim, factor_t=2 if temperal_upsample else 1, factor_s=2) if up_flag else None
    )
    resnets, current_dim = [], in_dim
    for _ in range(num_res_blocks + 1):
      resnets.append(WanResidualBlock(current_dim, out_dim, dropout, non_linearity, **kw))
      current_dim = out_dim
    self.resnets = nnx.List(resnets)
    mode = "upsample3d" if temperal_upsample else "upsample2d"
    self.upsampler = WanResample(out_dim, mode=mode, upsample_out_dim=out_dim, **kw) if up_flag else None

  def __call__(self, x: Array, cache: Cache | None = None, first_chunk: bool = False) -> tuple[Array, Cache]:
    cache = cache or {}
    new_cache: Cache = {}
    x_copy = x
    for i, resnet in enumerate(self.resnets):
      x, new_cache[f"resnets_{i}"] = resnet(x, cache.get(f"resnets_{i}"))
    if self.upsampler is not None:
      x, new_cache["upsampler"] = self.upsampler(x, cache.get("upsampler"))
    if self.avg_shortcut is not None:
      x = x + self.avg_shortcut(x_copy, first_chunk=first_chunk)
    return x, new_cache


class WanUpBlock(nnx.Module):
  """diffusers ``WanUpBlock`` (Wan 2.1): ``num_res_blocks + 1`` resnets, then (unless last) one upsampler."""

  def __init__(
    self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float = 0.0, upsample_mode: str | None = None,
    non_linearity: str = "silu", *, param_dtype: DType = jnp.float32, rngs: nnx.Rngs,
  ):  # fmt: skip
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.in_dim = in_dim
    self.out_dim = out_dim
    resnets, current_dim = [], in_dim
    for _ in range(num_res_blocks + 1):
      resnets.append(WanResidualBlock(current_dim, out_dim, dropout, non_linearity, **kw))
      current_dim = out_dim
    self.resnets = nnx.List(resnets)
    self.upsamplers = nnx.List([WanResample(out_dim, mode=upsample_mode, **kw)]) if upsample_mode is not None else None

  def __call__(self, x: Array, cache: Cache | None = None, first_chunk: bool | None = None) -> tuple[Array, Cache]:
    cache = cache or {}
    new_cache: Cache = {}
    for i, resnet in enumerate(self.resnets):
      x, new_cache[f"resnets_{i}"] = resnet(x, cache.get(f"resnets_{i}"))
    if self.upsamplers is not None:
      x, new_cache["upsamplers_0"] = self.upsamplers[0](x, cache.get("upsamplers_0"))
    return x, new_cache


class WanDecoder3d(nnx.Module):
  """diffusers ``WanDecoder3d``: latents ``(B, T, h, w, z_dim)`` -> ``(B, F, h*8, w*8, out_channels)``.

  Wan 2.1's up blocks after the first take half the previous width (its upsamplers halve it);
  Wan 2.2's residual up blocks keep it.
  """

  def __init__(
    self,
    dim: int = 128,
    z_dim: int = 4,
    dim_mult: tuple[int, ...] = (1, 2, 4, 4),
    num_res_blocks: int = 2,
    attn_scales: tuple[float, ...] = (),
    temperal_upsample: tuple[bool, ...] = (False, True, True),
    dropout: float = 0.0,
    non_linearity: str = "silu",
    out_channels: int = 3,
    is_residual: bool = False,
    *,
    param_dtype: DType = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.dim = dim
    self.z_dim = z_dim
    self.dim_mult = tuple(dim_mult)
    self.num_res_blocks = num_res_blocks
    self.attn_scales = tuple(attn_scales)
    self.temperal_upsample = tuple(temperal_upsample)
    self.nonlinearity = get_activation(non_linearity)

    dims = [dim * u for u in [dim_mult[-1], *dim_mult[::-1]]]
    self.conv_in = WanCausalConv3d(z_dim, dims[0], 3, padding=1, **kw)
    self.mid_block = WanMidBlock(dims[0], dropout, non_linearity, num_layers=1, **kw)
    up_blocks = []
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      if i > 0 and not is_residual:
        in_dim = in_dim // 2  # Wan 2.1
      up_flag = i != len(dim_mult) - 1
      upsample_mode = None
      if up_flag and temperal_upsample[i]:
        upsample_mode = "upsample3d"
      elif up_flag:
        upsample_mode = "upsample2d"
      if is_residual:
        up_blocks.append(
          WanResidualUpBlock(
            in_dim=in_dim, out_dim=out_dim, num_res_blocks=num_res_blocks, dropout=dropout,
            temperal_upsample=temperal_upsample[i] if up_flag else False, up_flag=up_flag,
            non_linearity=non_linearity, **kw,
          )  # fmt: skip
        )
      else:
        up_blocks.append(
          WanUpBlock(
            in_dim=in_dim, out_dim=out_dim, num_res_blocks=num_res_blocks, dropout=dropout,
            upsample_mode=upsample_mode, non_linearity=non_linearity, **kw,
          )  # fmt: skip
        )
    self.up_blocks = nnx.List(up_blocks)
    self.norm_out = WanRMS_norm(out_dim, images=False, param_dtype=param_dtype)
    self.conv_out = WanCausalConv3d(out_dim, out_channels, 3, padding=1, **kw)

  def __call__(
    self, x: Array, cache: Cache | None = None, first_chunk: bool = False, *, return_intermediates: bool = False
  ) -> tuple[Array, Cache] | tuple[Array, Cache, dict[str, Array]]:
    cache = cache or {}
    new_cache: Cache = {}
    out: dict[str, Array] = {}
    x, new_cache["conv_in"] = self.conv_in.cached(x, cache.get("conv_in"))
    out["conv_in"] = x
    x, new_cache["mid_block"] = self.mid_block(x, cache.get("mid_block"))
    out["mid_block"] = x
    for i, up_block in enumerate(self.up_blocks):
      key = f"up_blocks_{i}"
      x, new_cache[key] = up_block(x, cache.get(key), first_chunk=first_chunk)
      out[key] = x
    x = self.nonlinearity(self.norm_out(x))
    x, new_cache["conv_out"] = self.conv_out.cached(x, cache.get("conv_out"))
    out["conv_out"] = x
    return (x, new_cache, out) if return_intermediates else (x, new_cache)


def patchify(x: Array, patch_size: int) -> Array:
  """diffusers ``patchify`` channels-last: ``(B, F, H, W, C)`` -> ``(B, F, H/p, W/p, C*p*p)``, channel
  order ``(c, pw, ph)`` as diffusers'."""
  if patch_size == 1:
    return x
  b, f, h, w, c = x.shape
  p = patch_size
  x = x.reshape(b, f, h // p, p, w // p, p, c)
  return jnp.transpose(x, (0, 1, 2, 4, 6, 5, 3)).reshape(b, f, h // p, w // p, c * p * p)


def unpatchify(x: Array, patch_size: int) -> Array:
  """diffusers ``unpatchify`` channels-last: the inverse of :func:`patchify`."""
  if patch_size == 1:
    return x
  b, f, h, w, cpp = x.shape
  p = patch_size
  x = x.reshape(b, f, h, w, cpp // (p * p), p, p)  # (.., c, pw, ph)
  return jnp.transpose(x, (0, 1, 2, 6, 3, 5, 4)).reshape(b, f, h * p, w * p, cpp // (p * p))


class AutoencoderKLWan(nnx.Module):
  """diffusers ``AutoencoderKLWan``: ``encoder``, ``quant_conv``, ``post_quant_conv``, ``decoder``.

  ``decode_step``/``encode_step`` are one step of diffusers' ``_decode``/``_encode`` loop (what the
  driver jits; cache ``None`` on the first); patchify/unpatchify and the clamp are the driver's
  (the model adapter's), as they run on the whole video. ``decode``/``encode`` run the whole loop
  eagerly (no tiling), for tests. Latent de-normalisation is the pipelines', not the VAE's.
  """

  def __init__(self, config: WanVAEConfig, *, dtype: DType = jnp.float32, rngs: nnx.Rngs):
    self.config = config
    kw = dict(param_dtype=dtype, rngs=rngs)
    decoder_base_dim = config.decoder_base_dim or config.base_dim
    z_dim = config.z_dim
    self.z_dim = z_dim
    self.temperal_downsample = tuple(config.temperal_downsample)
    self.temperal_upsample = self.temperal_downsample[::-1]
    self.encoder = WanEncoder3d(
      in_channels=config.in_channels, dim=config.base_dim, z_dim=z_dim * 2, dim_mult=config.dim_mult,
      num_res_blocks=config.num_res_blocks, attn_scales=config.attn_scales, temperal_downsample=self.temperal_downsample,
      dropout=config.dropout, is_residual=config.is_residual, **kw,
    )  # fmt: skip
    self.quant_conv = WanCausalConv3d(z_dim * 2, z_dim * 2, 1, **kw)
    self.post_quant_conv = WanCausalConv3d(z_dim, z_dim, 1, **kw)
    self.decoder = WanDecoder3d(
      dim=decoder_base_dim, z_dim=z_dim, dim_mult=config.dim_mult, num_res_blocks=config.num_res_blocks,
      attn_scales=config.attn_scales, temperal_upsample=self.temperal_upsample, dropout=config.dropout,
      out_channels=config.out_channels, is_residual=config.is_residual, **kw,
    )  # fmt: skip

  def decode_step(self, z: Array, cache: Cache | None = None) -> tuple[Array, Cache]:
    """One ``_decode`` step: ``z`` (B, T, h, w, z_dim) -> (B, 1 | 4T, H, W, out_channels), cache; diffusers'
    steps have T = 1 (the first step must: it does not double time), the driver's may have more."""
    return self.decoder(self.post_quant_conv(z), cache, first_chunk=cache is None)

  def encode_step(self, x: Array, cache: Cache | None = None) -> tuple[Array, Cache]:
    """One ``_encode`` step: ``x`` (B, 1 | 4T, H, W, in_channels) -> moments (B, 1 | T, h, w, 2 z_dim), cache
    (diffusers' steps: T = 1)."""
    h, cache = self.encoder(x, cache)
    return self.quant_conv(h), cache

  def decode(self, z: Array) -> Array:
    """diffusers ``decode(z).sample`` (no slicing/tiling), channels-last: unpatchified and clamped."""
    outputs, cache = [], None
    for i in range(z.shape[T_AXIS]):
      out, cache = self.decode_step(z[:, i : i + 1], cache)
      outputs.append(out)
    out = unpatchify(jnp.concatenate(outputs, axis=T_AXIS), self.config.patch)
    return jnp.clip(out, -1.0, 1.0)

  def encode(self, x: Array) -> Array:
    """diffusers ``encode(x)``'s moments (no slicing/tiling), channels-last: ``mean ‖ logvar``."""
    x = patchify(x, self.config.patch)
    steps = 1 + (x.shape[T_AXIS] - 1) // 4
    outputs, cache = [], None
    for i in range(steps):
      chunk = x[:, :1] if i == 0 else x[:, 1 + 4 * (i - 1) : 1 + 4 * i]
      out, cache = self.encode_step(chunk, cache)
      outputs.append(out)
    return jnp.concatenate(outputs, axis=T_AXIS)
