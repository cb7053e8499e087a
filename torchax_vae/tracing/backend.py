"""Unmodified diffusers VAE modules as pure JAX step functions, through torchax: what every model shares.

Nothing of diffusers is patched or copied: a model's class is built from its config on the meta
device (``torchax_vae.tracing.models.<name>``), its parameters are swapped for JAX arrays at call time
(``JittableModule.functional_call``), sharding constraints and cache bookkeeping are added from
outside with forward hooks, a few ATen lowerings of torchax are replaced (:func:`install_op_overrides`),
each step is traced once more so that transposes travel with the data (``core.transposes``: the
program computes channels-last between its convolutions, as native_flax does), and the driver
(``core.driver``) jits and walks the steps.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core import conv as conv_lib
from ..core import mesh as mesh_lib
from ..core import norm as norm_lib
from ..core import resize as resize_lib
from ..core import transposes as transposes_lib
from ..core.driver import StepFunctions
from ..runtime.contract import CACHE_LAYOUT, LAYOUT
from ._torchax_compat import import_torchax

torchax = import_torchax()

import torch  # noqa: E402  (after torchax, which must be imported through the shim first)
from torchax import interop  # noqa: E402

# (vae module, input, conv cache | None) -> (output, conv cache): one frame step in torch terms.
TorchStep = Callable[[torch.nn.Module, torch.Tensor, Any], tuple[torch.Tensor, Any]]


def build_on_meta(cls: type[torch.nn.Module], config) -> torch.nn.Module:
  """``cls(**config.to_dict())`` on the meta device, in eval mode: structure and shapes, no memory."""
  with torch.device("meta"):
    module = cls(**config.to_dict())
  return module.eval()


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _torch_layout(v: jax.Array) -> jax.Array:
  """Inverse of :func:`~torchax_vae.runtime.weights.kernel_layout`: ``(*kernel, I, O)`` -> PyTorch's ``(O, I, *kernel)``."""
  return jnp.transpose(v, (v.ndim - 1, v.ndim - 2, *range(v.ndim - 2))) if v.ndim >= 4 else v


def add_sharding_hooks(module: torch.nn.Module, mesh, layers: tuple[type, ...]) -> list:
  """Constrains the video-shaped output of every ``layers`` module to (batch on dp, width on tp).

  From outside diffusers: GSPMD would propagate the input's sharding on its own, but ops that
  reshape (group norm, attention) can lose it; pinning each layer's output keeps the layout from
  drifting into replication. Outputs that are not 5-D ``(B, C, T, H, W)`` (per-frame 4-D tensors
  inside a block) are left to GSPMD.
  """
  sharding = mesh_lib.activation_sharding(mesh, LAYOUT)
  constrain = interop.torch_view(jax.lax.with_sharding_constraint)

  def pin(tensor):
    return constrain(tensor, sharding) if isinstance(tensor, torch.Tensor) and tensor.ndim == 5 else tensor

  def pin_output(_module, _args, output):
    if isinstance(output, tuple):  # (hidden_states, conv_cache)
      return (pin(output[0]),) + output[1:]
    return pin(output)

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


# --- Resize, then 1x1 convolution: convolved at the source's resolution -----------------------
#
# diffusers' CogVideoXSpatialNorm3D resizes the latent ``zq`` (16 channels) to the decoder's full
# resolution and then applies two 1x1x1 convolutions to it (16 -> up to 512 channels). Nearest
# resizing only copies pixels and a 1x1 convolution maps each pixel on its own, so the two orders
# give the same numbers; but in diffusers' order each convolution is a matmul whose (full
# resolution, 512-channel) output XLA must materialise, and on CPU it schedules them early and keeps
# them live: the first decode program of cogvideox-2b at latent 1,16,2,16,16 needed 2195 MB of
# scratch against native_flax's 627 MB (which convolves first, then resizes into the elementwise
# consumer). The resize lowering below records, for the trace being built, which source and which
# per-axis source indices each resized tensor came from (``torch.cat`` of such pieces along a
# resized axis too: SpatialNorm3D's odd-frame path); the 1x1 convolution lowering convolves that
# source instead and resizes the result. The recorded resize output is then unused and XLA drops it.


