"""The generic path (``torchax_vae.runtime.generic``): any diffusers autoencoder, unmodified, one program per call
signature, against diffusers PyTorch on the same weights (fp32 max abs ≤ ``TOL``)."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn

import torchax_vae
from torchax_vae.core.errors import CheckpointError, UnsupportedModelError
from torchax_vae.runtime.generic import GenericRunner, InputError

torch = pytest.importorskip("torch")
import diffusers  # noqa: E402

TOL = 1e-4  # fp32 max abs against diffusers
BF16_TOL = 0.1  # bf16 max abs against diffusers fp32 (measured: see test_bfloat16)
# Two blocks (2x), 32 px tiles (16 latent px): a 24 x 20 latent takes 2 x 2 tiles in diffusers' tiled_decode.
KL = dict(
  in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
  block_out_channels=[32, 64], latent_channels=4, norm_num_groups=32, sample_size=32, layers_per_block=1,
)  # fmt: skip


def _save(cls, config, directory, seed=0):
  torch.manual_seed(seed)
  module = cls(**config).eval()
  module.save_pretrained(directory)
  return module


@pytest.fixture(scope="module")
def kl(tmp_path_factory):
  directory = tmp_path_factory.mktemp("kl")
  return _save(diffusers.AutoencoderKL, KL, directory), directory


@pytest.fixture(scope="module")
def vae(kl):
  return torchax_vae.load(kl[1])


def _decode(module, z, **kwargs):
  with torch.no_grad():
    return module.decode(torch.from_numpy(z), **kwargs).sample.numpy()


def _mode(module, x):
  with torch.no_grad():
    return module.encode(torch.from_numpy(x)).latent_dist.mode().numpy()


def _max_abs(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_a_class_without_adapter_runs_generic(vae):
  assert isinstance(vae, GenericRunner) and vae.class_name == "AutoencoderKL"
  assert vae.config["latent_channels"] == 4  # diffusers' own config handling (FrozenDict of the module)


def test_decode_and_encode_match_diffusers(kl, vae):
  module, _ = kl
  z = randn(2, 4, 6, 10, seed=1)
  out = vae.decode(z)
  assert out.shape == (2, 3, 12, 20) and isinstance(out, np.ndarray)
  assert _max_abs(out, _decode(module, z)) <= TOL
  x = np.tanh(randn(2, 3, 12, 20, seed=2))
  assert _max_abs(vae.encode(x), _mode(module, x)) <= TOL
  # torch in, torch out; jax in, jax out
  assert isinstance(vae.decode(torch.from_numpy(z)), torch.Tensor)
  assert isinstance(vae.decode(jnp.asarray(z)), jax.Array)


def test_one_program_per_signature(kl):
  fresh = torchax_vae.load(kl[1], cache_dir=False)
  for _ in range(2):
    fresh.decode(randn(1, 4, 4, 4))
  assert fresh.trace_counts["decode"] == 1
  fresh.decode(randn(1, 4, 4, 6))  # another shape: another program
  assert fresh.trace_counts["decode"] == 2


def test_keyed_sample_is_mode_plus_std_times_the_keys_noise(kl, vae):
  module, _ = kl
  x = np.tanh(randn(1, 3, 8, 8, seed=3))
  key = jax.random.key(7)
  sample = np.asarray(vae.encode(x, key=key))
  with torch.no_grad():
    dist = module.encode(torch.from_numpy(x)).latent_dist
  noise = np.asarray(jax.random.normal(key, sample.shape, jnp.float32))
  assert _max_abs(sample, dist.mean.numpy() + dist.std.numpy() * noise) <= TOL
  params = vae.encode_moments(x)
  assert _max_abs(params, dist.parameters.numpy()) <= TOL


def test_tiling_equals_diffusers_tiled_decode(kl, tmp_path):
  module, directory = kl
  z = randn(1, 4, 24, 20, seed=4)  # > 16 latent px: 2 x 2 tiles
  tiled = torchax_vae.load(directory, cache_dir=False)
  tiled.enable_tiling()
  module.enable_tiling()
  try:
    ref = _decode(module, z)
  finally:
    module.disable_tiling()
  out = tiled.decode(z)
  untiled = _decode(module, z)
  assert _max_abs(out, ref) <= TOL
  assert _max_abs(out, untiled) > 1e-3  # tiling did change the output: it really ran tiled
  tiled.disable_tiling()
  assert _max_abs(tiled.decode(z), untiled) <= TOL
  assert tiled.trace_counts["decode"] == 2  # tiled and untiled are two programs (module state is in the key)


def test_bfloat16(kl):
  module, directory = kl
  low = torchax_vae.load(directory, dtype="bfloat16")
  z = randn(2, 4, 6, 10, seed=1)
  out = low.decode(z)
  assert out.dtype == jnp.bfloat16
  err = _max_abs(out.astype(np.float32), _decode(module, z))
  assert 0 < err <= BF16_TOL, err


@pytest.mark.parametrize(
  ("value", "error", "match"),
  [
    (randn(2, 5, 4, 4), InputError, r"z: shape \(2, 5, 4, 4\) float32 does not fit AutoencoderKL.decode\(z\); its config: latent_channels=4"),
    (randn(4, 4, 4), InputError, r"z: shape \(4, 4, 4\) float32 does not fit AutoencoderKL.decode"),
    (randn(4), InputError, r"expected a batch of AutoencoderKL inputs \(B, C, ...\), got shape \(4,\)"),
    (np.zeros((1, 4, 0, 4), np.float32), InputError, r"expected non-empty dims"),
    (np.ones((1, 4, 4, 4), np.int32), TypeError, r"expected a floating dtype"),
    (np.full((1, 4, 4, 4), np.nan, np.float32), ValueError, r"64 of 64 values are NaN or Inf"),
  ],
)
def test_bad_latents_say_what_was_expected(vae, value, error, match):
  with pytest.raises(error, match=match):
    vae.decode(value)


def test_bad_video_to_encode(vae):
  with pytest.raises(InputError, match=r"x: shape \(1, 4, 8, 8\) float32 does not fit AutoencoderKL.encode\(x\); its config: in_channels=3"):
    vae.encode(randn(1, 4, 8, 8))


TINY_AE = dict(  # diffusers tests/models/autoencoders/test_models_autoencoder_tiny.py
  in_channels=3, out_channels=3, encoder_block_out_channels=(32, 32), decoder_block_out_channels=(32, 32),
  num_encoder_blocks=(1, 2), num_decoder_blocks=(2, 1),
)  # fmt: skip


def test_deterministic_encoder_returns_its_latent(tmp_path):
  """AutoencoderTiny (TAESD) encodes to a latent, not a posterior: encode returns it; a key is refused."""
  module = _save(diffusers.AutoencoderTiny, TINY_AE, tmp_path / "tiny")
  tiny = torchax_vae.load(tmp_path / "tiny")
  x = np.tanh(randn(2, 3, 16, 8, seed=8))
  with torch.no_grad():
    ref = module.encode(torch.from_numpy(x)).latents.numpy()
    ref_video = module.decode(torch.from_numpy(ref)).sample.numpy()
  assert _max_abs(tiny.encode(x), ref) <= TOL
  assert _max_abs(tiny.decode(ref), ref_video) <= TOL
  with pytest.raises(ValueError, match="returns a latent, not a posterior to sample from"):
    tiny.encode(x, key=jax.random.key(0))
  out = tiny.as_diffusers().encode(torch.from_numpy(x))
  assert type(out).__name__ == "AutoencoderTinyOutput" and _max_abs(out.latents, ref) <= TOL


def _copy(directory, tmp_path):
  target = tmp_path / "ckpt"
  shutil.copytree(directory, target)
  return target


def test_refused_checkpoints_name_the_problem(kl, tmp_path):
  from safetensors.numpy import load_file, save_file

  directory = _copy(kl[1], tmp_path)
  weights_file = directory / "diffusion_pytorch_model.safetensors"
  weights = load_file(weights_file)
  victim = "decoder.conv_in.weight"
  save_file({k: v for k, v in weights.items() if k != victim}, weights_file)
  with pytest.raises(CheckpointError, match=r"1 missing keys: decoder.conv_in.weight"):
    torchax_vae.load(directory)
  save_file({**weights, victim: weights[victim][:, :2]}, weights_file)
  with pytest.raises(CheckpointError, match=r"1 shape mismatches: decoder.conv_in.weight: checkpoint \(64, 2, 3, 3\), model \(64, 4, 3, 3\)"):
    torchax_vae.load(directory)
  save_file({**weights, "extra.weight": weights[victim]}, weights_file)
  with pytest.raises(CheckpointError, match=r"1 unexpected keys: extra.weight"):
    torchax_vae.load(directory)


def test_refused_configs(kl, tmp_path):
  directory = _copy(kl[1], tmp_path)
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DModel"}))
  with pytest.raises(UnsupportedModelError, match=r"'UNet2DModel' is not an autoencoder class diffusers .* exports"):
    torchax_vae.load(directory)
  (directory / "config.json").write_text(json.dumps({**config, "block_out_channels": [32, 48]}))
  with pytest.raises(CheckpointError, match="could not build AutoencoderKL from it|shape mismatches"):
    torchax_vae.load(directory)


def test_native_flax_refuses_a_class_without_port(kl):
  import native_flax

  match = r"'AutoencoderKL' has no adapter .* and no native port; torchax_vae.load runs every diffusers autoencoder"
  with pytest.raises(UnsupportedModelError, match=match):
    native_flax.load(kl[1])


def test_stored_executables_skip_tracing(kl, tmp_path):
  module, directory = kl
  z = randn(1, 4, 4, 6, seed=5)
  first = torchax_vae.load(directory, cache_dir=tmp_path / "cache")
  out = first.decode(z)
  assert first.programs.sources["compiled"] == 1
  second = torchax_vae.load(directory, cache_dir=tmp_path / "cache")
  again = second.decode(z)
  assert second.programs.sources["deserialized"] == 1 and second.trace_counts["decode"] == 0
  np.testing.assert_array_equal(again, out)
  assert _max_abs(again, _decode(module, z)) <= TOL


def test_precompile_then_no_trace(kl):
  fresh = torchax_vae.load(kl[1], cache_dir=False)
  records = fresh.precompile((1, 4, 4, 6), encode=True)
  assert [r.kind for r in records] == ["decode", "encode"]
  assert all(r.source in ("compiled", "jax_cache") for r in records)  # JAX's cache is shared within the tests
  traces = dict(fresh.trace_counts)
  fresh.decode(randn(1, 4, 4, 6))
  fresh.encode(np.tanh(randn(1, 3, 8, 12)))
  assert dict(fresh.trace_counts) == traces


def test_as_diffusers_decode_and_encode(kl, vae):
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

  module, _ = kl
  drop_in = vae.as_diffusers()
  assert {k: v for k, v in drop_in.config.items() if not k.startswith("_")} == {
    k: v for k, v in module.config.items() if not k.startswith("_")
  }  # diffusers' metadata (_name_or_path, _use_default_values) says where each was loaded from
  z = torch.from_numpy(randn(1, 4, 6, 4, seed=6))
  assert _max_abs(drop_in.decode(z, return_dict=False, generator=None)[0], _decode(module, z.numpy())) <= TOL
  x = torch.from_numpy(np.tanh(randn(2, 3, 8, 8, seed=7)))
  posterior = drop_in.encode(x).latent_dist
  assert isinstance(posterior, DiagonalGaussianDistribution)
  with torch.no_grad():
    ref = module.encode(x).latent_dist
  g = [torch.Generator().manual_seed(1) for _ in range(2)]
  assert _max_abs(posterior.sample(g[0]), ref.sample(g[1])) <= TOL  # the same noise diffusers draws


def test_progress_reports_the_one_program(vae):
  calls = []
  vae.decode(randn(1, 4, 4, 4), progress=lambda done, total: calls.append((done, total)))
  assert calls == [(1, 1)]


@pytest.fixture(scope="module")
def on_mesh(kl):
  """The KL runner on each mesh, shared by the mesh tests: the program of one shape built once."""
  return {mesh: torchax_vae.load(kl[1], mesh=mesh) for mesh in ("dp=2", "dp=2,tp=4")}


# The mesh tests' jax-array decode: its program is the one test_batch_split_needs_no_collective reads.
SPLIT_Z = (2, 4, 8, 8)


@pytest.mark.multidevice
@pytest.mark.parametrize("mesh", ["dp=2", "dp=2,tp=4"])
def test_sharded_equals_unsharded(on_mesh, vae, mesh):
  sharded = on_mesh[mesh]
  z = randn(3, 4, 8, 10, seed=9)  # batch 3 on dp=2 and latent width 10 on tp=4: neither divides
  np.testing.assert_allclose(sharded.decode(z), vae.decode(z), atol=1e-5, rtol=0)
  x = np.tanh(randn(3, 3, 16, 20, seed=10))
  np.testing.assert_allclose(sharded.encode(x), vae.encode(x), atol=1e-5, rtol=0)
  out = sharded.decode(jnp.asarray(randn(*SPLIT_Z)))
  assert isinstance(out, jax.Array) and out.sharding.device_set == set(sharded.mesh.devices.flat)


@pytest.mark.multidevice
def test_batch_split_needs_no_collective(on_mesh):
  """On dp the generic program is the same program per device: no collective. On tp, what GSPMD adds
  (the attention's gather, group norm's all-reduces across width shards) is counted, not forbidden."""
  from compare.collectives import count_collectives, step_hlo

  (text,) = step_hlo(on_mesh["dp=2"], SPLIT_Z)
  assert sum(count_collectives(text).values()) == 0
  (text,) = step_hlo(on_mesh["dp=2,tp=4"], SPLIT_Z)
  counts = count_collectives(text)
  assert counts["all-gather"] == 1  # the mid-block attention's input: every position's keys and values
  assert counts["all-reduce"] > 0  # group norm statistics over a width split across devices


def _case_checkpoint(name, tmp_path):
  """A class at its conformance config (compare/conformance_cases.py), saved; the torch module too."""
  from compare.conformance import discover, write_checkpoint
  from compare.conformance_cases import CASES

  case = CASES[name]
  return case, write_checkpoint(discover()[name], case, tmp_path / name), tmp_path / name


def test_video_class_is_one_program_per_frame_count(tmp_path):
  """Where diffusers' decode is one call over all frames, the generic program is too: a new T is a new
  program (compile grows with T; an adapter's would not), each exact."""
  case, module, directory = _case_checkpoint("AutoencoderKLLTXVideo", tmp_path)
  vae = torchax_vae.load(directory, cache_dir=False, generic=True)  # the generic path (LTX also has an adapter)
  b, c, _, h, w = case.decode_input
  for i, t in enumerate((2, 3, 3)):
    z = randn(b, c, t, h, w, seed=t)
    assert _max_abs(vae.decode(z), _decode(module, z)) <= TOL
    assert vae.trace_counts["decode"] == min(i + 1, 2)


def test_keywords_pass_through_and_key_the_program(tmp_path):
  """AutoencoderKLTemporalDecoder.decode(z, num_frames): frames folded into the batch, num_frames static."""
  _, module, directory = _case_checkpoint("AutoencoderKLTemporalDecoder", tmp_path)
  vae = torchax_vae.load(directory, cache_dir=False)
  z = randn(6, 4, 8, 12, seed=11)
  for frames in (3, 2):
    assert _max_abs(vae.decode(z, num_frames=frames), _decode(module, z, num_frames=frames)) <= TOL
  assert vae.trace_counts["decode"] == 2  # same shape, other num_frames: another program
  with pytest.raises(TypeError, match=r"num_frames: expected a tensor or a plain value"):
    vae.decode(z, num_frames=[3])


def test_audio_class(tmp_path):
  """AutoencoderOobleck (Stable Audio): (B, C, L) in and out, an Oobleck posterior's mode."""
  _, module, directory = _case_checkpoint("AutoencoderOobleck", tmp_path)
  vae = torchax_vae.load(directory)
  z, x = randn(2, 6, 5, seed=12), np.tanh(randn(2, 2, 40, seed=13))
  assert _max_abs(vae.decode(z), _decode(module, z)) <= TOL
  with torch.no_grad():
    mode = module.encode(torch.from_numpy(x)).latent_dist.mode().numpy()
  assert _max_abs(vae.encode(x), mode) <= TOL


def test_cli_decodes_images_to_png(kl, tmp_path, capsys):
  from PIL import Image

  from torchax_vae import cli
  from torchax_vae.pipeline import to_uint8_frames

  module, directory = kl
  latents = randn(2, 4, 6, 5, seed=14)
  np.save(tmp_path / "z.npy", latents)
  argv = ["decode", str(tmp_path / "z.npy"), "-o", str(tmp_path / "out.png"), "--model", str(directory), "--cache-dir", "off"]
  assert cli.main(argv + ["--no-progress"]) == 0
  assert "AutoencoderKL through the generic path" in capsys.readouterr().out
  scaled = latents / module.config.scaling_factor  # AutoencoderKL's shift_factor is None
  expected = to_uint8_frames(_decode(module, scaled.astype(np.float32))[:, :, None])
  for i in range(2):
    got = np.asarray(Image.open(tmp_path / f"out-{i}.png"))
    assert np.abs(got.astype(int) - expected[i, 0].astype(int)).max() <= 1
  assert cli.main(argv[:3] + [str(tmp_path / "out.mp4")] + argv[4:]) == 2  # images are not a video
  assert "expected an output path ending in .png" in capsys.readouterr().err
  assert not (tmp_path / "out.mp4").exists()
  np.save(tmp_path / "bad.npy", randn(1, 3, 6, 5))
  assert cli.main(["decode", str(tmp_path / "bad.npy")] + argv[2:]) == 2
  assert "does not fit AutoencoderKL.decode(z); its config: latent_channels=4" in capsys.readouterr().err


def test_cli_precompile_then_decode_traces_nothing(kl, tmp_path, capsys):
  from torchax_vae import cli

  _, directory = kl
  argv = ["precompile", "--model", str(directory), "--latent", "1,4,6,4", "--encode", "--cache-dir", str(tmp_path)]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "1x4x6x4 decode whole: compiled" in out and "1x4x6x4 encode whole: compiled" in out
  warm = torchax_vae.load(directory, cache_dir=tmp_path)
  warm.decode(randn(1, 4, 6, 4))
  assert warm.programs.sources["deserialized"] == 1 and warm.trace_counts["decode"] == 0
  assert cli.main(["precompile", "--model", str(directory), "--latent", "1,4", "--cache-dir", str(tmp_path)]) == 2
  assert "expected 3 to 5 positive integers" in capsys.readouterr().err


def test_modules_kept_in_float32_stay_so_in_bfloat16(tmp_path):
  """AutoencoderKLMiniMaxH3Audio keeps every module in float32 (``_keep_in_fp32_modules``), as diffusers'
  ``from_pretrained(torch_dtype=torch.bfloat16)`` would: parameters, buffers and inputs stay float32."""
  case, module, directory = _case_checkpoint("AutoencoderKLMiniMaxH3Audio", tmp_path)
  low = torchax_vae.load(directory, dtype="bfloat16")
  assert {str(v.dtype) for v in low.params.values()} == {"float32"} and low.input_dtype == jnp.float32
  z = randn(*case.decode_input, seed=15)
  assert _max_abs(low.decode(z), _decode(module, z)) <= TOL


def test_tensor_keywords_are_program_inputs(tmp_path):
  """LTX-Video 0.9.1's timestep-conditioned decoder: ``decode(z, temb=...)``. A tensor keyword is an input of
  the one program (another value: no new trace), and changes the output as in diffusers."""
  from compare.conformance_cases import CASES

  config = dict(CASES["AutoencoderKLLTXVideo"].config, timestep_conditioning=True)
  module = _save(diffusers.AutoencoderKLLTXVideo, config, tmp_path / "ltx")
  vae = torchax_vae.load(tmp_path / "ltx", cache_dir=False, generic=True)  # the generic path (LTX also has an adapter)
  z = randn(2, 8, 3, 4, 6, seed=16)
  outs = []
  for temb in ([0.05, 0.5], [0.5, 0.5]):
    out = vae.decode(z, temb=np.asarray(temb, np.float32))
    assert _max_abs(out, _decode(module, z, temb=torch.tensor(temb))) <= TOL
    outs.append(out)
  assert vae.trace_counts["decode"] == 1 and _max_abs(outs[0], outs[1]) > 0.1
