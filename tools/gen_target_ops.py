"""Generate a target's observed op table (rule MG003) by running its real toolchain on torch's
own OpInfo samples.

    python tools/gen_target_ops.py executorch [--samples 1] [--jobs 2] [--max-ops N]
    python tools/gen_target_ops.py litert [--samples 2] [--jobs 2]

Writes ``targets/<target>_ops.json``. Run it when torch, executorch or litert-torch is
upgraded; it takes 10-30 minutes on 2 cores and needs ``expecttest`` (torch's test helpers).

ExecuTorch and LiteRT have no op registry to read that says what will fail: ExecuTorch lowers
through core-ATen decompositions, the XNNPACK partitioner and out-variant kernels, LiteRT through
its lowerings, the TFLite converter passes and the interpreter's builtin ops. So each OpInfo
sample (one op with real arguments) is exported with ``torch.export`` and sent through the
whole toolchain: ExecuTorch lowers it with XNNPACK, writes the program and compares its
operator list with the runtime's kernel registry; LiteRT converts it and loads it into the
interpreter. Nothing here is a hand-written op list.

Attribution: an op that appears in any sample that went through is "ok". In a sample that
failed, the ops never seen in a sample that went through are its culprits; when there is
exactly one, it "fails" (with two or more, which one failed is not known, and they stay
unknown). An op is "mixed" when some samples of it alone failed and others went through: its
arguments decide. A sample returns its tensors as a flat tuple, as a model uses them. Ops
are named as in the training-IR program and after ``run_decompositions({})`` (inference IR),
both as ``OpOverload.name()`` (``aten::sort``, ``aten::add.Tensor``), which is how a ``.pt2``
names them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMAT = "modelgate.target_ops/1"
ROOT = Path(__file__).resolve().parent.parent
PYTHON_OPS = ("_operator.", "builtins.", "math.")  # python callables: never an op to judge
# An OpInfo whose first samples all failed gets up to this many: its first samples often use
# arguments a model rarely does (rfft with norm="ortho" fails LiteRT, the default converts).
MORE_SAMPLES = 6


# ------------------------------------------------------------------------------- in the worker
def _canon(target) -> str:
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return target.name()
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order::{target.name()}"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', str(target))}"


def _ops(program) -> list[str]:
    names = {_canon(n.target) for n in program.graph.nodes if n.op == "call_function"}
    return sorted(n for n in names if not n.startswith(PYTHON_OPS))


def _first_line(exc: BaseException) -> str:
    """The error's first line, without the sample's source location (this script's path)."""
    import re

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = re.sub(r"\S+\.py:\d+:\d+: ", "", lines[0])[:200] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _ExecuTorch:
    def __init__(self) -> None:
        from executorch.runtime import Runtime

        self.kernels = set(Runtime.get().operator_registry.operator_names)

    def trial(self, program) -> dict:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        try:
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            lowered = edge.to_executorch()
        except Exception as exc:
            return {"outcome": "fails", "stage": "lowering", "error": _first_line(exc)}
        needed = {
            f"{op.name}.{op.overload}" if op.overload else op.name
            for plan in lowered.executorch_program.execution_plan
            for op in plan.operators
        }
        missing = sorted(needed - self.kernels)
        if missing:
            return {"outcome": "fails", "stage": "loading", "missing": missing}
        return {"outcome": "ok"}

    @staticmethod
    def versions() -> dict:
        from importlib import metadata

        return {"executorch": metadata.version("executorch"), "backend": "XNNPACK"}


class _LiteRT:
    def __init__(self) -> None:
        import litert_torch  # noqa: F401  (25 s: once per worker)

    def trial(self, program) -> dict:
        import re

        import litert_torch
        from ai_edge_litert.interpreter import Interpreter

        args = tuple(program.example_inputs[0])
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.tflite")
            try:
                litert_torch.convert(program.module(), args).export(path)
            except Exception as exc:
                return {"outcome": "fails", "stage": "conversion", "error": _first_line(exc)}
            try:
                interpreter = Interpreter(model_path=path, num_threads=1)
                interpreter.allocate_tensors()
            except Exception as exc:
                missing = re.findall(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'",
                                     str(exc))  # fmt: skip
                return {"outcome": "fails", "stage": "loading", "error": _first_line(exc),
                        "missing": sorted(set(missing))}  # fmt: skip
        return {"outcome": "ok"}

    @staticmethod
    def versions() -> dict:
        from importlib import metadata

        return {"litert-torch": metadata.version("litert-torch"),
                "ai-edge-litert": metadata.version("ai-edge-litert")}  # fmt: skip


TOOLCHAINS = {"executorch": _ExecuTorch, "litert": _LiteRT}


class _Timeout(Exception):
    pass


def _alarm(*_) -> None:
    raise _Timeout()


def worker(
    target: str, start: int, stop: int, samples: int, out: Path, only: set[str] | None = None
) -> None:
    """Run OpInfos ``start:stop``, one JSON line per sample (and a "start" line before each
    OpInfo, so that the parent knows where a crash happened)."""
    import contextlib
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.utils._pytree import tree_flatten, tree_unflatten

    toolchain = TOOLCHAINS[target]()
    signal.signal(signal.SIGALRM, _alarm)
    with out.open("a") as sink:
        for index in range(start, min(stop, len(op_db))):
            info = op_db[index]
            sink.write(json.dumps({"start": index}) + "\n")
            sink.flush()
            try:
                if torch.float32 not in info.supported_dtypes("cpu"):
                    continue
                if only and info.name not in only:
                    continue
                cases = list(info.sample_inputs("cpu", torch.float32))[:MORE_SAMPLES]
            except Exception:
                continue
            passed = False
            for number, case in enumerate(cases):
                if number >= samples and passed:
                    break  # a failure needs more evidence than a pass: see MORE_SAMPLES
                flat, spec = tree_flatten((case.input, case.args, case.kwargs))
                tensors = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]

                class Sample(torch.nn.Module):
                    def forward(self, *ts, _flat=flat, _spec=spec, _at=tensors, _fn=info.op):
                        values = list(_flat)
                        for i, t in zip(_at, ts, strict=False):
                            values[i] = t
                        first, args, kwargs = tree_unflatten(values, _spec)
                        out = tree_flatten(_fn(first, *args, **kwargs))[0]
                        # tensors only: a model uses .values, not the named tuple itself
                        return tuple(o for o in out if isinstance(o, torch.Tensor))

                record = {"opinfo": info.name, "sample": number}
                signal.alarm(120)
                try:
                    program = torch.export.export(
                        Sample(), tuple(flat[i] for i in tensors), strict=False
                    )
                    record["ops"] = _ops(program)
                    with contextlib.suppress(Exception):
                        record["inference_ops"] = _ops(program.run_decompositions({}))
                    record.update(toolchain.trial(program))
                except _Timeout:
                    record.setdefault("outcome", "timeout")
                except Exception:
                    continue  # torch.export itself failed: nothing to say about the target
                finally:
                    signal.alarm(0)
                passed = passed or record.get("outcome") == "ok"
                if record.get("ops"):
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()