@dataclasses.dataclass(frozen=True)
class _Resized:
  """``value == _take_axes(source, indices)``: a nearest resize of ``source`` on axes 2, 3, ...."""

  value: jax.Array
  source: jax.Array
  indices: tuple[np.ndarray, ...]  # per axis from 2 on: the source index of each output index


# id(value) -> _Resized for the program being traced; None outside make_steps' steps (eager torchax
# use would keep every resized array alive). The entries hold their arrays, so no id is reused.
_RESIZED: contextvars.ContextVar[dict[int, _Resized] | None] = contextvars.ContextVar("_RESIZED", default=None)


@contextlib.contextmanager
def tracking_resizes():
  """While active, resized tensors are recorded so 1x1 convolutions of them run before the resize."""
  token = _RESIZED.set({})
  try:
    yield
  finally:
    _RESIZED.reset(token)


def _record_resize(value, source, indices) -> None:
  registry = _RESIZED.get()
  if registry is not None:
    registry[id(value)] = _Resized(value, source, tuple(indices))


def _resized(value) -> _Resized | None:
  registry = _RESIZED.get()
  entry = registry.get(id(value)) if registry is not None else None
  return entry if entry is not None and entry.value is value else None


def _take_axes(x, indices: Sequence[np.ndarray]):
  """``x`` resized by static source ``indices`` on axes 2, 3, ... (``core.resize``: repeats, not gathers)."""
  return resize_lib.take_axes(x, indices, range(2, 2 + len(indices)))


