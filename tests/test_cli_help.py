"""The CLI as a new user meets it: help that is complete and not cut off, examples, every
strategy option as a flag, errors that point at the offline backend."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from llmrerank.cli import main
from llmrerank.cli.rerank import spec_from_flags
from llmrerank.errors import UserError
from llmrerank.testing import WireServer

from .conftest import TrecQuery
from .test_cli import jsonl_requests, judged, outputs, run_cli


def groups(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(command, click.Group):
        return []
    found = [path]
    for name, child in command.commands.items():
        found += groups(child, (*path, name))
    return found


@pytest.mark.parametrize("group", groups(main), ids=lambda p: " ".join(p) or "llmrerank")
def test_no_group_help_truncates_a_command_description(group: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*group, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands:")[1]
    assert listing.strip()
    assert "..." not in listing, listing


def test_rerank_help_has_examples_and_every_strategy_option() -> None:
    text = CliRunner().invoke(main, ["rerank", "--help"], terminal_width=100).output
    assert "Examples:" in text
    assert "llmrerank rerank -m sim:dl19" in text
    flags = ("--window", "--step", "--shuffles", "--listwise-method", "--first-token", "--pairwise-method")
    for flag in (*flags, "--set-size"):
        assert flag in text
    assert "sim:DATASET" in text
    assert "works offline" in text


def test_strategy_flags_become_strategy_options_of_their_strategy_only(tmp_path: Path) -> None:
    spec = spec_from_flags(
        model="sim:dl19", strategy="setwise", strategy_options={"set_size": 3, "window": None}
    )
    assert dict(spec.strategy_options) == {"set_size": 3}
    spec = spec_from_flags(
        model="sim:dl19", strategy="listwise", strategy_options={"window": 10, "step": 5, "shuffles": 1}
    )
    assert dict(spec.strategy_options) == {"window": 10, "step": 5, "shuffles": 1}
    with pytest.raises(UserError, match="--set-size is a setwise option; the strategy is listwise"):
        spec_from_flags(model="sim:dl19", strategy="listwise", strategy_options={"set_size": 3})
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nllm: sim:dl19\nstrategy: pairwise\nstrategy_options: {top_k: 5}\n")
    spec = spec_from_flags(pipeline=str(pipeline), strategy_options={"pairwise_method": "sliding"})
    assert dict(spec.strategy_options) == {"top_k": 5, "method": "sliding"}
    spec = spec_from_flags(
        model="sim:dl19",
        strategy="listwise",
        strategy_options={"listwise_method": "partition", "first_token": True},
    )
    assert dict(spec.strategy_options) == {"method": "partition", "first_token": True}
    with pytest.raises(UserError, match="--listwise-method is a listwise option"):
        spec_from_flags(
            model="sim:dl19", strategy="pairwise", strategy_options={"listwise_method": "partition"}
        )


@pytest.fixture
def requests_file(tmp_path: Path, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text(jsonl_requests(dl19[0][:2], depth=12))
    return path


def test_set_size_reaches_the_strategy_through_the_cli(
    requests_file: Path, dl19_judge_server: WireServer
) -> None:
    calls = {}
    for size in ("2", "5"):
        args = judged(
            dl19_judge_server, "-s", "setwise", "--set-size", size, "--no-cache", "-i", str(requests_file)
        )
        calls[size] = sum(len(line["calls"]) for line in outputs(run_cli(*args)))
    assert calls["5"] < calls["2"]  # bigger sets: fewer, wider questions
    wrong = run_cli(*judged(dl19_judge_server, "-s", "pairwise", "--window", "5", "-i", str(requests_file)))
    assert wrong.returncode == 2
    assert "--window is a listwise option" in wrong.stderr


def test_a_model_without_a_prefix_points_at_the_offline_backend() -> None:
    result = CliRunner().invoke(main, ["rerank", "-m", "gpt-4o-mini"], input="")
    assert result.exit_code == 2
    assert "sim:dl19" in result.output
