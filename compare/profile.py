"""Where a path's decode time goes: an XLA profile by op, and what the compiled programs contain.

    python -m compare.profile --path torchax [--model NAME|DIR] [--latent 1,16,2,8,8] [--dtype float32]
    python -m compare.profile --path native_flax --top 20 --out prof-native

In this process: loads the path, compiles the step programs a decode of ``--latent`` runs
(``Runner.precompile``), decodes once to warm up, then decodes under ``jax.profiler`` and prints one
JSON object:

- ``decode_s``: the profiled decode (wall, ``block_until_ready``);
- ``ops``: per kind of XLA op of the step programs (its name without the trailing number: ``ynn_fusion`` — XLA:CPU's
  YNNPACK convolutions and matmuls —, ``loop_fusion``, ``copy``, …) the count and the summed time
  (ms) of the ops the runtime ran; ops run concurrently, so the sum can exceed the wall time;
- ``top``: the ``--top`` slowest ops with their output shape and layout (from the compiled HLO);
- ``hlo``: per program, counts in the optimised HLO: fusions, transposes and copies outside
  fusions, convolutions (``ynn`` fusions on CPU), dots, reductions; and XLA's cost and memory analysis.

The profile (``--out``, default a temporary directory) also opens in TensorBoard/Perfetto. This is
how the torchax-vs-native gap of issue 15 was attributed (README, "Results on this machine").
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time

# HLO instruction: "%name = f32[1,2]{1,0} opcode(...)"; fusions also say their kind.
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+?) (\w[\w-]*)\(", re.M)


def hlo_summary(text: str) -> dict[str, int]:
  """Counts in one optimised HLO module's entry computation (what the runtime executes)."""
  entry = text[text.index("\nENTRY") :] if "\nENTRY" in text else text
  ops = collections.Counter(op for _, _, op in INSTRUCTION.findall(entry))
  names = [name for name, _, op in INSTRUCTION.findall(entry) if op == "fusion"]
  return {
    "fusions": ops["fusion"],
    "ynn_fusions": sum(n.startswith("ynn") for n in names),
    "transposes": ops["transpose"],
    "copies": ops["copy"],
    "convolutions": ops["convolution"],
    "dots": ops["dot"],
    "reduces": ops["reduce"],
    "instructions": sum(ops.values()),
  }


def op_shapes(texts: list[str]) -> dict[str, str]:
  """HLO instruction name -> its output shape and layout, over the programs' entry computations."""
  shapes = {}
  for text in texts:
    entry = text[text.index("\nENTRY") :] if "\nENTRY" in text else text
    shapes.update({name: shape for name, shape, _ in INSTRUCTION.findall(entry)})
  return shapes


def op_times(trace_dir: str) -> dict[str, float]:
  """Summed duration (µs) per op name in the Perfetto trace ``jax.profiler`` wrote under ``trace_dir``."""
  (path,) = sorted(glob.glob(f"{trace_dir}/plugins/profile/*/perfetto_trace.json.gz"))[-1:]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  times: dict[str, float] = collections.defaultdict(float)
  for event in events:
    name = event.get("name", "")
    # Runtime bookkeeping (executor, thread pool, Python frames) is not an op.
    if event.get("ph") == "X" and not name.startswith(("Thunk", "$", "Pjit", "Slinky", "Parse")):
      times[name] += event.get("dur", 0.0)
  return dict(times)


def by_kind(times: dict[str, float]) -> dict[str, dict]:
  kinds: dict[str, dict] = collections.defaultdict(lambda: {"count": 0, "ms": 0.0})
  for name, us in times.items():
    kind = kinds[re.sub(r"[.\d]+$", "", name)]
    kind["count"] += 1
    kind["ms"] += us / 1e3
  ordered = sorted(kinds.items(), key=lambda kv: -kv[1]["ms"])
  return {k: {"count": v["count"], "ms": round(v["ms"], 1)} for k, v in ordered}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m compare.profile", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
  parser.add_argument("--path", required=True, choices=("torchax", "native_flax"))
  parser.add_argument("--model", default=None, help="a preset (default cogvideox-2b), a hub id or a local VAE dir")
  parser.add_argument("--latent", default="1,16,2,8,8", help="latent shape B,C,T,H,W (default: %(default)s)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--top", type=int, default=15, help="how many of the slowest ops to list (default: %(default)s)")
  parser.add_argument("--out", default=None, help="where to keep the profile (default: a temporary directory)")
  args = parser.parse_args(argv)

  import jax
  import numpy as np

  from compare import worker
  from compare.bench import UsageError, parse_ints, resolve_model

  try:
    shape = parse_ints(args.latent, "--latent", 5)
    directory, _ = resolve_model(args.model)
  except UsageError as err:
    parser.error(str(err))
  if args.path == "torchax":
    import torchax_vae as package
  else:
    import native_flax as package
  runner = package.load(directory, dtype=args.dtype, cache_dir=False)
  programs = runner.precompile(shape)
  texts = [p.executable.as_text() for p in programs]
  z = jax.numpy.asarray(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
  jax.block_until_ready(runner.decode(z))  # warm-up: the small programs around the steps compile here
  out_dir = args.out or tempfile.mkdtemp(prefix=f"profile-{args.path}-")
  jax.profiler.start_trace(out_dir, create_perfetto_trace=True)
  start = time.perf_counter()
  jax.block_until_ready(runner.decode(z))
  decode_s = time.perf_counter() - start
  jax.profiler.stop_trace()

  shapes = op_shapes(texts)
  # The step programs' ops only (the small programs around them, e.g. slicing, are not counted).
  times = {name: us for name, us in op_times(out_dir).items() if name in shapes}
  top = sorted(times.items(), key=lambda kv: -kv[1])[: args.top]

  def analysis(executable) -> dict:
    gflop, accessed = (worker.program_cost(executable, field) for field in ("flops", "bytes accessed"))
    memory = worker.program_memory(executable) or {}
    memory_mb = {f"{name}_mb": round(value / 2**20) for name, value in memory.items()}
    return {"gflop": gflop and round(gflop / 1e9, 1), "gb_accessed": accessed and round(accessed / 1e9, 2), **memory_mb}

  report = {
    "path": args.path,
    "model": str(directory),
    "latent": list(shape),
    "dtype": args.dtype,
    "jax": jax.__version__,
    "device": str(jax.devices()[0]),
    "decode_s": round(decode_s, 3),
    "ops": by_kind(times),
    "top": [{"op": name, "ms": round(us / 1e3, 1), "shape": shapes.get(name)} for name, us in top],
    "hlo": {p.name: {**hlo_summary(text), **analysis(p.executable)} for p, text in zip(programs, texts)},
    "profile_dir": out_dir,
  }
  json.dump(report, sys.stdout, indent=1)
  print()
  return 0


if __name__ == "__main__":
  sys.exit(main())
