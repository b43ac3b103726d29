"""``llmrerank cache``: inspect or clear the response cache."""

from __future__ import annotations

import json

import click

from ._app import DEFAULT_CACHE_DIR, open_cache

__all__ = ["cache"]


@click.group()
def cache() -> None:
    """Inspect or clear the response cache."""


_cache_dir = click.option(
    "--cache-dir", type=click.Path(file_okay=False), help=f"Default {DEFAULT_CACHE_DIR}."
)


@cache.command("stats")
@_cache_dir
def cache_stats(cache_dir: str | None) -> None:
    """Entries per namespace and size on disk."""
    store = open_cache(cache_dir, False, "read_only")
    assert store is not None
    click.echo(json.dumps(store.stats(), indent=2))


@cache.command("clear")
@_cache_dir
@click.option("--namespace", help="Only this namespace (responses, embeddings).")
@click.confirmation_option(prompt="Remove the cached replies?")
def cache_clear(cache_dir: str | None, namespace: str | None) -> None:
    """Remove cached entries."""
    store = open_cache(cache_dir, False, "read_write")
    assert store is not None
    click.echo(f"removed {store.clear(namespace)} entries")
