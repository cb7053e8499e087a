"""``AutoencoderKLWan`` (Wan 2.1 / 2.2) through torchax: its frame steps with the cache as a value.

diffusers' ``_decode`` keeps the causal-conv cache on the module (``self._feat_map``, a list with one
slot per ``WanCausalConv3d``) and lets every layer mutate it in place, with a ``feat_idx=[i]``
counter saying whose slot is next. Here each step call gets a fresh list — all ``None`` on the first
step, else the values the previous step returned — and a fresh ``[0]`` counter, runs one iteration
of diffusers' loop on the unmodified module, and returns the list's contents: no module attribute
is read or written, and the compiled program is a pure function of (weights, chunk, cache).

The cache a step returns is made the same shape on every step, so that one steady program serves
steps 2, 3, … (a third program would otherwise be needed: diffusers' cache changes shape between
the second and third step):

* every slot holds the last ``CACHE_T`` (2) frames of a conv's input, zero frames in front where
  fewer exist. That is what diffusers computes with: a causal conv pads its input with zeros to
  ``CACHE_T`` frames before the cache (``padding[4] -= cache_x.shape[2]``), and only the last cached
  frame is ever prepended to a short chunk; ``downsample3d`` reads the last frame alone.
* on the first chunk (``first_chunk=True``) diffusers' ``upsample3d`` skips its time conv and stores
  the marker ``"Rep"`` instead of a tensor; on the next step "Rep" means "pad with zero frames". A
  zero tensor of ``CACHE_T`` frames gives the same numbers (the same zeros, concatenated instead of
  padded), so the marker is replaced by one; its shape is the upsampler's input, recorded by a
  forward pre-hook while the first step traces.
"""

from __future__ import annotations

import contextvars
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders import autoencoder_kl_wan as wan

from .. import backend

CACHE_T = wan.CACHE_T  # frames each cache slot holds
_FIRST_CHUNK_MARKER = "Rep"  # what diffusers' upsample3d stores on the first chunk

# While a step runs: {slot: input} of each upsample3d that is about to store the marker.
_markers: contextvars.ContextVar[dict[int, torch.Tensor] | None] = contextvars.ContextVar(
  "wan_first_chunk_markers", default=None
)

# Outputs pinned to (batch on dp, width on tp) under a mesh (5-D outputs only; see add_sharding_hooks).
SHARDED_LAYERS = (
  wan.WanCausalConv3d,
  wan.WanRMS_norm,
  wan.WanResample,
  wan.WanResidualBlock,
  wan.WanAttentionBlock,
  wan.AvgDown3D,
  wan.DupUp3D,
)


def build_module(config) -> torch.nn.Module:
  """The diffusers module on the meta device, with the hooks the steps need (see each hook)."""
  module = backend.build_on_meta(AutoencoderKLWan, config)
  for layer in module.modules():
    if isinstance(layer, wan.WanResample) and layer.mode == "upsample3d":
      layer.register_forward_pre_hook(_record_marker, with_kwargs=True)
    if isinstance(layer, wan.WanUpsample):
      layer.register_forward_hook(_cast_back)
  return module


def _cast_back(layer, args, output):
  """``WanUpsample`` resizes in float32 and returns ``.type_as(x)``. torchax 0.0.13's ``Tensor.type_as``
  casts the JAX value in place but keeps the tensor's torch dtype (set when it was made), so in
  bfloat16 the next ``conv2d`` fails torch's own check ("Input type (float) and bias type
  (c10::BFloat16) should be the same"). ``.to(dtype)`` sees the value's dtype and returns the same
  tensor; ``clone`` makes a new one whose torch dtype is its value's (XLA elides the copy)."""
  return output.clone() if output.dtype != torch.float32 else output


def conv_slots(coder: torch.nn.Module) -> int:
  """Cache slots of an encoder/decoder: one per ``WanCausalConv3d`` (diffusers' ``_cached_conv_counts``)."""
  return sum(isinstance(m, wan.WanCausalConv3d) for m in coder.modules())


def _record_marker(layer, args, kwargs):
  markers = _markers.get()
  feat_cache, feat_idx = kwargs.get("feat_cache"), kwargs.get("feat_idx")
  if markers is not None and feat_cache is not None and feat_cache[feat_idx[0]] is None:
    markers[feat_idx[0]] = args[0] if args else kwargs["x"]


def _steady_cache(feat_cache: list, markers: dict) -> tuple:
  """The cache as the steady program takes it: every tensor slot ``CACHE_T`` frames, markers as zeros."""
  out = []
  for slot, value in enumerate(feat_cache):
    if value is None:  # a conv that keeps no cache (shortcuts, 1x1x1 quant convs)
      out.append(None)
    elif isinstance(value, str):
      assert value == _FIRST_CHUNK_MARKER, value
      b, c, _, h, w = markers[slot].shape
      out.append(markers[slot].new_zeros((b, c, CACHE_T, h, w)))  # new_zeros: a tensor of the input's kind
    else:
      value = value[:, :, -CACHE_T:]
      missing = CACHE_T - value.shape[2]
      out.append(F.pad(value, (0, 0, 0, 0, missing, 0)) if missing else value)
  return tuple(out)


def _run_coder(coder, x, feat_cache, slots: int, **kwargs):
  """One call of ``coder`` (encoder or decoder) on a chunk with a fresh cache list and counter."""
  first = feat_cache is None
  cache = [None] * slots if first else list(feat_cache)
  markers: dict = {}
  token = _markers.set(markers)
  try:
    out = coder(x, feat_cache=cache, feat_idx=[0], **kwargs)
  finally:
    _markers.reset(token)
  return out, _steady_cache(cache, markers)


def make_frame_steps(module: torch.nn.Module):
  """``(decode_step, encode_step)`` in torch terms: one iteration of ``_decode``'s / ``_encode``'s loop."""
  decoder_slots, encoder_slots = conv_slots(module.decoder), conv_slots(module.encoder)

  def decode_step(vae, z, feat_cache: Any):
    # _decode: post_quant_conv (1x1x1, no cache) on the latents, then the decoder on one frame.
    x = vae.post_quant_conv(z)
    return _run_coder(vae.decoder, x, feat_cache, decoder_slots, first_chunk=feat_cache is None)

  def encode_step(vae, x, feat_cache: Any):
    # _encode: the encoder on frame 0, then 4 frames a step; quant_conv (1x1x1) is per frame.
    h, cache = _run_coder(vae.encoder, x, feat_cache, encoder_slots)
    return vae.quant_conv(h), cache

  return decode_step, encode_step


def module_and_steps(config):
  """``(module, decode_step, encode_step)`` for :class:`torchax_vae.runtime.adapters.TorchSide`."""
  module = build_module(config)
  return (module, *make_frame_steps(module))
