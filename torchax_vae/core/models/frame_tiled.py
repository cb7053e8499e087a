"""What HunyuanVideo and LTX-Video share: one decoder (encoder) call per frame tile, no cache, and
diffusers' tiling attributes in sample pixels and frames.

diffusers' ``AutoencoderKLHunyuanVideo`` and ``AutoencoderKLLTXVideo`` tile the same way (LTX's code
is HunyuanVideo's): ``enable_tiling(tile_sample_min_height, tile_sample_min_width,
tile_sample_min_num_frames, tile_sample_stride_height, tile_sample_stride_width,
tile_sample_stride_num_frames)``; spatial tiles of ``min`` every ``stride`` sample pixels (``min //
s`` latent pixels every ``stride // s``), blended over ``min - stride`` and keeping ``stride``,
cropped to the untiled size; frame tiles (``use_framewise_decoding``) of ``min // r + 1`` latent
frames every ``stride // r`` (``min + 1`` sample frames every ``stride`` for encode), blended over
``min - stride`` output frames, keeping ``stride`` (``stride + 1`` of the first), each frame tile
tiled spatially when tiling is on. They differ in which frame a later decoded tile drops (HunyuanVideo
its first, LTX its last), in which flag switches encode's frame tiles (LTX reads
``use_framewise_decoding`` there too) and in their defaults.

Why no streaming plan (a cache between steps, as for CogVideoX): HunyuanVideo's GroupNorms take
statistics over all of a call's frames and its mid-block attention is causal over all of them; LTX's
decoder convolutions are not causal (``decoder_causal=False``: each frame sees the next). Either way a
step's output depends on frames a cache of past inputs does not hold, so each tile is one step.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ..tiling import TemporalTiles, TileGrid
from .base import DECODE, ENCODE, FrameStep, TilingSettings, VideoVAE, plan_from_ranges


@dataclasses.dataclass(frozen=True)
class FrameTiling(TilingSettings):
  """``enable_tiling``'s arguments, in diffusers' order (sample pixels and frames); defaults HunyuanVideo's."""

  tile_sample_min_height: int = 256
  tile_sample_min_width: int = 256
  tile_sample_min_num_frames: int = 16
  tile_sample_stride_height: int = 192
  tile_sample_stride_width: int = 192
  tile_sample_stride_num_frames: int = 12


class OneStepVAE(VideoVAE):
  """A diffusers video VAE whose decode (encode) is one decoder (encoder) call over all of a call's
  frames, with no cache: HunyuanVideo, LTX, HunyuanVideo 1.5. The driver's frame tiles and spatial
  tiles, when the model has them, each run that one step."""

  @property
  def spatial_compression(self) -> int:
    """diffusers' ``spatial_compression_ratio`` (default: the config's, as HunyuanVideo's and 1.5's)."""
    return self.config.spatial_compression_ratio

  @property
  def temporal_compression(self) -> int:
    """diffusers' ``temporal_compression_ratio`` attribute (the unit of frame-tile sizes, where any;
    default: the config's)."""
    return self.config.temporal_compression_ratio

  def decode_plan(self, num_latent_frames: int) -> list[FrameStep]:
    return plan_from_ranges([(0, num_latent_frames)])

  def encode_plan(self, num_frames: int) -> list[FrameStep]:
    return plan_from_ranges([(0, num_frames)])

  def module_attributes(self) -> dict:
    # The pipelines' vae_scale_factor_spatial / _temporal come from these module attributes.
    return {"spatial_compression_ratio": self.spatial_compression, "temporal_compression_ratio": self.temporal_compression}


class FrameTiledVAE(OneStepVAE):
  """A diffusers video VAE that decodes each call (or frame tile) in one step, tiled as above."""

  # Which end of a later decoded frame tile diffusers drops a frame from (HunyuanVideo: the start,
  # ``decoded[:, :, 1:]``; LTX: the end, ``decoded[:, :, :-1]``).
  decode_drops_last: ClassVar[bool] = False
  # Whether encode's frame tiles follow use_framewise_decoding (LTX's _encode reads that flag) rather
  # than use_framewise_encoding.
  encode_follows_decoding_flag: ClassVar[bool] = False

  def encoded_num_frames(self, num_frames: int) -> int:
    """Latent frames the encoder makes of ``num_frames`` sample frames."""
    raise NotImplementedError

  def tile_grid(self, tiling: FrameTiling, kind: str, height: int, width: int) -> TileGrid | None:
    """diffusers' ``tiled_decode``/``tiled_encode``; ``height``/``width`` as the caller gave them
    (latent pixels for decode, sample pixels for encode)."""
    minimum = (tiling.tile_sample_min_height, tiling.tile_sample_min_width)
    stride = (tiling.tile_sample_stride_height, tiling.tile_sample_stride_width)
    comp = self.spatial_compression
    latent_min = (minimum[0] // comp, minimum[1] // comp)
    latent_stride = (stride[0] // comp, stride[1] // comp)
    if kind == DECODE:
      if not (height > latent_min[0] or width > latent_min[1]):
        return None
      grid = dict(tile=latent_min, stride=latent_stride, blend=(minimum[0] - stride[0], minimum[1] - stride[1]),
                  keep=stride, crop=(height * comp, width * comp))  # fmt: skip
    else:
      if not (height > minimum[0] or width > minimum[1]):
        return None
      grid = dict(tile=minimum, stride=stride, blend=(latent_min[0] - latent_stride[0], latent_min[1] - latent_stride[1]),
                  keep=latent_stride, crop=(height // comp, width // comp))  # fmt: skip
    try:
      return TileGrid(**grid)
    except ValueError as err:
      raise ValueError(f"tiling {tiling}: {err}") from None

  def temporal_tiles(self, tiling: FrameTiling, kind: str, num_frames: int, *, framewise: bool) -> TemporalTiles | None:
    """diffusers' ``_temporal_tiled_decode``/``_temporal_tiled_encode``, taken when ``framewise`` and
    the input has more frames than a tile's minimum (module docstring)."""
    r = self.temporal_compression
    sample_min, sample_stride = tiling.tile_sample_min_num_frames, tiling.tile_sample_stride_num_frames
    latent_min, latent_stride = sample_min // r, sample_stride // r
    if kind == DECODE:
      if not framewise or num_frames <= latent_min:
        return None
      spec = dict(tile=latent_min + 1, stride=latent_stride, out_frames=self.decoded_num_frames, blend=sample_min - sample_stride,
                  keep=sample_stride, total=(num_frames - 1) * r + 1, drop_last=self.decode_drops_last)  # fmt: skip
    else:
      if not framewise or num_frames <= sample_min:
        return None
      spec = dict(tile=sample_min + 1, stride=sample_stride, out_frames=self.encoded_num_frames,
                  blend=latent_min - latent_stride, keep=latent_stride, total=(num_frames - 1) // r + 1, drop_last=False)  # fmt: skip
    try:
      return TemporalTiles.over(num_frames, drop=1, keep_first=spec["keep"] + 1, **spec)
    except ValueError as err:
      raise ValueError(f"tiling {tiling}: {err}") from None

  def framewise_flag(self, kind: str) -> str:
    """The runner attribute that switches ``kind``'s frame tiles (diffusers' attribute of that name)."""
    if kind == ENCODE and not self.encode_follows_decoding_flag:
      return "use_framewise_encoding"
    return "use_framewise_decoding"
