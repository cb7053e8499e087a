"""An NNX port as pure JAX step functions for the shared driver (``torchax_vae.core.driver``).

``nnx.split`` runs once here; each step function ``nnx.merge``s the graph with the parameters it is
given, so under the driver's ``jax.jit`` the NNX object graph exists only while tracing and the
compiled program is a pure function of ``(params, inputs, conv_cache)``.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
from flax import nnx

from torchax_vae.core import conv as conv_lib
from torchax_vae.core import norm as norm_lib
from torchax_vae.core.driver import StepFunctions

from . import layers

LAYOUT = "BTHWC"


def make_steps(model: nnx.Module) -> tuple[nnx.State, StepFunctions]:
  """``(params, steps)``: the model's parameters (an ``nnx.State`` pytree) and its step functions.

  ``model`` is a port (``AutoencoderKLCogVideoX``, ``AutoencoderKLWan``) with ``decode_step`` and
  ``encode_step`` methods (one step of diffusers' ``_decode``/``_encode`` loop):

  * ``decode_step(params, z, conv_cache) -> (video, conv_cache)``: ``z`` ``(B, T_step, h, w, latent)``,
    ``conv_cache`` ``None`` on the first step; ``post_quant_conv`` (if any) then the decoder.
  * ``encode_step(params, x, conv_cache) -> (moments, conv_cache)``: ``x`` ``(B, F_step, H, W, in)``;
    the encoder then ``quant_conv`` (if any); moments are ``mean ‖ logvar`` on the last axis.
  """
  graphdef, params = nnx.split(model)
  conv3d_form = conv_lib.conv3d_form()  # fixed for this model's programs (and in their key)

  def decode_step(params: nnx.State, z: jax.Array, conv_cache: Any) -> tuple[jax.Array, Any]:
    with conv_lib.using_form(conv3d_form):
      return nnx.merge(graphdef, params).decode_step(z, conv_cache)

  def encode_step(params: nnx.State, x: jax.Array, conv_cache: Any) -> tuple[jax.Array, Any]:
    with conv_lib.using_form(conv3d_form):
      return nnx.merge(graphdef, params).encode_step(x, conv_cache)

  import flax

  from torchax_vae.core.executables import source_digest

  port = sys.modules[type(model).__module__]
  source = source_digest(sys.modules[__name__], port, layers, conv_lib, norm_lib)
  fingerprint = {"flax": flax.__version__, "source": source, "conv3d": conv3d_form}
  return params, StepFunctions(layout=LAYOUT, decode_step=decode_step, encode_step=encode_step, fingerprint=fingerprint)
