"""native_flax end to end through the shared driver, against diffusers PyTorch on the same weights."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import randn, torch_decode, torch_encode_mean

import native_flax
from torchax_vae.core.models.cogvideox import decoded_num_frames

FP32_TOL = 1e-4  # max abs, full model, fp32 (the project's bar)
BF16_TOL = 0.25  # max abs, real config, bf16 weights and activations (measured: see the test)


@pytest.fixture(scope="module")
def vae(tiny_dir):
  return native_flax.load(tiny_dir)


@pytest.mark.parametrize("shape", [(1, 4, 1, 4, 6), (1, 4, 2, 4, 6), (2, 4, 3, 4, 6), (1, 4, 5, 6, 4), (2, 4, 4, 4, 4)])
def test_decode_matches_diffusers(vae, tiny_torch, shape):
  z = randn(*shape, seed=sum(shape))
  out = vae.decode(z)
  ref = torch_decode(tiny_torch, z)
  assert out.shape == ref.shape == (shape[0], 3, decoded_num_frames(shape[2], vae.config), 2 * shape[3], 2 * shape[4])
  np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)


@pytest.mark.parametrize("frames", [1, 9, 17])
def test_encode_mean_matches_diffusers(vae, tiny_torch, frames):
  x = np.tanh(randn(2, 3, frames, 16, 24, seed=frames))
  np.testing.assert_allclose(vae.encode(x), torch_encode_mean(tiny_torch, x), atol=FP32_TOL, rtol=0)


def test_encode_sample_uses_the_key(vae, tiny_torch):
  x = np.tanh(randn(1, 3, 9, 16, 16, seed=3))
  a, b = vae.encode(x, key=jax.random.key(0)), vae.encode(x, key=jax.random.key(0))
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - vae.encode(x, key=jax.random.key(1))).max() > 1e-3
  with torch.no_grad():
    std = tiny_torch.encode(torch.from_numpy(x)).latent_dist.std.numpy()
  noise = (a - vae.encode(x)) / std
  assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1, (noise.mean(), noise.std())


def test_input_kinds_round_trip(vae, tiny_torch):
  z = randn(1, 4, 2, 4, 4, seed=7)
  ref = torch_decode(tiny_torch, z)
  assert isinstance(vae.decode(z), np.ndarray)
  assert isinstance(vae.decode(torch.from_numpy(z)), torch.Tensor)
  out = vae.decode(jnp.asarray(z))
  assert isinstance(out, jax.Array)
  np.testing.assert_allclose(np.asarray(out), ref, atol=FP32_TOL, rtol=0)


def test_steps_compile_once_whatever_t(tiny_dir):
  vae = native_flax.load(tiny_dir, cache_dir=False)  # no stored executables: every program is traced here
  for t in (2, 4, 6, 12, 13, 7):
    vae.decode(randn(1, 4, t, 4, 4))
  assert vae.trace_counts == {"decode_first": 2, "decode_steady": 1}


def test_bad_latents_are_refused(vae):
  with pytest.raises(ValueError, match="expected 4 latent channels on axis 1"):
    vae.decode(np.zeros((1, 16, 2, 4, 4), np.float32))
  with pytest.raises(ValueError, match="NaN or Inf"):
    vae.decode(np.full((1, 4, 2, 4, 4), np.nan, np.float32))


def test_decoding_leaves_torch_out(tiny_dir):
  code = (
    "import sys, numpy as np, native_flax; "
    f"vae = native_flax.load({str(tiny_dir)!r}, cache_dir=False); "
    "out = vae.decode(np.zeros((1, 4, 2, 4, 4), np.float32)); assert out.shape == (1, 3, 4, 8, 8); "
    "bad = [m for m in ('torch', 'torchax', 'diffusers') if m in sys.modules]; assert not bad, bad"
  )
  subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 16, 2, 8, 8), (1, 16, 3, 8, 8)])
def test_real_config_decode_matches_diffusers(real_dir, real_torch, shape):
  vae = native_flax.load(real_dir)
  z = randn(*shape, seed=1)
  out = vae.decode(z)
  ref = torch_decode(real_torch, z)
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)


@pytest.mark.slow
def test_real_config_bfloat16_error(real_dir, real_torch):
  vae = native_flax.load(real_dir, dtype="bfloat16")
  z = randn(1, 16, 2, 8, 8, seed=1)
  out = vae.decode(z)
  assert out.dtype == jnp.bfloat16
  err = np.abs(out.astype(np.float32) - torch_decode(real_torch, z))
  print(f"native_flax bf16 vs torch fp32, real config (1,16,2,8,8): max abs {err.max():.4f}, mean abs {err.mean():.5f}")
  assert err.max() < BF16_TOL
