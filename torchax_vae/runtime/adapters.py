"""The adapters' torchax runner, with torch imported only when a program must be traced.

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

import hashlib
import json
import threading
from typing import Any

import jax

from ..core.checkpoint import check_weights
from ..core.driver import Runner, StepFunctions
from ..core.executables import ExecutableStore
from . import weights as weights_lib  # looked up at call time: compare.worker places them abstract
from .contract import CACHE_LAYOUT, LAYOUT
from .fingerprint import adapter_fingerprint


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
        from ..tracing import backend
        from ..tracing.models import builder_module

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
    from ..tracing.backend import expected_shapes

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


def build(checkpoint, dtype: str, mesh, *, executable_dir=None, target=None) -> tuple[StepFunctions, dict[str, jax.Array], dict]:
  """``(steps, params, extras)`` for :func:`torchax_vae.core.loading.load_runner`.

  The weights are checked against the module's parameter shapes: from the store's manifest when
  one is there (no torch), else from the module, built here, and the manifest stored for the next
  start. The steps build the module on their first trace.
  """
  adapter = checkpoint.adapter
  fp = adapter_fingerprint(adapter.name)
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
  params = weights_lib.place_weights(checkpoint.weights, dtype, mesh, abstract=target is not None)
  steps = StepFunctions(
    layout=LAYOUT,
    decode_step=torch_side.decode_step,
    encode_step=torch_side.encode_step,
    fingerprint=fp,
    cache_layout=CACHE_LAYOUT if fp["sink_transposes"] else None,
  )
  return steps, params, {"torch_side": torch_side}