def _upsample_nearest_axis_by_axis(x, output_size, *scales, exact: bool = False):
  """``aten.upsample_nearest{1,2,3}d`` and (``exact``) ``aten._upsample_nearest_exact{1,2,3}d``, both
  the ``.vec`` and the per-axis-scales overloads.

  torchax lowers nearest resizing through a decomposition that gathers with computed indices
  (``_unsafe_index``); on a width-sharded input GSPMD all-gathers the input for that gather. Here
  each axis takes PyTorch's source index, ``min(floor(dst * scale), in - 1)`` (nearest) or
  ``min(floor((dst + 0.5) * scale), in - 1)`` (nearest-exact, Wan's ``WanUpsample``), computed in
  float32 as PyTorch does, and applies it axis by axis: an integer factor is a ``repeat`` along that
  axis alone (for both modes: with an integer factor r, ``floor((dst + 0.5) / r) == dst // r``),
  which keeps the width split. The result is recorded for :func:`_convolution_channels_last`.
  """
  spatial = x.shape[2:]
  if len(scales) == 1 and (scales[0] is None or isinstance(scales[0], list | tuple)):  # .vec overload
    per_axis = list(scales[0]) if scales[0] is not None else [None] * len(spatial)
  else:
    per_axis = list(scales) + [None] * (len(spatial) - len(scales))
  if output_size is None:
    output_size = [int(size * factor) for size, factor in zip(spatial, per_axis)]
  indices = []
  for size_in, size_out, factor in zip(spatial, output_size, per_axis):
    scale = np.float32(1.0 / factor if factor else size_in / size_out)
    repeats = size_out // size_in
    if size_out == size_in * repeats and scale * repeats == 1.0:
      indices.append(np.arange(size_out) // repeats)
    else:
      dst = np.arange(size_out, dtype=np.float32) + (np.float32(0.5) if exact else np.float32(0))
      indices.append(np.minimum(np.floor(dst * scale).astype(np.int64), size_in - 1))
  out = _take_axes(x, indices)
  _record_resize(out, x, indices)
  return out


def _cat_keeping_resizes(tensors, dim=0):
  """``aten.cat`` (torchax's lowering); a concatenation, along a resized axis, of resized tensors
  whose other axes match is recorded as one resize of the concatenated sources."""
  from torchax.ops import jaten

  out = jaten._aten_cat(tensors, dim)
  pieces = [_resized(t) for t in tensors]
  if not pieces or any(p is None for p in pieces):
    return out
  axis = dim % out.ndim
  ndim = {p.source.ndim for p in pieces}
  if axis < 2 or ndim != {out.ndim}:
    return out
  k = axis - 2
  rest = [i for i in range(out.ndim - 2) if i != k]
  first = pieces[0]
  if any(
    p.source.shape[:axis] + p.source.shape[axis + 1 :] != first.source.shape[:axis] + first.source.shape[axis + 1 :]
    or any(not np.array_equal(p.indices[i], first.indices[i]) for i in rest)
    for p in pieces
  ):
    return out
  offsets = np.cumsum([0] + [p.source.shape[axis] for p in pieces[:-1]])
  index = np.concatenate([p.indices[k] + offset for p, offset in zip(pieces, offsets)])
  source = jnp.concatenate([p.source for p in pieces], axis=axis)
  _record_resize(out, source, [index if i == k else first.indices[i] for i in range(out.ndim - 2)])
  return out


def _convolution_channels_last(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
  """``aten.convolution`` (2D and 3D, ungrouped, not transposed) for XLA's fast CPU convolution.

  * 1x1(x1) kernels, stride 1, no padding (SpatialNorm3D's ``conv_y``/``conv_b``, the resnet
    shortcuts) are one matmul ``(N, *S, I) . (O, I)``, channels-last like the others.
    If the input is a recorded nearest resize (SpatialNorm3D's ``zq``), the matmul runs on the
    resize's source and its result is resized (see :class:`_Resized`).
  * Everything else runs channels-last through :func:`core.conv.conv_channels_last` (shared with
    ``native_flax``): 3D in the platform's form (per-time-tap 2D convolutions on CPU, one 3D
    convolution elsewhere; ``TORCHAX_VAE_CONV``), 2D as one.

  Same products and sums as torchax's lowering, in another order (fp32 agrees to ~1e-6); other
  convolutions (transposed, grouped, unbatched, 1D) take torchax's lowering.
  """
  nd = weight.ndim - 2
  if transposed or groups != 1 or nd not in (2, 3) or input.ndim != weight.ndim:
    from torchax.ops import jaten

    return jaten._aten_convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
  stride, padding, dilation = (tuple(v) * nd if len(v) == 1 else tuple(v) for v in (stride, padding, dilation))
  if weight.shape[2:] == (1,) * nd and stride == (1,) * nd and padding == (0,) * nd:
    resized = _resized(input)
    source = jnp.moveaxis(resized.source if resized is not None else input, 1, -1)  # (N, *S, I)
    # (N, *S, O): contracts the channels, merges no axis (a width split stays one).
    out = jax.lax.dot_general(source, weight.reshape(weight.shape[:2]), (((nd + 1,), (1,)), ((), ())))
    if bias is not None:
      out = out + bias
    out = jnp.moveaxis(out, -1, 1)
    return _take_axes(out, resized.indices) if resized is not None else out
  x = jnp.moveaxis(input, 1, -1)
  kernel = jnp.transpose(weight, (*range(2, weight.ndim), 1, 0))  # (*kernel, I, O)
  return jnp.moveaxis(conv_lib.conv_channels_last(x, kernel, bias, stride, padding, dilation), -1, 1)


# --- Antialiased bilinear / bicubic resizing -----------------------------------------------
#
# torchax 0.0.13 lowers aten._upsample_bicubic2d_aa / _upsample_bilinear2d_aa through a JAX
# reimplementation of scale_and_translate that fails while tracing ("'tuple' object is not callable");
# transformers' DINOv2 (AutoencoderRAE's encoder) resizes its position embeddings with it. PyTorch's
# antialiased resize is separable: per axis, each output index is a normalised weighted sum of a
# window of inputs, the weights fixed by the sizes alone. They are computed here once per trace, as
# PyTorch computes them (aten/src/ATen/native/cpu/UpSampleKernel.cpp, _compute_indices_min_size_weights_aa),
# and applied as one small matmul per axis.

_AA_FILTERS = {
  # support (taps at scale 1), filter of the distance in input pixels
  "bilinear": (2, lambda x: np.maximum(0.0, 1.0 - np.abs(x))),
  # Keys' cubic with a = -0.5 (PyTorch's and PIL's choice for antialiasing)
  "bicubic": (
    4,
    lambda x: np.where(
      np.abs(x) < 1.0,
      ((-0.5 + 2.0) * np.abs(x) - (-0.5 + 3.0)) * np.abs(x) ** 2 + 1,
      np.where(np.abs(x) < 2.0, (((np.abs(x) - 5) * np.abs(x) + 8) * np.abs(x) - 4) * -0.5, 0.0),
    ),
  ),
}


def _aa_weights(size_in: int, size_out: int, align_corners: bool, scale: float | None, mode: str) -> np.ndarray:
  """``(size_out, size_in)`` weights of PyTorch's antialiased resize along one axis."""
  interp_size, filter_fn = _AA_FILTERS[mode]
  if align_corners:
    ratio = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
  else:
    ratio = 1.0 / scale if scale is not None and scale > 0 else size_in / size_out
  support = interp_size * 0.5 * ratio if ratio >= 1.0 else interp_size * 0.5
  invscale = 1.0 / ratio if ratio >= 1.0 else 1.0
  weights = np.zeros((size_out, size_in), np.float64)
  for i in range(size_out):
    center = ratio * (i + 0.5)
    xmin = max(int(center - support + 0.5), 0)
    xsize = min(int(center + support + 0.5), size_in) - xmin
    w = filter_fn((np.arange(xsize) + xmin - center + 0.5) * invscale)
    total = w.sum()
    weights[i, xmin : xmin + xsize] = w / total if total != 0 else w
  return weights


def _upsample_aa(input, output_size, align_corners, scales_h=None, scales_w=None, *, mode: str):
  """``aten._upsample_{bilinear,bicubic}2d_aa`` on ``(N, C, H, W)``: one weighted sum per axis."""
  h_in, w_in = input.shape[-2:]
  h_out, w_out = output_size
  wh = jnp.asarray(_aa_weights(h_in, h_out, align_corners, scales_h, mode), jnp.float32)
  ww = jnp.asarray(_aa_weights(w_in, w_out, align_corners, scales_w, mode), jnp.float32)
  precision = jax.lax.Precision.HIGHEST  # PyTorch sums in the input's precision; no TF32/bf16 passes
  x = jnp.einsum("...hw,Hh->...Hw", input.astype(jnp.float32), wh, precision=precision)
  x = jnp.einsum("...Hw,Ww->...HW", x, ww, precision=precision)
  return x.astype(input.dtype)


def _upsample_aa_vec(input, output_size, align_corners, scale_factors, *, mode: str):
  """The ``.vec`` overload: ``output_size`` or per-axis ``scale_factors``."""
  if output_size is None:
    output_size = [int(n * f) for n, f in zip(input.shape[-2:], scale_factors)]
  scales = list(scale_factors) if scale_factors is not None else [None, None]
  return _upsample_aa(input, output_size, align_corners, *scales, mode=mode)


def _linear(input, weight, bias=None):
  """``torch.nn.functional.linear`` as torchax computes it, under torch's own argument names:
  torchax 0.0.13 names its first argument ``self``, so ``F.linear(input=x, weight=w)`` (diffusers'
  MiniMax H3 audio encoder) fails "unexpected keyword argument 'input'"."""
  out = jnp.einsum("...a,ba->...b", input, weight)
  return out + bias if bias is not None else out


def _hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, pin_memory=None):
  """``aten.hann_window`` (torchax 0.0.13 has no lowering; Cosmos 3's audio encoder's STFT uses it):
  ATen's ``hamming_window(alpha=beta=0.5)``, ``0.5 - 0.5 cos(2 pi n / (N - 1))`` over N + 1 points
  cut to N when periodic, computed in the window's dtype as ATen does."""
  from torchax.ops import mappings

  del layout, device, pin_memory
  if isinstance(dtype, torch.dtype):
    dtype = mappings.t2j_dtype(dtype)
  dtype = jnp.float32 if dtype is None else dtype  # interop.torch_view hands over the JAX dtype
  if window_length == 0:
    return jnp.zeros((0,), dtype)
  if window_length == 1:
    return jnp.ones((1,), dtype)
  n = window_length + 1 if periodic else window_length
  window = jnp.arange(n, dtype=dtype) * jnp.asarray(2 * np.pi / (n - 1), dtype)
  window = jnp.cos(window) * jnp.asarray(-0.5, dtype) + jnp.asarray(0.5, dtype)
  return window[:window_length]


def install_op_overrides(env) -> None:
  """Replaces torchax lowerings that cost collectives or speed (see each function's docstring).

  Results equal PyTorch's (every torchax parity test runs through these), up to fp32 summation order.
  """
  env.override_op_definition(torch.ops.aten.native_group_norm, interop.torch_view(_group_norm_keeping_layout))
  for op in (torch.ops.aten.upsample_nearest1d, torch.ops.aten.upsample_nearest2d, torch.ops.aten.upsample_nearest3d):
    env.override_op_definition(op, interop.torch_view(_upsample_nearest_axis_by_axis))
  exact = interop.torch_view(functools.partial(_upsample_nearest_axis_by_axis, exact=True))
  for op in (
    torch.ops.aten._upsample_nearest_exact1d,
    torch.ops.aten._upsample_nearest_exact2d,
    torch.ops.aten._upsample_nearest_exact3d,
  ):
    env.override_op_definition(op, exact)
  env.override_op_definition(torch.ops.aten.convolution, interop.torch_view(_convolution_channels_last))
  env.override_op_definition(torch.nn.functional.linear, interop.torch_view(_linear))
  env.override_op_definition(torch.ops.aten.hann_window.default, interop.torch_view(_hann_window))
  env.override_op_definition(torch.ops.aten.hann_window.periodic, interop.torch_view(_hann_window))
  for mode in ("bilinear", "bicubic"):
    op = getattr(torch.ops.aten, f"_upsample_{mode}2d_aa")
    env.override_op_definition(op.default, interop.torch_view(functools.partial(_upsample_aa, mode=mode)))
    env.override_op_definition(op.vec, interop.torch_view(functools.partial(_upsample_aa_vec, mode=mode)))
  env.override_op_definition(torch.ops.aten.cat, interop.torch_view(_cat_keeping_resizes))


def make_steps(
  module: torch.nn.Module, decode_step: TorchStep, encode_step: TorchStep, *, conv3d_form: str, sink: bool
) -> StepFunctions:
  """Pure JAX ``decode_step``/``encode_step`` of (weights, input, conv_cache) for the driver.

  ``decode_step``/``encode_step`` are a model's frame steps in torch terms, called with the module
  (its parameters swapped for the JAX weights), the input chunk and the cache as torchax tensors;
  whatever pytree of tensors (and ``None``) they return as the cache comes back as JAX arrays.
  ``conv3d_form`` and ``sink`` are the ones in the programs' key (``runtime.adapters.fingerprint``),
  which the caller attaches: the steps are traced in that form, and through
  ``core.transposes.sink_transposes`` when ``sink`` (``$TORCHAX_VAE_SINK_TRANSPOSES``).

  Each step is traced with resizes recorded (:func:`tracking_resizes`, for SpatialNorm3D's 1x1
  convolutions).
  """
  env = torchax.default_env()
  install_op_overrides(env)
  jittable = interop.JittableModule(module, dedup_parameters=False)

  def as_jax(step):
    def pure(params: dict[str, jax.Array], inputs: jax.Array, conv_cache: Any, *condition: jax.Array):
      # JAX values in, torchax tensors through the unmodified torch code, JAX values out.
      # `condition`: the decode's inputs besides the latents (LTX's temb), passed on after the cache.
      params = {k: _torch_layout(v) for k, v in params.items()}  # kernels back to PyTorch's layout
      params_t, inputs_t, cache_t, condition_t = env.j2t_iso((params, inputs, conv_cache, condition))
      with env, torch.no_grad(), conv_lib.using_form(conv3d_form), tracking_resizes():
        out = jittable.functional_call(step, params_t, {}, inputs_t, cache_t, *condition_t)
      return env.t2j_iso(out)

    return pure

  if sink:  # (params, inputs, cache) -> (outputs, cache): the cache is held channels-last between steps
    carry = functools.partial(transposes_lib.sink_transposes, channels_last_args=(2,), channels_last_outputs=(1,))
  else:
    carry = lambda fn: fn  # noqa: E731
  return StepFunctions(
    layout=LAYOUT,
    decode_step=carry(as_jax(decode_step)),
    encode_step=carry(as_jax(encode_step)),
    cache_layout=CACHE_LAYOUT if sink else None,
  )
