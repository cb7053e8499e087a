"""Dataset jobs (:mod:`torchax_vae.jobs`): ``python -m torchax_vae encode`` and ``decode -o OUT_DIR``.

Encode is checked against diffusers PyTorch on the same weights and the same frames (the frames the
job's reader took, normalised as diffusers' video processor does, encoded by the diffusers module,
scaled as the model's training scripts cache latents): fp32 max abs <= 1e-4. A job killed with
SIGKILL between the two writes of a batch, with a temporary left behind, is re-run to the same bytes
as an uninterrupted run. Two processes on JAX's multi-controller runtime split the inputs and make
the same bytes as one process. The files run as a worker script for those subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TOL = 1e-4  # fp32 max abs against diffusers
VIDEOS = {"a": (12, 40, 56), "b": (9, 32, 48), "sub/c": (14, 48, 40), "d": (11, 36, 36)}  # name: (F, H, W)
SIZE, FRAMES = (32, 32), 9  # 1 + 4k: CogVideoX 9 -> 3 latent frames (tiny: 5), Wan 9 -> 3


def make_videos(directory: Path, extra_bad: bool = True) -> Path:
  """Smooth random videos (as MP4), and, with ``extra_bad``, a text file named .mp4 and a too-short one."""
  from torchax_vae.pipeline import write_mp4

  rng = np.random.default_rng(0)
  for name, (f, h, w) in VIDEOS.items():
    coarse = rng.integers(0, 255, (f, h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    frames = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :h, :w].astype(np.uint8)
    (directory / name).parent.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, directory / f"{name}.mp4", quality=8)
  if extra_bad:
    (directory / "bad.mp4").write_text("not a video")
    write_mp4(np.zeros((3, 32, 32, 3), np.uint8), directory / "short.mp4")
  return directory


def encode_cli(*args) -> int:
  from torchax_vae import cli

  return cli.main(["encode", *map(str, args), "--no-progress"])


def manifest(out: Path, name: str = "manifest.jsonl") -> dict[str, dict]:
  lines = [json.loads(line) for line in (out / name).read_text().splitlines()]
  by_source = {Path(e["source"]).name: e for e in lines}
  assert len(by_source) == len(lines), "one line per input after the job"
  return by_source


def latents_of(path: Path) -> tuple[np.ndarray, dict]:
  from safetensors import safe_open

  with safe_open(str(path), framework="numpy") as handle:
    return handle.get_tensor("latents"), handle.metadata()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  return make_videos(tmp_path_factory.mktemp("videos"))


def _diffusers_latents(torch_vae, frames: np.ndarray, model: str) -> np.ndarray:
  """What diffusers' training scripts cache for these uint8 frames ``(F, H, W, 3)``."""
  import torch

  video = torch.from_numpy(frames.astype(np.float32) / 255.0).permute(3, 0, 1, 2)[None] * 2.0 - 1.0  # (1, 3, F, H, W)
  with torch.no_grad():
    z = torch_vae.encode(video).latent_dist.mode()
  if model == "cogvideox":
    return (z * torch_vae.config.scaling_factor).permute(0, 2, 1, 3, 4).numpy()
  mean = torch.tensor(torch_vae.config.latents_mean).view(1, -1, 1, 1, 1)
  inverse_std = 1.0 / torch.tensor(torch_vae.config.latents_std).view(1, -1, 1, 1, 1)
  return ((z - mean) * inverse_std).numpy()


