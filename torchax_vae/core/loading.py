"""What both paths' ``load()`` share: arguments checked, mesh, compile cache, checkpoint, runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from jax.sharding import Mesh

from . import mesh as mesh_lib
from .checkpoint import Checkpoint, load_checkpoint
from .compile_cache import enable_compilation_cache, executable_dir
from .driver import DTYPES, Runner, StepFunctions

# (checkpoint, dtype, mesh) -> (step functions, placed weights, attributes to set on the runner)
BuildBackend = Callable[[Checkpoint, str, Mesh | None], tuple[StepFunctions, Any, dict[str, Any]]]


def load_runner(
  name: str,
  build: BuildBackend,
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None,
  dtype: str,
  mesh: Mesh | str | None,
  cache_dir: str | os.PathLike | bool | None,
  revision: str | None,
) -> Runner:
  """Checks the arguments before any work, reads the checkpoint, lets the path build its steps."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
  mesh = mesh_lib.make_mesh(mesh)
  cache = enable_compilation_cache(cache_dir)
  checkpoint = load_checkpoint(pretrained_model_name_or_path, subfolder=subfolder, revision=revision)
  steps, params, extras = build(checkpoint, dtype, mesh)
  runner = Runner(
    steps, params, checkpoint.config, mesh=mesh, dtype=dtype, name=name, executable_dir=executable_dir(cache)
  )
  for attribute, value in extras.items():
    setattr(runner, attribute, value)
  return runner
