"""CogVideoX VAE on JAX: the unmodified diffusers module through torchax.

    vae = torchax_vae.load("THUDM/CogVideoX-2b", subfolder="vae", mesh="dp=2,tp=4")
    video = vae.decode(z)     # as diffusers' vae.decode(z).sample
    video = torchax_vae.decode_latents(vae, latents)   # as CogVideoXPipeline.decode_latents

Command line: ``python -m torchax_vae decode LATENTS -o OUT.mp4`` (see ``--help``).

Importing this package imports neither torch nor torchax (``native_flax`` shares ``core`` and runs
without PyTorch); :func:`load` pulls them in.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from jax.sharding import Mesh

  from .core.driver import Runner

__all__ = ["decode_latents", "load"]


def __getattr__(name: str):
  # Lazy, so that importing the package stays free of jax as well as torch.
  if name == "decode_latents":
    from .pipeline import decode_latents

    return decode_latents
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None = None,
  dtype: str = "float32",
  mesh: Mesh | str | None = None,
  cache_dir: str | os.PathLike | bool | None = None,
  revision: str | None = None,
) -> Runner:
  """Loads a CogVideoX VAE (hub id or local dir) and returns a runner with ``decode``/``encode``.

  Args:
    pretrained_model_name_or_path: ``"THUDM/CogVideoX-2b"`` (with ``subfolder="vae"``), a VAE dir
      with ``config.json``, or a pipeline dir with a ``vae/`` subfolder.
    dtype: ``"float32"`` or ``"bfloat16"``.
    mesh: ``None`` (one device), a ``jax.sharding.Mesh`` or ``"dp=2,tp=4"``: batch on ``dp``,
      width on ``tp``, weights replicated.
    cache_dir: JAX persistent compilation cache dir (default ``$TORCHAX_VAE_CACHE_DIR`` or
      ``~/.cache/torchax_vae/xla``; ``False`` leaves JAX's cache settings alone). Compiled step
      programs are also stored there as serialized executables (``executables/``), so a later
      process starts without tracing; a stored program that does not fit is recompiled.
    revision: hub revision (branch, tag or commit).
  """
  from .core.loading import load_runner

  return load_runner(
    "torchax",
    _build_torchax_backend,
    pretrained_model_name_or_path,
    subfolder=subfolder,
    dtype=dtype,
    mesh=mesh,
    cache_dir=cache_dir,
    revision=revision,
  )


def _build_torchax_backend(checkpoint, dtype, mesh):
  from . import backend
  from .core.checkpoint import check_weights

  module = backend.build_module(checkpoint.config)
  check_weights(checkpoint.weights, backend.expected_shapes(module), str(checkpoint.directory))
  params = backend.place_weights(checkpoint.weights, dtype, mesh)
  if mesh is not None:
    backend.add_sharding_hooks(module, mesh)
  # runner.module: the diffusers module the steps run (meta weights; for inspection).
  return backend.make_steps(module), params, {"module": module}
