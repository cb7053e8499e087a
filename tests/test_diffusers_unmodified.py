"""The torchax path runs diffusers' own files: they must match the hashes their wheel recorded."""

from __future__ import annotations

import base64
import csv
import hashlib
from importlib import metadata

import numpy as np
import pytest

from torchax_vae.runtime.fingerprint import DIFFUSERS_MODEL_FILES

MODEL_FILES = sorted(DIFFUSERS_MODEL_FILES.values())  # every adapter's model file (CogVideoX, Wan, HunyuanVideo, LTX, LTX-2)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_file_matches_wheel_record(name):
  dist = metadata.distribution("diffusers")
  relative = f"diffusers/models/autoencoders/{name}"
  rows = {row[0]: row[1] for row in csv.reader(dist.read_text("RECORD").splitlines()) if row}
  algorithm, _, recorded = rows[relative].partition("=")
  assert algorithm == "sha256"
  data = dist.locate_file(relative).read_bytes()
  actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
  assert actual == recorded, f"{relative} differs from the diffusers {dist.version} wheel"


def test_torchax_path_runs_the_installed_diffusers_class(tiny_dir):
  import diffusers

  import torchax_vae

  vae = torchax_vae.load(tiny_dir)
  assert type(vae.module) is diffusers.AutoencoderKLCogVideoX
  assert type(vae.module).__module__ == "diffusers.models.autoencoders.autoencoder_kl_cogvideox"


def test_torchax_path_runs_the_installed_wan_class(tiny_wan_dirs):
  import diffusers

  import torchax_vae

  vae = torchax_vae.load(tiny_wan_dirs["2.2"], cache_dir=False)
  assert type(vae.module) is diffusers.AutoencoderKLWan
  assert type(vae.module).__module__ == "diffusers.models.autoencoders.autoencoder_kl_wan"
  # Decoding keeps no state on the module: diffusers' own cache attributes are never created.
  vae.decode(np.zeros((1, 4, 2, 2, 2), np.float32))
  assert not hasattr(vae.module, "_feat_map") and not hasattr(vae.module, "_conv_idx")
