"""Rubric identity: canonical hashes, the versioned library and its lock, the CLI, and the
rubric named on every call record, trace line, eval result and service response."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from llmrerank import DEFAULT_RUBRIC, PipelineSpec, Rubric
from llmrerank.cli import main
from llmrerank.errors import RubricError
from llmrerank.evaluation import load_experiment, run_experiment
from llmrerank.rubrics import RubricLibrary, load_rubric, release_rubrics
from llmrerank.serve.process import ServiceProcess

from .conftest import TrecQuery

EXAMPLES = Path(__file__).resolve().parent.parent / "evals" / "rubrics"
RUBRIC = """\
name: kb
description: Passages judged for an engineer in an incident.
criteria:
  - Names the concrete fix, not just the topic.
scale:
  - {grade: 0, label: irrelevant, meaning: About something else.}
  - {grade: 1, label: background, meaning: On the topic but no fix.}
  - {grade: 2, label: partial, meaning: Part of the fix.}
  - {grade: 3, label: actionable, meaning: The whole fix.}
"""
# the same rubric with one word changed
EDITED = RUBRIC.replace("the concrete fix", "the exact fix")


def library(tmp_path: Path, *versions: str) -> Path:
    root = tmp_path / "rubrics"
    (root / "kb").mkdir(parents=True)
    for number, text in enumerate(versions, start=1):
        (root / "kb" / f"v{number}.yaml").write_text(text)
    return root


def test_the_hash_is_of_the_content_not_the_layout(tmp_path: Path) -> None:
    plain = tmp_path / "a.yaml"
    plain.write_text(RUBRIC)
    # comments, key order, flow vs block style and folding do not change the content
    reordered = yaml.safe_load(RUBRIC)
    styled = tmp_path / "b.yaml"
    styled.write_text(
        "# our rubric\n"
        + yaml.safe_dump({k: reordered[k] for k in ("scale", "criteria", "description", "name")}, width=30)
    )
    edited = tmp_path / "c.yaml"
    edited.write_text(EDITED)
    a, b, c = (Rubric.load(p) for p in (plain, styled, edited))
    assert a == b
    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256
    assert len(a.sha256) == 64
    assert a.ref == "kb"  # a loose file without a version


def test_the_builtin_rubric_is_pinned() -> None:
    # general-relevance@1 is released: its content (and so its hash) never changes
    assert DEFAULT_RUBRIC.ref == "general-relevance@1"
    assert DEFAULT_RUBRIC.sha256 == "3bbc93deb3b4a2a06ef406ca468ad8e9ffa3728401b77d16b571cf02051a1c5b"
    assert load_rubric("general-relevance") == DEFAULT_RUBRIC


def test_refs_resolve_to_versions_and_a_released_edit_is_refused(tmp_path: Path) -> None:
    root = library(tmp_path, RUBRIC, EDITED)
    shelf = RubricLibrary([root])
    assert shelf.load("kb@latest").ref == "kb@2"
    assert shelf.load("kb").ref == "kb@2"
    assert shelf.load("kb@1").sha256 == Rubric.from_dict(yaml.safe_load(RUBRIC)).sha256
    assert [e.status for e in shelf.list() if e.rubric.name == "kb"] == ["draft", "draft"]

    assert release_rubrics(root) == ["kb@1", "kb@2"]
    assert release_rubrics(root) == []
    assert [e.status for e in shelf.list() if e.rubric.name == "kb"] == ["released", "released"]
    # a comment or re-indentation is not an edit
    (root / "kb" / "v1.yaml").write_text("# reviewed 2026-12-01\n" + RUBRIC)
    assert shelf.load("kb@1").ref == "kb@1"
    # one changed word is
    (root / "kb" / "v1.yaml").write_text(RUBRIC.replace("Part of the fix", "Part of a fix"))
    with pytest.raises(RubricError, match=r"released rubric kb@1 was edited .* add kb/v3.yaml instead"):
        shelf.load("kb@1")
    # loading the file by its path checks the same lock
    with pytest.raises(RubricError, match="released rubric kb@1 was edited"):
        load_rubric(root / "kb" / "v1.yaml")
    with pytest.raises(RubricError, match="has no version 7"):
        shelf.load("kb@7")
    with pytest.raises(RubricError, match="no rubric 'nope'"):
        shelf.load("nope@1")


def test_a_file_whose_name_disagrees_with_its_place_is_an_error(tmp_path: Path) -> None:
    root = library(tmp_path, RUBRIC.replace("name: kb", "name: other"))
    with pytest.raises(RubricError, match="its place in the library says kb@1"):
        RubricLibrary([root]).load("kb@1")


def test_the_shipped_rubrics_are_released_and_the_old_paths_still_load() -> None:
    shelf = RubricLibrary([EXAMPLES])
    for name in ("support-kb", "web-passages"):
        entry = shelf.entry(f"{name}@1")
        assert entry.released
        # the path used before versioning is a link to v1, and is identified as such
        assert load_rubric(str(EXAMPLES / f"{name}.yaml")) == entry.rubric
        assert Rubric.load(EXAMPLES / f"{name}.yaml").ref == f"{name}@1"


def test_rubrics_cli_lists_shows_diffs_and_releases(tmp_path: Path) -> None:
    root = library(tmp_path, RUBRIC, EDITED)
    runner = CliRunner()
    listed = runner.invoke(main, ["rubrics", "list", "--rubric-dir", str(root)])
    assert listed.exit_code == 0, listed.output
    assert "kb@1" in listed.output
    assert "kb@2" in listed.output
    assert "general-relevance@1" in listed.output
    shown = runner.invoke(main, ["rubrics", "show", "kb@2", "--rubric-dir", str(root)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"# kb@2  sha256 {load_rubric('kb@2', search_path=[root]).sha256}")
    assert "Names the exact fix" in shown.output
    diff = runner.invoke(main, ["rubrics", "diff", "kb@1", "kb@2", "--rubric-dir", str(root)])
    assert diff.exit_code == 0, diff.output
    assert "-- Names the concrete fix, not just the topic." in diff.output
    assert "+- Names the exact fix, not just the topic." in diff.output
    released = runner.invoke(main, ["rubrics", "release", str(root)])
    assert released.output.splitlines() == ["released kb@1", "released kb@2"]
    (root / "kb" / "v2.yaml").write_text(RUBRIC)
    refused = runner.invoke(main, ["rubrics", "show", "kb@2", "--rubric-dir", str(root)])
    assert refused.exit_code == 2
    assert "released versions are immutable: add kb/v3.yaml instead" in refused.output


def test_one_changed_word_tells_call_records_traces_and_eval_results_apart(tmp_path: Path) -> None:
    root = library(tmp_path, RUBRIC, EDITED)
    config = tmp_path / "exp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "rubric-identity",
                "datasets": [{"name": "dl19", "limit": 2, "depth": 4}],
                "metrics": ["ndcg@10"],
                "pipelines": [
                    {
                        "name": "p",
                        "llm": "sim:dl19@1.0",
                        "strategy": "pointwise",
                        "rubric": [str(root / "kb" / "v1.yaml"), str(root / "kb" / "v2.yaml")],
                    }
                ],
            }
        )
    )
    results = [r.data for r in run_experiment(load_experiment(config), tmp_path / "out", progress=False)]
    assert [r["pipeline"]["name"] for r in results] == ["p[kb@1]", "p[kb@2]"]
    first, second = (r["rubrics"] for r in results)
    assert [x["ref"] for x in first] == ["kb@1"]
    assert [x["ref"] for x in second] == ["kb@2"]
    assert first[0]["sha256"] != second[0]["sha256"]
    assert first[0]["sha256"] == load_rubric(root / "kb" / "v1.yaml").sha256

    trace = tmp_path / "trace.jsonl"
    query = "what is a physician's assistant"
    for path in (root / "kb" / "v1.yaml", root / "kb" / "v2.yaml"):
        spec = PipelineSpec(llm="sim:dl19", strategy="pointwise", rubric=str(path), trace=trace)
        ranking = spec.build().rerank(query, ["a passage", "another passage"])
        records = {(c.rubric_ref, c.rubric_sha256) for c in ranking.calls}
        assert records == {(f"kb@{path.stem[1:]}", load_rubric(path).sha256)}
        assert ranking.calls[0].to_dict()["rubric_sha256"] == load_rubric(path).sha256
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [line["rubrics"] for line in lines] == [
        [f"kb@1 {load_rubric(root / 'kb' / 'v1.yaml').sha256}"],
        [f"kb@2 {load_rubric(root / 'kb' / 'v2.yaml').sha256}"],
    ]


def test_the_service_names_the_rubric_a_request_used(
    tmp_path: Path, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    root = library(tmp_path, RUBRIC, EDITED)
    (tmp_path / "work").mkdir()
    config = {
        "default": "p",
        "cache_dir": str(tmp_path / "cache"),
        "pipelines": {"p": {"llm": "sim:dl19", "strategy": "pointwise", "rubric": "kb@1"}},
        "rubrics": {"draft": "kb@2"},
    }
    query = dl19[0][0]
    body = {"query": query.query, "documents": [c["text"] for c in query.candidates[:3]]}
    with (
        ServiceProcess(config, tmp_path / "work", env={"LLMRERANK_RUBRICS_PATH": str(root)}) as service,
        httpx.Client(base_url=service.url, timeout=30) as client,
    ):
        plain = client.post("/v2/rerank", json=body).json()["meta"]
        draft = client.post("/v2/rerank", json={**body, "rubric": "draft"}).json()["meta"]
    assert plain["rubric"] == {"ref": "kb@1", "sha256": load_rubric("kb@1", search_path=[root]).sha256}
    assert draft["rubric"] == {"ref": "kb@2", "sha256": load_rubric("kb@2", search_path=[root]).sha256}
