"""A warm start of the torchax path from stored executables imports neither torch, torchax nor
diffusers (``torchax_vae.adapter_steps``), decodes and encodes bit for bit as the process that
compiled, and keeps every key honest.

Each process is a fresh interpreter, as a user's restart is: the first fills the store (programs and
the parameter-shape manifest), the second must find everything there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from torchax_vae import adapter_steps
from torchax_vae.core.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]

START = textwrap.dedent(
  """
  import json, sys
  import numpy as np
  import torchax_vae
  model, cache, out, latent, video = sys.argv[1:6]
  runner = torchax_vae.load(model, cache_dir=cache)
  z = np.random.default_rng(0).standard_normal(tuple(json.loads(latent)), dtype=np.float32)
  x = np.random.default_rng(1).uniform(-1, 1, tuple(json.loads(video))).astype(np.float32)
  np.savez(out, decoded=runner.decode(z), encoded=runner.encode(x))
  print(json.dumps({
    "sources": runner.programs.sources,
    "imported": sorted(m for m in ("torch", "torchax", "diffusers") if m in sys.modules),
  }))
  """
)


def start(model: Path, cache: Path, out: Path, latent, video) -> dict:
  args = [str(model), str(cache), str(out), json.dumps(latent), json.dumps(video)]
  done = subprocess.run([sys.executable, "-c", START, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["cogvideox", "wan2.1"])
def test_warm_start_from_executables_imports_no_torch(model, tiny_dir, tiny_wan_dirs, tmp_path):
  directory = tiny_dir if model == "cogvideox" else tiny_wan_dirs["2.1"]
  # Each a first and a steady step: CogVideoX decodes T=5 as 3 + 2 latent frames and encodes 17 frames
  # as 9 + 8; Wan decodes T=3 as 1 + 1 + 1 and encodes 17 frames as 1 + 4 + 4 + 4 + 4.
  latent, video = ([1, 4, 5, 4, 6], [1, 3, 17, 8, 12]) if model == "cogvideox" else ([1, 4, 3, 4, 6], [1, 3, 17, 8, 12])
  cold = start(directory, tmp_path / "cache", tmp_path / "cold.npz", latent, video)
  assert cold["imported"] == ["diffusers", "torch", "torchax"]  # the first start traces
  assert cold["sources"]["compiled"] == 4 and cold["sources"]["deserialized"] == 0
  warm = start(directory, tmp_path / "cache", tmp_path / "warm.npz", latent, video)
  assert warm["imported"] == [], f"a warm start from executables imported {warm['imported']}"
  assert warm["sources"] == {"compiled": 0, "jax_cache": 0, "deserialized": 4}
  expected, got = np.load(tmp_path / "cold.npz"), np.load(tmp_path / "warm.npz")
  for name in ("decoded", "encoded"):  # the same executables: bit for bit
    assert np.array_equal(expected[name], got[name]), name


def test_warm_runner_builds_the_module_when_asked(tiny_dir, tmp_path):
  """``runner.module`` (and any program the store lacks) builds diffusers' module on first use."""
  import diffusers

  import torchax_vae

  torchax_vae.load(tiny_dir, cache_dir=tmp_path)  # stores the manifest
  runner = torchax_vae.load(tiny_dir, cache_dir=tmp_path)
  assert runner.torch_side._built is None  # nothing built yet: the weights were checked by the manifest
  assert type(runner.module) is diffusers.AutoencoderKLCogVideoX
  assert runner.torch_side._built is not None


def test_manifest_is_the_module_shapes_and_refuses_bad_weights(tiny_dir, tmp_path):
  import torchax_vae
  from torchax_vae.core.checkpoint import load_checkpoint

  runner = torchax_vae.load(tiny_dir, cache_dir=tmp_path)
  (manifest,) = (tmp_path / "executables").glob("params-*.json")
  shapes = json.loads(manifest.read_text())["parameter_shapes"]
  assert {k: tuple(v) for k, v in shapes.items()} == runner.torch_side.expected_shapes()
  # Checked from the manifest (no module built), a wrong tensor is still refused, naming it.
  checkpoint = load_checkpoint(tiny_dir)
  name = "decoder.conv_in.conv.weight"
  bad = dict(checkpoint.weights, **{name: np.zeros((1, 2, 3), np.float32)})
  broken = type(checkpoint)(config=checkpoint.config, weights=bad, directory=checkpoint.directory)
  with pytest.raises(CheckpointError, match=name):
    adapter_steps.build(broken, "float32", None, executable_dir=tmp_path / "executables")


def test_a_corrupt_manifest_is_rebuilt(tiny_dir, tmp_path):
  import torchax_vae

  torchax_vae.load(tiny_dir, cache_dir=tmp_path)
  (manifest,) = (tmp_path / "executables").glob("params-*.json")
  manifest.write_text('{"parameter_shapes": ')  # cut short
  with pytest.warns(UserWarning, match="could not be used"):
    runner = torchax_vae.load(tiny_dir, cache_dir=tmp_path)
  assert runner.torch_side._built is not None  # checked against the module instead
  assert json.loads(manifest.read_text())["parameter_shapes"]  # and stored again, whole


def test_every_key_follows_versions_and_sources(monkeypatch, tmp_path):
  base = adapter_steps.fingerprint("cogvideox")
  version = adapter_steps._version
  for package in ("torch", "torchax", "diffusers"):
    with monkeypatch.context() as patch:
      patch.setattr(adapter_steps, "_version", lambda name, p=package: "9.9" if name == p else version(name))
      assert adapter_steps.fingerprint("cogvideox")[package] == "9.9"
  # An edited diffusers model file (or any bridge file) changes the source digest.
  edited = tmp_path / "autoencoder_kl_cogvideox.py"
  edited.write_bytes(adapter_steps.diffusers_model_file("cogvideox").read_bytes() + b"\n# edited\n")
  monkeypatch.setattr(adapter_steps, "diffusers_model_file", lambda name: edited)
  assert adapter_steps.fingerprint("cogvideox")["source"] != base["source"]


def test_the_hashed_model_files_are_the_ones_the_builders_run():
  from torchax_vae.models import cogvideox, wan

  assert adapter_steps.diffusers_model_file("cogvideox") == Path(cogvideox.cogvideox.__file__)
  assert adapter_steps.diffusers_model_file("wan") == Path(wan.wan.__file__)
