"""What the torch side (:mod:`torchax_vae.tracing`) and the torch-free side (:mod:`torchax_vae.runtime`)
agree on: the adapters' step layouts, the generic programs' call kinds, output keys and input
shardings. Both import this module; neither imports the other at module level."""

from __future__ import annotations

from jax.sharding import Mesh, PartitionSpec

from ..core import mesh as mesh_lib

# --- the adapters' steps ------------------------------------------------------------------------

LAYOUT = "BCTHW"  # a step's input and output, as diffusers' modules take them
CACHE_LAYOUT = "BTHWC"  # the conv cache between steps, as the channels-last convolutions read and write it

# --- the generic path's programs ----------------------------------------------------------------

DECODE, ENCODE = "decode", "encode"
# Keys the programs' outputs are returned under (a dict: its keys are part of the compiled program's
# output tree, so a deserialized program still tells what its call returned).
SAMPLE = "sample"  # decode's tensor
LATENT = "latent"  # encode's tensor (a deterministic latent, or the posterior's mode)
STD = "std"  # the posterior's standard deviation (Gaussian posteriors)
PARAMETERS = "parameters"  # the posterior's parameters, what its class is built from (mean ‖ logvar)
# "output|<output class>|<field>|<distribution class or ''>" -> a 0-d marker: what diffusers' encode
# returned, for rebuilding it around these tensors (as_diffusers), also from a deserialized program.
OUTPUT = "output"


def spec_for(mesh: Mesh | None, ndim: int) -> PartitionSpec:
  """Batch (axis 0) on ``dp``; for images and videos (rank 4, 5) width (the last axis) on ``tp``."""
  spec: list[str | None] = [None] * ndim
  if mesh is not None:
    if mesh_lib.BATCH_AXIS in mesh.axis_names:
      spec[0] = mesh_lib.BATCH_AXIS
    if mesh_lib.WIDTH_AXIS in mesh.axis_names and ndim >= 4:
      spec[-1] = mesh_lib.WIDTH_AXIS
  return PartitionSpec(*spec)
