"""The package's layers: each module imports only its own layer and the layers below it.

core (plain PyTorch) < algorithms, usb (USB integration) < cli (launcher) < tools (experiments);
``errors`` is shared by all. Read from the source with ``ast``, so nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Set

import pytest

from conftest import ROOT

PACKAGE = ROOT / "r2d2_plugin"
# What each layer may import from the plugin (besides itself and ``errors``), and whether it may
# import USB (``semilearn``).
ALLOWED = {"core": (set(), False), "algorithms": ({"core"}, True), "usb": ({"core"}, True),
           "cli": ({"core", "algorithms", "usb"}, True),
           "tools": ({"core", "algorithms", "usb", "cli"}, True)}


def imports(path: Path, layer: str) -> Set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module)
                continue
            base = ["r2d2_plugin", layer][: 3 - node.level]
            module = ".".join(base + ([node.module] if node.module else []))
            names.update(f"{module}.{alias.name}" if not node.module else module for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_lies_below(layer):
    lower, may_use_usb = ALLOWED[layer]
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files, f"no modules in r2d2_plugin/{layer}"
    for path in files:
        for name in imports(path, layer):
            top = name.split(".")
            if top[0] == "semilearn":
                assert may_use_usb, f"{path.relative_to(ROOT)} imports {name}: core is plain PyTorch"
            if top[0] == "r2d2_plugin" and len(top) > 1 and top[1] not in ("errors", layer):
                assert top[1] in lower, f"{path.relative_to(ROOT)} imports {name} (layer {top[1]})"
            if top[0] == "r2d2_plugin" and len(top) == 1:
                assert layer in ("cli", "tools"), f"{path.relative_to(ROOT)} imports the whole package"
