"""torchax step builders, one module per diffusers video VAE adapter (the adapters' torch side).

Each module has ``module_and_steps(config) -> (module, decode_step, encode_step)``: the unmodified
diffusers class built on the meta device with the hooks its steps need, and its frame steps in torch
terms; and ``SHARDED_LAYERS``, the layers whose outputs are pinned under a mesh.
:mod:`torchax_vae.runtime.adapters` imports a module here (and so torch and diffusers) only when a
program must be traced, and hands its steps to :func:`torchax_vae.tracing.backend.make_steps`.
"""

from __future__ import annotations

import importlib


def builder_module(adapter_name: str):
  """The builder module of an adapter (``"cogvideox"``, ``"wan"``: ``core.models.ADAPTERS``' names)."""
  return importlib.import_module(f"{__name__}.{adapter_name}")
