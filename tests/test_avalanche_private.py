"""The private Avalanche names the package relies on are still there.

A module of ``bdr_avalanche`` that uses a private Avalanche name (an
underscore class, function or method, or an attribute an object sets in
its ``__init__``) lists it in a module-level ``AVALANCHE_PRIVATE`` tuple,
next to the code that uses it: a dotted path that imports
(``module.name`` or ``module.Class._method``), or ``module.Class()._attr``
for an instance attribute, checked on an instance built by
:data:`INSTANCES`. When an Avalanche upgrade drops one of them, the test
of that name fails with one line that says which name and who uses it,
rather than a training run failing deep inside Avalanche.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avalanche
import pytest
from avalanche.evaluation.metrics import Mean
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.optim import SGD

import bdr_avalanche

PACKAGE = Path(bdr_avalanche.__file__).parent
LIST = "AVALANCHE_PRIVATE"


def _tiny_template(cls: type) -> Any:
    model = nn.Linear(2, 2)
    return cls(
        model=model,
        optimizer=SGD(model.parameters(), lr=0.1),
        evaluator=EvaluationPlugin(loggers=[]),
    )


INSTANCES: dict[str, Callable[[type], Any]] = {
    "avalanche.training.templates.SupervisedTemplate": _tiny_template,
    "avalanche.evaluation.GenericPluginMetric": lambda cls: cls(
        Mean(), reset_at="epoch", emit_at="epoch", mode="train"
    ),
}
"""How to build an instance of a class whose instance attributes are
listed (``module.Class()._attr``), by the class's dotted path."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _trees() -> dict[str, ast.Module]:
    """The syntax tree of every module of the package, by module name."""
    return {
        _module_name(path): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _defines_list(tree: ast.Module) -> bool:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == LIST for t in targets):
            return True
    return False


def collect() -> dict[str, tuple[str, ...]]:
    """Every module of the package with a module-level ``AVALANCHE_PRIVATE``,
    imported, and its list."""
    lists = {}
    for name, tree in _trees().items():
        if _defines_list(tree):
            lists[name] = getattr(importlib.import_module(name), LIST)
    return lists


def _resolve_path(path: str) -> Any:
    """The object at the dotted ``path``: the longest prefix that imports,
    then attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        try:
            obj = importlib.import_module(prefix)
        except ModuleNotFoundError as err:
            if err.name is not None and prefix.startswith(err.name):
                continue
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"no module named {parts[0]!r}")


def resolve(path: str) -> Any:
    """The object that ``path`` names (see the module)."""
    if "()." not in path:
        return _resolve_path(path)
    owner, attr = path.split("().")
    if owner not in INSTANCES:
        raise LookupError(
            f"no recipe for an instance of {owner}: add one to INSTANCES in "
            f"{Path(__file__).name}"
        )
    instance = INSTANCES[owner](_resolve_path(owner))
    return getattr(instance, attr)


def check(module: str, path: str) -> str | None:
    """``None`` if ``path`` is there, else the one-line failure message."""
    try:
        resolve(path)
    except (ImportError, AttributeError, LookupError) as err:
        return (
            f"Avalanche {avalanche.__version__} no longer has {path}, used by "
            f"{module}: {type(err).__name__}: {err}"
        )
    return None


ENTRIES = [(module, path) for module, paths in collect().items() for path in paths]


@pytest.mark.parametrize(
    ("module", "path"), ENTRIES, ids=[f"{m.split('.', 1)[1]}:{p}" for m, p in ENTRIES]
)
def test_private_name_is_still_there(module: str, path: str):
    problem = check(module, path)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def test_collector_finds_every_list():
    pattern = re.compile(rf"^\s*{LIST}\b", re.MULTILINE)
    written = {
        _module_name(path)
        for path in PACKAGE.rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    }
    lists = collect()
    assert set(lists) == written, (
        f"{LIST} written in {sorted(written)} but collected from {sorted(lists)}: "
        "define it once, at module level, as a tuple"
    )
    assert "bdr_avalanche.plugins._adapters" in lists
    for module, paths in lists.items():
        assert isinstance(paths, tuple), module
        assert all(isinstance(p, str) and p.startswith("avalanche.") for p in paths)


def test_private_imports_are_listed():
    """Every ``from avalanche... import _name`` in the package is in its
    module's list, so a new use cannot be forgotten."""
    lists = collect()
    missing = [
        f"{module}: {node.module}.{alias.name}"
        for module, tree in _trees().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").split(".")[0] == "avalanche"
        for alias in node.names
        if re.fullmatch(r"_[^_].*", alias.name)
        and f"{node.module}.{alias.name}" not in lists.get(module, ())
    ]
    assert not missing, f"add to the module's {LIST}: {missing}"


def test_a_missing_name_fails_in_one_clear_line(monkeypatch):
    import avalanche.training.supervised.icarl as icarl

    monkeypatch.delattr(icarl, "_ICaRLPlugin")
    problem = check(
        "bdr_avalanche.plugins._adapters",
        "avalanche.training.supervised.icarl._ICaRLPlugin",
    )
    assert problem is not None
    assert problem.startswith(
        f"Avalanche {avalanche.__version__} no longer has "
        "avalanche.training.supervised.icarl._ICaRLPlugin, used by "
        "bdr_avalanche.plugins._adapters: AttributeError: "
    )
    assert "\n" not in problem


def test_a_missing_instance_attribute_fails_clearly(monkeypatch):
    init = SupervisedTemplate.__init__

    def without_criterion(self, *args, **kwargs):
        init(self, *args, **kwargs)
        del self._criterion

    monkeypatch.setattr(SupervisedTemplate, "__init__", without_criterion)
    path = "avalanche.training.templates.SupervisedTemplate()._criterion"
    problem = check("bdr_avalanche.plugins.compat", path)
    assert problem is not None
    assert problem.startswith(
        f"Avalanche {avalanche.__version__} no longer has {path}, used by "
        "bdr_avalanche.plugins.compat: AttributeError"
    )


def test_every_instance_recipe_builds():
    """The recipes themselves work, so that a failure above is Avalanche's."""
    for owner, build in INSTANCES.items():
        cls = resolve(owner)
        assert isinstance(cls, type), owner
        assert isinstance(build(cls), cls), owner
