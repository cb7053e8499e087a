"""Reference computations (diffusers PyTorch) and inputs shared by the tests."""

from __future__ import annotations

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
