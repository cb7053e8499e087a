"""Wan 2.1 / 2.2 through torchax (the unmodified ``AutoencoderKLWan``), against diffusers PyTorch on the same weights.

Tiny configs (``compare.checkpoints.TINY_WAN_2_1`` / ``TINY_WAN_2_2``) use every block kind of the real
ones: 2.1's up/down samplers (2D and 3D) and mid-block attention; 2.2's residual up/down blocks with
their ``AvgDown3D``/``DupUp3D`` shortcuts, ``patch_size=2`` and 16x spatial compression.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import randn, torch_decode, torch_encode_mean

import torchax_vae
from torchax_vae.core.errors import UnsupportedModelError

FP32_TOL = 1e-4  # max abs, full model, fp32 (the project's bar)
VARIANTS = ("2.1", "2.2")


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
  return request.param


@pytest.fixture(scope="module")
def pair(variant, tiny_wan_dirs, tiny_wan_torch):
  """(torchax runner, diffusers module) on the same tiny weights."""
  return torchax_vae.load(tiny_wan_dirs[variant]), tiny_wan_torch[variant]


def sample_size(variant: str, latent_hw: tuple[int, int]) -> tuple[int, int]:
  scale = 8 if variant == "2.1" else 16
  return latent_hw[0] * scale, latent_hw[1] * scale


# (B, C, T, H, W): one frame (first step only), batch 3 with a steady step, five frames non-square.
# Wan decodes one latent frame per step, so a program is (B, H, W): the tiled decode's tiles (8 x 8,
# 8 x 4, 4 x 8, 4 x 4) and the sharded test's unsharded runner reuse these (the run's executable store).
# tests/test_native_wan.py uses the same shapes on the native path.
DECODE_SHAPES = [(1, 4, 1, 4, 4), (3, 4, 2, 4, 6), (1, 4, 5, 8, 4)]


@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=["T1", "B3-T2", "T5-nonsquare"])
def test_decode_matches_diffusers(pair, variant, shape):
  vae, ref_model = pair
  z = randn(*shape, seed=sum(shape))
  out = vae.decode(z)
  ref = torch_decode(ref_model, z)
  frames = 1 + 4 * (shape[2] - 1)  # the first latent frame decodes to 1 frame, every later one to 4
  assert out.shape == ref.shape == (shape[0], 3, frames, *sample_size(variant, shape[3:]))
  assert vae.adapter.decoded_num_frames(shape[2]) == frames
  np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)
  assert np.abs(out).max() <= 1.0  # diffusers clamps to [-1, 1]


# F = 1 (first step only), 5 (one steady step of 4), 7 (frames 5, 6 dropped, as diffusers drops them).
# Batch 3 at (4, 6): the sharded test's unsharded encode; (1, (6, 4)): the sampling test's.
@pytest.mark.parametrize(("batch", "frames", "hw"), [(3, 1, (4, 6)), (3, 5, (4, 6)), (1, 7, (6, 4))])
def test_encode_mean_matches_diffusers(pair, variant, batch, frames, hw):
  vae, ref_model = pair
  x = np.tanh(randn(batch, 3, frames, *sample_size(variant, hw), seed=frames))
  mean = vae.encode(x)
  ref = torch_encode_mean(ref_model, x)
  assert mean.shape == ref.shape == (batch, 4, 1 + (frames - 1) // 4, *hw)
  np.testing.assert_allclose(mean, ref, atol=FP32_TOL, rtol=0)


def test_encode_sample_uses_the_key(pair, variant):
  vae, ref_model = pair
  x = np.tanh(randn(1, 3, 5, *sample_size(variant, (6, 4)), seed=3))  # the programs of the F=7 encode above
  a, b = vae.encode(x, key=jax.random.key(0)), vae.encode(x, key=jax.random.key(0))
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - vae.encode(x, key=jax.random.key(1))).max() > 1e-3
  with torch.no_grad():
    std = ref_model.encode(torch.from_numpy(x)).latent_dist.std.numpy()
  noise = (a - vae.encode(x)) / std  # standard normal, with diffusers' std
  assert abs(noise.mean()) < 0.25 and abs(noise.std() - 1) < 0.25, (noise.mean(), noise.std())


def test_input_kinds_round_trip(pair):
  vae, ref_model = pair
  z = randn(3, 4, 2, 4, 6, seed=sum((3, 4, 2, 4, 6)))  # a shape compiled above
  ref = torch_decode(ref_model, z)
  from_torch = vae.decode(torch.from_numpy(z))
  from_jax = vae.decode(jnp.asarray(z))
  assert isinstance(from_torch, torch.Tensor) and isinstance(from_jax, jax.Array)
  for out in (from_torch.numpy(), np.asarray(from_jax)):
    np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)


def test_programs_do_not_grow_with_t(tiny_wan_dirs, variant):
  """One first-step and one steady program, for 1 to 21 latent frames (81 video frames), decode and encode,
  in diffusers' own steps (one latent frame; K-frame steps: tests/test_frames_per_step.py)."""
  vae = torchax_vae.load(tiny_wan_dirs[variant], cache_dir=False, frames_per_step=1)  # all traced here
  for t in (1, 2, 5, 21):
    assert vae.decode(randn(1, 4, t, 2, 2, seed=t)).shape[2] == 1 + 4 * (t - 1)
  assert vae.trace_counts == {"decode_first": 1, "decode_steady": 1}
  hw = sample_size(variant, (2, 2))
  for frames in (1, 5, 9, 13):
    vae.encode(np.tanh(randn(1, 3, frames, *hw, seed=frames)))
  assert vae.trace_counts == {"decode_first": 1, "decode_steady": 1, "encode_first": 1, "encode_steady": 1}


