"""diffusers video VAEs on JAX: the unmodified diffusers module through torchax.

    vae = torchax_vae.load("THUDM/CogVideoX-2b", subfolder="vae", mesh="dp=2,tp=4")
    vae = torchax_vae.load("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", subfolder="vae")
    video = vae.decode(z)     # as diffusers' vae.decode(z).sample
    video = torchax_vae.decode_latents(vae, latents)   # as the model's pipeline turns its latents into video

Supported: ``AutoencoderKLCogVideoX`` (CogVideoX 2b, 5b, 1.5) and ``AutoencoderKLWan`` (Wan 2.1, the
Wan 2.2 A14B models, and the Wan 2.2 TI2V-5B VAE); the class is read from ``config.json``.

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
  """Loads a supported diffusers video VAE (hub id or local dir); returns a runner with ``decode``/``encode``.

  Args:
    pretrained_model_name_or_path: ``"THUDM/CogVideoX-2b"`` or ``"Wan-AI/Wan2.1-T2V-1.3B-Diffusers"``
      (with ``subfolder="vae"``), a VAE dir with ``config.json``, or a pipeline dir with a ``vae/``
      subfolder. ``config.json``'s ``_class_name`` picks the model (an unsupported one is refused
      with the list of supported ones).
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
  from .models import BUILDERS, builder

  return load_runner(
    "torchax",
    {name: _lazy(builder, name) for name in BUILDERS},
    pretrained_model_name_or_path,
    subfolder=subfolder,
    dtype=dtype,
    mesh=mesh,
    cache_dir=cache_dir,
    revision=revision,
  )


def _lazy(builder, class_name):
  # The builder module imports torch and diffusers: only when a checkpoint of its class is loaded.
  return lambda checkpoint, dtype, mesh: builder(class_name)(checkpoint, dtype, mesh)
