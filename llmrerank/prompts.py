"""Versioned, immutable prompt templates.

A prompt lives at ``<root>/<family>/<name>/v<N>.jinja`` and is addressed as
``family/name@N`` (``@latest`` or no suffix: the highest N). The file starts with YAML front
matter (strategy, output, variables, description) between ``---`` lines, then a Jinja body
with two blocks, ``system`` and ``user``.

Each root may hold ``prompts.lock`` (JSON: ref -> sha256 of the file bytes). A version in
the lock is *released*: loading it verifies the hash, so an edited release is an error,
never a silently different prompt. Roots are searched in order: the caller's folders, then
``LLMRERANK_PROMPTS_PATH`` (os.pathsep-separated), then the prompts shipped with llmrerank.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ._quoting import choose_boundary, quoted_strings
from ._versioned import find_versions
from .errors import PromptError

__all__ = [
    "LOCK_FILE",
    "Prompt",
    "PromptLibrary",
    "PromptRef",
    "RenderedPrompt",
    "builtin_prompts_dir",
    "escape_passage",
    "list_prompts",
    "load_prompt",
    "release_prompts",
]

LOCK_FILE = "prompts.lock"
_REF = re.compile(r"^(?P<family>[a-z0-9_-]+)/(?P<name>[a-z0-9_.-]+)(?:@(?P<version>\d+|latest))?$")
_VERSION_FILE = re.compile(r"^v(?P<version>\d+)\.jinja$")


def builtin_prompts_dir() -> Path:
    """The shipped prompts: inside the wheel, or the repository's ``prompts/`` when editable."""
    packaged = Path(__file__).parent / "_prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "prompts"


@dataclass(frozen=True, slots=True)
class PromptRef:
    family: str
    name: str
    version: int | None  # None means latest

    @classmethod
    def parse(cls, text: str) -> PromptRef:
        match = _REF.match(text.strip())
        if not match:
            raise PromptError(f"bad prompt ref {text!r}; expected 'family/name@N' or 'family/name@latest'")
        version = match["version"]
        return cls(
            match["family"],
            match["name"],
            None if version in (None, "latest") else int(version),
        )

    @property
    def key(self) -> str:
        return f"{self.family}/{self.name}"

    def __str__(self) -> str:
        return f"{self.key}@{'latest' if self.version is None else self.version}"


def escape_passage(text: str) -> str:
    """Neutralise markup in candidate text so it cannot close its delimiter."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters["passage"] = escape_passage
    return env


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


@dataclass(frozen=True)
class Prompt:
    """A loaded template version; ``ref`` is always concrete (``family/name@N``)."""

    ref: str
    path: Path
    text: str
    sha256: str
    meta: Mapping[str, Any]
    body: str
    released: bool
    _template: Any = field(repr=False, compare=False, default=None)

    @property
    def strategy(self) -> str:
        return str(self.meta.get("strategy", ""))

    @property
    def output(self) -> str:
        return str(self.meta.get("output", ""))

    @property
    def description(self) -> str:
        return str(self.meta.get("description", ""))

    @property
    def variables(self) -> list[str]:
        return [str(v) for v in self.meta.get("variables", [])]

    def render(self, **variables: Any) -> RenderedPrompt:
        """Render both blocks. A template that declares ``boundary`` gets one chosen from
        the variables' texts (see ``llmrerank._quoting``) unless the caller gives it."""
        if "boundary" in self.variables and "boundary" not in variables:
            variables["boundary"] = choose_boundary(quoted_strings(variables))
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise PromptError(f"prompt {self.ref} needs variables {missing}")
        template = self._template
        try:
            context = template.new_context(variables)
            parts = {block: "".join(template.blocks[block](context)).strip() for block in ("system", "user")}
        except TemplateError as exc:
            raise PromptError(f"prompt {self.ref} failed to render: {exc}") from exc
        return RenderedPrompt(system=parts["system"], user=parts["user"])


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    if not text.startswith("---\n"):
        raise PromptError(f"{path}: prompt files start with '---' front matter")
    end = text.find("\n---\n", 4)
    if end < 0:
        raise PromptError(f"{path}: front matter is not closed by '---'")
    try:
        meta = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise PromptError(f"{path}: front matter must be a mapping")
    return meta, text[end + 5 :]


