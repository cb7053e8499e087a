"""Group norm computed channels-last; shared by both paths (torch-free).

PyTorch groups consecutive channels, so splitting the last (channel) axis into ``(G, C // G)`` and
reducing over every axis but batch and group is ``torch.nn.GroupNorm``'s computation. No other axis
is merged, so a width-sharded activation keeps its split (only the statistics are all-reduced).

``native_flax.GroupNorm`` calls it; ``torchax_vae`` from its ``aten.native_group_norm`` override.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def group_norm_channels_last(x: Array, num_groups: int, eps: float) -> tuple[Array, Array, Array]:
  """``(B, ..., C)`` -> ``(normalized, mean, rstd)``; float32, as PyTorch computes the statistics.

  ``normalized`` has ``x``'s shape, without the affine part; ``mean``/``rstd`` are ``(B, G)``.
  The variance is the biased one, in two passes.
  """
  channels = x.shape[-1]
  grouped = x.reshape(*x.shape[:-1], num_groups, channels // num_groups).astype(jnp.float32)
  axes = (*range(1, grouped.ndim - 2), grouped.ndim - 1)  # all but batch and group
  mean = jnp.mean(grouped, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(grouped - mean), axis=axes, keepdims=True)
  rstd = jax.lax.rsqrt(var + eps)
  normalized = ((grouped - mean) * rstd).reshape(x.shape)
  return normalized, mean.reshape(x.shape[0], num_groups), rstd.reshape(x.shape[0], num_groups)
