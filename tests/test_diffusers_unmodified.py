"""The torchax path runs diffusers' own file: it must match the hash its wheel recorded."""

from __future__ import annotations

import base64
import csv
import hashlib
from importlib import metadata


def test_autoencoder_kl_cogvideox_matches_wheel_record():
  dist = metadata.distribution("diffusers")
  relative = "diffusers/models/autoencoders/autoencoder_kl_cogvideox.py"
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
