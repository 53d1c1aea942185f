"""A toy deployment target, registered by the tests that need one (never by modelgate).

It proves that a target is one module: registered at run time, it shows up in ``--target``,
``--convert``, the schema, MG003, the conversion's figures and MG107, with no other file
changed. Its "converter" stores the weights in float16 and refuses any program holding a
ReLU, which its op table also predicts, so MG003's prediction and the real run can disagree
or agree on purpose.
"""

from __future__ import annotations

from typing import Any

from modelgate.opsupport import Verdict

NAME = "toy"
LABEL = "Toy"
EXTRA = "torch"
REQUIRES = ("torch",)
CONVERSION = "Toy conversion"
CONVERTING = "converting to Toy"
OP_FIX = "use ops the Toy runtime has kernels for"
DRIFT_OF = "Toy conversion (FP16 weights)"
UNSUPPORTED = "relu"


def op_verdict(name: str, fmt: str, dialect: str | None) -> Verdict | None:
    if UNSUPPORTED in name:
        return Verdict("unsupported", f"Toy has no kernel for {UNSUPPORTED!r}")
    return None


def modules(job: Any) -> list[str]:
    return ["torch", "numpy"]


def step(emit: Any, job: Any, model: Any, samples: list, reference: list | None) -> None:
    """Round the weights to float16 ("convert"), then measure the drift that costs."""
    import copy
    import io

    import torch

    from modelgate.checks import measure, steps

    emit.stage(f"toy: {CONVERTING}")
    graph = getattr(model.program, "graph", None) or model.program.graph_module.graph
    targets = [str(getattr(n, "target", "")) for n in getattr(graph, "nodes", [])]
    if any(UNSUPPORTED in t for t in targets):
        emit("toy", {"ok": False, "kind": "error", "stage": CONVERTING, "op": UNSUPPORTED,
                     "error": f"ToyError: no kernel for '{UNSUPPORTED}'"})  # fmt: skip
        return
    half = {k: v.half() for k, v in model.runner.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(half, buffer)
    emit("toy", {"ok": True, "bytes": buffer.tell(), "ops": len(targets)})
    if reference is not None:
        variant = copy.deepcopy(model.runner)
        variant.load_state_dict({k: v.float() for k, v in half.items()})
        outputs = measure.stack([steps.forward(variant, s) for s in samples])
        drift = measure.compare_outputs(reference, outputs)
        drift.update(method="float16 weights run by torch", samples=len(samples))
        emit("toy_drift", drift)
