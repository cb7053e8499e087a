"""The conformance table in CI: every autoencoder class the installed diffusers exports, at its small
config (``compare/conformance_cases.py``), through torchax against diffusers PyTorch on the same random
weights, fp32 decode and encode (``compare.conformance``: max abs ≤ 1e-4 or ≤ 1e-5 of the output's
largest value). A diffusers or torchax upgrade that breaks a class fails its test; a class a later
diffusers adds fails ``test_every_exported_class_has_a_case`` until it has a config."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from compare import conformance  # noqa: E402
from compare.conformance_cases import CASES, NOT_EXACT  # noqa: E402
from torchax_vae.core.models import ADAPTERS  # noqa: E402

CLASSES = conformance.discover()


def test_every_exported_class_has_a_case():
  assert sorted(set(CLASSES) - set(CASES)) == []
  assert sorted(set(CASES) - set(CLASSES)) == []  # a case for a class diffusers no longer exports


def test_classes_with_an_adapter_keep_it(tiny_dir, tiny_wan_dirs):
  """CogVideoX, Wan, HunyuanVideo, HunyuanVideo 1.5, LTX-Video and LTX-2 run through their adapters (their
  parity: test_torchax_vae.py, test_wan.py, test_hunyuan_video.py, test_hunyuan_video15.py, test_ltx_video.py,
  test_ltx2_video.py)."""
  import torchax_vae
  from torchax_vae.core.driver import Runner

  for directory in (tiny_dir, tiny_wan_dirs["2.1"]):
    assert isinstance(torchax_vae.load(directory), Runner)  # a load: nothing traced or compiled
  assert set(ADAPTERS) == {"AutoencoderKLCogVideoX", "AutoencoderKLWan", "AutoencoderKLHunyuanVideo",
                          "AutoencoderKLHunyuanVideo15", "AutoencoderKLLTXVideo", "AutoencoderKLLTX2Video"}


def _params():
  for name in sorted(set(CLASSES) - set(ADAPTERS)):  # every class on the generic path
    marks = []
    if name in NOT_EXACT:  # strict: once such a class becomes exact, the entry must go
      marks.append(pytest.mark.xfail(strict=True, reason=NOT_EXACT[name]))
    yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_class_is_exact_through_torchax(name, tmp_path):
  case = CASES[name]
  row = conformance.run_case(name, CLASSES[name], case, tmp_path, bf16=False, frames=False, tiled=False)
  if case.decode_input is None and case.encode_input is None:
    assert not row.tier and row.reason  # nothing to run: the row says why
    return
  assert row.tier == "generic"
  assert row.exact, f"{name}: {row.reason} (decode err {row.decode_err}, encode err {row.encode_err})"
