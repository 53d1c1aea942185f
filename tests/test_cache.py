"""The result cache (modelgate/cache.py), end to end through the CLI on models the tests build.

A hit must be the report a fresh run gives, with the cache's markers; whatever changes the
result must miss; the budget, fail_on and ignores are judged again on a hit; an entry that is
not exactly what this run would have written is ignored and replaced, and never changes a
verdict. The suite runs with MODELGATE_NO_CACHE=1 (tests/background.py); these tests turn the
cache on, in their own folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelgate import cache, cache_key, parallel


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture):
    """``modelgate check ARGS --format json`` in ``tmp_path`` with the cache on, in
    ``tmp_path / "cache"``; returns (exit code, the JSON report or None, stdout)."""
    from modelgate.cli import main

    monkeypatch.delenv(cache.ENV_OFF, raising=False)
    monkeypatch.delenv(cache.ENV_DIR, raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, fmt: str = "json") -> tuple[int, Any, str]:
        code = main(["check", *map(str, args), "--format", fmt, "--cache-dir", "cache", "-j", "1"])
        out = capsys.readouterr().out
        return code, json.loads(out) if fmt == "json" else None, out

    return run


def onnx_model(path: Path, seed: int = 0, external: str | None = None) -> Path:
    """A MatMul with float64 weights (MG007 warns, deterministically), optionally with its
    weights in an external-data file ``external`` beside it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.RandomState(seed).randn(16, 8)
    w = numpy_helper.from_array(weights.astype(np.float64), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=external,
                  size_threshold=0, all_tensors_to_one_file=True)  # fmt: skip
    else:
        onnx.save(model, str(path))
    return path


def unmarked(report: dict[str, Any]) -> dict[str, Any]:
    """A report without the cache's markers (the model's ``cached``, its latency's)."""
    out = json.loads(json.dumps(report))
    for model in out["models"]:
        model.pop("cached", None)
        if isinstance(model["metrics"].get("latency"), dict):
            model["metrics"]["latency"].pop("cached", None)
    return out


def entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / cache.RESULTS).glob("*.json"))


def no_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any model that reaches the workers fail the test: a hit checks nothing."""
    real = parallel.check_all

    def check_all(paths: list[str], *args: Any, **kwargs: Any) -> Any:
        assert not paths, f"checked although cached: {paths}"
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(parallel, "check_all", check_all)


def test_a_hit_is_the_report_a_fresh_run_gives(cli, tmp_path: Path, monkeypatch) -> None:
    onnx_model(tmp_path / "m.onnx")
    code, fresh, _ = cli("m.onnx")
    assert code == 0 and "cached" not in fresh["models"][0]
    assert [f["rule"] for f in fresh["models"][0]["findings"]] == ["MG007"]
    assert len(entries(tmp_path)) == 1
    assert (tmp_path / "cache" / ".gitignore").read_text().splitlines()[-1] == "*"

    no_checks(monkeypatch)
    code, hit, _ = cli("m.onnx")
    assert code == 0
    assert hit["models"][0]["cached"].endswith("Z")  # when it was checked, UTC
    assert unmarked(hit) == fresh
    code, _, text = cli("m.onnx", fmt="text")
    assert "[cached: checked " in text.splitlines()[0]
    assert text.rstrip().endswith("; 1 from the cache")


def test_the_same_bytes_under_another_name_hit_under_that_name(cli, tmp_path: Path) -> None:
    """What the Action relies on: the base branch's version, exported to a temporary path,
    is the file the base branch's run stored."""
    onnx_model(tmp_path / "m.onnx")
    cli("m.onnx")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "old.onnx").write_bytes((tmp_path / "m.onnx").read_bytes())
    _, hit, _ = cli("base/old.onnx")
    (model,) = hit["models"]
    assert "cached" in model and model["path"] == "base/old.onnx"
    assert model["findings"][0]["location"]["path"] == "base/old.onnx"


