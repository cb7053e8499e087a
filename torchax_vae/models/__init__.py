"""torchax step builders, one module per diffusers video VAE class (the adapters' torch side).

Each module has ``build(checkpoint, dtype, mesh) -> (StepFunctions, params, extras)``: the
unmodified diffusers class built on the meta device, the hooks it needs from outside (sharding,
cache bookkeeping), and its frame steps in torch terms handed to :func:`torchax_vae.backend.make_steps`.
"""

from __future__ import annotations

import importlib

from ..core.models import ADAPTERS

# diffusers class name -> module here, named as its adapter (imported on use: each pulls in torch
# and diffusers). Every supported model has one: the torchax path runs them all.
BUILDERS = {class_name: adapter.name for class_name, adapter in ADAPTERS.items()}


def builder(class_name: str):
  """The ``build`` function for a diffusers class (one of :data:`BUILDERS`)."""
  return importlib.import_module(f"{__name__}.{BUILDERS[class_name]}").build
