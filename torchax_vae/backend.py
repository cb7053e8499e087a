"""The unmodified diffusers ``AutoencoderKLCogVideoX`` as pure JAX step functions, through torchax.

Nothing of diffusers is patched or copied: the class is built from the config, its parameters are
swapped for JAX arrays at call time (``JittableModule.functional_call``), sharding constraints are
added from outside with forward hooks, and the driver (``core.driver``) jits and walks the steps.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._torchax_compat import import_torchax
from .core import conv as conv_lib
from .core import mesh as mesh_lib
from .core import norm as norm_lib
from .core.checkpoint import CogVideoXVAEConfig
from .core.driver import DTYPES, StepFunctions

torchax = import_torchax()

import torch  # noqa: E402  (after torchax, which must be imported through the shim first)
from diffusers import AutoencoderKLCogVideoX  # noqa: E402
from diffusers.models.autoencoders import autoencoder_kl_cogvideox as cogvideox  # noqa: E402
from torchax import interop  # noqa: E402

LAYOUT = "BCTHW"


def build_module(config: CogVideoXVAEConfig) -> torch.nn.Module:
  """The diffusers module on the meta device: structure and shapes, no memory for 215M weights."""
  with torch.device("meta"):
    module = AutoencoderKLCogVideoX(**config.to_dict())
  module.eval()
  drop_unread_caches(module)
  return module


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def place_weights(weights: dict[str, np.ndarray], dtype: str, mesh=None) -> dict[str, jax.Array]:
  """numpy (PyTorch layout) -> ``jax.Array`` in ``dtype``, replicated over the mesh if one is given.

  Convolution kernels (every parameter of rank >= 4) are stored channels-last, ``(*kernel, I, O)``
  instead of PyTorch's ``(O, I, *kernel)``; the step functions hand PyTorch's layout to the torch
  code (:func:`_torch_layout`). Inside the compiled program that transpose meets the one
  :func:`_convolution_channels_last` applies and XLA cancels the pair, so no kernel is transposed
  at run time (transposing the decoder's 477 MB of kernels cost ~0.3 s per CPU decode).
  """
  target = DTYPES[dtype]
  sharding = mesh_lib.replicated(mesh)
  # mesh_lib.put: on a mesh over several processes each fills its own devices, with no cross-process check.
  return {k: mesh_lib.put(_kernel_layout(np.asarray(v)).astype(target), sharding) for k, v in weights.items()}


def _kernel_layout(v):
  """PyTorch ``(O, I, *kernel)`` -> ``(*kernel, I, O)`` for rank >= 4 (convolution kernels); else ``v``."""
  return v.transpose(*range(2, v.ndim), 1, 0) if v.ndim >= 4 else v


def _torch_layout(v: jax.Array) -> jax.Array:
  """Inverse of :func:`_kernel_layout`: ``(*kernel, I, O)`` -> PyTorch's ``(O, I, *kernel)``."""
  return jnp.transpose(v, (v.ndim - 1, v.ndim - 2, *range(v.ndim - 2))) if v.ndim >= 4 else v


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


def add_sharding_hooks(module: torch.nn.Module, mesh) -> list:
  """Constrains every conv and norm output to (batch on dp, width on tp), from outside diffusers.

  GSPMD would propagate the input's sharding on its own, but ops that reshape (group norm) can
  lose it; pinning each layer's output keeps the layout from drifting into replication.
  """
  sharding = mesh_lib.activation_sharding(mesh, LAYOUT)
  constrain = interop.torch_view(jax.lax.with_sharding_constraint)

  def pin_output(_module, _args, output):
    if isinstance(output, tuple):  # (hidden_states, conv_cache)
      return (constrain(output[0], sharding),) + output[1:]
    return constrain(output, sharding)

  layers = (cogvideox.CogVideoXCausalConv3d, cogvideox.CogVideoXSpatialNorm3D, torch.nn.GroupNorm)
  return [m.register_forward_hook(pin_output) for m in module.modules() if isinstance(m, layers)]


def _group_norm_keeping_layout(x, weight, bias, n, c, hxw, group, eps):
  """``aten.native_group_norm`` that splits only the channel axis, computed channels-last.

  torchax 0.0.13 lowers group norm by reshaping to ``(1, N*G, -1)`` and ``lax.map``-ing over the
  groups. That merges the (sharded) width axis into one flat axis, so GSPMD must all-gather every
  normalised activation, and the map runs the groups one after another. Here the channel axis is
  moved last and split into ``(G, C/G)``; T, H and W stay as they are (a width split stays a width
  split) and all groups reduce at once. Channels-last because the input is almost always the output
  of :func:`_convolution_channels_last`, i.e. ``moveaxis(conv_nhwc, -1, 1)``: XLA cancels the two
  moves and the statistics and the normalisation read the convolution's output in its own layout
  (~0.2 s of a CPU decode) instead of through a transposing access.
  Statistics are taken in float32, as PyTorch does for reduced-precision inputs.
  """
  del n, c, hxw  # implied by x's shape
  out, mean, rstd = norm_lib.group_norm_channels_last(jnp.moveaxis(x, 1, -1), group, eps)
  if weight is not None:
    out = out * weight.astype(jnp.float32)
  if bias is not None:
    out = out + bias.astype(jnp.float32)
  out = jnp.moveaxis(out, -1, 1)
  return out.astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


def _upsample_nearest_axis_by_axis(x, output_size, *scales):
  """``aten.upsample_nearest{1,2,3}d`` (both the ``.vec`` and the per-axis-scales overloads).

  torchax lowers nearest resizing through a decomposition that gathers with computed indices
  (``_unsafe_index``); on a width-sharded input GSPMD all-gathers the input for that gather. Here an
  integer factor is a ``repeat`` along that axis alone, which keeps the width split; other factors
  take PyTorch's nearest index ``min(floor(dst * scale), in - 1)`` axis by axis.
  """
  spatial = x.shape[2:]
  if len(scales) == 1 and (scales[0] is None or isinstance(scales[0], list | tuple)):  # .vec overload
    per_axis = list(scales[0]) if scales[0] is not None else [None] * len(spatial)
  else:
    per_axis = list(scales) + [None] * (len(spatial) - len(scales))
  if output_size is None:
    output_size = [int(size * factor) for size, factor in zip(spatial, per_axis)]
  for i, (size_in, size_out, factor) in enumerate(zip(spatial, output_size, per_axis)):
    axis = 2 + i
    scale = 1.0 / factor if factor else size_in / size_out
    repeats = size_out // size_in
    if size_out == size_in * repeats and scale * repeats == 1.0:
      x = jnp.repeat(x, repeats, axis=axis) if repeats > 1 else x
    else:
      index = jnp.floor(jnp.arange(size_out, dtype=jnp.float32) * jnp.float32(scale)).astype(jnp.int32)
      x = jnp.take(x, jnp.minimum(index, size_in - 1), axis=axis)
  return x


def _convolution_channels_last(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
  """``aten.convolution`` (2D and 3D, ungrouped, not transposed) for XLA's fast CPU convolution.

  * 1x1(x1) kernels, stride 1, no padding (SpatialNorm3D's ``conv_y``/``conv_b``, the resnet
    shortcuts) are one matmul ``(O, I) . (N, I, *S)`` in the channels-first layout: no transpose.
  * Everything else runs channels-last, 3D as the sum over the kernel's time taps of per-frame 2D
    convolutions (why: :mod:`torchax_vae.core.conv`, shared with ``native_flax``), 2D as one.

  Same products and sums as torchax's lowering, in another order (fp32 agrees to ~1e-6); other
  convolutions (transposed, grouped, unbatched, 1D) take torchax's lowering.
  """
  nd = weight.ndim - 2
  if transposed or groups != 1 or nd not in (2, 3) or input.ndim != weight.ndim:
    from torchax.ops import jaten

    return jaten._aten_convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
  stride, padding, dilation = (tuple(v) * nd if len(v) == 1 else tuple(v) for v in (stride, padding, dilation))
  if weight.shape[2:] == (1,) * nd and stride == (1,) * nd and padding == (0,) * nd:
    # (O, N, *S), then N first: a bitcast for N == 1. No axis is merged (a width split stays one).
    out = jax.lax.dot_general(weight.reshape(weight.shape[:2]), input, (((1,), (1,)), ((), ())))
    out = jnp.swapaxes(out, 0, 1)
    if bias is not None:
      out = out + bias.reshape(-1, *(1,) * nd)
    return out
  x = jnp.moveaxis(input, 1, -1)
  kernel = jnp.transpose(weight, (*range(2, weight.ndim), 1, 0))  # (*kernel, I, O)
  return jnp.moveaxis(conv_lib.conv_channels_last(x, kernel, bias, stride, padding, dilation), -1, 1)


def install_op_overrides(env) -> None:
  """Replaces torchax lowerings that cost collectives or speed (see each function's docstring).

  Results equal PyTorch's (every torchax parity test runs through these), up to fp32 summation order.
  """
  env.override_op_definition(torch.ops.aten.native_group_norm, interop.torch_view(_group_norm_keeping_layout))
  for op in (torch.ops.aten.upsample_nearest1d, torch.ops.aten.upsample_nearest2d, torch.ops.aten.upsample_nearest3d):
    env.override_op_definition(op, interop.torch_view(_upsample_nearest_axis_by_axis))
  env.override_op_definition(torch.ops.aten.convolution, interop.torch_view(_convolution_channels_last))


def make_steps(module: torch.nn.Module) -> StepFunctions:
  """Pure JAX ``decode_step``/``encode_step`` of (weights, input, conv_cache) for the driver."""
  env = torchax.default_env()
  install_op_overrides(env)
  jittable = interop.JittableModule(module, dedup_parameters=False)

  def decode_step(vae, z, conv_cache):
    if vae.post_quant_conv is not None:
      z = vae.post_quant_conv(z)
    return vae.decoder(z, conv_cache=conv_cache)

  def encode_step(vae, x, conv_cache):
    h, conv_cache = vae.encoder(x, conv_cache=conv_cache)
    if vae.quant_conv is not None:
      h = vae.quant_conv(h)
    return h, conv_cache

  def as_jax(step):
    def pure(params: dict[str, jax.Array], inputs: jax.Array, conv_cache: Any):
      # JAX values in, torchax tensors through the unmodified torch code, JAX values out.
      params = {k: _torch_layout(v) for k, v in params.items()}  # kernels back to PyTorch's layout
      params_t, inputs_t, cache_t = env.j2t_iso((params, inputs, conv_cache))
      with env, torch.no_grad():
        out = jittable.functional_call(step, params_t, {}, inputs_t, cache_t)
      return env.t2j_iso(out)

    return pure

  import diffusers

  from . import _torchax_compat
  from .core.executables import source_digest

  fingerprint = {
    "torch": torch.__version__,
    "torchax": torchax.__version__,
    "diffusers": diffusers.__version__,
    "source": source_digest(sys.modules[__name__], _torchax_compat, conv_lib, norm_lib, cogvideox),
  }
  return StepFunctions(
    layout=LAYOUT, decode_step=as_jax(decode_step), encode_step=as_jax(encode_step), fingerprint=fingerprint
  )
