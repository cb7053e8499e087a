"""Test set-up: 8 simulated CPU devices (for mesh tests), a throwaway compile cache, shared checkpoints."""

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

from compare.checkpoints import COGVIDEOX_2B, TINY, write_random_checkpoint  # noqa: E402


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
