"""native_flax's Wan port: every NNX module against its diffusers counterpart on the same weights,
then the whole model through the driver (tiny Wan 2.1 / 2.2 configs; the real ones with ``-m slow``).

Modules with a causal cache are run for three chunks each side — diffusers threading its mutable
``feat_cache`` list, the port its returned cache value — so the first chunk, the second (diffusers'
1-frame and ``"Rep"`` caches) and the steady state are all compared. Tolerances as
``test_native_modules.py``: fp32 max abs <= 1e-5 per module, <= 1e-4 (the project's bar) whole model.
``-s`` prints the errors.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from diffusers.models.autoencoders import autoencoder_kl_wan as dm
from flax import nnx
from helpers import FAST_COMPILE, ErrorLog, build, cl, pt, randn, run, torch_decode, torch_encode_mean

import native_flax
from native_flax import autoencoder_kl_wan as nf

TOL = 1e-5  # fp32 max abs per module, tiny configs
MODEL_TOL = 1e-4  # fp32 max abs, whole model (the project's bar)
ERRORS = ErrorLog("native_flax Wan vs diffusers")


@pytest.fixture(scope="module", autouse=True)
def _report_errors():
  yield
  ERRORS.report()


def check(name: str, ours, ref: torch.Tensor, tol: float = TOL) -> float:
  return ERRORS.check(name, ours, ref, tol)


def jitted(module, method):
  """``method(module, *args)`` as one jitted program, made once (``helpers.run`` makes one per call):
  a walk's later chunks, which have the same shapes, reuse the second chunk's trace and compile."""
  graphdef, state = nnx.split(module)
  program = jax.jit(lambda st, *a: method(nnx.merge(graphdef, st), *a), compiler_options=FAST_COMPILE)
  return lambda *args: program(state, *args)


def walk_both(name, ref, ours, chunks, first_chunk_kw: bool = False, tol: float = TOL):
  """Three (or more) cached chunks through diffusers (one ``feat_cache`` list, a fresh ``feat_idx``
  per chunk, as ``_decode`` does) and through the port (its returned cache); outputs compared."""
  feat_cache = [None] * 64
  cache = None
  first = jitted(ours, lambda m, x: m(x, None, **({"first_chunk": True} if first_chunk_kw else {})))
  later = jitted(ours, lambda m, x, c: m(x, c, **({"first_chunk": False} if first_chunk_kw else {})))
  for i, chunk in enumerate(chunks):
    kw = {"first_chunk": i == 0} if first_chunk_kw else {}
    with torch.no_grad():
      expected = ref(pt(chunk), feat_cache=feat_cache, feat_idx=[0], **kw)
    out, cache = first(cl(chunk)) if cache is None else later(cl(chunk), cache)
    check(f"{name} chunk {i}", out, expected, tol)


# --- modules, smallest to largest ----------------------------------------------------------------


@pytest.mark.parametrize("cache_frames", [0, 1, 2])
def test_causal_conv3d(cache_frames):
  ref, ours = build(dm.WanCausalConv3d, nf.WanCausalConv3d, 4, 6, 3, padding=1)
  x = randn(2, 4, 3, 5, 7)
  cache = randn(2, 4, cache_frames, 5, 7, seed=1) if cache_frames else None
  with torch.no_grad():
    expected = ref(pt(x), None if cache is None else pt(cache))
  out = run(ours, cl(x), method=lambda m, a: m(a, None if cache is None else cl(cache)))
  check(f"WanCausalConv3d cache {cache_frames}", out, expected)


@pytest.mark.parametrize("images", [False, True])
def test_rms_norm(images):
  ref, ours = build(dm.WanRMS_norm, lambda dim, images, rngs: nf.WanRMS_norm(dim, images=images), 6, images=images)
  x = randn(2, 6, 5, 7) * 3 if images else randn(2, 6, 3, 5, 7) * 3
  with torch.no_grad():
    expected = ref(pt(x))
  check(f"WanRMS_norm images={images}", run(ours, cl(x)), expected)


@pytest.mark.parametrize(("factor_t", "frames"), [(2, 4), (2, 5), (1, 3)])  # 5: padded in front
def test_avg_down3d(factor_t, frames):
  ref, ours = dm.AvgDown3D(4, 8, factor_t, 2), nf.AvgDown3D(4, 8, factor_t, 2)
  x = randn(2, 4, frames, 6, 8)
  with torch.no_grad():
    expected = ref(pt(x))
  check(f"AvgDown3D ft={factor_t} T={frames}", run(ours, cl(x)), expected)


@pytest.mark.parametrize(("factor_t", "first_chunk"), [(2, False), (2, True), (1, False)])
def test_dup_up3d(factor_t, first_chunk):
  ref, ours = dm.DupUp3D(8, 4, factor_t, 2), nf.DupUp3D(8, 4, factor_t, 2)
  x = randn(2, 8, 2, 3, 4)
  with torch.no_grad():
    expected = ref(pt(x), first_chunk=first_chunk)
  check(f"DupUp3D ft={factor_t} first={first_chunk}", run(ours, cl(x), method=lambda m, a: m(a, first_chunk)), expected)


@pytest.mark.parametrize("mode", ["upsample2d", "upsample3d", "downsample2d", "downsample3d"])
def test_resample(mode):
  ref, ours = build(dm.WanResample, nf.WanResample, 4, mode)
  frames = (1, 1, 2) if mode.startswith("up") else (1, 4, 4)  # a decoder's / an encoder's chunks
  walk_both(f"WanResample {mode}", ref, ours, [randn(2, 4, t, 6, 7, seed=t + i) for i, t in enumerate(frames)])


def test_residual_block():
  ref, ours = build(dm.WanResidualBlock, nf.WanResidualBlock, 4, 6)  # width changes: 1x1x1 shortcut
  walk_both("WanResidualBlock", ref, ours, [randn(2, 4, t, 5, 6, seed=t) for t in (1, 4, 4)])


def test_attention_block():
  ref, ours = build(dm.WanAttentionBlock, nf.WanAttentionBlock, 8)
  x = randn(2, 8, 2, 5, 6)
  with torch.no_grad():
    expected = ref(pt(x))
  check("WanAttentionBlock", run(ours, cl(x)), expected)


def test_mid_block():
  ref, ours = build(dm.WanMidBlock, nf.WanMidBlock, 8)
  walk_both("WanMidBlock", ref, ours, [randn(1, 8, t, 4, 5, seed=t) for t in (1, 1, 1)])


def test_residual_down_block():
  ref, ours = build(dm.WanResidualDownBlock, nf.WanResidualDownBlock, 4, 8, 0.0, 2, temperal_downsample=True, down_flag=True)
  walk_both("WanResidualDownBlock", ref, ours, [randn(2, 4, t, 6, 8, seed=t) for t in (1, 4, 4)])


def test_residual_up_block():
  ref, ours = build(dm.WanResidualUpBlock, nf.WanResidualUpBlock, 8, 4, 1, temperal_upsample=True, up_flag=True)
  walk_both("WanResidualUpBlock", ref, ours, [randn(2, 8, 1, 3, 4, seed=i) for i in range(3)], first_chunk_kw=True)


def test_up_block():
  ref, ours = build(dm.WanUpBlock, nf.WanUpBlock, 8, 4, 1, upsample_mode="upsample3d")
  walk_both("WanUpBlock", ref, ours, [randn(2, 8, 1, 3, 4, seed=i) for i in range(3)], first_chunk_kw=True)


@pytest.mark.parametrize("is_residual", [False, True], ids=["2.1", "2.2"])
def test_encoder_and_decoder(is_residual):
  """The coders, block by block (``return_intermediates``), over a whole walk of chunks."""
  kw = dict(dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, is_residual=is_residual)
  ref, ours = build(dm.WanEncoder3d, nf.WanEncoder3d, in_channels=3, temperal_downsample=[False, True, True], **kw)
  walk_both(f"WanEncoder3d {'2.2' if is_residual else '2.1'}", ref, ours,
            [randn(1, 3, t, 16, 24, seed=t) for t in (1, 4, 4)])  # fmt: skip
  ref, ours = build(dm.WanDecoder3d, nf.WanDecoder3d, temperal_upsample=[True, True, False], **kw)
  walk_both(f"WanDecoder3d {'2.2' if is_residual else '2.1'}", ref, ours,
            [randn(1, 4, 1, 2, 3, seed=i) for i in range(3)], first_chunk_kw=True)  # fmt: skip


def test_patchify_round_trip_is_diffusers():
  x = randn(2, 3, 2, 4, 6)
  for p in (1, 2):
    with torch.no_grad():
      patched = dm.patchify(pt(x), p)
    ours = nf.patchify(cl(x), p)
    check(f"patchify p={p}", ours, patched, 0.0)
    check(f"unpatchify p={p}", nf.unpatchify(ours, p), dm.unpatchify(patched, p), 0.0)


# --- the whole model through the driver ----------------------------------------------------------

VARIANTS = ("2.1", "2.2")


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
  return request.param


@pytest.fixture(scope="module")
def pair(variant, tiny_wan_dirs, tiny_wan_torch):
  return native_flax.load(tiny_wan_dirs[variant]), tiny_wan_torch[variant]


# tests/test_wan.py's shapes: the tiled decode's tiles and the sharded test's unsharded runner reuse
# these programs (one program per (B, H, W): Wan decodes a latent frame per step).
@pytest.mark.parametrize("shape", [(1, 4, 1, 4, 4), (3, 4, 2, 4, 6), (1, 4, 5, 8, 4)], ids=["T1", "B3-T2", "T5-nonsquare"])
def test_decode_matches_diffusers(pair, variant, shape):
  vae, ref_model = pair
  z = randn(*shape, seed=sum(shape))
  out = vae.decode(z)
  ref = torch_decode(ref_model, z)
  assert out.shape == ref.shape
  ERRORS[f"native_flax.load(wan {variant}).decode {shape}"] = float(np.abs(out - ref).max())
  np.testing.assert_allclose(out, ref, atol=MODEL_TOL, rtol=0)


# Batch 3 at (4, 6) latent px: the sharded test's unsharded encode.
@pytest.mark.parametrize(("batch", "frames", "hw"), [(3, 1, (4, 6)), (3, 5, (4, 6)), (1, 7, (6, 4))])
def test_encode_mean_matches_diffusers(pair, variant, batch, frames, hw):
  vae, ref_model = pair
  s = vae.adapter.spatial_compression
  x = np.tanh(randn(batch, 3, frames, hw[0] * s, hw[1] * s, seed=frames))
  mean, ref = vae.encode(x), torch_encode_mean(ref_model, x)
  ERRORS[f"native_flax.load(wan {variant}).encode {x.shape}"] = float(np.abs(mean - ref).max())
  np.testing.assert_allclose(mean, ref, atol=MODEL_TOL, rtol=0)


def test_programs_do_not_grow_with_t(tiny_wan_dirs, variant):
  vae = native_flax.load(tiny_wan_dirs[variant], cache_dir=False, frames_per_step=1)  # diffusers' steps
  for t in (1, 2, 5, 21):
    vae.decode(randn(1, 4, t, 2, 2, seed=t))
  assert vae.trace_counts == {"decode_first": 1, "decode_steady": 1}


# Loading and decoding Wan 2.2 torch-free: tests/test_native_vae.py::test_native_flax_is_torch_free.


def test_weights_of_the_other_version_are_refused(tiny_wan_dirs, tmp_path):
  import shutil

  from torchax_vae.core.checkpoint import CheckpointError

  broken = tmp_path / "mixed"
  shutil.copytree(tiny_wan_dirs["2.1"], broken)
  shutil.copy(tiny_wan_dirs["2.2"] / "config.json", broken / "config.json")
  with pytest.raises(CheckpointError, match=r"do not fit the config: \d+ missing keys: .*shape mismatches: "):
    native_flax.load(broken, cache_dir=False)


def test_bfloat16(tiny_wan_dirs, tiny_wan_torch, variant):
  vae = native_flax.load(tiny_wan_dirs[variant], dtype="bfloat16")
  z = randn(1, 4, 3, 4, 6, seed=11)
  err = np.abs(np.asarray(vae.decode(z), np.float32) - torch_decode(tiny_wan_torch[variant], z))
  print(f"Wan {variant} tiny, native_flax bf16 vs torch fp32, (1,4,3,4,6): max abs {err.max():.4f}, mean {err.mean():.5f}")
  assert err.max() < 0.1


TILINGS = {  # as tests/test_wan.py: tiles of 8 latent px every 6
  "2.1": {"tile_sample_min_height": 64, "tile_sample_min_width": 64, "tile_sample_stride_height": 48,
          "tile_sample_stride_width": 48},
  "2.2": {"tile_sample_min_height": 128, "tile_sample_min_width": 128, "tile_sample_stride_height": 96,
          "tile_sample_stride_width": 96},
}  # fmt: skip


def test_tiled_decode_matches_diffusers(tiny_wan_dirs, tiny_wan_torch):
  """Wan 2.2: blended in the patchified output, cropped, then unpatchified (tests/test_wan.py covers both
  versions on the torchax path; the tiling itself is the shared driver's). Tiles of 8 x 8, 8 x 4, 4 x 8
  and 4 x 4 latent px: two are test_decode_matches_diffusers' programs."""
  import copy

  variant = "2.2"
  vae, ref_model = native_flax.load(tiny_wan_dirs[variant]), tiny_wan_torch[variant]
  z = randn(1, 4, 2, 10, 10, seed=2)
  reference = copy.deepcopy(ref_model)
  reference.enable_tiling(**TILINGS[variant])
  vae.enable_tiling(**TILINGS[variant])
  try:
    out = vae.decode(z)
  finally:
    vae.disable_tiling()
  ref = torch_decode(reference, z)
  ERRORS[f"native_flax.load(wan {variant}) tiled decode"] = float(np.abs(out - ref).max())
  np.testing.assert_allclose(out, ref, atol=MODEL_TOL, rtol=0)


def test_tiled_encode_matches_diffusers(tiny_wan_dirs, tiny_wan_torch):
  """Wan 2.1 (tests/test_wan.py covers Wan 2.2's patchified tiles on the torchax path)."""
  import copy

  variant = "2.1"
  vae, ref_model = native_flax.load(tiny_wan_dirs[variant]), tiny_wan_torch[variant]
  s = vae.adapter.spatial_compression
  x = np.tanh(randn(1, 3, 5, 12 * s, 20 * s, seed=3))
  reference = copy.deepcopy(ref_model)
  reference.enable_tiling(**TILINGS[variant])
  vae.enable_tiling(**TILINGS[variant])
  try:
    mean = vae.encode(x)
  finally:
    vae.disable_tiling()
  ref = torch_encode_mean(reference, x)
  ERRORS[f"native_flax.load(wan {variant}) tiled encode"] = float(np.abs(mean - ref).max())
  np.testing.assert_allclose(mean, ref, atol=MODEL_TOL, rtol=0)


@pytest.mark.multidevice
def test_sharded_equals_unsharded(tiny_wan_dirs):
  """Wan 2.1 on dp=2,tp=4, decode and encode (tests/test_wan.py covers Wan 2.2 on the torchax path).
  The unsharded runner's programs are the parity tests' (B3-T2, batch 3 at (4, 6))."""
  variant = "2.1"
  vae = native_flax.load(tiny_wan_dirs[variant])
  sharded = native_flax.load(tiny_wan_dirs[variant], mesh="dp=2,tp=4")
  z = randn(3, 4, 2, 4, 6, seed=13)  # batch 3 on dp=2 (padded), latent width 6 on tp=4 (GSPMD pads)
  np.testing.assert_allclose(sharded.decode(z), vae.decode(z), atol=1e-5, rtol=0)
  s = vae.adapter.spatial_compression
  x = np.tanh(randn(3, 3, 5, 4 * s, 6 * s, seed=5))
  np.testing.assert_allclose(sharded.encode(x), vae.encode(x), atol=1e-5, rtol=0)


@pytest.mark.multidevice
def test_only_the_attention_gathers_keys_and_values(tiny_wan_dirs, variant):
  """dp=2,tp=4: the port keeps H and W as two axes in attention, so the queries (and the output) stay
  width-split and only the keys and values are gathered: 2 all-gathers of ``(B/dp, H, W, C)`` per
  program; everything else keeps the split (torchax: one gather of q, k and v, ``3C``)."""
  import re

  from compare.collectives import count_collectives, step_hlo

  sharded = native_flax.load(tiny_wan_dirs[variant], mesh="dp=2,tp=4", cache_dir=False)
  mid = sharded.model.decoder.mid_block.attentions[0].dim
  # compare.collectives' programs: the first step (1 frame) and the steady one (the runner's K frames)
  for text, frames in zip(step_hlo(sharded, (2, 4, 2, 8, 10)), (1, sharded.frames_per_step), strict=True):
    counts = count_collectives(text)
    assert counts["all-gather"] == 2 and counts["collective-permute"] > 0, counts
    gathered = re.findall(r"= f32\[(\d+),(\d+),(\d+),(\d+)\]\{[^}]*\} all-gather\(.*op_name=\"([^\"]*)\"", text)
    # per dp shard and frame of the step: (H, W, C), width 10 padded to 12
    assert sorted(g[:4] for g in gathered) == [(str(frames), "8", "12", str(mid))] * 2, gathered
    assert all("nyxc" in g[4] for g in gathered), gathered  # the attention's einsums over keys / values


@pytest.mark.slow
@pytest.mark.parametrize("real", VARIANTS)
def test_real_config_matches_diffusers(real_wan_dirs, real_wan_references, real):
  """The released widths (up to 384 / 1024 channels, RMS norms and attention over them) through the
  port's modules and weight conversion, within the fp32 bar: the tiny configs' 8-32 channels cannot show it."""
  z, ref, x, ref_mean = real_wan_references(real)
  vae = native_flax.load(real_wan_dirs[real])
  out = vae.decode(z)
  ERRORS[f"native_flax real Wan {real} decode {z.shape}"] = float(np.abs(out - ref).max())
  np.testing.assert_allclose(out, ref, atol=MODEL_TOL, rtol=0)
  mean = vae.encode(x)
  ERRORS[f"native_flax real Wan {real} encode {x.shape}"] = float(np.abs(mean - ref_mean).max())
  np.testing.assert_allclose(mean, ref_mean, atol=MODEL_TOL, rtol=0)
