"""Every code block of the README and of the documentation pages (llmrerank/docs/) is checked.

A block says how in an HTML comment on the line before its fence, ``<!-- docs-test: MODE ARG -->``;
without one, the language decides:

* ``python`` (``exec``): runs as written from the repository root, with ``OPENAI_BASE_URL`` and
  ``ANTHROPIC_BASE_URL`` pointing at the in-process wire server with the simulated DL19 judge,
  and ``HOME`` in a temporary folder (so ``~/.cache/llmrerank`` is a fresh cache).
* ``bash`` (``commands``): every ``llmrerank`` command is parsed by the real command line
  (an unknown command or flag fails), every ``make`` target is in the Makefile, every ``pip``
  extra is in pyproject.toml, every script named exists, and a ``curl`` body is a valid
  ``/v1/rerank`` request.
* ``yaml`` (``load``): loaded by what reads it: a rubric, an experiment, a service config
  or a pipeline spec.
* ``file NAME``: a YAML block loaded as above and written as NAME for the page's ``run`` blocks.
* ``run``: every ``llmrerank`` command of the block runs, in order, in a fresh folder holding
  the page's ``file`` blocks, and must exit 0 (so models are ``sim:`` judges there).
* ``figure``: a drawing; every module it names (``name.py``, ``folder/``) is in the package.
* ``error-tree``: the drawn tree is ``llmrerank.errors``' class tree, every class in it.
* ``output PATH``: every line but ``...`` is a line of the committed file PATH.
* ``tokens-in PATH``: every word of the block is in PATH.
* ``covered-by TEST``: another test runs the block (it needs a real local LLM, or runs a
  sequence of commands with edits between them); TEST must name the heading above the block.
* ``skip REASON``: not run here, for the reason given (reported by ``pytest -ra``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from llmrerank.cli import main
from llmrerank.testing import WireServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "llmrerank" / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
DIRECTIVE = re.compile(r"<!-- docs-test: (?P<mode>[\w-]+)(?: (?P<arg>.*?))? -->")
DEFAULT_MODES = {"python": "exec", "bash": "commands", "yaml": "load"}
REPO_PATH = re.compile(r"`((?:evals|tests|llmrerank|prompts)/[\w./-]*)`")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    mode: str
    arg: str
    heading: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def page_blocks(page: Path) -> Iterator[Block]:
    text = page.read_text("utf-8")
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        directive = DIRECTIVE.fullmatch(before[-1].strip()) if before else None
        headings = [line for line in before if line.startswith("#")]
        indent = len(match.group("indent"))
        code = "\n".join(line[indent:] for line in match.group("code").splitlines()) + "\n"
        lang = match.group("lang")
        mode = directive.group("mode") if directive else DEFAULT_MODES.get(lang, "missing")
        yield Block(
            page=page,
            line=text.count("\n", 0, match.start()) + 1,
            lang=lang,
            code=code,
            mode=mode,
            arg=(directive.group("arg") or "") if directive else "",
            heading=headings[-1] if headings else "",
        )


BLOCKS = [block for page in PAGES for block in page_blocks(page)]


@pytest.fixture
def wire_env(dl19_judge_server: WireServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", dl19_judge_server.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", dl19_judge_server.anthropic_base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(ROOT)


def run_python(block: Block) -> None:
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    exec(compile(block.code, str(block), "exec"), namespace)


def command_lines(code: str) -> Iterator[list[str]]:
    pending = ""
    for line in code.replace("\\\n", " ").splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted argument goes on over the next line
            continue
        pending = ""
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value before a command
            words.pop(0)
        if "<" in words:  # stdin from a file
            words = words[: words.index("<")]
        if words:
            yield words
    assert not pending, f"unclosed quote: {pending}"


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text("utf-8"), re.M))


def pyproject_extras() -> set[str]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as file:
        return set(tomllib.load(file)["project"]["optional-dependencies"])


def check_command(words: list[str]) -> None:
    program, *args = words
    if program == "llmrerank":
        # --help is eager: the parser has read every command and flag name before it acts
        result = CliRunner().invoke(main, [*args, "--help"])
        assert result.exit_code == 0, f"{shlex.join(words)}\n{result.output}"
        assert "Usage:" in result.output
    elif program == "make":
        assert set(args) <= makefile_targets(), shlex.join(words)
    elif program == "pip":
        assert args[0] == "install", shlex.join(words)
        for arg in args[1:]:
            extras = re.search(r"\[([\w,]+)\]", arg)
            if extras:
                assert set(extras.group(1).split(",")) <= pyproject_extras(), arg
    elif program == "python":
        assert (ROOT / args[0]).is_file(), args[0]
    elif program == "curl":
        body = json.loads(args[args.index("-d") + 1])
        from llmrerank.serve.wire import RerankRequest

        RerankRequest.model_validate(body)
    else:
        assert "/" in program, f"unknown command {program!r}"
        assert (ROOT / program).is_file(), program


def load_yaml_block(block: Block, tmp_path: Path) -> None:
    raw = yaml.safe_load(block.code)
    assert isinstance(raw, dict), "a YAML block is a mapping"
    if "scale" in raw:
        from llmrerank.rubrics import Rubric

        Rubric.from_dict(raw)
    elif "datasets" in raw:
        from llmrerank.evaluation.experiment import load_experiment

        path = tmp_path / "experiment.yaml"
        path.write_text(block.code, "utf-8")
        assert load_experiment(path).pipelines
    elif isinstance(raw.get("pipelines"), dict):
        from llmrerank.serve.config import ServiceConfig

        assert ServiceConfig.from_dict(raw).pipelines
    else:
        from llmrerank.pipeline import PipelineSpec

        PipelineSpec.from_dict(raw)


def run_commands(block: Block, folder: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("monkeypatch").chdir(folder)
    for other in page_blocks(block.page):
        if other.mode == "file":
            (folder / other.arg).write_text(other.code, "utf-8")
    for words in command_lines(block.code):
        assert words[0] == "llmrerank", shlex.join(words)
        result = CliRunner().invoke(main, words[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{shlex.join(words)}\n{result.output}"


def check_figure(drawing: str) -> None:
    named = re.findall(r"[\w/]+\.py|\b\w+/(?=[\s)])", drawing)
    assert named, "a figure that names no module"
    package = ROOT / "llmrerank"
    missing = [name for name in named if not any(package.glob(f"**/{name.rstrip('/')}"))]
    assert missing == []


def check_error_tree(drawing: str) -> None:
    from llmrerank import errors

    parents: list[str] = []
    drawn = []
    for line in drawing.splitlines():
        match = re.match(r"^([│├└─ ]*)(\w+)", line)
        assert match is not None, line
        depth = len(match.group(1)) // 4
        name = match.group(2)
        parents[depth:] = [name]
        cls = getattr(errors, name)
        if depth:
            assert cls.__bases__ == (getattr(errors, parents[depth - 1]),), line
        drawn.append(name)
    defined = [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.LLMRerankError)
    ]
    assert sorted(drawn) == sorted(defined)


def committed_lines(block: Block) -> tuple[list[str], list[str]]:
    source = (ROOT / block.arg).read_text("utf-8")
    wanted = [line for line in block.code.splitlines() if line.strip() and line.strip() != "..."]
    return wanted, source.splitlines()


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_code_block(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if block.mode == "exec":
        assert block.lang == "python"
        request.getfixturevalue("wire_env")
        run_python(block)
    elif block.mode == "commands":
        commands = list(command_lines(block.code))
        assert commands, "no command in the block"
        for words in commands:
            check_command(words)
    elif block.mode in ("load", "file"):
        load_yaml_block(block, tmp_path)
    elif block.mode == "run":
        run_commands(block, tmp_path, request)
    elif block.mode == "figure":
        check_figure(block.code)
    elif block.mode == "error-tree":
        check_error_tree(block.code)
    elif block.mode == "output":
        wanted, lines = committed_lines(block)
        assert [line for line in wanted if line not in lines] == []
    elif block.mode == "tokens-in":
        source = (ROOT / block.arg).read_text("utf-8")
        assert [word for word in block.code.split() if word not in source] == []
    elif block.mode == "covered-by":
        test_file = ROOT / block.arg
        assert block.heading.lstrip("# ") in test_file.read_text("utf-8"), (
            f"{block.arg} does not name the heading {block.heading!r}"
        )
    elif block.mode == "skip":
        assert block.arg, "a skipped block says why"
        pytest.skip(f"{block}: {block.arg}")
    else:
        pytest.fail(f"{block}: a {block.lang or 'plain'} block needs a <!-- docs-test: MODE --> line")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_named_in_the_docs_exist(page: Path) -> None:
    text = page.read_text("utf-8")
    missing = [p for p in REPO_PATH.findall(text) if not (ROOT / p.split("#")[0]).exists()]
    assert missing == []


def test_the_readme_is_a_landing_page_linking_every_docs_page() -> None:
    text = (ROOT / "README.md").read_text("utf-8")
    assert len(text.splitlines()) < 200
    linked = set(re.findall(r"\]\((llmrerank/docs/[\w-]+\.md)(?:#[\w-]+)?\)", text))
    assert all((ROOT / link).is_file() for link in linked)
    assert {f"llmrerank/docs/{p.name}" for p in DOCS.glob("*.md") if p.name != "index.md"} <= linked
