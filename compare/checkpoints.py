"""Random-initialised checkpoints written with diffusers' own ``save_pretrained``.

No model hub is reachable on the machines this project is developed and tested on, so the
benchmark's default model and the tests use checkpoints written here: diffusers' default init of
``AutoencoderKLCogVideoX`` (realistic weight scales), saved exactly as a hub VAE folder is laid out.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# The released configs (the `vae/config.json` of each hub repo), diffusers defaults elided.
COGVIDEOX_2B = {"scaling_factor": 1.15258426}
COGVIDEOX_5B = {"scaling_factor": 0.7}
COGVIDEOX_1_5 = {"scaling_factor": 0.7, "invert_scale_latents": True}
REAL_CONFIGS = {"2b": COGVIDEOX_2B, "5b": COGVIDEOX_5B, "1.5": COGVIDEOX_1_5}

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


def write_random_checkpoint(directory: str | os.PathLike, config: dict | None = None, *, seed: int = 0, **save_kwargs) -> Path:
  """Builds ``AutoencoderKLCogVideoX(**config)`` with ``torch.manual_seed(seed)`` and saves it."""
  import torch
  from diffusers import AutoencoderKLCogVideoX

  torch.manual_seed(seed)
  model = AutoencoderKLCogVideoX(**(config or {})).eval()
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
