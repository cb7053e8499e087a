"""diffusers video VAEs on JAX: the unmodified diffusers module through torchax.

    vae = torchax_vae.load("THUDM/CogVideoX-2b", subfolder="vae", mesh="dp=2,tp=4")
    vae = torchax_vae.load("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", subfolder="vae")
    video = vae.decode(z)     # as diffusers' vae.decode(z).sample
    video = torchax_vae.decode_latents(vae, latents)   # as the model's pipeline turns its latents into video

Every autoencoder class diffusers exports loads; the class is read from ``config.json``. Those with an
adapter — ``AutoencoderKLCogVideoX`` (CogVideoX 2b, 5b, 1.5) and ``AutoencoderKLWan`` (Wan 2.1, the
Wan 2.2 A14B models, and the Wan 2.2 TI2V-5B VAE) — run as fixed frame-step programs whatever the
video's length; every other class runs through the generic path (:mod:`torchax_vae.runtime.generic`): the
module's own ``decode``/``encode``, one program per input signature.

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
  from .core.target import Target
  from .runtime.generic import GenericRunner

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
  generic: bool = False,
  target: Target | str | None = None,
  frames_per_step: int | None = None,
) -> Runner | GenericRunner:
  """Loads a diffusers autoencoder (hub id or local dir); returns a runner with ``decode``/``encode``.

  Args:
    pretrained_model_name_or_path: ``"THUDM/CogVideoX-2b"`` or ``"Wan-AI/Wan2.1-T2V-1.3B-Diffusers"``
      (with ``subfolder="vae"``), a VAE dir with ``config.json``, or a pipeline dir with a ``vae/``
      subfolder. ``config.json``'s ``_class_name`` picks the model: its adapter (a
      :class:`~torchax_vae.core.driver.Runner`), else the generic path
      (:class:`~torchax_vae.runtime.generic.GenericRunner`); a class diffusers does not export is refused.
    dtype: ``"float32"`` or ``"bfloat16"``.
    mesh: ``None`` (one device), a ``jax.sharding.Mesh`` or ``"dp=2,tp=4"``: batch on ``dp``,
      width on ``tp``, weights replicated.
    cache_dir: JAX persistent compilation cache dir (default ``$TORCHAX_VAE_CACHE_DIR`` or
      ``~/.cache/torchax_vae/xla``; ``False`` leaves JAX's cache settings alone). Compiled step
      programs are also stored there as serialized executables (``executables/``), so a later
      process starts without tracing; a stored program that does not fit is recompiled.
    revision: hub revision (branch, tag or commit).
    target: compile for a TPU topology instead of this host's devices, e.g. ``"v6e:2x4"`` (needs the
      TPU compiler set-up installs; no TPU): ``mesh`` is then over its chips (one chip without
      one), the weights are only shapes, ``runner.precompile(latent_shapes)`` compiles with the TPU
      compiler and reports each program (memory per chip, cost); ``decode`` refuses. See docs/tpu.md.
    generic: run the class through the generic path even where it has an adapter (diffusers' own
      ``decode``/``encode`` traced whole, one program per input signature): for comparing the two
      (``compare.bench --paths generic``); exact either way.
    frames_per_step: Wan only: latent frames per steady decode step (encode: 4x as many video frames
      a step); the result is the same for any value (diffusers decodes 1 at a time), the speed and
      memory are not. ``None``: the platform's default (docs/frames-per-step.md). Each value has
      its own steady program; ``runner.frames_per_step`` changes it later.
  """
  from .core.compile_cache import enable_compilation_cache
  from .core.loading import load_runner, open_checkpoint

  source, mesh, target = open_checkpoint(
    pretrained_model_name_or_path, subfolder=subfolder, revision=revision, dtype=dtype, mesh=mesh, target=target
  )
  if generic or not source.has_adapter:
    if frames_per_step is not None:
      from .core.errors import StepSizeError

      raise StepSizeError(
        f"frames_per_step: {source.class_name} runs through the generic path here (diffusers' own decode, "
        "its own frame loop); only an adapter's runner (Wan) takes it"
      )
    # No adapter: the unmodified module's own decode/encode, one program per call signature.
    from .runtime.generic import load_generic

    return load_generic(source, dtype=dtype, mesh=mesh, cache_dir=enable_compilation_cache(cache_dir), target=target)
  # An adapter's steps import torch, torchax and diffusers only when a program must be traced: a
  # warm start from stored executables imports none of them (torchax_vae.runtime.adapters).
  from .core.models import ADAPTERS
  from .runtime import adapters

  return load_runner(
    "torchax",
    dict.fromkeys(ADAPTERS, adapters.build),
    source,
    dtype=dtype,
    mesh=mesh,
    cache_dir=cache_dir,
    target=target,
    runner_class=adapters.TorchaxRunner,
    frames_per_step=frames_per_step,
  )
