"""The package's imports point one way, without circles, and its public API is pinned."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import llmrerank
from llmrerank import errors

PACKAGE = Path(llmrerank.__file__).parent

# (importer prefix, forbidden import prefix): lower layers never import higher ones
FORBIDDEN = [
    ("llmrerank.backends", "llmrerank.testing"),
    ("llmrerank.backends", "llmrerank.rerankers"),
    ("llmrerank.backends", "llmrerank.strategies"),
    ("llmrerank.strategies", "llmrerank.backends"),
    ("llmrerank.strategies", "llmrerank.driver"),
    ("llmrerank.strategies", "llmrerank.rerankers"),
    ("llmrerank.rerankers", "llmrerank.testing"),
    ("llmrerank.rerankers", "llmrerank.evaluation"),
    ("llmrerank.rerankers", "llmrerank.cli"),
    ("llmrerank.driver", "llmrerank.rerankers"),
    ("llmrerank.pipeline", "llmrerank.evaluation"),
    # the evaluation wing: the runner calls its executors, which know only the records
    ("llmrerank.evaluation.records", "llmrerank.evaluation"),
    ("llmrerank.evaluation.batch", "llmrerank.evaluation.runner"),
    ("llmrerank.evaluation.batch", "llmrerank.evaluation.experiment"),
    ("llmrerank.evaluation.ray_executor", "llmrerank.evaluation.runner"),
    ("llmrerank.evaluation.ray_executor", "llmrerank.evaluation.experiment"),
    ("llmrerank.evaluation.experiment", "llmrerank.evaluation.runner"),
]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_from(path: Path, node: ast.ImportFrom, package: Path) -> str:
    """The module named by ``from ... import``, with relative levels resolved."""
    if not node.level:
        return node.module or ""
    name = module_name(path, package)
    base = (name if path.name == "__init__.py" else name.rsplit(".", 1)[0]).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            stem = _imported_from(path, node, PACKAGE)
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


class _RunningImports(ast.NodeVisitor):
    """Every import statement that can run: at module level and inside functions or classes
    (a deferred import closes a circle all the same), but not under ``if TYPE_CHECKING:``
    (annotations only: never executed, so they cannot form a circle at run time)."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(node)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports. ``from pkg import name`` points at
    ``pkg.name`` when that is a module, else at ``pkg``. A parent package that an import
    initialises on the way is not an edge (Python finishes a package's own imports first)."""
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        visitor = _RunningImports()
        visitor.visit(ast.parse(path.read_text("utf-8")))
        targets: set[str] = set()
        for node in visitor.found:
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name in paths)
                continue
            stem = _imported_from(path, node, package)
            for alias in node.names:
                if f"{stem}.{alias.name}" in paths:
                    targets.add(f"{stem}.{alias.name}")
                elif stem in paths:
                    targets.add(stem)
        graph[name] = targets - {name}
    return graph


def import_circle(package: Path) -> list[str] | None:
    """One circle of imports in ``package`` (a strongly connected component of more than one
    module in its import graph has one), or None."""
    try:
        graphlib.TopologicalSorter(import_graph(package)).prepare()
    except graphlib.CycleError as circle:
        return list(circle.args[1])
    return None


def test_no_import_points_the_wrong_way() -> None:
    reverse = []
    for path in PACKAGE.rglob("*.py"):
        importer = module_name(path)
        for target in imports_of(path):
            for low, high in FORBIDDEN:
                if (importer == low or importer.startswith(low + ".")) and target.startswith(high):
                    reverse.append(f"{importer} imports {target}")
    assert not reverse, reverse


def test_no_import_circle() -> None:
    circle = import_circle(PACKAGE)
    assert circle is None, " -> ".join(circle or ())


def test_an_import_circle_is_found_even_when_deferred(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for path, text in {
        "__init__.py": "from . import a\n",
        "a.py": "from .sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "def later() -> None:\n    from ..a import name\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import d\n",
        "d.py": "import pkg.c\n",
    }.items():
        (package / path).write_text(text)
    assert import_graph(package) == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.a"},
        "pkg.c": set(),
        "pkg.d": {"pkg.c"},
    }
    assert set(import_circle(package) or ()) == {"pkg.a", "pkg.sub.b"}
    (package / "sub/b.py").write_text("")
    assert import_circle(package) is None