@pytest.mark.parametrize("model", ["cogvideox", "wan"])
def test_encode_job_is_diffusers_and_records_every_input(model, videos, tiny_dir, tiny_torch, tiny_wan_dirs, tiny_wan_torch, tmp_path):
  from torchax_vae import jobs
  from torchax_vae.core.models import adapter_for
  from torchax_vae.core.checkpoint import read_config

  vae_dir, torch_vae = (tiny_dir, tiny_torch) if model == "cogvideox" else (tiny_wan_dirs["2.1"], tiny_wan_torch["2.1"])
  listing = tmp_path / "more.txt"
  listing.write_text(f"# a list\n{videos / 'd.mp4'}\nmissing.mp4\n")
  out = tmp_path / "out"
  size = ",".join(map(str, SIZE))
  code = encode_cli(videos, listing, "-o", out, "--model", vae_dir, "--size", size, "--frames", FRAMES, "--batch", 2)
  assert code == 1  # something failed
  entries = manifest(out)
  assert {k: v["status"] for k, v in entries.items()} == {
    "a.mp4": "done", "b.mp4": "done", "c.mp4": "done", "d.mp4": "done", "bad.mp4": "failed", "short.mp4": "failed",
    "missing.mp4": "failed",
  }  # fmt: skip
  assert "not a readable video" in entries["bad.mp4"]["reason"]
  assert f"too few frames: 3, {FRAMES} needed" in entries["short.mp4"]["reason"]
  assert "no such file" in entries["missing.mp4"]["reason"]
  assert entries["c.mp4"]["output"] == "sub/c.safetensors"  # the input's subdirectory kept
  assert not list(out.rglob(".*.partial"))

  adapter = adapter_for(read_config(Path(vae_dir)))
  worst = 0.0
  for name in ("a", "b", "sub/c"):
    latents, meta = latents_of(out / f"{name}.safetensors")
    frames, _ = jobs.read_video(videos / f"{name}.mp4", jobs.EncodeSettings(size=SIZE, frames=FRAMES), adapter)
    assert frames.shape == (FRAMES, *SIZE, 3)
    expected = _diffusers_latents(torch_vae, frames, model)
    assert latents.shape == expected.shape and latents.dtype == np.float32
    worst = max(worst, float(np.abs(latents - expected).max()))
    assert meta["layout"] == adapter.pipeline_layout and meta["posterior"] == "mode" and meta["frames"] == str(FRAMES)
    assert meta["source"] == str(videos / f"{name}.mp4") and meta["model_class"] == adapter.class_name
    assert (meta["height"], meta["width"]) == tuple(map(str, SIZE)) and meta["source_size"] == str((videos / f"{name}.mp4").stat().st_size)
  assert worst <= TOL, worst
  # The reader resizes the short side and crops the centre: a 40 x 56 source's frame at 32 x 32.
  frames, info = jobs.read_video(videos / "a.mp4", jobs.EncodeSettings(size=SIZE, frames=FRAMES), adapter)
  assert (info["source_width"], info["source_height"]) == (56, 40)


def test_without_frames_takes_the_longest_valid_count_and_keyed_samples_ignore_batching(videos, tiny_wan_dirs, tmp_path):
  """No --frames: each video's longest 1 + 4k count (12 -> 9, 14 -> 13, 11 -> 9, 9 -> 9). --sample: the
  same bits whether the items run in one batch or alone, and what the runner's encode with the item's
  key gives."""
  import jax

  import torchax_vae
  from torchax_vae import jobs
  from torchax_vae.jobs.encode import _frames_to_video

  vae = tiny_wan_dirs["2.1"]
  args = ("--model", vae, "--size", "32,32", "--sample", 5)
  assert encode_cli(videos / "a.mp4", videos / "sub", "-o", tmp_path / "one", *args, "--batch", 2) == 0
  assert encode_cli(videos / "a.mp4", videos / "sub", "-o", tmp_path / "alone", *args, "--batch", 1) == 0
  a, meta = latents_of(tmp_path / "one" / "a.safetensors")
  c, _ = latents_of(tmp_path / "one" / "c.safetensors")
  assert meta["frames"] == "9" and meta["posterior"] == "sample" and meta["sample_seed"] == "5"
  assert a.shape[2] == 3 and c.shape[2] == 4  # 9 and 13 frames -> 3 and 4 latent frames
  assert np.array_equal(a, latents_of(tmp_path / "alone" / "a.safetensors")[0])
  runner = torchax_vae.load(vae)
  frames, _ = jobs.read_video(videos / "a.mp4", jobs.EncodeSettings(size=(32, 32)), runner.adapter)
  video = _frames_to_video(jax.numpy.asarray(frames[None]))
  item = jobs.Item(0, videos / "a.mp4", "a")
  expected = runner.adapter.latents_from_encode(runner.encode(video, jobs.sample_key(5, item)))
  np.testing.assert_allclose(a, np.asarray(expected), atol=TOL, rtol=0)
  assert not np.allclose(a, np.asarray(runner.adapter.latents_from_encode(runner.encode(video))), atol=1e-3)


