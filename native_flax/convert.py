"""diffusers state dict (PyTorch layouts) <-> the NNX ports' parameters, from one table of layout rules.

The NNX modules carry diffusers' attribute names, so a parameter's module path is the same on both
sides (``decoder.up_blocks.0.resnets.1.conv1.conv``). What differs is the leaf name and the layout,
and that depends only on the kind of layer that owns the parameter: :data:`LAYOUT_RULES` says, for
each layer kind, which PyTorch parameter becomes which NNX parameter and how its axes move. Nothing
else is hand-written: the expected keys and shapes of a checkpoint are derived from the model built
with ``nnx.eval_shape`` (no memory, no random init) through the inverse of these rules.

    model = load_model(checkpoint.weights, checkpoint.config, dtype="bfloat16", source=str(directory))

The port is chosen by the config's class: ``CogVideoXVAEConfig`` -> ``AutoencoderKLCogVideoX``,
``WanVAEConfig`` -> ``AutoencoderKLWan`` (:data:`PORTS`).

For a doc generator: iterate :data:`LAYOUT_RULES` (``name``, ``torch_pattern``, ``nnx_pattern``,
``transform``, ``covers``) or :func:`key_mapping` (every key of a config).
"""

from __future__ import annotations

import concurrent.futures
import os

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from torchax_vae.core.checkpoint import CheckpointError, CogVideoXVAEConfig, WanVAEConfig, check_weights

