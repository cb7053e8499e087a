"""Hub id or local dir -> frozen config + numpy weights (diffusers keys, PyTorch layouts).

Shared by both paths; imports neither torch nor torchax, so ``native_flax`` runs without PyTorch.
The config's class (``_class_name``: ``AutoencoderKLCogVideoX``, ``AutoencoderKLWan``) picks the
model adapter (:mod:`.models`); another class is refused with the list of supported ones.

    ckpt = load_checkpoint("THUDM/CogVideoX-2b", subfolder="vae")
    ckpt.adapter.latent_channels          # 16 (the model adapter: core.models)
    ckpt.weights["decoder.conv_in.conv.weight"].shape  # (512, 16, 3, 3, 3)  OIDHW

Weights are checked against the shapes a path expects with :func:`check_weights`; every problem
(missing, unexpected, mis-shaped keys) is reported at once, the first few of each kind listed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import models
from .errors import CheckpointError, UnsupportedModelError
from .models import CogVideoXVAEConfig, WanVAEConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
PIPELINE_SUBFOLDER = "vae"
_LIST_AT_MOST = 5


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  config: Any  # the frozen config of its class: CogVideoXVAEConfig, WanVAEConfig
  weights: dict[str, np.ndarray]  # diffusers state-dict keys, PyTorch layouts (Conv3d: OIDHW)
  directory: Path

  @property
  def adapter(self) -> models.VideoVAE:
    """The model adapter of its class (what the driver needs to know of the model)."""
    return models.adapter_for(self.config)


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


def read_raw_config(directory: Path) -> dict[str, Any]:
  """``config.json`` as a dict; :class:`CheckpointError` if missing, not JSON or not an object."""
  path = directory / CONFIG_NAME
  try:
    raw = json.loads(path.read_text())
  except FileNotFoundError:
    raise CheckpointError(f"missing {path}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise CheckpointError(f"{path} is not valid JSON: {err}") from err
  if not isinstance(raw, dict):
    raise CheckpointError(f"{path}: expected a JSON object")
  return raw


def read_config(directory: Path) -> Any:
  """The frozen config of ``config.json``, of the class its ``_class_name`` names (see :mod:`.models`)."""
  return ResolvedCheckpoint(directory, read_raw_config(directory)).config()


@dataclasses.dataclass(frozen=True)
class ResolvedCheckpoint:
  """A checkpoint's local directory and its ``config.json``, read once: what ``load`` hands to the
  tier that runs the class (adapter, generic path, port), so none of them resolves or reads it again."""

  directory: Path
  raw_config: dict[str, Any]

  @property
  def config_path(self) -> Path:
    return self.directory / CONFIG_NAME

  @property
  def class_name(self) -> str | None:
    """``_class_name`` (``None`` if absent: the adapters' loader guesses the class from the keys)."""
    name = self.raw_config.get("_class_name")
    return name if isinstance(name, str) else None

  @property
  def has_adapter(self) -> bool:
    """Whether an adapter (:mod:`.models`) runs its class; else the generic path does."""
    return self.class_name is None or self.class_name in models.ADAPTERS

  def config(self) -> Any:
    """The adapter's frozen config (:func:`read_config` of what was read)."""
    return models.config_from_dict(self.raw_config, source=str(self.config_path))


def resolve_checkpoint(
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None = None,
  revision: str | None = None,
) -> ResolvedCheckpoint:
  """:func:`resolve_checkpoint_dir` and :func:`read_raw_config`, once."""
  directory = resolve_checkpoint_dir(pretrained_model_name_or_path, subfolder=subfolder, revision=revision)
  return ResolvedCheckpoint(directory, read_raw_config(directory))


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
  """All tensors of the files as numpy arrays (bfloat16 through ``ml_dtypes``).

  Each file is read once, whole, and its tensors are views into that buffer: no copy per tensor
  (``safe_open`` validates each file first, as it always did).
  """
  from safetensors import SafetensorError, safe_open

  weights: dict[str, np.ndarray] = {}
  for path in files:
    try:
      with safe_open(str(path), framework="numpy") as handle:
        keys = list(handle.keys())
      mapped = _tensors_in_one_read(path)
      for key in keys:
        if key in weights:
          raise CheckpointError(f"{path}: tensor {key!r} appears in more than one shard")
        weights[key] = mapped[key] if key in mapped else _read_one(path, key)
    except (SafetensorError, OSError, ValueError) as err:
      if isinstance(err, CheckpointError):
        raise
      raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err
  return weights


# safetensors dtype names -> numpy, for the one-buffer read (others go through safetensors).
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}  # fmt: skip


