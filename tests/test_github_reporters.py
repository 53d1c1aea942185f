"""Snapshot tests for the github and markdown reporters on a hand-built report, the per-level
annotation cap, escaping, the summary's size limit, and the CLI's automatic github format."""

from __future__ import annotations

import pytest

from modelgate.finding import Finding, Location, SourceLocation
from modelgate.report import ModelReport, Report
from modelgate.reporters import github, markdown, render


def sample() -> Report:
    """A failing model with a budget and a baseline, and a passing one."""
    net = ModelReport(
        path="models/net.pt2",
        format="torch_export",
        passed=False,
        findings=[
            Finding(
                "MG001",
                "oversized-linear",
                "error",
                "head: Linear 36864x1024 holds 37.7M parameters (151 MB, 98% of the model)",
                Location(
                    "models/net.pt2",
                    module="head",
                    tensor="head.weight",
                    source=SourceLocation("models/net.py", 41, "forward"),
                ),
                fix="global pooling before the head",
                key="head",
            ),
            Finding(
                "MG004",
                "dropout-in-eval",
                "error",
                "drop: dropout (p=0.2) is active",
                Location(
                    "models/net.pt2",
                    module="drop",
                    op="dropout",
                    source=SourceLocation("/home/alice/train.py", 7, "forward"),
                ),
                fix="call model.eval()",
                key="drop",
            ),
            Finding(
                "MG005",
                "dynamic-shape",
                "warning",
                "input x: dim 0 is dynamic, size|batch",
                Location("models/net.pt2", input="x"),
                key="x:0",
            ),
        ],
        metrics={
            "size_mb": 151.2,
            "parameters": 37_800_000,
            "weights_mb": 151.0,
            "latency_ms": 12.5,
            "largest_layers": [
                {
                    "module": "head",
                    "type": "Linear",
                    "parameters": 37_748_736,
                    "mb": 150.995,
                    "share": 0.9833,
                },
                {
                    "module": "conv",
                    "type": "Conv2d",
                    "parameters": 2_432,
                    "mb": 0.005,
                    "share": 0.0,
                },
            ],
            "budget": {"size_mb": 100, "latency_ms": {"limit": 30, "value": 12.5, "passed": True}},
            "baseline": {
                "ref": "main@abc1234",
                "path": "models/net.pt2",
                "metrics": {"size_mb": 20.0, "parameters": 5_000_000, "latency_ms": 10.0},
                "delta": {"size_mb": 131.2, "parameters": 32_800_000, "latency_ms": 2.5},
                "new_findings": [{"rule": "MG001", "identity": "MG001:head", "message": "..."}],
                "fixed_findings": ["MG006 pool"],
            },
        },
    )
    ok = ModelReport(
        path="models/ok.onnx",
        format="onnx",
        passed=True,
        metrics={"size_mb": 0.4, "parameters": 100_000, "weights_mb": 0.4},
        skipped={"MG003": "no input shapes: pass --input-shape"},
    )
    notes = ['unused ignore: "x/**" ignores MG004, which found nothing there']
    return Report(models=[net, ok], notes=notes)


GITHUB = """\
::error file=models/net.py,line=41,title=modelgate (MG001)::models/net.pt2: head: Linear 36864x1024 holds 37.7M parameters (151 MB, 98%25 of the model)%0Afix: global pooling before the head
::error file=models/net.pt2,title=modelgate (MG004)::drop: dropout (p=0.2) is active%0Afix: call model.eval()%0Acreated at /home/alice/train.py:7 (not in this repository)
::warning file=models/net.pt2,title=modelgate (MG005)::input x: dim 0 is dynamic, size|batch
::group::modelgate: full report
::stop-commands::modelgate-ea200268949984ff3dde246356c04076
FAIL  models/net.pt2  (torch export, 37.8M params)
  metric      value  budget             vs baseline
  size_mb     151    <= 100 not judged  +131
  parameters  37.8M                     +32.8M
  latency_ms  12.5   <= 30 ok           +2.5
  baseline: models/net.pt2 at main@abc1234; 1 new finding(s), 1 fixed
  fixed since the baseline: MG006 pool
  error   MG001 oversized-linear  head (models/net.py:41)  [new]
          head: Linear 36864x1024 holds 37.7M parameters (151 MB, 98% of the model)
          fix: global pooling before the head
  error   MG004 dropout-in-eval  drop (/home/alice/train.py:7)
          drop: dropout (p=0.2) is active
          fix: call model.eval()
  warning MG005 dynamic-shape  x
          input x: dim 0 is dynamic, size|batch

pass  models/ok.onnx  (onnx, 100.0K params)
  not checked: MG003: no input shapes: pass --input-shape

note: unused ignore: "x/**" ignores MG004, which found nothing there
::modelgate-ea200268949984ff3dde246356c04076::
::endgroup::
2 models checked: 1 failed; 2 error(s), 1 warning(s), 0 info; 1 new against the baseline
"""  # noqa: E501

