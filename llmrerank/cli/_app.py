"""The ``llmrerank`` command group: one-line errors, logging flags, the shared cache option."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from types import FrameType
from typing import Any, NoReturn

import click

from .. import settings
from ..cache import DiskCache
from ..errors import LLMRerankError, UserError
from ..settings import DEFAULT_CACHE_DIR

__all__ = ["COMMANDS", "DEFAULT_CACHE_DIR", "load_command", "main", "open_cache", "run"]


def _fail(exc: LLMRerankError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    cause = getattr(exc, "cause", None)
    sys.exit(2 if isinstance(exc, UserError) or isinstance(cause, UserError) else 1)


# Each command (group) and where it lives: a module is imported only when its command runs
# (or help lists it), so ``llmrerank rerank`` does not load the eval harness or the LLM stack.
COMMANDS: dict[str, str] = {
    "cache": "llmrerank.cli.cache:cache",
    "demo": "llmrerank.cli.demo:demo",
    "distill": "llmrerank.cli.training:distill_command",
    "eval": "llmrerank.evaluation.cli:eval_group",
    "index": "llmrerank.cli.index:index",
    "label": "llmrerank.cli.training:label_command",
    "prompts": "llmrerank.cli.prompts:prompts",
    "rerank": "llmrerank.cli.rerank:rerank",
    "rubrics": "llmrerank.cli.rubrics:rubrics",
    "serve": "llmrerank.cli.serve:serve",
}
# commands of an extra: absent (not an error) when the extra is not installed
OPTIONAL_COMMANDS = frozenset({"eval"})


def load_command(name: str) -> click.Command | None:
    """The command ``name`` from its module; None when an optional extra is missing."""
    module_name, attribute = COMMANDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if name in OPTIONAL_COMMANDS:
            return None
        raise
    command: click.Command = getattr(module, attribute)
    return command


class _Group(click.Group):
    """Loads each command from ``COMMANDS`` when it is asked for; turns library errors into
    one line and a non-zero exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            command = load_command(cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LLMRerankError as exc:
            _fail(exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # the CLI prints one line, never a traceback
            logging.getLogger("llmrerank").debug("unexpected error", exc_info=True)
            click.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with -vv for details)", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="-v for info logs, -vv for debug.")
@click.version_option(package_name="llmrerank")
def main(verbose: int) -> None:
    """An LLM precision pass between retrieval and generation."""
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def run() -> None:
    """The ``llmrerank`` console script. SIGTERM (``kill``, a container stop, a CI timeout)
    ends a command the way Ctrl-C does: by an exception, so the exit hooks still run and the
    llama.cpp servers it started stop with it instead of outliving it. ``serve`` replaces the
    handler with uvicorn's graceful shutdown."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    main()


def open_cache(cache_dir: str | None, no_cache: bool, mode: str) -> DiskCache | None:
    if no_cache:
        return None
    return DiskCache(settings.cache_dir(cache_dir), mode=mode)