def test_decode_job_makes_the_single_decodes_videos_and_resumes(tiny_dir, tmp_path, monkeypatch):
  """latent files (a batch of 2 among them, one of the wrong channels) -> one MP4 per item, frames as
  the single-file ``decode`` makes them; a re-run redoes nothing, trusting the manifest's record of
  each output (no MP4 read back) and, for a file touched since, the key in the MP4's own tag."""
  from torchax_vae import cli, pipeline
  from torchax_vae.jobs import commit

  from helpers import randn

  latents = tmp_path / "latents"
  latents.mkdir()
  np.save(latents / "x.npy", randn(1, 3, 4, 8, 8, seed=1))
  np.save(latents / "y.npy", randn(2, 3, 4, 8, 8, seed=2))
  np.save(latents / "z.npy", randn(1, 3, 4, 8, 8, seed=3))
  np.save(latents / "wrong.npy", randn(1, 3, 6, 8, 8, seed=4))
  out = tmp_path / "out"
  args = ("--model", tiny_dir, "--batch", 2, "--no-progress")
  assert cli.main(["decode", str(latents), "-o", str(out), *map(str, args)]) == 1
  entries = manifest(out)
  assert entries["wrong.npy"]["status"] == "failed" and "expected 4 latent channels" in entries["wrong.npy"]["reason"]
  assert sorted(p.name for p in out.glob("*.mp4")) == ["x.mp4", "y-0.mp4", "y-1.mp4", "z.mp4"]
  for name, item in (("y", 1), ("z", None)):
    single = tmp_path / f"{name}.mp4"
    assert cli.main(["decode", str(latents / f"{name}.npy"), "-o", str(single), "--model", str(tiny_dir), "--no-progress"]) == 0
    reference = single if item is None else single.with_name(f"{name}-{item}.mp4")
    made = out / (f"{name}.mp4" if item is None else f"{name}-{item}.mp4")
    assert np.array_equal(pipeline.read_mp4(made), pipeline.read_mp4(reference))
  read_back = commit._mp4_comment  # stored_job_key looks it up there
  monkeypatch.setattr(commit, "_mp4_comment", lambda path: pytest.fail(f"{path} read back although the manifest vouched for it"))
  stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
  assert cli.main(["decode", str(latents), "-o", str(out), *map(str, args)]) == 1  # wrong.npy fails again
  assert {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == stamps  # nothing redone
  assert manifest(out)["x.npy"].get("reused") is True
  os.utime(out / "x.mp4", ns=(stamps[out / "x.mp4"] - 10**9,) * 2)  # no longer the file the manifest recorded
  calls = []
  monkeypatch.setattr(commit, "_mp4_comment", lambda path: calls.append(path.name) or read_back(path))
  stamps[out / "x.mp4"] -= 10**9
  assert cli.main(["decode", str(latents), "-o", str(out), *map(str, args)]) == 1
  assert calls == ["x.mp4"] and {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == stamps  # its tag still matched


@pytest.mark.parametrize(
  "args, message",
  [
    (("--frames", "8"), "--frames 8: AutoencoderKLCogVideoX encodes 1 + k"),
    (("--size", "31,32"), "--size 31,32: expected positive multiples of 2"),
    (("--size", "32"), "--size '32': expected two integers H,W"),
    (("--batch", "0"), "--batch 0: expected a positive number"),
    (("--fps", "0"), "--fps 0.0: expected a positive frame rate"),
  ],
  ids=["frames", "size", "size-format", "batch", "fps"],
)
def test_bad_job_arguments_fail_before_anything_is_written(videos, tiny_dir, tmp_path, capsys, monkeypatch, args, message):
  from torchax_vae import cli

  monkeypatch.setattr(cli, "_loader", lambda path: pytest.fail("the model was loaded before the arguments were checked"))
  assert encode_cli(videos, "-o", tmp_path / "out", "--model", tiny_dir, *args) == cli.EXIT_USAGE
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
  assert not (tmp_path / "out").exists()


def test_inputs_that_would_collide_or_do_not_exist_are_refused(videos, tmp_path):
  from torchax_vae import jobs

  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "a.mp4").write_bytes((videos / "a.mp4").read_bytes())
  with pytest.raises(jobs.JobInputError, match="would both be written as 'a'"):
    jobs.collect_inputs([videos / "a.mp4", tmp_path / "other" / "a.mp4"], jobs.VIDEO_SUFFIXES)
  with pytest.raises(jobs.JobInputError, match="no such file or directory"):
    jobs.collect_inputs([tmp_path / "nope.mp4"], jobs.VIDEO_SUFFIXES)
  names = [item.name for item in jobs.collect_inputs([videos], jobs.VIDEO_SUFFIXES)]
  assert names == ["a", "b", "bad", "d", "short", "sub/c"]


def test_generic_class_is_refused_by_encode(tmp_path, videos, capsys):
  from compare.checkpoints import write_random_checkpoint
  from torchax_vae import cli

  from compare.conformance_cases import CASES

  vae = write_random_checkpoint(tmp_path / "sd", {"_class_name": "AutoencoderKL", **CASES["AutoencoderKL"].config})
  assert encode_cli(videos, "-o", tmp_path / "out", "--model", vae) == cli.EXIT_USAGE
  assert "runs through the generic path" in capsys.readouterr().err


@pytest.mark.multidevice
def test_batches_split_over_dp(videos, tiny_dir, tmp_path):
  """--mesh dp=2 --batch 2: each batch of 2 split over 2 devices; the latents are the one-device ones."""
  args = ["--model", tiny_dir, "--size", "32,32", "--frames", 9, "--batch", 2]
  inputs = [videos / "a.mp4", videos / "b.mp4"]
  assert encode_cli(*inputs, "-o", tmp_path / "one", *args) == 0
  assert encode_cli(*inputs, "-o", tmp_path / "dp", *args, "--mesh", "dp=2") == 0
  for name in ("a", "b"):
    np.testing.assert_allclose(
      latents_of(tmp_path / "dp" / f"{name}.safetensors")[0], latents_of(tmp_path / "one" / f"{name}.safetensors")[0], atol=1e-5, rtol=0
    )


def test_jobs_bench_reports_both_jobs(tiny_dir, tmp_path, capsys):
  """compare.jobs_bench on the tiny model: both jobs done, the wall time split, versions recorded."""
  from compare import jobs_bench

  args = ["--model", str(tiny_dir), "--items", "3", "--frames", "5", "--size", "16,16", "--source", "20,24", "--out", str(tmp_path)]
  assert jobs_bench.main(args) == 0
  result = json.loads((tmp_path / "jobs.json").read_text())
  for kind in ("encode", "decode"):
    summary = result[kind]
    assert summary["done"] == 3 and summary["failed"] == 0 and summary["frames"] == 15
    assert 0 < summary["device_s"] <= summary["seconds"] and summary["input_wait_s"] >= 0
  assert result["versions"]["jax"] and result["device_kind"]
  assert "| encode |" in capsys.readouterr().out


# --- killed and re-run; two processes ------------------------------------------------------------


def _worker_env() -> dict[str, str]:
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
  return env


def test_killed_mid_batch_and_rerun_is_bit_identical(videos, tiny_dir, tmp_path):
  """SIGKILL when the third output (the first of the second batch of 2) is written but not yet
  renamed: two complete outputs and a temporary are left. The re-run redoes the second batch whole
  and ends with each input done once, every file bit-identical to an uninterrupted run."""
  args = ["--model", str(tiny_dir), "--size", "32,32", "--frames", "9", "--batch", "2"]
  inputs = [str(videos / name) for name in ("a.mp4", "b.mp4", "d.mp4", "sub")]
  assert encode_cli(*inputs, "-o", tmp_path / "whole", *args) == 0

  killed = tmp_path / "killed"
  proc = subprocess.run(
    [sys.executable, __file__, "kill-at-publish", "3", *inputs, "-o", str(killed), *args],
    env=_worker_env(), capture_output=True, text=True, timeout=300, check=False,
  )  # fmt: skip
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert sorted(p.name for p in killed.glob("*.safetensors")) == ["a.safetensors", "b.safetensors"]
  assert len(list(killed.rglob(".*.partial"))) == 1  # the third output, written, never renamed
  assert encode_cli(*inputs, "-o", killed, *args) == 0
  whole = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*.safetensors"))
  assert whole == sorted(p.relative_to(killed) for p in killed.rglob("*.safetensors")) and len(whole) == 4
  for relative in whole:
    assert (killed / relative).read_bytes() == (tmp_path / "whole" / relative).read_bytes(), relative
  assert not list(killed.rglob(".*.partial"))
  entries = manifest(killed)
  assert len(entries) == 4 and all(e["status"] == "done" for e in entries.values())
  assert entries["a.mp4"].get("reused") and entries["b.mp4"].get("reused")  # the first batch was not redone
  assert not entries["c.mp4"].get("reused") and not entries["d.mp4"].get("reused")


def test_two_processes_split_the_inputs(videos, tiny_dir, tmp_path):
  """JAX's multi-controller runtime, 2 CPU processes of 1 device each: batches 0, 2 on process 0 and
  1 on process 1 (batch 1: 3 videos), each process on its own device; the same bytes as one process."""
  import socket

  args = ["--model", str(tiny_dir), "--size", "32,32", "--frames", "9"]
  inputs = [str(videos / name) for name in ("a.mp4", "b.mp4", "d.mp4")]
  assert encode_cli(*inputs, "-o", tmp_path / "one", *args) == 0
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    port = sock.getsockname()[1]
  env = _worker_env()
  from helpers import xla_flags_with_devices

  env["XLA_FLAGS"] = xla_flags_with_devices(1)
  out = tmp_path / "two"
  procs = [
    subprocess.Popen(
      [sys.executable, __file__, "cli", "encode", *inputs, "-o", str(out), *args, "--no-progress",
       "--coordinator-address", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], logs
  assert "encode: 2 items: 2 done" in logs[0] and "encode: 1 items: 1 done" in logs[1], logs
  assert {Path(e["source"]).name for e in manifest(out, "manifest.0-of-2.jsonl").values()} == {"a.mp4", "d.mp4"}
  assert {Path(e["source"]).name for e in manifest(out, "manifest.1-of-2.jsonl").values()} == {"b.mp4"}
  for name in ("a", "b", "d"):
    assert (out / f"{name}.safetensors").read_bytes() == (tmp_path / "one" / f"{name}.safetensors").read_bytes()


def _kill_at_publish(count: int, argv: list[str]) -> int:
  """The encode command, SIGKILLed as its ``count``-th output is about to be renamed into place."""
  from torchax_vae import cli
  from torchax_vae.jobs import commit

  calls = []
  real = commit._publish

  def publish(partial, path):
    calls.append(path)
    if len(calls) == count:
      os.kill(os.getpid(), signal.SIGKILL)
    real(partial, path)

  commit._publish = publish  # write_atomically looks it up there
  return cli.main(["encode", *argv, "--no-progress", "--readers", "1"])


if __name__ == "__main__":
  if sys.argv[1] == "kill-at-publish":
    sys.exit(_kill_at_publish(int(sys.argv[2]), sys.argv[3:]))
  if sys.argv[1] == "cli":
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from torchax_vae import cli

    sys.exit(cli.main(sys.argv[2:]))


def test_decode_job_unpacks_ltx_latents_and_draws_noise_per_sample(tmp_path):
  """LTX-Video 0.9.1 (timestep-conditioned): packed ``(B, S, C)`` files with ``--video-shape``, the decode
  timestep and noise scale; each sample's noise from its own key (seed, file name, index), so the job's
  frames equal ``decode_latents`` of each file alone with those keys, batched or not. Without
  ``--video-shape`` each packed file is that item's failure, saying what is missing."""
  from compare.checkpoints import TINY_LTX_VIDEO_091, write_random_checkpoint
  from helpers import randn

  import torchax_vae
  from torchax_vae import cli, jobs, pipeline

  model = write_random_checkpoint(tmp_path / "ltx", TINY_LTX_VIDEO_091, seed=0)
  latents = tmp_path / "latents"
  latents.mkdir()
  shapes = {"p": 1, "q": 2}  # packed: 9x16x16 video -> 2x2x2 = 8 tokens of 8 channels
  for seed, (name, batch) in enumerate(shapes.items()):
    np.save(latents / f"{name}.npy", randn(batch, 8, 8, seed=seed))
  out = tmp_path / "out"
  flags = ["--decode-timestep", "0.05", "--decode-noise-scale", "0.025", "--noise-seed", "3", "--no-progress"]
  assert cli.main(["decode", str(latents), "-o", str(out), "--model", str(model), "--video-shape", "9,16,16",
                   "--batch", "2", *flags]) == 0  # fmt: skip
  runner = torchax_vae.load(model, cache_dir=False)
  for name, batch in shapes.items():
    packed = np.load(latents / f"{name}.npy")
    keys = jobs.decode_noise_keys(3, jobs.Item(0, latents / f"{name}.npy", name), batch)
    frames = pipeline.decode_latents(runner, packed, video_shape=(9, 16, 16), decode_timestep=0.05, decode_noise_scale=0.025,
                                     generator=keys, output_type="uint8")  # fmt: skip
    made = [out / (f"{name}.mp4" if batch == 1 else f"{name}-{i}.mp4") for i in range(batch)]
    for video, path in zip(frames, made):
      reference = tmp_path / f"reference-{path.name}"
      pipeline.write_mp4(video, reference)
      assert np.array_equal(pipeline.read_mp4(path), pipeline.read_mp4(reference)), path.name
  other = pipeline.decode_latents(runner, packed, video_shape=(9, 16, 16), decode_timestep=0.05, decode_noise_scale=0.025,
                                  generator=keys[::-1], output_type="uint8")  # fmt: skip
  assert not np.array_equal(other, frames)  # the noise shows in the frames: another key would not pass
  assert cli.main(["decode", str(latents), "-o", str(tmp_path / "unshaped"), "--model", str(model), *flags]) == 1
  assert all("needs the video's (num_frames, height, width)" in e["reason"] for e in manifest(tmp_path / "unshaped").values())
