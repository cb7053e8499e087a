"""Collective ops in the compiled decode-step programs of both paths, on a mesh.

    python -m compare.collectives --mesh dp=2,tp=4 [--latent 1,16,2,8,8] [--model DIR]

prints one JSON object: ``{"torchax": {"all-gather": n, …}, "native_flax": {…}}``, counting each
kind of collective in the optimised HLO of the first-step and steady-step programs together. With
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
  """Optimised HLO of the first-step and steady-step decode programs for ``latent_shape`` (B, C, T, H, W)."""
  import jax
  import jax.numpy as jnp

  first, steady = runner.step_programs("decode")
  b, c, _, h, w = latent_shape
  z = runner._prepare(jnp.zeros((b, c, 2, h, w), jnp.float32))
  z_spec = jax.ShapeDtypeStruct(z.shape, z.dtype, sharding=z.sharding)
  first_compiled = first.lower(runner.params, z_spec).compile()
  cache = runner.steady_cache_spec("decode", z_spec, first_compiled)
  return [first_compiled.as_text(), steady.lower(runner.params, z_spec, cache).compile().as_text()]


def _simulate_cpu_devices(count: int) -> None:
  """Lets a CPU host simulate ``count`` devices for the mesh (XLA ignores the flag on TPU/GPU).

  XLA reads the flag when JAX's backends start, not when jax is imported (``main``'s mesh parser
  imports it), so it is set unless the backends already run or the caller chose a count.
  """
  from jax._src import xla_bridge  # private; no public way to ask whether the backends have started

  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" in flags or xla_bridge.backends_are_initialized():
    return
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def load_path(path: str, model, mesh: str):
  if path == "torchax":
    import torchax_vae

    return torchax_vae.load(model, mesh=mesh, cache_dir=False)
  import native_flax

  return native_flax.load(model, mesh=mesh, cache_dir=False)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--mesh", default="dp=2,tp=4", help="mesh spec (default: %(default)s)")
  parser.add_argument("--latent", default="1,16,2,8,8", help="B,C,T,H,W (T is ignored: one step's programs)")
  parser.add_argument("--model", default=None, help="hub id or local dir (default: random CogVideoX-2b config)")
  parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of %(default)s")
  args = parser.parse_args(argv)

  from torchax_vae.core.mesh import MeshError, parse_mesh_spec

  try:
    sizes = parse_mesh_spec(args.mesh)
    latent = tuple(int(s) for s in args.latent.split(","))
    if len(latent) != 5 or min(latent) < 1:
      raise ValueError(f"--latent {args.latent!r}: expected five positive integers B,C,T,H,W")
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
      raise ValueError(f"--paths: unknown {unknown}; expected a subset of {list(PATHS)}")
  except (MeshError, ValueError) as err:
    print(f"compare.collectives: {err}", file=sys.stderr)
    return 2
  needed = 1
  for size in sizes.values():
    needed *= size
  _simulate_cpu_devices(needed)

  model = args.model
  if model is None:
    from compare.checkpoints import COGVIDEOX_2B, cached_random_checkpoint

    model = cached_random_checkpoint(COGVIDEOX_2B)
  report = {}
  for path in paths:
    runner = load_path(path, model, args.mesh)
    totals = dict.fromkeys(COLLECTIVES, 0)
    for text in step_hlo(runner, latent):
      for name, n in count_collectives(text).items():
        totals[name] += n
    report[path] = totals
  print(json.dumps(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
