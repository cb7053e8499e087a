"""Collective ops in the compiled decode-step programs of both paths, on a mesh.

    python -m compare.collectives --mesh dp=2,tp=4 [--latent 1,16,2,8,8] [--model NAME|DIR]
    python -m compare.collectives --model wan2.1 --latent 1,16,2,60,104 --paths torchax

prints one JSON object: ``{"torchax": {"all-gather": n, …}, "native_flax": {…}}``, counting each
kind of collective in the optimised HLO of the first-step and steady-step programs together (a path
that has no port of the model: ``{"unavailable": reason}``; a class without an adapter: the generic
path's one decode program, at a latent of its own rank, e.g. ``--latent 2,4,32,32`` for an image VAE). With
batch on ``dp`` and width on ``tp``, the convolutions need only halo exchanges
(``collective-permute``); an ``all-gather`` means some op lost the width split.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")
PATHS = ("torchax", "native_flax")


def count_collectives(hlo_text: str) -> dict[str, int]:
  """Counts collective instructions (async ``-start`` forms once, ``-done`` not at all)."""
  counts = {}
  for name in COLLECTIVES:
    pattern = rf"= [^=\n]*\b{re.escape(name)}(?:-start)?\("
    counts[name] = len(re.findall(pattern, hlo_text))
  return counts


def step_hlo(runner, latent_shape: tuple[int, ...]) -> list[str]:
  """Optimised HLO of the first-step and steady-step decode programs for ``latent_shape`` (B, C, T, H, W).

  T is ignored where the model streams: the steps take the frames the model's plan gives its first
  and second step (CogVideoX: 2 and 2 latent frames; Wan: 1 and ``runner.frames_per_step``). A model
  with one step per call (HunyuanVideo) gives every program a decode of ``latent_shape`` runs: its frame tiles' (a full tile
  and a shorter last one) or, for a T within one tile, the whole call's.
  """
  import jax
  import jax.numpy as jnp

  if runner.generic:  # a class without an adapter: its own decode, one program
    return [runner.precompile([latent_shape])[0].executable.as_text()]
  if len(latent_shape) != 5:
    raise ValueError(f"--latent {latent_shape}: {runner.adapter.class_name} takes five integers B,C,T,H,W")
  if len(runner.plan("decode", 64)) < 2:  # one step per call or frame tile (HunyuanVideo): no steady step
    return [record.executable.as_text() for record in runner.precompile([latent_shape])]
  first, steady = runner.step_programs("decode")
  b, c, _, h, w = latent_shape
  frames = 1 + (runner.frames_per_step or 0)  # Wan: a full steady step of the runner's K frames
  while len(plan := runner.plan("decode", frames)) < 2:  # the shortest latent with a steady step
    frames += 1
  specs = []
  for step in plan[:2]:
    z = runner._prepare(jnp.zeros((b, c, step.size, h, w), jnp.float32))
    specs.append(jax.ShapeDtypeStruct(z.shape, z.dtype, sharding=z.sharding))
  first_compiled = first.lower(runner.params, specs[0]).compile()
  cache = runner.steady_cache_spec(first_compiled)
  return [first_compiled.as_text(), steady.lower(runner.params, specs[1], cache).compile().as_text()]


def _simulate_cpu_devices(count: int) -> None:
  """Lets a CPU host simulate ``count`` devices for the mesh (XLA ignores the flag on TPU/GPU).

  XLA reads the flag when JAX's backends start, not when jax is imported (``main``'s mesh parser
  imports it), so it is set unless the backends already run or the caller chose a count.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" in flags or _backends_started():
    return
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def _backends_started() -> bool:
  """Whether JAX's backends have started; private API (no public way to ask), so a jax that moved it
  gets a warning and the answer "no" (the flag is then set, which a started backend ignores)."""
  try:
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError) as err:
    import warnings

    warnings.warn(f"cannot tell whether JAX's backends have started ({err}); setting the device count anyway", stacklevel=3)
    return False


def _without_adapter(model: str, presets) -> bool:
  """Whether ``model`` (a preset, hub id or directory) is a class the generic path runs (any rank)."""
  from torchax_vae.core.checkpoint import CheckpointError, resolve_checkpoint_dir
  from torchax_vae.core.loading import generic_class_name

  if model in presets:
    return False
  try:
    return generic_class_name(resolve_checkpoint_dir(model)) is not None
  except CheckpointError:
    return False


def load_path(path: str, model, mesh: str):
  if path == "torchax":
    import torchax_vae

    return torchax_vae.load(model, mesh=mesh, cache_dir=False)
  import native_flax

  return native_flax.load(model, mesh=mesh, cache_dir=False)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--mesh", default="dp=2,tp=4", help="mesh spec (default: %(default)s)")
  parser.add_argument("--latent", default="1,16,2,8,8", help="B,C,T,H,W (T is ignored where the model streams: one step's programs)")
  parser.add_argument(
    "--model",
    default=None,
    help="a preset (random weights of a released config: cogvideox-2b (default), cogvideox-5b, cogvideox-1.5, "
    "wan2.1, wan2.2), a hub id or a local dir",
  )
  parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of %(default)s")
  args = parser.parse_args(argv)

  from torchax_vae.core.mesh import MeshError, parse_mesh_spec

  try:
    sizes = parse_mesh_spec(args.mesh)
    latent = tuple(int(s) for s in args.latent.split(","))
    if not 3 <= len(latent) <= 5 or min(latent) < 1:
      raise ValueError(f"--latent {args.latent!r}: expected five positive integers B,C,T,H,W (3 or 4 for a class without adapter)")
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
      raise ValueError(f"--paths: unknown {unknown}; expected a subset of {list(PATHS)}")
  except (MeshError, ValueError) as err:
    print(f"compare.collectives: {err}", file=sys.stderr)
    return 2
  from compare.checkpoints import DEFAULT_PRESET, PRESETS, preset_checkpoint

  model = args.model or DEFAULT_PRESET
  if len(latent) != 5 and not _without_adapter(model, PRESETS):  # before a preset's checkpoint is written
    print(f"compare.collectives: --latent {args.latent!r}: expected five positive integers B,C,T,H,W", file=sys.stderr)
    return 2
  needed = 1
  for size in sizes.values():
    needed *= size
  _simulate_cpu_devices(needed)

  if model in PRESETS:
    model = preset_checkpoint(model)
  from torchax_vae.core.errors import UnsupportedModelError

  report = {}
  for path in paths:
    try:
      runner = load_path(path, model, args.mesh)
    except UnsupportedModelError as err:  # a path with no port of this model (yet): said, not counted
      print(f"compare.collectives: {path}: not available: {err}", file=sys.stderr)
      report[path] = {"unavailable": str(err)}
      continue
    totals = dict.fromkeys(COLLECTIVES, 0)
    for text in step_hlo(runner, latent):
      for name, n in count_collectives(text).items():
        totals[name] += n
    report[path] = totals
  print(json.dumps(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
