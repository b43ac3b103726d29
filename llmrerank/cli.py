"""``llmrerank``: rerank JSONL from the shell, manage prompts and the cache, run evals."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import click

from .base import Reranker
from .cache import DiskCache
from .errors import LLMRerankError, UserError
from .prompts import PromptLibrary
from .rubrics import Rubric

__all__ = ["main"]

DEFAULT_CACHE_DIR = "~/.cache/llmrerank"


def _fail(exc: LLMRerankError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2 if isinstance(exc, UserError) else 1)


class _Group(click.Group):
    """Turns library errors into one line and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LLMRerankError as exc:
            _fail(exc)


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="-v for info logs, -vv for debug.")
@click.version_option(package_name="llmrerank")
def main(verbose: int) -> None:
    """An LLM precision pass between retrieval and generation."""
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )


def _cache(cache_dir: str | None, no_cache: bool, mode: str) -> DiskCache | None:
    if no_cache:
        return None
    return DiskCache(cache_dir or os.environ.get("LLMRERANK_CACHE_DIR", DEFAULT_CACHE_DIR), mode=mode)


def _read_requests(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"input line {number} is not JSON: {exc.msg}") from None
        if not isinstance(record, dict) or "query" not in record or "candidates" not in record:
            raise UserError(f"input line {number} needs 'query' and 'candidates'")
        yield number, record


def build_reranker(
    *,
    model: str | None,
    base_url: str | None,
    strategy: str,
    prompt: str | None,
    rubric: str | None,
    cache: DiskCache | None,
    max_concurrency: int,
    narrow_with: tuple[str, ...] = (),
    narrow_to: tuple[int, ...] = (),
    top_k: int | None = None,
    llm_timeout_s: float | None = None,
    bypass_llm: bool | None = None,
    trace: str | None = None,
) -> Reranker:
    """The CLI's pipeline: optional narrowing stages, then the LLM."""
    from .backends import make_backend
    from .reranker import LLMReranker

    llm: Reranker | None = None
    if model:
        llm = LLMReranker(
            make_backend(model, base_url=base_url),
            strategy=strategy,
            prompt=prompt,
            rubric=Rubric.load(rubric) if rubric else None,
            cache=cache,
            max_concurrency=max_concurrency,
        )
    if not narrow_with:
        if llm is None:
            raise UserError("give --model, --narrow-with, or both")
        return llm
    from .cascade import Cascade, Stage, parse_stage_spec

    keeps = list(narrow_to) or [20]
    if len(keeps) == 1 and len(narrow_with) > 1:
        keeps = keeps * len(narrow_with)
    if len(keeps) != len(narrow_with):
        raise UserError("give one --narrow-to per --narrow-with (or a single one for all)")
    stages = [Stage(parse_stage_spec(spec), keep=keep) for spec, keep in zip(narrow_with, keeps, strict=True)]
    if llm is not None:
        stages.append(Stage(llm, keep=top_k, timeout_s=llm_timeout_s))
    return Cascade(stages, trace=trace, bypass_llm=bypass_llm)