FRAMEWORKS = {
    "langchain_core": "llmrerank.integrations.langchain",
    "langchain_classic": "llmrerank.integrations.langchain",
    "llama_index": "llmrerank.integrations.llamaindex",
    "haystack": "llmrerank.integrations.haystack",
}


def test_each_framework_is_imported_by_its_adapter_only() -> None:
    # the extras are optional: the rest of the library, the integrations package included,
    # imports without them, and no other module reaches for an adapter
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        importer = module_name(path)
        for target in imports_of(path):
            top = target.split(".")[0]
            if top in FRAMEWORKS and importer != FRAMEWORKS[top]:
                offenders.append(f"{importer} imports {target}")
            if target.startswith("llmrerank.integrations") and not importer.startswith(
                "llmrerank.integrations"
            ):
                offenders.append(f"{importer} imports {target}")
    assert not offenders, offenders


def test_value_types_import_only_the_error_tree() -> None:
    own = {t for t in imports_of(PACKAGE / "types.py") if t.startswith("llmrerank")}
    assert all(t == "llmrerank.errors" or t.startswith("llmrerank.errors.") for t in own), own


def test_no_repository_path_in_the_wheel() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text("utf-8")
        for needle in ("shared/assets", "REPO_ROOT"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
        # prompts.py alone falls back to the checkout's prompts/ in an editable install
        if "parent.parent" in text and path.name != "prompts.py":
            offenders.append(f"{path.name}: parent.parent")
    assert not offenders, offenders


def test_the_public_api_is_pinned() -> None:
    # what an application imports; the rest lives in its own module (llmrerank.errors, ...)
    assert sorted(llmrerank.__all__) == sorted(
        [
            "DEFAULT_RUBRIC",
            "BackendError",
            "CallRecord",
            "Candidate",
            "Cascade",
            "CrossEncoderReranker",
            "DenseReranker",
            "DiskCache",
            "Grade",
            "LLMRerankError",
            "LLMReranker",
            "ParseError",
            "PipelineSpec",
            "RankedCandidate",
            "Ranking",
            "Rubric",
            "Stage",
            "StageReport",
            "Usage",
            "UserError",
            "hybrid",
            "list_prompts",
            "load_prompt",
            "make_backend",
        ]
    )
    for name in llmrerank.__all__:
        assert getattr(llmrerank, name) is not None
    # the package imports only what it exports, on first use: no second, unlisted home for a
    # name, and what type checkers see (the TYPE_CHECKING imports) is what is loaded lazily
    tree = ast.parse((PACKAGE / "__init__.py").read_text("utf-8"))
    for_type_checkers = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in node.body
        if isinstance(inner, ast.ImportFrom)
        for alias in inner.names
    }
    lazy = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "lazy_attributes"
    )
    homes = ast.literal_eval(lazy.args[1])
    assert for_type_checkers == set(homes) == set(llmrerank.__all__)
    assert set(dir(llmrerank)) >= set(llmrerank.__all__)


# errors of the service and the CLI, caught there and turned into an HTTP status, a failed
# start or an exit code: no library caller meets them, so they stay beside their one use
INTERNAL_ERRORS = {
    "llmrerank.serve.limits.QueueFull",  # a full backend queue: 429
    "llmrerank.serve.pipelines.StartupError",  # a pipeline that cannot be built: no start
    "llmrerank.serve.pipelines.PipelineUnavailableError",  # a request for it: 400
    "llmrerank.cli.rerank.InputLineError",  # a bad input line: exit 2 or 1
}


def test_every_error_is_in_the_error_tree_module() -> None:
    raised = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.LLMRerankError)
    }
    assert raised == set(errors.__all__)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ClassDef) and path.name != "errors.py":
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                where = f"{module_name(path)}.{node.name}"
                assert where in INTERNAL_ERRORS or not bases & raised, f"{where} subclasses {bases & raised}"


def test_every_module_stays_small_or_says_why() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text("utf-8")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > 320 and "Long because" not in docstring:  # about 300
            long.append(f"{module_name(path)}: {text.count(chr(10))} lines")
    assert not long, long
