"""Every autoencoder class diffusers exports, through torchax, against diffusers PyTorch on the same weights.

    python -m compare.conformance [--out conformance-out] [--classes AutoencoderKL,AutoencoderDC] [--quick]

The classes are discovered (``torchax_vae.tracing.generic_module.autoencoder_classes``: what the installed diffusers
exports from ``diffusers.models.autoencoders``), not listed: a class a later diffusers adds is a new
row, "no small config" until :mod:`compare.conformance_cases` has one. For each class with a case:
random weights (``torch.manual_seed(0)``, diffusers' init) saved with ``save_pretrained`` and loaded by
``torchax_vae.load`` — through the class's adapter where it has one, else the generic path — then

* decode and encode in float32: max abs error against torch (encode: ``latent_dist.mode()`` or the
  latent), and the error relative to the output's largest magnitude;
* the same decode with ``enable_tiling(**case.tiling)`` on both sides, where the case gives tiling;
* bfloat16 decode against torch float32 (max and mean abs);
* compile time (trace + lower + XLA compile, or JAX cache fetch) of the first decode and encode;
* video classes: the decode programs built and their compile time at two latent frame counts.

Exact: fp32 max abs ≤ 1e-4, or ≤ 1e-5 of the output's largest value. Writes ``conformance.md`` (the
table README shows) and ``conformance.json`` to ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ABS_TOL = 1e-4
REL_TOL = 1e-5


@dataclasses.dataclass
class Row:
  """One class's results; ``None`` where not measured."""

  class_name: str
  kind: str = ""
  tier: str = ""  # "adapter", "generic", or "" (not run)
  source: str = ""
  decode_shape: str = ""
  decode_err: float | None = None
  decode_rel: float | None = None
  encode_err: float | None = None
  encode_rel: float | None = None
  tiled_err: float | None = None
  bf16_err: float | None = None
  bf16_mean: float | None = None
  decode_compile_s: float | None = None
  encode_compile_s: float | None = None
  decode_s: float | None = None
  torch_decode_s: float | None = None
  frames: list[int] | None = None  # the two latent frame counts
  programs: list[int] | None = None  # decode programs built at each (the second: new ones)
  frames_compile_s: list[float] | None = None
  exact: bool | None = None
  reason: str = ""  # why a check did not run or is not exact
  note: str = ""

  @property
  def status(self) -> str:
    if not self.tier:
      return "not run"
    return "exact" if self.exact else "not exact"


def is_exact(err: float | None, reference_max: float) -> bool:
  return err is not None and (err <= ABS_TOL or err <= REL_TOL * reference_max)


def _first_line(err: BaseException) -> str:
  text = str(err).strip().splitlines()
  return f"{type(err).__name__}: {text[0][:300] if text else ''}"


# --- torch side ------------------------------------------------------------------------------


def torch_outputs(module, case, x, z, *, decode: bool = True, encode: bool = True):
  """diffusers' own decode (``.sample``) and encode (mode or latent) as numpy, like the generic path takes them."""
  import torch

  from torchax_vae.tracing.generic_module import _first_field

  out = {}
  with torch.no_grad():
    if decode and z is not None:
      start = time.perf_counter()
      out["decode"] = _first_field(module.decode(torch.from_numpy(z), **case.decode_kwargs))[1].float().numpy()
      out["decode_s"] = time.perf_counter() - start
    if encode and x is not None:
      value = _first_field(module.encode(torch.from_numpy(x), **case.encode_kwargs))[1]
      if not isinstance(value, torch.Tensor):
        value = value.mode() if hasattr(value, "mode") else value.mean
      out["encode"] = value.float().numpy()
  return out


def _inputs(case):
  import numpy as np

  rng = np.random.default_rng(0)
  z = rng.standard_normal(case.decode_input, dtype=np.float32) if case.decode_input else None
  x = rng.uniform(-1, 1, case.encode_input).astype(np.float32) if case.encode_input else None
  return x, z


