"""The adapters' torchax steps, with torch imported only when a program must be traced.

Why: a warm start whose step programs all come from the executable store runs no torch code. Its
compiled programs take the weights as a dict of arrays and the input and cache as arrays, so all a
start needs to call them is what identifies them (the stored programs' key) and what checks the
weights (the module's parameter shapes). Both are had without torch: the key from package versions
read off their metadata and digests of the source files read from disk (nothing imported); the
shapes from a manifest stored beside the programs the first time the module is built. Importing
torch, torchax and diffusers (5 s on a 2-core CPU, 18–21 s on the GPU image: docs/gpu-run.md) and
building the module are left to the first trace, which only a program missing from the store needs.

Every key stays honest: a new torch, torchax or diffusers version, or a change to any file the
programs come from (this package's bridge code, the diffusers model file), gives a new key, hence
new programs and a new manifest.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .core import conv as conv_lib
from .core import mesh as mesh_lib
from .core import norm as norm_lib
from .core import resize as resize_lib
from .core import transposes as transposes_lib
from .core.checkpoint import check_weights
from .core.driver import DTYPES, Runner, StepFunctions
from .core.executables import ExecutableStore, source_digest

LAYOUT = "BCTHW"
CACHE_LAYOUT = "BTHWC"  # the conv cache between steps, as the channels-last convolutions read and write it
PACKAGE = Path(__file__).resolve().parent
# The files every adapter's programs come from besides its own builder and diffusers model file.
BRIDGE_FILES = (PACKAGE / "backend.py", PACKAGE / "_torchax_compat.py")
BRIDGE_MODULES = (conv_lib, norm_lib, resize_lib, transposes_lib)
# adapter name -> diffusers' model file (under diffusers/models/autoencoders/), hashed into the key
# without importing diffusers; tests check it is the file each builder imports.
DIFFUSERS_MODEL_FILES = {
  "cogvideox": "autoencoder_kl_cogvideox.py",
  "wan": "autoencoder_kl_wan.py",
  "hunyuan_video": "autoencoder_kl_hunyuan_video.py",
  "hunyuan_video15": "autoencoder_kl_hunyuanvideo15.py",
  "ltx_video": "autoencoder_kl_ltx.py",
  "ltx2_video": "autoencoder_kl_ltx2.py",
}


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def diffusers_autoencoders_dir() -> Path:
  """The installed diffusers' ``models/autoencoders`` directory, found without importing diffusers."""
  spec = importlib.util.find_spec("diffusers")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("diffusers is not installed: the torchax path runs diffusers' modules")
  return Path(next(iter(spec.submodule_search_locations))) / "models" / "autoencoders"


def diffusers_model_file(adapter_name: str) -> Path:
  """The installed diffusers' model file of an adapter, found without importing diffusers."""
  return diffusers_autoencoders_dir() / DIFFUSERS_MODEL_FILES[adapter_name]


def diffusers_class_file(class_name: str) -> Path | None:
  """The file under diffusers' ``models/autoencoders`` that defines ``class_name`` (read, not
  imported), or ``None`` if none does; tests check it is the file of every class diffusers exports."""
  definition = re.compile(rf"^class {re.escape(class_name)}\(", re.MULTILINE)
  for path in sorted(diffusers_autoencoders_dir().glob("*.py")):
    if definition.search(path.read_text(encoding="utf-8")):
      return path
  return None


def code_fingerprint(*sources) -> dict[str, Any]:
  """What compiled torchax programs depend on besides config, dtype, mesh and inputs: the torch,
  torchax and diffusers versions (package metadata) and a digest of the bridge's files and ``sources``
  (the path's own files and the diffusers model file), read from disk: nothing is imported."""
  conv3d = conv_lib.conv3d_form()  # fixed for this model's programs (and in their key)
  return {
    "torch": _version("torch"),
    "torchax": _version("torchax"),
    "diffusers": _version("diffusers"),
    "source": source_digest(*BRIDGE_FILES, *BRIDGE_MODULES, *sources),
    "conv3d": conv3d,
    "sink_transposes": transposes_lib.enabled(),
  }


def fingerprint(adapter_name: str) -> dict[str, Any]:
  """What an adapter's compiled programs depend on besides config, dtype, mesh and inputs."""
  return code_fingerprint(PACKAGE / "models" / f"{adapter_name}.py", diffusers_model_file(adapter_name))


