"""Where a compiled program's memory traffic goes, op by op, read off its optimised HLO text.

    python -m compare.hlo_bytes OUT/hlo/torchax-T21-steady.hlo.txt [--top 20]

(``compare.bench --compile-only`` / ``--target`` writes the optimised programs to ``OUT/hlo/``.)

XLA's cost analysis gives one ``bytes accessed`` figure per program; this splits it. Each top-level op
of the entry computation (a fusion, a copy, a pad, a collective, …) is counted as the bytes of its
operands plus its outputs — what it reads from and writes to memory, if nothing stays on chip between
ops — grouped by what it is: the opcode, and for a fusion the JAX operation its metadata names
(``conv_general_dilated``, ``integer_pow`` for a norm's square, ``concatenate``…). Sizes are the
layouts' own: a TPU layout's tiles (``T(8,128)``) pad the two minor-most dimensions, so a width of 96
channels on the 128-lane axis costs 128; both the padded and the logical bytes are given.

An approximation, and labelled so: the compiler's own total counts some ops differently (an operand
read twice by one fusion; async copies), so the sum here is not the program's ``bytes accessed`` —
the shares are what it is for. Not counted: parameters, constants, tuples and bitcasts (no traffic),
and the second half of async pairs (``*-done``; the ``*-start`` counts the copy once, read and write).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections import defaultdict
from pathlib import Path

DTYPE_BYTES = {
  "pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
  "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([0-9,]*)\](\{[^}]*\})?")
_MINOR_TO_MAJOR = re.compile(r"\{([0-9,]*)")
_TILE = re.compile(r"T\((\d+)(?:,(\d+))?\)")  # the first tile: other layout attributes may precede it
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*?)\)(, .*)?$")
# No memory traffic of their own: names, views and the second half of an async pair.
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id", "replica-id"}
_FREE_CUSTOM_CALLS = {"ConcatBitcast"}  # TPU: joins prefetched slices of one buffer, no copy


@dataclasses.dataclass(frozen=True)
class ArrayBytes:
  padded: int  # as laid out (TPU tiles pad the minor dimensions)
  logical: int  # the elements alone
  float32: int  # the padded bytes of its f32 arrays

  def __add__(self, other: ArrayBytes) -> ArrayBytes:
    return ArrayBytes(self.padded + other.padded, self.logical + other.logical, self.float32 + other.float32)


NONE = ArrayBytes(0, 0, 0)


def array_bytes(type_text: str) -> ArrayBytes:
  """The bytes of every array in an HLO type (``bf16[1,2,32]{2,1,0:T(8,128)(2,1)}``, or a tuple of them)."""
  total = NONE
  for dtype, dims_text, layout in _ARRAY.findall(type_text):
    dims = [int(d) for d in dims_text.split(",") if d]
    logical = DTYPE_BYTES[dtype]
    for d in dims:
      logical *= d
    padded_dims = list(dims)
    order, tile_match = _MINOR_TO_MAJOR.match(layout or ""), _TILE.search(layout or "")
    if order and tile_match and dims:
      minor_to_major = [int(i) for i in order.group(1).split(",") if i]
      tile = [int(tile_match.group(1))] + ([int(tile_match.group(2))] if tile_match.group(2) else [])
      # T(a,b): the minor-most dimension in multiples of b, the next in multiples of a; T(a): a 1-D tile.
      for dim, size in zip(minor_to_major, reversed(tile)):
        padded_dims[dim] = -(-padded_dims[dim] // size) * size
    padded = DTYPE_BYTES[dtype]
    for d in padded_dims:
      padded *= d
    total += ArrayBytes(padded, logical, padded if dtype == "f32" else 0)
  return total


@dataclasses.dataclass(frozen=True)
class Op:
  name: str
  opcode: str
  what: str  # the group it is counted in: opcode, or "fusion: <JAX op>"
  traffic: ArrayBytes  # operands read + outputs written
  output_type: str


def entry_ops(hlo_text: str) -> list[Op]:
  """The entry computation's ops with their traffic (see the module docstring for what is counted)."""
  start = hlo_text.find("\nENTRY")
  if start < 0:
    raise ValueError("no ENTRY computation in this text: expected an HLO module (compiled.as_text())")
  sizes: dict[str, ArrayBytes] = {}
  ops = []
  for line in hlo_text[start:].splitlines()[1:]:
    match = _INSTRUCTION.match(line)
    if not match:
      if line.startswith("}"):
        break
      continue
    name, output_type, opcode, operands, attributes = match.groups()
    attributes = attributes or ""
    out = sizes[name] = array_bytes(output_type)
    target = re.search(r'custom_call_target="([^"]+)"', attributes)
    if opcode in _FREE or opcode.endswith("-done") or (target and target.group(1) in _FREE_CUSTOM_CALLS):
      continue
    if opcode.endswith("-start"):  # an async copy or slice: its destination read once and written once
      dest = array_bytes(_async_destination(output_type))
      traffic = dest + dest
    else:
      traffic = out
      for operand in re.findall(r"%([\w.\-]+)", operands):
        traffic += sizes.get(operand, NONE)
    jax_op = re.search(r'op_name="([^"]*)"', attributes)
    what = opcode
    if opcode == "fusion":
      what = "fusion: " + (jax_op.group(1).rsplit("/", 1)[-1] if jax_op else "?")
    elif target:
      what = f"custom-call: {target.group(1)}"
    ops.append(Op(name, opcode, what, traffic, output_type))
  if not sizes:
    raise ValueError("no instruction of the ENTRY computation could be read: not the HLO text format this expects")
  return ops


