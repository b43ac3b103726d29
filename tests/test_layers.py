"""The package's imports point one way, and its public API is pinned."""

from __future__ import annotations

import ast
from pathlib import Path

import llmrerank

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
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def test_no_import_points_the_wrong_way() -> None:
    reverse = []
    for path in PACKAGE.rglob("*.py"):
        importer = module_name(path)
        for target in imports_of(path):
            for low, high in FORBIDDEN:
                if (importer == low or importer.startswith(low + ".")) and target.startswith(high):
                    reverse.append(f"{importer} imports {target}")
    assert not reverse, reverse


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
    assert sorted(llmrerank.__all__) == sorted(
        [
            "DEFAULT_RUBRIC",
            "Backend",
            "BackendError",
            "BackendTimeoutError",
            "BudgetError",
            "CacheError",
            "CacheMode",
            "CallCancelledError",
            "CallRecord",
            "Candidate",
            "CandidateError",
            "Cascade",
            "CrossEncoderReranker",
            "DenseReranker",
            "DiskCache",
            "Endpoint",
            "Grade",
            "LLMRerankError",
            "LLMReranker",
            "Listwise",
            "LocalServerError",
            "MalformedReplyError",
            "Pairwise",
            "ParseError",
            "PipelineSpec",
            "Pointwise",
            "Prompt",
            "PromptError",
            "PromptLibrary",
            "RankedCandidate",
            "Ranking",
            "RateLimitError",
            "Reranker",
            "RetryPolicy",
            "Rubric",
            "RubricError",
            "Setwise",
            "Stage",
            "StageReport",
            "StageTimeoutError",
            "Strategy",
            "TerminalBackendError",
            "TransientBackendError",
            "Usage",
            "UserError",
            "as_candidates",
            "as_request",
            "hybrid",
            "list_prompts",
            "load_prompt",
            "make_backend",
            "make_strategy",
            "ranking_from_order",
            "ranking_from_scores",
            "register_backend",
        ]
    )
    for name in llmrerank.__all__:
        assert getattr(llmrerank, name) is not None


def test_every_module_stays_small_or_says_why() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text("utf-8")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > 320 and "Long because" not in docstring:  # about 300
            long.append(f"{module_name(path)}: {text.count(chr(10))} lines")
    assert not long, long
