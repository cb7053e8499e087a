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
the adapters' steps, keyed by class, config, dtype, mesh, the package versions and the source files.

This file imports neither torch, torchax nor diffusers: what a start needs of the module (its config,
state-dict shapes, non-persistent buffers, plain attributes' digest) is stored beside the programs the
first time the module is built (a manifest, :func:`torchax_vae.tracing.generic_module.describe`), and the module
(:mod:`torchax_vae.tracing.generic_module`) is built only when a program must be traced or ``runner.module`` is
asked for. A warm start whose programs are all in the store runs no PyTorch code, as the adapters'.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import inspect
import json
import numbers
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from ..core import executables, kinds
from ..core import mesh as mesh_lib
from ..core import transposes as transposes_lib
from ..core import progress as progress_lib
from ..core import target as target_lib
from ..core.checkpoint import ResolvedCheckpoint, check_weights, read_weights, weight_files
from ..core.compile_cache import executable_dir
from ..core.driver import DTYPES, Precompiled, obtain_recorded
from ..core.errors import BridgeError, CheckpointError, InputError
from ..core.progress import ProgressArg
from ..core.target import Target
from . import weights as weights_lib  # looked up at call time: compare.worker places them abstract
from .contract import DECODE, ENCODE, LATENT, OUTPUT, PARAMETERS, SAMPLE, STD, spec_for
from .fingerprint import diffusers_class_file, generic_fingerprint

WHOLE = "whole"  # the one program of a call (Precompiled.name; the adapters' are "first" / "steady")


# JAX's errors for Python that reads a traced value (``.item()``, ``bool(tensor)``, a data-dependent
# shape): the module's code, not the input, is what a traced program cannot run.
_TRACER_ERRORS = tuple(
  getattr(jax.errors, name)
  for name in ("ConcretizationTypeError", "TracerBoolConversionError", "TracerIntegerConversionError",
               "TracerArrayConversionError", "NonConcreteBooleanIndexError", "UnexpectedTracerError")
  if hasattr(jax.errors, name)
)  # fmt: skip


class FrozenConfig(dict):
  """The module's config as diffusers' ``FrozenDict`` gives it (items and attributes, read-only),
  without importing diffusers; JSON's lists stand where diffusers may hold tuples."""

  def __getattr__(self, name: str) -> Any:
    try:
      return self[name]
    except KeyError:
      raise AttributeError(f"the config has no {name!r}") from None

  def _frozen(self, *args: Any, **kwargs: Any):
    raise TypeError("a model's config is frozen (diffusers' FrozenDict): build a new model to change it")

  __setitem__ = __delitem__ = __setattr__ = update = pop = popitem = setdefault = clear = _frozen


def manifest_key(class_name: str, raw_config: Mapping[str, Any], fp: Mapping[str, Any]) -> str:
  """The key of a class's manifest: the class, the checkpoint's config and the fingerprint."""
  text = json.dumps({"class": class_name, "config": raw_config, "fingerprint": fp}, sort_keys=True, default=str)
  return "generic-" + hashlib.sha256(text.encode()).hexdigest()[:32]


class _ModuleSide:
  """A generic runner's diffusers module made ready to trace (``generic_module.Traced``), built —
  torch, torchax and diffusers imported — on first use, once (two threads tracing build one)."""

  def __init__(self, class_name: str, source: ResolvedCheckpoint, mesh: Mesh | None):
    self.class_name = class_name
    self.source = source
    self.mesh = mesh
    self._lock = threading.Lock()
    self._traced = None

  @property
  def built(self) -> bool:
    return self._traced is not None

  def model_class(self) -> type:
    """diffusers' class (:class:`UnsupportedModelError` for one diffusers does not export)."""
    from ..tracing import generic_module

    return generic_module.model_class(self.class_name, str(self.source.config_path))

  def get(self):
    with self._lock:
      if self._traced is None:
        from ..tracing import generic_module

        cls = self.model_class()
        try:  # the config load() read: diffusers' load_config of a local dir is that file's JSON
          module = generic_module.build_module(cls, self.source.raw_config)
        except (TypeError, ValueError, AssertionError, RuntimeError, KeyError, IndexError) as err:
          raise CheckpointError(
            f"{self.source.config_path}: diffusers could not build {self.class_name} from it: "
            f"{type(err).__name__}: {err}"
          ) from err
        self._traced = generic_module.Traced(module, self.mesh)
      return self._traced


@dataclasses.dataclass(frozen=True)
class _Label:
  """What, besides the inputs' signature, a program depends on: kind, static keywords, module state."""

  kind: str
  static: tuple  # sorted (name, value) of the non-tensor keywords
  state: str  # digest of the module's plain attributes (generic_module.module_state)

  def __str__(self) -> str:
    return f"{self.kind}|{self.static}|{self.state}"


class GenericRunner:
  """``decode``/``encode`` of an unmodified diffusers autoencoder, one program per call signature.

  The same interface as the adapters' runner (``decode``, ``encode``, ``encode_moments`` where there is
  a posterior, ``precompile``, ``enable_tiling``, ``as_diffusers``, ``trace_counts``, ``programs``).
  ``module`` is the diffusers module (meta parameters), built on first access: its attributes may be
  set as in diffusers (``vae.module.use_framewise_decoding = True``); programs are keyed by them.
  """

  generic = True

  def __init__(
    self,
    side: _ModuleSide,
    manifest: Mapping[str, Any],
    params: dict[str, jax.Array],
    buffers: dict[str, jax.Array],
    *,
    class_name: str,
    raw_config: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    mesh: Mesh | None,
    dtype: str,
    name: str = "torchax",
    executable_dir: Path | None = None,
    input_dtype: str | None = None,
    target: Target | None = None,
  ):
    self._side = side
    self.target = target
    self.class_name = class_name
    self.raw_config = dict(raw_config)
    self.config = FrozenConfig(manifest["config"])  # the module's config: diffusers' defaults filled in
    self.mesh = mesh
    self.dtype = dtype
    self.compute_dtype = DTYPES[dtype]
    # What inputs are cast to: diffusers' ModelMixin.dtype, i.e. the dtype of the first parameter
    # outside the class's _keep_in_fp32_modules (float32 when every parameter is kept in float32).
    self.input_dtype = DTYPES[input_dtype or dtype]
    self.name = name
    self.devices = target_lib.program_devices(mesh, target)
    if target is not None:  # nothing can be placed on a compile-only chip: weights and buffers are shapes
      params, buffers = target_lib.as_shapes((params, buffers), self._placement(None))
    self.params = params
    self.buffers = buffers
    self.tiling: dict[str, Any] | None = None
    self.trace_counts: Counter[str] = Counter()
    self.conv3d_form = fingerprint["conv3d"]  # fixed for this runner's programs (and in their key)
    self._sink = fingerprint["sink_transposes"]
    self._fresh_state = manifest["state_digest"]  # the module's plain attributes as built
    self.programs = executables.Programs(
      {
        **fingerprint,
        "name": name,
        "model": class_name,
        "config": json.dumps(self.raw_config, sort_keys=True, default=str),
        "dtype": dtype,
        "mesh": mesh_lib.describe(mesh),
      },
      executables.ExecutableStore(executable_dir),
      devices=self.devices,
      target=target,
    )
    self._jitted: dict[_Label, Callable] = {}
    self.has_encode = manifest["has_encode"]
    self.has_decode = manifest["has_decode"]

  @property
  def module(self):
    """diffusers' module (parameters on the meta device); building it imports torch and diffusers."""
    return self._side.get().module

  def __repr__(self) -> str:
    return f"GenericRunner({self.class_name} via {self.name}, {self.dtype}, mesh={mesh_lib.describe(self.mesh)})"

  # --- programs ----------------------------------------------------------------------------

  def _label(self, kind: str, static: dict[str, Any]) -> _Label:
    # An unbuilt module is as diffusers built it, whose state the manifest holds; a built one may
    # have been changed (enable_tiling, an attribute set), so it is read.
    if self._side.built:
      from ..tracing.generic_module import state_digest

      state = state_digest(self._side.get().module)
    else:
      state = self._fresh_state
    return _Label(kind, tuple(sorted(static.items())), state)

  def _program(self, label: _Label) -> Callable:
    """The jitted program of one call kind and static keywords (tensor keywords are its arguments)."""
    if label in self._jitted:
      return self._jitted[label]
    static = dict(label.static)
    constrain = self._constrain

    def traced(params, buffers, x, tensor_kwargs):
      self.trace_counts[label.kind] += 1
      run = self._side.get().call(label.kind, static, self.conv3d_form)  # builds the module if need be
      return {k: constrain(v) for k, v in run(params, buffers, constrain(x), tensor_kwargs).items()}

    # channels-last between convolutions, as the adapters' steps (core.transposes)
    program = transposes_lib.sink_transposes(traced) if self._sink else traced
    program.__name__ = f"{self.name}_{label.kind}_{self.class_name}"
    self._jitted[label] = jax.jit(program)
    return self._jitted[label]

  def _constrain(self, x: jax.Array) -> jax.Array:
    if self.mesh is None or not hasattr(x, "ndim") or x.ndim == 0:
      return x
    # Inside jit GSPMD pads an axis the mesh does not divide, so an uneven batch or width still splits.
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec_for(self.mesh, x.ndim)))

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

  def _place(self, x: jax.Array | jax.ShapeDtypeStruct) -> jax.Array | jax.ShapeDtypeStruct:
    """An input cast to the model's input dtype and placed on the mesh; a shape (precompile) as the
    same, abstractly."""
    dtype = self.input_dtype if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape, dtype, sharding=self._placement(x.shape))
    x = x.astype(dtype)
    return x if self.mesh is None else mesh_lib.put(x, self._placement(x.shape))

  def _placement(self, shape: tuple[int, ...] | None) -> Any:
    """Where :meth:`_place` puts an input of ``shape``: split (batch on dp, width on tp) where the
    mesh divides it, else replicated (``None``: replicated, the weights); one device: that device."""
    if self.mesh is None:
      return jax.sharding.SingleDeviceSharding(self.devices[0])
    if shape is not None:
      sharding = NamedSharding(self.mesh, spec_for(self.mesh, len(shape)))
      if kinds.divides(shape, sharding):
        return sharding
    return mesh_lib.replicated(self.mesh)


  def _compiled(self, kind: str, x: jax.Array, kwargs: Mapping[str, Any], obtain: Callable) -> tuple[Any, tuple]:
    """``(obtain(label, jitted, args), args)``: the program of this call, from memory, the store or a
    compile; an input the class cannot take, found while tracing, is an :class:`InputError`."""
    tensors, static = self._split_kwargs(kwargs)
    if isinstance(x, jax.ShapeDtypeStruct):  # precompile: tensor keywords as shapes too
      tensors = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in tensors.items()}
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
    target_lib.check_runnable(self.target, "precompile(input_shapes)")
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
    # The input as a shape placed as a call places its input (:meth:`_place`): the program's key holds
    # the inputs' shardings, so a later decode of that shape finds exactly this program; no array is
    # made, so a compile-only target (core.target) can be compiled for.
    obtain = functools.partial(obtain_recorded, self.programs, kind=kind, name=WHOLE)
    record, _ = self._compiled(kind, spec, kwargs, obtain)
    executable = record.executable
    return record, jax.tree.unflatten(executable.out_tree, jax.tree.leaves(executable.out_info))

  def as_diffusers(self, *, device: Any = "cpu") -> Any:
    """This model as the ``vae`` of a diffusers pipeline (see :mod:`torchax_vae.tracing.diffusers_vae`)."""
    from ..tracing.diffusers_vae import DiffusersVAE

    return DiffusersVAE(self, device=device)


