"""LTX-Video 0.9.x (``AutoencoderKLLTXVideo``, diffusers 0.42): what the driver needs to know of it.

* Decode: the decoder over the latents in one call, with the decode timestep ``temb`` (``(B,)``)
  where ``timestep_conditioning`` (0.9.1 on); diffusers' default (``use_framewise_decoding = False``)
  is that one call whatever T — the adapter's default too. With ``use_framewise_decoding`` diffusers
  decodes frame tiles of ``tile_sample_min_num_frames // 8 + 1`` latent frames every
  ``tile_sample_stride_num_frames // 8`` (3 every 1 by default: 16 and 8 sample frames), drops the
  *last* decoded frame of every later tile, blends 8 frames and keeps 8 (:mod:`.frame_tiled`: one
  program per tile length). Encode's frame tiles follow the same ``use_framewise_decoding`` flag
  (diffusers' ``_encode`` reads it), 17 sample frames every 8.
* No streaming plan: the decoder's convolutions are not causal (:mod:`.frame_tiled`).
* Frames: ``(T - 1) * 2**k + 1`` with k the decoder's spatio-temporal up blocks (8 for 0.9.x: 16 ->
  121), times ``patch_size_t``; encode: ``(F - 1) // 2 + 1`` per time-halving down block after the
  ``patch_size_t`` patching (121 -> 16).
* The encoder and decoder patchify / unpatchify inside their own forward (``patch_size`` 4): nothing
  before encode or after decode.
* ``decoder_inject_noise`` (0.9.1) draws ``torch.randn`` inside the decoder with no generator: in
  diffusers each decode draws new noise; traced through torchax the draw comes from torchax's key
  when the program is traced, fixed in that program. Neither can equal the other.
* ``LTXPipeline`` / ``LTXImageToVideoPipeline`` return packed ``(B, S, D)`` latents with
  ``output_type="latent"``; the VAE gets them unpacked to ``(B, C, T, H, W)`` and de-normalised,
  ``latents * latents_std / scaling_factor + latents_mean`` — the statistics are the VAE's
  *buffers* (weights), not config — then, for a timestep-conditioned decoder, mixed with noise
  (``decode_noise_scale``) and decoded at ``decode_timestep``. :func:`torchax_vae.pipeline` does this.
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

CLASS_NAME = "AutoencoderKLLTXVideo"
TIME_HALVING = ("conv", "temporal", "spatiotemporal")  # LTX 0.9.5 down block types that halve time


class LTXCompression:
  """diffusers' ``spatial_compression_ratio`` / ``temporal_compression_ratio`` attributes of LTX-Video
  and LTX-2 (tiling's units): the config's, else ``patch_size * 2**k`` / ``patch_size_t * 2**k``, k the
  encoder's scaling blocks."""

  @property
  def spatial_compression(self) -> int:
    """diffusers' ``spatial_compression_ratio`` attribute (tiling's unit): the config's, else ``patch_size * 2**k``."""
    if self.spatial_compression_ratio is not None:
      return self.spatial_compression_ratio
    return self.patch_size * 2 ** sum(self.spatio_temporal_scaling)

  @property
  def temporal_compression(self) -> int:
    if self.temporal_compression_ratio is not None:
      return self.temporal_compression_ratio
    return self.patch_size_t * 2 ** sum(self.spatio_temporal_scaling)


@dataclasses.dataclass(frozen=True)
class LTXVideoVAEConfig(LTXCompression, DiffusersConfig):
  """The ``config.json`` of diffusers' ``AutoencoderKLLTXVideo``; defaults are diffusers' (LTX-Video 0.9.0's VAE)."""

  class_name: ClassVar[str] = CLASS_NAME

  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 128
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  down_block_types: tuple[str, ...] = ("LTXVideoDownBlock3D",) * 4
  decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)
  decoder_layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)
  spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
  decoder_spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
  decoder_inject_noise: tuple[bool, ...] = (False, False, False, False, False)
  downsample_type: tuple[str, ...] = ("conv", "conv", "conv", "conv")
  upsample_residual: tuple[bool, ...] = (False, False, False, False)
  upsample_factor: tuple[int, ...] = (1, 1, 1, 1)
  timestep_conditioning: bool = False
  patch_size: int = 4
  patch_size_t: int = 1
  resnet_norm_eps: float = 1e-6
  scaling_factor: float = 1.0
  encoder_causal: bool = True
  decoder_causal: bool = False
  spatial_compression_ratio: int | None = None
  temporal_compression_ratio: int | None = None

  @property
  def encoder_blocks(self) -> int:
    """Down blocks diffusers builds: one per ``block_out_channels`` entry (0.9.5's blocks: one fewer)."""
    return len(self.block_out_channels) - (1 if self.down_block_types[-1:] == ("LTXVideo095DownBlock3D",) else 0)

  def validate(self, source: str = "config") -> None:
    n = self.encoder_blocks
    if n < 1 or len(self.down_block_types) < n or len(self.spatio_temporal_scaling) < n or len(self.layers_per_block) < n:
      raise CheckpointError(
        f"{source}: the encoder has {n} down blocks (block_out_channels {self.block_out_channels}); down_block_types, "
        f"spatio_temporal_scaling and layers_per_block must cover them, got "
        f"{len(self.down_block_types)}, {len(self.spatio_temporal_scaling)}, {len(self.layers_per_block)}"
      )
    m = len(self.decoder_block_out_channels)
    if m == 0 or len(self.decoder_spatio_temporal_scaling) != m or len(self.decoder_layers_per_block) != m + 1:
      raise CheckpointError(
        f"{source}: decoder_block_out_channels, decoder_spatio_temporal_scaling and decoder_layers_per_block (one "
        f"more, the mid block) must have one entry per up block, got {m}, {len(self.decoder_spatio_temporal_scaling)}, "
        f"{len(self.decoder_layers_per_block)}"
      )

  @property
  def decoder_time_doublings(self) -> int:
    """Up blocks that double time (``2T - 1``): every spatio-temporal one (LTX-2: by its ``upsample_type``)."""
    return sum(self.decoder_spatio_temporal_scaling)

  @property
  def decoder_space_doublings(self) -> int:
    return sum(self.decoder_spatio_temporal_scaling)

  @property
  def encoder_time_halvings(self) -> int:
    """Down blocks that halve time: every scaling block of LTX 0.9.0/0.9.1 (``LTXVideoDownBlock3D``:
    a stride-2 convolution), those of a time-halving ``downsample_type`` for 0.9.5's blocks."""
    count = 0
    blocks = zip(self.down_block_types, self.spatio_temporal_scaling, self.downsample_type)
    for block, scaling, kind in list(blocks)[: self.encoder_blocks]:
      if scaling and (block != "LTXVideo095DownBlock3D" or kind in TIME_HALVING):
        count += 1
    return count


