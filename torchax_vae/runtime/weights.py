"""Checkpoint weights placed as the torchax programs take them (torch-free: a warm start places them)."""

from __future__ import annotations

import concurrent.futures
import os

import jax
import numpy as np

from ..core import mesh as mesh_lib
from ..core.driver import DTYPES

def place_weights(weights: dict[str, np.ndarray], dtype: str, mesh=None, *, abstract: bool = False) -> dict[str, jax.Array]:
  """numpy (PyTorch layout) -> ``jax.Array`` in ``dtype``, replicated over the mesh if one is given.
  ``abstract``: only their shapes and dtypes (``jax.ShapeDtypeStruct``), for compiling for a target
  nothing can be placed on (core.target); no bytes are copied.

  Convolution kernels (every parameter of rank >= 4) are stored channels-last, ``(*kernel, I, O)``
  instead of PyTorch's ``(O, I, *kernel)``; the step functions hand PyTorch's layout to the torch
  code (``tracing.backend._torch_layout``). Inside the compiled program that transpose meets the one the
  convolution lowering applies and XLA cancels the pair, so no kernel is transposed at run time
  (transposing the decoder's 477 MB of kernels cost ~0.3 s per CPU decode).
  """
  target = DTYPES[dtype]
  sharding = mesh_lib.replicated(mesh)
  if abstract:
    return {k: jax.ShapeDtypeStruct(kernel_layout(v).shape, target, sharding=sharding) for k, v in weights.items()}

  def place(item):
    # One pass over each tensor's bytes (a view into the file's one read): a kernel's
    # transposed view goes to device_put as it is (PjRt's strided copy transposes 2-3x faster than
    # numpy's), cast on the host only where the dtype changes. mesh_lib.put: on a mesh over several
    # processes each fills its own devices, with no cross-process check.
    key, value = item
    return key, mesh_lib.put(kernel_layout(np.asarray(value)).astype(target, copy=False), sharding)

  # numpy's copies and device_put release the GIL: the tensors convert on every core at once.
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
    return dict(pool.map(place, weights.items()))


def kernel_layout(v):
  """PyTorch ``(O, I, *kernel)`` -> ``(*kernel, I, O)`` for rank >= 4 (convolution kernels); else ``v``."""
  return v.transpose(*range(2, v.ndim), 1, 0) if v.ndim >= 4 else v