def write_checkpoint(cls, case, directory: Path) -> Any:
  """The class at the case's config, ``torch.manual_seed(0)``, saved; returns the torch module."""
  import torch

  torch.manual_seed(0)
  module = cls(**case.config).eval()
  module.save_pretrained(directory)
  return module


# --- one class -------------------------------------------------------------------------------


def _err(ours, ref) -> tuple[float, float]:
  import numpy as np

  ours = np.asarray(ours, dtype=np.float64)
  if ours.shape != ref.shape:
    raise AssertionError(f"shape {ours.shape} != diffusers' {ref.shape}")
  err = float(np.abs(ours - ref).max()) if ref.size else 0.0
  peak = float(np.abs(ref).max()) if ref.size else 0.0
  return err, err / peak if peak else err


def _compile_s(runner) -> float:
  t = runner.programs.timings
  return t["trace_lower"] + t["compile"] + t["deserialize"]


def _programs(runner) -> int:
  return sum(runner.programs.sources.values())


def run_case(class_name: str, cls, case, workdir: Path, *, bf16: bool = True, frames: bool = True, tiled: bool = True) -> Row:
  """Torch against torchax for one class at its case; every failure becomes the row's reason."""
  import numpy as np

  import torchax_vae

  row = Row(class_name, kind=case.kind, source=case.source, note=case.note)
  row.decode_shape = "×".join(map(str, case.decode_input)) if case.decode_input else "–"
  if case.decode_input is None and case.encode_input is None:
    row.reason = case.note or "no tensor decode or encode"
    return row
  stage = "torch"
  try:
    directory = workdir / class_name
    module = write_checkpoint(cls, case, directory)
    if case.needs_tiling:
      module.enable_tiling(**(case.tiling or {}))
    x, z = _inputs(case)
    ref = torch_outputs(module, case, x, z)
    row.torch_decode_s = ref.get("decode_s")
    stage = "load"
    runner = torchax_vae.load(directory, cache_dir=False)
    row.tier = "generic" if runner.generic else "adapter"
    if case.needs_tiling:
      runner.enable_tiling(**(case.tiling or {}))
    checks, failures = [], []
    if z is not None:
      stage = "decode"
      try:
        before = _compile_s(runner)
        start = time.perf_counter()
        video = runner.decode(z, **case.decode_kwargs)
        row.decode_s = time.perf_counter() - start
        row.decode_compile_s = _compile_s(runner) - before
        row.decode_s -= row.decode_compile_s
        row.decode_err, row.decode_rel = _err(video, ref["decode"])
        checks.append(is_exact(row.decode_err, float(np.abs(ref["decode"]).max())))
      except Exception as err:  # noqa: BLE001 — encode is still measured
        failures.append(f"decode: {_first_line(err)}")
    if x is not None:
      stage = "encode"
      try:
        before = _compile_s(runner)
        latent = runner.encode(x, **case.encode_kwargs)
        row.encode_compile_s = _compile_s(runner) - before
        row.encode_err, row.encode_rel = _err(latent, ref["encode"])
        checks.append(is_exact(row.encode_err, float(np.abs(ref["encode"]).max())))
      except Exception as err:  # noqa: BLE001
        failures.append(f"encode: {_first_line(err)}")
    row.exact = all(checks) and not failures
    if failures:
      row.reason = "; ".join(failures)
      return row
    if not row.exact:
      row.reason = "error above tolerance"
    if tiled and case.tiling is not None and not case.needs_tiling and z is not None:
      stage = "tiled decode"
      module.enable_tiling(**case.tiling)
      tiled_ref = torch_outputs(module, case, None, z, encode=False)["decode"]
      module.disable_tiling()
      runner.enable_tiling(**case.tiling)
      row.tiled_err = _err(runner.decode(z, **case.decode_kwargs), tiled_ref)[0]
      runner.disable_tiling()
    if frames and case.kind == "video" and case.other_frames and z is not None:
      stage = "frame counts"
      fresh = torchax_vae.load(directory, cache_dir=False)
      if case.needs_tiling:
        fresh.enable_tiling(**(case.tiling or {}))
      counts, seconds = [], []
      for t in (case.decode_input[2], case.other_frames):
        shape = (*case.decode_input[:2], t, *case.decode_input[3:])
        built, spent = _programs(fresh), _compile_s(fresh)
        fresh.decode(np.zeros(shape, np.float32), check_finite=False, **case.decode_kwargs)
        counts.append(_programs(fresh) - built)
        seconds.append(round(_compile_s(fresh) - spent, 2))
      row.frames, row.programs, row.frames_compile_s = [case.decode_input[2], case.other_frames], counts, seconds
    if bf16 and z is not None:
      stage = "bfloat16"
      low = torchax_vae.load(directory, dtype="bfloat16", cache_dir=False)
      if case.needs_tiling:
        low.enable_tiling(**(case.tiling or {}))
      out = np.asarray(low.decode(z, **case.decode_kwargs), dtype=np.float64)
      row.bf16_err, _ = _err(out, ref["decode"])
      row.bf16_mean = float(np.abs(out - ref["decode"]).mean())
  except Exception as err:  # noqa: BLE001 — a class that fails is a row saying why, not a crash
    reason = f"{stage}: {_first_line(err)}"
    row.reason = reason if not row.reason else f"{row.reason}; {reason}"
    if stage in ("torch", "load", "decode", "encode"):
      row.exact = False
    if os.environ.get("CONFORMANCE_TRACEBACK"):
      traceback.print_exc()
  return row


