"""Custom relevance rubrics: what "relevant" means for a team, as versioned data.

A rubric has a name, a description, criteria (what makes a passage useful) and a graded
scale with a meaning per grade. It loads from YAML or is built in code, and the prompts
render it, so changing what "relevant" means never needs a code change::

    name: support-kb
    description: Passages from our support knowledge base, judged for an on-call engineer.
    criteria:
      - Gives a concrete fix or the exact cause, not just background.
    scale:
      - {grade: 0, label: irrelevant, meaning: Unrelated to the question.}
      - {grade: 3, label: answers, meaning: Fully answers the question on its own.}

Identity, like a prompt's: ``ref`` is ``name@version`` (just ``name`` for an unversioned
draft) and ``sha256`` hashes the rubric's *canonical content*: its fields as parsed (name,
description, criteria, scale; not the version), dumped as JSON with sorted keys
(``json.dumps(fields, sort_keys=True, ensure_ascii=False)``). Comments, indentation, key
order and YAML quoting or folding style therefore do not change the hash; any change of a
word does. Every ``CallRecord``, trace line, eval result, report and service response
carries both.

Versioned storage mirrors the prompts': ``<root>/<name>/v<N>.yaml``, addressed as
``name@N`` (``@latest`` or no suffix: the highest N). A root may hold ``rubrics.lock``
(JSON: ref -> canonical sha256); a locked version is *released*, and loading an edited one
is an error that says to add a version. Roots are searched in order: the caller's folders,
then ``LLMRERANK_RUBRICS_PATH`` (os.pathsep-separated), then ``rubrics/`` and
``evals/rubrics/`` under the current directory. ``load_rubric`` takes a ref or a YAML path.

Long because it holds the value type and its versioned library (search path, lock, diff,
release) side by side, as ``prompts.py`` does for templates.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._versioned import find_versions
from .errors import RubricError

__all__ = [
    "DEFAULT_RUBRIC",
    "RUBRICS_PATH_ENV",
    "RUBRIC_LOCK_FILE",
    "Grade",
    "Rubric",
    "RubricEntry",
    "RubricLibrary",
    "load_rubric",
    "release_rubrics",
]

RUBRIC_LOCK_FILE = "rubrics.lock"
RUBRICS_PATH_ENV = "LLMRERANK_RUBRICS_PATH"
_REF = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+?)(?:@(?P<version>\d+|latest))?$")
_VERSION_FILE = re.compile(r"^v(?P<version>\d+)\.ya?ml$")


class Grade(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    grade: int = Field(ge=0, le=100)
    label: str = Field(min_length=1)
    meaning: str = Field(min_length=1)


class Rubric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    criteria: tuple[str, ...] = ()
    scale: tuple[Grade, ...] = Field(min_length=2)
    # set from the file name (v<N>.yaml) in a rubric library, or written in a loose file
    version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _scale_is_ordered(self) -> Rubric:
        grades = [g.grade for g in self.scale]
        if len(set(grades)) != len(grades):
            raise ValueError(f"scale repeats a grade: {grades}")
        if grades != sorted(grades):
            raise ValueError(f"scale must list grades from lowest to highest: {grades}")
        return self

    @property
    def grades(self) -> list[int]:
        return [g.grade for g in self.scale]

    @property
    def min_grade(self) -> int:
        return self.scale[0].grade

    @property
    def max_grade(self) -> int:
        return self.scale[-1].grade

    @property
    def ref(self) -> str:
        """``name@version``, or the bare name of an unversioned rubric."""
        return self.name if self.version is None else f"{self.name}@{self.version}"

    def canonical(self) -> str:
        """The content that identifies the rubric: its fields but the version, as JSON with
        sorted keys (see the module docstring)."""
        content = self.model_dump(mode="json", exclude={"version"})
        return json.dumps(content, sort_keys=True, ensure_ascii=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "rubric") -> Rubric:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RubricError(f"{source} is not a valid rubric:\n{exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Rubric:
        """A rubric from one YAML file. Its version is the one written there, else the file
        name's (``v<N>.yaml``, after following a symlink), else none. No lock is checked:
        ``load_rubric`` does that."""
        file = Path(path).expanduser()
        data = _read_yaml(file)
        named = _VERSION_FILE.match(file.resolve().name)
        if isinstance(data, dict) and "version" not in data and named:
            data = {**data, "version": int(named["version"])}
        return cls.from_dict(data, source=str(file))

    def to_yaml(self) -> str:
        """YAML of the content, one line per criterion and grade (diffs show what changed)."""
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)


def _read_yaml(file: Path) -> Any:
    try:
        return yaml.safe_load(file.read_text("utf-8"))
    except OSError as exc:
        raise RubricError(f"cannot read rubric {file}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RubricError(f"rubric {file} is not valid YAML: {exc}") from exc


@dataclass(frozen=True)
class RubricEntry:
    """A rubric with where it came from: ``released`` when its root's lock holds it."""

    rubric: Rubric
    path: Path | None
    released: bool

    @property
    def status(self) -> str:
        if self.path is None:
            return "built-in"
        return "released" if self.released else "draft"


