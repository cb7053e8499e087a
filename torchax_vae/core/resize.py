"""Nearest resizing by a static source index per axis; shared by both paths (torch-free).

A nearest resize (any factor, PyTorch's ``nearest`` or ``nearest-exact``), and a concatenation of
such resizes along one axis, is ``take(x, index, axis)`` per axis with a static ``index``. Taken as
slices and ``repeat``s wherever the index is made of a few contiguous runs, it is a broadcast: it
keeps a width split (a gather with computed indices makes GSPMD all-gather its input) and fuses
into the elementwise op that reads it, so the full-resolution tensor need not be materialised.

``native_flax``'s ``interpolate_nearest`` and ``torchax_vae``'s resize overrides call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

MAX_RUNS = 4  # beyond this many runs (non-integer factors) one gather is smaller than the pieces


def repeat_runs(index: np.ndarray) -> list[tuple[int, int, int]]:
  """``index`` as consecutive runs ``(start, stop, r)``: source ``start .. stop-1``, each ``r`` times.

  ``[0, 1, 1, 2, 2]`` -> ``[(0, 1, 1), (1, 3, 2)]``; ``arange(8) // 2`` -> ``[(0, 4, 2)]``.
  """
  index = np.asarray(index)
  n = len(index)

  def run_length(p: int) -> int:  # how often index[p] repeats from p on
    end = p
    while end < n and index[end] == index[p]:
      end += 1
    return end - p

  runs = []
  p = 0
  while p < n:
    start, repeat = int(index[p]), run_length(p)
    stop, p = start + 1, p + repeat
    while p < n and index[p] == stop and run_length(p) == repeat:
      stop, p = stop + 1, p + repeat
    runs.append((start, stop, repeat))
  return runs


def take_axis(x: Array, index: np.ndarray, axis: int) -> Array:
  """``jnp.take(x, index, axis)`` for a static ``index``: slices and repeats where it is at most
  :data:`MAX_RUNS` contiguous runs, else one gather."""
  index = np.asarray(index)
  if np.array_equal(index, np.arange(x.shape[axis])):
    return x
  runs = repeat_runs(index)
  if len(runs) > MAX_RUNS:
    return jnp.take(x, jnp.asarray(index, dtype=jnp.int32), axis=axis)
  pieces = []
  for start, stop, repeat in runs:
    piece = jax.lax.slice_in_dim(x, start, stop, axis=axis)
    pieces.append(jnp.repeat(piece, repeat, axis=axis) if repeat > 1 else piece)
  return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=axis)


def take_axes(x: Array, indices: Sequence[np.ndarray], axes: Sequence[int]) -> Array:
  """:func:`take_axis` along each of ``axes``, one axis at a time (no axis is merged)."""
  for index, axis in zip(indices, axes, strict=True):
    x = take_axis(x, index, axis)
  return x
