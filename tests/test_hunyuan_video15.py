"""HunyuanVideo 1.5 (``AutoencoderKLHunyuanVideo15``) through its adapter, against diffusers PyTorch on
the same weights (fp32 max abs ≤ 1e-4).

diffusers decodes HunyuanVideo 1.5 in one decoder call whatever T (no frame tiles) and tiles only in
space (``enable_tiling``: latent tiles of 16 every 12, blended by overlap factor); the adapter does the
same, each spatial tile one program. Every layer is causal in time, but the mid-block attention sees
all earlier frames, so there is no fixed-program streaming plan (``core.models.hunyuan_video15``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn, torch_decode, torch_encode_mean, with_attributes

torch = pytest.importorskip("torch")

import torchax_vae  # noqa: E402
from compare.checkpoints import PRESETS, TINY_HUNYUAN_VIDEO15  # noqa: E402
from conftest import shared_checkpoint  # noqa: E402
from torchax_vae.core.errors import CheckpointError, UnsupportedModelError  # noqa: E402

TOL = 1e-4
SHARDED_TOL = 1e-5
# The batch test's latents and videos are the sharded test's (2x8 latent px: the width splits over tp=4),
# so its unsharded half runs programs already built (the store serves them across workers).
BATCH_Z, BATCH_X = (2, 4, 3, 2, 8), (2, 3, 5, 8, 32)


@pytest.fixture(scope="module")
def hv15_dir(tmp_path_factory):
  return shared_checkpoint(tmp_path_factory, "tiny-hunyuanvideo-1.5", TINY_HUNYUAN_VIDEO15)


@pytest.fixture(scope="module")
def hv15_torch(hv15_dir):
  from diffusers import AutoencoderKLHunyuanVideo15

  return AutoencoderKLHunyuanVideo15.from_pretrained(hv15_dir).eval()


@pytest.fixture(scope="module")
def hv15(hv15_dir):
  return torchax_vae.load(hv15_dir)


@pytest.mark.parametrize("frames", [1, 6])
def test_decode_matches_diffusers(hv15, hv15_torch, frames):
  z = randn(1, 4, frames, 3, 5, seed=frames)  # non-square
  out = np.asarray(hv15.decode(z))
  expected = torch_decode(hv15_torch, z)
  assert out.shape == expected.shape == (1, 3, 1 + 4 * (frames - 1), 12, 20)
  assert float(np.abs(out - expected).max()) <= TOL


def test_batch_decodes_as_diffusers_slicing(hv15, hv15_torch):
  """diffusers' own batched call raises (its ``(B, L, L)`` attention mask does not broadcast against
  ``(B, 1, L, L)`` scores); a batch here equals diffusers' ``use_slicing`` (each sample alone)."""
  z = randn(*BATCH_Z, seed=2)
  with pytest.raises(RuntimeError), torch.no_grad():
    hv15_torch.decode(torch.from_numpy(z))
  expected = torch_decode(with_attributes(hv15_torch, use_slicing=True), z)
  assert float(np.abs(np.asarray(hv15.decode(z)) - expected).max()) <= TOL
  x = np.tanh(randn(*BATCH_X, seed=3))
  expected = torch_encode_mean(with_attributes(hv15_torch, use_slicing=True), x)
  got = np.asarray(hv15.encode(x))
  assert got.shape == expected.shape == (2, 4, 2, 2, 8)
  assert float(np.abs(got - expected).max()) <= TOL


def test_encode_matches_diffusers(hv15, hv15_torch):
  x = np.tanh(randn(1, 3, 9, 12, 20, seed=9))
  got = np.asarray(hv15.encode(x))
  expected = torch_encode_mean(hv15_torch, x)
  assert got.shape == expected.shape == (1, 4, 3, 3, 5)
  assert float(np.abs(got - expected).max()) <= TOL


def test_attention_mask_is_diffusers(hv15_torch):
  """The override builds diffusers' ``prepare_causal_attention_mask`` values (3 frames of 2x3 tokens)."""
  from diffusers.models.autoencoders.autoencoder_kl_hunyuanvideo15 import HunyuanVideo15AttnBlock

  from torchax_vae.tracing.models.hunyuan_video15 import causal_attention_mask

  expected = HunyuanVideo15AttnBlock.prepare_causal_attention_mask(3, 6, torch.float32, "cpu", batch_size=2)
  got = causal_attention_mask(3, 6, torch.float32, "cpu", batch_size=2)
  assert got.shape == (18, 18) and torch.equal(got.expand(2, -1, -1), expected)


# Latent tiles of 2 every 1 (8 sample px, blend 4, keep 4): decode of 2x3 latents (the smallest with
# two tile rows and three columns) runs tiles of 2x2, 2x1, 1x2, 1x1 latent px — four programs, each
# over all frames; encode of 8x12 px, tiles of 8x8, 8x4, 4x8 and 4x4 px.
SMALL_TILES = dict(tile_sample_min_height=8, tile_sample_min_width=8, tile_latent_min_height=2, tile_latent_min_width=2,
                   tile_overlap_factor=0.5)  # fmt: skip


