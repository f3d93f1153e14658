"""The import graph follows the data flow (DESIGN.md): a module imports only from its own layer or below.

Walks every module's imports, function-level ones included, so a lazy import cannot point up a layer either.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scopebench"
#: low to high; top-level modules of the package (atomic, device, distributed, keys, names, paper, precision) are
#: layer 0
LAYERS = [
    ("foundation", {"atomic", "device", "distributed", "keys", "names", "paper", "precision"}),
    ("building blocks", {"backbones", "data", "sae", "emd", "probes", "baselines"}),
    ("pipeline", {"pipeline"}),
    ("analyses", {"analyses"}),
    ("claims", {"claims"}),
    ("results", {"results"}),
    ("suite", {"suite"}),
    ("plugin", {"plugin"}),
    ("cli", {"cli"}),
]
LAYER_OF = {part: index for index, (_, parts) in enumerate(LAYERS) for part in parts}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "scopebench" or len(parts) == 1:
        return None  # the package itself: its __init__ is the public API, above every layer
    return LAYER_OF.get(parts[1])


def _imports(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if path.name != "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name.startswith("scopebench")}


def test_every_folder_of_the_package_has_a_layer() -> None:
    unknown = sorted({m.split(".")[1] for m, _ in _modules() if m.count(".") >= 1} - set(LAYER_OF))
    assert not unknown, f"give {unknown} a layer in LAYERS (and DESIGN.md's layer list)"


def test_no_import_points_up_a_layer() -> None:
    upward = []
    for module, path in _modules():
        own = _layer(module)
        if own is None:
            continue
        for imported in _imports(path, module):
            target = _layer(imported)
            if target is not None and target > own:
                upward.append(f"{module} ({LAYERS[own][0]}) imports {imported} ({LAYERS[target][0]})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_the_checker_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its power: a building block importing the suite is reported."""
    fake = tmp_path / "scopebench" / "sae" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from scopebench.suite.workbench import Workbench\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "scopebench")
    with pytest.raises(AssertionError, match=r"scopebench.sae.bad \(building blocks\) imports "
                                             r"scopebench.suite.workbench \(suite\)"):
        test_no_import_points_up_a_layer()
