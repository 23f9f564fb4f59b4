"""Registries of the plug-in kinds: recurrent cells, tasks and datasets.

Each entry is registered next to its code, with its typed config schema, in the style of fairseq's
``@register_task("translation", dataclass=TranslationConfig)``::

    from rnnlab.registry import CELLS

    @CELLS.register("lstm", variant="peephole", schema=None)
    class PeepholeLSTM(NumpyCell): ...

Heavy objects (a LightningModule, a LightningDataModule builder) are registered by a ``"module:attr"`` target
string instead, imported only when the entry is loaded; so the modules that register entries stay light (NumPy at
most, never torch or lightning) and listing a registry, rendering ``--help`` or validating a config costs no heavy
import.

A registry discovers the built-in entries by importing every module of its packages (``packages``) the first time it
is asked for an entry or a list; a user's plug-ins register the same way from any module imported before the run
(``plugins=[my_module]`` on the command line). Everything the project lists by hand elsewhere (config group options,
the tasks that take a kind of data, ``--help``, the docs tables, the catalogue check, the tests' parameter lists)
is derived from these registries.

This module imports nothing heavy: ``rnnlab-train --help`` imports it.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class RegistryError(KeyError):
    """An unknown name or a duplicate registration; ``str()`` is one readable line."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    """One registered plug-in."""

    kind: str  # "cell", "task", "dataset"
    name: str
    variant: str  # a form of the named plug-in ("standard" unless it has several)
    obj: Any  # the registered object itself, or None when registered by ``target``
    target: str | None  # "package.module:attr", imported by ``load``
    schema: type | None  # the typed config schema (a dataclass) of this entry's config group option
    meta: Mapping[str, Any] = field(default_factory=dict)  # kind-specific facts (data kind, gates, ...)
    origin: str = ""  # the module that registered it

    @property
    def key(self) -> str:
        return self.name if self.variant == "standard" else f"{self.name}/{self.variant}"

    @property
    def doc(self) -> str:
        """The first line of the registered object's docstring (or of ``meta['doc']``)."""
        text = self.meta.get("doc") or (getattr(self.obj, "__doc__", None) if self.obj is not None else None) or ""
        return text.strip().splitlines()[0] if text.strip() else ""

    def load(self) -> Any:
        """The registered object (imports ``target`` the first time)."""
        if self.obj is not None:
            return self.obj
        module, _, attr = str(self.target).partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
        return obj


class Registry:
    """Name (and variant) -> Entry, for one kind of plug-in."""

    def __init__(self, kind: str, packages: tuple[str, ...] = ()):
        self.kind = kind
        self.packages = packages  # imported (every module in them) on first use: the built-in entries
        self._entries: dict[tuple[str, str], Entry] = {}
        self._discovered = False

    # ------------------------------------------------------------------------------------------ registering
    def register(
        self,
        name: str,
        *,
        variant: str = "standard",
        schema: type | None = None,
        target: str | None = None,
        replace: bool = False,
        **meta: Any,
    ) -> Callable[[Any], Any]:
        """Register the decorated object (or, with ``target``, a lazily imported one: call the result with None).

        Registering a name twice is an error unless ``replace`` (a plug-in that deliberately overrides one)."""

        def add(obj: Any) -> Any:
            key = (str(name), str(variant))
            if key in self._entries and not replace:
                old = self._entries[key]
                raise RegistryError(
                    f"{self.kind} {_label(*key)} is registered twice: by {old.origin or '?'} and by "
                    f"{_origin(obj, target)} (pass replace=True to override it on purpose)"
                )
            self._entries[key] = Entry(
                kind=self.kind,
                name=key[0],
                variant=key[1],
                obj=obj,
                target=target,
                schema=schema,
                meta=MappingProxyType(dict(meta)),
                origin=_origin(obj, target),
            )
            return obj

        return add

    def add(self, name: str, *, target: str, **kwargs: Any) -> Entry:
        """Register a lazily imported ``target`` ("module:attr"): ``register(name, target=..., ...)(None)``."""
        self.register(name, target=target, **kwargs)(None)
        return self._entries[(name, kwargs.get("variant", "standard"))]

    # ------------------------------------------------------------------------------------------- querying
    def discover(self) -> None:
        """Import the built-in modules once (each registers its entries as it is imported)."""
        if self._discovered:
            return
        self._discovered = True
        for package in self.packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
                if not info.name.rpartition(".")[2].startswith("_"):
                    importlib.import_module(info.name)

    def get(self, name: str, variant: str = "standard") -> Entry:
        """The entry, or a RegistryError naming the known ones (and the closest)."""
        self.discover()
        key = (str(name), str(variant))
        if key in self._entries:
            return self._entries[key]
        names = self.names()
        if key[0] in names:
            variants = self.variants(key[0])
            close = difflib.get_close_matches(key[1], variants, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise RegistryError(
                f"{self.kind} {key[0]} has no variant {key[1]!r}: choose one of {', '.join(variants)}{hint}"
            )
        close = difflib.get_close_matches(key[0], names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise RegistryError(f"unknown {self.kind} {key[0]!r}: choose one of {', '.join(names)}{hint}")

    def names(self) -> list[str]:
        """Registered names, in registration order (built-ins first)."""
        self.discover()
        return list(dict.fromkeys(name for name, _ in self._entries))

    def variants(self, name: str) -> list[str]:
        """The variants of ``name``, "standard" first."""
        self.discover()
        found = [v for n, v in self._entries if n == name]
        return sorted(found, key=lambda v: (v != "standard", found.index(v)))

    def entries(self) -> list[Entry]:
        self.discover()
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        self.discover()
        return any(n == name for n, _ in self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _label(name: str, variant: str) -> str:
    return name if variant == "standard" else f"{name} (variant {variant})"


def _origin(obj: Any, target: str | None) -> str:
    if target is not None:
        return target.partition(":")[0]
    return str(getattr(obj, "__module__", "") or "")


def working_directory_on_path() -> None:
    """Put the working directory on ``sys.path``, as ``python -m`` does, so that a plug-in module beside the user's
    command imports (the entry points call this; a console script's ``sys.path`` starts with its own directory)."""
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def import_plugins(modules: Any) -> list[str]:
    """Import the user's plug-in modules (``plugins=[my_cells, pkg.tasks]``); each registers what it defines.
    Returns their names. A module that cannot be imported is a one-line error naming it."""
    from rnnlab.errors import ConfigError

    if modules is None:
        return []
    if isinstance(modules, str):
        modules = [modules]
    names = []
    for module in modules:
        name = str(module).strip()
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"plugins: cannot import {name!r} ({err})") from err
        except RegistryError as err:
            raise ConfigError(f"plugins: {name}: {err}") from err
        names.append(name)
    return names


CELLS = Registry("cell", packages=("rnnlab.cells",))
TASKS = Registry("task", packages=("rnnlab.tasks.specs",))
DATASETS = Registry("dataset", packages=("rnnlab.data.specs",))
