"""Tiled decode/encode equal diffusers' tiled_decode/tiled_encode on the same weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import PATHS, loaders, randn

TILED_TOL = 1e-4  # max abs, fp32, as for untiled decode


@pytest.fixture(scope="module", params=PATHS)
def path(request):
  return request.param


@pytest.fixture(scope="module")
def vae(tiny_dir, path):
  return loaders()[path](tiny_dir)


@pytest.mark.parametrize(
  "tiling",
  [
    {},  # diffusers defaults: half the config's sample size, overlaps 1/6 and 1/5
    # 2 x 2 tiles too (14 and 10 latent rows, 20 and 14 columns): 4 tile programs, not 6 as 3 rows would take
    {"tile_sample_min_height": 28, "tile_sample_min_width": 40, "tile_overlap_factor_height": 0.25},
  ],
)
def test_tiled_decode_matches_diffusers(vae, tiny_torch, tiling):
  # Latent 20 x 30 against tiles of 16 x 24 (defaults): tiles overlap at both edges, edge tiles are smaller.
  z = randn(1, 4, 3, 20, 30, seed=2)
  reference = copy.deepcopy(tiny_torch)
  reference.enable_tiling(**tiling)
  vae.enable_tiling(**tiling)
  try:
    out = vae.decode(z)
  finally:
    vae.disable_tiling()
  with torch.no_grad():
    ref = reference.decode(torch.from_numpy(z)).sample.numpy()
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=TILED_TOL, rtol=0)
  # Tiling really changed the computation: seams are blended (and diffusers' stitching of these
  # tiles even yields one more row and column than an untiled decode).
  untiled = vae.decode(z)
  assert np.abs(out[..., : untiled.shape[3], : untiled.shape[4]] - untiled).max() > 1e-3


def test_tiled_encode_matches_diffusers(tiny_dir, path, tiny_torch):
  # a fresh runner: enable_tiling keeps the values an earlier call set (as diffusers' module does)
  vae = loaders()[path](tiny_dir)
  x = np.tanh(randn(1, 3, 9, 40, 60, seed=3))
  reference = copy.deepcopy(tiny_torch)
  reference.enable_tiling()
  vae.enable_tiling()
  try:
    mean = vae.encode(x)
  finally:
    vae.disable_tiling()
  with torch.no_grad():
    ref = reference.encode(torch.from_numpy(x)).latent_dist.mode().numpy()
  np.testing.assert_allclose(mean, ref, atol=TILED_TOL, rtol=0)


def test_small_inputs_are_not_tiled(vae):
  z = randn(1, 4, 2, 4, 6, seed=4)  # a shape tests/test_torchax_vae.py and test_native_vae.py decode
  untiled = vae.decode(z)
  vae.enable_tiling()
  try:
    np.testing.assert_array_equal(vae.decode(z), untiled)
  finally:
    vae.disable_tiling()


def test_tile_programs_are_reused(tiny_dir, path):
  vae = loaders()[path](tiny_dir, cache_dir=False)  # no stored executables: every program is traced here
  vae.enable_tiling()
  vae.decode(randn(1, 4, 4, 20, 30))  # 2 x 2 tiles of 4 distinct shapes, 2 frame steps each
  first = vae.trace_counts["decode_first"]
  assert first == 4 and vae.trace_counts["decode_steady"] == 4
  vae.decode(randn(1, 4, 6, 20, 30, seed=1))  # more frame steps, same tile shapes: nothing new
  assert vae.trace_counts == {"decode_first": 4, "decode_steady": 4}