from .autoencoder_kl_cogvideox import AutoencoderKLCogVideoX
from .autoencoder_kl_wan import AutoencoderKLWan, WanRMS_norm
from .layers import Conv2d, Conv3d, GroupNorm, Linear

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class LayoutRule:
  """One PyTorch parameter of one layer kind -> one NNX parameter.

  ``torch_layout``/``nnx_layout`` name the axes (one letter each); the NNX array is the PyTorch
  array with its axes moved from the first order to the second. ``"*"`` for both: as is, any rank.
  """

  name: str
  module: type[nnx.Module]  # the NNX layer kind (subclasses included) that owns the parameter
  torch_name: str
  nnx_name: str
  torch_layout: str
  nnx_layout: str
  covers: str  # which diffusers layers this is, for docs

  @property
  def perm(self) -> tuple[int, ...] | None:
    """Axes of the PyTorch array in NNX order: ``nnx = np.transpose(torch, perm)`` (``None``: as is)."""
    if self.torch_layout == "*":
      return None
    return tuple(self.torch_layout.index(axis) for axis in self.nnx_layout)

  @property
  def inverse_perm(self) -> tuple[int, ...] | None:
    """``torch = np.transpose(nnx, inverse_perm)`` (``None``: as is)."""
    if self.torch_layout == "*":
      return None
    return tuple(self.nnx_layout.index(axis) for axis in self.torch_layout)

  @property
  def torch_pattern(self) -> str:
    return f"<{self.module.__name__} path>.{self.torch_name}"

  @property
  def nnx_pattern(self) -> str:
    return f"<{self.module.__name__} path>.{self.nnx_name}"

  @property
  def transform(self) -> str:
    if self.torch_layout == "*":
      return "as is (diffusers' shape)"
    if self.torch_layout == self.nnx_layout:
      return f"as is ({self.torch_layout})"
    return f"{self.torch_layout} -> {self.nnx_layout} (transpose {self.perm})"

  def to_nnx(self, array: np.ndarray) -> np.ndarray:
    return array if self.perm is None else np.transpose(array, self.perm)

  def to_torch(self, array: np.ndarray) -> np.ndarray:
    return array if self.inverse_perm is None else np.transpose(array, self.inverse_perm)

  def torch_shape(self, nnx_shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(nnx_shape) if self.inverse_perm is None else tuple(nnx_shape[i] for i in self.inverse_perm)


# The whole mapping, both ports. O/I: out/in channels, D/H/W: kernel depth (time)/height/width,
# C: channels.
LAYOUT_RULES: tuple[LayoutRule, ...] = (
  LayoutRule(
    "conv3d_weight", Conv3d, "weight", "kernel", "OIDHW", "DHWIO",
    "CogVideoXSafeConv3d: CausalConv3d.conv, ResnetBlock3D.conv_shortcut (1x1x1), quant_conv, post_quant_conv; "
    "WanCausalConv3d: every Wan 3D conv (conv_in/out, conv1/2, conv_shortcut, time_conv, quant convs)",
  ),
  LayoutRule("conv3d_bias", Conv3d, "bias", "bias", "O", "O", "the same Conv3d layers"),
  LayoutRule(
    "conv2d_weight", Conv2d, "weight", "kernel", "OIHW", "HWIO",
    "CogVideoXDownsample3D.conv, CogVideoXUpsample3D.conv; WanResample.resample.1, WanAttentionBlock.to_qkv/proj",
  ),
  LayoutRule("conv2d_bias", Conv2d, "bias", "bias", "O", "O", "the same Conv2d layers"),
  LayoutRule(
    "group_norm_weight", GroupNorm, "weight", "scale", "C", "C",
    "nn.GroupNorm: ResnetBlock3D.norm1/norm2 (encoder), SpatialNorm3D.norm_layer, encoder.norm_out",
  ),
  LayoutRule("group_norm_bias", GroupNorm, "bias", "bias", "C", "C", "the same GroupNorm layers"),
  LayoutRule(
    "linear_weight", Linear, "weight", "kernel", "OI", "IO", "nn.Linear: ResnetBlock3D.temb_proj (unused by the VAE)"
  ),
  LayoutRule("linear_bias", Linear, "bias", "bias", "O", "O", "the same Linear layers"),
  LayoutRule(
    "rms_norm_gamma", WanRMS_norm, "gamma", "gamma", "*", "*",
    "WanRMS_norm: (C, 1, 1, 1), (C, 1, 1) in attention; read as (C,) on the channel axis",
  ),
)

# Config class -> the NNX port of its diffusers class.
PORTS: dict[type, type[nnx.Module]] = {CogVideoXVAEConfig: AutoencoderKLCogVideoX, WanVAEConfig: AutoencoderKLWan}


@dataclasses.dataclass(frozen=True)
class KeyMapping:
  torch_key: str
  nnx_path: tuple[Any, ...]
  rule: LayoutRule
  nnx_shape: tuple[int, ...]

  @property
  def torch_shape(self) -> tuple[int, ...]:
    return self.rule.torch_shape(self.nnx_shape)

  @property
  def nnx_key(self) -> str:
    return ".".join(map(str, self.nnx_path))


def _rule_for(module: nnx.Module, nnx_name: str) -> LayoutRule | None:
  for rule in LAYOUT_RULES:
    if isinstance(module, rule.module) and rule.nnx_name == nnx_name:
      return rule
  return None


def port_class(config: Any) -> type[nnx.Module]:
  """The NNX port of a config's diffusers class (:data:`PORTS`)."""
  try:
    return PORTS[type(config)]
  except KeyError:
    raise TypeError(f"no NNX port for a {type(config).__name__}; ported: {[c.__name__ for c in PORTS]}") from None


def abstract_model(config: Any, dtype: str | Any = "float32") -> nnx.Module:
  """The model with ``ShapeDtypeStruct`` parameters: structure and shapes, no memory, no init."""
  dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
  cls = port_class(config)
  return nnx.eval_shape(lambda: cls(config, dtype=dtype, rngs=nnx.Rngs(0)))


def key_mapping(module: nnx.Module | Any) -> list[KeyMapping]:
  """Every parameter of ``module`` (or of the model a config builds): diffusers key, NNX path, rule."""
  if not isinstance(module, nnx.Module):
    module = abstract_model(module)
  owners = {tuple(path): m for path, m in nnx.iter_modules(module)}
  mappings = []
  for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
    owner = owners.get(tuple(path[:-1]))
    rule = None if owner is None else _rule_for(owner, path[-1])
    if rule is None:
      raise TypeError(f"no layout rule for NNX parameter {'.'.join(map(str, path))} of {type(owner).__name__}")
    torch_key = ".".join(map(str, (*path[:-1], rule.torch_name)))
    mappings.append(KeyMapping(torch_key, tuple(path), rule, tuple(variable.get_value().shape)))
  return mappings


def expected_torch_shapes(module: nnx.Module | Any) -> dict[str, tuple[int, ...]]:
  """``{diffusers key: PyTorch shape}`` a checkpoint for this module (or config) must have."""
  return {m.torch_key: m.torch_shape for m in key_mapping(module)}


def load_into(
  module: nnx.Module,
  weights: Mapping[str, Any],
  *,
  source: str = "weights",
  dtype: str | Any | None = None,
) -> nnx.Module:
  """A new module like ``module`` (concrete or from ``nnx.eval_shape``) holding ``weights``.

  ``weights`` is a diffusers state dict of this module (keys relative to it; numpy arrays or
  anything ``np.asarray`` takes). Keys and shapes are checked first (:func:`check_weights`: raises
  :class:`CheckpointError` naming missing, unexpected and mis-shaped keys). Each array is laid out
  by its rule and cast to ``dtype`` (default: the module's parameter dtype).
  """
  mappings = key_mapping(module)
  host = {k: np.asarray(v) for k, v in weights.items()}
  check_weights(host, {m.torch_key: m.torch_shape for m in mappings}, source)
  target = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
  by_path = {m.nnx_path: m for m in mappings}

  graphdef, state = nnx.split(module)

  def place(item):
    path, variable = item
    mapping = by_path.get(tuple(path))
    if mapping is not None:
      leaf_dtype = np.dtype(target if target is not None else variable.get_value().dtype)
      # Cast on the host (numpy + ml_dtypes for bfloat16) and laid out by device_put: no XLA program
      # per shape, and the transposed view goes in as it is (PjRt's strided copy transposes it 2-3x
      # faster than numpy's ascontiguousarray).
      array = mapping.rule.to_nnx(host[mapping.torch_key]).astype(leaf_dtype, copy=False)
      variable = variable.replace(value=jax.device_put(array))
    return path, variable

  # The copies release the GIL: every core lays out and places tensors at once.
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
    leaves = list(pool.map(place, nnx.to_flat_state(state)))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def load_model(
  weights: Mapping[str, Any],
  config: Any,
  *,
  dtype: str | Any = "float32",
  source: str = "weights",
) -> nnx.Module:
  """diffusers weights + config -> the port (``AutoencoderKLCogVideoX``, ``AutoencoderKLWan``) in
  ``dtype`` (built with ``eval_shape``)."""
  if isinstance(dtype, str) and dtype not in DTYPES:
    raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
  return load_into(abstract_model(config, dtype), weights, source=source, dtype=dtype)


def to_torch_state_dict(module: nnx.Module) -> dict[str, np.ndarray]:
  """The inverse: ``{diffusers key: numpy array in PyTorch layout}`` of a (concrete) module."""
  state = dict(nnx.to_flat_state(nnx.state(module, nnx.Param)))
  out = {}
  for m in key_mapping(module):
    out[m.torch_key] = m.rule.to_torch(np.asarray(jax.device_get(state[m.nnx_path].get_value())))
  return out


def describe_rules() -> list[dict[str, str]]:
  """The table as plain rows (name, torch pattern, nnx pattern, transform, covers) for docs."""
  return [
    {
      "name": r.name,
      "torch_pattern": r.torch_pattern,
      "nnx_pattern": r.nnx_pattern,
      "transform": r.transform,
      "covers": r.covers,
    }
    for r in LAYOUT_RULES
  ]


__all__ = [
  "CheckpointError",
  "KeyMapping",
  "LAYOUT_RULES",
  "LayoutRule",
  "abstract_model",
  "describe_rules",
  "expected_torch_shapes",
  "key_mapping",
  "load_into",
  "load_model",
  "port_class",
  "to_torch_state_dict",
]
