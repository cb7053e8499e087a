"""Transposes carried with the data instead of computed: a JAX function re-traced so that a layout
change follows its value through the ops that do not care about axis order (torch-free).

Why. XLA:CPU lays every array out row-major in its *logical* shape (its layout assignment gives the
operands of every op other than convolutions and dots the default layout). torchax traces the
unmodified diffusers module in PyTorch's ``(B, C, T, H, W)``, while the convolutions run
channels-last (``core.conv``): each convolution's output is ``moveaxis``-ed to ``(B, C, T, H, W)``
and every group norm, elementwise op, causal-cache concatenation and slice after it is then stored
channels-first, written and read through transposing (strided) accesses, until the next
convolution moves it back. ``native_flax`` computes channels-last from end to end. Same FLOPs, same
bytes by XLA's count, but at the default benchmark shape (cogvideox-2b, fp32, latent 1,16,2,8,8)
torchax's decode took 4.51 s against native_flax's 3.64 s; the elementwise fusions at full
resolution took ~30 ms each against ~7-10 ms (XLA profile by op).

How. :func:`sink_transposes` traces the function to a jaxpr and evaluates it again, holding each
value as its *physical* array plus the permutation that relates it to the logical one. A
``transpose`` only changes the permutation; elementwise ops, reductions, slices, pads,
concatenations, splits, squeezes, broadcasts, reshapes that keep the permuted axes contiguous and
sharding constraints (their spec permuted) run on the physical array as it is; every other op (the
convolutions and dots themselves, gathers, ...) and the outputs get the logical array, i.e. one
transpose where the data really must change layout, which XLA folds into that op where it can.
The result is the same computation, op for op; only a reduction over axes now stored in another
order may sum in another order (float32: ~1e-6).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

Perm = tuple[int, ...]

ENV_VAR = "TORCHAX_VAE_SINK_TRANSPOSES"


def enabled() -> bool:
  """Whether torchax_vae's step programs are traced through :func:`sink_transposes`: yes on every
  platform (it only moves transposes; XLA still picks layouts), unless ``$TORCHAX_VAE_SINK_TRANSPOSES=0``
  (for measuring the program as torchax traces it). On TPU too, by the TPU compiler's counts
  (docs/tpu.md; Wan 2.1 bf16 steady step, one v6e chip, latent 32x20): 15.3 GB moved with it, 16.4 GB
  without, scratch 223 vs 274 MB, estimate 9.8 vs 10.5 ms."""
  value = os.environ.get(ENV_VAR, "1").strip().lower()
  if value not in ("0", "1", "false", "true", "off", "on", ""):
    raise ValueError(f"${ENV_VAR}={os.environ[ENV_VAR]!r}: expected 1 (default) or 0")
  return value in ("1", "true", "on", "")


# Ops that map each element on its own (operands of one shape, or scalars): any common layout will do.
ELEMENTWISE = frozenset({
  "abs", "add", "and", "atan2", "cbrt", "ceil", "clamp", "convert_element_type", "copy", "copy_p", "cos", "div",
  "eq", "erf", "erf_inv", "erfc", "exp", "exp2", "expm1", "floor", "ge", "gt", "integer_pow", "is_finite", "le",
  "log", "log1p", "logistic", "lt", "max", "min", "mul", "ne", "neg", "nextafter", "not", "or", "pow",
  "reduce_precision", "rem", "round", "rsqrt", "select_n", "sign", "sin", "sqrt", "square", "sub", "tan", "tanh",
  "xor",
})  # fmt: skip
REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                        "argmax", "argmin"})  # fmt: skip
# Primitives that call a sub-jaxpr (jit, custom derivatives, remat): evaluated inline, with the same rules.
CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
                   "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint"})  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Permuted:
  """A value held as ``physical``, where physical axis ``j`` is the logical value's axis ``perm[j]``."""

  physical: Any
  perm: Perm

  def logical(self):
    return jnp.transpose(self.physical, np.argsort(self.perm))


def _identity(perm: Sequence[int]) -> bool:
  return tuple(perm) == tuple(range(len(perm)))


def _held(physical, perm: Sequence[int]):
  """``physical`` itself for the identity permutation, else a :class:`Permuted`."""
  return physical if _identity(perm) else Permuted(physical, tuple(int(a) for a in perm))


def _logical(value):
  return value.logical() if isinstance(value, Permuted) else value


