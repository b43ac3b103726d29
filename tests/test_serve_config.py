"""The service config: what loads and what is refused with a clear error (no server needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmrerank.cli import main
from llmrerank.errors import UserError
from llmrerank.serve import ServiceConfig


def test_a_config_loads_pipelines_limits_and_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("from-file\n\n")
    monkeypatch.setenv("MY_TOKENS", "a, b")
    config = ServiceConfig.from_dict(
        {
            "default": "two",
            "pipelines": {
                "one": {"narrow_with": "dense:"},
                "two": {"llm": "sim:dl19", "strategy": "listwise"},
            },
            "limits": {"deadline_s": 5, "llm_queue": 0, "max_body_bytes": 4096},
            "auth": {"tokens_env": "MY_TOKENS", "tokens_file": str(tokens)},
            "allow_partial": True,
        }
    )
    assert config.pipelines["one"].narrow_with == ("dense:",)
    assert config.pipelines["two"].name == "two"
    assert config.limits.deadline_s == 5
    assert config.limits.max_body_bytes == 4096
    assert config.allow_partial is True
    assert ServiceConfig.offline_default().allow_partial is False
    assert config.auth.tokens() == {"a", "b", "from-file"}


def test_the_cpu_gate_defaults_to_the_cores_and_takes_a_zero_queue() -> None:
    cores = len(os.sched_getaffinity(0))
    default = ServiceConfig.from_dict({"pipelines": {"a": {"narrow_with": "dense:"}}}).limits
    assert (default.local_concurrency, default.local_queue) == (cores, 2 * cores)
    limits = ServiceConfig.from_dict(
        {"pipelines": {"a": {}}, "limits": {"local_concurrency": 3, "local_queue": 0}}
    ).limits
    assert (limits.local_concurrency, limits.local_queue) == (3, 0)


def test_the_offline_default_is_the_dense_then_local_cascade() -> None:
    config = ServiceConfig.offline_default()
    spec = config.pipelines[config.default]
    assert (spec.narrow_with, spec.keeps(), spec.llm) == (("dense:",), (20,), "local:")


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"pipelines": {}}, "pipelines must map"),
        ({"pipelines": {"default": {}}}, '"default" is reserved'),
        ({"pipelines": {"a": {}}, "default": "b"}, "default 'b' is not one of ['a']"),
        ({"pipelines": {"a": {"llm_model": "x"}}}, "unknown keys ['llm_model']"),
        ({"pipelines": {"a": {}}, "limit": {}}, "unknown keys ['limit']"),
        (
            {"pipelines": {"a": {}}, "limits": {"deadline_s": 0}},
            "limits.deadline_s must be a positive number",
        ),
        ({"pipelines": {"a": {}}, "limits": {"max_docs": 3}}, "unknown limits keys ['max_docs']"),
        ({"pipelines": {"a": {}}, "auth": "token"}, "auth must be a mapping"),
        ({"pipelines": {"a": {}}, "allow_partial": "yes"}, "allow_partial must be true or false"),
        (
            {"pipelines": {"a": {}}, "limits": {"max_body_bytes": -1}},
            "limits.max_body_bytes must be a positive number",
        ),
        (
            {"pipelines": {"a": {}}, "limits": {"local_concurrency": 0}},
            "limits.local_concurrency must be a positive number",
        ),
        (
            {"pipelines": {"a": {}}, "limits": {"local_queue": -1}},
            "limits.local_queue must be a positive number",
        ),
    ],
)
def test_bad_configs_are_refused_saying_why(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(UserError) as error:
        ServiceConfig.from_dict(raw)
    assert says in str(error.value)


def test_the_cli_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text("pipelines: {a: {}}\ndefault: b\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == "error: service config: default 'b' is not one of ['a']"
