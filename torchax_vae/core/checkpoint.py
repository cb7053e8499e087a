"""Hub id or local dir -> frozen config + numpy weights (diffusers keys, PyTorch layouts).

Shared by both paths; imports neither torch nor torchax, so ``native_flax`` runs without PyTorch.

    ckpt = load_checkpoint("THUDM/CogVideoX-2b", subfolder="vae")
    ckpt.config.latent_channels           # 16
    ckpt.weights["decoder.conv_in.conv.weight"].shape  # (512, 16, 3, 3, 3)  OIDHW

Weights are checked against the shapes a path expects with :func:`check_weights`; every problem
(missing, unexpected, mis-shaped keys) is reported at once, the first few of each kind listed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
CLASS_NAME = "AutoencoderKLCogVideoX"
PIPELINE_SUBFOLDER = "vae"
_LIST_AT_MOST = 5


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: missing files, corrupt weights, wrong keys or shapes."""


@dataclasses.dataclass(frozen=True)
class CogVideoXVAEConfig:
  """The ``config.json`` of diffusers' ``AutoencoderKLCogVideoX``; defaults are diffusers' (CogVideoX-2b)."""

  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ("CogVideoXDownBlock3D",) * 4
  up_block_types: tuple[str, ...] = ("CogVideoXUpBlock3D",) * 4
  block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
  latent_channels: int = 16
  layers_per_block: int = 3
  act_fn: str = "silu"
  norm_eps: float = 1e-6
  norm_num_groups: int = 32
  temporal_compression_ratio: float = 4
  sample_height: int = 480
  sample_width: int = 720
  scaling_factor: float = 1.15258426
  shift_factor: float | None = None
  latents_mean: tuple[float, ...] | None = None
  latents_std: tuple[float, ...] | None = None
  force_upcast: bool = True
  use_quant_conv: bool = False
  use_post_quant_conv: bool = False
  invert_scale_latents: bool = False

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str = "config") -> CogVideoXVAEConfig:
    """Builds the config from a ``config.json`` dict; ``_``-prefixed keys are diffusers metadata."""
    class_name = raw.get("_class_name", CLASS_NAME)
    if class_name != CLASS_NAME:
      raise CheckpointError(f"{source}: expected a {CLASS_NAME} config, got _class_name={class_name!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in fields)
    if unknown:
      warnings.warn(f"{source}: ignoring config keys {CLASS_NAME} does not take: {unknown}", stacklevel=3)
    values = {}
    for name, value in raw.items():
      if name in fields and value is not None and isinstance(value, list):
        value = tuple(value)
      if name in fields:
        values[name] = value
    config = cls(**values)
    config.validate(source)
    return config

  def to_dict(self) -> dict[str, Any]:
    """The diffusers ``config.json`` form (lists for tuples), e.g. for ``AutoencoderKLCogVideoX(**d)``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  def validate(self, source: str = "config") -> None:
    n = len(self.block_out_channels)
    if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise CheckpointError(
        f"{source}: block_out_channels, down_block_types and up_block_types must have one entry per "
        f"block, got {len(self.block_out_channels)}, {len(self.down_block_types)}, {len(self.up_block_types)}"
      )
    for c in self.block_out_channels:
      if c % self.norm_num_groups:
        raise CheckpointError(f"{source}: block_out_channels {self.block_out_channels} must divide by norm_num_groups={self.norm_num_groups}")

  @property
  def spatial_compression(self) -> int:
    """Pixels per latent pixel along H and W (8 for every released CogVideoX VAE)."""
    return 2 ** (len(self.block_out_channels) - 1)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  config: CogVideoXVAEConfig
  weights: dict[str, np.ndarray]  # diffusers state-dict keys, PyTorch layouts (Conv3d: OIDHW)
  directory: Path


def resolve_checkpoint_dir(
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None = None,
  revision: str | None = None,
  hub_cache_dir: str | os.PathLike | None = None,
) -> Path:
  """The local directory holding ``config.json`` and the weights.

  A local directory is used as it is: a VAE dir (``config.json`` at its root) or a pipeline dir
  (with a ``vae/`` subfolder). Anything else is a Hugging Face repo id, fetched (or found in the
  cache; ``HF_HUB_OFFLINE=1`` is honoured) through ``huggingface_hub``.
  """
  path = Path(pretrained_model_name_or_path).expanduser()
  if path.is_dir():
    return _pick_subfolder(path, subfolder, str(pretrained_model_name_or_path))
  if path.exists():
    raise CheckpointError(f"{path} is a file; expected a model directory or a Hugging Face repo id")
  repo_id = str(pretrained_model_name_or_path)
  if repo_id.count("/") > 1 or repo_id.startswith((".", "/", "~")):
    raise CheckpointError(f"{repo_id!r}: no such local directory, and not a Hugging Face repo id (owner/name)")
  from huggingface_hub import snapshot_download
  from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

  prefixes = [f"{subfolder}/"] if subfolder else ["", f"{PIPELINE_SUBFOLDER}/"]
  patterns = [p + name for p in prefixes for name in (CONFIG_NAME, "*.safetensors", "*.safetensors.index.json")]
  try:
    root = snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir, allow_patterns=patterns)
  except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
    raise CheckpointError(
      f"could not fetch {repo_id!r} (revision={revision!r}) from the Hugging Face Hub or its cache: {err}"
    ) from err
  return _pick_subfolder(Path(root), subfolder, repo_id)


def _pick_subfolder(root: Path, subfolder: str | None, name: str) -> Path:
  if subfolder:
    directory = root / subfolder
    if not (directory / CONFIG_NAME).is_file():
      raise CheckpointError(f"{name}: no {CONFIG_NAME} in subfolder {subfolder!r} ({directory})")
    return directory
  if (root / CONFIG_NAME).is_file():
    return root
  if (root / PIPELINE_SUBFOLDER / CONFIG_NAME).is_file():
    return root / PIPELINE_SUBFOLDER
  raise CheckpointError(
    f"{name}: no {CONFIG_NAME} at {root} nor in its {PIPELINE_SUBFOLDER}/ subfolder; "
    "expected a diffusers VAE dir or a pipeline dir"
  )


def read_config(directory: Path) -> CogVideoXVAEConfig:
  path = directory / CONFIG_NAME
  try:
    raw = json.loads(path.read_text())
  except FileNotFoundError:
    raise CheckpointError(f"missing {path}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise CheckpointError(f"{path} is not valid JSON: {err}") from err
  if not isinstance(raw, dict):
    raise CheckpointError(f"{path}: expected a JSON object")
  return CogVideoXVAEConfig.from_dict(raw, source=str(path))


def weight_files(directory: Path) -> list[Path]:
  """The safetensors files of a checkpoint: one file, or the shards its index names."""
  index = directory / WEIGHTS_INDEX_NAME
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
      raise CheckpointError(f"{index} is not a safetensors index (expected a 'weight_map'): {err}") from err
    files = [directory / name for name in dict.fromkeys(weight_map.values())]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
      raise CheckpointError(f"{index} names shard files that are missing: {_first(missing)}")
    return files
  single = directory / WEIGHTS_NAME
  if single.is_file():
    return [single]
  others = sorted(directory.glob("*.safetensors"))
  if len(others) == 1:
    return others
  raise CheckpointError(
    f"no weights in {directory}: expected {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}"
    + (f" (found several .safetensors files and no index: {[p.name for p in others]})" if others else "")
  )


def read_weights(files: list[Path]) -> dict[str, np.ndarray]:
  """All tensors of the files as numpy arrays (bfloat16 through ``ml_dtypes``)."""
  from safetensors import SafetensorError, safe_open

  weights: dict[str, np.ndarray] = {}
  for path in files:
    try:
      with safe_open(str(path), framework="numpy") as handle:
        for key in handle.keys():
          if key in weights:
            raise CheckpointError(f"{path}: tensor {key!r} appears in more than one shard")
          try:
            weights[key] = handle.get_tensor(key)
          except TypeError:  # numpy has no bfloat16; read it through the flax (jax) view
            weights[key] = _read_as_jax(path, key)
    except (SafetensorError, OSError, ValueError) as err:
      if isinstance(err, CheckpointError):
        raise
      raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err
  return weights


def _read_as_jax(path: Path, key: str) -> np.ndarray:
  from safetensors import safe_open

  with safe_open(str(path), framework="flax") as handle:
    return np.asarray(handle.get_tensor(key))


def check_weights(
  weights: Mapping[str, np.ndarray], expected_shapes: Mapping[str, tuple[int, ...]], source: str
) -> None:
  """Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys (first few of each)."""
  missing = sorted(set(expected_shapes) - set(weights))
  unexpected = sorted(set(weights) - set(expected_shapes))
  mismatched = sorted(
    f"{k}: checkpoint {tuple(weights[k].shape)}, model {tuple(expected_shapes[k])}"
    for k in set(weights) & set(expected_shapes)
    if tuple(weights[k].shape) != tuple(expected_shapes[k])
  )
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing keys: {_first(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
  if mismatched:
    problems.append(f"{len(mismatched)} shape mismatches: {_first(mismatched)}")
  not_float = sorted(k for k, v in weights.items() if k in expected_shapes and not _is_float(v.dtype))
  if not_float:
    problems.append(f"{len(not_float)} non-float tensors: {_first(not_float)}")
  if problems:
    raise CheckpointError(f"weights in {source} do not fit the config: " + "; ".join(problems))


def _is_float(dtype: np.dtype) -> bool:
  return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def _first(items: list[str]) -> str:
  shown = ", ".join(items[:_LIST_AT_MOST])
  return shown + (f", … ({len(items) - _LIST_AT_MOST} more)" if len(items) > _LIST_AT_MOST else "")


def load_checkpoint(
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None = None,
  revision: str | None = None,
  hub_cache_dir: str | os.PathLike | None = None,
) -> Checkpoint:
  """Resolves, reads config and weights. Shapes are checked by the caller (:func:`check_weights`)."""
  directory = resolve_checkpoint_dir(
    pretrained_model_name_or_path, subfolder=subfolder, revision=revision, hub_cache_dir=hub_cache_dir
  )
  config = read_config(directory)
  weights = read_weights(weight_files(directory))
  return Checkpoint(config=config, weights=weights, directory=directory)
