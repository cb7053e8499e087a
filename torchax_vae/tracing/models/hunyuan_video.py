"""``AutoencoderKLHunyuanVideo`` through torchax: its one step in torch terms.

diffusers' ``_decode`` (and each frame tile of ``_temporal_tiled_decode``) is ``post_quant_conv`` then
the decoder over all of the call's frames; ``_encode`` the encoder then ``quant_conv``. There is no
cache: the steps return ``None`` for it. The frame tiles, their blend and the spatial tiles are the
driver's (``core.models.hunyuan_video``).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLHunyuanVideo
from diffusers.models.autoencoders import autoencoder_kl_hunyuan_video as hunyuan_video

from .. import backend

# Outputs pinned to (batch on dp, width on tp) under a mesh: every conv and norm.
SHARDED_LAYERS = (hunyuan_video.HunyuanVideoCausalConv3d, torch.nn.GroupNorm)


def decode_step(vae, z, conv_cache):
  """``AutoencoderKLHunyuanVideo._decode`` without its tiling: (B, C, T, h, w) -> (B, 3, 1 + 4 (T - 1), 8h, 8w)."""
  del conv_cache  # always None: one step per call
  return vae.decoder(vae.post_quant_conv(z)), None


def encode_step(vae, x, conv_cache):
  """``_encode`` without its tiling: video (B, 3, F, H, W) -> moments (B, 2C, (F - 1) // 4 + 1, H/8, W/8)."""
  del conv_cache
  return vae.quant_conv(vae.encoder(x)), None


def module_and_steps(config):
  """``(module, decode_step, encode_step)`` for :class:`torchax_vae.runtime.adapters.TorchSide`."""
  return backend.build_on_meta(AutoencoderKLHunyuanVideo, config), decode_step, encode_step
