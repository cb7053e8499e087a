"""The torchax 0.0.13 import shim: torchax imports on torch 2.13 and behaves as before for real ops."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_torchax_imports_and_removed_overloads_are_gone_from_its_tables():
  from torchax_vae.tracing._torchax_compat import _RemovedOverload, import_torchax

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
  from torchax_vae.tracing._torchax_compat import import_torchax

  import_torchax()
  import torch

  with pytest.raises(AttributeError, match="dim_Dimname"):
    torch.ops.aten.prod.dim_Dimname
  assert torch.ops.aten.prod.dim_int.name() == "aten::prod.dim_int"


def test_ops_run_through_torchax():
  from torchax_vae.tracing._torchax_compat import import_torchax

  torchax = import_torchax()
  import torch

  with torchax.default_env():
    a = torch.arange(12, dtype=torch.float32, device="jax").reshape(3, 4) + 1
    assert torch.prod(a, dim=1).cpu().tolist() == [24.0, 1680.0, 11880.0]
    assert [t.cpu().tolist() for t in torch.unbind(a[:, :1], dim=0)] == [[1.0], [5.0], [9.0]]


def test_plain_import_of_torchax_fails_exactly_where_torch_lacks_the_overloads():
  # The reason the shim exists: torch >= 2.13 removed the named-tensor overloads torchax 0.0.13 names.
  # On such a torch, plain `import torchax` fails and the shim stood in for some; on an older torch
  # (the accelerator image's 2.11) both work and the shim stood in for none. When this fails because a
  # plain import works on a torch without them, a fixed torchax is installed and the shim can go.
  from torchax_vae.tracing import _torchax_compat

  _torchax_compat.import_torchax()
  import torch

  missing = not hasattr(torch.ops.aten.prod, "dim_Dimname")
  result = subprocess.run([sys.executable, "-c", "import torchax"], capture_output=True, text=True)
  assert (result.returncode != 0) == missing, result.stderr[-500:]
  assert bool(_torchax_compat.PLACEHOLDERS) == missing
  if missing:
    assert "Dimname" in result.stderr and "aten.prod.dim_Dimname" in _torchax_compat.PLACEHOLDERS


STUB_TORCHAX = {  # a torchax that names no removed overload: what 0.0.13 is on torch <= 2.12
  "torchax/__init__.py": "import torch\nPROD = torch.ops.aten.prod.dim_int\n__version__ = 'stub'\n",
  "torchax/tensor.py": "",
  "torchax/ops/__init__.py": "",
  "torchax/ops/jaten.py": "",
  "torchax/ops/jc10d.py": "",
  "torchax/ops/jtorch.py": "",
  "torchax/ops/jtorchvision_nms.py": "",
  "torchax/decompositions.py": "TABLE = {}\n",
}


def test_shim_is_a_no_op_where_nothing_is_missing(tmp_path):
  for name, text in STUB_TORCHAX.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  code = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from torchax_vae.tracing import _torchax_compat as c; import torch; "
    "getattr_before = torch._ops.OpOverloadPacket.__getattr__; "
    "t = c.import_torchax(); "
    "assert t.__version__ == 'stub' and t.PROD is torch.ops.aten.prod.dim_int, t; "
    "assert c.PLACEHOLDERS == [], c.PLACEHOLDERS; "
    "assert torch._ops.OpOverloadPacket.__getattr__ is getattr_before; "
    "assert c.import_torchax() is t"
  )
  subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)


# --- Private and experimental JAX APIs: a newer jax that moved them degrades with a warning --------------


def test_no_serialize_executable_means_no_store_and_one_warning(monkeypatch, tmp_path):
  from torchax_vae.core import executables

  import jax.experimental

  # A jax without the module: neither the package attribute (set once it was imported) nor the module.
  monkeypatch.delattr(jax.experimental, "serialize_executable", raising=False)
  monkeypatch.setitem(sys.modules, "jax.experimental.serialize_executable", None)  # import -> ImportError
  monkeypatch.setattr(executables, "_SERIALIZER_WARNED", False)
  store = executables.ExecutableStore(tmp_path)
  with pytest.warns(UserWarning, match="no jax.experimental.serialize_executable") as caught:
    store.save("new", compiled=None, sig=())
    (tmp_path / "old.exe").write_bytes(b"stored by a jax that had it")
    assert store.load("old", in_tree=None, sig=(), devices=[]) is None  # compiles instead
  assert len(caught) == 1  # once per process
  assert sorted(p.name for p in tmp_path.iterdir()) == ["old.exe"]  # nothing written, nothing discarded


def test_moved_compilation_cache_internals_warn(monkeypatch, tmp_path):
  import jax
  from jax._src import compilation_cache

  from torchax_vae.core import compile_cache

  monkeypatch.delattr(compilation_cache, "reset_cache")
  renamed = {"jax_persistent_cache_min_entry_size_bytes"}
  update = jax.config.update

  def update_without_renamed(name, value):
    if name in renamed:
      raise AttributeError(f"Unrecognized config option: {name}")
    return update(name, value)

  monkeypatch.setattr(jax.config, "update", update_without_renamed)
  before = jax.config.jax_compilation_cache_dir
  try:
    with pytest.warns(UserWarning) as caught:
      compile_cache.enable_compilation_cache(tmp_path / "a")
      compile_cache.enable_compilation_cache(tmp_path / "b")  # a second directory: reset needed
    messages = [str(w.message) for w in caught]
    assert any("has no option jax_persistent_cache_min_entry_size_bytes" in m for m in messages), messages
    assert any("could not switch JAX's compilation cache directory" in m for m in messages), messages
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "b")
  finally:
    update("jax_compilation_cache_dir", before)


def test_moved_backend_probe_warns_and_sets_the_flag(monkeypatch):
  from jax._src import xla_bridge

  from compare import collectives

  monkeypatch.delattr(xla_bridge, "backends_are_initialized")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  with pytest.warns(UserWarning, match="cannot tell whether JAX's backends have started"):
    collectives._simulate_cpu_devices(8)
  import os

  assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
