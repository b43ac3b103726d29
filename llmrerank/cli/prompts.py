"""``llmrerank prompts``: list, show, diff, render and release versioned templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import UserError
from ..prompts import PromptLibrary, builtin_prompts_dir, release_prompts
from ..rubrics import DEFAULT_RUBRIC, load_rubric

__all__ = ["prompts"]


@click.group()
def prompts() -> None:
    """List, show, diff and render versioned prompt templates."""


_prompt_dirs = click.option(
    "--prompt-dir",
    "prompt_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Extra prompt folder searched first (repeatable).",
)


@prompts.command("list")
@_prompt_dirs
def prompts_list(prompt_dirs: tuple[str, ...]) -> None:
    """Every prompt version, with its strategy, status and sha256."""
    for prompt in PromptLibrary(prompt_dirs).list():
        status = "released" if prompt.released else "draft"
        click.echo(
            f"{prompt.ref:32} {prompt.strategy:10} {status:8} {prompt.sha256[:12]}  {prompt.description}"
        )


@prompts.command("show")
@click.argument("ref")
@_prompt_dirs
def prompts_show(ref: str, prompt_dirs: tuple[str, ...]) -> None:
    """Print a prompt file (REF like listwise/rankgpt@1 or @latest)."""
    prompt = PromptLibrary(prompt_dirs).load(ref)
    click.echo(f"# {prompt.ref}  sha256 {prompt.sha256}  ({prompt.path})")
    click.echo(prompt.text, nl=False)


@prompts.command("diff")
@click.argument("old")
@click.argument("new")
@_prompt_dirs
def prompts_diff(old: str, new: str, prompt_dirs: tuple[str, ...]) -> None:
    """Unified diff between two prompt versions."""
    click.echo(PromptLibrary(prompt_dirs).diff(old, new), nl=False)


def _parse_vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--var takes key=value, got {pair!r}")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values


@prompts.command("render", short_help="Render a prompt with variables (--var NAME=VALUE).")
@click.argument("ref")
@click.option("--var", "pairs", multiple=True, help="key=value (value may be JSON).")
@click.option("--rubric", help="A rubric ref (support-kb@1) or YAML path; default the built-in one.")
@_prompt_dirs
def prompts_render(
    ref: str, pairs: tuple[str, ...], rubric: str | None, prompt_dirs: tuple[str, ...]
) -> None:
    """Render a prompt, e.g. --var query='what is x' --var passage='{"label":"P","text":"y"}'."""

    variables: dict[str, Any] = {
        "rubric": load_rubric(rubric) if rubric else DEFAULT_RUBRIC,
        "output_instruction": "(output instruction)",
    }
    variables.update(_parse_vars(pairs))
    rendered = PromptLibrary(prompt_dirs).load(ref).render(**variables)
    click.echo(f"--- system ---\n{rendered.system}\n--- user ---\n{rendered.user}")


@prompts.command("release", short_help="Lock every unreleased prompt version under ROOT.")
@click.argument("root", type=click.Path(file_okay=False, exists=True), default=None, required=False)
def prompts_release(root: str | None) -> None:
    """Lock every unreleased version under ROOT (default: the shipped prompts)."""

    for ref in release_prompts(Path(root) if root else builtin_prompts_dir()):
        click.echo(f"released {ref}")
