"""The LLM stage's options as flags (``rerank``, ``label``): the model, the strategy and its
options, each belonging to one strategy, the prompt and the rubric."""

from __future__ import annotations

from collections.abc import Callable

import click

__all__ = ["STRATEGY_FLAGS", "llm_stage_flags", "strategy_option_flags"]


# flag parameter -> (the strategy it belongs to, its option name)
STRATEGY_FLAGS = {
    "window": ("listwise", "window"),
    "step": ("listwise", "step"),
    "shuffles": ("listwise", "shuffles"),
    "listwise_method": ("listwise", "method"),
    "first_token": ("listwise", "first_token"),
    "pairwise_method": ("pairwise", "method"),
    "set_size": ("setwise", "set_size"),
}


def strategy_option_flags(command: Callable[..., None]) -> Callable[..., None]:
    """--window/--step/--shuffles/--listwise-method/--first-token (listwise),
    --pairwise-method, --set-size (setwise)."""
    flags = [
        click.option("--window", type=click.IntRange(min=2), help="listwise: passages per call [20]."),
        click.option("--step", type=click.IntRange(min=1), help="listwise: how far the window slides [10]."),
        click.option(
            "--shuffles",
            type=click.IntRange(min=0),
            help="listwise: extra passes from shuffled orders, fused [0].",
        ),
        click.option(
            "--listwise-method",
            type=click.Choice(["sliding", "partition"]),
            help="listwise: sliding window, or top-down partitioning (100 → 10 in 3 rounds) [sliding].",
        ),
        click.option(
            "--first-token",
            is_flag=True,
            default=None,
            help="listwise: order each window by the first label's logprobs (one output token).",
        ),
        click.option(
            "--pairwise-method",
            type=click.Choice(["heapsort", "sliding", "allpairs"]),
            help="pairwise: how comparisons are chosen [heapsort].",
        ),
        click.option("--set-size", type=click.IntRange(min=2), help="setwise: passages shown per call [4]."),
    ]
    for flag in reversed(flags):
        command = flag(command)
    return command


RUBRIC_HELP = "Rubric: a ref (support-kb@1) or a YAML path."


def llm_stage_flags(command: Callable[..., None]) -> Callable[..., None]:
    """--model/-m, --base-url, --strategy/-s with its options, --prompt/-p, --rubric/-r."""
    flags: list[Callable[[Callable[..., None]], Callable[..., None]]] = [
        click.option(
            "--model",
            "-m",
            help="openai:MODEL, anthropic:MODEL, local:[PATH.gguf], or sim:DATASET[@SIGMA] (a simulated "
            "judge on a golden set, e.g. sim:dl19: works offline, no key).",
        ),
        click.option("--base-url", help="An OpenAI- or Anthropic-compatible server."),
        click.option(
            "--strategy",
            "-s",
            default="pointwise",
            show_default=True,
            type=click.Choice(["pointwise", "listwise", "pairwise", "setwise"]),
        ),
        strategy_option_flags,
        click.option("--prompt", "-p", help="Prompt ref, e.g. pointwise/relevance@1 (default: newest)."),
        click.option("--rubric", "-r", help=RUBRIC_HELP),
    ]
    for flag in reversed(flags):
        command = flag(command)
    return command
