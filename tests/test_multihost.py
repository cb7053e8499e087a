"""Multi-controller JAX: 2 local CPU processes × 2 devices each decode a batch of 2 split over ``dp``.

The test starts two copies of this file as workers (a localhost coordinator on a free port, gloo CPU
collectives, ``--xla_force_host_platform_device_count=2`` each), as a TPU pod slice runs one process
per host. Each worker runs the command line with ``--coordinator-address`` (process 0 writes the
MP4s) and then the API on meshes ``dp=2`` and ``dp=2,tp=2`` over the 4 global devices, for both
paths; numpy results are gathered onto every process. Process 0 saves what it got; the test compares
it with a single-process decode.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MESHES = ("dp=2", "dp=2,tp=2")
PATHS = ("torchax", "native_flax")
LATENTS_SHAPE = (2, 3, 4, 8, 12)  # (B, T, C, H, W), pipeline layout; C = TINY latent_channels
WORKER_TIMEOUT = 420  # seconds for both workers together (imports, 2 paths x 2 meshes of tiny compiles)


def worker(process_id: int, port: int, workdir: Path) -> None:
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from torchax_vae import cli  # the CLI calls jax.distributed.initialize itself

  latents_file = workdir / "latents.npy"
  code = cli.main([
    "decode", str(latents_file), "-o", str(workdir / "out.mp4"), "--model", str(workdir / "vae"),
    "--mesh", "dp=2,tp=2", "--no-progress", "--coordinator-address", f"localhost:{port}",
    "--num-processes", "2", "--process-id", str(process_id),
  ])  # fmt: skip
  assert code == 0, code
  assert jax.process_count() == 2 and jax.local_device_count() == 2 and jax.device_count() == 4

  import native_flax
  import torchax_vae

  latents = np.load(latents_file)
  loaders = {"torchax": torchax_vae.load, "native_flax": native_flax.load}
  results, info = {}, {}
  for path in PATHS:
    for mesh in MESHES:
      runner = loaders[path](workdir / "vae", mesh=mesh)
      video = torchax_vae.decode_latents(runner, latents)  # numpy in: gathered numpy out
      results[f"{path} {mesh}"] = video
      # The same decode kept on device: which batch items live on this process?
      on_device = torchax_vae.decode_latents(runner, jax.numpy.asarray(latents))
      local_batch = sorted({s.index[0].start or 0 for s in on_device.addressable_shards})
      info[f"{path} {mesh}"] = {
        "mesh_processes": [[d.process_index for d in row] for row in np.asarray(runner.mesh.devices).reshape(2, -1)],
        "local_batch_starts": local_batch,
        "global_shape": list(on_device.shape),
        "program_sources": dict(getattr(getattr(runner, "programs", None), "sources", {})),  # for the log
      }
  (workdir / f"info-{process_id}.json").write_text(json.dumps(info))
  if process_id == 0:
    np.savez(workdir / "results.npz", **results)
  jax.distributed.shutdown()


# --- the tests (run under pytest; the workers run this file as a script) ---------------------------


def test_mesh_takes_the_same_devices_from_every_process():
  """Device choice under multi-controller JAX, without processes: fake devices of 2 processes x 4."""
  import types

  import pytest

  from torchax_vae.core.mesh import MeshError, _pick_devices

  devices = [types.SimpleNamespace(id=i, process_index=i // 4) for i in range(8)]
  assert [d.id for d in _pick_devices(devices, 2, "dp=2")] == [0, 4]
  assert [d.id for d in _pick_devices(devices, 4, "dp=2,tp=2")] == [0, 1, 4, 5]
  assert [d.id for d in _pick_devices(devices, 8, "dp=2,tp=4")] == list(range(8))
  with pytest.raises(MeshError, match="multiple of 2"):
    _pick_devices(devices, 3, "tp=3")
  single = [types.SimpleNamespace(id=i, process_index=0) for i in range(8)]
  assert [d.id for d in _pick_devices(single, 2, "dp=2")] == [0, 1]  # one process: unchanged


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def test_two_processes_decode_a_batch_split_over_dp(tiny_dir, tmp_path):
  import shutil

  import pytest

  from torchax_vae import pipeline

  pytest.importorskip("imageio_ffmpeg")
  shutil.copytree(tiny_dir, tmp_path / "vae")
  latents = np.random.default_rng(7).standard_normal(LATENTS_SHAPE, dtype=np.float32)
  np.save(tmp_path / "latents.npy", latents)

  env = dict(os.environ)
  from helpers import xla_flags_with_devices

  env["XLA_FLAGS"] = xla_flags_with_devices(2)  # replaces conftest's 8
  env["JAX_PLATFORMS"] = "cpu"
  env["TORCHAX_VAE_CACHE_DIR"] = str(tmp_path / "cache")  # shared by both, as on a pod's shared disk
  port = _free_port()
  logs = [open(tmp_path / f"worker-{i}.log", "w") for i in range(2)]  # noqa: SIM115
  procs = [
    subprocess.Popen(
      [sys.executable, __file__, str(i), str(port), str(tmp_path)],
      env=env,
      stdout=logs[i],
      stderr=subprocess.STDOUT,
      cwd=Path(__file__).resolve().parents[1],
    )
    for i in range(2)
  ]
  deadline = time.monotonic() + WORKER_TIMEOUT
  try:
    for proc in procs:
      proc.wait(timeout=max(deadline - time.monotonic(), 1))
  except subprocess.TimeoutExpired:
    pass  # reported below, after the workers are killed
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    for log in logs:
      log.close()
  output = "\n".join(f"--- worker {i} ---\n" + (tmp_path / f"worker-{i}.log").read_text()[-4000:] for i in range(2))
  assert [p.returncode for p in procs] == [0, 0], output

  # Single-process reference (conftest's 8 simulated devices; no mesh).
  import torchax_vae

  single = torchax_vae.decode_latents(torchax_vae.load(tiny_dir), latents)
  frames = 5  # T=3 -> one step of 3 latent frames -> 2*3-1 (TINY has one time upsampler)
  assert single.shape == (2, 3, frames, 16, 24)
  results = np.load(tmp_path / "results.npz")
  assert sorted(results.files) == sorted(f"{p} {m}" for p in PATHS for m in MESHES)
  for name in results.files:
    np.testing.assert_allclose(results[name], single, atol=1e-5, rtol=0, err_msg=name)

  for i in range(2):
    info = json.loads((tmp_path / f"info-{i}.json").read_text())
    for name, entry in info.items():
      assert entry["global_shape"] == [2, 3, frames, 16, 24], name
      assert entry["mesh_processes"] == [[0] * (len(entry["mesh_processes"][0])), [1] * len(entry["mesh_processes"][0])]
      assert entry["local_batch_starts"] == [i], (name, entry)  # batch item i lives on process i

  # The CLI run: process 0 wrote both MP4s. The encoder is deterministic, so they decode to what the
  # single-process frames give when written the same way (MP4 loss itself: tests/test_cli.py).
  expected = pipeline.to_uint8_frames(single)
  for item in range(2):
    video = pipeline.read_mp4(tmp_path / f"out-{item}.mp4")
    reference = pipeline.read_mp4(pipeline.write_mp4(expected[item], tmp_path / f"single-{item}.mp4", fps=8))
    assert video.shape == reference.shape == (frames, 16, 24, 3)
    assert np.abs(video.astype(int) - reference.astype(int)).mean() < 0.5


if __name__ == "__main__":
  worker(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
