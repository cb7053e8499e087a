"""Compiling for a TPU without one: a topology's chips as the devices of a compile-only client.

Why this module exists: libtpu (the TPU compiler) runs on any x86 host. Given a topology name such as
``"v6e:2x4"``, ``jax.experimental.topologies.get_topology_desc`` gives that slice's chips as devices
no array can be placed on; programs lowered for them from ``jax.ShapeDtypeStruct`` inputs compile
with the real TPU compiler, and the compiled program's memory analysis (per chip) and cost analysis
(FLOPs, bytes, the compiler's own ``optimal_seconds`` estimate) say what it would need there. A
runner loaded with ``target=`` (``torchax_vae.load``, ``native_flax.load``) is such a compile-only
runner: weights and inputs are shapes, :meth:`precompile` compiles, nothing runs.

Keeping plain processes quiet. With ``libtpu`` importable, every ``jax.devices()`` on a host
without a TPU tries to start a TPU client and prints initialisation warnings. So set-up installs
the compiler outside the import path (``scripts/setup``: ``.venv/tpu-compiler``), and only
:func:`open_target` hands its path to JAX (``$TPU_LIBRARY_PATH``), after the process's own backends
are up, so the TPU plugin is loaded for the topology alone and never becomes a backend.

Per-platform choices (the 3D convolution form, padding unpadded convolutions on CPU) follow the
platform a program is compiled for, not the host's: :func:`compiling_for` sets it while a runner
builds and traces, :func:`current_platform` reads it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax

# Where scripts/setup installs libtpu (pip --target), beside the project's .venv, not importable.
COMPILER_DIR = "tpu-compiler"
LIBRARY_ENV = "TORCHAX_VAE_LIBTPU"  # a libtpu.so to use instead (e.g. a TPU VM's own)
_NAME = re.compile(r"^(v4|v5e|v5p|v6e):(\d+)x(\d+)(?:x(\d+))?$")


class TargetError(ValueError):
  """A target that cannot be compiled for: a malformed topology name, or no TPU compiler installed."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation's datasheet figures, per chip (not measured here: the vendor's numbers)."""

  generation: str  # "v6e"
  hbm_bytes: int
  peak_bf16_flops: float  # dense bf16 FLOP/s
  hbm_bytes_per_s: float
  source: str


GB = 10**9
CHIPS = {
  # Cloud TPU system-architecture pages, "Peak compute per chip (bf16)" and "HBM capacity and bandwidth".
  "v5e": Chip("v5e", 16 * GB, 197e12, 819e9, "https://cloud.google.com/tpu/docs/v5e"),
  "v6e": Chip("v6e", 32 * GB, 918e12, 1638e9, "https://cloud.google.com/tpu/docs/v6e"),
  "v5p": Chip("v5p", 95 * GB, 459e12, 2765e9, "https://cloud.google.com/tpu/docs/v5p"),
  "v4": Chip("v4", 32 * 2**30, 275e12, 1200e9, "https://cloud.google.com/tpu/docs/v4"),
}


@dataclasses.dataclass(frozen=True)
class Target:
  """A TPU topology's chips as compile-only devices."""

  name: str  # as given: "v6e:2x4"
  devices: tuple  # every chip of the topology (of every host), in the client's order
  chip: Chip

  @property
  def platform(self) -> str:
    return "tpu"

  @property
  def device_kind(self) -> str:
    return self.devices[0].device_kind  # e.g. "TPU v6 lite"

  @property
  def hosts(self) -> int:
    return len({d.process_index for d in self.devices})


def compiler_path() -> Path | None:
  """The TPU compiler's ``libtpu.so``: ``$TORCHAX_VAE_LIBTPU``, else set-up's copy beside the
  interpreter's environment (``<venv>/tpu-compiler``), else ``None``."""
  if os.environ.get(LIBRARY_ENV):
    return Path(os.environ[LIBRARY_ENV])
  path = Path(sys.prefix) / COMPILER_DIR / "libtpu" / "libtpu.so"
  return path if path.is_file() else None


def compiler_version() -> str | None:
  """The installed TPU compiler's version (libtpu's distribution beside the library), if known."""
  import importlib.metadata

  library = compiler_path()
  if library is None:
    return None
  for distribution in importlib.metadata.distributions(path=[str(library.parent.parent)]):
    if distribution.metadata["Name"] == "libtpu":
      return distribution.version
  return None


def parse_name(name: str) -> Chip:
  """``"v6e:2x4"`` -> its chip's figures; :class:`TargetError` naming what was expected."""
  match = _NAME.match(str(name).strip())
  if match is None:
    raise TargetError(
      f"target {name!r}: expected a TPU topology GENERATION:AxB[xC] with GENERATION one of {', '.join(CHIPS)}, "
      "e.g. v5e:2x2, v6e:2x4, v6e:4x4, v5p:2x2x1"
    )
  return CHIPS[match.group(1)]


