"""What identifies the torchax path's compiled programs, read without importing torch, torchax or diffusers.

A stored program's key holds the torch, torchax and diffusers versions (package metadata) and a
digest of every file the program comes from (the bridge's, the model's builder, diffusers' model
file), read from disk. A new version or a changed file gives a new key, hence new programs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Any

from ..core import conv as conv_lib
from ..core import kinds
from ..core import norm as norm_lib
from ..core import resize as resize_lib
from ..core import transposes as transposes_lib
from ..core.executables import source_digest

RUNTIME = Path(__file__).resolve().parent
TRACING = RUNTIME.parent / "tracing"  # the torch side: read here, never imported
# The files every torchax program comes from besides its own builder and diffusers model file.
BRIDGE_FILES = (TRACING / "backend.py", TRACING / "_torchax_compat.py", RUNTIME / "contract.py")
BRIDGE_MODULES = (conv_lib, norm_lib, resize_lib, transposes_lib)
# adapter name -> diffusers' model file (under diffusers/models/autoencoders/), hashed into the key
# without importing diffusers; tests check it is the file each builder imports.
DIFFUSERS_MODEL_FILES = {
  "cogvideox": "autoencoder_kl_cogvideox.py",
  "wan": "autoencoder_kl_wan.py",
  "hunyuan_video": "autoencoder_kl_hunyuan_video.py",
  "hunyuan_video15": "autoencoder_kl_hunyuanvideo15.py",
  "ltx_video": "autoencoder_kl_ltx.py",
  "ltx2_video": "autoencoder_kl_ltx2.py",
}


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def diffusers_autoencoders_dir() -> Path:
  """The installed diffusers' ``models/autoencoders`` directory, found without importing diffusers."""
  spec = importlib.util.find_spec("diffusers")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("diffusers is not installed: the torchax path runs diffusers' modules")
  return Path(next(iter(spec.submodule_search_locations))) / "models" / "autoencoders"


def diffusers_model_file(adapter_name: str) -> Path:
  """The installed diffusers' model file of an adapter, found without importing diffusers."""
  return diffusers_autoencoders_dir() / DIFFUSERS_MODEL_FILES[adapter_name]


def diffusers_class_file(class_name: str) -> Path | None:
  """The file under diffusers' ``models/autoencoders`` that defines ``class_name`` (read, not
  imported), or ``None`` if none does; tests check it is the file of every class diffusers exports."""
  definition = re.compile(rf"^class {re.escape(class_name)}\(", re.MULTILINE)
  for path in sorted(diffusers_autoencoders_dir().glob("*.py")):
    if definition.search(path.read_text(encoding="utf-8")):
      return path
  return None


def code_fingerprint(*sources) -> dict[str, Any]:
  """What compiled torchax programs depend on besides config, dtype, mesh and inputs: the torch,
  torchax and diffusers versions (package metadata) and a digest of the bridge's files and ``sources``
  (the path's own files and the diffusers model file), read from disk: nothing is imported."""
  conv3d = conv_lib.conv3d_form()  # fixed for this model's programs (and in their key)
  return {
    "torch": _version("torch"),
    "torchax": _version("torchax"),
    "diffusers": _version("diffusers"),
    "source": source_digest(*BRIDGE_FILES, *BRIDGE_MODULES, *sources),
    "conv3d": conv3d,
    "sink_transposes": transposes_lib.enabled(),
  }


def adapter_fingerprint(adapter_name: str) -> dict[str, Any]:
  """What an adapter's compiled programs depend on besides config, dtype, mesh and inputs."""
  return code_fingerprint(TRACING / "models" / f"{adapter_name}.py", diffusers_model_file(adapter_name))


def generic_fingerprint(model_file: Path) -> dict[str, Any]:
  """What the generic programs depend on besides class, config, dtype, mesh and inputs: the
  versions and the source files (the generic path's on both sides, the bridge's, the diffusers
  model file that defines the class)."""
  return code_fingerprint(RUNTIME / "generic.py", TRACING / "generic_module.py", kinds, model_file)