def _toolchain_upgrade(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    real = cache_key._version
    monkeypatch.setattr(cache_key, "_version", lambda n: "99.0" if n == "onnx" else real(n))
    return ()


def _other_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    onnx_model(tmp_path / "m.onnx", seed=1)
    return ()


def _rule_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    (tmp_path / "modelgate.yaml").write_text("rules:\n  MG007: info\n")
    return ()


def _select(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    return ("--select", "MG007,MG902")


def _input_shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    return ("--input-shape", "x=1x16")


def _modelgate_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    monkeypatch.setattr(cache_key, "code_digest", lambda: "another build of modelgate")
    return ()


@pytest.mark.parametrize(
    "change",
    [_other_weights, _rule_option, _select, _input_shape, _toolchain_upgrade, _modelgate_code],
)
def test_what_decides_the_result_misses(cli, tmp_path: Path, monkeypatch, change) -> None:
    onnx_model(tmp_path / "m.onnx")
    (tmp_path / "modelgate.yaml").write_text("rules:\n  MG007: warning\n")
    cli("m.onnx")
    args = change(monkeypatch, tmp_path)
    _, report, _ = cli("m.onnx", *args)
    assert "cached" not in report["models"][0]
    assert len(entries(tmp_path)) == 2  # the new result is stored beside the old one
    _, again, _ = cli("m.onnx", *args)
    assert "cached" in again["models"][0]


def test_a_changed_external_data_file_misses(cli, tmp_path: Path) -> None:
    onnx_model(tmp_path / "m.onnx", external="m.data")
    _, first, _ = cli("m.onnx")
    assert first["models"][0]["findings"][0]["rule"] == "MG007"  # its weights were read
    (entry,) = entries(tmp_path)
    assert list(json.loads(entry.read_text())["inputs"]["parts"]) == ["m.data"]
    assert "cached" in cli("m.onnx")[1]["models"][0]
    data = (tmp_path / "m.data").read_bytes()
    (tmp_path / "m.data").write_bytes(data[::-1])  # same size, other weights
    _, report, _ = cli("m.onnx")
    assert "cached" not in report["models"][0]


def test_a_budget_fail_on_or_ignore_change_hits_and_is_judged_again(
    cli, tmp_path: Path, monkeypatch
) -> None:
    onnx_model(tmp_path / "m.onnx")  # 128 parameters
    config = tmp_path / "modelgate.yaml"
    config.write_text("budget:\n  parameters: 1000\n")
    code, first, _ = cli("m.onnx")
    assert code == 0 and first["models"][0]["metrics"]["budget"]["parameters"]["passed"]
    no_checks(monkeypatch)

    config.write_text("budget:\n  parameters: 100\n")
    code, report, _ = cli("m.onnx")
    (model,) = report["models"]
    assert "cached" in model and code == 1
    assert model["metrics"]["budget"]["parameters"]["passed"] is False
    assert {f["rule"] for f in model["findings"]} == {"MG007", "MG301"}

    config.write_text("budget:\n  parameters: 1000\nfail_on: warning\n")
    code, report, _ = cli("m.onnx")
    assert "cached" in report["models"][0] and code == 1  # the MG007 warning now fails

    config.write_text('budget:\n  parameters: 1000\nignore:\n  "*.onnx": [MG007]\n')
    code, report, _ = cli("m.onnx")
    assert "cached" in report["models"][0] and code == 0
    assert report["models"][0]["findings"] == []


def _rewrite(entry: Path, change) -> None:
    data = json.loads(entry.read_text())
    change(data)
    entry.write_text(json.dumps(data))


def _passing_verdict(entry: Path, other: Path) -> None:
    """The attack: drop the findings, which makes the verdict a pass (the digest is left)."""

    def edit(data: dict) -> None:
        data["report"]["findings"] = []

    _rewrite(entry, edit)


def _wrong_key(entry: Path, other: Path) -> None:
    _rewrite(entry, lambda d: d.update(key="0" * 64))


def _wrong_file_hash(entry: Path, other: Path) -> None:
    _rewrite(entry, lambda d: d["inputs"]["file"].update(sha256="0" * 64))


def _foreign(entry: Path, other: Path) -> None:
    """Another model's entry (a valid one, with its own key) under this model's name."""
    entry.write_bytes(other.read_bytes())


def _truncated(entry: Path, other: Path) -> None:
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


def _huge(entry: Path, other: Path) -> None:
    data = json.loads(entry.read_text())
    data["report"]["notes"] = ["x" * (cache.MAX_ENTRY + 1)]
    entry.write_text(json.dumps(data))


def _not_json(entry: Path, other: Path) -> None:
    import pickle

    entry.write_bytes(pickle.dumps({"report": {"findings": []}}))


def _bad_shape(entry: Path, other: Path) -> None:
    """Well-formed JSON, a digest that matches, a severity no report has."""

    def edit(data: dict) -> None:
        data["report"]["findings"][0]["severity"] = "harmless"
        data["digest"] = cache_key.sha(data["report"])

    _rewrite(entry, edit)


def _directory(entry: Path, other: Path) -> None:
    entry.unlink()
    entry.mkdir()
    (entry / "inside").write_text("{}")


def _symlink(entry: Path, other: Path) -> None:
    """Even to a copy of the right entry: a link in the cache may point anywhere."""
    elsewhere = entry.parent.parent / "elsewhere.json"
    elsewhere.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(elsewhere)


def _writable_by_others(entry: Path, other: Path) -> None:
    entry.chmod(0o666)


@pytest.mark.parametrize(
    "tamper",
    [_passing_verdict, _wrong_key, _wrong_file_hash, _foreign, _truncated, _huge, _not_json,
     _bad_shape, _directory, _symlink, _writable_by_others],
)  # fmt: skip
def test_a_tampered_entry_is_ignored_and_replaced(cli, tmp_path: Path, tamper) -> None:
    onnx_model(tmp_path / "m.onnx")
    onnx_model(tmp_path / "other.onnx", seed=5)
    code, fresh, _ = cli("m.onnx")
    cli("other.onnx")
    first = entries(tmp_path)
    assert len(first) == 2 and code == 0
    assert "cached" in cli("m.onnx")[1]["models"][0]  # a good entry, until:
    (entry,) = [e for e in first if json.loads(e.read_text())["report"]["path"] == "m.onnx"]
    (other,) = [e for e in first if e != entry]

    tamper(entry, other)
    code, report, _ = cli("m.onnx")
    assert code == 0
    assert "cached" not in report["models"][0]  # ignored: checked afresh
    assert report == fresh  # the same findings and figures: the verdict did not change
    assert entry.is_file() and not entry.is_symlink()  # replaced by the fresh result
    assert json.loads(entry.read_text())["report"]["path"] == "m.onnx"
    assert entry.stat().st_mode & 0o077 == 0
    _, again, _ = cli("m.onnx")
    assert unmarked(again) == fresh and again["models"][0]["cached"]


def test_no_cache_neither_reads_nor_writes(cli, tmp_path: Path, monkeypatch) -> None:
    onnx_model(tmp_path / "m.onnx")
    _, report, _ = cli("m.onnx", "--no-cache")
    assert "cached" not in report["models"][0]
    assert not (tmp_path / "cache").exists()
    cli("m.onnx")
    (entry,) = entries(tmp_path)
    before = entry.read_bytes(), entry.stat().st_mtime_ns
    _, report, _ = cli("m.onnx", "--no-cache")
    assert "cached" not in report["models"][0]
    monkeypatch.setenv(cache.ENV_OFF, "1")
    _, report, _ = cli("m.onnx")
    assert "cached" not in report["models"][0]
    assert (entry.read_bytes(), entry.stat().st_mtime_ns) == before


def test_an_unwritable_cache_folder_does_not_fail_the_run(cli, tmp_path: Path) -> None:
    onnx_model(tmp_path / "m.onnx")
    (tmp_path / "cache").write_text("a file where the folder would be")
    code, report, _ = cli("m.onnx")
    assert code == 0 and [f["rule"] for f in report["models"][0]["findings"]] == ["MG007"]
    assert any(n.startswith("cache: results not stored in ") for n in report["notes"])
    if os.geteuid() != 0:  # root writes into read-only folders
        (tmp_path / "cache").unlink()
        (tmp_path / "cache").mkdir(mode=0o555)
        code, report, _ = cli("m.onnx")
        assert code == 0 and any(n.startswith("cache: ") for n in report["notes"])


def test_results_of_a_failing_machine_are_not_stored(cli, tmp_path: Path, monkeypatch) -> None:
    onnx_model(tmp_path / "m.onnx")

    def timed_out(paths: list[str], config: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [parallel.failed_report(p, config, "timed out after 1 s") for p in paths]

    monkeypatch.setattr(parallel, "check_all", timed_out)
    code, report, _ = cli("m.onnx")
    assert code == 1 and report["models"][0]["findings"][0]["rule"] == "MG902"
    assert entries(tmp_path) == []


@pytest.mark.parametrize(
    ("metrics", "stored"),
    [
        ({"conversions": {"onnx": {"ok": True, "size_mb": 0.1}}}, True),
        ({"conversions": {"onnx": {"ok": False, "error": "unsupported op", "kind": "error"}}},
         True),
        ({"conversions": {"onnx": {"ok": False, "error": "timed out", "kind": "timeout"}}},
         False),
        ({"compression": {"palettize-8": {"ok": False, "kind": "memory"}}}, False),
        ({"conversions": {"coreml": {"ok": None,
                                     "skipped": "not run: the model's time limit was used up"}}},
         False),
        ({"conversions": {"onnx": {"ok": True, "run": {"ok": False, "kind": "crash"}}}}, False),
    ],
)  # fmt: skip
def test_only_results_of_the_file_are_cacheable(metrics: dict, stored: bool) -> None:
    from modelgate.report import ModelReport

    reason = cache.cacheable(ModelReport("m.pt2", "torch_export", metrics=metrics))
    assert (reason is None) is stored


def test_the_default_folder_is_here_and_ignored_by_git(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from modelgate.cli import main

    monkeypatch.delenv(cache.ENV_OFF, raising=False)
    monkeypatch.delenv(cache.ENV_DIR, raising=False)
    monkeypatch.chdir(tmp_path)
    onnx_model(tmp_path / "m.onnx")
    assert main(["check", "m.onnx"]) == 0
    assert (tmp_path / cache.DEFAULT_DIR / ".gitignore").read_text().splitlines()[-1] == "*"
    assert main(["check", "m.onnx"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("1 from the cache")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "modelgate.yaml").write_text("cache: {dir: elsewhere/mg}\n")
    assert main(["check", "m.onnx"]) == 0
    assert len(list((tmp_path / "elsewhere" / "mg" / cache.RESULTS).glob("*.json"))) == 1
    (tmp_path / "modelgate.yaml").write_text("cache: {enabled: false}\n")
    assert main(["check", "m.onnx"]) == 0
    assert "from the cache" not in capsys.readouterr().out.splitlines()[-1]


def test_conversions_are_cached_and_the_latency_marked(cli, models, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    from modelfactory import build

    models.pt2(build("clean").eval(), name="net.pt2")
    code, fresh, _ = cli("net.pt2", "--convert", "onnx")
    (model,) = fresh["models"]
    assert code == 0 and model["metrics"]["conversions"]["onnx"]["ok"] is True
    assert "cached" not in model["metrics"]["latency"]

    no_checks(monkeypatch)
    code, hit, _ = cli("net.pt2", "--convert", "onnx")
    (model,) = hit["models"]
    assert code == 0 and model["metrics"]["latency"]["cached"] == model["cached"]
    assert unmarked(hit) == fresh  # the conversion's figures, the latency: as measured then
    _, _, text = cli("net.pt2", "--convert", "onnx", fmt="text")
    assert "cached, measured " in text
