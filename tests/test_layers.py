"""The package's layers: schema -> models -> store -> indexer | search -> cli. A layer imports only the layers
below it, so a change to one side (indexing or searching) cannot reach into the other. msearch.client stands
apart: it talks to a server over HTTP, with httpx and the standard library alone."""

import ast
import sys
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


def test_the_client_imports_only_httpx_and_the_standard_library():
    tree = ast.parse((PACKAGE / "client.py").read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
    assert modules and modules - {"httpx", "__future__"} <= set(sys.stdlib_module_names), sorted(modules)


def test_the_rule_catches_a_crossing_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from msearch.indexer.readers import discover\n")
    assert _imports(module) == {"indexer"}


def _module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, by its dotted name (a package by its own, for its __init__.py)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`, which never runs, so cannot take part in an import cycle."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def _import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module level or inside functions (`import a.b`, `from a
    import b` where b is a module, `from a.b import name`, relative imports alike)."""
    modules = _module_names(root)

    def resolve(name: str) -> str | None:  # the longest prefix of a dotted name that is one of the modules
        parts = name.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_only(tree)
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets.update(resolve(f"{base}.{alias.name}") for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(resolve(alias.name) for alias in node.names)
        graph[name] = targets - {None, name}
    return graph


def _cycles(graph: dict[str, set[str]], most: int = 100) -> set[str]:
    """The graph's elementary cycles as chains "a -> b -> a", each from its first module in sorted order (at most
    `most` of them): depth-first from each module through the modules after it."""
    found = set()

    def walk(path: list[str]) -> None:
        start = path[0]
        for successor in sorted(graph[path[-1]]):
            if len(found) >= most:
                return
            if successor == start:
                found.add(" -> ".join([*path, start]))
            elif successor > start and successor not in path:
                walk([*path, successor])

    for start in sorted(graph):
        walk([start])
    return found


def test_no_import_cycles():
    cycles = _cycles(_import_graph(PACKAGE))
    assert cycles == set(), "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.b import g\n")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def g():\n    from ..a import f\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\nimport pkg.sub\n"
    )
    graph = _import_graph(package)
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub.b"},
        "pkg.c": {"pkg.sub"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.a"},
    }
    assert _cycles(graph) == {"pkg.a -> pkg.sub.b -> pkg.a"}