@jax.jit
def _sample(mode: jax.Array, std: jax.Array, key: jax.Array) -> jax.Array:
  noise = jax.random.normal(key, mode.shape, dtype=jnp.float32).astype(mode.dtype)
  return mode + std * noise


# --- load ------------------------------------------------------------------------------------


def load_generic(
  source: ResolvedCheckpoint, *, dtype: str, mesh: Mesh | None, cache_dir: Path | None, target: Target | None = None
) -> GenericRunner:
  """A :class:`GenericRunner` of a resolved checkpoint (its ``config.json`` read once, by ``load``).

  The weights are checked against the module's state dict: from the store's manifest when one is
  there (nothing of torch imported, no module built), else from the module, built here, and the
  manifest stored for the next start once the weights fit it.
  """
  directory, raw, class_name = source.directory, source.raw_config, source.class_name
  if class_name is None:
    raise CheckpointError(
      f"{source.config_path}: no _class_name; diffusers writes it (which autoencoder class is this?)"
    )
  side = _ModuleSide(class_name, source, mesh)
  # The diffusers file that defines the class, found by reading, not importing; a class defined
  # elsewhere (or none: diffusers refuses it, naming what it exports) is asked of diffusers.
  model_file = diffusers_class_file(class_name) or Path(inspect.getfile(side.model_class()))
  with target_lib.compiling_for(None if target is None else target.platform):  # the target's per-platform choices
    fp = generic_fingerprint(model_file)
  store = executables.ExecutableStore(executable_dir(cache_dir))
  key = manifest_key(class_name, raw, fp)
  manifest = store.load_manifest(key)
  fresh = manifest is None
  if fresh:
    from ..tracing.generic_module import describe

    manifest = describe(side.get().module)
  weights = read_weights(weight_files(directory))
  persistent = set(manifest["persistent_buffers"])
  shapes = {k: tuple(v) for k, v in manifest["state_shapes"].items()}
  check_weights(weights, shapes, str(directory), non_float=frozenset(manifest["integer_buffers"]))
  if fresh:  # checked first: a manifest is only ever written for weights that fit it
    store.save_manifest(key, {"class_name": class_name, **manifest})
  keep = tuple(manifest["keep_in_fp32"])
  abstract = target is not None  # the runner takes them as shapes on the target's chips
  params = _place_params(keep, {k: v for k, v in weights.items() if k not in persistent}, dtype, mesh, abstract)
  buffers = _place_buffers(keep, manifest["buffers"], {k: weights[k] for k in persistent}, dtype, mesh, abstract)
  return GenericRunner(
    side, manifest, params, buffers, class_name=class_name, raw_config=raw, fingerprint=fp, mesh=mesh,
    dtype=dtype, executable_dir=executable_dir(cache_dir),
    input_dtype=_model_dtype(manifest["parameter_order"], keep, params, dtype), target=target,
  )  # fmt: skip