def test_bfloat16(tiny_wan_dirs, tiny_wan_torch, variant):
  vae = torchax_vae.load(tiny_wan_dirs[variant], dtype="bfloat16")
  z = randn(1, 4, 3, 4, 6, seed=11)
  out = vae.decode(z)
  assert out.dtype == jnp.bfloat16
  err = np.abs(out.astype(np.float32) - torch_decode(tiny_wan_torch[variant], z))
  print(f"Wan {variant} tiny, torchax bf16 vs torch fp32, (1,4,3,4,6): max abs {err.max():.4f}, mean {err.mean():.5f}")
  assert err.max() < 0.1


# --- tiling ---------------------------------------------------------------------------------------


def _tiled_torch(model, tiling):
  reference = copy.deepcopy(model)
  reference.enable_tiling(**tiling)
  return reference


# Tiles of 64 (2.1) / 128 (2.2) sample px every 48 / 96, i.e. 8 latent px every 6.
TILINGS = {
  "2.1": {"tile_sample_min_height": 64, "tile_sample_min_width": 64, "tile_sample_stride_height": 48,
          "tile_sample_stride_width": 48},
  "2.2": {"tile_sample_min_height": 128, "tile_sample_min_width": 128, "tile_sample_stride_height": 96,
          "tile_sample_stride_width": 96},
}  # fmt: skip


def test_tiled_decode_matches_diffusers(pair, variant):
  vae, ref_model = pair
  # 2 x 2 tiles of 8 and 4 latent px: both blends, four tile shapes (two of them DECODE_SHAPES' programs)
  z = randn(1, 4, 2, 10, 10, seed=2)
  vae.enable_tiling(**TILINGS[variant])
  try:
    out = vae.decode(z)
  finally:
    vae.disable_tiling()
  with torch.no_grad():
    ref = _tiled_torch(ref_model, TILINGS[variant]).decode(torch.from_numpy(z)).sample.numpy()
  assert out.shape == ref.shape == (1, 3, 5, *sample_size(variant, (10, 10)))  # Wan crops to the untiled size
  np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)
  vae.enable_tiling(**TILINGS[variant])  # four tiles (diffusers' tiled output differs from its untiled one at the seams)
  grid = vae.tile_grid("decode", 10, 10)
  vae.disable_tiling()
  assert [[(r.start, r.stop, c.start, c.stop) for r, c in row] for row in grid.tiles(10, 10)] == [
    [(0, 8, 0, 8), (0, 8, 6, 10)], [(6, 10, 0, 8), (6, 10, 6, 10)],
  ]  # fmt: skip


