"""CogVideoX (``AutoencoderKLCogVideoX``, diffusers 0.42): what the driver needs to know of it.

* Decode: diffusers' ``_decode`` walks the latents 2 frames a step (``num_latent_frames_batch_size``),
  the remainder of an odd T joining the first step (3 frames), the conv cache carried between steps.
  Encode: 8 sample frames a step (``num_sample_frames_batch_size``), the remainder joining the first.
* Output frames: 4T - 3 for odd T (13 -> 49), 4T for even T, 1 for T = 1 (released configs).
* Tiling: ``enable_tiling(tile_sample_min_height, tile_sample_min_width, tile_overlap_factor_height,
  tile_overlap_factor_width)``, defaults half the config's sample size and 1/6, 1/5; every tile keeps
  ``tile - blend`` sample pixels and the stitched result is not cropped (so some tile sizes change
  the video's size, in diffusers as here).
* Pipelines (``CogVideoXPipeline`` and its image/video-to-video, fun-control and 1.5 variants)
  return ``(B, T, C, H, W)`` latents and decode ``vae.decode(latents.permute(0, 2, 1, 3, 4) /
  scaling_factor)``. ``invert_scale_latents`` and ``shift_factor`` do not enter decoding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CheckpointError
from ..tiling import TileGrid, overlap_factor_grid
from .base import DECODE, DiffusersConfig, FrameStep, TilingSettings, VideoVAE, plan_from_ranges

CLASS_NAME = "AutoencoderKLCogVideoX"
# diffusers AutoencoderKLCogVideoX.num_latent_frames_batch_size / num_sample_frames_batch_size
LATENT_FRAMES_PER_STEP = 2
SAMPLE_FRAMES_PER_STEP = 8


@dataclasses.dataclass(frozen=True)
class CogVideoXVAEConfig(DiffusersConfig):
  """The ``config.json`` of diffusers' ``AutoencoderKLCogVideoX``; defaults are diffusers' (CogVideoX-2b)."""

  class_name: ClassVar[str] = CLASS_NAME

  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ("CogVideoXDownBlock3D",) * 4
  up_block_types: tuple[str, ...] = ("CogVideoXUpBlock3D",) * 4
  block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
  latent_channels: int = 16
  layers_per_block: int = 3
  act_fn: str = "silu"
  norm_eps: float = 1e-6
  norm_num_groups: int = 32
  temporal_compression_ratio: float = 4
  sample_height: int = 480
  sample_width: int = 720
  scaling_factor: float = 1.15258426
  shift_factor: float | None = None
  latents_mean: tuple[float, ...] | None = None
  latents_std: tuple[float, ...] | None = None
  force_upcast: bool = True
  use_quant_conv: bool = False
  use_post_quant_conv: bool = False
  invert_scale_latents: bool = False

  def validate(self, source: str = "config") -> None:
    n = len(self.block_out_channels)
    if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise CheckpointError(
        f"{source}: block_out_channels, down_block_types and up_block_types must have one entry per "
        f"block, got {len(self.block_out_channels)}, {len(self.down_block_types)}, {len(self.up_block_types)}"
      )
    for c in self.block_out_channels:
      if c % self.norm_num_groups:
        raise CheckpointError(f"{source}: block_out_channels {self.block_out_channels} must divide by norm_num_groups={self.norm_num_groups}")

  @property
  def spatial_compression(self) -> int:
    """Pixels per latent pixel along H and W (8 for every released CogVideoX VAE)."""
    return 2 ** (len(self.block_out_channels) - 1)


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


@dataclasses.dataclass(frozen=True)
class CogVideoXTiling(TilingSettings):
  """diffusers' tiling parameters (``AutoencoderKLCogVideoX.enable_tiling``), in sample pixels."""

  tile_sample_min_height: int
  tile_sample_min_width: int
  tile_overlap_factor_height: float = 1 / 6
  tile_overlap_factor_width: float = 1 / 5

  @classmethod
  def default(cls, config: CogVideoXVAEConfig) -> CogVideoXTiling:
    # diffusers: half the config's sample size (240 x 360 for CogVideoX's 480 x 720).
    return cls(config.sample_height // 2, config.sample_width // 2)


def _tile_grid(tiling: CogVideoXTiling, kind: str, compression: int) -> TileGrid:
  """diffusers' ``tiled_decode``/``tiled_encode`` tiles: stride ``tile * (1 - overlap)`` in the
  input's units, blend ``out_tile * overlap`` and keep ``out_tile - blend`` in the output's; no crop."""
  sample = (tiling.tile_sample_min_height, tiling.tile_sample_min_width)
  latent = (int(sample[0] / compression), int(sample[1] / compression))
  tile, out_tile = (latent, sample) if kind == DECODE else (sample, latent)
  try:
    return overlap_factor_grid(tile, out_tile, (tiling.tile_overlap_factor_height, tiling.tile_overlap_factor_width))
  except ValueError as err:
    raise ValueError(f"tiling {tiling}: {err}") from None


class CogVideoX(VideoVAE):
  name = "cogvideox"
  class_name = CLASS_NAME
  config_class = CogVideoXVAEConfig
  tiling_class = CogVideoXTiling
  pipeline_layout = "BTCHW"
  scales_by_factor = True

  @property
  def spatial_compression(self) -> int:
    return self.config.spatial_compression

  def decode_plan(self, num_latent_frames: int) -> list[FrameStep]:
    return plan_from_ranges(frame_steps(num_latent_frames, LATENT_FRAMES_PER_STEP))

  def encode_plan(self, num_frames: int) -> list[FrameStep]:
    return plan_from_ranges(frame_steps(num_frames, SAMPLE_FRAMES_PER_STEP))

  def decoded_num_frames(self, num_latent_frames: int) -> int:
    return decoded_num_frames(num_latent_frames, self.config)

  def encodable_num_frames(self, num_frames: int) -> int:
    # 1 + r*k with r the encoder's time compression: diffusers halves time in the first
    # log2(ratio) down blocks that have a downsampler (4 for every released config: 49 -> 13 -> 49).
    r = 2 ** min(int(np.log2(self.config.temporal_compression_ratio)), len(self.config.block_out_channels) - 1)
    return 0 if num_frames < 1 else 1 + r * ((num_frames - 1) // r)

  def default_tiling(self) -> CogVideoXTiling:
    return CogVideoXTiling.default(self.config)

  def tile_grid(self, tiling: CogVideoXTiling, kind: str, height: int, width: int) -> TileGrid | None:
    grid = _tile_grid(tiling, kind, self.spatial_compression)
    # diffusers tiles only an input larger than one tile.
    return grid if height > grid.tile[0] or width > grid.tile[1] else None

  def latents_for_decode(
    self, latents: jax.Array, vae_dtype: Any = None, scaling_factor: float | None = None
  ) -> jax.Array:
    """``1 / scaling_factor * latents`` (``scaling_factor``: default the config's, as the pipelines'
    ``vae_scaling_factor_image``) — a Python scalar times the tensor, in the tensor's dtype (the
    pipelines' ``decode_latents`` does not cast to the VAE's dtype first; ``vae_dtype`` is unused)."""
    del vae_dtype
    factor = float(self.config.scaling_factor if scaling_factor is None else scaling_factor)
    return latents * (1 / factor)

  def describe_latent_scaling(self, scaling_factor: float | None = None) -> str:
    return f"1/{self.config.scaling_factor if scaling_factor is None else scaling_factor:g}"

  def latents_from_encode(self, latents: jax.Array) -> jax.Array:
    """``latent_dist.sample() * scaling_factor``, permuted to ``(B, T, C, H, W)``, as diffusers'
    ``examples/cogvideo/train_cogvideox_lora.py`` caches them and ``CogVideoXImageToVideoPipeline``
    scales its image latents (CogVideoX 1.5's ``invert_scale_latents`` flips only that pipeline's
    image conditioning, not what ``decode_latents`` undoes)."""
    return jnp.swapaxes(latents * float(self.config.scaling_factor), 1, 2)