def test_tiled_decode_and_encode_match_diffusers(hv15_dir, hv15_torch):
  vae = torchax_vae.load(hv15_dir, cache_dir=False)
  vae.enable_tiling(**SMALL_TILES)
  reference = with_attributes(hv15_torch, tiling=SMALL_TILES)
  z = randn(1, 4, 3, 2, 3, seed=5)
  expected = torch_decode(reference, z)
  out = np.asarray(vae.decode(z))
  assert out.shape == expected.shape == (1, 3, 9, 8, 12)
  assert float(np.abs(out - expected).max()) <= TOL
  assert vae.trace_counts == {"decode_first": 4}
  x = np.tanh(randn(1, 3, 5, 8, 12, seed=6))
  assert vae.tile_grid("encode", 8, 12) is not None
  expected = torch_encode_mean(reference, x)
  got = np.asarray(vae.encode(x))
  assert got.shape == expected.shape == (1, 4, 2, 2, 3)
  assert float(np.abs(got - expected).max()) <= TOL


def test_bfloat16(hv15_dir, hv15_torch):
  vae = torchax_vae.load(hv15_dir, dtype="bfloat16")
  z = randn(1, 4, 5, 3, 5, seed=11)
  out = vae.decode(z)
  assert out.dtype == jnp.bfloat16
  err = np.abs(out.astype(np.float32) - torch_decode(hv15_torch, z))
  print(f"HunyuanVideo 1.5 tiny, torchax bf16 vs torch fp32, (1,4,5,3,5): max abs {err.max():.4f}, mean {err.mean():.5f}")
  assert err.max() < 0.1


def test_pipeline_latents(hv15, hv15_torch):
  """``decode_latents``: ``HunyuanVideo15Pipeline``'s ``latents.to(vae.dtype) / scaling_factor``, then decode."""
  latents = randn(1, 4, 6, 3, 5, seed=4)  # test_decode_matches_diffusers[6]'s program
  video = np.asarray(torchax_vae.decode_latents(hv15, latents))
  with torch.no_grad():
    expected = hv15_torch.decode(torch.from_numpy(latents) / hv15_torch.config.scaling_factor).sample.numpy()
  assert float(np.abs(video - expected).max()) <= TOL
  z = hv15.adapter.latents_from_encode(jnp.asarray(latents))  # the image-to-video pipeline's image latents
  np.testing.assert_allclose(np.asarray(hv15.adapter.latents_for_decode(z)), latents, rtol=1e-6)


def test_bad_input_is_refused(hv15, tmp_path):
  with pytest.raises(ValueError, match="expected 4 latent channels"):
    hv15.decode(randn(1, 3, 2, 2, 3))
  with pytest.raises(ValueError, match=r"expected 1 \+ 4k frames and height and width divisible by 4"):
    hv15.encode(randn(1, 3, 6, 8, 8))
  with pytest.raises(ValueError, match="divisible by 4"):
    hv15.encode(randn(1, 3, 5, 8, 10))
  bad = dict(TINY_HUNYUAN_VIDEO15, block_out_channels=[8, 16, 12])
  (tmp_path / "config.json").write_text(__import__("json").dumps(bad))
  with pytest.raises(CheckpointError, match="must be a multiple of 2 \\* latent_channels"):
    torchax_vae.load(tmp_path, cache_dir=False)


def test_native_path_names_the_bridge(hv15_dir):
  import native_flax

  with pytest.raises(UnsupportedModelError, match="native_flax path has no AutoencoderKLHunyuanVideo15"):
    native_flax.load(hv15_dir)


def test_preset_is_the_released_config():
  """The preset is diffusers' defaults (HunyuanVideo 1.5's VAE), and our config's defaults are diffusers'."""
  import inspect

  from diffusers import AutoencoderKLHunyuanVideo15

  from torchax_vae.core.models import config_from_dict

  assert PRESETS["hunyuanvideo-1.5"] == {"_class_name": "AutoencoderKLHunyuanVideo15"}
  parameters = inspect.signature(AutoencoderKLHunyuanVideo15.__init__).parameters
  defaults = {k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in parameters.items() if k != "self"}
  assert config_from_dict(PRESETS["hunyuanvideo-1.5"]).to_dict() == defaults


@pytest.mark.multidevice
def test_sharded_equals_unsharded_and_gathers_qkv(hv15, hv15_dir):
  """dp=2,tp=4: sharded equals unsharded. The program's only all-gathers are the mid-block attention's
  query, key and value at latent resolution (its 1x1 convs keep the width split; the attention flattens
  ``T h w`` into one token axis with a causal mask over all of them, so every device needs every
  position); every conv and norm elsewhere keeps the split (halo exchanges: collective-permutes). The
  unsharded half is ``test_batch_decodes_as_diffusers_slicing``'s programs."""
  import re

  from compare.collectives import count_collectives, step_hlo

  vae = hv15
  sharded = torchax_vae.load(hv15_dir, mesh="dp=2,tp=4")
  z = randn(*BATCH_Z, seed=13)
  np.testing.assert_allclose(sharded.decode(z), vae.decode(z), atol=SHARDED_TOL, rtol=0)
  x = np.tanh(randn(*BATCH_X, seed=5))
  np.testing.assert_allclose(sharded.encode(x), vae.encode(x), atol=SHARDED_TOL, rtol=0)
  (text,) = step_hlo(sharded, z.shape)  # the decode's own program, already built
  counts = count_collectives(text)
  assert counts["all-gather"] == 3 and counts["all-reduce"] == 0 and counts["collective-permute"] > 0, counts
  gathered = re.findall(r"= f32\[([\d,]+)\]\{[^}]*\} all-gather\(", text)
  channels = sharded.config.block_out_channels[-1]
  # per dp shard: 1 sample x 3 latent frames x height 2 x width 8 x the attention's channels
  assert [sorted(map(int, g.split(","))) for g in gathered] == [sorted([1, 3, 2, 8, channels])] * 3, gathered