MARKDOWN = """\
## modelgate: ❌ failed

2 models checked, 1 failed (2 errors, 1 warning); the gate fails on error.

| | model | format | size (MB) | Δ size | parameters | findings |
|---|---|---|---:|---:|---:|---|
| ❌ | `models/net.pt2` | torch export | 151 | +131 (+656.0%) | 37,800,000 | 2 errors, 1 warning |
| ✅ | `models/ok.onnx` | onnx | 0.4 |  | 100,000 | none |

<details open>
<summary>❌ <b>models/net.pt2</b>: failed, 2 errors, 1 warning</summary>

torch export · 151 MB · 37,800,000 parameters · compared with `main@abc1234`

| severity | rule | where | message |
|---|---|---|---|
| error (new) | MG001 oversized-linear | `head (models/net.py:41)` | head: Linear 36864x1024 holds 37.7M parameters (151 MB, 98% of the model)<br>fix: global pooling before the head |
| error | MG004 dropout-in-eval | `drop (/home/alice/train.py:7)` | drop: dropout (p=0.2) is active<br>fix: call model.eval() |
| warning | MG005 dynamic-shape | `x` | input x: dim 0 is dynamic, size\\|batch |

Fixed since the base version: `MG006 pool`

**Metrics**

| metric | value | budget | base | Δ |
|---|---:|---:|---:|---:|
| size (MB) | 151 | ≤ 100 ❌ | 20.0 | +131 (+656.0%) |
| parameters | 37,800,000 |  | 5,000,000 | +32,800,000 (+656.0%) |
| weights (MB) | 151 |  |  |  |
| latency (ms) | 12.5 | ≤ 30 ✅ | 10.0 | +2.50 (+25.0%) |

**Where the bytes are**

```mermaid
pie showData title Weights by layer (151 MB)
    "head (Linear)" : 150.995
    "conv (Conv2d)" : 0.005
```

| layer | type | parameters | MB | share |
|---|---|---:|---:|---:|
| `head` | Linear | 37,748,736 | 151 | 98.3% |
| `conv` | Conv2d | 2,432 | 0.005 | 0.0% |

</details>

<details>
<summary>✅ <b>models/ok.onnx</b>: passed, no findings</summary>

onnx · 400 kB · 100,000 parameters

**Metrics**

| metric | value |
|---|---:|
| size (MB) | 0.4 |
| parameters | 100,000 |
| weights (MB) | 0.4 |

- not checked: MG003: no input shapes: pass --input-shape

</details>

- note: unused ignore: "x/\\*\\*" ignores MG004, which found nothing there
"""  # noqa: E501


def test_github_snapshot() -> None:
    assert render(sample(), "github") == GITHUB


def test_markdown_snapshot() -> None:
    assert render(sample(), "markdown") == MARKDOWN


def test_workflow_command_escaping() -> None:
    line = github.command("error", "50% done\r\nnext", file="a,b:c.py", line=3, title="t: x, y")
    assert line == "::error file=a%2Cb%3Ac.py,line=3,title=t%3A x%2C y::50%25 done%0D%0Anext"


def _finding(severity: str, i: int) -> Finding:
    return Finding(
        f"MG00{i % 7 + 1}",
        "some-rule",
        severity,
        f"{severity} {i}",
        Location(f"m{i % 4}.pt", module=f"layer{i}"),
        key=str(i),
    )


def test_annotations_capped_per_level_most_severe_first() -> None:
    findings = (
        [_finding("error", i) for i in range(12)]
        + [_finding("warning", i) for i in range(11)]
        + [_finding("info", i) for i in range(3)]
    )
    report = Report([ModelReport("m.pt", "checkpoint", findings=findings, passed=False)])
    lines = github.annotations(report)
    levels = [line.split(" ", 1)[0] for line in lines]
    # 9 errors + the "more" annotation at error level, 10 warnings, all 3 notices
    assert levels == ["::error"] * 9 + ["::warning"] * 10 + ["::notice"] * 3 + ["::error"]
    assert lines[-1] == (
        "::error title=modelgate%3A more findings::4 more findings (3 errors, 1 warning) in "
        "m.pt not shown as annotations: GitHub shows 10 per level. Read them all in the job "
        'summary or in this step\'s log (group "modelgate: full report").'
    )
    # the full report in the log still lists every finding
    assert render(report, "github").count("error 11") == 1