# ------------------------------------------------------------------------------- in the parent
def _run_chunk(target: str, start: int, stop: int, samples: int, out: Path) -> None:
    """Run a chunk in a worker; after a crash, record it and go on after the crashed OpInfo."""
    while start < stop:
        cmd = [sys.executable, __file__, target, "--worker", f"{start}:{stop}",
               "--samples", str(samples), "--out", str(out)]  # fmt: skip
        code = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        if code == 0:
            return
        last = start
        for line in out.read_text().splitlines():
            entry = json.loads(line)
            if "start" in entry:
                last = max(last, entry["start"])
        with out.open("a") as sink:
            sink.write(json.dumps({"crashed": last, "code": code}) + "\n")
        start = last + 1


def aggregate(records: list[dict]) -> dict:
    """Per op: "ok", "fails" (with how) or "mixed" (see the module docstring)."""
    tried = [r for r in records if r.get("outcome") in ("ok", "fails")]

    def names(r: dict) -> set[str]:
        return set(r.get("ops") or ()) | set(r.get("inference_ops") or ())

    passed = set().union(*(names(r) for r in tried if r["outcome"] == "ok"))
    failing: dict[str, list[dict]] = {}
    for r in tried:
        culprits = names(r) - passed
        if r["outcome"] == "fails" and len(culprits) == 1:  # two or more: which one is unknown
            failing.setdefault(culprits.pop(), []).append(r)
    ops: dict[str, dict] = {op: {"verdict": "ok"} for op in sorted(passed)}
    for op, rs in sorted(failing.items()):
        first = rs[0]
        ops[op] = {"verdict": "fails", "stage": first["stage"], "samples": len(rs),
                   **{k: first[k] for k in ("error", "missing") if k in first}}  # fmt: skip
    # a failed sample of one op that went through elsewhere: it depends on the arguments
    alone = [r for r in tried if len(r.get("ops") or ()) == 1 and r["ops"][0] in passed]
    for op in sorted({r["ops"][0] for r in alone}):
        mine = [r for r in alone if r["ops"][0] == op]
        bad = [r for r in mine if r["outcome"] == "fails"]
        if bad:
            first = bad[0]
            ops[op] = {"verdict": "mixed", "stage": first["stage"], "failed": len(bad),
                       "samples": len(mine),
                       **{k: first[k] for k in ("error", "missing") if k in first}}  # fmt: skip
    return ops


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=sorted(TOOLCHAINS))
    more = f"OpInfo samples per op (up to {MORE_SAMPLES} while all fail)"
    ap.add_argument("--samples", type=int, default=1, help=more)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-ops", type=int, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--opinfos", help=argparse.SUPPRESS)  # a worker on these OpInfos only
    ap.add_argument("--out", help="output (default targets/<target>_ops.json)")
    a = ap.parse_args(argv)
    if a.worker:
        start, stop = map(int, a.worker.split(":"))
        worker(a.target, start, stop, a.samples, Path(a.out),
               set(a.opinfos.split(",")) if a.opinfos else None)  # fmt: skip
        return 0

    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    count = min(len(op_db), a.max_ops or len(op_db))
    began = time.time()
    with tempfile.TemporaryDirectory() as folder:
        parts = [Path(folder) / f"part{i}.jsonl" for i in range(a.jobs)]
        # interleaved chunks, so both workers meet the slow ops
        bounds = [(i * count // a.jobs, (i + 1) * count // a.jobs) for i in range(a.jobs)]
        with ThreadPoolExecutor(a.jobs) as pool:
            list(pool.map(lambda p: _run_chunk(a.target, *p[0], a.samples, p[1]),
                          zip(bounds, parts, strict=True)))  # fmt: skip
        records = [json.loads(line) for p in parts if p.exists()
                   for line in p.read_text().splitlines()]  # fmt: skip
    samples = [r for r in records if "opinfo" in r]
    crashed = [op_db[r["crashed"]].name for r in records if "crashed" in r]
    table = {
        "format": FORMAT,
        "generated": {
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__.split("+")[0],
            **TOOLCHAINS[a.target].versions(),
            "source": "torch.testing._internal.common_methods_invocations.op_db, float32, "
            f"{a.samples} sample(s) per OpInfo (up to {MORE_SAMPLES} while all failed), "
            "torch.export strict=False",
            "opinfos": count,
            "samples": len(samples),
            "timeouts": sorted({r["opinfo"] for r in samples if r.get("outcome") == "timeout"}),
            "crashed": sorted(crashed),
            "seconds": round(time.time() - began),
        },
        "ops": aggregate(samples),
    }
    out = Path(a.out or ROOT / "targets" / f"{a.target}_ops.json")
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}: {len(table['ops'])} ops from {len(samples)} samples", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
