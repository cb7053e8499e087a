"""LTX-2 (``AutoencoderKLLTX2Video``) through its adapter (LTX-Video's tiling and steps, LTX-2's blocks,
a causal decoder), against diffusers PyTorch on the same weights (fp32 max abs ≤ 1e-4)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers import randn, torch_encode_mean

torch = pytest.importorskip("torch")

import torchax_vae  # noqa: E402
from compare.checkpoints import TINY_LTX2_VIDEO  # noqa: E402
from conftest import shared_checkpoint  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def ltx2_dir(tmp_path_factory):
  return shared_checkpoint(tmp_path_factory, "tiny-ltx-2", TINY_LTX2_VIDEO)


@pytest.fixture(scope="module")
def ltx2(ltx2_dir):
  """The file's fp32 runner (programs of one shape built once; the store serves them across workers);
  a test that sets ``use_framewise_decoding`` takes a ``copy.copy``."""
  return torchax_vae.load(ltx2_dir)


@pytest.fixture(scope="module")
def ltx2_torch(ltx2_dir):
  from diffusers import AutoencoderKLLTX2Video

  return AutoencoderKLLTX2Video.from_pretrained(ltx2_dir).eval()


def _torch_decode(model, z, temb, framewise=False):
  reference = copy.deepcopy(model)
  reference.use_framewise_decoding = framewise
  with torch.no_grad():
    return reference.decode(torch.from_numpy(z), torch.from_numpy(temb)).sample.numpy()


@pytest.mark.parametrize(("frames", "framewise"), [(2, False), (4, False), (5, True), (8, True)])
def test_decode_matches_diffusers(ltx2, ltx2_torch, frames, framewise):
  """One call (diffusers' default) and frame tiles (``use_framewise_decoding``; 3 latent frames every 1,
  a later tile without its last frame; T=5 and 8 the same two programs), batch 2, non-square."""
  vae = copy.copy(ltx2)
  vae.use_framewise_decoding = framewise
  assert (vae.temporal_tiles("decode", frames) is not None) == framewise
  z, temb = randn(2, 8, frames, 2, 3, seed=frames), np.array([0.05, 0.3], np.float32)
  out = np.asarray(vae.decode(z, temb))
  expected = _torch_decode(ltx2_torch, z, temb, framewise)
  assert out.shape == expected.shape == vae.adapter.decoded_shape(z.shape)
  assert float(np.abs(out - expected).max()) <= TOL


@pytest.mark.parametrize(("frames", "framewise"), [(9, False), (25, True)])
def test_encode_matches_diffusers(ltx2, ltx2_torch, frames, framewise):
  vae = copy.copy(ltx2)
  reference = copy.deepcopy(ltx2_torch)
  vae.use_framewise_decoding = reference.use_framewise_decoding = framewise  # diffusers' _encode reads that flag
  x = np.tanh(randn(1, 3, frames, 16, 24, seed=frames))
  got = np.asarray(vae.encode(x))
  expected = torch_encode_mean(reference, x)
  assert got.shape == expected.shape
  assert float(np.abs(got - expected).max()) <= TOL


def test_programs_do_not_grow_with_t(ltx2_dir):
  vae = torchax_vae.load(ltx2_dir, cache_dir=False)
  vae.use_framewise_decoding = True
  for t in (5, 9, 16):
    vae.decode(randn(1, 8, t, 2, 2, seed=t), 0.05)
  assert vae.trace_counts == {"decode_first": 2}


def test_pipeline_latents(ltx2, ltx2_torch):
  """``decode_latents`` of ``LTX2Pipeline``'s ``output_type="latent"`` video latents (unpacked and
  de-normalised): re-normalised, mixed with the decode noise (the pipeline's generator), de-normalised
  and decoded at the timestep — as the pipeline's own decode."""
  from diffusers import LTX2Pipeline
  from diffusers.utils.torch_utils import randn_tensor

  vae = ltx2
  model = ltx2_torch
  normalised = torch.from_numpy(randn(1, 8, 2, 2, 3, seed=7))
  output = LTX2Pipeline._denormalize_latents(normalised, model.latents_mean, model.latents_std, model.config.scaling_factor)
  video = np.asarray(torchax_vae.decode_latents(vae, output.numpy(), decode_timestep=0.05, decode_noise_scale=0.025,
                                                generator=torch.Generator().manual_seed(3)))  # fmt: skip
  noise = randn_tensor(normalised.shape, generator=torch.Generator().manual_seed(3), dtype=normalised.dtype)
  mixed = (1 - 0.025) * normalised + 0.025 * noise
  latents = LTX2Pipeline._denormalize_latents(mixed, model.latents_mean, model.latents_std, model.config.scaling_factor)
  with torch.no_grad():
    expected = model.decode(latents, torch.tensor([0.05])).sample.numpy()
  assert float(np.abs(video - expected).max()) <= TOL


def test_causal_other_than_the_configs_is_refused(ltx2):
  drop_in = ltx2.as_diffusers()
  with pytest.raises(TypeError, match="causal other than the default"):
    drop_in.decode(torch.zeros(1, 8, 2, 2, 2), torch.tensor([0.05]), False)


def test_preset_is_the_conversion_scripts_config():
  """``ltx-2``: diffusers' ``convert_ltx2_to_diffusers.py`` (version "2.0") — diffusers' defaults but a
  non-causal decoder; read by our config class to the same values diffusers builds from it."""
  import inspect

  from diffusers import AutoencoderKLLTX2Video

  from compare.checkpoints import PRESETS
  from torchax_vae.core.models import adapter_for, config_from_dict

  parameters = inspect.signature(AutoencoderKLLTX2Video.__init__).parameters
  expected = {k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in parameters.items() if k != "self"}
  expected.update(decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8)
  config = config_from_dict(PRESETS["ltx-2"])
  assert config.to_dict() == expected
  assert adapter_for(config).decoded_shape((1, 128, 16, 22, 38)) == (1, 3, 121, 704, 1216)


@pytest.mark.multidevice
def test_sharded_equals_unsharded_without_gathers(ltx2, ltx2_dir):
  """dp=2,tp=4 (batch 3 on dp=2, padded): the same frames; no all-gather and no all-reduce in the
  program (the one the decode built) — LTX-2's norms are per position and it has no attention, so
  only halos move."""
  from compare.collectives import count_collectives, step_hlo

  sharded = torchax_vae.load(ltx2_dir, mesh="dp=2,tp=4")
  z, temb = randn(3, 8, 3, 2, 8, seed=21), np.array([0.05, 0.5, 0.2], np.float32)
  np.testing.assert_allclose(sharded.decode(z, temb), ltx2.decode(z, temb), atol=1e-5, rtol=0)
  (text,) = step_hlo(sharded, z.shape)
  counts = count_collectives(text)
  assert counts["all-gather"] == 0 and counts["all-reduce"] == 0 and counts["collective-permute"] > 0, counts
