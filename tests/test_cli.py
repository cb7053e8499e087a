"""``python -m torchax_vae decode`` and ``torchax_vae.decode_latents``: latents files -> MP4.

Scaling and post-processing are checked against diffusers' own code on the same weights
(``CogVideoXPipeline.decode_latents`` called on a stand-in pipeline, ``VideoProcessor.postprocess_video``);
the MP4 is read back with the library that wrote it (imageio-ffmpeg).
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import PATHS, loaders, randn

import torchax_vae
from compare.checkpoints import COGVIDEOX_1_5, TINY, write_random_checkpoint
from torchax_vae import cli, pipeline

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

TOL = 1e-4  # max abs, fp32: the project's bar against diffusers
# MP4 (H.264, yuv420p) is lossy. The videos here are random-weight decodes: pixel noise (neighbouring
# pixels differ by 33 on average), the worst case for 4:2:0 chroma subsampling. Measured on this
# machine, (2, 4, 4, 16, 24) latents -> 8 frames of 32 x 48, read back vs the uint8 frames written:
#   quality 5 (crf 25, the default): RGB mean |diff| 20.9 (max 160), luma (BT.601) mean 4.9 (max 36)
#   quality 10 (crf 0):               RGB mean 19.6 (max 165),        luma mean 1.25 (max 8.3)
# RGB error is chroma subsampling of noise; luma carries the check. Against the *other* batch item's
# frames luma differs by 26.6 on average, so the bounds below also prove the frames correspond.
# A smooth synthetic video round-trips with RGB mean 3.8 (quality 5) / 2.7 (quality 10).
LUMA_MEAN_TOL = {5: 7.0, 10: 2.0}
RGB_MEAN_TOL = 25.0
SMOOTH_RGB_MEAN_TOL = {5: 5.0, 10: 4.0}
LATENTS_SHAPE = (2, 4, 4, 16, 24)  # (B, T, C, H, W) as the pipeline returns; C = TINY latent_channels


def run_cli(*args) -> int:
  return cli.main(["decode", *map(str, args)])


@pytest.fixture(scope="module")
def runner(tiny_dir):
  return torchax_vae.load(tiny_dir)


@pytest.fixture(scope="module")
def latents():
  return randn(*LATENTS_SHAPE, seed=3)


@pytest.fixture(scope="module")
def expected_frames(runner, latents):
  """uint8 frames (B, F, H, W, 3) from the API: what the MP4s should hold before compression."""
  return pipeline.to_uint8_frames(torchax_vae.decode_latents(runner, latents))


def pipeline_method_source(module_file: str, class_name: str, method: str) -> str:
  """The source of a diffusers pipeline method, read from its file: importing the pipeline module
  needs ``transformers`` (its text encoder), which this project does not install."""
  import ast

  import diffusers

  source = (Path(diffusers.__file__).parent / "pipelines" / "cogvideo" / module_file).read_text()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.ClassDef) and node.name == class_name:
      for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == method:
          item.decorator_list = []
          return ast.unparse(item)
  raise LookupError(f"{class_name}.{method} not in {module_file}")


COGVIDEOX_PIPELINES = {
  "pipeline_cogvideox.py": "CogVideoXPipeline",  # also CogVideoX 1.5 text-to-video
  "pipeline_cogvideox_image2video.py": "CogVideoXImageToVideoPipeline",
  "pipeline_cogvideox_video2video.py": "CogVideoXVideoToVideoPipeline",
  "pipeline_cogvideox_fun_control.py": "CogVideoXFunControlPipeline",
}


def test_all_cogvideox_pipelines_decode_latents_alike():
  """The one decode_latents implemented here is every CogVideoX pipeline's (diffusers' source, compared)."""
  sources = {name: pipeline_method_source(name, cls, "decode_latents") for name, cls in COGVIDEOX_PIPELINES.items()}
  assert len(set(sources.values())) == 1, sources
  assert "1 / self.vae_scaling_factor_image * latents" in sources["pipeline_cogvideox.py"]
  assert "invert_scale_latents" not in sources["pipeline_cogvideox.py"]


def diffusers_decode_latents(torch_vae, latents: np.ndarray):
  """diffusers' own ``CogVideoXPipeline.decode_latents`` (its source, executed) on a stand-in ``self``
  holding what the pipeline's ``__init__`` sets: the VAE and ``vae_scaling_factor_image``."""
  import torch

  namespace = {"torch": torch}
  exec(pipeline_method_source("pipeline_cogvideox.py", "CogVideoXPipeline", "decode_latents"), namespace)  # noqa: S102
  stand_in = types.SimpleNamespace(vae=torch_vae, vae_scaling_factor_image=torch_vae.config.scaling_factor)
  with torch.no_grad():
    return namespace["decode_latents"](stand_in, torch.from_numpy(latents))


