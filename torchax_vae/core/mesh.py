"""``"dp=2,tp=4"`` -> ``jax.sharding.Mesh``, and the activation shardings the runner places.

Batch is split on ``dp``, width on ``tp``; weights are replicated; time is never split (the causal
conv cache makes time sequential, so splitting it buys nothing and costs transfers).
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
  grid = np.asarray(devices[:needed], dtype=object).reshape(tuple(sizes[n] for n in names))
  return Mesh(grid, names)


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
