"""Reference computations (diffusers PyTorch), inputs and module-parity helpers shared by the tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from compare.reference import build, perturb, state_numpy  # noqa: F401  (the tests' module-parity helpers)


def xla_flags_with_devices(count: int) -> str:
  """This process's XLA_FLAGS (the tests' code-generation flags: conftest.py) with ``count`` simulated
  CPU devices instead of 8, for a subprocess whose results are compared with this process's bit for bit."""
  import os
  import re

  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).split()
  return " ".join([*flags, f"--xla_force_host_platform_device_count={count}"])


def torch_decode(model, z: np.ndarray) -> np.ndarray:
  import torch

  with torch.no_grad():
    return model.decode(torch.from_numpy(z)).sample.numpy()


def torch_encode_mean(model, x: np.ndarray) -> np.ndarray:
  import torch

  with torch.no_grad():
    return model.encode(torch.from_numpy(x)).latent_dist.mode().numpy()


def with_attributes(model, **attributes):
  """A deep copy of a diffusers module with ``enable_tiling(**tiling)`` (``tiling=``) and attributes set
  (``use_framewise_decoding=False``, ``use_slicing=True``): the reference for a runner set the same way."""
  import copy

  reference = copy.deepcopy(model)
  tiling = attributes.pop("tiling", None)
  if tiling is not None:
    reference.enable_tiling(**tiling)
  for name, value in attributes.items():
    setattr(reference, name, value)
  return reference


def randn(*shape: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def loaders() -> dict:
  """Both JAX paths' ``load`` functions, by path name."""
  import native_flax
  import torchax_vae

  return {"torchax": torchax_vae.load, "native_flax": native_flax.load}


PATHS = ("torchax", "native_flax")


# --- module parity (the ports' per-class tests) --------------------------------------------------

# Tiny programs: LLVM's optimisation passes cost more than they save (halves XLA CPU compile time).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def run(module, *args, method="__call__", **static):
  """``module.method(*args, **static)`` (``method``: a name or ``f(module, *args)``) as one jitted
  program: the way the driver runs it, and far fewer XLA compilations than eager dispatch."""
  from flax import nnx

  graphdef, state = nnx.split(module)

  def program(st, *a):
    m = nnx.merge(graphdef, st)
    return method(m, *a) if callable(method) else getattr(m, method)(*a, **static)

  return jax.jit(program, compiler_options=FAST_COMPILE)(state, *args)


def cl(x: np.ndarray) -> jax.Array:
  """(B, C, T, H, W) numpy -> (B, T, H, W, C) jax."""
  return jnp.asarray(np.moveaxis(x, 1, -1))


def pt(x: np.ndarray):
  """numpy -> torch tensor (contiguous)."""
  import torch

  return torch.from_numpy(np.ascontiguousarray(x))


def err_of(ours, ref) -> float:
  """Max abs error of channels-last ``ours`` against channels-first torch ``ref``."""
  ours_cf = np.moveaxis(np.asarray(ours), -1, 1)
  ref = ref.detach().numpy()
  assert ours_cf.shape == ref.shape, (ours_cf.shape, ref.shape)
  return float(np.abs(ours_cf.astype(np.float64) - ref).max()) if ref.size else 0.0


class ErrorLog(dict):
  """The worst fp32 max abs error per check name of a test module, printed after its tests (``-s``)."""

  def __init__(self, title: str):
    super().__init__()
    self.title = title

  def check(self, name: str, ours, ref, tol: float) -> float:
    err = err_of(ours, ref)
    self[name] = max(err, self.get(name, 0.0))
    assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.0e}"
    return err

  def report(self) -> None:
    if self:
      width = max(map(len, self))
      print(f"\n\n{self.title}, fp32 max abs error:")
      for name, err in self.items():
        print(f"  {name:<{width}}  {err:.2e}")