def diffusers_uint8(video) -> np.ndarray:
  """``VideoProcessor.postprocess_video(output_type="pil")`` as a (B, F, H, W, 3) uint8 array."""
  from diffusers.video_processor import VideoProcessor

  videos = VideoProcessor(vae_scale_factor=8).postprocess_video(video, output_type="pil")
  return np.stack([np.stack([np.asarray(image) for image in frames]) for frames in videos])


# --- semantics against diffusers ---------------------------------------------------------------


@pytest.fixture(scope="module", params=["2b-scaling", "1.5-scaling"])
def scaled_checkpoint(request, tiny_dir, tmp_path_factory):
  """TINY with CogVideoX-2b's scaling (1.1526), and with 1.5's (0.7, invert_scale_latents=True)."""
  if request.param == "2b-scaling":
    return tiny_dir
  return write_random_checkpoint(tmp_path_factory.mktemp("tiny-1.5") / "vae", dict(TINY, **COGVIDEOX_1_5), seed=1)


@pytest.mark.parametrize("path", PATHS)
def test_decode_latents_matches_diffusers_pipeline(scaled_checkpoint, path, latents):
  from diffusers import AutoencoderKLCogVideoX

  torch_vae = AutoencoderKLCogVideoX.from_pretrained(scaled_checkpoint).eval()
  expected = diffusers_decode_latents(torch_vae, latents)
  model = loaders()[path](scaled_checkpoint)
  got = torchax_vae.decode_latents(model, latents)
  assert got.shape == tuple(expected.shape) == (2, 3, 8, 32, 48)
  np.testing.assert_allclose(got, expected.numpy(), atol=TOL, rtol=0)
  # The same scaling, reached from the VAE's own layout and a torch tensor (which comes back as one).
  import torch

  bcthw = torch.from_numpy(np.ascontiguousarray(latents.transpose(0, 2, 1, 3, 4)))
  got_t = torchax_vae.decode_latents(model, bcthw, layout="BCTHW")
  assert isinstance(got_t, torch.Tensor)
  np.testing.assert_allclose(got_t.numpy(), expected.numpy(), atol=TOL, rtol=0)
  # uint8 frames: diffusers' video processor on diffusers' video vs ours on ours. fp32 differences of
  # ~1e-6 can move a value across a rounding boundary: allow a rare off-by-one.
  ours, theirs = pipeline.to_uint8_frames(got), diffusers_uint8(expected)
  diff = np.abs(ours.astype(int) - theirs.astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_uint8_conversion_is_diffusers_video_processor(tiny_torch, latents):
  video = diffusers_decode_latents(tiny_torch, latents)
  np.testing.assert_array_equal(pipeline.to_uint8_frames(video.numpy()), diffusers_uint8(video))


def test_uint8_conversion_bfloat16_is_diffusers_video_processor():
  import torch

  video = torch.from_numpy(np.tanh(randn(1, 3, 3, 8, 8, seed=5)) * 1.2).to(torch.bfloat16)
  np.testing.assert_array_equal(pipeline.to_uint8_frames(video), diffusers_uint8(video))


def rounding_edges(dtype) -> np.ndarray:
  """Every value of ``dtype`` in [-1.1, 1.1] that lands within 1e-3 of a half step of 255 (where a
  rounding difference would show), and the ends."""
  import ml_dtypes

  if dtype == "bfloat16":
    values = np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
  else:
    values = np.linspace(-1.1, 1.1, 2_000_001, dtype=np.float32)
  values = values[np.isfinite(values) & (np.abs(values) <= 1.1)]
  scaled = (values * 0.5 + 0.5) * 255
  return values[np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_uint8_frames_on_the_device_equal_the_host_conversion(dtype):
  import jax.numpy as jnp
  import torch

  edges = rounding_edges(dtype)
  assert edges.size > 100
  values = np.concatenate([edges, np.tanh(randn(4096, seed=6)) * 1.2, [-1.0, 0.0, 1.0, -1.5, 1.5]])
  values = values[: values.size // 48 * 48].astype(np.float32).reshape(-1, 3, 2, 2, 4)  # (B, 3, F, H, W)
  video = torch.from_numpy(values).to(getattr(torch, dtype))
  on_device = pipeline.uint8_frames(jnp.asarray(video.float().numpy(), dtype=dtype))
  assert on_device.dtype == jnp.uint8 and on_device.shape == (values.shape[0], 2, 2, 4, 3)
  np.testing.assert_array_equal(np.asarray(on_device), diffusers_uint8(video))
  np.testing.assert_array_equal(np.asarray(on_device), pipeline.to_uint8_frames(video))


def test_decode_latents_uint8(tiny_dir, latents):
  import torch

  model = loaders()["native_flax"](tiny_dir)  # the conversion is the driver's output's, whatever the path
  video = torchax_vae.decode_latents(model, latents)
  frames = torchax_vae.decode_latents(model, latents, output_type="uint8")
  assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.shape == (2, 8, 32, 48, 3)
  np.testing.assert_array_equal(frames, pipeline.to_uint8_frames(video))
  as_torch = torchax_vae.decode_latents(model, torch.from_numpy(latents), output_type="uint8")
  assert as_torch.dtype == torch.uint8 and np.array_equal(as_torch.numpy(), frames)
  with pytest.raises(ValueError, match="output_type: expected one of video, uint8, got 'pil'"):
    torchax_vae.decode_latents(model, latents, output_type="pil")


def test_progress_true_shows_a_bar(runner, latents, capfd):
  torchax_vae.decode_latents(runner, latents[:1], progress=True)
  assert "decode" in capfd.readouterr().err  # tqdm on stderr
  torchax_vae.decode_latents(runner, latents[:1])
  assert capfd.readouterr().err == ""  # off by default
  with pytest.raises(TypeError, match="progress: expected True, False, None or a callable"):
    runner.decode(latents[:1].transpose(0, 2, 1, 3, 4), progress="yes")


# --- the command line --------------------------------------------------------------------------


def save_latents(latents: np.ndarray, path: Path, key: str = "latents") -> Path:
  if path.suffix == ".npy":
    np.save(path, latents)
  elif path.suffix == ".safetensors":
    from safetensors.numpy import save_file

    save_file({key: latents}, str(path))
  else:
    import torch

    torch.save(torch.from_numpy(latents), path)
  return path


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def luma_mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
  weights = np.array([0.299, 0.587, 0.114])  # BT.601, as ffmpeg's rgb24 -> yuv420p
  return float(np.abs(a.astype(np.float64) @ weights - b.astype(np.float64) @ weights).mean())


def check_mp4_frames(frames: np.ndarray, expected: np.ndarray, other: np.ndarray, quality: int) -> None:
  assert frames.shape == expected.shape
  luma = luma_mean_abs_diff(frames, expected)
  assert luma < LUMA_MEAN_TOL[quality]
  assert luma < 0.3 * luma_mean_abs_diff(frames, other)  # these frames, not some others
  assert mean_abs_diff(frames, expected) < RGB_MEAN_TOL


@pytest.mark.parametrize("quality", [5, 10])
def test_mp4_round_trip_of_a_smooth_video(tmp_path, quality):
  t, y, x = np.meshgrid(np.arange(8), np.arange(32), np.arange(48), indexing="ij")
  video = np.stack([x * 5 + t * 3, y * 7, 128 + 60 * np.sin((x + y + t) / 6)], -1).clip(0, 255).astype(np.uint8)
  pipeline.write_mp4(video, tmp_path / "smooth.mp4", quality=quality)
  back = pipeline.read_mp4(tmp_path / "smooth.mp4")
  assert back.shape == video.shape
  assert mean_abs_diff(back, video) < SMOOTH_RGB_MEAN_TOL[quality]


@pytest.mark.parametrize("suffix", [".safetensors", ".npy", ".pt"])
def test_cli_writes_one_mp4_per_batch_item(tiny_dir, latents, expected_frames, tmp_path, suffix, capsys):
  source = save_latents(latents, tmp_path / f"latents{suffix}")
  assert run_cli(source, "-o", tmp_path / "out.mp4", "--model", tiny_dir, "--fps", 8, "--no-progress") == 0
  summary = capsys.readouterr().out
  assert "decoded latents (2, 4, 4, 16, 24)" in summary and "2 x 8 frames 32x48" in summary
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out-0.mp4", "out-1.mp4", source.name])
  for item in range(2):
    frames = pipeline.read_mp4(tmp_path / f"out-{item}.mp4")
    assert frames.shape == (8, 32, 48, 3)
    check_mp4_frames(frames, expected_frames[item], expected_frames[1 - item], quality=5)
  meta = next(imageio_ffmpeg.read_frames(str(tmp_path / "out-0.mp4")))
  assert meta["fps"] == 8 and meta["codec"].startswith("h264")


def test_cli_single_item_quality_tiled_native(tiny_dir, latents, runner, tmp_path):
  one = latents[:1]
  source = save_latents(one, tmp_path / "one.npy")
  out = tmp_path / "one.mp4"
  args = (source, "-o", out, "--model", tiny_dir, "--path", "native_flax", "--quality", 10, "--no-progress")
  assert run_cli(*args, "--tiled") == 0
  # TINY's default tile (32 x 48 px = 16 x 24 latents) covers this latent, so tiled == untiled here;
  # tiling itself is covered by tests/test_tiling.py.
  expected = pipeline.to_uint8_frames(torchax_vae.decode_latents(runner, latents))
  check_mp4_frames(pipeline.read_mp4(out), expected[0], expected[1], quality=10)


def test_cli_multi_tensor_safetensors_needs_key(tiny_dir, latents, tmp_path, capsys):
  from safetensors.numpy import save_file

  source = tmp_path / "two.safetensors"
  save_file({"a": latents[:1], "b": latents[1:]}, str(source))
  assert run_cli(source, "-o", tmp_path / "x.mp4", "--model", tiny_dir) == cli.EXIT_USAGE
  assert "['a', 'b']" in capsys.readouterr().err
  assert run_cli(source, "-o", tmp_path / "x.mp4", "--model", tiny_dir, "--key", "b", "--no-progress") == 0
  assert (tmp_path / "x.mp4").is_file()


def test_cli_as_module_subprocess(tiny_dir, latents, tmp_path):
  source = save_latents(latents[:1, :2], tmp_path / "z.npy")
  out = tmp_path / "video.mp4"
  done = subprocess.run(
    [sys.executable, "-m", "torchax_vae", "decode", str(source), "-o", str(out), "--model", str(tiny_dir)],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr
  assert "decoded latents (1, 2, 4, 16, 24)" in done.stdout and str(out) in done.stdout
  assert pipeline.read_mp4(out).shape == (4, 32, 48, 3)


# --- bad input: clear errors, nothing written -------------------------------------------------------


def _bad_pickle(path: Path) -> Path:
  import pickle

  path.write_bytes(pickle.dumps(types.SimpleNamespace(frames=1)))
  return path


@pytest.mark.parametrize(
  "make, message",
  [
    (lambda d: (d / "z.txt").write_text("x") and d / "z.txt", "expected a .safetensors, .npy or .pt file"),
    (lambda d: d / "missing.npy", "no such file"),
    (lambda d: (d / "z.npy").write_bytes(b"not numpy") and d / "z.npy", "not a readable .npy"),
    (lambda d: (d / "z.safetensors").write_bytes(b"\x08\x00junk") and d / "z.safetensors", "not a readable"),
    (lambda d: _bad_pickle(d / "z.pt"), "not a torch file of plain tensors"),
    (lambda d: save_latents(randn(4, 4, 8, 8), d / "z.npy"), "expected 5 dims"),
    (lambda d: save_latents(randn(1, 2, 5, 8, 8), d / "z.npy"), "expected 4 latent channels on axis 2"),
    (lambda d: save_latents(randn(1, 4, 2, 8, 8), d / "z.npy"), "--layout BCTHW"),
    (lambda d: save_latents(np.ones((1, 2, 4, 8, 8), np.int32), d / "z.npy"), "floating dtype"),
    (lambda d: save_latents(np.full((1, 2, 4, 8, 8), np.nan, np.float32), d / "z.npy"), "NaN or Inf"),
  ],
  ids=["suffix", "missing", "npy", "safetensors", "pt", "rank", "channels", "layout-hint", "int", "nan"],
)
def test_bad_latents(tiny_dir, tmp_path, capsys, make, message):
  source = make(tmp_path)
  before = set(tmp_path.iterdir())
  assert run_cli(source, "-o", tmp_path / "out.mp4", "--model", tiny_dir) == cli.EXIT_USAGE
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
  assert set(tmp_path.iterdir()) == before  # no MP4, no temporary file


@pytest.mark.parametrize(
  "output, message",
  [
    (lambda d: d / "out.avi", "ending in .mp4"),
    (lambda d: d / "no-such-dir" / "out.mp4", "does not exist"),
    (lambda d: (d / "file").write_text("x") and d / "file" / "out.mp4", "does not exist"),
    (lambda d: (d / "dir.mp4").mkdir() or d / "dir.mp4", "is a directory"),
  ],
  ids=["suffix", "missing-dir", "parent-is-file", "is-dir"],
)
def test_bad_output_fails_before_decoding(tiny_dir, latents, tmp_path, capsys, monkeypatch, output, message):
  source = save_latents(latents[:1], tmp_path / "z.npy")
  monkeypatch.setattr(cli, "_loader", lambda path: pytest.fail("the model was loaded before the output was checked"))
  assert run_cli(source, "-o", output(tmp_path)) == cli.EXIT_USAGE
  assert message in capsys.readouterr().err


def test_failed_write_leaves_no_partial_mp4(expected_frames, tmp_path, monkeypatch):
  real = imageio_ffmpeg.write_frames

  def failing(*args, **kwargs):
    writer = real(*args, **kwargs)

    def wrapped():  # passes 3 frames to ffmpeg, then fails as a full disk would
      writer.send(None)
      for _ in range(3):
        writer.send((yield))
      yield
      writer.close()  # the partial file is complete on disk: it must still be removed
      raise OSError("disk full (simulated)")

    return wrapped()

  monkeypatch.setattr(imageio_ffmpeg, "write_frames", failing)
  with pytest.raises(OSError, match="simulated"):
    pipeline.write_mp4(expected_frames[0], tmp_path / "out.mp4")
  assert list(tmp_path.iterdir()) == []


# --- progress -----------------------------------------------------------------------------------------


def test_progress_counts_frame_steps_and_tiles(tiny_dir):
  runner = torchax_vae.load(tiny_dir)
  z = randn(1, 4, 4, 16, 24)  # T=4: steps (0,2), (2,4); test_progress_true_shows_a_bar's shape, so its programs
  calls = []
  runner.decode(z, progress=lambda done, total: calls.append((done, total)))
  assert calls == [(1, 2), (2, 2)]
  # 8-wide latent tiles in one row of 20-high ones: 4 tiles of 2 shapes (16x8, 16x6), 4 programs, not a
  # 2-D grid's 8 (2 tile sizes per tiled axis)
  runner.enable_tiling(tile_sample_min_height=40, tile_sample_min_width=16)
  calls.clear()
  runner.decode(z, progress=lambda done, total: calls.append((done, total)))
  tiles = len(range(0, 16, 16)) * len(range(0, 24, 6))  # stride int(20 * (1 - 1/6)) = 16, int(8 * (1 - 1/5)) = 6
  assert tiles == 4 and calls == [(i, 2 * tiles) for i in range(1, 2 * tiles + 1)]


# That importing the package and its command line stays torch-free is checked in the fresh process of
# tests/test_warm_start.py::test_warm_start_from_executables_imports_no_torch (one interpreter start for all).


# --- Wan -----------------------------------------------------------------------------------------

WAN_PIPELINES = ("pipeline_wan.py", "pipeline_wan_i2v.py")  # text-to-video (2.1, 2.2 A14B, TI2V-5B), image-to-video
# What those pipelines do between their latents and vae.decode, verbatim (diffusers 0.42).
WAN_DECODE_LINES = (
  "latents_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, self.vae.config.z_dim, 1, 1, 1).to(",
  "latents = latents / latents_std + latents_mean",
  "video = self.vae.decode(latents, return_dict=False)[0]",
)


def test_wan_pipelines_decode_latents_alike():
  import diffusers

  for name in WAN_PIPELINES:
    source = (Path(diffusers.__file__).parent / "pipelines" / "wan" / name).read_text()
    for line in WAN_DECODE_LINES:
      assert line in source, (name, line)


@pytest.mark.parametrize("variant", ["2.1", "2.2"])
def test_decode_latents_matches_wan_pipeline(tiny_wan_dirs, tiny_wan_torch, variant):
  import torch

  vae = tiny_wan_torch[variant]
  latents = randn(2, 4, 3, 4, 6, seed=8)  # (B, C, T, H, W): what WanPipeline(..., output_type="latent") returns
  with torch.no_grad():  # the pipeline's lines, on the torch VAE
    z = torch.from_numpy(latents)
    latents_mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    latents_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    expected = vae.decode(z / latents_std + latents_mean, return_dict=False)[0].numpy()
  runner = torchax_vae.load(tiny_wan_dirs[variant])
  video = torchax_vae.decode_latents(runner, latents)  # the model's pipeline layout (BCTHW) by default
  np.testing.assert_allclose(video, expected, atol=TOL, rtol=0)
  assert np.array_equal(pipeline.to_uint8_frames(video), pipeline.to_uint8_frames(expected)) or (
    np.abs(pipeline.to_uint8_frames(video).astype(int) - pipeline.to_uint8_frames(expected)).max() <= 1
  )
  with pytest.raises(pipeline.LatentsError, match="de-normalise latents with the VAE config's latents_mean"):
    torchax_vae.decode_latents(runner, latents, scaling_factor=0.7)


def test_cli_decodes_wan_latents(tiny_wan_dirs, tmp_path, capsys):
  runner = torchax_vae.load(tiny_wan_dirs["2.1"])
  latents = randn(2, 4, 3, 4, 6, seed=9)  # (B, C, T, H, W)
  expected = pipeline.to_uint8_frames(torchax_vae.decode_latents(runner, latents))
  source = save_latents(latents, tmp_path / "wan.npy")
  assert run_cli(source, "-o", tmp_path / "wan.mp4", "--model", tiny_wan_dirs["2.1"], "--quality", 10, "--no-progress") == 0
  assert "decoded latents (2, 4, 3, 4, 6) (BCTHW, * latents_std + latents_mean) -> 2 x 9 frames 32x48" in capsys.readouterr().out
  for item in range(2):
    check_mp4_frames(pipeline.read_mp4(tmp_path / f"wan-{item}.mp4"), expected[item], expected[1 - item], quality=10)


@pytest.mark.parametrize(
  ("args", "message"),
  [
    ((), "expected 4 latent channels on axis 1 of BCTHW (the model, AutoencoderKLWan, has 4), got 16"),
    (("--scaling-factor", "0.7"), "--scaling-factor: AutoencoderKLWan's pipelines do not scale latents by a factor"),
  ],
  ids=["channels", "scaling-factor"],
)
def test_cli_bad_wan_arguments_fail_before_decoding(tiny_wan_dirs, tmp_path, capsys, monkeypatch, args, message):
  channels = 16 if "--scaling-factor" not in args else 4
  source = save_latents(randn(1, channels, 2, 4, 6), tmp_path / "z.npy")
  monkeypatch.setattr(cli, "_loader", lambda path: pytest.fail("the model was loaded before the latents were checked"))
  assert run_cli(source, "-o", tmp_path / "out.mp4", "--model", tiny_wan_dirs["2.1"], *args) == cli.EXIT_USAGE
  assert message in capsys.readouterr().err
  assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("vae_dtype", ["float32", "bfloat16"])
def test_wan_latent_denormalisation_is_the_pipelines_bit_for_bit(vae_dtype):
  """WanPipeline casts float32 latents to the VAE's dtype, then divides by ``1.0 / std`` taken of the
  std already in that dtype; with the real Wan 2.1 statistics bf16 rounding shows if the order differs."""
  import torch

  from torchax_vae.core import models

  config = models.WanVAEConfig()  # diffusers' defaults: the Wan 2.1 VAE's 16 latents_mean / latents_std
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[vae_dtype]
  latents = torch.from_numpy(randn(1, 16, 2, 3, 5, seed=4))
  z = latents.to(dtype=dtype)  # the pipeline's lines (diffusers 0.42, pipeline_wan.py)
  mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
  std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
  expected = (z / std + mean).float().numpy()
  import jax.numpy as jnp

  got = models.Wan(config).latents_for_decode(jnp.asarray(latents.numpy()), vae_dtype=getattr(jnp, vae_dtype))
  assert got.dtype == getattr(jnp, vae_dtype)
  np.testing.assert_array_equal(np.asarray(got, np.float32), expected)
