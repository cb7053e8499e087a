"""What the TPU compiler's cost analysis says a decode would take: an estimate, never a measurement.

A program compiled for a TPU target (``torchax_vae.core.target``) reports, per chip, its ``flops``,
its ``bytes accessed`` and ``optimal_seconds``, the compiler's own estimate of its run time. Read as
it comes, that estimate is negative for every VAE step program at released sizes. What it is, as
checked on programs whose cost is known (docs/tpu.md, "Reading the estimate"):

- a lone op the cost model prices (a matmul, an elementwise pass, a 3D convolution) gets the
  roofline of its own counts, ``max(flops / peak, bytes / HBM bandwidth)``, or a little above it;
- an op it has no figure for adds exactly -1 s, so a program's ``optimal_seconds`` is its priced
  part minus the number of unpriced ops. Every priced part here is far below a second, so the two
  come apart: ``unpriced = ceil(-optimal_seconds)``, ``priced = optimal_seconds + unpriced``.

What the priced part leaves out is the unpriced ops' time; what the roofline leaves out is every
stall, launch and layout cost, and overlap it assumes perfect. So each program's estimate here is
``max(priced part, roofline of the program's own counts)``: never below the floor the compiler's
counts put under it, and the compiler's own figure where that is higher. A decode's estimate sums
its programs' estimates times how often it runs each (``compare.worker.program_runs``).
"""

from __future__ import annotations

import math

ESTIMATE_NOTE = (
  "TPU compiler's estimate, not a measurement: per program max(the compiler's optimal_seconds with its "
  "unpriced ops' -1 s each taken out, max(FLOPs / peak bf16 FLOP/s, bytes accessed / HBM bytes/s)) of "
  "the chip's datasheet figures, times the runs per decode (compare/estimate.py, docs/tpu.md)"
)


def program_estimate(cost: dict | None, chip: dict) -> dict | None:
  """One program's estimate (per chip, seconds) from its cost analysis ``cost`` and ``chip``'s
  datasheet figures (``core.target.Chip`` as a dict); ``None`` without FLOP and byte counts.

  Returns ``compute_s`` (FLOPs at peak), ``memory_s`` (bytes at HBM bandwidth), ``roofline_s``
  (their max), ``compiler_s`` (``optimal_seconds`` as reported), ``unpriced_ops`` and
  ``priced_s`` (its two parts; ``None`` when there is no figure), and ``estimate_s``.
  """
  if not cost or "flops" not in cost or "bytes accessed" not in cost:
    return None
  compute_s = cost["flops"] / chip["peak_bf16_flops"]
  memory_s = cost["bytes accessed"] / chip["hbm_bytes_per_s"]
  roofline_s = max(compute_s, memory_s)
  raw = cost.get("optimal_seconds")
  unpriced = priced = None
  if raw is not None:
    unpriced = math.ceil(-raw) if raw < 0 else 0
    priced = raw + unpriced
  return {
    "compute_s": compute_s,
    "memory_s": memory_s,
    "roofline_s": roofline_s,
    "compiler_s": raw,
    "unpriced_ops": unpriced,
    "priced_s": priced,
    "estimate_s": roofline_s if priced is None else max(priced, roofline_s),
    "bound": "memory" if memory_s >= compute_s else "compute",
  }


def decode_estimate(costs: dict[str, dict | None], runs: dict[str, int], chip: dict) -> dict | None:
  """A decode's estimate: each program's (:func:`program_estimate`) times its runs, summed.

  ``costs``: per program name, its cost analysis; ``runs``: how often the decode runs each (a
  program that does not run, e.g. the steady step of a one-step decode, has 0 or no entry).
  """
  per_program = {name: program_estimate(cost, chip) for name, cost in costs.items()}
  if not per_program or None in per_program.values():
    return None
  total = {key: sum(runs.get(name, 0) * est[key] for name, est in per_program.items())
           for key in ("estimate_s", "roofline_s", "compute_s", "memory_s")}  # fmt: skip
  return {
    "estimated_decode_s": total["estimate_s"],
    "roofline_decode_s": total["roofline_s"],
    "compute_floor_s": total["compute_s"],
    "memory_floor_s": total["memory_s"],
    "per_program": per_program,
    "note": ESTIMATE_NOTE,
  }


# --- programs of known cost ------------------------------------------------------------------------


def known_programs(size: str = "full") -> dict:
  """``{name: (function, argument shapes and dtypes)}`` whose cost is known from their sizes: a bf16
  matmul (compute-bound), an elementwise pass (memory-bound) and, with ``size="full"``, one 3D
  convolution of the VAEs' kind (128 channels, 3x3x3; its compile alone takes ~50 s on this host)."""
  import jax
  import jax.numpy as jnp

  programs = {
    "matmul 8192^2 bf16": (lambda a, b: a @ b, [((8192, 8192), jnp.bfloat16)] * 2),
    "a * 2 + 1 over 2^28 bf16": (lambda a: a * 2 + 1, [((2**28,), jnp.bfloat16)]),
  }
  if size == "full":

    def conv(x, k):
      dims = ("NDHWC", "DHWIO", "NDHWC")
      return jax.lax.conv_general_dilated(x, k, (1, 1, 1), [(1, 1)] * 3, dimension_numbers=dims)

    programs["conv3d 3x3x3, 128 ch, 8x64x64"] = (conv, [((1, 8, 64, 64, 128), jnp.bfloat16), ((3, 3, 3, 128, 128), jnp.bfloat16)])
  return programs


def check(target_name: str, size: str = "full") -> list[dict]:
  """Compiles :func:`known_programs` for one chip of ``target_name`` and returns, per program, the
  compiler's figures beside the roofline of its own counts (:func:`program_estimate`)."""
  import dataclasses

  import jax

  from compare.worker import program_costs
  from torchax_vae.core.target import open_target

  target = open_target(target_name)
  chip = dataclasses.asdict(target.chip)
  sharding = jax.sharding.SingleDeviceSharding(target.devices[0])
  rows = []
  for name, (function, shapes) in known_programs(size).items():
    args = [jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for shape, dtype in shapes]
    compiled = jax.jit(function).lower(*args).compile()
    rows.append({"program": name, **program_estimate(program_costs(compiled), chip)})
  return rows


def main(argv: list[str] | None = None) -> int:
  import argparse
  import json

  parser = argparse.ArgumentParser(
    prog="python -m compare.estimate",
    description="The TPU compiler's estimate on programs of known cost, beside their rooflines (docs/tpu.md).",
  )
  parser.add_argument("--target", default="v6e:2x4", help="a TPU topology (default: %(default)s); one chip of it")
  parser.add_argument("--quick", action="store_true", help="without the 3D convolution (its compile takes ~50 s)")
  args = parser.parse_args(argv)
  for row in check(args.target, "quick" if args.quick else "full"):
    print(json.dumps(row))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