# --- the table -------------------------------------------------------------------------------


def discover() -> dict[str, type]:
  from torchax_vae.tracing.generic_module import autoencoder_classes

  return autoencoder_classes()


def run(classes: list[str] | None = None, *, bf16: bool = True, frames: bool = True, tiled: bool = True, progress=print) -> list[Row]:
  from compare.conformance_cases import CASES

  found = discover()
  names = sorted(found) if not classes else classes
  rows = []
  with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
    for name in names:
      if name not in found:
        raise SystemExit(f"--classes: {name!r} is not a class diffusers exports from diffusers.models.autoencoders")
      case = CASES.get(name)
      start = time.perf_counter()
      if case is None:
        row = Row(name, reason="no small config in compare/conformance_cases.py")
      else:
        row = run_case(name, found[name], case, Path(tmp), bf16=bf16, frames=frames, tiled=tiled)
      progress(f"{name}: {row.status} ({time.perf_counter() - start:.1f} s){' — ' + row.reason if row.reason else ''}")
      rows.append(row)
  return rows


def _fmt(value: float | None, spec: str = ".1e") -> str:
  return "–" if value is None else format(value, spec)


def runnable(row: Row) -> bool:
  """Whether the class has a tensor decode or encode to compare (vocoders and structured-input models do not)."""
  return bool(row.decode_shape and row.decode_shape != "–") or row.encode_err is not None or row.exact is not None


def counts(rows: list[Row]) -> dict[str, str]:
  """``{"video": "17 / 18", …, "all": …}``: exact over the classes of each kind that have a tensor
  decode or encode; ``"none to compare"``: those that have neither (a vocoder's ``forward`` only)."""
  out = {}
  compared = [r for r in rows if runnable(r)]
  for kind in sorted({r.kind or "no config" for r in compared}):
    group = [r for r in compared if (r.kind or "no config") == kind]
    out[kind] = f"{sum(bool(r.exact) for r in group)} / {len(group)}"
  out["all"] = f"{sum(bool(r.exact) for r in compared)} / {len(compared)}"
  out["none to compare"] = f"{len(rows) - len(compared)} of {len(rows)} classes"
  return out


