"""The generic path's PyTorch side: diffusers' class, its module, and its calls traced through torchax.

Imported only when a program must be traced or the module is asked for (``runner.module``,
``enable_tiling``, ``as_diffusers``): a warm start whose programs all come from the executable store
never imports this file, torch, torchax nor diffusers (:mod:`torchax_vae.runtime.generic` keeps what it needs
of the module in a manifest: :func:`describe`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from ..core import conv as conv_lib
from ..core.errors import UnsupportedModelError
from ..runtime.contract import DECODE, ENCODE, LATENT, OUTPUT, PARAMETERS, SAMPLE, STD, spec_for
from . import backend
from .backend import torchax

import torch  # noqa: E402  (after torchax: backend imported it through the shim)
from torchax import interop  # noqa: E402


def autoencoder_classes() -> dict[str, type]:
  """Every model class ``diffusers.models.autoencoders`` exports, by name (what :func:`load` accepts)."""
  import diffusers.models.autoencoders as autoencoders

  return {
    name: obj
    for name in dir(autoencoders)
    if not name.startswith("_")
    and inspect.isclass(obj := getattr(autoencoders, name))
    and issubclass(obj, torch.nn.Module)
  }


def model_class(class_name: str, source: str) -> type:
  classes = autoencoder_classes()
  if class_name not in classes:
    import diffusers

    raise UnsupportedModelError(
      f"{source}: _class_name={class_name!r} is not an autoencoder class diffusers {diffusers.__version__} "
      f"exports (diffusers.models.autoencoders has {len(classes)}: {', '.join(sorted(classes)[:6])}, …)"
    )
  return classes[class_name]


# --- building the module ---------------------------------------------------------------------


_BUILD_LOCK = threading.Lock()


@contextlib.contextmanager
def _parameters_on_meta():
  """Parameters made while active live on the meta device; buffers stay real.

  ``torch.device("meta")`` would put buffers there too, and a non-persistent buffer (not in the
  checkpoint) would be lost. Each parameter is moved to meta as it is registered, so its init runs
  on meta, for free (accelerate's ``init_empty_weights(include_buffers=False)`` does the same). The
  patch is process-wide: loads take a lock, so two loads in two threads build one after the other
  (a module another thread builds meanwhile, outside ``load``, would get meta parameters too).
  """
  with _BUILD_LOCK:
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
      register(module, name, param)
      if param is not None and param.device.type != "meta":
        module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta
    try:
      yield
    finally:
      torch.nn.Module.register_parameter = register


def build_module(cls: type, raw_config: Mapping[str, Any]) -> torch.nn.Module:
  """diffusers' ``cls.from_config(config)``, parameters on meta, in eval mode."""
  with _parameters_on_meta(), torch.no_grad():
    module = cls.from_config(dict(raw_config))
  return module.eval()


def module_state(module: torch.nn.Module) -> dict[str, Any]:
  """The module's plain attributes (``use_tiling``, tile sizes, ``use_slicing``, framewise flags …),
  over every submodule: what ``enable_tiling`` and friends change, so part of each program's key."""
  state = {}
  for prefix, sub in module.named_modules():
    for name, value in vars(sub).items():
      if name.startswith("_") or name == "training":
        continue
      if isinstance(value, bool | int | float | str | type(None)) or (
        isinstance(value, tuple | list) and all(isinstance(v, bool | int | float | str) for v in value)
      ):
        state[f"{prefix}.{name}" if prefix else name] = value
  return state


def state_digest(module: torch.nn.Module) -> str:
  """A short digest of :func:`module_state`: the programs' label carries it."""
  return hashlib.sha256(json.dumps(module_state(module), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
  tensor = tensor.detach().cpu()
  return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


def encode_array(value: np.ndarray) -> dict[str, Any]:
  """A buffer as JSON: dtype, shape and its bytes (base64), exact."""
  value = np.asarray(value, order="C")  # (np.ascontiguousarray would make a 0-d buffer 1-d)
  return {"dtype": value.dtype.str, "shape": list(value.shape), "data": base64.b64encode(value.tobytes()).decode()}


def describe(module: torch.nn.Module) -> dict[str, Any]:
  """What the torch-free runner needs of a freshly built module, as JSON (the generic manifest):
  its config, state-dict shapes (persistent and integer buffers named), parameter order, the modules
  kept in float32, the non-persistent buffers' values (made by ``__init__``, in no checkpoint), the
  digest of its plain attributes and which calls it has."""
  state = module.state_dict()
  persistent = [name for name, _ in module.named_buffers() if name in state]
  return {
    "config": json.loads(json.dumps(dict(module.config), default=str)),
    "state_shapes": {k: list(v.shape) for k, v in state.items()},
    "persistent_buffers": persistent,
    "integer_buffers": [k for k in persistent if not state[k].is_floating_point()],
    "parameter_order": [name for name, _ in module.named_parameters()],
    "keep_in_fp32": list(getattr(module, "_keep_in_fp32_modules", None) or ()),
    "buffers": {name: encode_array(_numpy(b)) for name, b in module.named_buffers() if name not in state},
    "state_digest": state_digest(module),
    "has_decode": callable(getattr(module, "decode", None)),
    "has_encode": callable(getattr(module, "encode", None)),
  }


# --- the traced calls ------------------------------------------------------------------------


def _first_field(output: Any) -> tuple[str, Any]:
  """``(field, value)`` of what a diffusers call returned: ``.sample`` / ``.latent_dist`` / ``.latent``
  of its output class, the first item of a tuple, or a tensor itself (``""``)."""
  if isinstance(output, torch.Tensor):
    return "", output
  if isinstance(output, Mapping):  # diffusers' BaseOutput is an OrderedDict of its set fields
    for preferred in ("sample", "latent_dist"):
      if preferred in output:
        return preferred, output[preferred]
    field = next(iter(output))
    return field, output[field]
  if isinstance(output, tuple | list) and output:
    return "0", output[0]
  raise TypeError(f"expected a tensor, a diffusers output or a tuple, got {type(output).__name__}")


def _qualified(cls: type) -> str:
  return f"{cls.__module__}.{cls.__qualname__}"


def _decode_call(module, z, kwargs):
  _, sample = _first_field(module.decode(z, **kwargs))
  if not isinstance(sample, torch.Tensor):
    raise TypeError(f"{type(module).__name__}.decode returned {type(sample).__name__}, expected a tensor")
  return {SAMPLE: sample}


def _encode_call(module, x, kwargs):
  output = module.encode(x, **kwargs)
  field, value = _first_field(output)
  made_of = f"{OUTPUT}|{_qualified(type(output))}|{field}"
  if isinstance(value, torch.Tensor):
    return {LATENT: value, made_of + "|": torch.zeros((), dtype=torch.int32)}
  # A posterior: diffusers' DiagonalGaussianDistribution, or a class's own (Oobleck's): mode() and std.
  mode = value.mode() if hasattr(value, "mode") else getattr(value, "mean", None)
  std = getattr(value, "std", None)
  if not isinstance(mode, torch.Tensor):
    raise TypeError(f"{type(module).__name__}.encode returned {type(value).__name__}: neither a tensor nor a posterior")
  out = {LATENT: mode, f"{made_of}|{_qualified(type(value))}": torch.zeros((), dtype=torch.int32)}
  if isinstance(std, torch.Tensor):
    out[STD] = std.expand_as(mode) if std.shape != mode.shape else std
  parameters = getattr(value, "parameters", None)
  if isinstance(parameters, torch.Tensor):
    out[PARAMETERS] = parameters
  return out


_CALLS = {DECODE: _decode_call, ENCODE: _encode_call}


def _sharding_hooks(module: torch.nn.Module, mesh: Mesh) -> list:
  """Pins the output of every 2D/3D convolution to batch on ``dp`` and width (last axis) on ``tp``.

  No model is named: any convolution's output is ``(B, C, [T,] H, W)``. GSPMD would propagate the
  input's split on its own; pinned here it cannot drift into replication through a reshape.
  """
  constrain = interop.torch_view(jax.lax.with_sharding_constraint)

  def pin(_layer, _args, output):
    if isinstance(output, torch.Tensor) and output.ndim in (4, 5):
      return constrain(output, NamedSharding(mesh, spec_for(mesh, output.ndim)))
    return output

  layers = (torch.nn.Conv2d, torch.nn.Conv3d)
  return [m.register_forward_hook(pin) for m in module.modules() if isinstance(m, layers)]


class Traced:
  """A built module made ready to trace: torchax's environment with the bridge's op overrides, the
  module as a functional call, and (on a mesh) its convolution outputs pinned."""

  def __init__(self, module: torch.nn.Module, mesh: Mesh | None):
    self.module = module
    self._env = torchax.default_env()
    backend.install_op_overrides(self._env)
    self._jittable = interop.JittableModule(module, dedup_parameters=False)
    if mesh is not None:
      _sharding_hooks(module, mesh)

  def call(self, kind: str, static: Mapping[str, Any], conv3d_form: str) -> Callable:
    """``(params, buffers, x, tensor_kwargs) -> {name: jax.Array}``: diffusers' ``decode`` /
    ``encode`` of the module on JAX values (params in the runner's kernel layout), for tracing."""
    call = _CALLS[kind]

    def run(params, buffers, x, tensor_kwargs):
      params = {k: backend._torch_layout(v) for k, v in params.items()}  # kernels back to PyTorch's layout
      params_t, buffers_t, x_t, kw_t = self._env.j2t_iso((params, buffers, x, tensor_kwargs))
      with self._env, torch.no_grad(), conv_lib.using_form(conv3d_form), backend.tracking_resizes():
        out = self._jittable.functional_call(lambda m, x_, kw: call(m, x_, {**kw, **static}), params_t, buffers_t, x_t, kw_t)
      return self._env.t2j_iso(out)

    return run
