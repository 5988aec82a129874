"""The package's shape, as issue 20 set it: no import cycle, no function
over 60 lines, a LUCIR strategy class under 250 lines, and each
hyper-parameter declared once (in ``bdr_avalanche/params.py``).

The checks read the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bdr_avalanche"
MAX_FUNCTION_LINES = 60
MAX_LUCIR_LINES = 250


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run (those under ``if TYPE_CHECKING:``
    do not), at any depth (an import inside a function counts)."""
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and id(node) not in typing_only
    ]


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = here[: len(here) - node.level + 1] if node.level else []
        target = ".".join(base + ([node.module] if node.module else []))
        submodules = {f"{target}.{alias.name}" for alias in node.names}
        submodules &= modules.keys()
        # `from pkg import submodule` needs the submodule, not pkg's names
        found |= submodules if len(submodules) == len(node.names) else {target}
        found |= submodules
    return (found & modules.keys()) - {name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state and (found := visit(other)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert graph["bdr_avalanche.strategy"], "the import graph was not read"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_is_over_60_lines():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
        f"({node.end_lineno - node.lineno + 1} lines)"
        for path in _modules().values()
        for node in _functions(path)
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "split these functions:\n" + "\n".join(long)


def test_the_lucir_class_is_under_250_lines():
    tree = ast.parse((PACKAGE / "strategy.py").read_text())
    (lucir,) = [
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LUCIR"
    ]
    assert lucir.end_lineno - lucir.lineno + 1 < MAX_LUCIR_LINES


def test_hyper_parameters_are_declared_only_in_params():
    """``hparam(...)`` and ``HParam(...)`` fields are written in
    ``params.py`` alone; the config's own keys (run settings, not
    hyper-parameters of a method) are in its schema."""
    allowed = {PACKAGE / "params.py", PACKAGE / "experiment" / "config" / "schema.py"}
    writers = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in _modules().values()
        if path not in allowed
        and any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hparam", "HParam")
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert not writers, f"hyper-parameters declared outside params.py: {writers}"
