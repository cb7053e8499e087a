"""HunyuanVideo (``AutoencoderKLHunyuanVideo``, diffusers 0.42): what the driver needs to know of it.

* Decode: ``post_quant_conv`` and the decoder over the latents in one call: no cache, no frame
  steps. With ``use_framewise_decoding`` (diffusers' default: on) and more than
  ``tile_sample_min_num_frames // 4`` latent frames, diffusers decodes overlapping frame tiles of
  ``tile_sample_min_num_frames // 4 + 1`` latent frames every ``tile_sample_stride_num_frames // 4``
  (``_temporal_tiled_decode``: 5 every 3 by default), each on its own, drops the first decoded frame
  of every later tile, blends ``min - stride`` sample frames (``blend_t``) and keeps ``stride`` (the
  first tile ``stride + 1``). Encode alike in sample frames (17 every 12, blend 1 latent frame).
  The driver walks those tiles with one program per tile length: a full tile and at most one
  shorter last one, whatever T.
* No streaming plan: see :mod:`.frame_tiled` (GroupNorm and the mid-block attention span all frames).
* Output frames: ``1 + 4 (T - 1)`` (the decoder's two time upsamplers keep the first frame and
  double the rest); encode: ``(F - 1) // 4 + 1`` latent frames.
* Spatial and frame tiling as :mod:`.frame_tiled` says (defaults 256/192 pixels, 16/12 frames).
* ``HunyuanVideoPipeline`` returns ``(B, C, T, H, W)`` latents and decodes
  ``vae.decode(latents.to(vae.dtype) / scaling_factor)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CheckpointError
from .base import DiffusersConfig
from .frame_tiled import FrameTiledVAE, FrameTiling

CLASS_NAME = "AutoencoderKLHunyuanVideo"


@dataclasses.dataclass(frozen=True)
class HunyuanVideoVAEConfig(DiffusersConfig):
  """The ``config.json`` of diffusers' ``AutoencoderKLHunyuanVideo``; defaults are diffusers' (HunyuanVideo's VAE)."""

  class_name: ClassVar[str] = CLASS_NAME

  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 16
  down_block_types: tuple[str, ...] = ("HunyuanVideoDownBlock3D",) * 4
  up_block_types: tuple[str, ...] = ("HunyuanVideoUpBlock3D",) * 4
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  act_fn: str = "silu"
  norm_num_groups: int = 32
  scaling_factor: float = 0.476986
  spatial_compression_ratio: int = 8
  temporal_compression_ratio: int = 4
  mid_block_add_attention: bool = True

  def validate(self, source: str = "config") -> None:
    n = len(self.block_out_channels)
    if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise CheckpointError(
        f"{source}: block_out_channels, down_block_types and up_block_types must have one entry per "
        f"block, got {len(self.block_out_channels)}, {len(self.down_block_types)}, {len(self.up_block_types)}"
      )
    if self.temporal_compression_ratio != 4:  # diffusers' decoder raises for any other
      raise CheckpointError(f"{source}: temporal_compression_ratio must be 4 (diffusers' decoder supports no other), got {self.temporal_compression_ratio}")
    if 2 ** int(np.log2(self.spatial_compression_ratio)) != self.spatial_compression_ratio or self.spatial_compression_ratio > 2 ** (n - 1) * 2:
      raise CheckpointError(f"{source}: spatial_compression_ratio must be a power of 2 the {n} blocks can reach, got {self.spatial_compression_ratio}")
    for c in self.block_out_channels:
      if c % self.norm_num_groups:
        raise CheckpointError(f"{source}: block_out_channels {self.block_out_channels} must divide by norm_num_groups={self.norm_num_groups}")

  @property
  def time_scalers(self) -> int:
    """Blocks that halve time in the encoder and double it in the decoder: those from
    ``n - 1 - log2(4)`` on, except the last (diffusers; 2 for 4 or more blocks)."""
    n = len(self.block_out_channels)
    return sum(1 for i in range(n) if i >= n - 1 - 2 and i != n - 1)


@dataclasses.dataclass(frozen=True)
class HunyuanVideoTiling(FrameTiling):
  """diffusers' tiling parameters (``AutoencoderKLHunyuanVideo.enable_tiling``): 256/192 px, 16/12 frames."""


class ScaledLatents:
  """The latent hand-off of HunyuanVideo's and HunyuanVideo 1.5's pipelines: ``(B, C, T, H, W)`` latents,
  decoded as ``vae.decode(latents.to(vae.dtype) / scaling_factor)``; image latents (their
  image-to-video pipelines) ``latent_dist.mode() * scaling_factor``."""

  config: Any
  pipeline_layout: ClassVar[str] = "BCTHW"
  scales_by_factor: ClassVar[bool] = True

  def latents_for_decode(
    self, latents: jax.Array, vae_dtype: Any = None, scaling_factor: float | None = None
  ) -> jax.Array:
    """``latents.to(vae.dtype) / scaling_factor`` (``scaling_factor``: default the config's)."""
    if vae_dtype is not None:
      latents = latents.astype(vae_dtype)
    factor = float(self.config.scaling_factor if scaling_factor is None else scaling_factor)
    # Broadcast before the program: XLA rewrites `x / scalar` as `x * (1 / scalar)`, one ulp off torch.
    return _divide(latents, jnp.full(latents.shape, factor, latents.dtype))

  def describe_latent_scaling(self, scaling_factor: float | None = None) -> str:
    return f"1/{self.config.scaling_factor if scaling_factor is None else scaling_factor:g}"

  def latents_from_encode(self, latents: jax.Array) -> jax.Array:
    """``latent_dist.sample() * scaling_factor`` in ``(B, C, T, H, W)``, as ``HunyuanVideoImageToVideoPipeline``
    scales its image latents and diffusers' HunyuanVideo training scripts cache them."""
    return latents * float(self.config.scaling_factor)


class HunyuanVideo(ScaledLatents, FrameTiledVAE):
  name = "hunyuan_video"
  class_name = CLASS_NAME
  config_class = HunyuanVideoVAEConfig
  tiling_class = HunyuanVideoTiling
  framewise_decoding = True  # diffusers: use_framewise_decoding = use_framewise_encoding = True
  framewise_encoding = True

  def decoded_num_frames(self, num_latent_frames: int) -> int:
    t = num_latent_frames
    for _ in range(self.config.time_scalers):
      t = 1 + 2 * (t - 1)
    return t

  def encoded_num_frames(self, num_frames: int) -> int:
    """Latent frames the encoder makes of ``num_frames`` (causal stride-2 convolutions: ``(F - 1) // 2 + 1`` each)."""
    f = num_frames
    for _ in range(self.config.time_scalers):
      f = (f - 1) // 2 + 1
    return f

  def encodable_num_frames(self, num_frames: int) -> int:
    r = 2**self.config.time_scalers
    return 0 if num_frames < 1 else 1 + r * ((num_frames - 1) // r)

  def default_tiling(self) -> HunyuanVideoTiling:
    return HunyuanVideoTiling()


@jax.jit
def _divide(latents: jax.Array, divisor: jax.Array) -> jax.Array:
  return latents / divisor
