"""``AutoencoderKLCogVideoX`` through torchax: hooks from outside, and its frame steps in torch terms.

diffusers' own ``_decode``/``_encode`` loops call ``decoder(z_chunk, conv_cache=...)`` /
``encoder(x_chunk, conv_cache=...)`` and thread the returned ``conv_cache`` dict; the steps here are
exactly one iteration of those loops (plus ``post_quant_conv``/``quant_conv``), the dict passed in and
returned as a value.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLCogVideoX
from diffusers.models.autoencoders import autoencoder_kl_cogvideox as cogvideox

from .. import backend


def build_module(config) -> torch.nn.Module:
  """The diffusers module on the meta device: structure and shapes, no memory for 215M weights."""
  module = backend.build_on_meta(AutoencoderKLCogVideoX, config)
  drop_unread_caches(module)
  return module


def drop_unread_caches(module: torch.nn.Module) -> list:
  """Makes time-kernel-1 causal convs return ``None`` as their conv cache.

  diffusers' ``CogVideoXCausalConv3d`` with ``time_kernel_size == 1`` returns its whole input as
  the "cache" and never reads it back. Carrying it would make the steady step's input shapes depend
  on the first step's frame count (3 latent frames for odd T, else 2), i.e. a second steady program.
  ``None`` is exactly what diffusers reads in its place (the cache is ignored for kernel 1).
  """

  def drop_cache(_module, _args, output):
    return output[0], None

  return [
    m.register_forward_hook(drop_cache)
    for m in module.modules()
    if isinstance(m, cogvideox.CogVideoXCausalConv3d) and m.time_kernel_size == 1
  ]


# Outputs pinned to (batch on dp, width on tp) under a mesh: every conv and norm.
SHARDED_LAYERS = (cogvideox.CogVideoXCausalConv3d, cogvideox.CogVideoXSpatialNorm3D, torch.nn.GroupNorm)


def decode_step(vae, z, conv_cache):
  """One iteration of ``AutoencoderKLCogVideoX._decode``'s loop: (B, C, T_step, h, w) -> video chunk."""
  if vae.post_quant_conv is not None:
    z = vae.post_quant_conv(z)
  return vae.decoder(z, conv_cache=conv_cache)


def encode_step(vae, x, conv_cache):
  """One iteration of ``_encode``'s loop, then ``quant_conv``: video chunk -> moments (mean ‖ logvar)."""
  h, conv_cache = vae.encoder(x, conv_cache=conv_cache)
  if vae.quant_conv is not None:
    h = vae.quant_conv(h)
  return h, conv_cache


def module_and_steps(config):
  """``(module, decode_step, encode_step)`` for :class:`torchax_vae.runtime.adapters.TorchSide`."""
  return build_module(config), decode_step, encode_step