def test_annotations_not_capped_at_the_limit() -> None:
    report = Report(
        [
            ModelReport(
                "m.pt",
                "checkpoint",
                passed=False,
                findings=[_finding("warning", i) for i in range(10)],
            )
        ]
    )
    assert [line.split(" ", 1)[0] for line in github.annotations(report)] == ["::warning"] * 10


def test_log_lines_cannot_inject_workflow_commands() -> None:
    finding = Finding(
        "MG902",
        "unreadable-model",
        "error",
        "x\n  ::add-mask::secret\n##[error]fake",
        Location("::stop-commands::m.pt"),
    )
    report = Report([ModelReport("::stop-commands::m.pt", "unknown", [finding], passed=False)])
    lines = render(report, "github").splitlines()
    # the annotation keeps everything on one line, escaped
    assert lines[0].startswith("::error file=%3A%3Astop-commands%3A%3Am.pt,title=")
    assert lines[0].endswith("::x%0A  ::add-mask::secret%0A##[error]fake")
    # the log group suspends command processing around the model's text
    start = lines.index("::group::modelgate: full report") + 1
    token = lines[start].removeprefix("::stop-commands::")
    end = lines.index(f"::{token}::")
    assert len(token) > 20 and token not in "\n".join(lines[start + 1 : end])
    assert any(line.strip().startswith("::add-mask::") for line in lines[start + 1 : end])
    assert lines[end + 1] == "::endgroup::"


def test_markdown_stays_under_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(markdown, "MAX_BYTES", 20_000)
    models = [
        ModelReport(
            f"models/m{i:04d}.pt",
            "checkpoint",
            passed=False,
            findings=[_finding("error", j) for j in range(5)],
            metrics={"size_mb": 1.0, "parameters": 10},
        )
        for i in range(300)
    ]
    out = render(Report(models), "markdown")
    assert len(out.encode()) <= 20_000
    assert out.count("<details open>") < 300
    assert "more models not shown to keep this summary under GitHub's size limit" in out


def test_markdown_reads_budget_forms_defensively() -> None:
    metrics = {
        "size_mb": 30.0,
        "drift": 0.02,
        "budget": {
            "size_mb": {"max": 25},
            "drift": {"limit": 0.01, "exceeded": True},
            "latency_ms": "n/a",
        },
    }
    assert markdown.budget_limit(metrics, "size_mb") == (25, False)
    assert markdown.budget_limit(metrics, "drift") == (0.01, False)
    assert markdown.budget_limit(metrics, "latency_ms") == (None, None)
    assert markdown.budget_limit({}, "size_mb") == (None, None)
    assert (
        markdown.delta({"size_mb": 3.0, "baseline": {"metrics": {"size_mb": 2.0}}}, "size_mb")
        == 1.0
    )


