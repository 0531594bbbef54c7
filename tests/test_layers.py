"""The package's layers: schema -> models -> store -> indexer | search -> cli. A layer imports only the layers
below it, so a change to one side (indexing or searching) cannot reach into the other."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "msearch"
# What each subpackage may import from msearch (besides itself and msearch's top-level helpers).
ALLOWED = {
    "schema": set(),
    "models": {"schema"},
    "store": {"schema", "models"},
    "indexer": {"schema", "models", "store"},
    "search": {"schema", "models", "store"},
}
TOP_LEVEL_HELPERS = {"config", "__version__"}  # msearch.config, `from msearch import __version__`


def _imports(path: Path) -> set[str]:
    """The msearch subpackages a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "msearch" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    crossing = {}
    for module in sorted((PACKAGE / layer).rglob("*.py")):
        wrong = _imports(module) - ALLOWED[layer] - TOP_LEVEL_HELPERS - {layer}
        if wrong:
            crossing[str(module.relative_to(PACKAGE))] = sorted(wrong)
    assert crossing == {}, f"imports that climb or cross layers: {crossing}"


def test_the_rule_catches_a_crossing_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from msearch.indexer.readers import discover\n")
    assert _imports(module) == {"indexer"}