def test_tiled_encode_matches_diffusers(tiny_wan_dirs, tiny_wan_torch):
  """Wan 2.2: tiles cut from the patchified video with unpatchified sizes, as diffusers does (the
  native path's test covers Wan 2.1's plain tiles)."""
  variant = "2.2"
  vae, ref_model = torchax_vae.load(tiny_wan_dirs[variant]), tiny_wan_torch[variant]
  x = np.tanh(randn(1, 3, 5, *sample_size(variant, (12, 20)), seed=3))
  vae.enable_tiling(**TILINGS[variant])
  try:
    mean = vae.encode(x)
  finally:
    vae.disable_tiling()
  with torch.no_grad():
    ref = _tiled_torch(ref_model, TILINGS[variant]).encode(torch.from_numpy(x)).latent_dist.mode().numpy()
  assert mean.shape == ref.shape
  np.testing.assert_allclose(mean, ref, atol=FP32_TOL, rtol=0)


def test_tiling_defaults_and_arguments_are_diffusers(tiny_wan_dirs, variant):
  # a fresh runner: enable_tiling keeps the values an earlier call set (as diffusers' module does)
  vae = torchax_vae.load(tiny_wan_dirs[variant])
  vae.enable_tiling()
  assert (vae.tiling.tile_sample_min_height, vae.tiling.tile_sample_stride_width) == (256, 192)
  vae.enable_tiling(None, 128, tile_sample_stride_width=96)  # None keeps a value, as in diffusers
  assert (vae.tiling.tile_sample_min_height, vae.tiling.tile_sample_min_width, vae.tiling.tile_sample_stride_width) == (
    256, 128, 96,
  )  # fmt: skip
  with pytest.raises(TypeError, match="unexpected argument 'tile_overlap_factor_height'"):
    vae.enable_tiling(tile_overlap_factor_height=0.25)  # CogVideoX's argument, not Wan's
  vae.enable_tiling(tile_sample_stride_height=512)
  with pytest.raises(ValueError, match="must not exceed the tile size"):
    vae.decode(randn(1, 4, 1, 40, 40))
  vae.disable_tiling()


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_refused(pair, variant):
  vae, _ = pair
  with pytest.raises(ValueError, match=r"expected 4 latent channels on axis 1 of \(B, C, T, H, W\), got shape \(1, 16"):
    vae.decode(np.zeros((1, 16, 2, 4, 4), np.float32))
  with pytest.raises(ValueError, match="expected 3 image channels"):
    vae.encode(np.zeros((1, 12, 1, 32, 32), np.float32))
  if variant == "2.2":  # patchify needs even sizes
    with pytest.raises(ValueError, match=r"divisible by patch_size=2 .*got shape \(1, 3, 1, 33, 32\)"):
      vae.encode(np.zeros((1, 3, 1, 33, 32), np.float32))


def test_a_path_without_the_model_says_so_before_reading_weights(tiny_wan_dirs, tmp_path):
  """A path that has no backend for the checkpoint's class is refused from config.json alone."""
  import shutil

  from torchax_vae.core.checkpoint import resolve_checkpoint
  from torchax_vae.core.loading import load_runner

  checkpoint = tmp_path / "wan"
  shutil.copytree(tiny_wan_dirs["2.1"], checkpoint)
  (checkpoint / "diffusion_pytorch_model.safetensors").write_bytes(b"not read")
  match = r"the some path has no AutoencoderKLWan yet; it runs AutoencoderKLCogVideoX \(torchax_vae.load runs every"
  with pytest.raises(UnsupportedModelError, match=match):
    load_runner("some", {"AutoencoderKLCogVideoX": None}, resolve_checkpoint(checkpoint), dtype="float32", mesh=None,
                cache_dir=False)  # fmt: skip


