"""HunyuanVideo 1.5 (``AutoencoderKLHunyuanVideo15``, diffusers 0.42): what the driver needs to know of it.

* Decode: the decoder over all of the latents in one call (diffusers' ``_decode``; no
  ``post_quant_conv``, no frame tiles, no cache). Encode: the encoder in one call (no ``quant_conv``);
  its output is the posterior's ``mean ‖ logvar``.
* Tiling (``enable_tiling``): spatial only, CogVideoX's overlap-factor rule
  (:func:`~torchax_vae.core.tiling.overlap_factor_grid`): latent tiles of ``tile_latent_min_*`` (16)
  every ``int(16 * 0.75) = 12``, blended over ``int(256 * 0.25) = 64`` sample pixels, keeping 192; the
  sample and latent tile sizes are separate attributes, as in diffusers. Every tile spans all frames.
* Why no streaming plan, though every layer is causal in time (causal convolutions with replicate
  padding, RMS norms per position, the first frame up/down-sampled on its own): the mid-block
  attention of the decoder and the encoder is causal over *all* earlier frames
  (``prepare_causal_attention_mask``), so a step would need the keys and values of every frame
  before it — a cache that grows with T (a program per length), not a fixed set of programs. The
  adapter keeps diffusers' default, one call, exactly.
* Output frames: ``1 + 2 (t - 1)`` per time upsampler (``log2(temporal_compression_ratio)``, 2):
  ``1 + 4 (T - 1)``. Encode takes ``1 + 4k`` frames and height and width divisible by the spatial
  compression (its space-to-channel downsamplers need them; diffusers raises from inside a view).
* ``HunyuanVideo15Pipeline`` decodes ``vae.decode(latents.to(vae.dtype) / scaling_factor)`` of
  ``(B, C, T, H, W)`` latents; ``HunyuanVideo15ImageToVideoPipeline`` scales its image latents
  ``mode() * scaling_factor``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from ..errors import CheckpointError
from ..tiling import TileGrid, overlap_factor_grid
from .base import DECODE, DiffusersConfig, TilingSettings
from .frame_tiled import OneStepVAE
from .hunyuan_video import ScaledLatents

CLASS_NAME = "AutoencoderKLHunyuanVideo15"


def _log2(value: int) -> int | None:
  """``log2(value)`` for a power of two >= 1, else ``None``."""
  return int(np.log2(value)) if value >= 1 and 2 ** int(np.log2(value)) == value else None


@dataclasses.dataclass(frozen=True)
class HunyuanVideo15VAEConfig(DiffusersConfig):
  """The ``config.json`` of diffusers' ``AutoencoderKLHunyuanVideo15``; defaults are diffusers' (HunyuanVideo 1.5's VAE)."""

  class_name: ClassVar[str] = CLASS_NAME

  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 32
  block_out_channels: tuple[int, ...] = (128, 256, 512, 1024, 1024)
  layers_per_block: int = 2
  spatial_compression_ratio: int = 16
  temporal_compression_ratio: int = 4
  downsample_match_channel: bool = True
  upsample_match_channel: bool = True
  scaling_factor: float = 1.03682

  def validate(self, source: str = "config") -> None:
    """What diffusers' constructor or first call would fail on, said up front."""
    n, channels = len(self.block_out_channels), self.block_out_channels
    s, t = _log2(self.spatial_compression_ratio), _log2(self.temporal_compression_ratio)
    matched = self.downsample_match_channel or self.upsample_match_channel
    if s is None or t is None or t > s or s > n or (matched and s == n):
      raise CheckpointError(
        f"{source}: spatial_compression_ratio and temporal_compression_ratio must be powers of 2, temporal <= spatial, "
        f"and log2(spatial) at most len(block_out_channels)={n} (one resampling block per halving; fewer than {n} when a "
        f"block's channels match the next block's); got {self.spatial_compression_ratio}, {self.temporal_compression_ratio}"
      )
    if channels[-1] % (2 * self.latent_channels) or channels[-1] % self.latent_channels:
      raise CheckpointError(
        f"{source}: block_out_channels[-1]={channels[-1]} must be a multiple of 2 * latent_channels={2 * self.latent_channels} "
        "(the encoder's and decoder's channel shortcuts group and repeat channels)"
      )
    for i in range(s):  # the space-to-channel shortcuts of each resampling block
      factor = 8 if (i >= s - t) else 4  # encoder block i: temporal too from log2(s / t) on
      wide, narrow = channels[i + 1 if self.downsample_match_channel else i], channels[i]
      if wide % factor or (factor * narrow) % wide or (factor == 8 and ((factor * narrow) // wide) % 2):
        raise CheckpointError(f"{source}: down block {i} cannot map {narrow} to {wide} channels through its {factor}x space-to-channel shortcut")
      factor = 8 if i < t else 4  # decoder block i: temporal too in the first log2(t)
      wide, narrow = channels[::-1][i], channels[::-1][i + 1 if self.upsample_match_channel else i]
      if wide % factor or (factor * narrow) % wide or (factor == 8 and ((factor * narrow) // wide) % 2):
        raise CheckpointError(f"{source}: up block {i} cannot map {wide} to {narrow} channels through its {factor}x channel-to-space shortcut")


@dataclasses.dataclass(frozen=True)
class HunyuanVideo15Tiling(TilingSettings):
  """``AutoencoderKLHunyuanVideo15.enable_tiling``'s arguments, in diffusers' order. The latent tile
  sizes are their own attributes (diffusers sets them from the sample sizes only in ``__init__``)."""

  tile_sample_min_height: int = 256
  tile_sample_min_width: int = 256
  tile_latent_min_height: int = 16
  tile_latent_min_width: int = 16
  tile_overlap_factor: float = 0.25

  @classmethod
  def default(cls, config: HunyuanVideo15VAEConfig) -> HunyuanVideo15Tiling:
    return cls(tile_latent_min_height=256 // config.spatial_compression_ratio, tile_latent_min_width=256 // config.spatial_compression_ratio)


class HunyuanVideo15(ScaledLatents, OneStepVAE):
  name = "hunyuan_video15"
  class_name = CLASS_NAME
  config_class = HunyuanVideo15VAEConfig
  tiling_class = HunyuanVideo15Tiling

  @property
  def _time_scalers(self) -> int:
    return _log2(self.config.temporal_compression_ratio)

  def decoded_num_frames(self, num_latent_frames: int) -> int:
    t = num_latent_frames
    for _ in range(self._time_scalers):
      t = 1 + 2 * (t - 1)  # the first frame up-sampled alone, the rest doubled
    return t

  def encodable_num_frames(self, num_frames: int) -> int:
    r = self.temporal_compression
    return 0 if num_frames < 1 else 1 + r * ((num_frames - 1) // r)

  def check_sample(self, x: jax.Array, name: str) -> None:
    _, _, f, h, w = x.shape
    r, s = self.temporal_compression, self.spatial_compression
    if (f - 1) % r or h % s or w % s:
      raise ValueError(
        f"{name}: the encoder folds {r} frames (after the first) and {s}x{s} pixels into channels: expected 1 + {r}k frames "
        f"and height and width divisible by {s}, got shape {tuple(x.shape)}"
      )

  def default_tiling(self) -> HunyuanVideo15Tiling:
    return HunyuanVideo15Tiling.default(self.config)

  def tile_grid(self, tiling: HunyuanVideo15Tiling, kind: str, height: int, width: int) -> TileGrid | None:
    """diffusers' ``tiled_decode``/``tiled_encode``, taken when the input exceeds a tile (module docstring)."""
    sample = (tiling.tile_sample_min_height, tiling.tile_sample_min_width)
    latent = (tiling.tile_latent_min_height, tiling.tile_latent_min_width)
    tile, out_tile = (latent, sample) if kind == DECODE else (sample, latent)
    if not (height > tile[0] or width > tile[1]):
      return None
    try:
      return overlap_factor_grid(tile, out_tile, (tiling.tile_overlap_factor,) * 2)
    except ValueError as err:
      raise ValueError(f"tiling {tiling}: {err}") from None
