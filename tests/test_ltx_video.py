"""LTX-Video 0.9.x (``AutoencoderKLLTXVideo``) through its adapter, against diffusers PyTorch on the same
weights (fp32 max abs ≤ 1e-4): the 0.9.0 structure (no timestep) and the 0.9.1 one (timestep-conditioned
residual decoder), diffusers' default one call and its frame tiles (``use_framewise_decoding``), the
pipelines' latent hand-off."""

from __future__ import annotations

import copy

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn, torch_encode_mean

torch = pytest.importorskip("torch")

import torchax_vae  # noqa: E402
from compare.checkpoints import PRESETS, TINY_LTX_VIDEO_090, TINY_LTX_VIDEO_091  # noqa: E402
from conftest import shared_checkpoint  # noqa: E402
from torchax_vae.pipeline import LatentsError  # noqa: E402

TOL = 1e-4
TINY = {"0.9.0": TINY_LTX_VIDEO_090, "0.9.1": TINY_LTX_VIDEO_091}
# Frame tiles of 3 latent frames every 1: the 0.9.1 structure compresses time 8x (diffusers' defaults,
# 16 and 8 sample frames), the tiny 0.9.0 one 4x (8 and 4).
FRAME_TILES = {"0.9.0": dict(tile_sample_min_num_frames=8, tile_sample_stride_num_frames=4),
               "0.9.1": dict(tile_sample_min_num_frames=16, tile_sample_stride_num_frames=8)}  # fmt: skip


@pytest.fixture(scope="module", params=list(TINY))
def version(request):
  return request.param


@pytest.fixture(scope="module")
def ltx_dirs(tmp_path_factory):
  return {v: shared_checkpoint(tmp_path_factory, f"tiny-ltx-video-{v}", c) for v, c in TINY.items()}


@pytest.fixture(scope="module")
def ltx(ltx_dirs):
  """The fp32 runner of each version, shared by the tests (programs of one shape built once; the
  store serves them across workers); a test that sets attributes takes a ``copy.copy``."""
  return {v: torchax_vae.load(d) for v, d in ltx_dirs.items()}


@pytest.fixture(scope="module")
def ltx_sharded(ltx_dirs):
  """0.9.1 on dp=2,tp=4 with frame tiles, shared by the two mesh tests (the same two programs)."""
  sharded = torchax_vae.load(ltx_dirs["0.9.1"], mesh="dp=2,tp=4")
  sharded.use_framewise_decoding = True
  return sharded


@pytest.fixture(scope="module")
def ltx_torch(ltx_dirs):
  from diffusers import AutoencoderKLLTXVideo

  return {v: AutoencoderKLLTXVideo.from_pretrained(d).eval() for v, d in ltx_dirs.items()}


def _temb(version, batch):
  return np.linspace(0.05, 0.5, batch).astype(np.float32) if version == "0.9.1" else None


def _torch_decode(model, z, temb=None, **attributes):
  reference = copy.deepcopy(model) if attributes else model
  tiling = attributes.pop("tiling", None)
  if tiling is not None:
    reference.enable_tiling(**tiling)
  for name, value in attributes.items():
    setattr(reference, name, value)
  with torch.no_grad():
    return reference.decode(torch.from_numpy(z), None if temb is None else torch.from_numpy(temb)).sample.numpy()


def _z(version, batch, frames, hw, seed):
  return randn(batch, 8, frames, *hw, seed=seed)


# 2 and 3 latent frames: test_pipeline_latents decodes the same programs (0.9.0: 3, 0.9.1: 2 frames).
@pytest.mark.parametrize("frames", [2, 3])
def test_decode_matches_diffusers(ltx, ltx_torch, version, frames):
  """diffusers' default: one decoder call whatever T (batch 2, non-square)."""
  vae = ltx[version]
  assert vae.temporal_tiles("decode", frames) is None
  z, temb = _z(version, 2, frames, (4, 6), frames), _temb(version, 2)
  out = np.asarray(vae.decode(z, temb))
  expected = _torch_decode(ltx_torch[version], z, temb)
  assert out.shape == expected.shape == vae.adapter.decoded_shape(z.shape)
  assert float(np.abs(out - expected).max()) <= TOL


