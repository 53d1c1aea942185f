"""Every rule is registered, documented with ruff's sections and listed in the README."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from modelgate.registry import Registry, RegistryError, UnknownRule, missing_sections
from modelgate.rules import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted(p.stem for p in (ROOT / "rules").glob("mg*.py"))


def test_every_rule_module_is_registered() -> None:
    registered = sorted(m.__name__.rsplit(".", 1)[-1] for m in REGISTRY)
    assert registered == RULE_FILES


@pytest.mark.parametrize("rule_id", REGISTRY.ids())
def test_rule_documentation_has_every_section(rule_id: str) -> None:
    module = REGISTRY.get(rule_id)
    assert missing_sections(module) == []
    assert module.ID.lower() in module.__name__


@pytest.mark.parametrize("rule_id", REGISTRY.ids())
def test_readme_lists_every_rule(rule_id: str) -> None:
    module = REGISTRY.get(rule_id)
    readme = (ROOT / "README.md").read_text("utf-8")
    assert f"| {module.ID} | {module.NAME} | {module.SEVERITY} |" in readme


def _rule(rid: str, name: str) -> types.ModuleType:
    module = types.ModuleType(f"fake_{name}")
    module.ID, module.NAME, module.SEVERITY, module.NEEDS = rid, name, "error", "weights"
    module.OPTIONS = {}
    module.check = lambda graph, options: iter(())
    return module


def test_registry_refuses_duplicates_and_names_unknown_ids() -> None:
    with pytest.raises(RegistryError, match="duplicate rule id MG001"):
        Registry([_rule("MG001", "a"), _rule("MG001", "b")])
    with pytest.raises(RegistryError, match="duplicate rule name"):
        Registry([_rule("MG001", "a"), _rule("MG002", "a")])
    with pytest.raises(RegistryError, match="ID must look like MG001"):
        Registry([_rule("X1", "a")])
    with pytest.raises(UnknownRule, match='unknown rule "MG999"'):
        REGISTRY.get("MG999")
    assert REGISTRY.get("oversized-linear").ID == "MG001"
    assert REGISTRY.get("mg001").NAME == "oversized-linear"
