"""The shared weight loader: hub ids (offline cache), local VAE and pipeline dirs, shards, bad checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from compare.checkpoints import TINY, write_random_checkpoint
from torchax_vae.core.checkpoint import (
  CheckpointError,
  CogVideoXVAEConfig,
  check_weights,
  load_checkpoint,
)


def _expected(tiny_torch):
  return {k: tuple(v.shape) for k, v in tiny_torch.state_dict().items()}


def _assert_same_weights(ckpt, tiny_torch):
  state = tiny_torch.state_dict()
  assert set(ckpt.weights) == set(state)
  for key, value in state.items():
    np.testing.assert_array_equal(ckpt.weights[key], value.numpy(), err_msg=key)


def test_vae_dir(tiny_dir, tiny_torch):
  ckpt = load_checkpoint(tiny_dir)
  assert ckpt.directory == tiny_dir
  assert ckpt.config.block_out_channels == (32, 64) and ckpt.config.latent_channels == 4
  _assert_same_weights(ckpt, tiny_torch)
  check_weights(ckpt.weights, _expected(tiny_torch), "tiny")


def test_config_matches_diffusers_and_is_frozen(tiny_dir, tiny_torch):
  config = load_checkpoint(tiny_dir).config
  for key, value in config.to_dict().items():
    expected = tiny_torch.config[key]
    assert (list(expected) if isinstance(expected, tuple) else expected) == value, key
  with pytest.raises(AttributeError):
    config.latent_channels = 8


def test_real_configs_parse():
  from compare.checkpoints import REAL_CONFIGS

  assert CogVideoXVAEConfig.from_dict(REAL_CONFIGS["1.5"]).invert_scale_latents is True
  assert CogVideoXVAEConfig.from_dict(REAL_CONFIGS["5b"]).scaling_factor == 0.7
  assert CogVideoXVAEConfig().scaling_factor == pytest.approx(1.15258426)


def test_pipeline_dir_and_subfolder(tiny_dir, tiny_torch, tmp_path):
  pipeline = tmp_path / "pipeline"
  shutil.copytree(tiny_dir, pipeline / "vae")
  (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
  _assert_same_weights(load_checkpoint(pipeline), tiny_torch)
  _assert_same_weights(load_checkpoint(pipeline, subfolder="vae"), tiny_torch)
  with pytest.raises(CheckpointError, match="subfolder 'transformer'"):
    load_checkpoint(pipeline, subfolder="transformer")


def test_sharded_safetensors(tiny_torch, tmp_path):
  directory = tmp_path / "sharded"
  tiny_torch.save_pretrained(directory, max_shard_size="200KB")
  assert (directory / "diffusion_pytorch_model.safetensors.index.json").is_file()
  assert len(list(directory.glob("*.safetensors"))) > 2
  _assert_same_weights(load_checkpoint(directory), tiny_torch)


def test_bfloat16_weights_are_read(tiny_torch, tmp_path):
  import copy

  import torch

  directory = tmp_path / "bf16"
  copy.deepcopy(tiny_torch).to(torch.bfloat16).save_pretrained(directory)
  ckpt = load_checkpoint(directory)
  weight = ckpt.weights["decoder.conv_in.conv.weight"]
  assert weight.dtype.name == "bfloat16"
  reference = tiny_torch.state_dict()["decoder.conv_in.conv.weight"].to(torch.bfloat16).float().numpy()
  np.testing.assert_array_equal(weight.astype(np.float32), reference)


def _fake_hub_cache(cache, repo_id, files: dict, commit="0" * 40):
  """The on-disk layout huggingface_hub reads in offline mode: refs/main -> snapshots/<commit>/…"""
  repo = cache / f"models--{repo_id.replace('/', '--')}"
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(commit)
  snapshot = repo / "snapshots" / commit
  for name, source in files.items():
    (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, snapshot / name)


def test_hub_id_resolves_through_the_huggingface_cache(tiny_dir, tiny_torch, tmp_path, monkeypatch):
  cache = tmp_path / "hub"
  _fake_hub_cache(
    cache,
    "THUDM/CogVideoX-tiny",
    {
      "model_index.json": tiny_dir / "config.json",
      "vae/config.json": tiny_dir / "config.json",
      "vae/diffusion_pytorch_model.safetensors": tiny_dir / "diffusion_pytorch_model.safetensors",
    },
  )
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  ckpt = load_checkpoint("THUDM/CogVideoX-tiny", subfolder="vae", hub_cache_dir=cache)
  _assert_same_weights(ckpt, tiny_torch)
  assert ckpt.directory.parts[-3:] == ("snapshots", "0" * 40, "vae")
  # Without subfolder, a pipeline repo's vae/ is found as for a local pipeline dir.
  _assert_same_weights(load_checkpoint("THUDM/CogVideoX-tiny", hub_cache_dir=cache), tiny_torch)


def test_hub_id_not_in_cache_offline_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(CheckpointError, match="could not fetch 'THUDM/CogVideoX-2b'"):
    load_checkpoint("THUDM/CogVideoX-2b", subfolder="vae", hub_cache_dir=tmp_path / "empty")


def test_nonexistent_local_path_is_a_clear_error(tmp_path):
  with pytest.raises(CheckpointError, match="no such local directory"):
    load_checkpoint(str(tmp_path / "nope" / "deeper"))


@pytest.fixture()
def broken_dir(tiny_dir, tmp_path):
  directory = tmp_path / "broken"
  shutil.copytree(tiny_dir, directory)
  return directory


def test_missing_config(broken_dir):
  (broken_dir / "config.json").unlink()
  with pytest.raises(CheckpointError, match="no config.json"):
    load_checkpoint(broken_dir)


def test_config_not_json(broken_dir):
  (broken_dir / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="not valid JSON"):
    load_checkpoint(broken_dir)


def test_config_of_another_model(broken_dir):
  (broken_dir / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
  # No adapter (the torch-free loader serves the adapters): the error lists them and names the generic path.
  match = (
    r"_class_name='AutoencoderKL' has no adapter \(adapters: AutoencoderKLCogVideoX, AutoencoderKLWan, "
    r"AutoencoderKLHunyuanVideo, AutoencoderKLHunyuanVideo15, AutoencoderKLLTXVideo, AutoencoderKLLTX2Video\) and no "
    r"native port; torchax_vae.load runs every diffusers autoencoder class through its generic path"
  )
  with pytest.raises(CheckpointError, match=match):
    load_checkpoint(broken_dir)


def test_missing_weights(broken_dir):
  (broken_dir / "diffusion_pytorch_model.safetensors").unlink()
  with pytest.raises(CheckpointError, match="no weights in .*expected diffusion_pytorch_model.safetensors"):
    load_checkpoint(broken_dir)


def test_corrupt_safetensors(broken_dir):
  path = broken_dir / "diffusion_pytorch_model.safetensors"
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(CheckpointError, match="cannot read .*diffusion_pytorch_model.safetensors as safetensors"):
    load_checkpoint(broken_dir)


def test_missing_shard(tiny_torch, tmp_path):
  directory = tmp_path / "sharded"
  tiny_torch.save_pretrained(directory, max_shard_size="200KB")
  victim = sorted(directory.glob("*.safetensors"))[1]
  victim.unlink()
  with pytest.raises(CheckpointError, match=f"shard files that are missing: .*{victim.name}"):
    load_checkpoint(directory)


def _rewrite_weights(directory, edit):
  path = directory / "diffusion_pytorch_model.safetensors"
  weights = dict(load_checkpoint(directory).weights)
  edit(weights)
  save_file(weights, str(path))


def test_missing_unexpected_and_mismatched_keys_are_all_listed(broken_dir, tiny_torch):
  def edit(w):
    del w["decoder.conv_out.conv.weight"]
    del w["encoder.conv_in.conv.bias"]
    w["decoder.extra.weight"] = np.zeros(3, np.float32)
    w["decoder.conv_in.conv.weight"] = w["decoder.conv_in.conv.weight"][:, :2]

  _rewrite_weights(broken_dir, edit)
  ckpt = load_checkpoint(broken_dir)
  with pytest.raises(CheckpointError) as info:
    check_weights(ckpt.weights, _expected(tiny_torch), str(broken_dir))
  message = str(info.value)
  assert "2 missing keys: decoder.conv_out.conv.weight, encoder.conv_in.conv.bias" in message
  assert "1 unexpected keys: decoder.extra.weight" in message
  assert "1 shape mismatches: decoder.conv_in.conv.weight: checkpoint (64, 2, 3, 3, 3), model (64, 4, 3, 3, 3)" in message


def test_many_missing_keys_are_summarised(tiny_torch):
  with pytest.raises(CheckpointError, match=r"missing keys: .*, … \(\d+ more\)"):
    check_weights({}, _expected(tiny_torch), "empty")


def test_checkpoint_mismatching_its_config(tmp_path):
  # Weights of one config with the config.json of another: caught when a path checks shapes.
  import torchax_vae

  small = write_random_checkpoint(tmp_path / "a", TINY)
  other = dict(TINY, latent_channels=8)
  (small / "config.json").write_text(json.dumps(other))
  with pytest.raises(CheckpointError, match="shape mismatches: "):
    torchax_vae.load(small)


# That the loader imports neither torch, torchax nor diffusers is checked in the fresh process of
# tests/test_warm_start.py::test_warm_start_from_executables_imports_no_torch (one interpreter start for all).


# --- Wan checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["2.1", "2.2"])
def test_wan_vae_dir_pipeline_dir_and_shards(tiny_wan_dirs, tiny_wan_torch, variant, tmp_path):
  from torchax_vae.core.checkpoint import WanVAEConfig

  model = tiny_wan_torch[variant]
  ckpt = load_checkpoint(tiny_wan_dirs[variant])
  assert isinstance(ckpt.config, WanVAEConfig) and ckpt.adapter.class_name == "AutoencoderKLWan"
  _assert_same_weights(ckpt, model)
  for key, value in ckpt.config.to_dict().items():  # every field is diffusers' constructor argument
    expected = model.config[key]
    assert (list(expected) if isinstance(expected, tuple) else expected) == value, key
  pipeline = tmp_path / "pipeline"
  shutil.copytree(tiny_wan_dirs[variant], pipeline / "vae")
  (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
  _assert_same_weights(load_checkpoint(pipeline), model)
  sharded = tmp_path / "sharded"
  model.save_pretrained(sharded, max_shard_size="100KB")
  assert len(list(sharded.glob("*.safetensors"))) > 2
  _assert_same_weights(load_checkpoint(sharded), model)


def test_wan_hub_id_resolves_through_the_huggingface_cache(tiny_wan_dirs, tiny_wan_torch, tmp_path, monkeypatch):
  cache = tmp_path / "hub"
  source = tiny_wan_dirs["2.1"]
  _fake_hub_cache(
    cache,
    "Wan-AI/Wan-tiny-Diffusers",
    {
      "model_index.json": source / "config.json",
      "vae/config.json": source / "config.json",
      "vae/diffusion_pytorch_model.safetensors": source / "diffusion_pytorch_model.safetensors",
    },
  )
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  _assert_same_weights(load_checkpoint("Wan-AI/Wan-tiny-Diffusers", subfolder="vae", hub_cache_dir=cache), tiny_wan_torch["2.1"])


def test_wan_weights_of_the_other_version_are_refused(tiny_wan_dirs, tmp_path):
  # Wan 2.1 weights under a Wan 2.2 config.json: every mismatch is named.
  import torchax_vae

  broken = tmp_path / "mixed"
  shutil.copytree(tiny_wan_dirs["2.1"], broken)
  shutil.copy(tiny_wan_dirs["2.2"] / "config.json", broken / "config.json")
  with pytest.raises(CheckpointError, match=r"weights in .*mixed do not fit the config: \d+ missing keys: .*shape mismatches: "):
    torchax_vae.load(broken, cache_dir=False)


def test_released_configs_parse():
  from compare.checkpoints import PRESETS
  from torchax_vae.core import models
  from torchax_vae.core.errors import UnsupportedModelError

  # flux.1 is an AutoencoderKL: no adapter, the generic path runs it (compare.bench --paths generic).
  generic = {name for name, config in PRESETS.items() if config.get("_class_name") not in models.ADAPTERS}
  assert generic == {"flux.1"}
  with pytest.raises(UnsupportedModelError, match="'AutoencoderKL' has no adapter"):
    models.adapter_for(models.config_from_dict(PRESETS["flux.1"]))
  adapters = {name: models.adapter_for(models.config_from_dict(config)) for name, config in PRESETS.items() if name not in generic}
  assert {name: type(a).__name__ for name, a in adapters.items()} == {
    "cogvideox-2b": "CogVideoX", "cogvideox-5b": "CogVideoX", "cogvideox-1.5": "CogVideoX", "wan2.1": "Wan", "wan2.2": "Wan",
    "hunyuanvideo": "HunyuanVideo", "hunyuanvideo-1.5": "HunyuanVideo15", "ltx-video-0.9.0": "LTXVideo",
    "ltx-video-0.9.1": "LTXVideo", "ltx-2": "LTX2Video",
  }  # fmt: skip
  wan21, wan22 = adapters["wan2.1"], adapters["wan2.2"]
  assert (wan21.latent_channels, wan21.spatial_compression, wan21.sample_channels) == (16, 8, 3)
  assert (wan22.latent_channels, wan22.spatial_compression, wan22.sample_channels) == (48, 16, 3)
  assert len(wan22.config.latents_mean) == len(wan22.config.latents_std) == 48
  assert wan21.decoded_num_frames(21) == wan22.decoded_num_frames(21) == 81  # 81 x 480 x 832


def test_config_without_class_name_is_taken_by_its_keys():
  from torchax_vae.core import models

  assert isinstance(models.config_from_dict({"z_dim": 48, "base_dim": 160}), models.WanVAEConfig)
  assert isinstance(models.config_from_dict({"latent_channels": 8}), models.CogVideoXVAEConfig)
  # Keys both classes take (or none): CogVideoX, as before there were other models.
  assert isinstance(models.config_from_dict({"in_channels": 3}), models.CogVideoXVAEConfig)
  assert isinstance(models.config_from_dict({}), models.CogVideoXVAEConfig)
