"""Random-initialised checkpoints written with diffusers' own ``save_pretrained``, and the released configs.

No model hub is reachable on the machines this project is developed and tested on, so the
benchmark's models and the tests use checkpoints written here: diffusers' default init of the VAE
class (realistic weight scales), saved exactly as a hub VAE folder is laid out.

:data:`PRESETS` is the one place the released VAE configs are written down (``--model NAME`` of
``compare.bench`` and ``compare.collectives``); each is the ``vae/config.json`` of the hub repo, with
the keys equal to diffusers' defaults left out:

* ``cogvideox-2b`` (THUDM/CogVideoX-2b), ``cogvideox-5b`` (THUDM/CogVideoX-5b, also the I2V model),
  ``cogvideox-1.5`` (THUDM/CogVideoX1.5-5B): ``AutoencoderKLCogVideoX``, 215.6M parameters, differing
  only in ``scaling_factor`` / ``invert_scale_latents``.
* ``wan2.1`` (Wan-AI/Wan2.1-T2V-1.3B-Diffusers, Wan2.1-T2V-14B, the I2V models, and
  Wan2.2-T2V/I2V-A14B, which reuse this VAE): ``AutoencoderKLWan`` with diffusers' defaults —
  ``base_dim`` 96, ``z_dim`` 16, ``dim_mult`` [1, 2, 4, 4], 2 res blocks, ``temperal_downsample``
  [False, True, True], the 16 ``latents_mean``/``latents_std`` values; 8x spatial, 4x temporal.
* ``wan2.2`` (Wan-AI/Wan2.2-TI2V-5B-Diffusers): ``AutoencoderKLWan`` with ``base_dim`` 160,
  ``decoder_base_dim`` 256, ``z_dim`` 48, residual up/down blocks, ``patch_size`` 2 (12 channels in
  and out), 16x spatial; the 48 latent statistics as in diffusers' ``scripts/convert_wan_to_diffusers.py``
  (``vae22_diffusers_config``) and the model card's config.json.
* ``hunyuanvideo`` (hunyuanvideo-community/HunyuanVideo, the diffusers-format HunyuanVideo and
  HunyuanVideo-I2V): ``AutoencoderKLHunyuanVideo`` with diffusers' defaults — ``block_out_channels``
  [128, 256, 512, 512], 2 layers per block, ``latent_channels`` 16, ``scaling_factor`` 0.476986, 8x
  spatial, 4x temporal, mid-block attention; diffusers' ``scripts/convert_hunyuan_video_to_diffusers.py``
  builds the VAE with no arguments.
* ``hunyuanvideo-1.5`` (hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v and the other
  HunyuanVideo 1.5 repos, which share one VAE): ``AutoencoderKLHunyuanVideo15`` with diffusers'
  defaults — ``block_out_channels`` [128, 256, 512, 1024, 1024], 2 layers per block,
  ``latent_channels`` 32, 16x spatial, 4x temporal, ``scaling_factor`` 1.03682 (the same values as
  FastVideo's ``Hunyuan15VAEArchConfig``).
* ``ltx-video-0.9.0`` (Lightricks/LTX-Video, ``ltx-video-2b-v0.9``): ``AutoencoderKLLTXVideo`` with
  diffusers' defaults — 128 latent channels, 32x spatial and 8x temporal compression (patch 4), no
  timestep conditioning; ``ltx-video-0.9.1`` (``ltx-video-2b-v0.9.1``): the decoder of three residual
  up blocks (256, 512, 1024 channels; 5, 6, 7, 8 layers) with timestep conditioning and noise
  injection. Both as ``get_vae_config`` in diffusers' ``scripts/convert_ltx_to_diffusers.py``.
* ``ltx-2`` (Lightricks/LTX-2): ``AutoencoderKLLTX2Video`` as ``get_ltx2_video_vae_config("2.0")`` in
  diffusers' ``scripts/convert_ltx2_to_diffusers.py`` builds it — diffusers' defaults (128 latent
  channels, encoder 256–2048, decoder 256–1024 channels, 32x spatial, 8x temporal) except
  ``decoder_causal`` False, with the compression ratios given explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

COGVIDEOX = "AutoencoderKLCogVideoX"
WAN = "AutoencoderKLWan"
HUNYUAN_VIDEO = "AutoencoderKLHunyuanVideo"
HUNYUAN_VIDEO15 = "AutoencoderKLHunyuanVideo15"
LTX_VIDEO = "AutoencoderKLLTXVideo"

# The released configs (the `vae/config.json` of each hub repo), diffusers defaults elided.
COGVIDEOX_2B = {"scaling_factor": 1.15258426}
COGVIDEOX_5B = {"scaling_factor": 0.7}
COGVIDEOX_1_5 = {"scaling_factor": 0.7, "invert_scale_latents": True}
REAL_CONFIGS = {"2b": COGVIDEOX_2B, "5b": COGVIDEOX_5B, "1.5": COGVIDEOX_1_5}

WAN_2_1 = {"_class_name": WAN}  # diffusers' AutoencoderKLWan defaults are the Wan 2.1 VAE
WAN_2_2 = {
  "_class_name": WAN,
  "base_dim": 160,
  "decoder_base_dim": 256,
  "z_dim": 48,
  "is_residual": True,
  "in_channels": 12,
  "out_channels": 12,
  "patch_size": 2,
  "scale_factor_spatial": 16,
  "scale_factor_temporal": 4,
  "latents_mean": [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
  ],
  "latents_std": [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
  ],
}  # fmt: skip

# --model NAME of compare.bench / compare.collectives: random weights of a released config.
PRESETS = {
  "cogvideox-2b": {"_class_name": COGVIDEOX, **COGVIDEOX_2B},
  "cogvideox-5b": {"_class_name": COGVIDEOX, **COGVIDEOX_5B},
  "cogvideox-1.5": {"_class_name": COGVIDEOX, **COGVIDEOX_1_5},
  "wan2.1": WAN_2_1,
  "wan2.2": WAN_2_2,
  "hunyuanvideo": {"_class_name": HUNYUAN_VIDEO},  # diffusers' defaults are HunyuanVideo's VAE
  "hunyuanvideo-1.5": {"_class_name": HUNYUAN_VIDEO15},  # diffusers' defaults are HunyuanVideo 1.5's VAE
  "ltx-video-0.9.0": {"_class_name": LTX_VIDEO},  # diffusers' defaults are LTX-Video 0.9.0's VAE
  "ltx-video-0.9.1": {
    "_class_name": LTX_VIDEO,
    "decoder_block_out_channels": [256, 512, 1024],
    "decoder_layers_per_block": [5, 6, 7, 8],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "decoder_inject_noise": [True, True, True, False],
    "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2],
    "timestep_conditioning": True,
  },
  # diffusers scripts/convert_ltx2_to_diffusers.py get_ltx2_video_vae_config("2.0"): diffusers' defaults
  # but a non-causal decoder and the compression ratios written out.
  "ltx-2": {
    "_class_name": "AutoencoderKLLTX2Video",
    "decoder_causal": False,
    "spatial_compression_ratio": 32,
    "temporal_compression_ratio": 8,
  },
}
# black-forest-labs/FLUX.1-dev vae/config.json (an AutoencoderKL: the generic path runs it).
PRESETS["flux.1"] = {
  "_class_name": "AutoencoderKL",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D"] * 4,
  "up_block_types": ["UpDecoderBlock2D"] * 4,
  "latent_channels": 16,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "sample_size": 1024,
  "scaling_factor": 0.3611,
  "shift_factor": 0.1159,
  "use_quant_conv": False,
  "use_post_quant_conv": False,
}
DEFAULT_PRESET = "cogvideox-2b"

# Small enough that a test builds, saves and runs it in about a second; every block kind is used.
TINY = {
  "block_out_channels": [32, 64],
  "down_block_types": ["CogVideoXDownBlock3D"] * 2,
  "up_block_types": ["CogVideoXUpBlock3D"] * 2,
  "latent_channels": 4,
  "layers_per_block": 1,
  "norm_num_groups": 8,
  "sample_height": 64,
  "sample_width": 96,
}
# Wan 2.1 and 2.2 structure (every block kind: upsample2d/3d, downsample2d/3d, attention, shortcuts;
# 2.2's residual up/down blocks with their AvgDown3D/DupUp3D shortcuts and the patchify), tiny widths.
TINY_WAN_2_1 = {
  "_class_name": WAN,
  "base_dim": 8,
  "z_dim": 4,
  "dim_mult": [1, 2, 2, 2],
  "num_res_blocks": 1,
  "temperal_downsample": [False, True, True],
  "latents_mean": [-0.5, 0.25, 0.1, 1.0],
  "latents_std": [2.0, 0.5, 1.5, 1.25],
}
TINY_WAN_2_2 = {
  **TINY_WAN_2_1,
  "decoder_base_dim": 16,
  "is_residual": True,
  "in_channels": 12,
  "out_channels": 12,
  "patch_size": 2,
  "scale_factor_spatial": 16,
}

# HunyuanVideo structure (4 blocks: 3 spatial and 2 temporal scalers, mid-block attention), tiny
# widths: diffusers' tests/models/autoencoders/test_models_autoencoder_hunyuan_video.py (get_init_dict).
TINY_HUNYUAN_VIDEO = {
  "_class_name": HUNYUAN_VIDEO,
  "latent_channels": 4,
  "block_out_channels": [8, 8, 8, 8],
  "layers_per_block": 1,
  "norm_num_groups": 4,
}

# HunyuanVideo 1.5's structure (4x time in two up/down blocks, matched channels, mid-block causal
# attention) at 4x space, tiny widths; diffusers' pipeline test (tests/pipelines/hunyuan_video1_5)
# builds (16, 16) with 2x time and unmatched channels, which compare/conformance_cases.py runs.
TINY_HUNYUAN_VIDEO15 = {
  "_class_name": HUNYUAN_VIDEO15,
  "latent_channels": 4,
  "block_out_channels": [8, 16, 32],
  "layers_per_block": 1,
  "spatial_compression_ratio": 4,
  "temporal_compression_ratio": 4,
}

# LTX-Video 0.9.0 and 0.9.1 structure, tiny widths: diffusers' tests/models/autoencoders/
# test_models_autoencoder_ltx_video.py (the 0.9.0 and 0.9.1 configs); noise injection off, so that a
# decode is deterministic and comparable (diffusers draws it with the global torch RNG).
TINY_LTX_VIDEO_090 = {
  "_class_name": LTX_VIDEO,
  "latent_channels": 8,
  "block_out_channels": [8, 8, 8, 8],
  "decoder_block_out_channels": [8, 8, 8, 8],
  "layers_per_block": [1, 1, 1, 1, 1],
  "decoder_layers_per_block": [1, 1, 1, 1, 1],
  "spatio_temporal_scaling": [True, True, False, False],
  "decoder_spatio_temporal_scaling": [True, True, False, False],
  "patch_size": 1,
}
TINY_LTX_VIDEO_091 = {
  "_class_name": LTX_VIDEO,
  "latent_channels": 8,
  "block_out_channels": [8, 8, 8, 8],
  "decoder_block_out_channels": [16, 32, 64],
  "layers_per_block": [1, 1, 1, 1],
  "decoder_layers_per_block": [1, 1, 1, 1],
  "spatio_temporal_scaling": [True, True, True, False],
  "decoder_spatio_temporal_scaling": [True, True, True],
  "decoder_inject_noise": [False, False, False, False],
  "upsample_residual": [True, True, True],
  "upsample_factor": [2, 2, 2],
  "timestep_conditioning": True,
  "patch_size": 1,
}

# LTX-2 structure (spatial / temporal / spatio-temporal down blocks, causal decoder), tiny widths:
# diffusers' tests/models/autoencoders/test_models_autoencoder_ltx2_video.py (get_init_dict), decoder
# widths (16, 32, 64) -> (8, 16, 32), the compression ratios given, timestep conditioning on.
TINY_LTX2_VIDEO = {
  "_class_name": "AutoencoderKLLTX2Video",
  "latent_channels": 8,
  "block_out_channels": [8, 8, 8, 8],
  "decoder_block_out_channels": [8, 16, 32],
  "layers_per_block": [1, 1, 1, 1, 1],
  "decoder_layers_per_block": [1, 1, 1, 1],
  "spatio_temporal_scaling": [True, True, True, True],
  "decoder_spatio_temporal_scaling": [True, True, True],
  "decoder_inject_noise": [False, False, False, False],
  "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
  "upsample_residual": [True, True, True],
  "upsample_factor": [2, 2, 2],
  "timestep_conditioning": True,
  "patch_size": 1,
  "spatial_compression_ratio": 8,
  "temporal_compression_ratio": 8,
}


def _model_class(config: dict):
  import diffusers

  return getattr(diffusers, config.get("_class_name", COGVIDEOX))


def write_random_checkpoint(directory: str | os.PathLike, config: dict | None = None, *, seed: int = 0, **save_kwargs) -> Path:
  """Builds the config's class (``_class_name``, default ``AutoencoderKLCogVideoX``) with
  ``torch.manual_seed(seed)`` and saves it.

  Wan's and HunyuanVideo 1.5's RMS-norm scales (``gamma``) are all ones at init, which would make
  every norm an identity in its scale; they are drawn around one instead, so a checkpoint tests that
  they are read.
  """
  import torch

  config = dict(config or {})
  cls = _model_class(config)
  config.pop("_class_name", None)
  torch.manual_seed(seed)
  model = cls(**config).eval()
  if cls.__name__ in (WAN, HUNYUAN_VIDEO15):
    with torch.no_grad():
      for name, parameter in model.named_parameters():
        if name.endswith("gamma"):
          parameter.add_(0.25 * torch.randn_like(parameter))
  if cls.__name__ in (LTX_VIDEO, "AutoencoderKLLTX2Video"):
    # Zero-initialised timestep tables and identity latent statistics would hide a wrong temb or
    # scaling; drawn instead, so a checkpoint tests that they are read and used.
    with torch.no_grad():
      for name, parameter in model.named_parameters():
        if "scale_shift_table" in name or "timestep_scale_multiplier" in name:
          parameter.add_(0.1 * torch.randn_like(parameter))
      model.latents_mean.copy_(0.3 * torch.randn_like(model.latents_mean))
      model.latents_std.copy_(0.5 + torch.rand_like(model.latents_std))
  model.save_pretrained(directory, **save_kwargs)
  return Path(directory)


def cached_random_checkpoint(config: dict | None = None, *, seed: int = 0, root: str | os.PathLike | None = None) -> Path:
  """A random checkpoint under a cache dir, written once per (config, seed, diffusers version)."""
  import diffusers

  key = hashlib.sha256(json.dumps([config or {}, seed, diffusers.__version__], sort_keys=True).encode()).hexdigest()[:16]
  base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torchax_vae" / "checkpoints"
  directory = base / f"random-{key}"
  if not (directory / "config.json").is_file():
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    write_random_checkpoint(tmp, config, seed=seed)
    os.replace(tmp, directory)  # only a complete checkpoint ever appears under its final name
  return directory


def preset_checkpoint(name: str, *, seed: int = 0) -> Path:
  """The cached random checkpoint of a :data:`PRESETS` config (``KeyError`` for another name)."""
  config = PRESETS[name]
  # The CogVideoX-2b preset is the benchmark's historical default: keep its cache key (no _class_name).
  return cached_random_checkpoint(COGVIDEOX_2B if name == DEFAULT_PRESET else config, seed=seed)
