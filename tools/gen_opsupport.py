"""Generate modelgate/data/opsupport.json (rule MG003) from the INSTALLED converters.

    python tools/gen_opsupport.py [-o modelgate/data/opsupport.json] [--sample] [--max-ops N]

Run it when coremltools or torch is upgraded (tests/test_mg003.py fails when the shipped
snapshot no longer matches the installed coremltools registry). ``--sample`` takes about
15 minutes on 2 cores and needs ``pip install expecttest``.

Nothing here is a hand-written op list: every name comes from a converter registry, from
torch's dispatcher / decomposition tables, or (``--sample``) from actually running torch's own
decomposition passes on torch's own OpInfo sample inputs (``torch.testing._internal``; needs the
``expecttest`` package on sys.path).

Op names are canonical *qualified overload names* = ``OpOverload.name()``:
``aten::add.Tensor``, ``aten::linear`` (default overload has no suffix), ``mylib::myop``;
higher-order ops ``higher_order::cond``; python callables ``<module>.<name>``
(``_operator.getitem``), which is exactly how torch.export serializes them in model.json.
"""

# ruff: noqa: E501
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import signal
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import torch  # noqa: E402

FORMAT = "modelgate.opsupport/1"


def canon(target) -> str:
    """Canonical name of an FX call_function target (as modelgate.opsupport derives it)."""
    if isinstance(target, torch._ops.OpOverload):
        return target.name()
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order::{target.name()}"
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', str(target))}"


# ----------------------------------------------------------------------------------- coremltools
def coreml_section() -> dict | None:
    try:
        import coremltools as ct
        from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    except Exception as e:  # pragma: no cover
        print("coremltools not importable:", e, file=sys.stderr)
        return None
    return {
        "version": ct.__version__,
        # keys are already canonical (sanitize_op_kind form); looked up after sanitize (+ in-place
        # unification for TorchScript) - see modelgate/opsupport.py
        "registry": sorted(_TORCH_OPS_REGISTRY.name_to_func_mapping),
    }


# ------------------------------------------------------------------------- torch.onnx (dynamo)
def onnx_dynamo_section(opset: int | None = None):
    from torch.onnx import _constants as onnx_constants
    from torch.onnx._internal.exporter import _constants, _decomp, _registration

    export_opset = opset or onnx_constants.ONNX_DEFAULT_OPSET
    reg_opset = max(export_opset, _constants.TORCHLIB_OPSET)  # mirrors _compat.export_compat
    registry = _registration.ONNXRegistry.from_torchlib(opset_version=reg_opset)
    registered = {}
    for key, metas in registry.functions.items():
        name = key if isinstance(key, str) else canon(key)
        kinds = sorted({"complex" if m.is_complex else "real" for m in metas})
        registered[name] = kinds
    onnx_ops = set(_decomp.get_onnx_implemented_overloads(registry))
    table = _decomp.create_onnx_friendly_decomposition_table(onnx_ops)
    section = {
        "default_opset": export_opset,
        "registry_opset": reg_opset,
        "registered": dict(sorted(registered.items())),
        # ops that torch.onnx will decompose (run_decompositions(table)) before translation
        "decomposed": sorted(canon(k) for k in table),
    }
    return section, registry, table


def _onnx_prepare(ep, registry):
    """torch.onnx's whole pre-translation pipeline (_core.py:1038): decompose with the registry's
    table, insert type promotion, remove assertion nodes."""
    from torch.onnx._internal.exporter import _core

    return _core._prepare_exported_program_for_export(ep, registry=registry)


# ------------------------------------------------------------ torch.onnx (legacy TorchScript)
def onnx_torchscript_section() -> dict:
    from torch.onnx import _constants as onnx_constants
    from torch.onnx._internal.torchscript_exporter import registration, utils

    utils._trigger_symbolic_function_registration()  # what torch.onnx.export(dynamo=False) does

    hi = onnx_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    out = {}
    for name in sorted(registration.registry.all_functions()):
        grp = registration.registry.get_function_group(name)
        ok = [v for v in range(onnx_constants.ONNX_MIN_OPSET, hi + 1) if grp.get(v) is not None]
        if ok:  # _dispatch_opset_version picks the newest symbolic <= opset: always a range
            out[name] = [min(ok), max(ok)]
    return {
        "default_opset": onnx_constants.ONNX_DEFAULT_OPSET,
        "max_opset": hi,
        # name -> [first, last] opset in which a symbolic is dispatched
        "symbolics": out,
    }


# ----------------------------------------------- torch.export TRAINING -> run_decompositions({})
def aten_section() -> dict:
    """Which ops run_decompositions({}) does NOT keep as-is (torch/export/exported_program.py:1501)."""
    from torch._export.utils import _collect_all_valid_cia_ops

    preserved = {canon(o) for o in _collect_all_valid_cia_ops()}
    cia = set(torch._C._dispatch_get_registrations_for_dispatch_key("CompositeImplicitAutograd"))
    mutable = []
    for qual in torch._C._dispatch_get_all_op_names():
        ns, rest = qual.split("::", 1)
        opname, _, overload = rest.partition(".")
        try:
            op = getattr(getattr(getattr(torch.ops, ns), opname), overload or "default")
        except Exception:
            continue
        if getattr(op, "_schema", None) is not None and op._schema.is_mutable:
            mutable.append(qual)
    return {
        # CompositeImplicitAutograd ops that are NOT preservable -> decomposed by {} (outputs
        # depend on arguments; see "decompositions.ep_inference" for observed results)
        "cia_decomposed": sorted(cia - preserved),
        # mutating ops -> functionalized (foo_ -> foo) by {}
        "mutable": sorted(mutable),
    }


