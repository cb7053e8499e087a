"""compare.hlo_bytes: the traffic of an optimised program's ops, on programs and layouts of known size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from compare import hlo_bytes


def test_tpu_tiles_pad_the_two_minor_dimensions():
  # minor-to-major {4,3,...}: C=96 on the 128 lanes -> 128, W=20 on the 8 sublanes -> 24.
  size = hlo_bytes.array_bytes("bf16[1,2,32,20,96]{4,3,2,1,0:T(8,128)(2,1)}")
  assert size.logical == 2 * 1 * 2 * 32 * 20 * 96
  assert size.padded == 2 * 1 * 2 * 32 * 24 * 128
  assert size.float32 == 0
  # Another order: H (dim 2, 256) minor-most, then C (dim 4, 96): no padding; f32 counted as such.
  size = hlo_bytes.array_bytes("f32[1,2,256,160,96]{2,4,3,1,0:T(8,128)}")
  assert size.padded == size.logical == size.float32 == 4 * 2 * 256 * 160 * 96
  # A tuple: both arrays; no layout (XLA:CPU): the elements alone.
  assert hlo_bytes.array_bytes("(f32[4,4], bf16[8])").padded == 4 * 16 + 2 * 8


def test_an_elementwise_program_reads_its_operands_and_writes_its_output():
  x = jax.ShapeDtypeStruct((256, 256), jnp.float32)
  text = jax.jit(lambda a, b: (a + b) * 2).lower(x, x).compile().as_text()
  ops = hlo_bytes.entry_ops(text)
  assert len(ops) == 1 and ops[0].opcode == "fusion"
  assert ops[0].traffic.logical == 3 * 256 * 256 * 4  # two operands read, one output written
  assert "| fusion: " in hlo_bytes.report(text)


def test_async_slices_count_their_destination_once_each_way():
  text = """HloModule m

ENTRY %main (p: s8[1024]) -> s8[512] {
  %p = s8[1024]{0} parameter(0)
  %slice-start.1 = ((s8[1024]{0}), s8[512]{0}, s32[]) slice-start(%p), slice={[0:512]}
  ROOT %slice-done.1 = s8[512]{0} slice-done(%slice-start.1)
}
"""
  (op,) = hlo_bytes.entry_ops(text)
  assert op.opcode == "slice-start" and op.traffic.logical == 2 * 512


def test_text_without_a_program_is_refused():
  with pytest.raises(ValueError, match="no ENTRY computation"):
    hlo_bytes.entry_ops("not HLO")
  with pytest.raises(ValueError, match="no instruction of the ENTRY computation could be read"):
    hlo_bytes.entry_ops("HloModule m\n\nENTRY main {\n  p = f32[2] parameter(0)\n}\n")