def _async_destination(tuple_type: str) -> str:
  """The destination buffer of an async ``*-start``'s ``((source), destination, context)`` tuple."""
  arrays = [a for a in _ARRAY.findall(tuple_type) if a[1]]  # the scalar context dropped
  if not arrays:
    return tuple_type
  dtype, dims, layout = arrays[-1]
  return f"{dtype}[{dims}]{layout}"


def breakdown(ops: list[Op]) -> list[tuple[str, int, ArrayBytes]]:
  """``(group, ops, traffic)`` per group, largest padded traffic first."""
  groups: dict[str, list] = defaultdict(lambda: [0, NONE])
  for op in ops:
    groups[op.what][0] += 1
    groups[op.what][1] += op.traffic
  return sorted(((k, n, b) for k, (n, b) in groups.items()), key=lambda row: -row[2].padded)


def _gb(n: int) -> str:
  return f"{n / 1e9:.3f}"


def report(hlo_text: str, top: int = 15) -> str:
  """Markdown: the groups, then the ``top`` ops, by traffic."""
  ops = entry_ops(hlo_text)
  total = sum((op.traffic for op in ops), NONE)
  lines = [
    (
      f"{len(ops)} ops; traffic (operands + outputs, an approximation): {_gb(total.padded)} GB as laid out, "
      f"{_gb(total.logical)} GB of elements, {_gb(total.float32)} GB in float32 arrays"
    ),
    "",
    "| group | ops | GB (laid out) | share | GB (elements) | GB in f32 |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  for what, count, traffic in breakdown(ops):
    share = traffic.padded / total.padded if total.padded else 0.0
    lines.append(f"| {what} | {count} | {_gb(traffic.padded)} | {share:.1%} | {_gb(traffic.logical)} | {_gb(traffic.float32)} |")
  lines += ["", f"| the {top} largest ops | group | GB (laid out) | output |", "| --- | --- | ---: | --- |"]
  for op in sorted(ops, key=lambda op: -op.traffic.padded)[:top]:
    lines.append(f"| {op.name} | {op.what} | {_gb(op.traffic.padded)} | `{op.output_type[:90]}` |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m compare.hlo_bytes", description=__doc__.split("\n\n")[0])
  parser.add_argument("hlo", type=Path, nargs="+", help="optimised HLO text files (compare.bench writes OUT/hlo/*.hlo.txt)")
  parser.add_argument("--top", type=int, default=15, help="largest ops listed (default: %(default)s)")
  args = parser.parse_args(argv)
  for path in args.hlo:
    print(f"## {path.name}\n\n{report(path.read_text(), args.top)}\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
