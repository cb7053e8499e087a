"""LTX-2 (``AutoencoderKLLTX2Video``, diffusers 0.42): LTX-Video's tiling and steps, LTX-2's blocks.

What differs from :mod:`.ltx_video` (whose tiling, frame tiles — a later decoded tile dropping its
last frame, encode's tiles following ``use_framewise_decoding`` — decode timestep and packed latents
it shares; diffusers' LTX-2 code is LTX's with a ``causal`` argument):

* the decoder is causal by default (``decoder_causal=True``) and its up blocks have an
  ``upsample_type`` (``spatial``, ``temporal``, ``spatiotemporal``): only the last two double time;
* the encoder's down blocks follow ``downsample_type`` (``spatial``: no time halving);
* ``decode(z, temb, causal)``: ``causal=None`` (the config's, what ``LTX2Pipeline`` passes) is the one
  this adapter runs; another value would be another program and is refused;
* ``LTX2Pipeline(output_type="latent")`` returns the video latents unpacked *and de-normalised*
  ``(B, C, T, H, W)``; its own decode mixes the decode noise into the still-normalised latents and
  de-normalises after: :meth:`LTX2Video.decode_timestep_inputs` re-normalises to mix, so that
  ``decode_latents`` of that output equals the pipeline's video.
* A streaming plan would be possible in principle for the causal decoder (per-position norms, causal
  convolutions, no attention), but its upsamplers drop the first frame of the whole call, so a
  step after the first is not the same program: not done; frame tiles as diffusers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from ..errors import CheckpointError
from .base import DiffusersConfig
from .ltx_video import TIME_HALVING, LTXCompression, LTXVideo, LTXVideoTiling

CLASS_NAME = "AutoencoderKLLTX2Video"
TIME_DOUBLING = ("temporal", "spatiotemporal")  # upsample types that double time
SPACE_SCALING = ("conv", "spatial", "spatiotemporal")  # down / up types that scale space


@dataclasses.dataclass(frozen=True)
class LTX2VideoVAEConfig(LTXCompression, DiffusersConfig):
  """The ``config.json`` of diffusers' ``AutoencoderKLLTX2Video``; defaults are diffusers'."""

  class_name: ClassVar[str] = CLASS_NAME

  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 128
  block_out_channels: tuple[int, ...] = (256, 512, 1024, 2048)
  down_block_types: tuple[str, ...] = ("LTX2VideoDownBlock3D",) * 4
  decoder_block_out_channels: tuple[int, ...] = (256, 512, 1024)
  layers_per_block: tuple[int, ...] = (4, 6, 6, 2, 2)
  decoder_layers_per_block: tuple[int, ...] = (5, 5, 5, 5)
  spatio_temporal_scaling: bool | tuple[bool, ...] = (True, True, True, True)
  decoder_spatio_temporal_scaling: bool | tuple[bool, ...] = (True, True, True)
  decoder_inject_noise: bool | tuple[bool, ...] = (False, False, False, False)
  downsample_type: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
  upsample_type: tuple[str, ...] = ("spatiotemporal", "spatiotemporal", "spatiotemporal")
  upsample_residual: bool | tuple[bool, ...] = (True, True, True)
  upsample_factor: tuple[int, ...] = (2, 2, 2)
  timestep_conditioning: bool = False
  patch_size: int = 4
  patch_size_t: int = 1
  resnet_norm_eps: float = 1e-6
  scaling_factor: float = 1.0
  encoder_causal: bool = True
  decoder_causal: bool = True
  encoder_spatial_padding_mode: str = "zeros"
  decoder_spatial_padding_mode: str = "reflect"
  spatial_compression_ratio: int | None = None
  temporal_compression_ratio: int | None = None

  def __post_init__(self):
    # diffusers: a bool stands for every block (encoder blocks: len(layers_per_block) - 1; decoder
    # blocks: len(decoder_layers_per_block) - 1)
    encoder, decoder = len(self.layers_per_block) - 1, len(self.decoder_layers_per_block) - 1
    if isinstance(self.spatio_temporal_scaling, bool):
      object.__setattr__(self, "spatio_temporal_scaling", (self.spatio_temporal_scaling,) * encoder)
    if isinstance(self.decoder_spatio_temporal_scaling, bool):
      object.__setattr__(self, "decoder_spatio_temporal_scaling", (self.decoder_spatio_temporal_scaling,) * decoder)

  def validate(self, source: str = "config") -> None:
    n, m = len(self.block_out_channels), len(self.decoder_block_out_channels)
    if len(self.spatio_temporal_scaling) < n or len(self.downsample_type) < n:
      raise CheckpointError(
        f"{source}: spatio_temporal_scaling and downsample_type must cover the {n} down blocks, got "
        f"{len(self.spatio_temporal_scaling)}, {len(self.downsample_type)}"
      )
    if len(self.decoder_spatio_temporal_scaling) < m or len(self.upsample_type) < m:
      raise CheckpointError(
        f"{source}: decoder_spatio_temporal_scaling and upsample_type must cover the {m} up blocks, got "
        f"{len(self.decoder_spatio_temporal_scaling)}, {len(self.upsample_type)}"
      )

  @property
  def encoder_time_halvings(self) -> int:
    blocks = list(zip(self.spatio_temporal_scaling, self.downsample_type))[: len(self.block_out_channels)]
    return sum(1 for scaling, kind in blocks if scaling and kind in TIME_HALVING)

  @property
  def decoder_time_doublings(self) -> int:
    blocks = list(zip(self.decoder_spatio_temporal_scaling, self.upsample_type))[: len(self.decoder_block_out_channels)]
    return sum(1 for scaling, kind in blocks if scaling and kind in TIME_DOUBLING)

  @property
  def decoder_space_doublings(self) -> int:
    blocks = list(zip(self.decoder_spatio_temporal_scaling, self.upsample_type))[: len(self.decoder_block_out_channels)]
    return sum(1 for scaling, kind in blocks if scaling and kind in SPACE_SCALING)


@dataclasses.dataclass(frozen=True)
class LTX2VideoTiling(LTXVideoTiling):
  """diffusers' tiling parameters (``AutoencoderKLLTX2Video.enable_tiling``): LTX's, 512/448 px, 16/8 frames."""


class LTX2Video(LTXVideo):
  name = "ltx2_video"
  class_name = CLASS_NAME
  config_class = LTX2VideoVAEConfig
  tiling_class = LTX2VideoTiling

  def default_tiling(self) -> LTX2VideoTiling:
    return LTX2VideoTiling()

  def decode_timestep_inputs(
    self, latents: jax.Array, decode_timestep: Any, decode_noise_scale: Any, noise: Any, *, buffers: dict | None = None
  ) -> tuple[jax.Array, Any]:
    """``LTX2Pipeline``: the noise is mixed into the *normalised* latents, which are de-normalised
    after; ``latents`` here are de-normalised (its ``output_type="latent"``), so they are normalised,
    mixed and de-normalised again."""
    if not self.config.timestep_conditioning:
      return latents, None
    normalised = self.normalised(latents, buffers)
    mixed, temb = super().decode_timestep_inputs(normalised, decode_timestep, decode_noise_scale, noise)
    return self.denormalised(mixed, buffers), temb

  def latents_for_decode(
    self, latents: jax.Array, vae_dtype: Any = None, scaling_factor: float | None = None, *, buffers: dict | None = None
  ) -> jax.Array:
    """``LTX2Pipeline``'s ``output_type="latent"`` output is de-normalised already: only ``.to(vae.dtype)``."""
    del buffers
    if scaling_factor is not None:
      raise ValueError("scaling_factor: LTX2Pipeline's latent output is already de-normalised; leave it unset")
    return latents if vae_dtype is None else latents.astype(vae_dtype)

  def describe_latent_scaling(self, scaling_factor: float | None = None) -> str:
    return "none (LTX2Pipeline's latent output is de-normalised)"
