"""``AutoencoderKLHunyuanVideo15`` through torchax: its one step in torch terms, and one override from outside.

diffusers' ``_decode`` is the decoder over all of the call's frames; ``_encode`` the encoder (neither
has a quant conv). There is no cache: the steps return ``None`` for it. The spatial tiles are the
driver's (``core.models.hunyuan_video15``).

The override: ``HunyuanVideo15AttnBlock.prepare_causal_attention_mask`` fills its ``(L, L)`` mask,
``L = T h w`` latent tokens, in a Python loop of ``L`` slice assignments — traced, ``L`` scatter ops
in the program (18 432 for 9 latent frames of 32x64). Each block's attribute is set, on the
instance, to a function that builds the same mask from a comparison of frame indices (one op, which
XLA fuses into the softmax). The mask it returns is ``(L, L)``: diffusers' ``(B, L, L)`` does not
broadcast against its ``(B, 1, L, L)`` scores for ``B > 1`` (diffusers raises), so a batch here
decodes each sample as diffusers' ``use_slicing`` does.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLHunyuanVideo15
from diffusers.models.autoencoders import autoencoder_kl_hunyuanvideo15 as hunyuan_video15

from .. import backend

# Outputs pinned to (batch on dp, width on tp) under a mesh: every conv and norm.
SHARDED_LAYERS = (hunyuan_video15.HunyuanVideo15CausalConv3d, hunyuan_video15.HunyuanVideo15RMS_norm)


def causal_attention_mask(n_frame: int, n_hw: int, dtype, device, batch_size: int | None = None) -> torch.Tensor:
  """diffusers' ``prepare_causal_attention_mask`` values, ``(L, L)``: 0 where the key's frame is not after
  the query's, ``-inf`` elsewhere (``batch_size`` unused: the mask broadcasts over batch and heads)."""
  del batch_size
  frame = torch.arange(n_frame * n_hw, device=device) // n_hw
  allowed = frame[None, :] <= frame[:, None]  # [query, key]
  return torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))


def override_attention_masks(module: torch.nn.Module) -> None:
  """Sets :func:`causal_attention_mask` on every attention block's instance (the class is untouched)."""
  for block in module.modules():
    if isinstance(block, hunyuan_video15.HunyuanVideo15AttnBlock):
      block.prepare_causal_attention_mask = causal_attention_mask


def decode_step(vae, z, conv_cache):
  """``AutoencoderKLHunyuanVideo15._decode`` without its tiling: (B, C, T, h, w) -> (B, 3, 1 + 4 (T - 1), 16h, 16w)."""
  del conv_cache  # always None: one step per call
  return vae.decoder(z), None


def encode_step(vae, x, conv_cache):
  """``_encode`` without its tiling: video (B, 3, F, H, W) -> moments (B, 2C, (F - 1) // 4 + 1, H/16, W/16)."""
  del conv_cache
  return vae.encoder(x), None


def module_and_steps(config):
  """``(module, decode_step, encode_step)`` for :class:`torchax_vae.runtime.adapters.TorchSide`."""
  module = backend.build_on_meta(AutoencoderKLHunyuanVideo15, config)
  override_attention_masks(module)
  return module, decode_step, encode_step
