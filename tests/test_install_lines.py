"""Every install line in the README and the hooks installs this project, not a namesake.

The registry name ``modelgate`` belongs to an unrelated project, so ``pip install modelgate``
(or ``modelgate[...]`` in ``additional_dependencies``) would install someone else's code.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = re.search(r'^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text("utf-8"), re.M)[1]
# packages that are not this project and that the README tells users to install on purpose
OTHERS = {"pip", "torch", "numpy", "scikit-learn", "coremltools", "onnxruntime"}


def _requirements(text: str) -> list[str]:
    """The requirement strings of ``pip install ...`` lines and additional_dependencies."""
    out: list[str] = []
    for line in text.splitlines():
        if "pip install" in line:
            args = line.split("pip install", 1)[1].split("#", 1)[0]
            # a ``name @ url`` requirement is one argument in quotes
            out += [m.strip("\"'") for m in re.findall(r"\"[^\"]+\"|'[^']+'|\S+", args)]
        for deps in re.findall(r"additional_dependencies:\s*\[([^\]]*)\]", line):
            out += [d.strip().strip("\"'") for d in deps.split(",") if d.strip()]
    return [r for r in out if r and r != "\\" and not r.startswith(("-", "`"))]


def _name(requirement: str) -> str:
    return re.split(r"[\[@<>=!~ ;]", requirement.strip("`()"), maxsplit=1)[0].strip().lower()


def test_the_distribution_name_is_not_the_taken_one() -> None:
    assert DIST != "modelgate"


def test_every_install_line_installs_this_project() -> None:
    checked = 0
    for doc in ("README.md", ".pre-commit-hooks.yaml", "action.yml"):
        for req in _requirements((ROOT / doc).read_text("utf-8")):
            if req in ("wheel", "urllib3"):
                continue
            name = _name(req)
            if req.startswith((".", "/", "$", '"$')) or name in OTHERS or name.startswith("$"):
                continue
            assert name == DIST, f"{doc}: `{req}` installs {name!r}, not {DIST!r}"
            checked += 1
    assert checked >= 4  # the README's own lines and the hook examples were found


def test_hints_in_messages_name_this_project() -> None:
    for path in (ROOT / "modelgate").rglob("*.py"):
        for req in _requirements(path.read_text("utf-8")):
            name = _name(req)
            assert name != "modelgate", f"{path.relative_to(ROOT)}: `{req}`"
