"""diffusers' video VAEs as native Flax NNX ports: ``AutoencoderKLCogVideoX`` and ``AutoencoderKLWan``.

    vae = native_flax.load("THUDM/CogVideoX-2b", subfolder="vae", mesh="dp=2,tp=4")
    vae = native_flax.load("Wan-AI/Wan2.2-TI2V-5B-Diffusers", subfolder="vae")
    video = vae.decode(z)     # as diffusers' vae.decode(z).sample; (B, C, T, H, W) in and out

Modules: ``native_flax.autoencoder_kl_cogvideox`` and ``native_flax.autoencoder_kl_wan`` (the NNX
classes, diffusers' names), ``native_flax.layers`` (the PyTorch leaf layers they share),
``native_flax.convert`` (layout rules, weights -> model), ``native_flax.backend`` (step functions).
Nothing here imports torch, torchax or diffusers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from jax.sharding import Mesh

  from torchax_vae.core.driver import Runner
  from torchax_vae.core.target import Target

__all__ = ["load"]


def load(
  pretrained_model_name_or_path: str | os.PathLike,
  *,
  subfolder: str | None = None,
  dtype: str = "float32",
  mesh: Mesh | str | None = None,
  cache_dir: str | os.PathLike | bool | None = None,
  revision: str | None = None,
  target: Target | str | None = None,
  frames_per_step: int | None = None,
) -> Runner:
  """Loads a CogVideoX or Wan VAE (hub id or local dir) into its NNX port; returns the driver's runner.

  Args:
    pretrained_model_name_or_path: ``"THUDM/CogVideoX-2b"`` (with ``subfolder="vae"``), a VAE dir
      with ``config.json``, or a pipeline dir with a ``vae/`` subfolder.
    dtype: ``"float32"`` or ``"bfloat16"`` (parameters and activations).
    mesh: ``None`` (one device), a ``jax.sharding.Mesh`` or ``"dp=2,tp=4"``: batch on ``dp``,
      width on ``tp``, weights replicated.
    cache_dir: JAX persistent compilation cache dir (default ``$TORCHAX_VAE_CACHE_DIR`` or
      ``~/.cache/torchax_vae/xla``; ``False`` leaves JAX's cache settings alone).
    revision: hub revision (branch, tag or commit).
    target: compile for a TPU topology instead of this host's devices, e.g. ``"v6e:2x4"`` (needs the
      TPU compiler set-up installs; no TPU): ``mesh`` is then over its chips (one chip without
      one), the weights are only shapes, ``runner.precompile(latent_shapes)`` compiles with the TPU
      compiler and reports each program (memory per chip, cost); ``decode`` refuses. See docs/tpu.md.
    frames_per_step: Wan only: latent frames per steady decode step (encode: 4x as many video frames
      a step); the result is the same for any value (diffusers decodes 1 at a time), the speed and
      memory are not. ``None``: the platform's default (docs/frames-per-step.md). Each value has
      its own steady program; ``runner.frames_per_step`` changes it later.

  ``runner.decode(z)`` / ``runner.encode(x, key=None)`` take and return diffusers' layout
  ``(B, C, T, H, W)``; ``runner.model`` is the NNX model.
  """
  from torchax_vae.core.loading import load_runner, open_checkpoint

  source, mesh, target = open_checkpoint(
    pretrained_model_name_or_path, subfolder=subfolder, revision=revision, dtype=dtype, mesh=mesh, target=target
  )
  return load_runner(
    "native_flax",
    {"AutoencoderKLCogVideoX": _build_native_backend, "AutoencoderKLWan": _build_native_backend},  # the ports
    source,
    dtype=dtype,
    mesh=mesh,
    cache_dir=cache_dir,
    target=target,
    frames_per_step=frames_per_step,
  )


def _build_native_backend(checkpoint, dtype, mesh, *, executable_dir=None, target=None):
  from . import backend, convert

  # The runner replicates the weights over the mesh (for a target: takes them as shapes); the port
  # keeps nothing in the store.
  del mesh, executable_dir, target
  model = convert.load_model(checkpoint.weights, checkpoint.config, dtype=dtype, source=str(checkpoint.directory))
  params, steps = backend.make_steps(model)
  return steps, params, {"model": model}
