"""A warm start of the torchax path from stored executables imports neither torch, torchax nor
diffusers (``torchax_vae.runtime``), decodes and encodes bit for bit as the process that
compiled, and keeps every key honest.

Each process is a fresh interpreter, as a user's restart is: the first fills the store (programs and
the parameter-shape manifest), the second must find everything there. The models (CogVideoX, Wan,
and a class without an adapter) share those two processes: each start costs the imports of torch,
diffusers and jax.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from torchax_vae.runtime import adapters
from torchax_vae.runtime import fingerprint as fingerprint_lib
from torchax_vae.core.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]

START = textwrap.dedent(
  """
  import json, sys
  import numpy as np
  import torchax_vae, torchax_vae.cli
  from torchax_vae.core.checkpoint import load_checkpoint
  cache, models = sys.argv[1], json.loads(sys.argv[2])
  torchax_vae.decode_latents
  load_checkpoint(models[0]["model"])  # the weight loader alone
  reports = [{"imported": sorted(m for m in ("torch", "torchax", "diffusers") if m in sys.modules)}]
  for model in models:
    runner = torchax_vae.load(model["model"], cache_dir=cache)
    z = np.random.default_rng(0).standard_normal(tuple(model["latent"]), dtype=np.float32)
    x = np.random.default_rng(1).uniform(-1, 1, tuple(model["video"])).astype(np.float32)
    np.savez(model["out"], decoded=runner.decode(z), encoded=runner.encode(x))
    reports.append({
      "sources": runner.programs.sources,
      "imported": sorted(m for m in ("torch", "torchax", "diffusers") if m in sys.modules),
    })
  print(json.dumps(reports))
  """
)


def start(cache: Path, models: list[dict]) -> tuple[list[str], list[dict]]:
  """One fresh interpreter: imports ``torchax_vae`` and its CLI and reads the first model's weights,
  then loads each of ``models`` (model, latent, video, out) in turn, decoding and encoding. Returns
  the heavy modules imported before any load, and each model's sources and modules imported by then."""
  done = subprocess.run([sys.executable, "-c", START, str(cache), json.dumps(models)], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)  # fmt: skip
  assert done.returncode == 0, done.stderr[-3000:]
  first, *reports = json.loads(done.stdout.strip().splitlines()[-1])
  return first["imported"], reports


# --- every warm start, in two fresh processes -----------------------------------------------------