@pytest.mark.parametrize("frames", [3, 5, 8])
def test_frame_tiles_match_diffusers(ltx, ltx_torch, version, frames):
  """``use_framewise_decoding``: frame tiles, each later one without its *last* frame (diffusers'
  ``decoded[:, :, :-1]``), blended: T=3 one tile, 5 and 8 several and a short last one (every T the
  same two programs)."""
  vae = copy.copy(ltx[version])
  vae.enable_tiling(**FRAME_TILES[version])
  vae.disable_tiling()  # the frame sizes stay; framewise decoding is its own switch, as in diffusers
  vae.use_framewise_decoding = True
  z, temb = _z(version, 1, frames, (4, 6), frames), _temb(version, 1)
  tiles = vae.temporal_tiles("decode", frames)
  assert len(tiles.spans) == frames - 1  # 3 frames every 1, the last one 2 frames long
  expected = _torch_decode(ltx_torch[version], z, temb, tiling=FRAME_TILES[version], use_tiling=False,
                           use_framewise_decoding=True)  # fmt: skip
  out = np.asarray(vae.decode(z, temb))
  assert out.shape == expected.shape
  assert float(np.abs(out - expected).max()) <= TOL


def test_frame_and_spatial_tiles_match_diffusers(ltx, ltx_torch):
  tiling = dict(FRAME_TILES["0.9.1"], tile_sample_min_height=16, tile_sample_min_width=16, tile_sample_stride_height=8,
                tile_sample_stride_width=8)  # fmt: skip
  vae = copy.copy(ltx["0.9.1"])
  vae.enable_tiling(**tiling)
  vae.use_framewise_decoding = True
  z, temb = _z("0.9.1", 1, 4, (2, 3), 3), _temb("0.9.1", 1)  # frame tiles of 3 and 2, each 1x2 spatial tiles
  expected = _torch_decode(ltx_torch["0.9.1"], z, temb, tiling=tiling, use_framewise_decoding=True)
  assert vae.tile_grid("decode", 2, 3) is not None and len(vae.temporal_tiles("decode", 4).spans) > 1
  assert float(np.abs(np.asarray(vae.decode(z, temb)) - expected).max()) <= TOL


# 2 x 9 x 16 x 64: test_sharded_equals_unsharded's unsharded encode (0.9.1) is this program.
@pytest.mark.parametrize(("batch", "frames", "hw", "framewise"), [(2, 9, (16, 64), False), (1, 25, (16, 24), True)])
def test_encode_matches_diffusers(ltx, ltx_torch, version, batch, frames, hw, framewise):
  """Encode, whole or in frame tiles (diffusers' ``_encode`` switches those on ``use_framewise_decoding``)."""
  vae = copy.copy(ltx[version])
  reference = copy.deepcopy(ltx_torch[version])
  if framewise:
    for model in (vae, reference):
      model.enable_tiling(**FRAME_TILES[version])
      model.use_framewise_decoding = True
    vae.disable_tiling()
    reference.use_tiling = False
    assert len(vae.temporal_tiles("encode", frames).spans) > 1
  x = np.tanh(randn(batch, 3, frames, *hw, seed=frames))
  got = np.asarray(vae.encode(x))
  expected = torch_encode_mean(reference, x)
  assert got.shape == expected.shape
  assert float(np.abs(got - expected).max()) <= TOL


def test_programs_do_not_grow_with_t(ltx_dirs):
  """Frame tiles (diffusers' default sizes): one program per tile length; 5 to 20 latent frames (up to
  153 video frames) run the same two, a full tile of 3 latent frames and a last one of 2."""
  vae = torchax_vae.load(ltx_dirs["0.9.1"], cache_dir=False)
  vae.use_framewise_decoding = True
  for t in (5, 8, 12, 20):
    assert vae.decode(randn(1, 8, t, 2, 2, seed=t), 0.05).shape[2] == 1 + 8 * (t - 1)
  assert vae.trace_counts == {"decode_first": 2}


def test_decode_timestep_is_required_where_the_decoder_takes_one(ltx):
  conditioned = ltx["0.9.1"]
  with pytest.raises(ValueError, match="needs the decode timestep"):
    conditioned.decode(randn(2, 8, 2, 2, 2))
  with pytest.raises(ValueError, match=r"one decode timestep per sample \(2\)"):
    conditioned.decode(randn(2, 8, 2, 2, 2), np.zeros(3, np.float32))
  import jax

  from torchax_vae.core.models import LTXVideo, LTXVideoVAEConfig

  released = LTXVideo(LTXVideoVAEConfig())  # patch_size 4: the encoder reshapes H and W by 4
  with pytest.raises(ValueError, match="patchifies by 1x4x4"):
    released.check_sample(jax.ShapeDtypeStruct((1, 3, 9, 30, 32), jnp.float32), "x")


