"""No module of the package uses another module's underscored names.

An underscored name is its module's own business: when another module needs it, it becomes
public and documented (``Driver.lookup``, ``Cascade.walk``, ``OpenAIBackend.parse_reply``).
Read from the source (AST), a module breaks the rule when it

* imports an underscored name (``from .runner import _query_record``), unless that name is
  a private module of its own package (``from . import _budget`` inside ``rerankers/``);
* imports a private module from outside the package that holds it (``rerankers/_budget.py``
  is for ``rerankers/`` only; ``llmrerank/_json.py`` for the whole library);
* reads or calls an underscored attribute that this module does not define itself
  (``driver._lookup(...)``, ``backend._sdk``; ``self._cache`` is fine when this module
  assigns or defines ``_cache``, not when it is inherited from a class in another module).

Names are matched, not types: a module that defines ``_x`` for itself may read ``other._x``.
Dunder names (``__name__``) are not private. ``ALLOWED`` lists the exceptions, each with
its reason; an entry that no longer occurs fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmrerank

PACKAGE = Path(llmrerank.__file__).parent


# (module, underscored name) -> why it may be used there
ALLOWED: dict[tuple[str, str], str] = {}


def is_private(name: str) -> bool:
    return name.startswith("_") and name != "_" and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of this library."""
    if dotted != "llmrerank" and not dotted.startswith("llmrerank."):
        return False
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def defined_names(tree: ast.Module) -> set[str]:
    """Every name this module defines: functions, classes, assigned names and attributes,
    arguments, import aliases."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
    return names


def private_module_outside_its_package(importer: str, target: str) -> bool:
    """``target`` has a private part (``a.b._c.d``) and ``importer`` is not inside the package
    that holds it (``a.b``); a private module of another library is never ours to import."""
    parts = target.split(".")
    for index, part in enumerate(parts):
        if is_private(part):
            home = ".".join(parts[:index])
            inside = importer == home or importer.startswith(home + ".")
            return not (home.startswith("llmrerank") and inside)
    return False


def violations(source: str, module: str, *, is_package: bool = False) -> list[tuple[str, str]]:
    """``(name, what)`` for each use in ``source`` (module ``module``) of another module's
    underscored name."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    own = defined_names(tree)
    found: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if private_module_outside_its_package(module, target):
                found.append((target, f"line {node.lineno}: from {target} import ..."))
            for alias in node.names:
                dotted = f"{target}.{alias.name}"
                if not is_private(alias.name):
                    continue
                # an underscored name, or a private module imported from outside its package
                if not is_module(dotted) or private_module_outside_its_package(module, dotted):
                    found.append((alias.name, f"line {node.lineno}: from {target} import {alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if private_module_outside_its_package(module, alias.name):
                    found.append((alias.name, f"line {node.lineno}: import {alias.name}"))
        elif isinstance(node, ast.Attribute) and is_private(node.attr) and node.attr not in own:
            found.append((node.attr, f"line {node.lineno}: {ast.unparse(node)}"))
    return found


def package_violations() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        uses = violations(path.read_text("utf-8"), module, is_package=path.name == "__init__.py")
        for name, what in uses:
            found.setdefault((module, name), []).append(what)
    return found


def test_no_module_uses_another_modules_underscored_names() -> None:
    found = package_violations()
    unexpected = {f"{module}: {what}" for (module, name), whats in found.items() for what in whats}
    unexpected -= {
        f"{module}: {what}"
        for (module, name), whats in found.items()
        if (module, name) in ALLOWED
        for what in whats
    }
    assert not unexpected, sorted(unexpected)


def test_every_allowed_exception_still_occurs() -> None:
    stale = set(ALLOWED) - set(package_violations())
    assert not stale, f"no longer used, drop from ALLOWED: {sorted(stale)}"


def test_the_scan_catches_each_kind_of_reach() -> None:
    source = """
from .runner import _query_record
from ..rerankers._budget import run_with_budget
import llmrerank.rerankers._trace
from .._json import dumps

class Local:
    def __init__(self):
        self._own = 1

    def use(self, driver, other):
        self._own
        other._own
        driver._lookup(1)
        self._inherited()
        return self.__class__.__name__
"""
    found = {name for name, _ in violations(source, "llmrerank.evaluation.batch")}
    assert found == {
        "_query_record",
        "llmrerank.rerankers._budget",
        "llmrerank.rerankers._trace",
        "_lookup",
        "_inherited",
    }
    # the same private modules are fine from inside their package
    inside = {
        name for name, _ in violations("from ._budget import run_with_budget", "llmrerank.rerankers.cascade")
    }
    assert inside == set()
    assert {
        name for name, _ in violations("from . import _sentence_transformers", "llmrerank.rerankers.dense")
    } == set()
    outside = violations("from ..rerankers import _sentence_transformers", "llmrerank.training.students")
    assert [name for name, _ in outside] == ["_sentence_transformers"]
