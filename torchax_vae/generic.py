"""Any diffusers autoencoder through torchax, unmodified, with no per-model code: the generic path.

    vae = torchax_vae.load("black-forest-labs/FLUX.1-dev", subfolder="vae")   # AutoencoderKL: no adapter
    image = vae.decode(z)               # what diffusers' vae.decode(z).sample returns
    z = vae.encode(image)               # latent_dist.mode() (KL), or the latent (deterministic encoders)
    z = vae.encode(image, key=jax.random.key(0))   # a sample of the posterior

The class is ``config.json``'s ``_class_name``, looked up among what ``diffusers.models.autoencoders``
exports, and built by diffusers itself (``cls.from_config``) with its parameters on the meta device and
its buffers real (a non-persistent buffer, e.g. a wavelet filter, is made by ``__init__`` and exists
nowhere else). Weights come through the shared loader and are checked against the module's state dict.

Each call kind (``decode``, ``encode``) and input signature (shapes, dtypes, sharding, extra keywords,
the module's tiling/slicing attributes) is one program: the module's own method, traced once through
torchax (with the op overrides and the layout pass every torchax program gets) and jitted. Whatever
diffusers does inside — Python loops over frames, framewise or tiled decoding — is unrolled into that
program, so compile time and memory grow with the input's length where diffusers loops; an adapter
(:mod:`torchax_vae.core.models`) is what bounds them. Programs go through the same executable store as
the adapters' steps, keyed by class, config, dtype, mesh and the package versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import numbers
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import adapter_steps, backend
from .backend import torchax
from .core import conv as conv_lib
from .core import executables, kinds
from .core import mesh as mesh_lib
from .core import norm as norm_lib
from .core import progress as progress_lib
from .core import resize as resize_lib
from .core import transposes as transposes_lib
from .core.checkpoint import check_weights, read_raw_config, read_weights, weight_files
from .core.compile_cache import executable_dir
from .core.driver import DTYPES, Precompiled, obtain_recorded
from .core.errors import BridgeError, CheckpointError, InputError, UnsupportedModelError
from .core.progress import ProgressArg

import torch  # noqa: E402  (after torchax: backend imported it through the shim)
from torchax import interop  # noqa: E402

DECODE, ENCODE = "decode", "encode"
# Keys the programs' outputs are returned under (a dict: its keys are part of the compiled program's
# output tree, so a deserialized program still tells what its call returned).
SAMPLE = "sample"  # decode's tensor
LATENT = "latent"  # encode's tensor (a deterministic latent, or the posterior's mode)
STD = "std"  # the posterior's standard deviation (Gaussian posteriors)
PARAMETERS = "parameters"  # the posterior's parameters, what its class is built from (mean ‖ logvar)
# "output|<output class>|<field>|<distribution class or ''>" -> a 0-d marker: what diffusers' encode
# returned, for rebuilding it around these tensors (as_diffusers), also from a deserialized program.
OUTPUT = "output"
WHOLE = "whole"  # the one program of a call (Precompiled.name; the adapters' are "first" / "steady")


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
# JAX's errors for Python that reads a traced value (``.item()``, ``bool(tensor)``, a data-dependent
# shape): the module's code, not the input, is what a traced program cannot run.
_TRACER_ERRORS = tuple(
  getattr(jax.errors, name)
  for name in ("ConcretizationTypeError", "TracerBoolConversionError", "TracerIntegerConversionError",
               "TracerArrayConversionError", "NonConcreteBooleanIndexError", "UnexpectedTracerError")
  if hasattr(jax.errors, name)
)  # fmt: skip


def _sharding_hooks(module: torch.nn.Module, mesh: Mesh) -> list:
  """Pins the output of every 2D/3D convolution to batch on ``dp`` and width (last axis) on ``tp``.

  No model is named: any convolution's output is ``(B, C, [T,] H, W)``. GSPMD would propagate the
  input's split on its own; pinned here it cannot drift into replication through a reshape.
  """
  constrain = interop.torch_view(jax.lax.with_sharding_constraint)

  def pin(_layer, _args, output):
    if isinstance(output, torch.Tensor) and output.ndim in (4, 5):
      return constrain(output, NamedSharding(mesh, _spec(mesh, output.ndim)))
    return output

  layers = (torch.nn.Conv2d, torch.nn.Conv3d)
  return [m.register_forward_hook(pin) for m in module.modules() if isinstance(m, layers)]


def _spec(mesh: Mesh | None, ndim: int) -> PartitionSpec:
  """Batch (axis 0) on ``dp``; for images and videos (rank 4, 5) width (the last axis) on ``tp``."""
  spec: list[str | None] = [None] * ndim
  if mesh is not None:
    if mesh_lib.BATCH_AXIS in mesh.axis_names:
      spec[0] = mesh_lib.BATCH_AXIS
    if mesh_lib.WIDTH_AXIS in mesh.axis_names and ndim >= 4:
      spec[-1] = mesh_lib.WIDTH_AXIS
  return PartitionSpec(*spec)


@dataclasses.dataclass(frozen=True)
class _Label:
  """What, besides the inputs' signature, a program depends on: kind, static keywords, module state."""

  kind: str
  static: tuple  # sorted (name, value) of the non-tensor keywords
  state: str  # digest of module_state()

  def __str__(self) -> str:
    return f"{self.kind}|{self.static}|{self.state}"