def _read_lock(root: Path) -> dict[str, str]:
    lock_path = root / RUBRIC_LOCK_FILE
    if not lock_path.exists():
        return {}
    try:
        data = json.loads(lock_path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RubricError(f"{lock_path} is unreadable: {exc}") from exc
    return {str(k): str(v) for k, v in data.items()}


def _default_roots() -> list[Path]:
    configured = os.environ.get(RUBRICS_PATH_ENV, "")
    roots = [Path(p).expanduser() for p in configured.split(os.pathsep) if p]
    return [*roots, Path("rubrics"), Path("evals") / "rubrics"]


class RubricLibrary:
    """Rubric roots searched in order; the first root holding a name wins. The built-in
    ``DEFAULT_RUBRIC`` is ``general-relevance@1``."""

    def __init__(self, search_path: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.roots = [Path(p).expanduser() for p in search_path] + _default_roots()

    def _versions(self, name: str) -> tuple[Path, dict[int, Path]]:
        found = find_versions(self.roots, name, _VERSION_FILE)
        if found is not None:
            return found
        known = ", ".join(self.names()) or "none"
        raise RubricError(f"no rubric {name!r} in {[str(r) for r in self.roots]}; known: {known}")

    def names(self) -> list[str]:
        found = {DEFAULT_RUBRIC.name}
        for root in self.roots:
            if root.is_dir():
                found.update(f.parent.name for f in root.glob("*/v*.y*ml") if _VERSION_FILE.match(f.name))
        return sorted(found)

    def entry(self, ref: str) -> RubricEntry:
        """``name@N``, ``name@latest`` or ``name``; a released version's hash is verified."""
        match = _REF.match(ref.strip())
        if not match:
            raise RubricError(f"bad rubric ref {ref!r}; expected 'name@N', 'name@latest' or a YAML path")
        name, wanted = match["name"], match["version"]
        builtin = name == DEFAULT_RUBRIC.name and wanted in (None, "latest", str(DEFAULT_RUBRIC.version))
        if builtin and not any((root / name).is_dir() for root in self.roots):
            return RubricEntry(DEFAULT_RUBRIC, None, released=True)
        root, versions = self._versions(name)
        version = max(versions) if wanted in (None, "latest") else int(wanted)
        if version not in versions:
            raise RubricError(f"rubric {name} has no version {version}; versions: {sorted(versions)}")
        path = versions[version]
        data = _read_yaml(path)
        if not isinstance(data, dict):
            raise RubricError(f"{path} is not a valid rubric: expected a mapping")
        if data.get("name", name) != name or data.get("version", version) != version:
            raise RubricError(
                f"{path} says name {data.get('name')!r} version {data.get('version')!r}; "
                f"its place in the library says {name}@{version}"
            )
        rubric = Rubric.from_dict({**data, "name": name, "version": version}, source=str(path))
        locked = _read_lock(root).get(rubric.ref)
        if locked is not None and locked != rubric.sha256:
            raise RubricError(
                f"released rubric {rubric.ref} was edited ({path}: sha256 {rubric.sha256[:12]}, "
                f"lock says {locked[:12]}); released versions are immutable: "
                f"add {name}/v{max(versions) + 1}.yaml instead"
            )
        return RubricEntry(rubric, path, released=locked is not None)

    def load(self, ref: str) -> Rubric:
        return self.entry(ref).rubric

    def list(self) -> list[RubricEntry]:
        entries = []
        for name in self.names():
            try:
                _, versions = self._versions(name)
            except RubricError:  # only the built-in one has this name
                entries.append(RubricEntry(DEFAULT_RUBRIC, None, released=True))
                continue
            entries += [self.entry(f"{name}@{v}") for v in sorted(versions)]
        return entries

    def resolve(self, spec: str | os.PathLike[str]) -> RubricEntry:
        """A ref through the library, or a YAML path. A path to ``<root>/<name>/v<N>.yaml``
        is loaded as ``name@N`` of that root, so its lock is checked."""
        if isinstance(spec, str) and _REF.match(spec.strip()) and not spec.endswith((".yaml", ".yml")):
            return self.entry(spec)
        file = Path(spec).expanduser().resolve()
        if _VERSION_FILE.match(file.name):
            root = file.parents[1]
            return RubricLibrary([root]).entry(f"{file.parent.name}@{file.stem[1:]}")
        return RubricEntry(Rubric.load(file), file, released=False)

    def diff(self, old: str, new: str) -> str:
        """Unified diff of two rubrics' canonical YAML (refs or paths)."""
        a, b = self.resolve(old).rubric, self.resolve(new).rubric
        return "".join(
            difflib.unified_diff(
                a.to_yaml().splitlines(keepends=True),
                b.to_yaml().splitlines(keepends=True),
                fromfile=f"{a.ref} {a.sha256[:12]}",
                tofile=f"{b.ref} {b.sha256[:12]}",
            )
        )


def load_rubric(
    spec: str | os.PathLike[str] | Rubric, *, search_path: Sequence[str | os.PathLike[str]] = ()
) -> Rubric:
    """A rubric from a ref (``support-kb@2``, ``support-kb@latest``), a YAML path, or as given."""
    if isinstance(spec, Rubric):
        return spec
    return RubricLibrary(search_path).resolve(spec).rubric


def release_rubrics(root: str | os.PathLike[str]) -> list[str]:
    """Lock every version under ``root`` that the lock lacks; returns the refs released."""
    folder = Path(root)
    lock = _read_lock(folder)
    library = RubricLibrary([folder])
    added = []
    for file in sorted(folder.glob("*/v*.y*ml")):
        match = _VERSION_FILE.match(file.name)
        if not match:
            continue
        ref = f"{file.parent.name}@{int(match['version'])}"
        if ref not in lock:
            lock[ref] = library.entry(ref).rubric.sha256
            added.append(ref)
    if added:
        (folder / RUBRIC_LOCK_FILE).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", "utf-8")
    return added


DEFAULT_RUBRIC = Rubric(
    name="general-relevance",
    version=1,
    description="How well the passage answers the search query.",
    criteria=(
        "The passage addresses the information need behind the query, not just its words.",
        "A passage that answers the query directly is better than one that is only on topic.",
    ),
    scale=(
        Grade(grade=0, label="irrelevant", meaning="Has nothing to do with the query."),
        Grade(grade=1, label="related", meaning="On the topic but does not answer the query."),
        Grade(
            grade=2,
            label="highly relevant",
            meaning="Partly answers the query or answers it unclearly.",
        ),
        Grade(
            grade=3,
            label="perfectly relevant",
            meaning="Dedicated to the query and answers it fully.",
        ),
    ),
)
