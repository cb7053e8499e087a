"""Errors shared by the loader and the model adapters (torch-free)."""

from __future__ import annotations


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: missing files, corrupt weights, wrong keys or shapes."""


class UnsupportedModelError(CheckpointError):
  """A checkpoint of a VAE class this path has no adapter (or no port) for; the message lists the supported ones."""


class InputError(ValueError):
  """An input a diffusers model's ``decode``/``encode`` cannot take (rank, channels, sizes), found while
  the generic path (``torchax_vae.runtime.generic``) traced the call: nothing ran."""


class StepSizeError(ValueError):
  """A ``frames_per_step`` the model cannot take: not a positive int, or a model whose frame steps are
  diffusers' own and fixed."""


class BridgeError(RuntimeError):
  """diffusers' code does something a traced program cannot (reads a tensor as a Python value, a
  data-dependent shape): the unmodified module does not run through torchax as it is."""
