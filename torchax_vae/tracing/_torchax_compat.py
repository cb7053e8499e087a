"""Import shim for torchax 0.0.13 on torch >= 2.13.

Why: torch 2.13 removed the named-tensor (``Dimname``) overloads of several aten ops, e.g.
``aten.prod.dim_Dimname``.  torchax 0.0.13 names them at import time (its autocast policy table,
its decomposition list), so ``import torchax`` dies with ``AttributeError: ... has no overload
name 'dim_Dimname'`` (upstream: google/torchax#101, fixed after the 0.0.13 release).

What: while torchax is imported, and only then, a lookup of a *missing* overload whose name is a
named-tensor overload returns a placeholder instead of raising.  Afterwards the placeholders are
removed from the tables torchax built, and the lookup is restored.  Overloads that exist resolve
exactly as before (the patched lookup calls the original first), so torchax's behaviour for every
real op is unchanged.

Where torch still has those overloads (torch <= 2.12, e.g. the accelerator image's 2.11) nothing is
missing: every lookup resolves through the original, no placeholder is made (:data:`PLACEHOLDERS`
stays empty) and nothing is scrubbed, so the shim is a no-op there.

Delete this module (and import ``torchax`` directly) once a torchax release newer than 0.0.13 —
one that includes the fix for google/torchax#101 — is the pinned version.

This module is the only place in the project that imports torchax for the first time; everything
else calls :func:`import_torchax`.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types

_lock = threading.Lock()
# The overloads the import had to stand in for ("aten.prod.dim_Dimname", …); empty where none is missing.
PLACEHOLDERS: list[str] = []

# Modules torchax 0.0.13 imports only in ``Environment.load_ops``.
_LAZILY_IMPORTED = (
  "torchax.ops.jaten",
  "torchax.ops.jc10d",
  "torchax.ops.jtorch",
  "torchax.ops.jtorchvision_nms",
  "torchax.decompositions",
)


class _RemovedOverload:
  """Stands in for a named-tensor overload that this torch no longer has."""

  def __init__(self, packet_name: str, overload_name: str):
    self.name = f"{packet_name}.{overload_name}"

  def __repr__(self) -> str:
    return f"<removed overload {self.name}>"


def _is_named_tensor_overload(name: str) -> bool:
  """Named-tensor overload names: ``dim_Dimname``, ``Dimname_Scalar``, ``names_dim``, ``correction_names``."""
  lowered = name.lower()
  return "dimname" in lowered or "names" in lowered.split("_")


def import_torchax() -> types.ModuleType:
  """Returns the ``torchax`` module, importing it through the shim on the first call."""
  if "torchax" in sys.modules and "torchax.tensor" in sys.modules:
    return _fix_tensor_methods(sys.modules["torchax"])
  with _lock:
    if "torchax" in sys.modules and "torchax.tensor" in sys.modules:
      return _fix_tensor_methods(sys.modules["torchax"])
    import torch._ops

    packet_cls = torch._ops.OpOverloadPacket
    original_getattr = packet_cls.__getattr__
    placeholders: list[_RemovedOverload] = []

    def getattr_tolerating_removed_overloads(self, key):
      try:
        return original_getattr(self, key)
      except AttributeError:
        if not _is_named_tensor_overload(key):
          raise
        placeholder = _RemovedOverload(str(self), key)
        placeholders.append(placeholder)
        return placeholder

    packet_cls.__getattr__ = getattr_tolerating_removed_overloads
    try:
      torchax = importlib.import_module("torchax")
      # torchax imports these lazily, when its first Environment is built; they name removed
      # overloads too, so they are imported here, under the same patch.
      for name in _LAZILY_IMPORTED:
        importlib.import_module(name)
    finally:
      packet_cls.__getattr__ = original_getattr
    _scrub_placeholders(placeholders)
    PLACEHOLDERS[:] = [p.name for p in placeholders]
    return _fix_tensor_methods(torchax)


def _type_as(self, other):
  """``self`` cast to ``other``'s dtype, as a new tensor (``torch.Tensor.type_as``)."""
  return self.to(other.dtype)


def _fix_tensor_methods(torchax: types.ModuleType) -> types.ModuleType:
  """Two of torchax 0.0.13's tensor methods made to behave as torch's (from outside, as the op overrides):

  * ``type_as`` cast ``self``'s JAX value in place and returned ``self`` with its torch dtype unchanged:
    a tensor the caller still holds changed dtype under it, and the next op checking dtypes saw a stale
    one (diffusers' Wan and Qwen-Image ``upsample`` resize in float32 and ``.type_as(x)`` back: in
    bfloat16 the next conv2d failed "Input type (float) and bias type (c10::BFloat16) should be the
    same"). Now a cast that makes a new tensor, as torch's does.
  * ``__setitem__``: see :func:`_setitem_dropping_leading_ones`.
  """
  tensor_cls = getattr(sys.modules.get("torchax.tensor"), "Tensor", None)
  if tensor_cls is None:  # a torchax without that class has nothing of this to fix
    return torchax
  if tensor_cls.type_as is not _type_as:
    tensor_cls.type_as = _type_as
  if getattr(tensor_cls.__setitem__, "_torchax_vae", None) is None:
    tensor_cls.__setitem__ = _setitem_dropping_leading_ones(tensor_cls.__setitem__)
  return torchax


def _setitem_dropping_leading_ones(setitem):
  """``tensor[key] = value`` as torch allows it: torch's ``copy_`` drops a source's extra leading
  size-1 dims (``buffer[i] = z[:, :, a:b]`` with a batch of one: Allegro's tiled decode), JAX's
  ``.at[key].set`` refuses them ("Cannot broadcast to shape with fewer dimensions")."""

  def __setitem__(self, key, value):
    while True:
      try:
        return setitem(self, key, value)
      except ValueError as err:
        if "fewer dimensions" not in str(err) or getattr(value, "ndim", 0) == 0 or value.shape[0] != 1:
          raise
        value = value[0]

  __setitem__._torchax_vae = setitem
  return __setitem__

def _scrub_placeholders(placeholders: list[_RemovedOverload]) -> None:
  """Removes the placeholders from the tables torchax built at import time.

  ``torch._decomp.get_decompositions`` already ignores entries that are not operators, so only
  dict-like tables keyed by op need cleaning: torchax's autocast policy, and any op registry.
  """
  if not placeholders:
    return
  ids = {id(p) for p in placeholders}
  for module_name, module in list(sys.modules.items()):
    if not module_name.startswith("torchax") or module is None:
      continue
    for value in list(vars(module).values()):
      if isinstance(value, dict):
        for key in [k for k in value if id(k) in ids]:
          del value[key]
      elif isinstance(value, list):
        value[:] = [v for v in value if id(v) not in ids]
