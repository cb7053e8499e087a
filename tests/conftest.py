"""Test set-up: 8 simulated CPU devices (for mesh tests), one throwaway compile cache and executable
store for the whole run, checkpoints written once per run (CogVideoX and Wan, tiny and real configs).

Under ``pytest -n 2`` both workers share the run's compile cache, executable store and checkpoints
(made once, under a file lock): a program or checkpoint one worker made, the other finds. Each run
(``pytest-of-<user>/pytest-<N>``) starts empty, as a fresh clone does."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path

# Must happen before jax is imported anywhere: XLA reads the device count once.
if "jax" in sys.modules:
  raise RuntimeError("tests/conftest.py must run before jax is imported (XLA_FLAGS device count)")
# XLA:CPU at LLVM's lowest optimisation level: the tests' many small programs compile 2-3x faster
# (tiny Wan's two step programs, XLA compile: 12.6 -> 4.1 s) and still run in milliseconds. Code
# generation only: the same HLO, the same convolution and matmul kernels, results within the tests'
# tolerances. The benchmark (compare.bench) runs XLA's defaults; its subprocesses here inherit these flags.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(
  [os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS, "--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"  # no hub is reachable; tests never wait on the network

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


def run_dir(tmp_path_factory) -> Path:
  """A directory every worker of this test run shares: the run's own (``pytest-<N>``) under xdist,
  else the session's base temp dir. Never one shared with an earlier run."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _run_lock(name: str, tmp_path_factory):
  with open(run_dir(tmp_path_factory) / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    yield


def shared_checkpoint(tmp_path_factory, name: str, config: dict) -> Path:
  """A random-initialised checkpoint of ``config`` (seed 0), written once per run for every worker."""
  root = run_dir(tmp_path_factory) / "checkpoints" / name
  with _run_lock(f"checkpoint-{name}", tmp_path_factory):
    if not (root / "written").exists():
      write_random_checkpoint(root / "vae", config, seed=0)
      (root / "written").touch()  # last: a worker killed mid-write leaves no half checkpoint behind it
  return root / "vae"


def shared_array(tmp_path_factory, name: str, compute):
  """``compute()`` (an array: a diffusers reference output) once per run for every worker, kept as
  ``.npy`` in the run's directory: the same reference wanted by several tests or test files (both
  paths against one PyTorch decode of a real config) is computed once."""
  import numpy as np

  path = run_dir(tmp_path_factory) / "references" / f"{name}.npy"
  with _run_lock(f"reference-{name}", tmp_path_factory):
    if not path.exists():
      path.parent.mkdir(parents=True, exist_ok=True)
      partial = path.with_suffix(f".{os.getpid()}.partial.npy")
      np.save(partial, np.asarray(compute()))
      partial.rename(path)  # last: a killed worker leaves no half-written reference behind it
  return np.load(path)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """``reference(name, compute)``: :func:`shared_array` for this run. ``name`` must say everything the
  result depends on (model, input shape and seed, call)."""
  return lambda name, compute: shared_array(tmp_path_factory, name, compute)


@pytest.fixture(scope="session", autouse=True)
def _compile_cache_dir(tmp_path_factory):
  os.environ["TORCHAX_VAE_CACHE_DIR"] = str(run_dir(tmp_path_factory) / "xla-cache")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
  """A diffusers save_pretrained dir of a random-initialised tiny CogVideoX VAE."""
  return shared_checkpoint(tmp_path_factory, "tiny", TINY)


@pytest.fixture(scope="session")
def tiny_torch(tiny_dir):
  from diffusers import AutoencoderKLCogVideoX

  return AutoencoderKLCogVideoX.from_pretrained(tiny_dir).eval()


@pytest.fixture(scope="session")
def real_dir(tmp_path_factory):
  """The real CogVideoX-2b VAE config (215.6M params), random-initialised and saved."""
  return shared_checkpoint(tmp_path_factory, "cogvideox-2b", COGVIDEOX_2B)


@pytest.fixture(scope="session")
def real_torch(real_dir):
  from diffusers import AutoencoderKLCogVideoX

  return AutoencoderKLCogVideoX.from_pretrained(real_dir).eval()


@pytest.fixture(scope="session")
def tiny_wan_dirs(tmp_path_factory):
  """diffusers save_pretrained dirs of random-initialised tiny Wan VAEs: {"2.1": dir, "2.2": dir}."""
  return {v: shared_checkpoint(tmp_path_factory, f"wan{v}", c) for v, c in TINY_WAN.items()}


@pytest.fixture(scope="session")
def tiny_wan_torch(tiny_wan_dirs):
  """The same tiny Wan VAEs as diffusers PyTorch modules: {"2.1": module, "2.2": module}."""
  from diffusers import AutoencoderKLWan

  return {v: AutoencoderKLWan.from_pretrained(d).eval() for v, d in tiny_wan_dirs.items()}


@pytest.fixture(scope="session")
def real_wan_dirs(tmp_path_factory):
  """The real Wan 2.1 and Wan 2.2 (TI2V-5B) VAE configs, random-initialised and saved (slow tests)."""
  return {v: shared_checkpoint(tmp_path_factory, f"real-wan{v}", c) for v, c in REAL_WAN.items()}


@pytest.fixture(scope="session")
def real_wan_torch(real_wan_dirs):
  """The real Wan VAEs as diffusers PyTorch modules, loaded on first use: ``real_wan_torch("2.1")``."""
  from diffusers import AutoencoderKLWan

  loaded = {}

  def get(variant: str):
    if variant not in loaded:
      loaded[variant] = AutoencoderKLWan.from_pretrained(real_wan_dirs[variant]).eval()
    return loaded[variant]

  return get


# --- real-config references: both paths' tests compare against one PyTorch computation per run -------

# The real CogVideoX-2b latents: the smallest that runs every block (4 x 4, upsampled to 32 x 32).
REAL_Z = (1, 16, 2, 4, 4)  # one first step of 2 frames
REAL_Z_ODD = (1, 16, 3, 4, 4)  # an odd first step of 3 frames


@pytest.fixture(scope="session")
def real_torch_decode(reference, request):
  """``real_torch_decode(shape)`` -> ``(z, diffusers' decode of z)`` by the real CogVideoX-2b config,
  ``z = randn(*shape, seed=1)``; the PyTorch decode once per run for test_torchax_vae and test_native_vae."""
  from helpers import randn, torch_decode

  def get(shape):
    z = randn(*shape, seed=1)
    name = f"cogvideox-2b-decode-randn{tuple(shape)}-seed1".replace(" ", "")
    return z, reference(name, lambda: torch_decode(request.getfixturevalue("real_torch"), z))

  return get


@pytest.fixture(scope="session")
def real_wan_references(reference, real_wan_torch):
  """``real_wan_references(variant)`` -> ``(z, diffusers' decode of z, x, diffusers' encode mean of x)``
  for a real Wan config: one small latent and video per version (2 x 2 latent px: every block runs, and
  XLA:CPU's unoptimised run stays short), the PyTorch side once per run for test_wan and test_native_wan."""
  import numpy as np
  from helpers import randn, torch_decode, torch_encode_mean

  def get(variant):
    channels, scale = (16, 8) if variant == "2.1" else (48, 16)
    z = randn(1, channels, 2, 2, 2, seed=1)
    x = np.tanh(randn(1, 3, 5, 2 * scale, 2 * scale, seed=2))
    decoded = reference(f"real-wan{variant}-decode-randn(1,{channels},2,2,2)-seed1",
                        lambda: torch_decode(real_wan_torch(variant), z))  # fmt: skip
    mean = reference(f"real-wan{variant}-encode-mode-tanh-randn(1,3,5,{2 * scale},{2 * scale})-seed2",
                     lambda: torch_encode_mean(real_wan_torch(variant), x))  # fmt: skip
    return z, decoded, x, mean

  return get
