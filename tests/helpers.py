"""Reference computations (diffusers PyTorch), inputs and module-parity helpers shared by the tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def torch_decode(model, z: np.ndarray) -> np.ndarray:
  import torch

  with torch.no_grad():
    return model.decode(torch.from_numpy(z)).sample.numpy()


def torch_encode_mean(model, x: np.ndarray) -> np.ndarray:
  import torch

  with torch.no_grad():
    return model.encode(torch.from_numpy(x)).latent_dist.mode().numpy()


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


def perturb(module, seed: int):
  """Default init, plus noise on 1-D parameters (GroupNorm scale/bias, conv biases) and on Wan's RMS-norm
  ``gamma`` (all ones at init), so that no parameter is trivially 0 or 1."""
  import torch

  gen = torch.Generator().manual_seed(seed + 1000)
  with torch.no_grad():
    for name, p in sorted(module.named_parameters()):
      if p.ndim == 1 or name.endswith("gamma"):
        p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return module.eval()


def state_numpy(module) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def build(torch_cls, nnx_cls, *args, seed: int = 0, **kwargs):
  """(diffusers module, NNX module with its weights copied through convert's table)."""
  import torch
  from flax import nnx

  from native_flax import convert

  torch.manual_seed(seed)
  ref = perturb(torch_cls(*args, **kwargs), seed)
  # Built as convert.load_model builds the model: eval_shape (no random init, which would compile
  # one XLA program per parameter shape), then filled from the state dict through the table.
  ours = nnx.eval_shape(lambda: nnx_cls(*args, **kwargs, rngs=nnx.Rngs(seed)))
  ours = convert.load_into(ours, state_numpy(ref), source=torch_cls.__name__)
  return ref, ours


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
