"""One real conversion in a fresh process (tests run it as a subprocess).

    python convert_probe.py PATH TARGET SHAPE  ->  {"ok": bool, "error": str, "missing": [...]}
    python convert_probe.py --serve < [[PATH, TARGET, SHAPE], ...]  ->  [{...}, ...]

TARGET: coreml (a TorchScript file or a .pt2) | onnx (a .pt2 through the default dynamo
exporter, or TorchScript through the legacy one). Each attempt gets its own process: a failed
export can poison later conversions in the same process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def main(path: str, target: str, shape: str) -> dict:
    import torch

    out: dict = {"ok": False}
    torchscript = not path.endswith(".pt2")
    model = torch.jit.load(path) if torchscript else torch.export.load(path)
    example = [torch.randn(*(int(d) for d in shape.split("x")))]
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            if target == "coreml":
                import coremltools as ct

                if torchscript:
                    inputs = [ct.TensorType(shape=t.shape) for t in example]
                    ml = ct.convert(model, inputs=inputs, convert_to="mlprogram",
                                    minimum_deployment_target=ct.target.iOS17,
                                    skip_model_load=True)  # fmt: skip
                else:
                    ep = model.run_decompositions({})
                    ml = ct.convert(
                        ep,
                        convert_to="mlprogram",
                        skip_model_load=True,
                        minimum_deployment_target=ct.target.iOS17,
                    )
                out["ops"] = len(list(ml._mil_program.functions["main"].operations))
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    torch.onnx.export(model, tuple(example), f"{tmp}/m.onnx",
                                      dynamo=not torchscript)  # fmt: skip
        out["ok"] = True
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        cause = exc.__cause__
        while cause is not None:
            out["error"] += f" | {type(cause).__name__}: {cause}"[:1000]
            cause = cause.__cause__
        if target == "coreml" and torchscript:
            # the converter's own list of every op it lacks (what ct.convert(debug=True) prints)
            import coremltools as ct
            from coremltools.converters.mil.frontend.torch.converter import TorchConverter

            inputs = [ct.TensorType(shape=t.shape) for t in example]
            _, missing = TorchConverter(torch.jit.load(path), inputs).check_ops()
            out["missing"] = sorted(missing)
    return out


def run_many(cases: list[tuple[str, str, str]]) -> list[dict]:
    """:func:`main` for each (path, target, shape), each in a fresh process of its own, two at
    a time (the tests' machine has two cores). One server process imports torch and the
    converters once and forks a child per conversion (as modelgate's own checks do), so each
    conversion starts clean without paying the ~6 s import again."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, __file__, "--serve"],
        input=json.dumps(cases), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return _parse(proc)


def _parse(proc) -> list[dict]:  # type: ignore[no-untyped-def]
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Cases submitted ahead (a module's start_background) share one server run in the background
# (tests/background.py): one import of torch and the converters for every module's cases.
_batch: list[list[str]] = []  # the cases of the shared run not started yet
_runs = 0
_submitted: dict[str, tuple[str, list[list[str]], int, int]] = {}  # key -> job, cases, slice


def _job() -> str:
    return f"convert_probe.{_runs}"


def submit(key: str, cases: list[tuple[str, str, str]]) -> None:
    """Queue ``cases`` for a server run in the background; :func:`results` reads them."""
    global _batch, _runs
    import background

    join = bool(_batch) and background.is_pending(_job())  # a shared run not started yet
    if not join:
        _runs += 1
        _batch = []
    start = len(_batch)
    _batch.extend([list(c) for c in cases])
    _submitted[key] = (_job(), _batch, start, len(_batch))
    if not join:  # the cases are read when the run starts: maybe at once, maybe later
        batch, command = _batch, [sys.executable, __file__, "--serve"]
        background.add(_job(), lambda: [background.Command(command, input=json.dumps(batch))])


def results(key: str, cases: list[tuple[str, str, str]]) -> list[dict]:
    """:func:`run_many` of ``cases``, from the background run they were submitted to if so."""
    import background

    job, batch, start, end = _submitted.get(key, ("", [], 0, 0))
    if batch[start:end] != [list(c) for c in cases]:  # not submitted (or not these): run now
        return run_many(cases)
    (proc,) = background.run(job, [])
    return _parse(proc)[start:end]


def serve(cases: list[list[str]], width: int = 2) -> list[dict]:
    """Run each case in a forked child of this (warmed) process, ``width`` at a time."""
    import os

    import coremltools  # noqa: F401  (imported once, before the children are forked)
    import onnxscript  # noqa: F401
    import torch
    import torch._dynamo

    torch.set_num_threads(1)
    results: list[dict | None] = [None] * len(cases)
    running: dict[int, tuple[int, str]] = {}  # pid -> (case index, result file)
    with tempfile.TemporaryDirectory() as tmp:
        pending = list(enumerate(cases))
        while pending or running:
            while pending and len(running) < width:
                index, case = pending.pop(0)
                out = os.path.join(tmp, f"{index}.json")
                pid = os.fork()
                if pid == 0:  # the child: one conversion, its result in a file, then gone
                    code = 0
                    try:
                        with open(out, "w") as fh:
                            json.dump(main(*case), fh)
                    except BaseException:
                        code = 1
                    os._exit(code)
                running[pid] = (index, out)
            pid, status = os.wait()
            index, out = running.pop(pid)
            if os.path.exists(out) and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                with open(out) as fh:
                    results[index] = json.load(fh)
            else:
                results[index] = {"ok": False, "error": f"the probe died (status {status})"}
    return [r or {} for r in results]


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        print(json.dumps(serve(json.loads(sys.stdin.read()))))
    else:
        print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3])))
