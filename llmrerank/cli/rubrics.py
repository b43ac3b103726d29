"""``llmrerank rubrics``: list, show, diff and release versioned rubrics."""

from __future__ import annotations

from pathlib import Path

import click

from ..rubrics import RubricLibrary, release_rubrics

__all__ = ["rubrics"]


@click.group(short_help="List, show, diff and release versioned rubrics.")
def rubrics() -> None:
    """List, show, diff and release versioned rubrics (refs like support-kb@2, or YAML paths)."""


_rubric_dirs = click.option(
    "--rubric-dir",
    "rubric_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Extra rubric folder searched first (repeatable); then $LLMRERANK_RUBRICS_PATH, "
    "./rubrics and ./evals/rubrics.",
)


@rubrics.command("list")
@_rubric_dirs
def rubrics_list(rubric_dirs: tuple[str, ...]) -> None:
    """Every rubric version, with its status, sha256 and grades."""
    for entry in RubricLibrary(rubric_dirs).list():
        rubric = entry.rubric
        grades = ",".join(str(g) for g in rubric.grades)
        click.echo(
            f"{rubric.ref:28} {entry.status:8} {rubric.sha256[:12]}  grades {grades:8}  "
            f"{rubric.description[:60]}"
        )


@rubrics.command("show", short_help="Print a rubric as it is hashed, with its ref and sha256.")
@click.argument("ref")
@_rubric_dirs
def rubrics_show(ref: str, rubric_dirs: tuple[str, ...]) -> None:
    """Print a rubric (REF like support-kb@1, @latest, or a YAML path) as it is hashed."""
    entry = RubricLibrary(rubric_dirs).resolve(ref)
    where = f"({entry.path}, {entry.status})" if entry.path else f"({entry.status})"
    click.echo(f"# {entry.rubric.ref}  sha256 {entry.rubric.sha256}  {where}")
    click.echo(entry.rubric.to_yaml(), nl=False)


@rubrics.command("diff", short_help="Unified diff between two rubrics' content.")
@click.argument("old")
@click.argument("new")
@_rubric_dirs
def rubrics_diff(old: str, new: str, rubric_dirs: tuple[str, ...]) -> None:
    """Unified diff between two rubrics' content (refs or YAML paths); empty when identical."""
    click.echo(RubricLibrary(rubric_dirs).diff(old, new), nl=False)


@rubrics.command("release", short_help="Lock every unreleased rubric version under ROOT.")
@click.argument("root", type=click.Path(file_okay=False, exists=True))
def rubrics_release(root: str) -> None:
    """Lock every unreleased version under ROOT (its rubrics.lock): an edit is then an error."""
    for ref in release_rubrics(Path(root)):
        click.echo(f"released {ref}")
