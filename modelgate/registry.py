"""The rule registry: one explicit table of rule modules, checked when it is built."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from types import ModuleType

from modelgate.finding import SEVERITIES
from modelgate.rule import DOC_SECTIONS, NEEDS, Option

_ID = re.compile(r"^MG\d{3}$")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class RegistryError(Exception):
    pass


class UnknownRule(KeyError):
    def __init__(self, key: str, known: Iterable[str]) -> None:
        super().__init__(key)
        self.key = key
        self.known = sorted(known)

    def __str__(self) -> str:
        return f'unknown rule "{self.key}" (known: {", ".join(self.known)})'


class Registry:
    """Rule modules by id; also found by name. Refuses duplicates and malformed rules."""

    def __init__(self, modules: Iterable[ModuleType]) -> None:
        self._by_id: dict[str, ModuleType] = {}
        self._by_name: dict[str, ModuleType] = {}
        for module in modules:
            self._add(module)

    def _add(self, module: ModuleType) -> None:
        rid = getattr(module, "ID", None)
        name = getattr(module, "NAME", None)
        where = module.__name__
        if not isinstance(rid, str) or not _ID.match(rid):
            raise RegistryError(f"{where}: ID must look like MG001, got {rid!r}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"{where}: NAME must be kebab-case, got {name!r}")
        if rid in self._by_id:
            raise RegistryError(f"duplicate rule id {rid}: {where} and {self._by_id[rid].__name__}")
        if name in self._by_name:
            raise RegistryError(f"duplicate rule name {name}: {where}")
        if getattr(module, "SEVERITY", None) not in SEVERITIES:
            raise RegistryError(f"{where}: SEVERITY must be one of {SEVERITIES}")
        if getattr(module, "NEEDS", None) not in NEEDS:
            raise RegistryError(f"{where}: NEEDS must be one of {NEEDS}")
        options = getattr(module, "OPTIONS", None)
        if not isinstance(options, dict) or not all(
            isinstance(o, Option) for o in options.values()
        ):
            raise RegistryError(f"{where}: OPTIONS must map names to Option")
        if not callable(getattr(module, "check", None)):
            raise RegistryError(f"{where}: no check(graph, options)")
        self._by_id[rid] = module
        self._by_name[name] = module

    def __iter__(self) -> Iterator[ModuleType]:
        return iter(sorted(self._by_id.values(), key=lambda m: m.ID))

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, key: str) -> bool:
        return key in self._by_id or key in self._by_name

    def get(self, key: str) -> ModuleType:
        """A rule by id ("MG001", any case) or name ("oversized-linear")."""
        module = self._by_id.get(key.upper()) or self._by_name.get(key.lower())
        if module is None:
            raise UnknownRule(key, self._by_id)
        return module

    def ids(self) -> list[str]:
        return sorted(self._by_id)


def documentation(module: ModuleType) -> str:
    """The rule's docstring, which is its documentation."""
    return (module.__doc__ or "").strip()


def missing_sections(module: ModuleType) -> list[str]:
    doc = documentation(module)
    return [s for s in DOC_SECTIONS if f"## {s}" not in doc]
