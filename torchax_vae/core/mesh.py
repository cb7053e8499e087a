"""``"dp=2,tp=4"`` -> ``jax.sharding.Mesh``, and the activation shardings the runner places.

Batch is split on ``dp``, width on ``tp``; weights are replicated; time is never split (the causal
conv cache makes time sequential, so splitting it buys nothing and costs transfers).

Multi-controller JAX (``jax.distributed.initialize``, one process per host): ``jax.devices()`` lists
every process's devices, so the mesh spans all of them; :func:`make_mesh` takes the same number of
devices from each process, process-major, so the first axis written (``dp`` in ``"dp=2,tp=4"``) is
the one split across processes. :func:`put` places host data that every process holds in full (the
same latents file, the same weights) on such a mesh without a cross-process transfer.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "dp"
WIDTH_AXIS = "tp"
KNOWN_AXES = (BATCH_AXIS, WIDTH_AXIS)

# Where batch and width sit in each activation layout a backend may use.
_LAYOUT_AXES = {
  "BCTHW": {"batch": 0, "width": 4},  # diffusers / torchax
  "BTHWC": {"batch": 0, "width": 3},  # native_flax, channels-last
}


class MeshError(ValueError):
  """A mesh that is malformed or does not fit the devices."""


def parse_mesh_spec(spec: str) -> dict[str, int]:
  """``"dp=2,tp=4"`` -> ``{"dp": 2, "tp": 4}``; raises :class:`MeshError` naming what was expected."""
  sizes: dict[str, int] = {}
  for part in spec.replace(" ", "").split(","):
    if not part:
      continue
    name, sep, size = part.partition("=")
    if not sep or not size.isdigit() or int(size) < 1:
      raise MeshError(f"mesh {spec!r}: expected comma-separated axis=size pairs such as 'dp=2,tp=4', got {part!r}")
    if name not in KNOWN_AXES:
      raise MeshError(f"mesh {spec!r}: unknown axis {name!r}; expected {' and/or '.join(KNOWN_AXES)}")
    if name in sizes:
      raise MeshError(f"mesh {spec!r}: axis {name!r} given twice")
    sizes[name] = int(size)
  if not sizes:
    raise MeshError(f"mesh {spec!r}: expected at least one axis such as 'dp=2,tp=4'")
  return sizes


def make_mesh(mesh: Mesh | str | None, devices: list | None = None) -> Mesh | None:
  """A ``Mesh`` from a spec string (``None`` stays ``None``: one device, no sharding)."""
  if mesh is None or isinstance(mesh, Mesh):
    if isinstance(mesh, Mesh) and not set(mesh.axis_names) & set(KNOWN_AXES):
      raise MeshError(f"mesh axes {mesh.axis_names}: expected an axis named {' or '.join(KNOWN_AXES)}")
    return mesh
  if not isinstance(mesh, str):
    raise MeshError(f"mesh: expected a jax.sharding.Mesh, a string such as 'dp=2,tp=4', or None; got {type(mesh).__name__}")
  sizes = parse_mesh_spec(mesh)
  devices = list(jax.devices() if devices is None else devices)
  needed = math.prod(sizes.values())
  if needed > len(devices):
    raise MeshError(
      f"mesh {mesh!r} needs {needed} devices, but {len(devices)} {devices[0].platform} device(s) are visible; "
      "on a CPU host, simulate more with XLA_FLAGS=--xla_force_host_platform_device_count=N set before jax is imported"
    )
  names = tuple(sizes)
  grid = np.asarray(_pick_devices(devices, needed, mesh), dtype=object).reshape(tuple(sizes[n] for n in names))
  return Mesh(grid, names)


def _pick_devices(devices: list, needed: int, spec: str) -> list:
  """The first ``needed`` devices; with several processes, ``needed / processes`` of each, process-major."""
  processes = sorted({d.process_index for d in devices})
  if len(processes) == 1:
    return devices[:needed]
  if needed % len(processes):
    raise MeshError(
      f"mesh {spec!r} needs {needed} devices; under multi-controller JAX every one of the {len(processes)} "
      f"processes must contribute the same number, so the mesh size must be a multiple of {len(processes)}"
    )
  per_process = needed // len(processes)
  picked = []
  for process in processes:
    local = [d for d in devices if d.process_index == process]
    if len(local) < per_process:
      raise MeshError(f"mesh {spec!r} needs {per_process} devices in each process; process {process} has {len(local)}")
    picked += local[:per_process]
  return picked


def put(value, sharding):
  """``jax.device_put(value, sharding)`` that also works when ``sharding`` spans several processes.

  There, host data (numpy, or an array on this process's devices) is taken to be the whole global
  value, identical on every process — each process fills its own shards from it, with no
  communication (``jax.device_put`` would compare the value across processes first).
  """
  if sharding is None or sharding.is_fully_addressable:
    return jax.device_put(value, sharding)
  if isinstance(value, jax.Array) and not value.is_fully_addressable:  # already global: a reshard
    return jax.device_put(value, sharding)
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def activation_spec(mesh: Mesh | None, layout: str) -> PartitionSpec:
  """Batch on ``dp``, width on ``tp``, everything else (time, height, channels) unsplit."""
  axes = _LAYOUT_AXES[layout]
  spec: list[str | None] = [None] * 5
  if mesh is not None:
    if BATCH_AXIS in mesh.axis_names:
      spec[axes["batch"]] = BATCH_AXIS
    if WIDTH_AXIS in mesh.axis_names:
      spec[axes["width"]] = WIDTH_AXIS
  return PartitionSpec(*spec)


def activation_sharding(mesh: Mesh | None, layout: str) -> NamedSharding | None:
  return None if mesh is None else NamedSharding(mesh, activation_spec(mesh, layout))


def replicated(mesh: Mesh | None) -> NamedSharding | None:
  return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def describe(mesh: Mesh | None) -> str:
  if mesh is None:
    return "single device"
  return ",".join(f"{n}={s}" for n, s in mesh.shape.items())