def test_pipeline_latents(ltx, ltx_torch, version):
  """``decode_latents`` of ``LTXPipeline``'s packed ``output_type="latent"`` output: unpack,
  de-normalise with the VAE's buffers, and (0.9.1) mix the pipeline's decode noise drawn with its
  generator, decode at ``decode_timestep`` — against diffusers' own static methods and VAE."""
  from diffusers import LTXPipeline
  from diffusers.utils.torch_utils import randn_tensor

  model = ltx_torch[version]
  vae = ltx[version]
  # latents of 4x6 px (0.9.0: 3 frames, 0.9.1: 2): test_decode_matches_diffusers' programs
  frames, height, width = (9, 16, 24) if version == "0.9.0" else (9, 32, 48)
  r, c = vae.adapter.temporal_compression, vae.adapter.spatial_compression
  t, h, w = (frames - 1) // r + 1, height // c, width // c
  packed = randn(2, t * h * w, 8, seed=9)
  options = dict(decode_timestep=[0.05, 0.1], decode_noise_scale=0.025) if version == "0.9.1" else {}
  video = np.asarray(torchax_vae.decode_latents(vae, packed, video_shape=(frames, height, width),
                                                generator=torch.Generator().manual_seed(3), **options))  # fmt: skip
  latents = LTXPipeline._unpack_latents(torch.from_numpy(packed), t, h, w)
  latents = LTXPipeline._denormalize_latents(latents, model.latents_mean, model.latents_std, model.config.scaling_factor)
  timestep = None
  if version == "0.9.1":
    noise = randn_tensor(latents.shape, generator=torch.Generator().manual_seed(3), dtype=latents.dtype)
    timestep = torch.tensor([0.05, 0.1])
    latents = (1 - 0.025) * latents + 0.025 * noise
  with torch.no_grad():
    expected = model.decode(latents, timestep).sample.numpy()
  assert float(np.abs(video - expected).max()) <= TOL
  with pytest.raises(LatentsError, match="needs the video's"):
    torchax_vae.decode_latents(vae, packed)
  # the inverse, as LTXImageToVideoPipeline normalises its condition latents
  unpacked = vae.adapter.unpack_latents(jnp.asarray(packed), (frames, height, width))
  buffers = {k: vae.params[k] for k in ("latents_mean", "latents_std")}
  round_trip = vae.adapter.latents_for_decode(vae.adapter.latents_from_encode(unpacked, buffers=buffers), buffers=buffers)
  np.testing.assert_allclose(np.asarray(round_trip), np.asarray(unpacked), atol=1e-5)


def test_bfloat16(ltx_dirs, ltx_torch):
  vae = torchax_vae.load(ltx_dirs["0.9.1"], dtype="bfloat16")
  z, temb = _z("0.9.1", 1, 3, (4, 6), 11), _temb("0.9.1", 1)
  out = vae.decode(z, temb)
  assert out.dtype == jnp.bfloat16
  err = np.abs(np.asarray(out, np.float32) - _torch_decode(ltx_torch["0.9.1"], z, temb))
  print(f"LTX-Video 0.9.1 tiny, torchax bf16 vs torch fp32, (1,8,3,4,6): max abs {err.max():.4f}, mean {err.mean():.5f}")
  assert err.max() < 0.1


def test_presets_are_the_conversion_script_configs():
  from torchax_vae.core.models import config_from_dict

  v090 = config_from_dict(PRESETS["ltx-video-0.9.0"])
  v091 = config_from_dict(PRESETS["ltx-video-0.9.1"])
  assert (v090.latent_channels, v090.spatial_compression, v090.temporal_compression) == (128, 32, 8)
  assert not v090.timestep_conditioning and v091.timestep_conditioning
  assert v091.decoder_block_out_channels == (256, 512, 1024) and v091.decoder_layers_per_block == (5, 6, 7, 8)


# Batch 3 on dp=2 (padded), 5 latent frames in frame tiles of 3 and 2: both mesh tests' programs.
SHARDED_Z = (3, 8, 5, 2, 8)


