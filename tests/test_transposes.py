"""core.transposes (transposes carried to the ops that need them) and core.resize (nearest resizes as
slices and repeats): same values as the plain program, and they do what they are for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn

from torchax_vae.core import resize, transposes


def _layout_sensitive(x, w, k):
  """Every rule of core.transposes once: a channels-last conv, its output moved to channels-first,
  then elementwise ops, a repeat (broadcast + reshape), slices, concatenation, pad, reductions,
  split, a (B*T) reshape, squeeze, a gather and a dot (those two take the logical layout)."""
  y = jax.lax.conv_general_dilated(x, k, (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  y = jnp.moveaxis(y, -1, 1)  # (B, C, T, H, W), as torchax holds it
  y = jax.nn.silu(y * w[None, :, None, None, None] + 1.0)
  y = jnp.repeat(y, 2, axis=3)
  y = jnp.concatenate([y[:, :, :1], y], axis=2)
  y = jnp.pad(y, ((0, 0), (0, 0), (1, 0), (0, 0), (0, 0)))
  y = y - jnp.mean(y, axis=(2, 3, 4), keepdims=True)
  a, b = jnp.split(y, 2, axis=1)
  frames = jnp.transpose(a, (0, 2, 1, 3, 4)).reshape(-1, *a.shape[1:2], *a.shape[3:])  # (B*T, C, H, W)
  frames = frames[:, None].squeeze(1)
  gathered = jnp.take(b, jnp.array([0, 2]), axis=4)
  mixed = jnp.einsum("bcthw,c->bthw", y, w)
  z = jax.lax.conv_general_dilated(
    jnp.moveaxis(y, 1, -1), k, (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
  )
  return frames, gathered, mixed, jnp.max(y, axis=1), jnp.clip(y, -1, 1).astype(jnp.bfloat16), z


def _inputs():
  x, w, k = randn(2, 3, 4, 5, 6), randn(6, seed=1), randn(3, 3, 3, 6, 6, seed=2) / 9  # (B, T, H, W, C), (C,), DHWIO
  return jnp.asarray(x), jnp.asarray(w), jnp.asarray(k)


def test_sink_transposes_gives_the_same_values():
  """Same ops on the same values; a reduction over physically reordered axes may sum in another
  order (float32: up to ~1e-6 here), which can move a bfloat16 rounding by one step."""
  want = jax.jit(_layout_sensitive)(*_inputs())
  got = jax.jit(transposes.sink_transposes(_layout_sensitive))(*_inputs())
  for a, b in zip(want, got, strict=True):
    assert a.shape == b.shape and a.dtype == b.dtype
    tol = 1e-5 if a.dtype == jnp.float32 else 2**-7
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol, rtol=0)


def _transposes_in(fn, *args) -> list:
  """The transpose equations of ``fn``'s jaxpr (inner jaxprs included), as their output shapes."""

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "transpose":
        yield tuple(eqn.outvars[0].aval.shape)
      for value in eqn.params.values():
        inner = getattr(value, "jaxpr", value)  # ClosedJaxpr or Jaxpr
        if hasattr(inner, "eqns"):
          yield from walk(inner)

  return list(walk(jax.make_jaxpr(fn)(*args).jaxpr))


def test_sink_transposes_moves_data_only_where_an_op_needs_it():
  """The two channels-last <-> channels-first moves around the elementwise chain are gone; what is
  left is one per op that reads the logical layout (the (B*T) reshape, the gather's and the dot's
  operands) and none of them at the full size between the two convolutions."""
  args = _inputs()
  plain = _transposes_in(_layout_sensitive, *args)
  carried = _transposes_in(transposes.sink_transposes(_layout_sensitive), *args)
  conv_out, next_conv_in = (2, 6, 3, 4, 5), (2, 5, 8, 5, 6)  # (B, C, T, H, W), (B, T', H', W', C)
  assert conv_out in plain and next_conv_in in plain
  assert conv_out not in carried and next_conv_in not in carried

  def conv_norm_conv(x, w, k):  # what a resnet block is between two convolutions, in torch's layout
    dims = ("NDHWC", "DHWIO", "NDHWC")
    y = jnp.moveaxis(jax.lax.conv_general_dilated(x, k, (1, 1, 1), "SAME", dimension_numbers=dims), -1, 1)
    y = (y - jnp.mean(y, axis=(2, 3, 4), keepdims=True)) * w[None, :, None, None, None]
    y = jnp.concatenate([y[:, :, :1], jax.nn.silu(y)], axis=2)  # the causal cache's first frame
    return jax.lax.conv_general_dilated(jnp.moveaxis(y, 1, -1), k, (1, 1, 1), "SAME", dimension_numbers=dims)

  assert len(_transposes_in(conv_norm_conv, *args)) == 2
  carried = _transposes_in(transposes.sink_transposes(conv_norm_conv), *args)
  # none left but those of the weight (1, 6, 1, 1, 1) and the mean (2, 6, 1, 1, 1): bitcasts for XLA
  assert all(sorted(shape)[-2] == 1 or sorted(shape)[-2] == 2 and np.prod(shape) == 12 for shape in carried), carried


