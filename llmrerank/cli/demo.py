"""``llmrerank demo``: the hybrid cascade on a real golden set."""

from __future__ import annotations

import click

__all__ = ["demo"]


@click.command(short_help="The hybrid cascade on a golden set, with a before/after table.")
@click.option("--dataset", default="dl19", show_default=True, help="dl19, dl20, devkb or a folder.")
@click.option("--queries", type=int, default=10, show_default=True, help="How many queries to run.")
@click.option("--model", "-m", help="Default: OpenAI/Anthropic when a key is set, else local:.")
@click.option("--base-url", help="An OpenAI- or Anthropic-compatible server for --model.")
@click.option("--strategy", "-s", default="listwise", show_default=True)
@click.option(
    "--narrow-with",
    default="auto",
    show_default=True,
    help="dense:[MODEL], cross-encoder:[MODEL] (MODEL may be a folder `llmrerank distill` wrote), "
    "or auto: the local stage that scores best on the dataset.",
)
@click.option("--narrow-to", type=int, default=20, show_default=True)
@click.option("--rubric", help="A rubric ref (support-kb@1) or YAML path.")
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
    from ..demo import run_demo

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