def markdown(rows: list[Row]) -> str:
  """The table, one row per class; a row that is not exact (or not run) cites a note listed below it."""
  from compare.conformance_cases import NOT_EXACT

  head = (
    "| class | kind | path | decode input | decode err (rel) | encode err (rel) | tiled err | bf16 err (mean) "
    "| compile s dec / enc | programs, compile s at T₁ / T₂ | status |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
  )
  lines, notes = [], []
  for r in rows:
    frames = "–"
    if r.frames:
      frames = f"T={r.frames[0]}: {r.programs[0]}, {r.frames_compile_s[0]:.1f} / T={r.frames[1]}: {r.programs[1]}, {r.frames_compile_s[1]:.1f}"
    status = r.status
    if r.reason or r.class_name in NOT_EXACT:
      why = NOT_EXACT.get(r.class_name) or (r.note if not r.tier and r.note else r.reason)
      if r.exact and r.reason:  # exact, but an extra check (bf16, tiling, frame counts) failed
        why = r.reason
      notes.append(f"{len(notes) + 1}. `{r.class_name}`: {why}")
      status += f" ({len(notes)})"
    lines.append(
      f"| `{r.class_name}` | {r.kind or '–'} | {r.tier or '–'} | {r.decode_shape or '–'} "
      f"| {_fmt(r.decode_err)} ({_fmt(r.decode_rel)}) | {_fmt(r.encode_err)} ({_fmt(r.encode_rel)}) "
      f"| {_fmt(r.tiled_err)} | {_fmt(r.bf16_err, '.2g')} ({_fmt(r.bf16_mean, '.2g')}) "
      f"| {_fmt(r.decode_compile_s, '.1f')} / {_fmt(r.encode_compile_s, '.1f')} | {frames} | {status} |"
    )
  summary = ", ".join(f"{k}: {v}" for k, v in counts(rows).items())
  text = head + "\n".join(lines) + f"\n\nExact / classes with a tensor decode or encode: {summary}.\n"
  return text + ("\n" + "\n".join(notes) + "\n" if notes else "")


def render(path: Path) -> str:
  """The Markdown of a saved ``conformance.json`` (environment line, table, notes)."""
  payload = json.loads(Path(path).read_text())
  rows = [Row(**{k: v for k, v in r.items() if k != "status"}) for r in payload["rows"]]
  env = payload["environment"]
  return f"{', '.join(f'{k} {v}' for k, v in env.items())}\n\n{markdown(rows)}"


def environment() -> dict[str, str]:
  import diffusers
  import jax
  import torch

  from torchax_vae.tracing.backend import torchax

  return {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "torchax": torchax.__version__,
    "jax": jax.__version__,
    "diffusers": diffusers.__version__,
    "device": f"{jax.devices()[0].platform} ({jax.device_count()} devices)",
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="conformance-out", help="directory for conformance.md and conformance.json")
  parser.add_argument("--classes", help="comma-separated class names (default: every class diffusers exports)")
  parser.add_argument("--quick", action="store_true", help="fp32 decode/encode only: no bf16, tiling or frame counts")
  parser.add_argument("--render", metavar="JSON", help="print the Markdown of a saved conformance.json; run nothing")
  args = parser.parse_args(argv)
  if args.render:
    print(render(Path(args.render)))
    return 0
  classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
  env = environment()
  print(f"conformance: {', '.join(f'{k} {v}' for k, v in env.items())}", file=sys.stderr)
  rows = run(classes, bf16=not args.quick, frames=not args.quick, tiled=not args.quick, progress=lambda s: print(s, file=sys.stderr))
  table = markdown(rows)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  payload = {"environment": env, "counts": counts(rows), "rows": [dataclasses.asdict(r) | {"status": r.status} for r in rows]}
  (out / "conformance.json").write_text(json.dumps(payload, indent=1))
  (out / "conformance.md").write_text(render(out / "conformance.json"))
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