@pytest.mark.parametrize(
  ("shape", "new_shape", "perm", "expected"),
  [
    ((2, 3, 4), (6, 4), (0, 1, 2), [0, 1]),  # merge, nothing permuted
    ((2, 3, 4, 5), (2, 3, 20), (0, 2, 3, 1), [0, 2, 1]),  # merge H, W that sit together physically
    ((2, 3, 4, 5), (6, 4, 5), (0, 2, 3, 1), None),  # merge B, C: apart physically
    ((2, 3, 8), (2, 3, 4, 2), (0, 2, 1), [0, 2, 3, 1]),  # split the last logical axis
    ((2, 1, 3), (2, 3, 1), (2, 0, 1), [1, 2, 0]),  # a size-1 axis goes beside its logical neighbour
    ((2, 3, 4), (2, 1, 3, 4), (0, 2, 1), [0, 3, 1, 2]),  # x[:, None]: the new axis goes before its successor
  ],
)
def test_reshape_keeps_a_permutation_where_the_data_allows(shape, new_shape, perm, expected):
  assert transposes._reshaped_order(shape, new_shape, perm) == expected
  x = jnp.asarray(randn(*shape))
  physical = jnp.transpose(x, perm)
  reshaped = jax.jit(transposes.sink_transposes(lambda p: jnp.transpose(p, np.argsort(perm)).reshape(new_shape)))
  np.testing.assert_array_equal(reshaped(physical), x.reshape(new_shape))


@pytest.mark.multidevice
def test_sharding_constraints_follow_the_permutation():
  """A constraint on a carried value is applied to the physical array with its spec permuted: the
  width stays split on tp, and no all-gather appears."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from torchax_vae.core import mesh as mesh_lib

  mesh = mesh_lib.make_mesh("dp=2,tp=4")
  sharding = NamedSharding(mesh, P("dp", None, None, None, "tp"))

  def step(x):  # x: (B, T, H, W, C), channels-last
    y = jax.lax.with_sharding_constraint(jnp.moveaxis(x, -1, 1) * 2.0, sharding)  # (B, C, T, H, W)
    return jnp.moveaxis(jax.nn.silu(y), 1, -1)

  x = jax.device_put(jnp.asarray(randn(2, 3, 4, 8, 6)), NamedSharding(mesh, P("dp", None, None, "tp", None)))
  want = jax.jit(step)(x)
  compiled = jax.jit(transposes.sink_transposes(step)).lower(x).compile()
  np.testing.assert_array_equal(compiled(x), want)
  assert "all-gather" not in compiled.as_text()
  carried = jax.make_jaxpr(transposes.sink_transposes(step))(x).jaxpr
  (constraint,) = [e for e in carried.eqns if e.primitive.name == "sharding_constraint"]
  assert tuple(constraint.params["sharding"].spec) == ("dp", None, None, "tp", None)  # (B, T, H, W, C)


def test_sink_transposes_switch(monkeypatch):
  monkeypatch.delenv(transposes.ENV_VAR, raising=False)
  assert transposes.enabled()
  monkeypatch.setenv(transposes.ENV_VAR, "0")
  assert not transposes.enabled()
  monkeypatch.setenv(transposes.ENV_VAR, "sometimes")
  with pytest.raises(ValueError, match="TORCHAX_VAE_SINK_TRANSPOSES='sometimes': expected 1"):
    transposes.enabled()


@pytest.mark.parametrize(
  "index",
  [
    [0, 1, 1, 2, 2],  # SpatialNorm3D's odd frames: the first frame alone, the rest doubled
    list(np.arange(8) // 2),
    [0, 0, 1, 1, 1],
    [0, 2, 4],  # downscaling
    [0, 0, 1, 2, 2, 3, 4, 4, 5, 6],  # a non-integer factor: more runs than MAX_RUNS, one gather
    [0, 1, 2, 3],
  ],
)
def test_take_axis_equals_take(index):
  x = jnp.asarray(randn(2, 7, 3))
  np.testing.assert_array_equal(resize.take_axis(x, np.asarray(index), 1), jnp.take(x, jnp.asarray(index), axis=1))


def test_take_axis_repeats_instead_of_gathering():
  x = jnp.zeros((2, 3, 4))
  odd_frames = jax.jit(lambda a: resize.take_axis(a, np.array([0, 1, 1, 2, 2]), 1)).lower(x).as_text()
  non_integer = jax.jit(lambda a: resize.take_axis(a, np.array([0, 0, 1, 2, 2, 3, 3]), 2)).lower(x).as_text()
  assert "gather" not in odd_frames and "broadcast" in odd_frames
  assert resize.repeat_runs(np.array([0, 0, 1, 2, 2, 3, 3])) == [(0, 1, 2), (1, 2, 1), (2, 4, 2)]
  assert "gather" not in non_integer  # 3 runs <= MAX_RUNS