# ------------------------------------------------------------------- sampled decompositions
class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout()


def sample_decompositions(registry, max_ops=None, per_op=2, verbose=False) -> dict:
    """Run torch.export + run_decompositions({}) and + torch.onnx's preparation on OpInfo samples.

    Per training-IR op (canonical name) record the distinct sets of ops it became, using
    node.meta["from_node"] provenance. Only non-identity results are kept.
    """
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.utils._pytree import tree_flatten, tree_unflatten

    ep_map: dict[str, set] = {}
    onnx_map: dict[str, set] = {}
    seen_train: set = set()
    stats = {"opinfos": 0, "samples": 0, "exported": 0}

    def attribute(train_ep, post_ep, into):
        tnodes = {n.name: canon(n.target) for n in train_ep.graph.nodes if n.op == "call_function"}
        tstr = {n.name: str(n.target) for n in train_ep.graph.nodes if n.op == "call_function"}
        result: dict[str, set] = {k: set() for k in tnodes}
        for n in post_ep.graph.nodes:
            if n.op != "call_function":
                continue
            stack, root = list(n.meta.get("from_node") or []), None
            while stack:
                s = stack.pop()
                if s.name in tnodes and s.target == tstr[s.name]:
                    root = s.name
                stack.extend(getattr(s, "from_node", None) or [])
            if root is not None:
                result[root].add(canon(n.target))
        for name, outs in result.items():
            src = tnodes[name]
            if outs != {src}:
                into.setdefault(src, set()).add(tuple(sorted(outs)))

    ops = op_db[:max_ops] if max_ops else op_db
    signal.signal(signal.SIGALRM, _alarm)
    for info in ops:
        stats["opinfos"] += 1
        try:
            dts = info.supported_dtypes("cpu")
            dtype = torch.float32 if torch.float32 in dts else sorted(dts, key=str)[0]
        except Exception:
            continue
        variants = [(info.op, per_op)]
        if info.inplace_variant is not None:
            variants.append((info.inplace_variant, 1))
        for fn, n_samples in variants:
            try:
                samples = list(info.sample_inputs("cpu", dtype))[:n_samples]
            except Exception:
                continue
            for s in samples:
                stats["samples"] += 1
                flat, spec = tree_flatten((s.input, s.args, s.kwargs))
                tidx = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]
                inplace = fn is info.inplace_variant

                class M(torch.nn.Module):
                    def forward(self, *ts, _flat=flat, _spec=spec, _tidx=tidx, _fn=fn, _ip=inplace):
                        f = list(_flat)
                        for i, t in zip(_tidx, ts, strict=False):
                            f[i] = t
                        inp, a, kw = tree_unflatten(f, _spec)
                        if _ip:
                            inp = inp.clone()
                        return _fn(inp, *a, **kw)

                args = tuple(flat[i] for i in tidx)
                signal.alarm(30)
                try:
                    ep = torch.export.export(M(), args, strict=False)
                    stats["exported"] += 1
                    seen_train.update(
                        canon(n.target) for n in ep.graph.nodes if n.op == "call_function"
                    )
                    with contextlib.suppress(Exception):
                        attribute(ep, ep.run_decompositions({}), ep_map)
                    with contextlib.suppress(Exception):
                        attribute(ep, _onnx_prepare(ep, registry), onnx_map)
                except BaseException as e:
                    if isinstance(e, KeyboardInterrupt):
                        raise
                finally:
                    signal.alarm(0)
        if verbose and stats["opinfos"] % 25 == 0:
            print(stats, len(ep_map), len(onnx_map), file=sys.stderr, flush=True)

    def fin(d):
        return {k: [list(t) for t in sorted(v)] for k, v in sorted(d.items())}

    return {
        "source": "torch.testing._internal.common_methods_invocations.op_db (torch.export, strict=False)",
        "stats": stats,
        "observed_training_ops": len(seen_train),
        # training-IR op -> alternative op sets seen after ExportedProgram.run_decompositions({})
        "ep_inference": fin(ep_map),
        # training-IR op -> alternative op sets seen after torch.onnx's decomposition + passes
        # ([] = node removed, e.g. assertions)
        "onnx": fin(onnx_map),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "-o",
        "--out",
        default=str(
            Path(__file__).resolve().parent.parent / "modelgate" / "data" / "opsupport.json"
        ),
    )
    ap.add_argument("--sample", action="store_true", help="also sample decompositions via OpInfo")
    ap.add_argument("--max-ops", type=int, default=None)
    ap.add_argument("--onnx-opset", type=int, default=None)
    a = ap.parse_args(argv)

    onnx_dyn, registry, _table = onnx_dynamo_section(a.onnx_opset)
    snap = {
        "format": FORMAT,
        "generated": {
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "coreml": coreml_section(),
        "onnx_dynamo": onnx_dyn,
        "onnx_torchscript": onnx_torchscript_section(),
        "aten": aten_section(),
    }
    for mod in ("coremltools", "onnxscript", "onnx"):
        try:
            snap["generated"][mod] = __import__(mod).__version__
        except Exception:
            snap["generated"][mod] = None
    if a.sample:
        snap["decompositions"] = sample_decompositions(registry, a.max_ops, verbose=True)
    with open(a.out, "w") as f:
        json.dump(snap, f, indent=1, sort_keys=False)
        f.write("\n")
    print("wrote", a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