def _in_perm(value, perm: Perm):
  """``value``'s array laid out as ``perm`` (a transpose unless it is already)."""
  if isinstance(value, Permuted):
    if value.perm == perm:
      return value.physical
    value = value.logical()
  return jnp.transpose(value, perm)


def _renumbered(perm: Sequence[int], removed: Sequence[int]) -> Perm:
  """``perm`` without the axes ``removed``, the rest renumbered ``0 .. n-1`` in the same order."""
  removed = set(removed)
  return tuple(a - sum(r < a for r in removed) for a in perm if a not in removed)


def _place_new_axes(order: list[int], new_axes: Sequence[int], sizes: Sequence[int]) -> list[int]:
  """Inserts each new axis (ascending) into the physical ``order``: one of size 1 right before the
  smallest axis above it (``x[:, :, None]`` of a channels-last ``(B, C, H, W)`` becomes channels-last
  ``(B, C, 1, H, W)``), any other right after the largest axis below it (``repeat``'s new axis beside
  the one it repeats, so the reshape that merges them keeps the data in place); first if none."""
  for axis in sorted(new_axes):
    above = [i for i, a in enumerate(order) if a > axis]
    below = [i for i, a in enumerate(order) if a < axis]
    if sizes[axis] == 1 and above:
      at = min(above, key=lambda i: order[i])
    else:
      at = max(below, key=lambda i: order[i]) + 1 if below else 0
    order.insert(at, axis)
  return order


def _common_perm(invals) -> Perm:
  """The layout for an op over several operands: that of the largest carried operand (the others
  are transposed to it; a transpose that moves only size-1 axes costs nothing)."""
  carried = [v for v in invals if isinstance(v, Permuted)]
  return max(carried, key=lambda v: int(np.prod(v.physical.shape))).perm


# --- rules: (invals as held, params) -> outvals as held, or None to fall back ------------------


def _elementwise(eqn, invals):
  perm = _common_perm(invals)
  rank = len(perm)
  ranks = [len(_shape_of(v)) for v in invals]
  if any(r not in (0, rank) for r in ranks) or len(eqn.outvars[0].aval.shape) != rank:
    return None
  if eqn.params.get("sharding") is not None:  # an output sharding in logical terms
    return None
  operands = [_in_perm(v, perm) if r == rank else v for v, r in zip(invals, ranks)]
  out = eqn.primitive.bind(*operands, **eqn.params)
  return [_held(o, perm) for o in (out if eqn.primitive.multiple_results else [out])]


def _shape_of(value) -> tuple[int, ...]:
  if isinstance(value, Permuted):
    return tuple(value.physical.shape[i] for i in np.argsort(value.perm))
  return tuple(np.shape(value))


def _transpose(eqn, invals):
  (x,) = invals
  inverse = np.argsort(eqn.params["permutation"])
  source = x.perm if isinstance(x, Permuted) else tuple(range(np.ndim(x)))
  physical = x.physical if isinstance(x, Permuted) else x
  return [_held(physical, [inverse[a] for a in source])]


def _reduction(eqn, invals):
  (x,) = invals
  if eqn.params.get("out_sharding") is not None:  # in logical terms
    return None
  axes = tuple(eqn.params["axes"])
  physical_axes = tuple(sorted(x.perm.index(a) for a in axes))
  out = eqn.primitive.bind(x.physical, **{**eqn.params, "axes": physical_axes})
  return [_held(out, _renumbered(x.perm, axes))]


def _slice(eqn, invals):
  (x,) = invals
  p = eqn.params
  strides = p["strides"]
  out = jax.lax.slice(
    x.physical,
    [p["start_indices"][a] for a in x.perm],
    [p["limit_indices"][a] for a in x.perm],
    None if strides is None else [strides[a] for a in x.perm],
  )
  return [_held(out, x.perm)]


def _pad(eqn, invals):
  x, padding_value = invals
  if not isinstance(x, Permuted) or isinstance(padding_value, Permuted):
    return None
  config = eqn.params["padding_config"]
  return [_held(jax.lax.pad(x.physical, padding_value, [config[a] for a in x.perm]), x.perm)]


def _concatenate(eqn, invals):
  perm = _common_perm(invals)
  out = jax.lax.concatenate([_in_perm(v, perm) for v in invals], perm.index(eqn.params["dimension"]))
  return [_held(out, perm)]