def _model_dtype(parameter_order: list[str], keep: tuple[str, ...], params: dict[str, jax.Array], dtype: str) -> str:
  """diffusers' ``get_parameter_dtype``: the first floating parameter (in the module's order) outside
  ``_keep_in_fp32_modules``, else the last parameter's dtype (a class that keeps every module in
  float32 takes float32 inputs)."""
  last = dtype
  for name in parameter_order:
    if name not in params:
      continue
    last = "float32" if params[name].dtype == jnp.float32 else dtype
    if not any(m in name for m in keep) and jnp.issubdtype(params[name].dtype, jnp.floating):
      return last
  return last


def _kept_in_fp32(keep: tuple[str, ...], names, dtype: str) -> set[str]:
  """The names (parameters, buffers) of the class's ``_keep_in_fp32_modules`` (``keep``), which
  diffusers' ``from_pretrained(torch_dtype=...)`` keeps in float32 (its rule: a module name among the
  dotted parts)."""
  return {k for k in names if dtype != "float32" and any(m in k.split(".") for m in keep)}


def _place_params(
  keep: tuple[str, ...], weights: dict[str, np.ndarray], dtype: str, mesh, abstract: bool = False
) -> dict[str, jax.Array]:
  """The parameters in ``dtype``, except those :func:`_kept_in_fp32` (``abstract``: as shapes)."""
  fp32 = _kept_in_fp32(keep, weights, dtype)
  params = weights_lib.place_weights({k: v for k, v in weights.items() if k not in fp32}, dtype, mesh, abstract=abstract)
  params.update(weights_lib.place_weights({k: weights[k] for k in fp32}, "float32", mesh, abstract=abstract))
  return params