def read_lock(root: Path) -> dict[str, str]:
    lock_path = root / LOCK_FILE
    if not lock_path.exists():
        return {}
    try:
        data = json.loads(lock_path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PromptError(f"{lock_path} is unreadable: {exc}") from exc
    return {str(k): str(v) for k, v in data.items()}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PromptLibrary:
    """Prompt roots searched in order; the first root holding a family/name wins."""

    def __init__(self, search_path: Sequence[str | os.PathLike[str]] = ()) -> None:
        roots = [Path(p).expanduser() for p in search_path]
        env_path = os.environ.get("LLMRERANK_PROMPTS_PATH", "")
        roots += [Path(p).expanduser() for p in env_path.split(os.pathsep) if p]
        roots.append(builtin_prompts_dir())
        self.roots = roots
        self._loaded: dict[str, Prompt] = {}

    def _versions(self, key: str) -> tuple[Path, dict[int, Path]]:
        found = find_versions(self.roots, key, _VERSION_FILE)
        if found is not None:
            return found
        raise PromptError(
            f"no prompt {key!r} in {[str(r) for r in self.roots]}; known: {', '.join(self.keys()) or 'none'}"
        )

    def keys(self) -> list[str]:
        found: set[str] = set()
        for root in self.roots:
            if root.is_dir():
                for file in root.glob("*/*/v*.jinja"):
                    found.add(f"{file.parent.parent.name}/{file.parent.name}")
        return sorted(found)

    def load(self, ref: str | PromptRef) -> Prompt:
        parsed = PromptRef.parse(ref) if isinstance(ref, str) else ref
        root, versions = self._versions(parsed.key)
        version = max(versions) if parsed.version is None else parsed.version
        if version not in versions:
            raise PromptError(f"prompt {parsed.key} has no version {version}; versions: {sorted(versions)}")
        concrete = f"{parsed.key}@{version}"
        cached = self._loaded.get(concrete)
        if cached is not None:
            return cached
        path = versions[version]
        raw = path.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        locked = read_lock(root).get(concrete)
        if locked is not None and locked != sha:
            raise PromptError(
                f"released prompt {concrete} was edited ({path}: sha256 {sha[:12]}, "
                f"lock says {locked[:12]}); released versions are immutable: "
                f"add v{max(versions) + 1} instead"
            )
        text = raw.decode("utf-8")
        meta, body = _split_front_matter(text, path)
        try:
            template = _environment().from_string(body)
        except TemplateError as exc:
            raise PromptError(f"{path}: {exc}") from exc
        missing_blocks = {"system", "user"} - set(template.blocks)
        if missing_blocks:
            raise PromptError(f"{path}: template lacks blocks {sorted(missing_blocks)}")
        prompt = Prompt(
            ref=concrete,
            path=path,
            text=text,
            sha256=sha,
            meta=meta,
            body=body,
            released=locked is not None,
            _template=template,
        )
        self._loaded[concrete] = prompt
        return prompt

    def list(self) -> list[Prompt]:
        prompts = []
        for key in self.keys():
            _, versions = self._versions(key)
            prompts += [self.load(f"{key}@{v}") for v in sorted(versions)]
        return prompts

    def diff(self, old: str, new: str) -> str:
        a, b = self.load(old), self.load(new)
        return "".join(
            difflib.unified_diff(
                a.text.splitlines(keepends=True),
                b.text.splitlines(keepends=True),
                fromfile=a.ref,
                tofile=b.ref,
            )
        )


@lru_cache(maxsize=1)
def _default_library() -> PromptLibrary:
    return PromptLibrary()


def load_prompt(ref: str, *, search_path: Iterable[str | os.PathLike[str]] = ()) -> Prompt:
    """Load ``family/name@N`` (or ``@latest``) from the search path, verifying released hashes."""
    paths = list(search_path)
    library = PromptLibrary(paths) if paths else _default_library()
    return library.load(ref)


def list_prompts(*, search_path: Iterable[str | os.PathLike[str]] = ()) -> list[Prompt]:
    return PromptLibrary(list(search_path)).list()


def release_prompts(root: Path) -> list[str]:
    """Add every version under ``root`` that the lock lacks; returns the refs released."""
    lock = read_lock(root)
    added = []
    for file in sorted(root.glob("*/*/v*.jinja")):
        ref = f"{file.parent.parent.name}/{file.parent.name}@{file.stem[1:]}"
        if ref not in lock:
            lock[ref] = file_sha256(file)
            added.append(ref)
    if added:
        (root / LOCK_FILE).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", "utf-8")
    return added
