"""Wan 2.1 / 2.2 (``AutoencoderKLWan``, diffusers 0.42): what the driver needs to know of it.

* Decode: diffusers' ``_decode`` runs ``post_quant_conv`` and then the decoder one latent frame per
  step, ``first_chunk=True`` on the first, threading ``feat_cache`` (one slot per causal conv) from
  step to step; then ``unpatchify`` (Wan 2.2, ``patch_size=2``) and a clamp to [-1, 1].
  Encode: ``patchify``, then the encoder on frame 0 alone and on 4 frames a step after it
  (``1 + (F - 1) // 4`` steps: frames past the last full step are dropped, as diffusers drops them),
  then ``quant_conv``.
* Steps of K latent frames (``frames_per_step``; encode: 4K video frames): the same result, as every
  layer is per position (RMS norm over channels), per frame (attention, 2D resamples) or causal in
  time (the convolutions, with their cache); only the first step must be diffusers' (it does not
  double time). A shorter last step is padded with zero frames, which change nothing before them.
* Output frames: 1 for the first latent frame, ``2 ** (temporal upsamplers)`` (4) for each later
  one: 1 + 4 (T - 1) (21 -> 81).
* Tiling: ``enable_tiling(tile_sample_min_height, tile_sample_min_width, tile_sample_stride_height,
  tile_sample_stride_width)``, defaults 256, 256, 192, 192 sample pixels whatever the config. Tiles
  start every stride, blend ``min - stride`` and keep ``stride``; the stitched result is cropped to
  the untiled size. With ``patch_size`` the decoder's tiles are blended in the patchified output
  (sizes divided by the patch), and the encoder's tiles are cut from the patchified video with the
  *unpatchified* sizes — exactly as diffusers does both. Clamp and unpatchify come after stitching.
* Pipelines (``WanPipeline``, ``WanImageToVideoPipeline``, the 2.2 TI2V-5B pipeline) return
  ``(B, C, T, H, W)`` latents and decode ``vae.decode(latents / (1 / latents_std) + latents_mean)``
  (per channel, ``latents_std``/``latents_mean`` from the VAE config).
"""

from __future__ import annotations

import dataclasses
import functools
from types import MappingProxyType
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CheckpointError
from ..tiling import TileGrid
from .base import DECODE, DiffusersConfig, FrameStep, TilingSettings, VideoVAE, stepped_plan

CLASS_NAME = "AutoencoderKLWan"
SAMPLE_FRAMES_PER_STEP = 4  # diffusers' _encode: x[:, :, 1 + 4 * (i - 1) : 1 + 4 * i]

