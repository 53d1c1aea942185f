"""A check the config or the command line asked for could not run on this model.

## What it does
Reports every check that was asked for explicitly and did not run on the model, each with
the reason and what would let it run:
- a conversion (`convert:` / `--convert coreml`, `--convert onnx`): a state dict or a pickled
  module has no architecture to convert (a build recipe, `models:` in the config, gives it
  one), a model without input shapes cannot be run, Core ML
  has no ONNX frontend, a converter's package is missing, the time limit was used up;
- a compression preset (`compress:` / `--compress palettize-4`), for the same reasons;
- a target's op check (`targets:` / `--target`, MG003) on a model it cannot read: a file
  without a graph of ops (state dict, safetensors, checkpoint), an ONNX file for Core ML.

Only what the config or the command line named counts: the default targets are not asked
for, so a plain `modelgate check weights.pth` does not fail. A budgeted figure that could not
be measured is MG304's; an unreadable file is MG902 alone, a file whose build recipe failed
is MG111 or MG112 alone; a check that did not run because an earlier one failed (presets
after a failed Core ML conversion, MG101; presets after a crashed one, MG105) is not
reported twice: that failure is the finding.

## Why is this bad?
A gate that asked for a conversion and goes green without one is theatre: the verdict says
"converts" about a model nobody converted. The default severity is error for that reason.

## Example
```console
$ modelgate check weights.pth --convert coreml --compress palettize-4
```
(a state dict: no architecture to convert or compress)

## Use instead
```console
$ modelgate check model.pt2 --convert coreml --compress palettize-4
```
(saved with `torch.export.save`), or stop asking for checks the file cannot have, or lower the
severity where that is intended: `rules: {MG106: warning}`.

## Options
None.

## References
- modelgate README, "Conversion, compression and the budget"
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.results import ChecksResult
from modelgate.targets import REGISTRY as TARGETS

ID = "MG106"
NAME = "check-not-run"
SEVERITY = "error"
NEEDS = "weights"
OPTIONS: dict = {}

_SAVE = "save the model with torch.export.save (.pt2) or torch.jit.save, which keep its graph"


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    if graph.build is not None and not graph.build.ok and not graph.build.refused:
        return  # its recipe did not build a model: that is the finding (MG111 / MG112)
    for target in options.get("asked_targets") or []:
        why = _op_check_blocked(graph, target)
        if why is not None:
            reason, fix = why
            label = TARGETS.get(target).label if target in TARGETS else target
            yield _problem(
                graph,
                f"the {label} op check (MG003)",
                reason,
                fix,
                f"targets: / --target {target}",
                f"target:{target}",
            )
    checks = graph.checks or ChecksResult()
    requested = checks.requested
    for converter in requested.asked:
        why = _not_converted(graph, checks, converter)
        if why is not None:
            label = _conversion(converter, graph.format)
            yield _problem(
                graph, label, *why, f"convert: / --convert {converter}", f"convert:{converter}"
            )
    for preset in requested.compress:
        why = _not_compressed(checks, preset)
        if why is not None:
            yield _problem(
                graph,
                f"the {preset} compression",
                *why,
                f"compress: / --compress {preset}",
                f"compress:{preset}",
            )


def _problem(
    graph: ModelGraph, label: str, reason: str, fix: str | None, asked: str, key: str
) -> Problem:
    stop = f"or stop asking for it ({asked})"
    return Problem(
        f"{label} was asked for ({asked}) but did not run: {reason}",
        Location(graph.path),
        fix=f"{fix}; {stop}" if fix else f"make it runnable (see the reason), {stop}",
        key=key,
    )


def _conversion(name: str, fmt: str) -> str:
    """What converting to the target is called, or its check of a file as given."""
    target = TARGETS.find(name)
    if target is None:
        return name
    if fmt in target.file_formats:
        return f"the {target.file_check} check of {target.file_formats[fmt]}"
    return f"the {target.conversion}"


def _op_check_blocked(graph: ModelGraph, name: str) -> tuple[str, str | None] | None:
    """Why MG003 cannot check target ``name`` on this model (as the engine and MG003 decide)."""
    target = TARGETS.find(name)
    if target is not None and graph.format in target.file_formats:
        return None
    refusal = TARGETS.refusal(target, graph.format) if target is not None else None
    if refusal is not None:
        exported = graph.format in TARGETS.file_formats()  # an ONNX file
        fix = f"check the PyTorch model the {graph.format.upper()} file was exported from"
        return refusal, fix if exported else None
    if graph.has_graph:
        return None
    reason = graph.no_graph_reason()
    if reason in graph.notes:  # the loader says what is missing (a package, the file's code)
        return reason, None
    if graph.format == "pickled_module":
        return "a pickled nn.Module records no graph of ops (loading it would run its code)", _SAVE
    return reason, _SAVE


def _not_converted(
    graph: ModelGraph, checks: ChecksResult, converter: str
) -> tuple[str, str | None] | None:
    everything = checks.skip_reason()  # none of the checks ran: loading, input shapes, ...
    if everything is not None:
        return everything
    result = checks.of(converter)
    if not isinstance(result, dict):
        return "modelgate did not run it", None
    if result.get("ok") is None:
        return str(result.get("skipped") or "not run"), None
    return None  # ran: a failure is MG101 / MG102's


def _not_compressed(checks: ChecksResult, preset: str) -> tuple[str, str | None] | None:
    everything = checks.skip_reason()
    if everything is not None:
        return everything
    owner = TARGETS.preset_owner(preset)
    conversion = f"the {owner.conversion}" if owner else "the conversion"
    converted = checks.of(owner.name) if owner else None
    if not isinstance(converted, dict):
        return f"{conversion} it compresses did not run", None
    if converted.get("ok") is None:
        return str(converted.get("skipped") or f"{conversion} did not run"), None
    if converted.get("ok") is False:
        return None  # the conversion's failure is the finding (MG101)
    result = checks.preset(preset)
    if not isinstance(result, dict):
        return "modelgate did not run it", None
    if result.get("ok") is None and "earlier step failed" not in str(result.get("skipped")):
        return str(result.get("skipped") or "not run"), None
    return None  # ran, or an earlier preset failed: a failure is MG105's