@dataclasses.dataclass(frozen=True)
class LTXVideoTiling(FrameTiling):
  """diffusers' tiling parameters (``AutoencoderKLLTXVideo.enable_tiling``): 512/448 px, 16/8 frames."""

  tile_sample_min_height: int = 512
  tile_sample_min_width: int = 512
  tile_sample_min_num_frames: int = 16
  tile_sample_stride_height: int = 448
  tile_sample_stride_width: int = 448
  tile_sample_stride_num_frames: int = 8


class LTXVideo(FrameTiledVAE):
  name = "ltx_video"
  class_name = CLASS_NAME
  config_class = LTXVideoVAEConfig
  tiling_class = LTXVideoTiling
  pipeline_layout = "BCTHW"  # unpacked; the pipelines' packed (B, S, D) latents: torchax_vae.pipeline
  scales_by_factor = True
  framewise_decoding = False  # diffusers: use_framewise_decoding = use_framewise_encoding = False
  framewise_encoding = False
  decode_drops_last = True  # diffusers' _temporal_tiled_decode: decoded[:, :, :-1]
  encode_follows_decoding_flag = True  # diffusers' _encode: `if self.use_framewise_decoding and ...`
  module_buffers = ("latents_mean", "latents_std")  # read by the pipelines as vae.latents_mean / latents_std

  @property
  def spatial_compression(self) -> int:
    return self.config.spatial_compression

  @property
  def temporal_compression(self) -> int:
    return self.config.temporal_compression

  def decoded_num_frames(self, num_latent_frames: int) -> int:
    # each time-doubling up block: depth-to-space doubles time, then drops the first frame (2T - 1)
    t = (num_latent_frames - 1) * 2**self.config.decoder_time_doublings + 1
    return t * self.config.patch_size_t

  def decoded_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, ...]:
    b, _, t, h, w = latent_shape
    s = self.config.patch_size * 2**self.config.decoder_space_doublings
    return (b, self.config.out_channels, self.decoded_num_frames(t), h * s, w * s)

  def encoded_num_frames(self, num_frames: int) -> int:
    f = num_frames // self.config.patch_size_t
    for _ in range(self.config.encoder_time_halvings):
      f = (f - 1) // 2 + 1
    return f

  def encodable_num_frames(self, num_frames: int) -> int:
    r = self.config.patch_size_t * 2**self.config.encoder_time_halvings
    return 0 if num_frames < 1 else 1 + r * ((num_frames - 1) // r)

  def check_sample(self, x: jax.Array, name: str) -> None:
    p, pt = self.config.patch_size, self.config.patch_size_t
    _, _, f, h, w = x.shape
    if h % p or w % p or f % pt:
      raise ValueError(f"{name}: the encoder patchifies by {pt}x{p}x{p} (frames x height x width): got shape {tuple(x.shape)}")

  def default_tiling(self) -> LTXVideoTiling:
    return LTXVideoTiling()

  # --- the decode timestep ---------------------------------------------------------------------------

  def decode_condition(self, temb: Any, batch: int) -> tuple:
    """``(temb,)`` as ``(B,)`` for a timestep-conditioned decoder (required, as in diffusers, whose
    decoder multiplies it); a scalar is taken for every sample. Without timestep conditioning diffusers
    ignores ``temb``, and so does this."""
    if not self.config.timestep_conditioning:
      return ()
    if temb is None:
      raise ValueError(
        "temb: this LTX-Video VAE is timestep-conditioned (timestep_conditioning=True, 0.9.1 on): decode(z, temb) "
        "needs the decode timestep, one per sample (LTXPipeline's decode_timestep, default 0.0)"
      )
    if hasattr(temb, "detach"):  # a torch tensor
      temb = temb.detach().cpu().float().numpy()
    values = np.asarray(temb, np.float32).reshape(-1)
    if values.size == 1:
      values = np.repeat(values, batch)
    if values.size != batch:
      raise ValueError(f"temb: expected one decode timestep per sample ({batch}) or one for all, got {values.size}")
    return (values,)

  def decode_condition_example(self, batch: int) -> Any:
    return np.zeros(batch, np.float32) if self.config.timestep_conditioning else None

  # --- pipelines -------------------------------------------------------------------------------------

  def latents_for_decode(
    self, latents: jax.Array, vae_dtype: Any = None, scaling_factor: float | None = None, *, buffers: dict | None = None
  ) -> jax.Array:
    """``LTXPipeline._denormalize_latents``: ``latents * latents_std / scaling_factor + latents_mean``,
    statistics (the VAE's buffers, ``buffers``) cast to the latents' dtype, then ``.to(vae.dtype)``."""
    latents = self.denormalised(latents, buffers, scaling_factor)
    return latents if vae_dtype is None else latents.astype(vae_dtype)

  def denormalised(self, latents: jax.Array, buffers: dict | None, scaling_factor: float | None = None) -> jax.Array:
    """``_denormalize_latents``: ``latents * latents_std / scaling_factor + latents_mean``."""
    mean, std = self._statistics(buffers, latents.dtype)
    factor = float(self.config.scaling_factor if scaling_factor is None else scaling_factor)
    full = lambda v: jnp.broadcast_to(v, latents.shape)  # noqa: E731  (XLA would rewrite `/ scalar` as `* (1 / scalar)`)
    return _denormalize(latents, full(std), jnp.full(latents.shape, factor, latents.dtype), full(mean))

  def normalised(self, latents: jax.Array, buffers: dict | None) -> jax.Array:
    """``_normalize_latents``: ``(latents - latents_mean) * scaling_factor / latents_std``."""
    mean, std = self._statistics(buffers, latents.dtype)
    factor = jnp.full(latents.shape, float(self.config.scaling_factor), latents.dtype)
    return _normalize(latents, jnp.broadcast_to(mean, latents.shape), factor, jnp.broadcast_to(std, latents.shape))

  def unpack_latents(self, latents: jax.Array, video_shape: tuple[int, int, int] | None) -> jax.Array:
    """``LTXPipeline._unpack_latents`` (transformer patch sizes 1, as every LTX-Video release): packed
    ``(B, S, C)`` tokens, ``S = T * h * w`` for a video of ``video_shape = (frames, height, width)``
    (the pipeline's ``num_frames``, ``height``, ``width``), -> ``(B, C, T, h, w)``; 5-D latents pass."""
    if latents.ndim == 5:
      return latents
    if latents.ndim != 3 or video_shape is None:
      raise ValueError(
        f"latents: LTX pipelines return packed (B, S, C) latents (unpacked: (B, C, T, H, W)); a packed one needs "
        f"the video's (num_frames, height, width) to unpack it, got shape {tuple(latents.shape)} and video_shape {video_shape}"
      )
    frames, height, width = video_shape
    t = (frames - 1) // self.temporal_compression + 1
    h, w = height // self.spatial_compression, width // self.spatial_compression
    b, tokens, channels = latents.shape
    if tokens != t * h * w or channels != self.latent_channels:
      raise ValueError(
        f"latents: a {frames}x{height}x{width} video has {t}x{h}x{w} = {t * h * w} latent tokens of {self.latent_channels} "
        f"channels, got shape {tuple(latents.shape)}"
      )
    return jnp.moveaxis(latents.reshape(b, t, h, w, channels), -1, 1)

  def decode_timestep_inputs(
    self, latents: jax.Array, decode_timestep: Any, decode_noise_scale: Any, noise: Any, *, buffers: dict | None = None
  ) -> tuple[jax.Array, Any]:
    """``LTXPipeline`` after de-normalising: a timestep-conditioned decoder gets ``temb =
    decode_timestep`` (per sample; default 0.0) and latents ``(1 - s) * latents + s * noise`` with ``s
    = decode_noise_scale`` (default: the timestep); ``noise``: ``randn`` of the latents' shape (the
    pipeline draws it with its generator). Without timestep conditioning: unchanged, no temb."""
    del buffers
    if not self.config.timestep_conditioning:
      return latents, None
    b = latents.shape[0]
    per_sample = lambda v: np.broadcast_to(np.asarray(v, np.float64).reshape(-1), (b,))  # noqa: E731
    timestep = per_sample(0.0 if decode_timestep is None else decode_timestep)
    scale = timestep if decode_noise_scale is None else per_sample(decode_noise_scale)
    scale = jnp.asarray(scale.reshape(b, 1, 1, 1, 1), latents.dtype)
    mixed = _mix(latents, jnp.asarray(noise, latents.dtype), jnp.broadcast_to(scale, latents.shape))
    return mixed, jnp.asarray(timestep, latents.dtype)

  def describe_latent_scaling(self, scaling_factor: float | None = None) -> str:
    return f"* latents_std / {self.config.scaling_factor if scaling_factor is None else scaling_factor:g} + latents_mean"

  def latents_from_encode(self, latents: jax.Array, *, buffers: dict | None = None) -> jax.Array:
    """``LTXPipeline._normalize_latents``, as ``LTXImageToVideoPipeline`` normalises its condition
    latents (unpacked, ``(B, C, T, H, W)``)."""
    return self.normalised(latents, buffers)

  def _statistics(self, buffers: dict | None, dtype) -> tuple[jax.Array, jax.Array]:
    if buffers is None or "latents_mean" not in buffers or "latents_std" not in buffers:
      raise ValueError(
        f"{self.class_name}'s pipelines de-normalise with the VAE's latents_mean/latents_std buffers (weights, not "
        "config): pass the runner's (torchax_vae.decode_latents does)"
      )
    shape = (1, self.latent_channels, 1, 1, 1)
    as_latents = lambda v: jnp.asarray(np.asarray(v, np.float32).reshape(shape)).astype(dtype)  # noqa: E731
    return as_latents(buffers["latents_mean"]), as_latents(buffers["latents_std"])


@jax.jit
def _denormalize(latents, std, factor, mean):
  return latents * std / factor + mean


@jax.jit
def _mix(latents, noise, scale):
  return (1 - scale) * latents + scale * noise


@jax.jit
def _normalize(latents, mean, factor, std):
  return (latents - mean) * factor / std