# --- real configs ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("real", VARIANTS)
def test_real_config_matches_diffusers(real_wan_dirs, real_wan_references, real):
  """Wan 2.1 (z_dim 16, 8x) and Wan 2.2 TI2V-5B (z_dim 48, 16x, patchified) at a small latent: the
  released widths (up to 384 / 1024 channels, RMS norms and the mid-block attention over them) within
  the fp32 bar through the unmodified diffusers module, which the tiny configs' 8-32 channels cannot show."""
  z, ref, x, ref_mean = real_wan_references(real)
  vae = torchax_vae.load(real_wan_dirs[real])
  scale = 8 if real == "2.1" else 16
  out = vae.decode(z)
  assert out.shape == (1, 3, 5, 2 * scale, 2 * scale)
  np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)
  np.testing.assert_allclose(vae.encode(x), ref_mean, atol=FP32_TOL, rtol=0)


# --- mesh -----------------------------------------------------------------------------------------

SHARDED_TOL = 1e-5  # max abs, fp32: GSPMD constraints change placement, not arithmetic


@pytest.mark.multidevice
def test_sharded_equals_unsharded(tiny_wan_dirs):
  """Wan 2.2 (patchified, residual blocks) on dp=2,tp=4, decode and encode (the native path's test
  covers Wan 2.1). The unsharded runner's programs are the parity tests' (B3-T2, batch 3 at (4, 6))."""
  variant = "2.2"
  vae = torchax_vae.load(tiny_wan_dirs[variant])
  sharded = torchax_vae.load(tiny_wan_dirs[variant], mesh="dp=2,tp=4")
  shape = (3, 4, 2, 4, 6)  # batch 3 on dp=2 (the driver pads it), latent width 6 on tp=4 (GSPMD pads it)
  z = randn(*shape, seed=13)
  np.testing.assert_allclose(sharded.decode(z), vae.decode(z), atol=SHARDED_TOL, rtol=0)
  x = np.tanh(randn(shape[0], 3, 5, *sample_size(variant, shape[3:]), seed=5))
  np.testing.assert_allclose(sharded.encode(x), vae.encode(x), atol=SHARDED_TOL, rtol=0)


@pytest.mark.multidevice
def test_only_the_attention_gathers(tiny_wan_dirs, variant):
  """dp=2,tp=4: every conv, norm, resample and cache keeps the width split; the one all-gather per
  program is the mid-block attention's q/k/v at latent resolution.

  diffusers' ``WanAttentionBlock`` reshapes ``qkv`` to ``(B*T, 1, 3C, H*W)``, merging the width-split
  axis into the token axis, and attention needs every position's keys and values on every device:
  that gather is inherent to running diffusers' attention code, and there is one per program.
  """
  import re

  from compare.collectives import count_collectives, step_hlo

  sharded = torchax_vae.load(tiny_wan_dirs[variant], mesh="dp=2,tp=4", cache_dir=False)
  mid = sharded.module.decoder.mid_block.attentions[0].dim  # the attention's channels
  # Latent width 10 on tp=4: the cache between steps stays split too (the driver pads it to 12).
  texts = step_hlo(sharded, (2, 4, 2, 8, 10))  # compare.collectives' programs: first and steady step
  for text, frames in zip(texts, (1, sharded.frames_per_step), strict=True):
    counts = count_collectives(text)
    assert counts["all-gather"] == 1 and counts["collective-permute"] > 0, counts  # + the convs' halo exchange
    gathered = re.findall(r"= f32\[(\d+),(\d+),(\d+),(\d+)\]\{[^}]*\} all-gather\(", text)
    # per dp shard: 1 sample x the step's frames (attention is per frame) x 3C (q, k, v) x the latent
    # height x width (10, padded to 12 for tp=4), in whichever axis order the program holds it
    # (core.transposes carries the channels last)
    assert len(gathered) == 1 and sorted(map(int, gathered[0])) == sorted([frames, 3 * mid, 8, 12]), gathered
