"""The docs' rubric walkthrough (llmrerank/docs/prompts-and-rubrics.md) runs as written:
every command of it, in order, in a fresh folder, with the edit the prose asks for made
between the first agreement and the diff."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from llmrerank.cli import main

PAGE = Path(__file__).resolve().parent.parent / "llmrerank" / "docs" / "prompts-and-rubrics.md"
HEADING = "## Writing a rubric: write → agree → edit → compare"


def walkthrough() -> tuple[list[str], list[str]]:
    text = PAGE.read_text("utf-8")
    section = text[text.index(HEADING) + len(HEADING) :]
    section = section.split("\n## ")[0]
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    (bash,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return yaml_blocks, [line for line in bash.splitlines() if line.strip()]


def test_the_rubric_walkthrough_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (rubric_text, config_text), commands = walkthrough()
    assert all(c.startswith("llmrerank ") for c in commands)
    (tmp_path / "rubrics" / "web").mkdir(parents=True)
    (tmp_path / "rubrics" / "web" / "v1.yaml").write_text(rubric_text)
    (tmp_path / "rubric-web.yaml").write_text(config_text)
    runner = CliRunner()
    outputs = []
    for command in commands:
        if command.startswith("llmrerank rubrics diff"):
            # the edit the prose describes: a sharper meaning for grade 2, and web@2 in the config
            edited = rubric_text.replace(
                '"Has some answer, but unclear or hidden."', '"Answers it, among other text."'
            )
            assert edited != rubric_text
            (tmp_path / "rubrics" / "web" / "v2.yaml").write_text(edited)
            config = yaml.safe_load(config_text)
            config["pipelines"][0]["rubric"] = ["web@1", "web@2"]
            (tmp_path / "rubric-web.yaml").write_text(yaml.safe_dump(config))
        result = runner.invoke(main, shlex.split(command)[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        outputs.append(result.output)
    show, _, first_agree, diff, _, _compare, release = outputs
    assert show.startswith("# web@1  sha256 ")
    assert "pointwise[web@1]" in first_agree
    assert "kappa" in first_agree
    assert "+  meaning: Answers it, among other text." in diff
    assert release.splitlines() == ["released web@1", "released web@2"]
    report = (tmp_path / "reports" / "web-1-vs-2" / "agreement.md").read_text()
    assert "## Side by side (baseline: `dl19:pointwise[web@1]`)" in report
    assert "web@2" in report
    first = (tmp_path / "reports" / "web-1" / "agreement.md").read_text()
    assert "Confusion matrix" in first
    assert "Largest disagreements" in first
    assert (tmp_path / "reports" / "web-1" / "agreement.html").read_text().count("data:image/png") == 1