def _split(eqn, invals):
  (x,) = invals
  outs = eqn.primitive.bind(x.physical, **{**eqn.params, "axis": x.perm.index(eqn.params["axis"])})
  return [_held(o, x.perm) for o in outs]


def _squeeze(eqn, invals):
  (x,) = invals
  dimensions = tuple(eqn.params["dimensions"])
  out = jax.lax.squeeze(x.physical, [x.perm.index(a) for a in dimensions])
  return [_held(out, _renumbered(x.perm, dimensions))]


def _broadcast_in_dim(eqn, invals):
  x = invals[0]
  p = eqn.params
  if len(invals) != 1 or p.get("sharding") is not None:
    return None
  shape, dims = tuple(p["shape"]), tuple(p["broadcast_dimensions"])
  order = _place_new_axes([dims[a] for a in x.perm], sorted(set(range(len(shape))) - set(dims)), shape)
  out = jax.lax.broadcast_in_dim(x.physical, [shape[a] for a in order], [order.index(dims[a]) for a in x.perm])
  return [_held(out, order)]


def _reshape(eqn, invals):
  (x,) = invals
  p = eqn.params
  if p.get("dimensions") is not None or p.get("sharding") is not None:
    return None
  order = _reshaped_order(_shape_of(x), tuple(p["new_sizes"]), x.perm)
  if order is None:
    return None
  new_sizes = p["new_sizes"]
  return [_held(jax.lax.reshape(x.physical, [new_sizes[a] for a in order]), order)]


def _reshaped_order(shape: tuple[int, ...], new_shape: tuple[int, ...], perm: Perm) -> list[int] | None:
  """The physical order of ``new_shape``'s axes for which reshaping the physical array (row-major)
  equals reshaping the logical one, or None. Axes of size > 1 fall into groups of equal size
  (merged or split together); each group's input axes must be adjacent and in order physically."""
  ins = [a for a in range(len(shape)) if shape[a] != 1]
  outs = [b for b in range(len(new_shape)) if new_shape[b] != 1]
  if not ins or not outs or 0 in shape:  # nothing to keep in place (or an empty array)
    return None
  groups: list[tuple[list[int], list[int]]] = []
  i = j = 0
  while i < len(ins):
    group_in, group_out = [ins[i]], [outs[j]]
    size_in, size_out = shape[ins[i]], new_shape[outs[j]]
    i, j = i + 1, j + 1
    while size_in != size_out:
      if size_in < size_out:
        group_in.append(ins[i])
        size_in *= shape[ins[i]]
        i += 1
      else:
        group_out.append(outs[j])
        size_out *= new_shape[outs[j]]
        j += 1
    groups.append((group_in, group_out))
  physical = [a for a in perm if shape[a] != 1]
  order: list[int] = []
  for group_in, group_out in groups:
    at = physical.index(group_in[0])
    if physical[at : at + len(group_in)] != group_in:
      return None
  for axis in physical:
    order.extend(next((g_out for g_in, g_out in groups if g_in[0] == axis), []))
  return _place_new_axes(order, [b for b in range(len(new_shape)) if new_shape[b] == 1], new_shape)


def _sharding_constraint(eqn, invals):
  (x,) = invals
  p = eqn.params
  sharding = p["sharding"]
  if not isinstance(sharding, jax.sharding.NamedSharding) or p.get("layout") is not None or p.get("unconstrained_dims"):
    return None
  if getattr(sharding.spec, "unreduced", None) or getattr(sharding.spec, "reduced", None):
    return None  # not carried over by a rebuilt PartitionSpec
  spec = tuple(sharding.spec) + (None,) * (len(x.perm) - len(sharding.spec))
  physical = jax.sharding.NamedSharding(
    sharding.mesh, jax.sharding.PartitionSpec(*[spec[a] for a in x.perm]), memory_kind=sharding.memory_kind
  )
  return [_held(eqn.primitive.bind(x.physical, **{**p, "sharding": physical}), x.perm)]


RULES: dict[str, Callable] = {
  "transpose": _transpose,
  "slice": _slice,
  "pad": _pad,
  "concatenate": _concatenate,
  "split": _split,
  "squeeze": _squeeze,
  "broadcast_in_dim": _broadcast_in_dim,
  "reshape": _reshape,
  "sharding_constraint": _sharding_constraint,
  **{name: _reduction for name in REDUCTIONS},
  **{name: _elementwise for name in ELEMENTWISE},
}


