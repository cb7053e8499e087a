"""HunyuanVideo (``AutoencoderKLHunyuanVideo``) through its adapter: frame tiles as diffusers decodes
them, against diffusers PyTorch on the same weights (fp32 max abs ≤ 1e-4).

diffusers decodes HunyuanVideo in overlapping frame tiles by default (``use_framewise_decoding``):
5 latent frames every 3 (``tile_sample_min_num_frames`` 16, stride 12, in sample frames), each on its
own, blended in time. The driver walks those tiles with one program per tile length, so a video of
any length runs a full-tile program and at most one for a shorter last tile.
"""

from __future__ import annotations

import copy

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn, torch_decode, torch_encode_mean, with_attributes

torch = pytest.importorskip("torch")

import torchax_vae  # noqa: E402
from compare.checkpoints import HUNYUAN_VIDEO, PRESETS, TINY_HUNYUAN_VIDEO  # noqa: E402
from conftest import shared_checkpoint  # noqa: E402
from torchax_vae.core.errors import UnsupportedModelError  # noqa: E402

TOL = 1e-4
SHARDED_TOL = 1e-5
# The file's decode latents: batch 2 of 2x8 latent px (non-square; the width splits over tp=4). Decode of
# 5 and 7 latent frames builds the full frame tile's program and a 2- and 4-frame last tile's, which the
# pipeline test and the sharded test's unsharded half decode again (the store serves them across
# workers), as the 9-frame encode's program (2 x 16 x 24 px) serves the sharded encode.
B, H, W = 2, 2, 8


@pytest.fixture(scope="module")
def hv_dir(tmp_path_factory):
  return shared_checkpoint(tmp_path_factory, "tiny-hunyuanvideo", TINY_HUNYUAN_VIDEO)


@pytest.fixture(scope="module")
def hv_torch(hv_dir):
  from diffusers import AutoencoderKLHunyuanVideo

  return AutoencoderKLHunyuanVideo.from_pretrained(hv_dir).eval()


@pytest.fixture(scope="module")
def hv(hv_dir):
  """The file's fp32 runner: tests that set attributes on it take a ``copy.copy`` (same programs)."""
  return torchax_vae.load(hv_dir)


# T=3: within one tile (one call); 5: a full tile + a 2-frame last one; 7: full + 4; 11: three full + 2.
@pytest.mark.parametrize("frames", [3, 5, 7, 11])
def test_decode_matches_diffusers(hv, hv_torch, frames):
  z = randn(B, 4, frames, H, W, seed=frames)  # batch 2, non-square
  tiles = hv.temporal_tiles("decode", frames)
  assert (tiles is None) == (frames <= 4)
  out = np.asarray(hv.decode(z))
  expected = torch_decode(hv_torch, z)
  assert out.shape == expected.shape == (2, 3, 1 + 4 * (frames - 1), 16, 64)
  assert float(np.abs(out - expected).max()) <= TOL


def test_frame_tiles_are_diffusers(hv):
  """The spans diffusers' loop takes (``range(0, T, 3)``, 5 frames each), without the tiles whose
  frames the final cut drops: T=11 runs (9, 11) too (it keeps 4 frames), T=10 stops at (6, 10)."""
  assert hv.temporal_tiles("decode", 11).spans == ((0, 5), (3, 8), (6, 11), (9, 11))
  assert hv.temporal_tiles("decode", 10).spans == ((0, 5), (3, 8), (6, 10))  # (9, 10) adds no frame
  assert hv.temporal_tiles("encode", 33).spans == ((0, 17), (12, 29), (24, 33))  # 17 sample frames every 12
  assert hv.temporal_tiles("encode", 16) is None


