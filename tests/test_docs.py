"""The documentation site: every public name of the package (every ``__all__`` of its public modules)
is rendered by a ``::: module`` directive of the API reference, and every page of ``docs/`` is in the
navigation (``.ci/run`` builds the site with ``mkdocs build --strict``, which fails on broken references)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import yaml

import sashimi

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _public_modules() -> list[str]:
    names = ["sashimi"]
    for info in pkgutil.walk_packages(sashimi.__path__, "sashimi."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if info.name.startswith("sashimi.kernels.triton") or info.name.startswith("sashimi.kernels.native"):
            continue  # backends behind the public kernel functions
        names.append(info.name)
    return names


def _directives() -> set[str]:
    found = set()
    for page in (DOCS / "api").glob("*.md"):
        found.update(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"), flags=re.M))
    return found


def test_every_public_name_is_in_the_api_reference():
    directives = _directives()
    documented: set[tuple[str, str]] = set()
    exported: dict[str, set[str]] = {}
    for mod in directives:
        m = importlib.import_module(mod)
        for name in getattr(m, "__all__", []):
            obj = getattr(m, name)
            documented.add((getattr(obj, "__module__", mod), name))
            exported.setdefault(name, set()).add(mod)
    missing = []
    for mod in _public_modules():
        m = importlib.import_module(mod)
        for name in getattr(m, "__all__", []):
            obj = getattr(m, name)
            if mod not in directives and (getattr(obj, "__module__", mod), name) not in documented \
                    and name not in exported:
                missing.append(f"{mod}.{name}")
    assert not missing, f"public names missing from docs/api: {missing}"


def test_every_page_is_in_the_navigation():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(node) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for x in node for p in pages(x)]
        return [p for v in node.values() for p in pages(v)]

    listed = set(pages(nav))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if not p.name.startswith("_")}
    assert on_disk == listed, f"not in nav: {sorted(on_disk - listed)}; missing files: {sorted(listed - on_disk)}"
