"""What both paths' ``load()`` share: arguments checked, mesh, compile cache, checkpoint, adapter, runner."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from jax.sharding import Mesh

from . import mesh as mesh_lib
from . import models
from .checkpoint import Checkpoint, read_config, read_raw_config, read_weights, resolve_checkpoint_dir, weight_files
from .compile_cache import enable_compilation_cache, executable_dir
from .driver import DTYPES, Runner, StepFunctions
from .errors import CheckpointError, UnsupportedModelError

# (checkpoint, dtype, mesh, executable_dir=) -> (step functions, placed weights, attributes to set on
# the runner). ``executable_dir``: the runner's store of compiled programs (None: none), where a backend
# may keep what a later start needs to know of its programs without building its model.
BuildBackend = Callable[..., tuple[StepFunctions, Any, dict[str, Any]]]


def raw_class_name(directory) -> str | None:
  """``config.json``'s ``_class_name`` in a checkpoint directory (``None`` if absent: the adapters'
  loader guesses from the keys); an unreadable config is left to the loader to report."""
  try:
    name = read_raw_config(directory).get("_class_name")
  except CheckpointError:
    return None
  return name if isinstance(name, str) else None


def generic_class_name(directory) -> str | None:
  """The class of a checkpoint that has no adapter (the generic path runs it), else ``None``."""
  name = raw_class_name(directory)
  return name if name is not None and name not in models.ADAPTERS else None


def load_runner(
  name: str,
  builders: Mapping[str, BuildBackend],
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None,
  dtype: str,
  mesh: Mesh | str | None,
  cache_dir: str | os.PathLike | bool | None,
  revision: str | None,
  runner_class: type[Runner] = Runner,
) -> Runner:
  """Checks the arguments before any work, reads the checkpoint, lets the path build its steps.

  ``builders``: the path's backend builder per diffusers class name (its supported models); a
  checkpoint of another class is refused with :class:`UnsupportedModelError` naming them, from its
  ``config.json`` alone (before any weights are read). ``runner_class``: :class:`Runner` or a
  path's subclass of it.
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
  mesh = mesh_lib.make_mesh(mesh)
  cache = enable_compilation_cache(cache_dir)
  directory = resolve_checkpoint_dir(pretrained_model_name_or_path, subfolder=subfolder, revision=revision)
  config = read_config(directory)
  adapter = models.adapter_for(config)
  build = builders.get(adapter.class_name)
  if build is None:
    raise UnsupportedModelError(
      f"{directory}: the {name} path has no {adapter.class_name} yet; it runs "
      f"{models.supported(list(builders))}"
      + (" (torchax_vae.load runs every supported VAE)" if name != "torchax" else "")
    )
  checkpoint = Checkpoint(config=config, weights=read_weights(weight_files(directory)), directory=directory)
  store_dir = executable_dir(cache)
  steps, params, extras = build(checkpoint, dtype, mesh, executable_dir=store_dir)
  runner = runner_class(steps, params, adapter, mesh=mesh, dtype=dtype, name=name, executable_dir=store_dir)
  for attribute, value in extras.items():
    setattr(runner, attribute, value)
  return runner
