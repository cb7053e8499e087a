"""Inputs of three kinds — torch tensor, numpy array, ``jax.Array`` — in, the same kind out.

torch is never imported here: a torch tensor can only reach us if the caller already imported torch,
so ``sys.modules`` tells whether to look for one.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TORCH, NUMPY, JAX = "torch", "numpy", "jax"


def _torch_module():
  return sys.modules.get("torch")


def is_torch_tensor(value: Any) -> bool:
  torch = _torch_module()
  return torch is not None and isinstance(value, torch.Tensor)


def to_jax(value: Any, name: str) -> tuple[jax.Array, str]:
  """``(array, kind)``; a ``jax.Array`` is used as it is (it stays where it is placed)."""
  if isinstance(value, jax.Array):
    return value, JAX
  torch = _torch_module()
  if torch is not None and isinstance(value, torch.Tensor):
    tensor = value.detach()
    if tensor.device.type != "cpu":
      tensor = tensor.cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; the float32 round trip is exact
      return jnp.asarray(tensor.float().numpy()).astype(jnp.bfloat16), TORCH
    return jnp.asarray(tensor.numpy()), TORCH
  if isinstance(value, np.ndarray):
    return jnp.asarray(value), NUMPY
  raise TypeError(f"{name}: expected a torch.Tensor, numpy.ndarray or jax.Array, got {type(value).__name__}")


def from_jax(array: jax.Array, kind: str) -> Any:
  if kind == JAX:
    return array
  if array.is_fully_addressable:
    host = np.asarray(jax.device_get(array))
  else:
    # Multi-controller JAX: the array spans other processes' devices. Every process gets the whole
    # value; this is a collective, so every process must reach it (they all run the same decode).
    from jax.experimental import multihost_utils

    host = np.asarray(multihost_utils.process_allgather(array, tiled=True))
  if kind == NUMPY:
    return host
  torch = _torch_module()
  if host.dtype == jnp.bfloat16:
    return torch.from_numpy(host.astype(np.float32)).to(torch.bfloat16)
  return torch.from_numpy(np.ascontiguousarray(host))


def validate_video(array: jax.Array, name: str, *, channels: int, channel_name: str) -> None:
  """Checks rank, channel count, non-empty dims and a floating dtype of a ``(B, C, T, H, W)`` input."""
  if array.ndim != 5:
    raise ValueError(f"{name}: expected 5 dims (B, C, T, H, W), got shape {tuple(array.shape)}")
  if array.shape[1] != channels:
    raise ValueError(
      f"{name}: expected {channels} {channel_name} on axis 1 of (B, C, T, H, W), got shape {tuple(array.shape)}"
    )
  empty = [axis for axis, size in zip("BCTHW", array.shape) if size == 0]
  if empty:
    raise ValueError(f"{name}: expected non-empty dims, got shape {tuple(array.shape)} (empty: {', '.join(empty)})")
  if not jnp.issubdtype(array.dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating dtype (float32, bfloat16, float16), got {array.dtype}")


@jax.jit
def _count_non_finite(array: jax.Array) -> jax.Array:
  return jnp.sum(~jnp.isfinite(array))


def check_finite(array: jax.Array, name: str) -> None:
  """Raises on NaN/Inf (pass ``check_finite=False`` to the caller to skip this check)."""
  bad = int(_count_non_finite(array))
  if bad:
    raise ValueError(
      f"{name}: {bad} of {array.size} values are NaN or Inf; decoding them gives garbage "
      "(pass check_finite=False to decode anyway)"
    )


def divides(shape: tuple[int, ...], sharding) -> bool:
  """Whether every sharded dimension of ``shape`` divides by its mesh axis (``device_put`` needs it)."""
  if sharding is None:
    return True
  for size, axis in zip(shape, sharding.spec):
    if axis is not None and size % sharding.mesh.shape[axis]:
      return False
  return True
