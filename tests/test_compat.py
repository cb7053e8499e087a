"""The torchax 0.0.13 import shim: torchax imports on torch 2.13 and behaves as before for real ops."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_torchax_imports_and_removed_overloads_are_gone_from_its_tables():
  from torchax_vae._torchax_compat import _RemovedOverload, import_torchax

  torchax = import_torchax()
  import torch
  import torchax.amp
  import torchax.decompositions

  assert torchax.__version__ == "0.0.13"
  assert not any(isinstance(k, _RemovedOverload) for k in torchax.amp.autocast_policy)
  assert not any(isinstance(k, _RemovedOverload) for k in torchax.decompositions.MUTABLE_DECOMPOSITION)
  # Overloads that exist are exactly where torchax put them.
  assert torchax.amp.autocast_policy[torch.ops.aten.prod.dim_int] == torchax.amp.CastPolicy.FP32
  assert torch.ops.aten.bernoulli_.float in torchax.decompositions.MUTABLE_DECOMPOSITION
  assert torch.ops.aten.unbind.int in torchax.decompositions.DECOMPOSITIONS


def test_overload_lookup_is_restored_after_import():
  from torchax_vae._torchax_compat import import_torchax

  import_torchax()
  import torch

  with pytest.raises(AttributeError, match="dim_Dimname"):
    torch.ops.aten.prod.dim_Dimname
  assert torch.ops.aten.prod.dim_int.name() == "aten::prod.dim_int"


def test_ops_run_through_torchax():
  from torchax_vae._torchax_compat import import_torchax

  torchax = import_torchax()
  import torch

  with torchax.default_env():
    a = torch.arange(12, dtype=torch.float32, device="jax").reshape(3, 4) + 1
    assert torch.prod(a, dim=1).cpu().tolist() == [24.0, 1680.0, 11880.0]
    assert [t.cpu().tolist() for t in torch.unbind(a[:, :1], dim=0)] == [[1.0], [5.0], [9.0]]


def test_plain_import_of_torchax_0_0_13_fails_without_the_shim():
  # The reason the shim exists: when this starts passing, a fixed torchax is installed and the
  # shim can go (see the module docstring).
  result = subprocess.run([sys.executable, "-c", "import torchax"], capture_output=True, text=True)
  assert result.returncode != 0 and "Dimname" in result.stderr
