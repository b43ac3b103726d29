"""Open registries of named factories: the backends' prefixes (``openai:``) and the stage
kinds (``dense:``). A name is registered in code (``register``) or by an installed package
through an entry-point group (the entry's name is the registry's name, its object the
factory), so a third party adds a backend or a stage without touching this package."""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import UserError

__all__ = ["Registry"]

FactoryT = TypeVar("FactoryT", bound=Callable[..., object])


class Registry(Generic[FactoryT]):
    """Factories by name; ``what`` names an entry in messages ("backend prefix")."""

    def __init__(self, what: str, entry_point_group: str, *, forbidden: str = ":") -> None:
        self.what = what
        self.entry_point_group = entry_point_group
        self.forbidden = forbidden
        self._factories: dict[str, FactoryT] = {}
        self._lock = threading.Lock()

    def register(self, name: str, factory: FactoryT, *, replace: bool = False) -> None:
        """Make ``name`` build with ``factory``; a name taken by another factory needs ``replace``."""
        if not name or any(c in name for c in self.forbidden):
            shown = ", ".join(repr(c) for c in self.forbidden)
            raise UserError(f"a {self.what} is a non-empty name without {shown}, got {name!r}")
        with self._lock:
            if name in self._factories and self._factories[name] is not factory and not replace:
                raise UserError(f"{self.what} {name!r} is already registered")
            self._factories[name] = factory

    def find(self, name: str) -> FactoryT | None:
        """The factory of ``name``: registered, else loaded from an installed entry point."""
        with self._lock:
            factory = self._factories.get(name)
        if factory is not None:
            return factory
        for entry in entry_points(group=self.entry_point_group, name=name):
            loaded: FactoryT = entry.load()
            self.register(name, loaded, replace=True)
            return loaded
        return None

    def names(self) -> list[str]:
        """Every name known: registered, then installed through entry points."""
        with self._lock:
            registered = set(self._factories)
        return sorted(registered | {e.name for e in entry_points(group=self.entry_point_group)})