def test_cli_defaults_to_annotations_under_actions(
    run_cli, models, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    path = models.raw(b"", "empty.pt")
    code, out, _ = run_cli("check", path.name)
    assert code == 1 and out.startswith("FAIL  empty.pt")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    summary = tmp_path / "summary.md"
    code, out, _ = run_cli("check", path.name, "--summary", str(summary))
    assert code == 1
    assert out.startswith("::error file=empty.pt,title=modelgate (MG902)::empty file (0 bytes)\n")
    assert summary.read_text().startswith("## modelgate: ❌ failed\n")
    code, out, _ = run_cli("check", path.name, "--format", "text")
    first, body = out.split("\n", 1)
    assert first.startswith("::stop-commands::") and body.startswith("FAIL  empty.pt")


def test_text_under_actions_cannot_inject_workflow_commands(
    run_cli, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names come from the (untrusted) model file; one with a newline and ``::`` must not
    become a workflow command when text output lands in the Actions log."""
    torch = pytest.importorskip("torch")
    hostile = "a\n::error file=x.py::pwned\n::add-mask::b.weight"
    torch.save({hostile: torch.zeros(2, 2, dtype=torch.float64)}, tmp_path / "m.pt")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, _ = run_cli("check", "m.pt", "--format", "text", "--fail-on", "info")
    assert code == 1 and "::error file=x.py::pwned" in out  # quoted, as the model has it
    assert out.startswith("::stop-commands::")
    assert _commands_run(out) == []
    code, out, _ = run_cli("check", "m.pt", "--fail-on", "info")  # annotations: escaped
    assert code == 1
    assert [c.split("::")[0] for c in _commands_run(out)] == [
        "warning file=m.pt,title=modelgate (MG007)",
        "group",
        "endgroup",
    ]


def _commands_run(log: str) -> list[str]:
    """The workflow commands the runner would act on in ``log``: lines starting with ``::``,
    except between ``::stop-commands::TOKEN`` and ``::TOKEN::``."""
    run, token = [], None
    for line in log.splitlines():
        if not line.startswith("::"):
            continue
        if token is not None:
            if line == f"::{token}::":
                token = None
            continue
        if line.startswith("::stop-commands::"):
            token = line.removeprefix("::stop-commands::")
            continue
        run.append(line[2:])
    return run


def targets_sample() -> Report:
    """A model whose budget limits two targets' own figures (``budget.targets``), against a
    baseline: the entries as budget.evaluate writes them, keyed "<target>.<figure>"."""
    metrics = {
        "size_mb": 0.004,
        "size_from": "Core ML",
        "parameters": 330,
        "targets": [
            {
                "target": "coreml",
                "result": "ok",
                "size_mb": 0.004,
                "latency_ms": None,
                "drift": 0.0003,
                "detail": "ML program for iOS16, float16, 19 ops",
            },
            {
                "target": "onnx",
                "result": "ok",
                "size_mb": 0.002,
                "latency_ms": 0.022,
                "drift": 1.3e-07,
                "detail": "opset 20",
            },
        ],
        "budget": {
            "size_mb": {
                "value": 0.004,
                "rule": "MG301",
                "unit": "MB",
                "measured": "Core ML",
                "limit": 1,
                "difference": -0.996,
                "passed": True,
            },
            "onnx.size_mb": {
                "value": 0.002,
                "rule": "MG301",
                "unit": "MB",
                "measured": "ONNX",
                "limit": 0.001,
                "difference": 0.001,
                "baseline": 0.0015,
                "increase": 0.0005,
                "increase_pct": 33.3333,
                "max_increase_pct": 10,
                "passed": False,
            },
            "onnx.latency_ms": {
                "value": 0.022,
                "rule": "MG302",
                "unit": "ms",
                "measured": "ONNX Runtime 1.32.0 CPU",
                "limit": 5,
                "difference": -4.978,
                "passed": True,
            },
            "coreml.latency_ms": {
                "value": None,
                "rule": "MG302",
                "unit": "ms",
                "measured": "Core ML",
                "limit": 5,
                "passed": None,
                "reason": "not measured by Core ML: nothing on this machine runs what it makes",
            },
        },
        "baseline": {
            "path": "old.pt2",
            "metrics": {"size_mb": 0.004, "parameters": 330},
            "delta": {"size_mb": 0.0, "parameters": 0},
        },
    }
    return Report([ModelReport("m.pt2", "torch_export", [], metrics, passed=False)])


TARGETS_TEXT = """\
FAIL  m.pt2  (torch export, 330 params)
  metric             value  of                       budget                  vs baseline
  size_mb            0.004  Core ML                  <= 1 ok                 +0
  parameters         330                                                     +0
  onnx.size_mb       0.002  ONNX                     <= 0.001 OVER (+0.001)  +0.0005 (+33.3%)
  onnx.latency_ms    0.022  ONNX Runtime 1.32.0 CPU  <= 5 ok
  coreml.latency_ms  -      not measured by Core ML  <= 5 not judged
  target  result  size_mb  latency_ms  drift    detail
  coreml  ok      0.004    -           0.0003   ML program for iOS16, float16, 19 ops
  onnx    ok      0.002    0.022       1.3e-07  opset 20
  baseline: old.pt2; 0 new finding(s), 0 fixed
"""

TARGETS_MARKDOWN = """\
| metric | value | budget | base | Δ |
|---|---:|---:|---:|---:|
| size (MB) | 0.004 | ≤ 1 ✅ | 0.004 | ±0 |
| parameters | 330 |  | 330 | ±0 |
| onnx.size\\_mb | 0.002 | ≤ 0.001 ❌ | 0.0015 | +0.0005 |
| onnx.latency\\_ms | 0.022 | ≤ 5 ✅ |  |  |
"""


def test_targets_own_budget_entries_render_like_the_model_wide_ones() -> None:
    text = render(targets_sample(), "text")
    assert text.startswith(TARGETS_TEXT)
    table = markdown.render(targets_sample()).split("**Metrics**\n\n", 1)[1].split("\n\n")[0]
    assert table + "\n" == TARGETS_MARKDOWN
