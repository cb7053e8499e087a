"""``AutoencoderKLLTX2Video`` (LTX-2) through torchax: its one step in torch terms.

diffusers' ``_decode`` (and each frame tile) is ``decoder(z, temb, causal=None)``, ``causal=None``
being the config's ``decoder_causal``; ``_encode`` is ``encoder(x)``. No cache: the steps return
``None`` for it. Frame tiles, blending and spatial tiles are the driver's (``core.models.ltx2_video``).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLLTX2Video
from diffusers.models.autoencoders import autoencoder_kl_ltx2 as ltx2

from .. import backend

# Outputs pinned to (batch on dp, width on tp) under a mesh: every convolution.
SHARDED_LAYERS = (ltx2.LTX2VideoCausalConv3d, torch.nn.Conv3d)


def decode_step(vae, z, conv_cache, temb=None):
  """``AutoencoderKLLTX2Video._decode`` without its tiling: (B, C, T, h, w) [, temb (B,)] -> video."""
  del conv_cache  # always None: one step per call
  return vae.decoder(z, temb), None


def encode_step(vae, x, conv_cache):
  """``_encode`` without its tiling: video (B, 3, F, H, W) -> moments."""
  del conv_cache
  return vae.encoder(x), None


def module_and_steps(config):
  """``(module, decode_step, encode_step)`` for :class:`torchax_vae.runtime.adapters.TorchSide`."""
  return backend.build_on_meta(AutoencoderKLLTX2Video, config), decode_step, encode_step