def _tensors_in_one_read(path: Path) -> dict[str, np.ndarray]:
  """Views into one read of a safetensors file (already validated by ``safe_open``): an 8-byte
  little-endian header length, the JSON header, then the tensors' bytes."""
  import ml_dtypes

  dtypes = dict(_SAFETENSORS_DTYPES, BF16=ml_dtypes.bfloat16)
  with path.open("rb") as handle:
    length = int.from_bytes(handle.read(8), "little")
    header = json.loads(handle.read(length))
  # Read whole into memory this process owns, not memory-mapped: on CPU, device_put may keep an
  # aligned array without copying it, and arrays aliasing a mapped file would change (or fault) when
  # the file is rewritten in place.
  data = np.empty(path.stat().st_size - 8 - length, np.uint8)
  done = read_into(path, memoryview(data), offset=8 + length)
  if done < len(data):
    raise CheckpointError(f"{path}: file ended after {done} of {len(data)} tensor bytes")
  tensors = {}
  for key, info in header.items():
    if key == "__metadata__" or info.get("dtype") not in dtypes:
      continue
    begin, end = info["data_offsets"]
    tensors[key] = data[begin:end].view(dtypes[info["dtype"]]).reshape(info["shape"])
  return tensors


def read_into(path: Path, view: memoryview, offset: int = 0) -> int:
  """Reads ``path`` from ``offset`` into ``view`` (unbuffered, as few calls as the OS allows) until
  the view is full or the file ends; returns the bytes read."""
  done = 0
  with path.open("rb", buffering=0) as handle:
    handle.seek(offset)
    while done < len(view) and (got := handle.readinto(view[done:])):  # may return less than asked
      done += got
  return done


def _read_one(path: Path, key: str) -> np.ndarray:
  """One tensor through safetensors itself (a dtype the one-buffer read does not know)."""
  from safetensors import safe_open

  with safe_open(str(path), framework="numpy") as handle:
    try:
      return handle.get_tensor(key)
    except TypeError:  # numpy has no such dtype: read it through the flax (jax) view
      return _read_as_jax(path, key)


def _read_as_jax(path: Path, key: str) -> np.ndarray:
  from safetensors import safe_open

  with safe_open(str(path), framework="flax") as handle:
    return np.asarray(handle.get_tensor(key))


def check_weights(
  weights: Mapping[str, np.ndarray],
  expected_shapes: Mapping[str, tuple[int, ...]],
  source: str,
  non_float: frozenset[str] = frozenset(),
) -> None:
  """Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys (first few of each).

  ``non_float``: keys that may hold integers (a module's integer buffers, e.g. BatchNorm's
  ``num_batches_tracked``); every other tensor must be floating."""
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
  not_float = sorted(
    k for k, v in weights.items() if k in expected_shapes and k not in non_float and not _is_float(v.dtype)
  )
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


__all__ = [
  "Checkpoint",
  "CheckpointError",
  "CogVideoXVAEConfig",
  "ResolvedCheckpoint",
  "UnsupportedModelError",
  "WanVAEConfig",
  "check_weights",
  "load_checkpoint",
  "read_config",
  "read_raw_config",
  "read_weights",
  "resolve_checkpoint",
  "resolve_checkpoint_dir",
  "weight_files",
]
