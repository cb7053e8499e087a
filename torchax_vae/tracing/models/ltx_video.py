"""``AutoencoderKLLTXVideo`` (LTX-Video 0.9.x) through torchax: its one step in torch terms.

diffusers' ``_decode`` (and each frame tile of ``_temporal_tiled_decode``) is ``decoder(z, temb)``;
``_encode`` is ``encoder(x)`` (the encoder patchifies and returns the moments itself). No cache: the
steps return ``None`` for it. Frame tiles, blending and spatial tiles are the driver's
(``core.models.ltx_video``).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLLTXVideo
from diffusers.models.autoencoders import autoencoder_kl_ltx as ltx

from .. import backend

# Outputs pinned to (batch on dp, width on tp) under a mesh: every causal (or not) convolution.
SHARDED_LAYERS = (ltx.LTXVideoCausalConv3d, torch.nn.Conv3d)


def decode_step(vae, z, conv_cache, temb=None):
  """``AutoencoderKLLTXVideo._decode`` without its tiling: (B, C, T, h, w) [, temb (B,)] -> video."""
  del conv_cache  # always None: one step per call
  return vae.decoder(z, temb), None


def encode_step(vae, x, conv_cache):
  """``_encode`` without its tiling: video (B, 3, F, H, W) -> moments (B, 2C, T, H/32, W/32)."""
  del conv_cache
  return vae.encoder(x), None


def module_and_steps(config):
  """``(module, decode_step, encode_step)`` for :class:`torchax_vae.runtime.adapters.TorchSide`."""
  return backend.build_on_meta(AutoencoderKLLTXVideo, config), decode_step, encode_step