class GenericRunner:
  """``decode``/``encode`` of an unmodified diffusers autoencoder, one program per call signature.

  The same interface as the adapters' runner (``decode``, ``encode``, ``encode_moments`` where there is
  a posterior, ``precompile``, ``enable_tiling``, ``as_diffusers``, ``trace_counts``, ``programs``).
  ``module`` is the diffusers module (meta parameters): its attributes may be set as in diffusers
  (``vae.module.use_framewise_decoding = True``); programs are keyed by them.
  """

  generic = True

  def __init__(
    self,
    module: torch.nn.Module,
    params: dict[str, jax.Array],
    buffers: dict[str, jax.Array],
    *,
    class_name: str,
    raw_config: Mapping[str, Any],
    mesh: Mesh | None,
    dtype: str,
    name: str = "torchax",
    executable_dir: Path | None = None,
    input_dtype: str | None = None,
  ):
    self.module = module
    self.class_name = class_name
    self.raw_config = dict(raw_config)
    self.config = module.config  # diffusers' FrozenDict
    self.mesh = mesh
    self.dtype = dtype
    self.compute_dtype = DTYPES[dtype]
    # What inputs are cast to: diffusers' ModelMixin.dtype, i.e. the dtype of the first parameter
    # outside the class's _keep_in_fp32_modules (float32 when every parameter is kept in float32).
    self.input_dtype = DTYPES[input_dtype or dtype]
    self.name = name
    self.params = params
    self.buffers = buffers
    self.tiling: dict[str, Any] | None = None
    self.trace_counts: Counter[str] = Counter()
    self._env = torchax.default_env()
    backend.install_op_overrides(self._env)
    self._jittable = interop.JittableModule(module, dedup_parameters=False)
    self.conv3d_form = conv_lib.conv3d_form()  # fixed for this runner's programs (and in their key)
    self._sink = transposes_lib.enabled()
    if mesh is not None:
      _sharding_hooks(module, mesh)
    import diffusers

    from . import _torchax_compat

    model_file = sys.modules[type(module).__module__]
    self.programs = executables.Programs(
      {
        "torch": torch.__version__,
        "torchax": torchax.__version__,
        "diffusers": diffusers.__version__,
        "source": executables.source_digest(
          sys.modules[__name__], backend, _torchax_compat, conv_lib, norm_lib, resize_lib, transposes_lib, kinds,
          model_file,
        ),
        "conv3d": self.conv3d_form,
        "sink_transposes": self._sink,
        "name": name,
        "model": class_name,
        "config": json.dumps(self.raw_config, sort_keys=True, default=str),
        "dtype": dtype,
        "mesh": mesh_lib.describe(mesh),
      },
      executables.ExecutableStore(executable_dir),
      devices=list(mesh.devices.flat) if mesh is not None else [jax.devices()[0]],
    )
    self._jitted: dict[_Label, Callable] = {}
    self.has_encode = callable(getattr(module, "encode", None))
    self.has_decode = callable(getattr(module, "decode", None))

  def __repr__(self) -> str:
    return f"GenericRunner({self.class_name} via {self.name}, {self.dtype}, mesh={mesh_lib.describe(self.mesh)})"

  # --- programs ----------------------------------------------------------------------------

  def _label(self, kind: str, static: dict[str, Any]) -> _Label:
    state = json.dumps(module_state(self.module), sort_keys=True, default=str)
    return _Label(kind, tuple(sorted(static.items())), hashlib.sha256(state.encode()).hexdigest()[:16])

  def _program(self, label: _Label) -> Callable:
    """The jitted program of one call kind and static keywords (tensor keywords are its arguments)."""
    if label in self._jitted:
      return self._jitted[label]
    call, static = _CALLS[label.kind], dict(label.static)
    constrain = self._constrain

    def traced(params, buffers, x, tensor_kwargs):
      self.trace_counts[label.kind] += 1
      params = {k: backend._torch_layout(v) for k, v in params.items()}  # kernels back to PyTorch's layout
      params_t, buffers_t, x_t, kw_t = self._env.j2t_iso((params, buffers, constrain(x), tensor_kwargs))
      with self._env, torch.no_grad(), conv_lib.using_form(self.conv3d_form), backend.tracking_resizes():
        out = self._jittable.functional_call(lambda m, x_, kw: call(m, x_, {**kw, **static}), params_t, buffers_t, x_t, kw_t)
      return {k: constrain(v) for k, v in self._env.t2j_iso(out).items()}

    # channels-last between convolutions, as the adapters' steps (core.transposes)
    program = transposes_lib.sink_transposes(traced) if self._sink else traced
    program.__name__ = f"{self.name}_{label.kind}_{self.class_name}"
    self._jitted[label] = jax.jit(program)
    return self._jitted[label]

  def _constrain(self, x: jax.Array) -> jax.Array:
    if self.mesh is None or not hasattr(x, "ndim") or x.ndim == 0:
      return x
    # Inside jit GSPMD pads an axis the mesh does not divide, so an uneven batch or width still splits.
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, _spec(self.mesh, x.ndim)))

  def _split_kwargs(self, kwargs: Mapping[str, Any]) -> tuple[dict[str, jax.Array], dict[str, Any]]:
    """Tensor keywords (LTX's ``temb``) become program arguments; the rest (``num_frames``) are static."""
    tensors, static = {}, {}
    for key, value in kwargs.items():
      if isinstance(value, jax.Array | np.ndarray) or kinds.is_torch_tensor(value):
        tensors[key] = kinds.to_jax(value, key)[0]
      elif isinstance(value, bool | int | float | str | type(None)) or isinstance(value, numbers.Number):
        static[key] = value
      else:
        raise TypeError(f"{key}: expected a tensor or a plain value (int, float, bool, str), got {type(value).__name__}")
    return tensors, static

  def _place(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.input_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    if self.mesh is None:
      return x
    sharding = NamedSharding(self.mesh, _spec(self.mesh, x.ndim))
    return mesh_lib.put(x, sharding if kinds.divides(x.shape, sharding) else mesh_lib.replicated(self.mesh))

  def _compiled(self, kind: str, x: jax.Array, kwargs: Mapping[str, Any], obtain: Callable) -> tuple[Any, tuple]:
    """``(obtain(label, jitted, args), args)``: the program of this call, from memory, the store or a
    compile; an input the class cannot take, found while tracing, is an :class:`InputError`."""
    tensors, static = self._split_kwargs(kwargs)
    label = self._label(kind, static)
    args = (self.params, self.buffers, self._place(x), {k: self._place(v) for k, v in tensors.items()})
    try:
      return obtain(str(label), self._program(label), args), args
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as err:
      error = self._input_error(kind, x, static, err)
      if error is err:
        raise
      raise error from err

  def _run(self, kind: str, x: jax.Array, kwargs: Mapping[str, Any]) -> dict[str, jax.Array]:
    compiled, args = self._compiled(kind, x, kwargs, self.programs.get)
    return compiled(*args)

  def _input_error(self, kind: str, x: jax.Array, static: dict[str, Any], err: Exception) -> Exception:
    """diffusers (or torch) refused the input while it was traced: say so, with what the config expects."""
    if isinstance(err, InputError | BridgeError) or type(err).__name__ in ("OperatorNotFound", "NotImplementedError"):
      return err
    said = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, _TRACER_ERRORS):  # not the input's fault: Python that needs concrete values
      return BridgeError(
        f"{self.class_name}.{kind} cannot be traced through torchax as diffusers wrote it: it needs a "
        f"concrete value where the program has a traced one ({type(err).__name__}: {said})"
      )
    expects = {
      k: self.raw_config[k]
      for k in (("latent_channels", "z_dim", "decoder_input_channels") if kind == DECODE else ("in_channels", "audio_channels"))
      if k in self.raw_config
    }
    hint = f"; its config: {', '.join(f'{k}={v}' for k, v in expects.items())}" if expects else ""
    call = f"{self.class_name}.{kind}({'z' if kind == DECODE else 'x'}{''.join(f', {k}={v!r}' for k, v in static.items())})"
    return InputError(
      f"{'z' if kind == DECODE else 'x'}: shape {tuple(x.shape)} {x.dtype} does not fit {call}{hint}: "
      f"tracing it raised {type(err).__name__}: {said}"
    )

  # --- public API ----------------------------------------------------------------------------

  def _validate(self, value: Any, name: str, check_finite: bool) -> tuple[jax.Array, str]:
    array, kind = kinds.to_jax(value, name)
    if array.ndim < 2:
      raise InputError(f"{name}: expected a batch of {self.class_name} inputs (B, C, ...), got shape {tuple(array.shape)}")
    if 0 in array.shape:
      raise InputError(f"{name}: expected non-empty dims, got shape {tuple(array.shape)}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
      raise TypeError(f"{name}: expected a floating dtype (float32, bfloat16, float16), got {array.dtype}")
    if check_finite:
      kinds.check_finite(array, name)
    return array, kind

  def decode(self, z: Any, *, check_finite: bool = True, progress: ProgressArg = None, **kwargs: Any) -> Any:
    """``vae.decode(z, **kwargs).sample`` of the diffusers module (its ``.sample``, or the tensor it
    returns). ``kwargs``: the class's own keywords (``num_frames=``, ``temb=``); the same kind comes out
    as went in (torch, numpy, ``jax.Array``), in the model's dtype."""
    if not self.has_decode:
      raise TypeError(f"{self.class_name} has no decode (diffusers' class defines none)")
    callback = progress_lib.callback(progress)
    array, kind = self._validate(z, "z", check_finite)
    out = self._run(DECODE, array, kwargs)[SAMPLE]
    if callback is not None:  # one program: done when it is
      jax.block_until_ready(out)
      callback(1, 1)
    return kinds.from_jax(out, kind)

  def encode(self, x: Any, key: jax.Array | None = None, *, check_finite: bool = True, **kwargs: Any) -> Any:
    """``latent_dist.mode()`` of a posterior (KL models), or the latent a deterministic encoder returns.
    With a JAX PRNG ``key``: ``mode + std * N(0, 1)``, diffusers' ``latent_dist.sample()`` with JAX noise."""
    out, kind = self._encode(x, check_finite, kwargs)
    latent = out[LATENT]
    if key is not None:
      if STD not in out:
        raise ValueError(f"key: {self.class_name}.encode returns a latent, not a posterior to sample from")
      if not isinstance(key, jax.Array | np.ndarray):
        raise TypeError(f"key: expected a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__}")
      latent = _sample(latent, out[STD], key)
    return kinds.from_jax(latent, kind)

  def encode_moments(self, x: Any, *, check_finite: bool = True, **kwargs: Any) -> Any:
    """The posterior's ``parameters`` (diffusers: mean ‖ logvar on channels) for a sampler of the
    caller's own; a class whose encode returns a latent has none."""
    out, kind = self._encode(x, check_finite, kwargs)
    if PARAMETERS not in out:
      raise ValueError(f"{self.class_name}.encode returns no posterior parameters")
    return kinds.from_jax(out[PARAMETERS], kind)

  def encode_output(self, x: Any, *, check_finite: bool = True, **kwargs: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``(tensors, made_of)``: the encode program's tensors (``latent``, ``std``, ``parameters``) in
    ``x``'s kind, and ``(output class, field, distribution class or "")`` of diffusers' encode output."""
    out, kind = self._encode(x, check_finite, kwargs)
    marker = next(k for k in out if k.startswith(OUTPUT + "|"))
    tensors = {k: kinds.from_jax(v, kind) for k, v in out.items() if k != marker}
    return tensors, tuple(marker.split("|")[1:])

  def _encode(self, x: Any, check_finite: bool, kwargs: Mapping[str, Any]) -> tuple[dict[str, jax.Array], str]:
    if not self.has_encode:
      raise TypeError(f"{self.class_name} has no encode (diffusers' class defines none)")
    array, kind = self._validate(x, "x", check_finite)
    return self._run(ENCODE, array, kwargs), kind

  def enable_tiling(self, *args: Any, **kwargs: Any) -> None:
    """diffusers' ``enable_tiling`` of the module, its own arguments and defaults."""
    if not hasattr(self.module, "enable_tiling"):
      raise TypeError(f"{self.class_name} has no enable_tiling")
    self.module.enable_tiling(*args, **kwargs)
    self.tiling = dict(kwargs, **{f"arg{i}": a for i, a in enumerate(args)})

  def disable_tiling(self) -> None:
    if hasattr(self.module, "disable_tiling"):
      self.module.disable_tiling()
    self.tiling = None

  def precompile(self, input_shapes: Any, *, encode: bool = False, **kwargs: Any) -> list[Precompiled]:
    """Builds or loads the decode program of each latent shape (and, ``encode=True``, the encode
    program of the output it decodes to), without running them. Returns one record per program."""
    single = len(input_shapes) > 0 and isinstance(input_shapes[0], numbers.Integral)
    shapes = [tuple(input_shapes)] if single else [tuple(s) for s in input_shapes]
    if not shapes:
      raise ValueError("precompile: expected one or more latent shapes, got none")
    records = []
    for shape in shapes:
      z = jax.ShapeDtypeStruct(shape, self.input_dtype)
      record, out_info = self._precompile(DECODE, z, kwargs)
      records.append(record)
      if encode:
        sample = out_info[SAMPLE]
        records.append(self._precompile(ENCODE, jax.ShapeDtypeStruct(sample.shape, sample.dtype), {})[0])
    return records

  def _precompile(self, kind: str, spec: jax.ShapeDtypeStruct, kwargs: Mapping[str, Any]) -> tuple[Precompiled, Any]:
    # Placed zeros, as a call places its input: the program's key holds the inputs' shardings, so a
    # later decode of that shape finds exactly this program (abstract inputs would key another one).
    obtain = functools.partial(obtain_recorded, self.programs, kind=kind, name=WHOLE)
    record, _ = self._compiled(kind, jnp.zeros(spec.shape, spec.dtype), kwargs, obtain)
    executable = record.executable
    return record, jax.tree.unflatten(executable.out_tree, jax.tree.leaves(executable.out_info))

  def as_diffusers(self, *, device: Any = "cpu") -> Any:
    """This model as the ``vae`` of a diffusers pipeline (see :mod:`torchax_vae.diffusers_vae`)."""
    from .diffusers_vae import DiffusersVAE

    return DiffusersVAE(self, device=device)


@jax.jit
def _sample(mode: jax.Array, std: jax.Array, key: jax.Array) -> jax.Array:
  noise = jax.random.normal(key, mode.shape, dtype=jnp.float32).astype(mode.dtype)
  return mode + std * noise


# --- load ------------------------------------------------------------------------------------


def load_generic(directory: Path, *, dtype: str, mesh: Mesh | None, cache_dir: Path | None) -> GenericRunner:
  """A :class:`GenericRunner` of the checkpoint in ``directory`` (resolved; config read by diffusers)."""
  raw = read_raw_config(directory)
  source = str(directory / "config.json")
  class_name = raw.get("_class_name")
  if not isinstance(class_name, str):
    raise CheckpointError(f"{source}: no _class_name; diffusers writes it (which autoencoder class is this?)")
  cls = model_class(class_name, source)
  try:
    config = cls.load_config(str(directory))
  except (OSError, ValueError, TypeError) as err:
    raise CheckpointError(f"{source}: diffusers could not read it as a {class_name} config: {err}") from err
  try:
    module = build_module(cls, config)
  except (TypeError, ValueError, AssertionError, RuntimeError, KeyError, IndexError) as err:
    raise CheckpointError(f"{source}: diffusers could not build {class_name} from it: {type(err).__name__}: {err}") from err
  weights = read_weights(weight_files(directory))
  state = module.state_dict()
  persistent = {name for name, _ in module.named_buffers() if name in state}
  integer_buffers = frozenset(k for k in persistent if not state[k].is_floating_point())
  check_weights(weights, {k: tuple(v.shape) for k, v in state.items()}, str(directory), non_float=integer_buffers)
  params = _place_params(cls, {k: v for k, v in weights.items() if k not in persistent}, dtype, mesh)
  buffers = _place_buffers(module, {k: weights[k] for k in persistent}, dtype, mesh)
  return GenericRunner(
    module, params, buffers, class_name=class_name, raw_config=dict(config), mesh=mesh, dtype=dtype,
    executable_dir=executable_dir(cache_dir), input_dtype=_model_dtype(module, params, dtype),
  )  # fmt: skip


def _model_dtype(module: torch.nn.Module, params: dict[str, jax.Array], dtype: str) -> str:
  """diffusers' ``get_parameter_dtype``: the first floating parameter outside ``_keep_in_fp32_modules``,
  else the last parameter's dtype (a class that keeps every module in float32 takes float32 inputs)."""
  keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
  last = dtype
  for name, _ in module.named_parameters():
    if name not in params:
      continue
    last = "float32" if params[name].dtype == jnp.float32 else dtype
    if not any(m in name for m in keep) and jnp.issubdtype(params[name].dtype, jnp.floating):
      return last
  return last


def _kept_in_fp32(cls: type, names, dtype: str) -> set[str]:
  """The names (parameters, buffers) of the class's ``_keep_in_fp32_modules``, which diffusers'
  ``from_pretrained(torch_dtype=...)`` keeps in float32 (its rule: a module name among the dotted parts)."""
  keep = tuple(getattr(cls, "_keep_in_fp32_modules", None) or ())
  return {k for k in names if dtype != "float32" and any(m in k.split(".") for m in keep)}


def _place_params(cls: type, weights: dict[str, np.ndarray], dtype: str, mesh) -> dict[str, jax.Array]:
  """The parameters in ``dtype``, except those :func:`_kept_in_fp32`."""
  fp32 = _kept_in_fp32(cls, weights, dtype)
  params = adapter_steps.place_weights({k: v for k, v in weights.items() if k not in fp32}, dtype, mesh)
  params.update(adapter_steps.place_weights({k: weights[k] for k in fp32}, "float32", mesh))
  return params


def _place_buffers(module: torch.nn.Module, persistent: dict[str, np.ndarray], dtype: str, mesh) -> dict[str, jax.Array]:
  """Buffers as JAX arrays, replicated: persistent ones from the checkpoint, the others as ``__init__``
  made them. Floating buffers take the model's dtype, as ``module.to(dtype)`` would cast them (float32
  in the modules the class keeps in float32)."""
  sharding = mesh_lib.replicated(mesh)
  names = [name for name, _ in module.named_buffers()]
  fp32 = _kept_in_fp32(type(module), names, dtype)
  out = {}
  for name, buffer in module.named_buffers():
    value = persistent[name] if name in persistent else _numpy(buffer)
    if np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16":
      value = np.asarray(value).astype(DTYPES["float32" if name in fp32 else dtype])
    out[name] = mesh_lib.put(value, sharding)
  return out


def _numpy(tensor: torch.Tensor) -> np.ndarray:
  tensor = tensor.detach().cpu()
  return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


__all__ = ["GenericRunner", "InputError", "autoencoder_classes", "load_generic", "model_class"]
