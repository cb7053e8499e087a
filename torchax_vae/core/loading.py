"""What every ``load()`` shares: arguments checked, mesh, checkpoint resolved and its config read once, compile
cache, adapter, runner."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jax.sharding import Mesh

from . import mesh as mesh_lib
from . import models
from . import target as target_lib
from .checkpoint import Checkpoint, ResolvedCheckpoint, read_raw_config, read_weights, resolve_checkpoint, weight_files
from .compile_cache import enable_compilation_cache, executable_dir
from .driver import DTYPES, Runner, StepFunctions
from .errors import CheckpointError, UnsupportedModelError
from .target import Target

# (checkpoint, dtype, mesh, executable_dir=, target=) -> (step functions, placed weights, attributes to
# set on the runner). ``executable_dir``: the runner's store of compiled programs (None: none), where a
# backend may keep what a later start needs to know of its programs without building its model.
# ``target``: a compile-only TPU topology (core.target) or None; with one, the weights need only be
# shapes (the runner takes every leaf as a shape on the target's chips).
BuildBackend = Callable[..., tuple[StepFunctions, Any, dict[str, Any]]]


def generic_class_name(directory) -> str | None:
  """The class of a checkpoint directory that has no adapter (the generic path runs it), else ``None``
  (an unreadable config is left to ``load`` to report)."""
  try:
    source = ResolvedCheckpoint(Path(directory), read_raw_config(Path(directory)))
  except CheckpointError:
    return None
  return None if source.has_adapter else source.class_name


def open_checkpoint(
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None,
  revision: str | None,
  dtype: str,
  mesh: Mesh | str | None,
  target: Target | str | None = None,
) -> tuple[ResolvedCheckpoint, Mesh | None, Target | None]:
  """What every ``load()`` does first, before any weights are read: the arguments checked, the target
  opened (a TPU topology, e.g. ``"v6e:2x4"``: the mesh is made over its chips), the mesh made, the
  checkpoint resolved and its ``config.json`` read (once; the tier that runs it is handed what was read)."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
  target = None if target is None else target_lib.open_target(target)
  if target is not None and isinstance(mesh, Mesh) and not set(mesh.devices.flat) <= set(target.devices):
    raise mesh_lib.MeshError(f"mesh: its devices are not the chips of the target {target.name}; give a spec such as 'dp=2,tp=4'")
  mesh = mesh_lib.make_mesh(mesh, devices=None if target is None else list(target.devices))
  return resolve_checkpoint(pretrained_model_name_or_path, subfolder=subfolder, revision=revision), mesh, target


def load_runner(
  name: str,
  builders: Mapping[str, BuildBackend],
  source: ResolvedCheckpoint,
  *,
  dtype: str,
  mesh: Mesh | None,
  cache_dir: str | os.PathLike | bool | None,
  runner_class: type[Runner] = Runner,
  target: Target | None = None,
  frames_per_step: int | None = None,
) -> Runner:
  """The adapter's runner of ``source`` (from :func:`open_checkpoint`): reads the weights, lets the
  path build its steps.

  ``builders``: the path's backend builder per diffusers class name (its supported models); a
  checkpoint of another class is refused with :class:`UnsupportedModelError` naming them, from its
  config alone (before any weights are read). ``runner_class``: :class:`Runner` or a path's
  subclass of it.
  """
  directory = source.directory
  config = source.config()
  adapter = models.adapter_for(config)
  build = builders.get(adapter.class_name)
  if build is None:
    raise UnsupportedModelError(
      f"{directory}: the {name} path has no {adapter.class_name} yet; it runs "
      f"{models.supported(list(builders))}"
      + (" (torchax_vae.load runs every supported VAE)" if name != "torchax" else "")
    )
  if frames_per_step is not None:  # before any weights are read or caches set up
    adapter.check_frames_per_step(frames_per_step)
  cache = enable_compilation_cache(cache_dir)
  checkpoint = Checkpoint(config=config, weights=read_weights(weight_files(directory)), directory=directory)
  store_dir = executable_dir(cache)
  # The backend's per-platform choices (the 3D convolution form in its programs' key) are the target's.
  with target_lib.compiling_for(None if target is None else target.platform):
    steps, params, extras = build(checkpoint, dtype, mesh, executable_dir=store_dir, target=target)
  runner = runner_class(
    steps, params, adapter, mesh=mesh, dtype=dtype, name=name, executable_dir=store_dir, target=target,
    frames_per_step=frames_per_step,
  )
  for attribute, value in extras.items():
    setattr(runner, attribute, value)
  return runner