def _inner_jaxpr(params) -> tuple[Any, Sequence[Any]]:
  closed = params.get("jaxpr", params.get("call_jaxpr", params.get("fun_jaxpr")))
  if isinstance(closed, jex_core.ClosedJaxpr):
    return closed.jaxpr, closed.consts
  return closed, ()


def _evaluate(jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
  """``jax.core.eval_jaxpr`` with values held as :class:`Permuted` where a transpose was carried."""
  env: dict[Any, Any] = {}

  def read(v):
    return v.val if isinstance(v, jex_core.Literal) else env[v]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    outvals = None
    inner, inner_consts = _inner_jaxpr(eqn.params) if name in CALLS else (None, ())
    with eqn.ctx.manager:
      if inner is not None:
        outvals = _evaluate(inner, inner_consts, invals)
      elif name == "transpose" or any(isinstance(v, Permuted) for v in invals):
        rule = RULES.get(name)
        outvals = rule(eqn, invals) if rule is not None else None
      if outvals is None:  # the op as traced, on logical values
        bind_params = eqn.primitive.get_bind_params(eqn.params)
        subfuns, bind_params = bind_params if isinstance(bind_params, tuple) else ((), bind_params)  # jax < 0.9
        out = eqn.primitive.bind(*subfuns, *[_logical(v) for v in invals], **bind_params)
        outvals = out if eqn.primitive.multiple_results else [out]
    env.update(zip(eqn.outvars, outvals))
  return [read(v) for v in jaxpr.outvars]


def channels_last(rank: int) -> Perm:
  """``(B, C, *S)`` held as ``(B, *S, C)``."""
  return (0, *range(2, rank), 1)


def sink_transposes(
  fn: Callable, *, channels_last_args: Sequence[int] = (), channels_last_outputs: Sequence[int] = ()
) -> Callable:
  """``fn`` (a pure JAX function of pytrees of arrays), evaluated with transposes carried to the ops
  that need the logical layout (see the module docstring). Same results; call it under ``jax.jit``.
  For forward computation only: inner ``jit``s and custom derivatives are inlined (their shardings
  and derivative rules are not kept), so do not differentiate the result.

  ``channels_last_args`` / ``channels_last_outputs``: positions of the arguments / of the outputs
  (``fn`` returning a tuple) whose leaves of rank >= 3 are passed and returned physically
  channels-last, ``(B, *S, C)``, while ``fn`` sees them as ``(B, C, *S)``: e.g. a conv cache that a
  convolution reads and writes channels-last, so no step transposes it in or out.
  """
  channels_last_args, channels_last_outputs = set(channels_last_args), set(channels_last_outputs)

  def logical_view(arg):  # a channels-last argument, as fn sees it: (B, *S, C) -> (B, C, *S)
    def view(a):
      return jax.ShapeDtypeStruct((a.shape[0], a.shape[-1], *a.shape[1:-1]), a.dtype) if a.ndim >= 3 else a

    return jax.tree.map(view, arg)

  @functools.wraps(fn)
  def wrapped(*args):
    abstract = [logical_view(a) if i in channels_last_args else a for i, a in enumerate(args)]
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*abstract)
    held = [jax.tree.map(_as_carried, a) if i in channels_last_args else a for i, a in enumerate(args)]
    out = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(held, is_leaf=_is_carried))
    out = jax.tree.unflatten(jax.tree.structure(out_shape), out)
    if not channels_last_outputs:
      return jax.tree.map(_logical, out, is_leaf=_is_carried)
    return tuple(
      jax.tree.map(_channels_last if i in channels_last_outputs else _logical, o, is_leaf=_is_carried)
      for i, o in enumerate(out)
    )

  return wrapped


def _is_carried(value) -> bool:
  return isinstance(value, Permuted)


def _as_carried(array):
  """A channels-last physical array as the logical ``(B, C, *S)`` value it holds."""
  return _held(array, channels_last(array.ndim)) if array.ndim >= 3 else array


def _channels_last(value):
  """A value's array held channels-last (rank >= 3), whatever layout it was carried in."""
  rank = len(_shape_of(value))
  return _in_perm(value, channels_last(rank)) if rank >= 3 else _logical(value)