def open_target(target: Target | str) -> Target:
  """The compile-only devices of a topology (``"v6e:2x4"``), opened once per process and name."""
  if isinstance(target, Target):
    return target
  return _open(str(target).strip())


@functools.cache
def _open(name: str) -> Target:
  chip = parse_name(name)
  bounds = [int(n) for n in _NAME.match(name).groups()[1:] if n is not None]
  # v5e and v6e slices of up to 8 chips are one host (v6e-8: 2x4 chips on one VM); larger ones have
  # 4 chips (2x2) per host, libtpu's default for these names.
  single_host = chip.generation in ("v5e", "v6e") and bounds[0] * bounds[1] <= 8
  options = {"chips_per_host_bounds": (bounds[0], bounds[1], 1)} if single_host else {}
  library = compiler_path()
  if library is None or not library.is_file():
    where = f"${LIBRARY_ENV}={library}" if library is not None else f"{Path(sys.prefix) / COMPILER_DIR}"
    raise TargetError(
      f"target {name!r}: the TPU compiler (libtpu) is not installed ({where} has no libtpu.so); "
      "scripts/setup installs the one pinned to this jax"
    )
  # This process's own backends first (CPU here; GPU on a GPU host), so that the TPU plugin, once
  # JAX can find it, is only ever a topology and never a backend that tries to reach a TPU.
  jax.devices()
  from jax.experimental import topologies

  # TPU_LIBRARY_PATH: where JAX finds the plugin. ALLOW_MULTIPLE_LIBTPU_LOAD: libtpu takes a host-wide
  # lock (/tmp/libtpu_lockfile) that guards a physical TPU; a compile-only topology touches none, and
  # without it a second process compiling for a target at the same time is refused.
  settings = {"TPU_LIBRARY_PATH": str(library), "ALLOW_MULTIPLE_LIBTPU_LOAD": "true"}
  previous = {key: os.environ.get(key) for key in settings}
  os.environ.update(settings)
  try:
    with _quiet_stderr():
      description = topologies.get_topology_desc(platform="tpu", topology_name=name, **options)
  except Exception as err:  # libtpu's refusal, with the name the user gave
    raise TargetError(f"target {name!r}: the TPU compiler refused the topology: {err}") from err
  finally:
    for key, value in previous.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
  return Target(name=name, devices=tuple(description.devices), chip=chip)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
  """libtpu's C++ start-up prints TPU-host warnings (no accelerator type, no worker hostnames) that
  do not apply to a compile-only topology: they go to /dev/null, not to the caller's stderr."""
  fd = 2  # the process's stderr, where C++ writes, whatever Python's sys.stderr is now
  sys.stderr.flush()
  saved = os.dup(fd)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), fd)
    yield
  finally:
    os.dup2(saved, fd)
    os.close(saved)


def program_devices(mesh: Any, target: Target | None) -> list:
  """The devices a runner's programs are built for, in mesh order: the mesh's, else one device (the
  target's first chip, or this host's first device)."""
  if mesh is not None:
    return list(mesh.devices.flat)
  return [target.devices[0] if target is not None else jax.devices()[0]]


def as_shapes(tree: Any, sharding: Any) -> Any:
  """Every leaf of ``tree`` (arrays or shapes) as a ``jax.ShapeDtypeStruct`` placed by ``sharding``: a
  target runner's weights, which nothing can be placed on."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def check_runnable(target: Target | None, builds: str) -> None:
  """A compile-only runner's ``decode``/``encode``: :class:`TargetError` saying what it does instead
  (``builds``: its precompile call). Nothing for a runner of this host's devices (``target=None``)."""
  if target is not None:
    raise TargetError(
      f"this runner compiles for the TPU topology {target.name} (compile-only, {target.device_kind}): "
      f"nothing can run on it; {builds} builds its programs"
    )


# --- the platform a program is compiled for ---------------------------------------------------

_platform: contextvars.ContextVar[str | None] = contextvars.ContextVar("compiling_for", default=None)


def current_platform() -> str:
  """The platform the program being built is for: inside :func:`compiling_for`, that one; else
  the host's default backend."""
  return _platform.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(platform: str | None) -> Iterator[None]:
  """Per-platform choices inside follow ``platform`` (``None``: the host's, unchanged)."""
  token = _platform.set(platform)
  try:
    yield
  finally:
    _platform.reset(token)


def device_platform(device: Any) -> str:
  """A device's platform (``"cpu"``, ``"gpu"``, ``"tpu"``); CUDA and ROCm devices are ``"gpu"``."""
  platform = device.platform
  return "gpu" if platform in ("cuda", "rocm") else platform