KL = dict(
  in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
  block_out_channels=[32, 64], latent_channels=4, norm_num_groups=32, sample_size=32, layers_per_block=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def kl_dir(tmp_path_factory):
  torch = pytest.importorskip("torch")
  import diffusers

  directory = tmp_path_factory.mktemp("kl")
  torch.manual_seed(0)
  diffusers.AutoencoderKL(**KL).save_pretrained(directory)
  return directory


def test_warm_start_from_executables_imports_no_torch(tiny_dir, tiny_wan_dirs, kl_dir, tmp_path):
  """CogVideoX, Wan 2.1 and AutoencoderKL (no adapter: the generic path), one after another in one
  process that fills the store, then in a second that must decode and encode from the store alone.
  Importing the package and its command line and reading a checkpoint import none of the three either."""
  # CogVideoX and Wan: each a first and a steady step. CogVideoX decodes T=5 as 3 + 2 latent frames and
  # encodes 17 frames as 9 + 8; Wan decodes T=3 as 1 + 1 + 1 and encodes 17 frames as 1 + 4 + 4 + 4 + 4.
  models = {
    "cogvideox": (tiny_dir, [1, 4, 5, 4, 6], [1, 3, 17, 8, 12], 4),
    "wan2.1": (tiny_wan_dirs["2.1"], [1, 4, 3, 4, 6], [1, 3, 17, 8, 12], 4),
    "generic": (kl_dir, [1, 4, 6, 4], [1, 3, 12, 8], 2),
  }
  runs, items = {}, models.items()
  for run in ("cold", "warm"):
    spec = [dict(model=str(d), latent=z, video=x, out=str(tmp_path / f"{run}-{name}.npz")) for name, (d, z, x, _) in items]
    imported, reports = start(tmp_path / "cache", spec)
    assert imported == [], f"the {run} start imported {imported} before loading a model"
    runs[run] = dict(zip(models, reports))
  for name, (*_, programs) in models.items():
    cold, warm = runs["cold"][name], runs["warm"][name]
    assert cold["imported"] == ["diffusers", "torch", "torchax"], name  # the first start traces
    assert cold["sources"] == {"compiled": programs, "jax_cache": 0, "deserialized": 0}, name
    assert warm["imported"] == [], f"a warm start of {name} from executables imported {warm['imported']}"
    assert warm["sources"] == {"compiled": 0, "jax_cache": 0, "deserialized": programs}, name
    expected, got = np.load(tmp_path / f"cold-{name}.npz"), np.load(tmp_path / f"warm-{name}.npz")
    for output in ("decoded", "encoded"):  # the same executables: bit for bit
      assert np.array_equal(expected[output], got[output]), (name, output)


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
    adapters.build(broken, "float32", None, executable_dir=tmp_path / "executables")


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
  base = fingerprint_lib.adapter_fingerprint("cogvideox")
  version = fingerprint_lib._version
  for package in ("torch", "torchax", "diffusers"):
    with monkeypatch.context() as patch:
      patch.setattr(fingerprint_lib, "_version", lambda name, p=package: "9.9" if name == p else version(name))
      assert fingerprint_lib.adapter_fingerprint("cogvideox")[package] == "9.9"
  # An edited diffusers model file (or any bridge file) changes the source digest.
  edited = tmp_path / "autoencoder_kl_cogvideox.py"
  edited.write_bytes(fingerprint_lib.diffusers_model_file("cogvideox").read_bytes() + b"\n# edited\n")
  monkeypatch.setattr(fingerprint_lib, "diffusers_model_file", lambda name: edited)
  assert fingerprint_lib.adapter_fingerprint("cogvideox")["source"] != base["source"]


def test_the_hashed_model_files_are_the_ones_the_builders_run():
  from torchax_vae.tracing.models import cogvideox, wan

  assert fingerprint_lib.diffusers_model_file("cogvideox") == Path(cogvideox.cogvideox.__file__)
  assert fingerprint_lib.diffusers_model_file("wan") == Path(wan.wan.__file__)


# --- the generic path (classes without an adapter) ------------------------------------------------


def test_generic_warm_runner_builds_the_module_for_a_changed_state(kl_dir, tmp_path):
  """Unbuilt, a runner's programs are keyed by the state the manifest recorded; tiling (or any
  attribute set on ``runner.module``) builds the module and keys a program of its own."""
  import diffusers
  import torch

  import torchax_vae

  z = np.random.default_rng(2).standard_normal((1, 4, 24, 20), dtype=np.float32)
  cold = torchax_vae.load(kl_dir, cache_dir=tmp_path)
  plain = cold.decode(z)
  runner = torchax_vae.load(kl_dir, cache_dir=tmp_path)
  assert not runner._side.built and runner.config.latent_channels == 4 and runner.config["sample_size"] == 32
  assert np.array_equal(runner.decode(z), plain) and runner.programs.sources["deserialized"] == 1
  assert not runner._side.built
  runner.enable_tiling()  # diffusers' own: tiles of sample_size (32 px = 16 latent px), 2 x 2 here
  assert runner._side.built and type(runner.module) is diffusers.AutoencoderKL
  tiled = runner.decode(z)
  assert runner.trace_counts["decode"] == 1
  torch.manual_seed(0)
  module = diffusers.AutoencoderKL.from_pretrained(kl_dir).eval()
  module.enable_tiling()
  with torch.no_grad():
    expected = module.decode(torch.from_numpy(z)).sample.numpy()
  assert float(np.abs(tiled - expected).max()) <= 1e-4


def test_generic_manifest_refuses_bad_weights_and_is_rebuilt_when_corrupt(kl_dir, tmp_path):
  import shutil

  import torchax_vae

  torchax_vae.load(kl_dir, cache_dir=tmp_path)
  (manifest,) = (tmp_path / "executables").glob("generic-*.json")
  stored = json.loads(manifest.read_text())
  assert stored["class_name"] == "AutoencoderKL" and stored["state_shapes"]["decoder.conv_in.weight"] == [64, 4, 3, 3]
  # Checked against the manifest (no module built), a mis-shaped tensor is still refused, by name.
  from safetensors.numpy import load_file, save_file

  broken = tmp_path / "broken"
  shutil.copytree(kl_dir, broken)
  weights = load_file(broken / "diffusion_pytorch_model.safetensors")
  weights["decoder.conv_in.weight"] = np.zeros((64, 4, 1, 1), np.float32)
  save_file(weights, broken / "diffusion_pytorch_model.safetensors")
  with pytest.raises(CheckpointError, match="decoder.conv_in.weight"):
    torchax_vae.load(broken, cache_dir=tmp_path)
  manifest.write_text('{"state_shapes": ')  # cut short
  with pytest.warns(UserWarning, match="could not be used"):
    runner = torchax_vae.load(kl_dir, cache_dir=tmp_path)
  assert runner._side.built  # checked against the module instead, and stored again, whole
  assert json.loads(manifest.read_text())["state_shapes"] == stored["state_shapes"]


def test_generic_manifest_keeps_the_buffers_init_makes():
  """Non-persistent buffers exist only in ``__init__``; the manifest carries them exactly, so a warm
  runner places the same values (every conformance class that has such buffers)."""
  torch = pytest.importorskip("torch")
  from compare.conformance_cases import CASES

  from torchax_vae.runtime import generic
  from torchax_vae.tracing.generic_module import autoencoder_classes, build_module, describe

  classes = autoencoder_classes()
  checked = []
  for name in ("ConsistencyDecoderVAE", "AutoencoderKLCosmos", "AutoencoderVidTok", "AutoencoderSAME", "AutoencoderRAE"):
    module = build_module(classes[name], CASES[name].config)
    manifest = json.loads(json.dumps(describe(module)))  # as stored
    placed = generic._place_buffers((), manifest["buffers"], {}, "float32", None)
    state = module.state_dict()
    made = {k: b for k, b in module.named_buffers() if k not in state}
    assert made and set(placed) == set(made), name
    for key, buffer in made.items():
      expected = buffer.detach().float().numpy() if buffer.is_floating_point() else buffer.numpy()
      assert np.array_equal(np.asarray(placed[key]), expected.astype(np.asarray(placed[key]).dtype)), (name, key)
    checked.append(name)
  assert len(checked) == 5 and torch is not None


def test_generic_keys_follow_the_class_file(monkeypatch, tmp_path):
  """The generic programs' key hashes the diffusers file that defines the class, found by reading
  diffusers' sources: for every class diffusers exports, the file Python imports it from."""
  import inspect

  from torchax_vae.tracing.generic_module import autoencoder_classes

  for name, cls in autoencoder_classes().items():
    assert fingerprint_lib.diffusers_class_file(name) == Path(inspect.getfile(cls)), name
  assert fingerprint_lib.diffusers_class_file("NotAnAutoencoder") is None
  model_file = fingerprint_lib.diffusers_class_file("AutoencoderKL")
  edited = tmp_path / model_file.name
  edited.write_bytes(model_file.read_bytes() + b"\n# edited\n")
  generic_fingerprint = fingerprint_lib.generic_fingerprint
  assert generic_fingerprint(edited)["source"] != generic_fingerprint(model_file)["source"]
  version = fingerprint_lib._version
  monkeypatch.setattr(fingerprint_lib, "_version", lambda p: "9.9" if p == "diffusers" else version(p))
  assert generic_fingerprint(model_file)["diffusers"] == "9.9"