def _decode_array(encoded: Mapping[str, Any]) -> np.ndarray:
  """:func:`torchax_vae.tracing.generic_module.encode_array`'s inverse."""
  data = base64.b64decode(encoded["data"])
  return np.frombuffer(data, dtype=np.dtype(encoded["dtype"])).reshape(encoded["shape"]).copy()


def _place_buffers(
  keep: tuple[str, ...], made: Mapping[str, Any], persistent: dict[str, np.ndarray], dtype: str, mesh,
  abstract: bool = False,
) -> dict[str, jax.Array]:
  """Buffers as JAX arrays, replicated: persistent ones from the checkpoint, the others (``made``:
  the manifest's) as ``__init__`` made them. Floating buffers take the model's dtype, as
  ``module.to(dtype)`` would cast them (float32 in the modules the class keeps in float32)."""
  sharding = mesh_lib.replicated(mesh)
  values = {**{name: _decode_array(v) for name, v in made.items()}, **persistent}
  fp32 = _kept_in_fp32(keep, values, dtype)
  out = {}
  for name, value in values.items():
    if np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16":
      value = np.asarray(value).astype(DTYPES["float32" if name in fp32 else dtype])
    out[name] = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding) if abstract else mesh_lib.put(value, sharding)
  return out


__all__ = ["FrozenConfig", "GenericRunner", "InputError", "load_generic"]