@pytest.mark.parametrize(("batch", "frames", "hw"), [(2, 9, (16, 24)), (1, 21, (24, 16)), (2, 33, (16, 16))])
def test_encode_matches_diffusers(hv, hv_torch, batch, frames, hw):
  x = np.tanh(randn(batch, 3, frames, *hw, seed=frames))
  got = np.asarray(hv.encode(x))
  expected = torch_encode_mean(hv_torch, x)
  assert got.shape == expected.shape == (batch, 4, (frames - 1) // 4 + 1, hw[0] // 8, hw[1] // 8)
  assert float(np.abs(got - expected).max()) <= TOL


def test_programs_do_not_grow_with_t(hv_dir):
  """One program for every full frame tile and one for the shorter last one, whatever T: 5 to 32
  latent frames (up to 125 video frames) all run the same two."""
  vae = torchax_vae.load(hv_dir, cache_dir=False)
  for t in (5, 8, 11, 20, 32):  # last tiles all 2 frames
    assert vae.decode(randn(1, 4, t, 2, 2, seed=t)).shape[2] == 1 + 4 * (t - 1)
  assert vae.trace_counts == {"decode_first": 2}
  vae.decode(randn(1, 4, 21, 2, 2, seed=21))  # a 3-frame last tile: one more program, the full one reused
  assert vae.trace_counts == {"decode_first": 3}
  for frames in (29, 41, 53):  # 17 sample frames every 12; last tiles of 5
    vae.encode(np.tanh(randn(1, 3, frames, 16, 16, seed=frames)))
  assert vae.trace_counts == {"decode_first": 3, "encode_first": 2}


def test_framewise_off_is_one_call(hv, hv_torch):
  """``use_framewise_decoding = False`` (diffusers' attribute): one decoder call over all frames."""
  z = randn(1, 4, 7, 2, 3, seed=3)
  vae = copy.copy(hv)
  vae.use_framewise_decoding = False
  assert vae.temporal_tiles("decode", 7) is None
  expected = torch_decode(with_attributes(hv_torch, use_framewise_decoding=False), z)
  assert float(np.abs(np.asarray(vae.decode(z)) - expected).max()) <= TOL
  # ... and it differs from the tiled default (the frame tiles change the output, in diffusers too)
  assert float(np.abs(expected - torch_decode(hv_torch, z)).max()) > 1e-3


# Frame tiles of 3 latent frames every 1 (8 and 4 sample frames) and spatial tiles of 2 latent px
# every 1 (16 and 8 sample px): every tile is also tiled spatially, as diffusers nests them.
SMALL_TILES = dict(tile_sample_min_height=16, tile_sample_min_width=16, tile_sample_min_num_frames=8,
                   tile_sample_stride_height=8, tile_sample_stride_width=8, tile_sample_stride_num_frames=4)  # fmt: skip


def test_tiled_decode_matches_diffusers(hv, hv_torch):
  vae = copy.copy(hv)
  vae.enable_tiling(**SMALL_TILES)
  assert vae.temporal_tiles("decode", 5).spans == ((0, 3), (1, 4), (2, 5), (3, 5))
  # the smallest latent with two frame tiles, each in 2x3 spatial tiles: every tile shape (3 and 2
  # frames x 2 and 1 px high x 2 and 1 px wide) once, 8 programs
  z = randn(1, 4, 3, 2, 3, seed=5)
  assert vae.temporal_tiles("decode", 3).spans == ((0, 3), (1, 3))
  assert vae.tile_grid("decode", 2, 3) is not None
  expected = torch_decode(with_attributes(hv_torch, tiling=SMALL_TILES), z)
  out = np.asarray(vae.decode(z))
  assert out.shape == expected.shape == (1, 3, 9, 16, 24)
  assert float(np.abs(out - expected).max()) <= TOL


def test_tiled_encode_matches_diffusers(hv, hv_torch):
  vae = copy.copy(hv)
  vae.enable_tiling(**SMALL_TILES)
  x = np.tanh(randn(1, 3, 9, 16, 24, seed=6))  # frame tiles of 9 and 5, 2x3 spatial tiles of 16 and 8 px
  assert len(vae.temporal_tiles("encode", 9).spans) == 2 and vae.tile_grid("encode", 16, 24) is not None
  expected = torch_encode_mean(with_attributes(hv_torch, tiling=SMALL_TILES), x)
  got = np.asarray(vae.encode(x))
  assert got.shape == expected.shape == (1, 4, 3, 2, 3)
  assert float(np.abs(got - expected).max()) <= TOL


def test_tiling_values_persist_as_in_diffusers(hv):
  """``disable_tiling`` leaves the frame-tile sizes ``enable_tiling`` set (diffusers keeps them: they
  drive framewise decoding, which tiling does not switch)."""
  vae = copy.copy(hv)
  vae.enable_tiling(tile_sample_min_num_frames=8, tile_sample_stride_num_frames=4)
  vae.disable_tiling()
  assert vae.tiling is None and vae.temporal_tiles("decode", 5).spans[:2] == ((0, 3), (1, 4))


def test_bfloat16(hv_dir, hv_torch):
  vae = torchax_vae.load(hv_dir, dtype="bfloat16")
  z = randn(1, 4, 7, 2, 3, seed=11)
  out = vae.decode(z)
  assert out.dtype == jnp.bfloat16
  err = np.abs(out.astype(np.float32) - torch_decode(hv_torch, z))
  print(f"HunyuanVideo tiny, torchax bf16 vs torch fp32, (1,4,7,2,3): max abs {err.max():.4f}, mean {err.mean():.5f}")
  assert err.max() < 0.1


def test_pipeline_latents(hv, hv_torch):
  """``decode_latents``: ``HunyuanVideoPipeline``'s ``latents.to(vae.dtype) / scaling_factor`` then decode."""
  latents = randn(B, 4, 5, H, W, seed=4)  # decode[5]'s programs
  video = np.asarray(torchax_vae.decode_latents(hv, latents))
  with torch.no_grad():
    expected = hv_torch.decode(torch.from_numpy(latents) / hv_torch.config.scaling_factor).sample.numpy()
  assert float(np.abs(video - expected).max()) <= TOL
  # the inverse, as HunyuanVideoImageToVideoPipeline scales its image latents
  z = hv.adapter.latents_from_encode(jnp.asarray(latents))
  np.testing.assert_allclose(np.asarray(hv.adapter.latents_for_decode(z)), latents, rtol=1e-6)


def test_bad_input_is_refused(hv):
  with pytest.raises(ValueError, match="expected 4 latent channels"):
    hv.decode(randn(1, 3, 5, 2, 3))
  with pytest.raises(ValueError, match="expected 3 image channels"):
    hv.encode(randn(1, 4, 5, 16, 16))


def test_native_path_names_the_bridge(hv_dir):
  import native_flax

  with pytest.raises(UnsupportedModelError, match="native_flax path has no AutoencoderKLHunyuanVideo"):
    native_flax.load(hv_dir)


def test_preset_is_the_released_config():
  """The preset is diffusers' defaults (HunyuanVideo's VAE), and our config's defaults are diffusers'."""
  import inspect

  from diffusers import AutoencoderKLHunyuanVideo

  from torchax_vae.core.models import config_from_dict

  assert PRESETS["hunyuanvideo"] == {"_class_name": HUNYUAN_VIDEO}
  parameters = inspect.signature(AutoencoderKLHunyuanVideo.__init__).parameters
  defaults = {k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in parameters.items() if k != "self"}
  assert config_from_dict(PRESETS["hunyuanvideo"]).to_dict() == defaults


@pytest.mark.slow
def test_real_config_matches_diffusers(tmp_path_factory):
  """HunyuanVideo's released VAE config (random weights): what the tiny config cannot show, the released
  widths (16 latent channels, 128 to 512 channels in 32 norm groups, the 512-channel mid-block
  attention) in fp32 within the tiny config's tolerance. Frame tiles are the tiny tests' (the same
  code at any width), so the smallest latents here: 2 latent frames of 2x3 px in one decode call, and
  their 5 sample frames in one encode call."""
  from diffusers import AutoencoderKLHunyuanVideo

  directory = shared_checkpoint(tmp_path_factory, "real-hunyuanvideo", PRESETS["hunyuanvideo"])
  reference = AutoencoderKLHunyuanVideo.from_pretrained(directory).eval()
  vae = torchax_vae.load(directory)
  z = randn(1, 16, 2, 2, 3, seed=1)
  assert vae.temporal_tiles("decode", 2) is None
  out = np.asarray(vae.decode(z))
  expected = torch_decode(reference, z)
  err = float(np.abs(out - expected).max())
  print(f"HunyuanVideo real config, (1,16,2,2,3) -> {out.shape}: max abs {err:.2e}")
  assert out.shape == (1, 3, 5, 16, 24) and err <= TOL
  x = np.tanh(randn(1, 3, 5, 16, 24, seed=2))
  assert float(np.abs(np.asarray(vae.encode(x)) - torch_encode_mean(reference, x)).max()) <= TOL


@pytest.mark.multidevice
def test_sharded_equals_unsharded_and_only_the_attention_gathers(hv, hv_dir):
  """dp=2,tp=4: sharded equals unsharded (decode in two frame tiles, 5 and 4 latent frames; encode of
  9 frames, one call; the unsharded half runs ``test_decode_matches_diffusers[7]``'s and
  ``test_encode_matches_diffusers[2-9-hw0]``'s programs). In each decode program every conv and norm
  keeps the width split (the norms' statistics are all-reduced, the convs exchange halos); the one
  all-gather per program is the mid-block attention's input at latent resolution: diffusers'
  ``HunyuanVideoMidBlock3D`` flattens ``(T, H, W)`` into one token axis with a causal mask over all of
  them, so every device needs every position's keys and values."""
  import re

  from compare.collectives import count_collectives, step_hlo

  vae = hv
  sharded = torchax_vae.load(hv_dir, mesh="dp=2,tp=4")
  z = randn(B, 4, 7, H, W, seed=13)
  np.testing.assert_allclose(sharded.decode(z), vae.decode(z), atol=SHARDED_TOL, rtol=0)
  x = np.tanh(randn(2, 3, 9, 16, 24, seed=5))
  np.testing.assert_allclose(sharded.encode(x), vae.encode(x), atol=SHARDED_TOL, rtol=0)
  channels = sharded.config.block_out_channels[-1]
  texts = step_hlo(sharded, z.shape)  # the decode's own programs, already built
  assert len(texts) == 2  # the full tile's program and the last tile's
  for text, frames in zip(texts, (5, 4)):
    counts = count_collectives(text)
    assert counts["all-gather"] == 1 and counts["all-reduce"] > 0 and counts["collective-permute"] > 0, counts
    gathered = re.findall(r"= f32\[([\d,]+)\]\{[^}]*\} all-gather\(", text)
    # per dp shard: 1 sample x the tile's frames x latent height x width x the attention's channels
    assert sorted(map(int, gathered[0].split(","))) == sorted([1, frames, H, W, channels]), gathered
