"""Test set-up: 8 simulated CPU devices (for mesh tests), a throwaway compile cache, shared checkpoints
(CogVideoX and Wan, tiny and real configs)."""

from __future__ import annotations

import os
import sys

# Must happen before jax is imported anywhere: XLA reads the device count once.
if "jax" in sys.modules:
  raise RuntimeError("tests/conftest.py must run before jax is imported (XLA_FLAGS device count)")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"  # no hub is reachable; tests never wait on the network

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from compare.checkpoints import (  # noqa: E402
  COGVIDEOX_2B,
  TINY,
  TINY_WAN_2_1,
  TINY_WAN_2_2,
  WAN_2_1,
  WAN_2_2,
  write_random_checkpoint,
)

TINY_WAN = {"2.1": TINY_WAN_2_1, "2.2": TINY_WAN_2_2}
REAL_WAN = {"2.1": WAN_2_1, "2.2": WAN_2_2}


@pytest.fixture(scope="session", autouse=True)
def _compile_cache_dir(tmp_path_factory):
  os.environ["TORCHAX_VAE_CACHE_DIR"] = str(tmp_path_factory.mktemp("xla-cache"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
  """A diffusers save_pretrained dir of a random-initialised tiny CogVideoX VAE."""
  return write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "vae", TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_torch(tiny_dir):
  from diffusers import AutoencoderKLCogVideoX

  return AutoencoderKLCogVideoX.from_pretrained(tiny_dir).eval()


@pytest.fixture(scope="session")
def real_dir(tmp_path_factory):
  """The real CogVideoX-2b VAE config (215.6M params), random-initialised and saved."""
  return write_random_checkpoint(tmp_path_factory.mktemp("cogvideox-2b") / "vae", COGVIDEOX_2B, seed=0)


@pytest.fixture(scope="session")
def real_torch(real_dir):
  from diffusers import AutoencoderKLCogVideoX

  return AutoencoderKLCogVideoX.from_pretrained(real_dir).eval()


@pytest.fixture(scope="session")
def tiny_wan_dirs(tmp_path_factory):
  """diffusers save_pretrained dirs of random-initialised tiny Wan VAEs: {"2.1": dir, "2.2": dir}."""
  return {v: write_random_checkpoint(tmp_path_factory.mktemp(f"wan{v}") / "vae", c, seed=0) for v, c in TINY_WAN.items()}


@pytest.fixture(scope="session")
def tiny_wan_torch(tiny_wan_dirs):
  """The same tiny Wan VAEs as diffusers PyTorch modules: {"2.1": module, "2.2": module}."""
  from diffusers import AutoencoderKLWan

  return {v: AutoencoderKLWan.from_pretrained(d).eval() for v, d in tiny_wan_dirs.items()}


@pytest.fixture(scope="session")
def real_wan_dirs(tmp_path_factory):
  """The real Wan 2.1 and Wan 2.2 (TI2V-5B) VAE configs, random-initialised and saved (slow tests)."""
  return {v: write_random_checkpoint(tmp_path_factory.mktemp(f"real-wan{v}") / "vae", c, seed=0) for v, c in REAL_WAN.items()}