@main.command()
@click.option("--model", "-m", help="openai:MODEL, anthropic:MODEL or local:[PATH.gguf].")
@click.option("--base-url", help="An OpenAI- or Anthropic-compatible server.")
@click.option(
    "--strategy",
    "-s",
    default="pointwise",
    show_default=True,
    type=click.Choice(["pointwise", "listwise", "pairwise", "setwise"]),
)
@click.option("--prompt", "-p", help="Prompt ref, e.g. pointwise/relevance@1 (default: newest).")
@click.option("--rubric", "-r", type=click.Path(exists=True, dir_okay=False), help="Rubric YAML.")
@click.option("--top-k", "-k", type=int, help="Keep only the first K of each ranking.")
@click.option("--input", "-i", "input_file", type=click.File("r"), default="-", help="JSONL input.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help=f"Default {DEFAULT_CACHE_DIR}.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option(
    "--cache-mode",
    default="read_write",
    show_default=True,
    type=click.Choice(["read_write", "read_only", "refresh", "off"]),
)
@click.option("--max-concurrency", type=int, default=8, show_default=True)
@click.option(
    "--narrow-with",
    "narrow_with",
    multiple=True,
    help="Narrowing stage before the LLM: dense:[MODEL] or cross-encoder:[MODEL] (repeatable).",
)
@click.option(
    "--cross-encoder",
    "cross_encoders",
    multiple=True,
    help="Shorthand for --narrow-with cross-encoder:PATH_OR_NAME (runs after --narrow-with stages).",
)
@click.option("--narrow-to", type=int, multiple=True, help="Candidates each narrowing stage keeps.")
@click.option("--llm-timeout", type=float, help="Seconds before the LLM stage falls back.")
@click.option("--bypass-llm", is_flag=True, default=None, help="Skip the LLM stage.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Append a JSONL trace per request.")
def rerank(
    model: str | None,
    base_url: str | None,
    strategy: str,
    prompt: str | None,
    rubric: str | None,
    top_k: int | None,
    input_file: IO[str],
    cache_dir: str | None,
    no_cache: bool,
    cache_mode: str,
    max_concurrency: int,
    narrow_with: tuple[str, ...],
    cross_encoders: tuple[str, ...],
    narrow_to: tuple[int, ...],
    llm_timeout: float | None,
    bypass_llm: bool | None,
    trace: str | None,
) -> None:
    """Rerank JSONL lines {"query", "candidates": [{"id", "text"}]} into JSONL rankings."""
    reranker = build_reranker(
        model=model,
        base_url=base_url,
        strategy=strategy,
        prompt=prompt,
        rubric=rubric,
        cache=_cache(cache_dir, no_cache, cache_mode),
        max_concurrency=max_concurrency,
        narrow_with=narrow_with + tuple(f"cross-encoder:{name}" for name in cross_encoders),
        narrow_to=narrow_to,
        top_k=top_k,
        llm_timeout_s=llm_timeout,
        bypass_llm=bypass_llm,
        trace=trace,
    )
    for number, record in _read_requests(input_file):
        try:
            ranking = reranker.rerank(record["query"], record["candidates"], top_k=top_k)
        except UserError as exc:
            raise UserError(f"input line {number}: {exc}") from exc
        click.echo(json.dumps(ranking.to_dict(), ensure_ascii=False))


# -- prompts -----------------------------------------------------------------------
@main.group()
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


@prompts.command("render")
@click.argument("ref")
@click.option("--var", "pairs", multiple=True, help="key=value (value may be JSON).")
@click.option("--rubric", type=click.Path(exists=True, dir_okay=False))
@_prompt_dirs
def prompts_render(
    ref: str, pairs: tuple[str, ...], rubric: str | None, prompt_dirs: tuple[str, ...]
) -> None:
    """Render a prompt, e.g. --var query='what is x' --var passage='{"label":"P","text":"y"}'."""
    from .rubrics import DEFAULT_RUBRIC

    variables: dict[str, Any] = {
        "rubric": Rubric.load(rubric) if rubric else DEFAULT_RUBRIC,
        "output_instruction": "(output instruction)",
    }
    variables.update(_parse_vars(pairs))
    rendered = PromptLibrary(prompt_dirs).load(ref).render(**variables)
    click.echo(f"--- system ---\n{rendered.system}\n--- user ---\n{rendered.user}")


@prompts.command("release")
@click.argument("root", type=click.Path(file_okay=False, exists=True), default=None, required=False)
def prompts_release(root: str | None) -> None:
    """Lock every unreleased version under ROOT (default: the shipped prompts)."""
    from .prompts import builtin_prompts_dir, release_prompts

    for ref in release_prompts(Path(root) if root else builtin_prompts_dir()):
        click.echo(f"released {ref}")


# -- cache -------------------------------------------------------------------------
@main.group()
def cache() -> None:
    """Inspect or clear the response cache."""


_cache_dir = click.option(
    "--cache-dir", type=click.Path(file_okay=False), help=f"Default {DEFAULT_CACHE_DIR}."
)


@cache.command("stats")
@_cache_dir
def cache_stats(cache_dir: str | None) -> None:
    """Entries per namespace and size on disk."""
    store = _cache(cache_dir, False, "read_only")
    assert store is not None
    click.echo(json.dumps(store.stats(), indent=2))


@cache.command("clear")
@_cache_dir
@click.option("--namespace", help="Only this namespace (responses, embeddings).")
@click.confirmation_option(prompt="Remove the cached replies?")
def cache_clear(cache_dir: str | None, namespace: str | None) -> None:
    """Remove cached entries."""
    store = _cache(cache_dir, False, "read_write")
    assert store is not None
    click.echo(f"removed {store.clear(namespace)} entries")


@main.command()
@click.option("--dataset", default="dl19", show_default=True, help="dl19, dl20, devkb or a folder.")
@click.option("--queries", type=int, default=10, show_default=True, help="How many queries to run.")
@click.option("--model", "-m", help="Default: OpenAI/Anthropic when a key is set, else local:.")
@click.option("--base-url", help="An OpenAI- or Anthropic-compatible server for --model.")
@click.option("--strategy", "-s", default="listwise", show_default=True)
@click.option(
    "--narrow-with",
    default="auto",
    show_default=True,
    help="dense:[MODEL], cross-encoder:[MODEL], or auto: the local stage that scores best on the dataset.",
)
@click.option("--narrow-to", type=int, default=20, show_default=True)
@click.option("--rubric", type=click.Path(exists=True, dir_okay=False))
@click.option("--cache-dir", type=click.Path(file_okay=False))
def demo(
    dataset: str,
    queries: int,
    model: str | None,
    base_url: str | None,
    strategy: str,
    narrow_with: str,
    narrow_to: int,
    rubric: str | None,
    cache_dir: str | None,
) -> None:
    """The hybrid cascade on a real golden set, with a before/after table."""
    from .demo import run_demo

    run_demo(
        dataset=dataset,
        queries=queries,
        model=model,
        base_url=base_url,
        strategy=strategy,
        narrow_with=narrow_with,
        narrow_to=narrow_to,
        rubric=rubric,
        cache_dir=cache_dir,
        echo=click.echo,
    )


def _attach_optional_groups() -> None:
    try:
        from .evaluation.cli import eval_group
    except ImportError:  # the eval extra is not installed
        return
    main.add_command(eval_group, "eval")


_attach_optional_groups()
