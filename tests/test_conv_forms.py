"""The 3D convolution's form is a per-platform choice (``torchax_vae.core.conv``): per-time-tap 2D
convolutions on CPU, one 3D convolution on TPU/GPU, ``TORCHAX_VAE_CONV=taps|3d`` to override. Both forms
are exact: here the form XLA:CPU does not default to (one 3D convolution) runs both paths on both models
against diffusers, is what the programs contain, and keys the stored executables."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from helpers import loaders, randn, torch_decode, torch_encode_mean

from torchax_vae.core import conv as conv_lib

FP32_TOL = 1e-4  # max abs, fp32, the project's bar


def test_default_form_is_per_platform(monkeypatch):
  monkeypatch.delenv(conv_lib.ENV_VAR, raising=False)
  assert conv_lib.conv3d_form("cpu") == "taps"
  assert conv_lib.conv3d_form("gpu") == "3d" and conv_lib.conv3d_form("tpu") == "3d"
  assert conv_lib.conv3d_form() == ("taps" if jax.default_backend() == "cpu" else "3d")
  monkeypatch.setenv(conv_lib.ENV_VAR, "3d")
  assert conv_lib.conv3d_form("cpu") == "3d"
  with conv_lib.using_form("taps"):  # what a loaded model traces with wins over the environment
    assert conv_lib.conv3d_form("cpu") == "taps"
  monkeypatch.setenv(conv_lib.ENV_VAR, "im2col")
  with pytest.raises(ValueError, match=r"\$TORCHAX_VAE_CONV='im2col': expected one of taps, 3d"):
    conv_lib.conv3d_form()


def _convolution_ranks(runner, z) -> set[int]:
  """Spatial ranks of the convolutions in the lowered first decode step (2: 2D, 3: 3D)."""
  first, _ = runner.step_programs("decode")
  z = runner._prepare(z)
  text = first.lower(runner.params, runner._slice_time(z, 0, runner.plan("decode", z.shape[2])[0].end)).as_text()
  return {len(m.split(",")) - 2 for m in re.findall(r"dim_numbers = \[([^\]]*)\]x", text)}


# Each path on one model (CI time): the form is the shared core.conv's, the models' convolutions differ.
@pytest.mark.parametrize(("path", "model"), [("torchax", "wan2.2"), ("native_flax", "cogvideox")])
def test_one_3d_convolution_is_exact(path, model, tiny_dir, tiny_torch, tiny_wan_dirs, tiny_wan_torch, monkeypatch):
  directory, reference = (tiny_dir, tiny_torch) if model == "cogvideox" else (tiny_wan_dirs["2.2"], tiny_wan_torch["2.2"])
  monkeypatch.setenv(conv_lib.ENV_VAR, "3d")
  vae = loaders()[path](directory, cache_dir=False)
  assert vae.steps.fingerprint["conv3d"] == "3d" and '"conv3d": "3d"' in vae.programs.fingerprint
  z = randn(1, 4, 4 if model == "cogvideox" else 2, 4, 6, seed=3)  # two frame steps: first and steady
  assert 3 in _convolution_ranks(vae, z)  # the form is what the program contains
  np.testing.assert_allclose(vae.decode(z), torch_decode(reference, z), atol=FP32_TOL, rtol=0)
  s = vae.adapter.spatial_compression
  x = np.tanh(randn(1, 3, 1 if model == "wan2.2" else 8, 2 * s, 3 * s, seed=4))
  np.testing.assert_allclose(vae.encode(x), torch_encode_mean(reference, x), atol=FP32_TOL, rtol=0)


def test_cpu_default_is_taps(tiny_dir, monkeypatch):
  monkeypatch.delenv(conv_lib.ENV_VAR, raising=False)
  vae = loaders()["native_flax"](tiny_dir, cache_dir=False)
  assert vae.steps.fingerprint["conv3d"] == conv_lib.conv3d_form()
  if jax.default_backend() == "cpu":
    assert _convolution_ranks(vae, randn(1, 4, 2, 4, 6)) == {2}  # every 3D convolution as 2D taps