# diffusers' defaults: the Wan 2.1 VAE's latent statistics (16 channels).
WAN21_LATENTS_MEAN = (
  -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
  0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
  2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
  3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class WanVAEConfig(DiffusersConfig):
  """The ``config.json`` of diffusers' ``AutoencoderKLWan``; defaults are diffusers' (the Wan 2.1 VAE)."""

  class_name: ClassVar[str] = CLASS_NAME

  base_dim: int = 96
  decoder_base_dim: int | None = None
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple[float, ...] = ()
  temperal_downsample: tuple[bool, ...] = (False, True, True)
  dropout: float = 0.0
  latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
  latents_std: tuple[float, ...] = WAN21_LATENTS_STD
  is_residual: bool = False
  in_channels: int = 3
  out_channels: int = 3
  patch_size: int | None = None
  scale_factor_temporal: int | None = 4
  scale_factor_spatial: int | None = 8

  def validate(self, source: str = "config") -> None:
    """Raises :class:`CheckpointError` for a config diffusers could not build or decode with."""
    levels = len(self.dim_mult)
    if levels < 1 or len(self.temperal_downsample) < levels - 1:
      raise CheckpointError(
        f"{source}: temperal_downsample needs an entry for each of the {levels - 1} downsampling levels "
        f"(len(dim_mult) - 1), got {list(self.temperal_downsample)}"
      )
    for name in ("in_channels", "out_channels"):
      if getattr(self, name) % self.patch**2:
        raise CheckpointError(f"{source}: {name}={getattr(self, name)} must divide by patch_size**2 = {self.patch**2}")
    if not self.scale_factor_spatial:
      raise CheckpointError(f"{source}: scale_factor_spatial must be set (8 for Wan 2.1, 16 for Wan 2.2)")

  @property
  def patch(self) -> int:
    """``patch_size`` or 1 (no patchify)."""
    return self.patch_size or 1

  @property
  def temporal_upsamplers(self) -> int:
    """The decoder's time-doubling upsamplers (``upsample3d``): its up blocks ``i < len(dim_mult) - 1``
    read ``temperal_upsample = temperal_downsample[::-1]``."""
    return sum(bool(t) for t in self.temperal_downsample[::-1][: len(self.dim_mult) - 1])


@dataclasses.dataclass(frozen=True)
class WanTiling(TilingSettings):
  """diffusers' tiling parameters (``AutoencoderKLWan.enable_tiling``), in sample pixels."""

  tile_sample_min_height: int = 256
  tile_sample_min_width: int = 256
  tile_sample_stride_height: int = 192
  tile_sample_stride_width: int = 192


def _patchify(x: jax.Array, p: int) -> jax.Array:
  """diffusers ``patchify``: ``(B, C, F, H, W)`` -> ``(B, C*p*p, F, H/p, W/p)``, channel order (c, pw, ph)."""
  b, c, f, h, w = x.shape
  x = x.reshape(b, c, f, h // p, p, w // p, p)
  return jnp.transpose(x, (0, 1, 6, 4, 2, 3, 5)).reshape(b, c * p * p, f, h // p, w // p)


def _unpatchify(x: jax.Array, p: int) -> jax.Array:
  """diffusers ``unpatchify``: the inverse of :func:`_patchify`."""
  b, cpp, f, h, w = x.shape
  x = x.reshape(b, cpp // (p * p), p, p, f, h, w)
  return jnp.transpose(x, (0, 1, 4, 5, 3, 6, 2)).reshape(b, cpp // (p * p), f, h * p, w * p)


@functools.partial(jax.jit, static_argnames="patch")
def _before_encode(x: jax.Array, patch: int) -> jax.Array:
  return _patchify(x, patch) if patch > 1 else x


@functools.partial(jax.jit, static_argnames="patch")
def _after_decode(video: jax.Array, patch: int) -> jax.Array:
  video = _unpatchify(video, patch) if patch > 1 else video
  return jnp.clip(video, -1.0, 1.0)


class Wan(VideoVAE):
  name = "wan"
  class_name = CLASS_NAME
  config_class = WanVAEConfig
  tiling_class = WanTiling
  pipeline_layout = "BCTHW"
  # Latent frames per steady step (diffusers: 1). Wan normalises per position, attends per frame and
  # convolves causally, so the result is the same for any K; K trades memory (the steady step's
  # scratch grows about linearly in K) for speed, measured per platform (docs/frames-per-step.md,
  # 2026-12-08): CPU 2 (decode 6-7% faster than K = 1 on both paths; K = 4 would need 23.8 GB at
  # 480p fp32 on one device); TPU 5 (the TPU compiler's estimate at 81x720x1280 on v6e-8: 9.4% less
  # time, 11% fewer bytes, 13.5 GB per chip instead of 2.4); GPU unmeasured: diffusers' 1.
  frames_per_step_defaults = MappingProxyType({"cpu": 2, "gpu": 1, "tpu": 5, "*": 1})

  @property
  def latent_channels(self) -> int:
    return self.config.z_dim

  @property
  def sample_channels(self) -> int:
    return self.config.in_channels // self.config.patch**2

  @property
  def spatial_compression(self) -> int:
    return int(self.config.scale_factor_spatial)

  def decode_plan(self, num_latent_frames: int, frames_per_step: int = 1) -> list[FrameStep]:
    """diffusers' first step (latent frame 0, ``first_chunk``), then ``frames_per_step`` latent frames a
    step (diffusers: 1); a shorter last step is padded with zero frames (causal: the frames before
    it are unchanged) and its padding's output dropped."""
    return stepped_plan(1, num_latent_frames, frames_per_step)

  def encode_plan(self, num_frames: int, frames_per_step: int = 1) -> list[FrameStep]:
    """Frame 0, then ``4 * frames_per_step`` frames a step (diffusers: 4) over the frames diffusers
    encodes (``1 + 4k``; the rest are dropped, as diffusers drops them)."""
    return stepped_plan(1, self.encodable_num_frames(num_frames), SAMPLE_FRAMES_PER_STEP * frames_per_step)

  def decoded_num_frames(self, num_latent_frames: int) -> int:
    return 1 + (num_latent_frames - 1) * 2**self.config.temporal_upsamplers

  def check_sample(self, x: jax.Array, name: str) -> None:
    p = self.config.patch
    if x.shape[3] % p or x.shape[4] % p:
      raise ValueError(
        f"{name}: expected height and width divisible by patch_size={p} (the model patchifies the video), "
        f"got shape {tuple(x.shape)}"
      )

  def before_encode(self, x: jax.Array) -> jax.Array:
    return _before_encode(x, self.config.patch)

  def after_decode(self, video: jax.Array) -> jax.Array:
    return _after_decode(video, self.config.patch)

  def default_tiling(self) -> WanTiling:
    return WanTiling()

  def tile_grid(self, tiling: WanTiling, kind: str, height: int, width: int) -> TileGrid | None:
    """diffusers' ``tiled_decode`` / ``tiled_encode`` (see the module docstring); ``height``/``width``
    as the caller gave them: latent pixels for decode, unpatchified sample pixels for encode."""
    minimum = (tiling.tile_sample_min_height, tiling.tile_sample_min_width)
    stride = (tiling.tile_sample_stride_height, tiling.tile_sample_stride_width)
    comp, p = self.spatial_compression, self.config.patch
    split = (height > minimum[0] // comp or width > minimum[1] // comp) if kind == DECODE else (
      height > minimum[0] or width > minimum[1]
    )
    if not split:  # diffusers decodes / encodes it whole
      return None
    if stride[0] > minimum[0] or stride[1] > minimum[1]:
      raise ValueError(f"tiling {tiling}: the tile stride must not exceed the tile size (tiles would leave gaps)")
    try:
      if kind == DECODE:
        return TileGrid(
          tile=(minimum[0] // comp, minimum[1] // comp),
          stride=(stride[0] // comp, stride[1] // comp),
          blend=(minimum[0] // p - stride[0] // p, minimum[1] // p - stride[1] // p),
          keep=(stride[0] // p, stride[1] // p),
          crop=(height * comp // p, width * comp // p),
        )
      encode_compression = comp // p  # diffusers' encode_spatial_compression_ratio: patchified px per latent px
      return TileGrid(
        tile=minimum,
        stride=stride,
        blend=(minimum[0] // encode_compression - stride[0] // encode_compression,
               minimum[1] // encode_compression - stride[1] // encode_compression),
        keep=(stride[0] // encode_compression, stride[1] // encode_compression),
        crop=(height // p // encode_compression, width // p // encode_compression),
      )  # fmt: skip
    except ValueError as err:
      raise ValueError(f"tiling {tiling}: {err}") from None

  def latents_for_decode(
    self, latents: jax.Array, vae_dtype: Any = None, scaling_factor: float | None = None
  ) -> jax.Array:
    if scaling_factor is not None:
      raise ValueError(
        f"scaling_factor: {self.class_name}'s pipelines de-normalise latents with the VAE config's "
        "latents_mean/latents_std, not a scaling factor; leave it unset"
      )
    mean, std = self._latent_statistics()
    # WanPipeline: `latents.to(dtype=self.vae.dtype)`; `latents_mean = torch.tensor(mean).view(...).to(
    # latents.dtype)`; `latents_std = 1.0 / torch.tensor(std).view(...).to(latents.dtype)` — the
    # reciprocal of the std already cast (`.to` binds before `/`), in that dtype; then
    # `latents / latents_std + latents_mean`.
    if vae_dtype is not None:
      latents = latents.astype(vae_dtype)
    shape = (1, self.latent_channels, 1, 1, 1)
    as_latents = lambda values: jnp.asarray(np.asarray(values, np.float32).reshape(shape)).astype(latents.dtype)  # noqa: E731
    # Broadcast to the latents' shape before the program: XLA rewrites `x / broadcast(s)` as
    # `x * broadcast(1 / s)`, one ulp off torch's division.
    full = lambda per_channel: jnp.broadcast_to(per_channel, latents.shape)  # noqa: E731
    return _denormalize(latents, full(1.0 / as_latents(std)), full(as_latents(mean)))

  def describe_latent_scaling(self, scaling_factor: float | None = None) -> str:
    return "* latents_std + latents_mean"

  def encodable_num_frames(self, num_frames: int) -> int:
    # diffusers' encode takes frame 0, then 4 frames a step, and drops what is left over.
    return 0 if num_frames < 1 else 1 + SAMPLE_FRAMES_PER_STEP * ((num_frames - 1) // SAMPLE_FRAMES_PER_STEP)

  def latents_from_encode(self, latents: jax.Array) -> jax.Array:
    """``(z - latents_mean) * latents_std`` with ``latents_std = 1 / std`` (cast first, as the
    pipelines build it), as ``WanImageToVideoPipeline.prepare_latents`` normalises its condition
    latents and Wan trainers cache them; the layout stays ``(B, C, T, H, W)``."""
    mean, std = self._latent_statistics()
    shape = (1, self.latent_channels, 1, 1, 1)
    as_latents = lambda values: jnp.asarray(np.asarray(values, np.float32).reshape(shape)).astype(latents.dtype)  # noqa: E731
    return _normalize(latents, jnp.broadcast_to(1.0 / as_latents(std), latents.shape), as_latents(mean))

  def _latent_statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The config's ``latents_mean``, ``latents_std``; :class:`CheckpointError` unless one per channel."""
    mean, std = self.config.latents_mean, self.config.latents_std
    if len(mean) != self.latent_channels or len(std) != self.latent_channels:
      raise CheckpointError(
        f"the VAE config has {len(mean)} latents_mean and {len(std)} latents_std values for z_dim="
        f"{self.latent_channels} channels; its pipelines cannot (de-)normalise latents with it"
      )
    return mean, std


@jax.jit
def _denormalize(latents: jax.Array, inverse_std: jax.Array, mean: jax.Array) -> jax.Array:
  return latents / inverse_std + mean


@jax.jit
def _normalize(latents: jax.Array, inverse_std: jax.Array, mean: jax.Array) -> jax.Array:
  return (latents - mean) * inverse_std