@pytest.mark.multidevice
def test_sharded_equals_unsharded(ltx, ltx_sharded):
  """dp=2,tp=4 equals one device: decode in frame tiles (batch 3 on dp=2, padded) and encode."""
  vae = copy.copy(ltx["0.9.1"])
  vae.use_framewise_decoding = True
  z, temb = randn(*SHARDED_Z, seed=13), np.array([0.05, 0.1, 0.2], np.float32)
  assert len(ltx_sharded.temporal_tiles("decode", SHARDED_Z[2]).spans) > 1
  np.testing.assert_allclose(ltx_sharded.decode(z, temb), vae.decode(z, temb), atol=1e-5, rtol=0)
  x = np.tanh(randn(2, 3, 9, 16, 64, seed=5))
  assert ltx_sharded.temporal_tiles("encode", 9) is None  # within one frame tile: encoded whole
  np.testing.assert_allclose(ltx_sharded.encode(x), vae.encode(x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_real_config_matches_diffusers(tmp_path_factory):
  """LTX-Video 0.9.0's released VAE config (random weights): what the tiny configs cannot show, its
  widths (128 latent channels, 128 to 512 channels, 4-5 layers per block) and its 4x4 patchify
  (the tiny configs patchify by 1) in fp32 within the tiny tolerance. Frame tiles and blending are the
  tiny tests' (the same code at any width), so the smallest latents: 2 latent frames of 1x2 px
  (9 frames of 32x64 px), decoded and encoded in one call each."""
  from diffusers import AutoencoderKLLTXVideo

  directory = shared_checkpoint(tmp_path_factory, "real-ltx-video-0.9.0", PRESETS["ltx-video-0.9.0"])
  reference = AutoencoderKLLTXVideo.from_pretrained(directory).eval()
  vae = torchax_vae.load(directory)
  z = randn(1, 128, 2, 1, 2, seed=1)
  out = np.asarray(vae.decode(z))
  err = float(np.abs(out - _torch_decode(reference, z)).max())
  print(f"LTX-Video 0.9.0 real config, (1,128,2,1,2) -> {out.shape}: max abs {err:.2e}")
  assert out.shape == (1, 3, 9, 32, 64) and err <= TOL
  x = np.tanh(randn(1, 3, 9, 32, 64, seed=2))
  assert float(np.abs(np.asarray(vae.encode(x)) - torch_encode_mean(reference, x)).max()) <= TOL


def test_cli_decodes_packed_latents(ltx, ltx_dirs, tmp_path, capsys):
  """``python -m torchax_vae decode z.npy -o out.mp4 --video-shape F,H,W --decode-timestep T``: the
  packed pipeline output of a timestep-conditioned LTX VAE, to an MP4 of the pipeline's frames."""
  import imageio_ffmpeg

  from torchax_vae import cli

  vae = ltx["0.9.1"]
  packed = randn(1, 2 * 2 * 3, 8, seed=4)  # 9 frames of 16x24: 2 x 2 x 3 latent tokens
  np.save(tmp_path / "z.npy", packed)
  args = ["decode", str(tmp_path / "z.npy"), "-o", str(tmp_path / "out.mp4"), "--model", str(ltx_dirs["0.9.1"]),
          "--video-shape", "9,16,24", "--decode-timestep", "0.05", "--decode-noise-scale", "0", "--no-progress"]  # fmt: skip
  assert cli.main(args) == 0, capsys.readouterr().err
  reader = imageio_ffmpeg.read_frames(str(tmp_path / "out.mp4"))
  meta = next(reader)
  assert meta["size"] == (24, 16) and sum(1 for _ in reader) == 9
  expected = torchax_vae.decode_latents(vae, packed, video_shape=(9, 16, 24), decode_timestep=0.05, decode_noise_scale=0.0,
                                        output_type="uint8")  # fmt: skip
  assert np.asarray(expected).shape == (1, 9, 16, 24, 3)
  assert cli.main([*args[:-3], "--video-shape", "9,16,16", "--no-progress"]) == cli.EXIT_USAGE
  assert "2x2x2 = 8 latent tokens" in capsys.readouterr().err


@pytest.mark.multidevice
def test_no_gathers_on_a_mesh(ltx_sharded):
  """dp=2,tp=4: LTX's norms are per position (RMS over channels), it has no attention, so nothing is
  gathered or reduced across the width split; the convolutions exchange halos (collective-permutes)."""
  from compare.collectives import count_collectives, step_hlo

  texts = step_hlo(ltx_sharded, SHARDED_Z)  # the full frame tile's program and the last one's
  assert len(texts) == 2
  for text in texts:
    counts = count_collectives(text)
    assert counts["all-gather"] == 0 and counts["all-reduce"] == 0 and counts["collective-permute"] > 0, counts