def place_weights(weights: dict[str, np.ndarray], dtype: str, mesh=None) -> dict[str, jax.Array]:
  """numpy (PyTorch layout) -> ``jax.Array`` in ``dtype``, replicated over the mesh if one is given.

  Convolution kernels (every parameter of rank >= 4) are stored channels-last, ``(*kernel, I, O)``
  instead of PyTorch's ``(O, I, *kernel)``; the step functions hand PyTorch's layout to the torch
  code (``backend._torch_layout``). Inside the compiled program that transpose meets the one the
  convolution lowering applies and XLA cancels the pair, so no kernel is transposed at run time
  (transposing the decoder's 477 MB of kernels cost ~0.3 s per CPU decode).
  """
  target = DTYPES[dtype]
  sharding = mesh_lib.replicated(mesh)

  def place(item):
    # One pass over each tensor's bytes (a view into the file's one read): a kernel's
    # transposed view goes to device_put as it is (PjRt's strided copy transposes 2-3x faster than
    # numpy's), cast on the host only where the dtype changes. mesh_lib.put: on a mesh over several
    # processes each fills its own devices, with no cross-process check.
    key, value = item
    return key, mesh_lib.put(kernel_layout(np.asarray(value)).astype(target, copy=False), sharding)

  # numpy's copies and device_put release the GIL: the tensors convert on every core at once.
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
    return dict(pool.map(place, weights.items()))


def kernel_layout(v):
  """PyTorch ``(O, I, *kernel)`` -> ``(*kernel, I, O)`` for rank >= 4 (convolution kernels); else ``v``."""
  return v.transpose(*range(2, v.ndim), 1, 0) if v.ndim >= 4 else v


class TorchSide:
  """An adapter's diffusers module and torchax steps, built (torch imported) on first use, once."""

  def __init__(self, adapter_name: str, config, mesh, fingerprint: dict[str, Any]):
    self.adapter_name = adapter_name
    self.config = config
    self.mesh = mesh
    self.fingerprint = fingerprint
    self._lock = threading.Lock()  # two threads tracing at once build one module
    self._built: tuple[Any, StepFunctions] | None = None

  def _build(self) -> tuple[Any, StepFunctions]:
    with self._lock:
      if self._built is None:
        from . import backend
        from .models import builder_module

        built = builder_module(self.adapter_name)
        module, decode_step, encode_step = built.module_and_steps(self.config)
        if self.mesh is not None:
          backend.add_sharding_hooks(module, self.mesh, built.SHARDED_LAYERS)
        steps = backend.make_steps(
          module, decode_step, encode_step, conv3d_form=self.fingerprint["conv3d"], sink=self.fingerprint["sink_transposes"]
        )
        self._built = (module, steps)
      return self._built

  @property
  def module(self):
    """The unmodified diffusers module the steps run (parameters on the meta device)."""
    return self._build()[0]

  def expected_shapes(self) -> dict[str, tuple[int, ...]]:
    from .backend import expected_shapes

    return expected_shapes(self.module)

  def decode_step(self, params, z, conv_cache, *condition):
    return self._build()[1].decode_step(params, z, conv_cache, *condition)

  def encode_step(self, params, x, conv_cache):
    return self._build()[1].encode_step(params, x, conv_cache)


class TorchaxRunner(Runner):
  """The driver's runner over an adapter's torchax steps; ``module`` is diffusers' module (built on
  first access if no program has needed it yet)."""

  torch_side: TorchSide

  @property
  def module(self):
    return self.torch_side.module


def manifest_key(adapter_name: str, config, fp: dict[str, Any]) -> str:
  """The key of the parameter-shape manifest: the adapter, its config and the fingerprint."""
  text = json.dumps({"adapter": adapter_name, "config": config.to_dict(), "fingerprint": fp}, sort_keys=True, default=str)
  return "params-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def build(checkpoint, dtype: str, mesh, *, executable_dir=None) -> tuple[StepFunctions, dict[str, jax.Array], dict]:
  """``(steps, params, extras)`` for :func:`torchax_vae.core.loading.load_runner`.

  The weights are checked against the module's parameter shapes: from the store's manifest when
  one is there (no torch), else from the module, built here, and the manifest stored for the next
  start. The steps build the module on their first trace.
  """
  adapter = checkpoint.adapter
  fp = fingerprint(adapter.name)
  torch_side = TorchSide(adapter.name, checkpoint.config, mesh, fp)
  store = ExecutableStore(executable_dir)
  key = manifest_key(adapter.name, checkpoint.config, fp)
  manifest = store.load_manifest(key)
  if manifest is not None:
    expected = {k: tuple(v) for k, v in manifest["parameter_shapes"].items()}
  else:
    expected = torch_side.expected_shapes()
  check_weights(checkpoint.weights, expected, str(checkpoint.directory))
  if manifest is None:  # checked first: a manifest is only ever written for weights that fit it
    store.save_manifest(key, {"adapter": adapter.name, "parameter_shapes": {k: list(v) for k, v in expected.items()}})
  params = place_weights(checkpoint.weights, dtype, mesh)
  steps = StepFunctions(
    layout=LAYOUT,
    decode_step=torch_side.decode_step,
    encode_step=torch_side.encode_step,
    fingerprint=fp,
    cache_layout=CACHE_LAYOUT if fp["sink_transposes"] else None,
  )
  return steps, params, {"torch_side": torch_side}

