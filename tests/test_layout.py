"""The house's shape, read from the source (nothing imported): no import circle between the project's
modules, and the torch-free side (``torchax_vae.core``, ``torchax_vae.runtime``) imports neither the
torch side (``torchax_vae.tracing``) nor torch, torchax or diffusers at module level."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torchax_vae", "native_flax", "compare")
TORCH_SIDE = ("torch", "torchax", "diffusers", "torchax_vae.tracing")


def _modules() -> dict[str, Path]:
  modules = {}
  for package in PACKAGES:
    for path in (ROOT / package).rglob("*.py"):
      parts = path.relative_to(ROOT).with_suffix("").parts
      modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return modules


def _imports(name: str, path: Path, *, module_level: bool) -> set[str]:
  """Absolute names of what ``name`` imports: every import statement, or only the module-level ones."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
  found = set()
  for node in tree.body if module_level else ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
      base = base if node.level else node.module
      # ``from . import layers`` imports the module ``layers``; ``from .x import y`` imports ``x``.
      found.update(f"{base}.{alias.name}" for alias in node.names)
      if node.module:
        found.add(base)
  return found


def _within(module: str, packages: tuple[str, ...]) -> bool:
  return any(module == p or module.startswith(p + ".") for p in packages)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  return cycles


def test_no_import_circle():
  """Counting imports inside functions too: a lazy import that closes a circle is still one."""
  modules = _modules()
  graph = {name: _imports(name, path, module_level=False) & set(modules) - {name} for name, path in modules.items()}
  assert len(graph) > 50
  assert _cycles(graph) == []
  # The check sees a circle where there is one.
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_torch_free_side_imports_no_torch_at_module_level():
  modules = _modules()
  torch_free = [n for n in modules if n.startswith(("torchax_vae.core", "torchax_vae.runtime"))]
  assert "torchax_vae.runtime.generic" in torch_free and "torchax_vae.runtime.adapters" in torch_free
  offending = {
    name: sorted(i for i in _imports(name, modules[name], module_level=True) if _within(i, TORCH_SIDE))
    for name in [*torch_free, "torchax_vae"]
  }
  assert {k: v for k, v in offending.items() if v} == {}
  # ... while the torch side does import it (the check reads what it should).
  assert "torch" in _imports("torchax_vae.tracing.backend", modules["torchax_vae.tracing.backend"], module_level=True)


def test_every_package_directory_is_a_package():
  """A folder of modules without ``__init__.py`` imports from a checkout (a namespace package) but is
  left out of the wheel (setuptools' ``packages.find``)."""
  folders = {p.parent for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
  assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []
