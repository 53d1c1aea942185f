"""Hugging Face folders built from their config.json (modelgate/checks/hf_folder.py, hf_build.py).

The folders are written here by ``save_pretrained`` from tiny configs (no hub): a BERT, a
GPT-2, a Llama, a ViT and a T5, each as transformers 5 writes it (``model.safetensors``),
sharded, and as older folders hold it (``pytorch_model.bin``, sharded ``.bin``). The
JSON-only side (:func:`hf_folder`, :func:`describe`) is also tested on hand-written configs,
without transformers.

The Core ML half of issue 11's done-when item is here too: :func:`coreml_conversion` runs a
real ``coremltools.convert`` on an exported program in a fresh process and names every op it
fails on, and the tests check that MG003 on the same program names the same ops.

Run as a script, this file is that fresh process:
``python tests/test_hf_build.py iOS16 A.pt2 B.pt2 ...`` prints the outcomes as a JSON list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelgate.checks.hf_build import build
from modelgate.checks.hf_folder import BuildRefused, describe, hf_folder

HERE = Path(__file__).resolve()

# ---------------------------------------------------------------------------------------------
# the real Core ML conversion (reused by the `modelgate check` comparison of issue 11)
# ---------------------------------------------------------------------------------------------


def coreml_conversion(program: str | os.PathLike, target: str = "iOS16") -> dict[str, Any]:
    """Convert the saved ExportedProgram ``program`` with coremltools, in a fresh process.

    Returns ``{"ok", "failed_ops", "first_error", "other_error"}``: ``ok`` is whether the plain
    conversion goes through; ``failed_ops`` every op kind coremltools has no converter for, in
    the order the converter meets them (each time it stops on one, a stand-in converter that
    yields zeros of the node's shape lets it go on to the next); ``first_error`` what the plain
    conversion said; ``other_error`` a failure that is not a missing op converter.
    """
    return coreml_conversions([program], target)[0]


def coreml_conversions(programs: list[Any], target: str = "iOS16") -> list[dict[str, Any]]:
    """:func:`coreml_conversion` of each program: one process imports torch and coremltools
    once and forks a fresh child per program, two at a time."""
    done = subprocess.run(
        [sys.executable, str(HERE), target, *map(str, programs)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise AssertionError(f"the conversion process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _serve(target: str, programs: list[str]) -> list[dict[str, Any]]:
    import multiprocessing

    import coremltools  # noqa: F401  (imported once here; each forked child inherits it)
    import torch  # noqa: F401

    context = multiprocessing.get_context("fork")
    with context.Pool(2, maxtasksperchild=1) as pool:  # a fresh child per conversion
        return pool.starmap(_convert_each_op, [(p, target) for p in programs])


def _convert_each_op(program: str, target: str) -> dict[str, Any]:
    """In the fresh process: convert as users do (run_decompositions, ML program, the
    deployment target), and past each op coremltools lacks, to find them all."""
    import contextlib
    import io
    import logging
    import re
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import coremltools as ct
    import numpy as np
    import torch
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.torch_op_registry import (
        _TORCH_OPS_REGISTRY as registry,
    )

    exported = torch.export.load(program).run_decompositions({})
    values = {node.name: node.meta.get("val") for node in exported.graph.nodes}

    def stand_in(context: Any, node: Any) -> None:
        val = values[node.name]
        dtype = np.dtype(str(val.dtype).removeprefix("torch."))
        context.add(mb.const(val=np.zeros(tuple(val.shape), dtype=dtype), name=node.name))

    out: dict[str, Any] = {"ok": False, "failed_ops": [], "first_error": None, "other_error": None}
    for _ in range(100):
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                ct.convert(
                    exported,
                    convert_to="mlprogram",
                    minimum_deployment_target=getattr(ct.target, target),
                    skip_model_load=True,  # Core ML cannot load a model on Linux
                )
        except Exception as exc:
            text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
            out["first_error"] = out["first_error"] or text
            missing = re.search(r"Unsupported fx node \S+, kind (\S+)", str(exc))
            if missing is None or missing.group(1) in out["failed_ops"]:
                out["other_error"] = text
                return out
            out["failed_ops"].append(missing.group(1))
            registry.set_func_by_name(stand_in, missing.group(1))
            continue
        out["ok"] = not out["failed_ops"]
        return out
    out["other_error"] = "more than 100 ops without a converter"
    return out


if __name__ == "__main__":
    print(json.dumps(_serve(sys.argv[1], sys.argv[2:])))
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# the JSON-only side, on hand-written folders (no transformers)
# ---------------------------------------------------------------------------------------------


def _folder(root: Path, name: str, config: Any, *files: str) -> Path:
    folder = root / name
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    for file in files:
        (folder / file).write_bytes(b"")
    return folder


BERT_JSON = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 100,
             "max_position_embeddings": 512, "pad_token_id": 0}  # fmt: skip


def test_hf_folder_finds_the_folder_from_itself_or_its_weights(tmp_path: Path) -> None:
    bert = _folder(tmp_path, "bert", BERT_JSON, "model.safetensors", "vocab.txt")
    sharded = _folder(
        tmp_path, "sharded", {"model_type": "gpt2"}, "model.safetensors.index.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
    )  # fmt: skip
    old = _folder(tmp_path, "old", BERT_JSON, "pytorch_model.bin.index.json",
                  "pytorch_model-00001-of-00002.bin")  # fmt: skip
    assert [hf_folder(str(p)) for p in (bert, bert / "model.safetensors")] == [str(bert)] * 2
    assert hf_folder(str(sharded / "model-00002-of-00002.safetensors")) == str(sharded)
    assert hf_folder(str(sharded / "model.safetensors.index.json")) == str(sharded)
    assert hf_folder(str(old / "pytorch_model-00001-of-00002.bin")) == str(old)
    assert hf_folder(str(old)) == str(old)
    for not_one in (
        bert / "config.json",  # the config is not the weights
        bert / "vocab.txt",
        _folder(tmp_path, "no_config", None, "model.safetensors"),
        _folder(tmp_path, "no_weights", BERT_JSON, "tokenizer.json"),
        _folder(tmp_path, "diffusers", {"_class_name": "UNet2DModel"}, "model.safetensors"),
        _folder(tmp_path, "not_json", None, "model.safetensors"),
        _folder(tmp_path, "a_list", [1, 2], "model.safetensors"),
        _folder(tmp_path, "loose_shard", BERT_JSON, "model-00001-of-00002.safetensors")
        / "model-00001-of-00002.safetensors",  # a shard without its index
    ):
        assert hf_folder(str(not_one)) is None, not_one
    (tmp_path / "not_json" / "config.json").write_text("{nope")
    assert hf_folder(str(tmp_path / "not_json")) is None


def _inputs(*specs: tuple[str, list[int], str, str]) -> list[dict[str, Any]]:
    return [{"name": n, "shape": s, "dtype": d, "values": v} for n, s, d, v in specs]


def _ids(n: int, vocab: int = 100) -> tuple[str, list[int], str, str]:
    return ("input_ids", [1, n], "int64", f"token ids in [0, {vocab}), seed 0")


def _mask(n: int) -> tuple[str, list[int], str, str]:
    return ("attention_mask", [1, n], "int64", "ones")


PIXELS = "normal(0, 1), seed 0"
AUDIO_WHY = (
    "an audio model takes a clip whose length is the deployment's, which the config does not "
    "say; give the inputs in the config: inputs: [{name: input_values, shape: [1, 16000], "
    "dtype: float32}] (input_features for Whisper-style models)"
)
UNKNOWN_WHY = (
    "no default inputs for this kind of model (multimodal, video, or an architecture modelgate "
    "does not recognise); give the inputs in the config, e.g. inputs: [{name: input_ids, shape: "
    "[1, 128], dtype: int64}, {name: pixel_values, shape: [1, 3, 224, 224]}]"
)
AUTO_MAP_WHY = (
    "config.json has auto_map: the architecture is custom code shipped with the model "
    "(trust_remote_code), which modelgate never runs; give a build recipe in the config's "
    "models: instead"
)

# (folder name, config.json, other files, kind, inputs, no_default, refused, notes)
DESCRIBE_TABLE = [
    ("bert", BERT_JSON, {}, "text encoder", _inputs(_ids(128), _mask(128)), None, None, []),
    ("roberta", {"architectures": ["RobertaForSequenceClassification"], "model_type": "roberta",
                 "vocab_size": 50, "max_position_embeddings": 66, "pad_token_id": 1}, {},
     "text encoder", _inputs(_ids(64, 50), _mask(64)), None, None, []),  # 66 - (pad + 1)
    ("llama_base", {"architectures": ["LlamaModel"], "model_type": "llama", "vocab_size": 100,
                    "max_position_embeddings": 64, "num_key_value_heads": 1}, {},
     "causal LM", _inputs(_ids(64), _mask(64)), None, None, []),
    ("t5", {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
            "vocab_size": 100, "is_encoder_decoder": True, "decoder_start_token_id": 0}, {},
     "seq2seq",
     _inputs(_ids(128), _mask(128), ("decoder_input_ids", [1, 128], "int64",
             "token ids in [0, 100), seed 0, the first 0 (decoder_start_token_id)")),
     None, None,
     ["config.json names no position limit; 128 tokens",
      "seq2seq: the whole encoder-decoder call with decoder ids of the same length; to check "
      "the encoder or one decoding step, give the inputs"]),
    ("t5_encoder", {"architectures": ["T5EncoderModel"], "model_type": "t5", "vocab_size": 100,
                    "is_encoder_decoder": True}, {},
     "text encoder", _inputs(_ids(128), _mask(128)), None, None,
     ["config.json names no position limit; 128 tokens"]),
    ("vit", {"architectures": ["ViTForImageClassification"], "model_type": "vit",
             "image_size": 32, "num_channels": 3}, {},
     "vision", _inputs(("pixel_values", [1, 3, 32, 32], "float32", PIXELS)), None, None, []),
    ("resnet", {"architectures": ["ResNetForImageClassification"], "model_type": "resnet",
                "num_channels": 3},
     {"preprocessor_config.json": {"size": {"shortest_edge": 224},
                                   "crop_size": {"height": 192, "width": 160}}},
     "vision", _inputs(("pixel_values", [1, 3, 192, 160], "float32", PIXELS)), None, None,
     ["image size 192x160 from preprocessor_config.json"]),
    ("convnext", {"architectures": ["ConvNextModel"], "model_type": "convnext",
                  "num_channels": 3}, {},
     "vision", None,
     "config.json names no image_size (nor preprocessor_config.json a size); give the inputs, "
     "e.g. inputs: [{name: pixel_values, shape: [1, 3, 224, 224]}]", None, []),
    ("wav2vec2", {"architectures": ["Wav2Vec2ForCTC"], "model_type": "wav2vec2",
                  "vocab_size": 32, "feat_extract_norm": "group"}, {},
     "audio", None, AUDIO_WHY, None, []),
    ("whisper", {"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
                 "vocab_size": 100, "num_mel_bins": 80, "is_encoder_decoder": True}, {},
     "audio", None, AUDIO_WHY, None, []),
    ("clip", {"architectures": ["CLIPModel"], "model_type": "clip", "text_config": {},
              "vision_config": {}}, {},
     "unknown", None, UNKNOWN_WHY, None, []),
    ("custom", {**BERT_JSON, "architectures": ["MyBert"],
                "auto_map": {"AutoModel": "modeling_my.MyBert"}}, {},
     "text encoder", _inputs(_ids(128), _mask(128)), None, AUTO_MAP_WHY, []),
    ("two", {**BERT_JSON, "architectures": ["BertForMaskedLM", "BertModel"]}, {},
     "text encoder", _inputs(_ids(128), _mask(128)), None, None,
     ["config.json names 2 architectures; built BertForMaskedLM"]),
    ("odd_name", {**BERT_JSON, "architectures": ["os.system"]}, {},
     "text encoder", _inputs(_ids(128), _mask(128)), None,
     "config.json names architecture 'os.system', which is not a transformers class", []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "config", "files", "kind", "inputs", "no_default", "refused", "notes"),
    DESCRIBE_TABLE,
    ids=[row[0] for row in DESCRIBE_TABLE],
)
def test_describe_from_the_json_alone(
    tmp_path: Path, name: str, config: dict, files: dict, kind: str, inputs: Any,
    no_default: Any, refused: Any, notes: list,
) -> None:  # fmt: skip
    folder = _folder(tmp_path, name, config, "model.safetensors")
    for file, doc in files.items():
        (folder / file).write_text(json.dumps(doc))
    arch = config.get("architectures")
    assert describe(str(folder)) == {
        "architecture": arch[0] if arch else None,
        "model_type": config["model_type"],
        "kind": kind,
        "weights": ["model.safetensors"],
        "inputs": inputs,
        "no_default": no_default,
        "refused": refused,
        "notes": notes,
    }


def test_describe_says_what_is_missing(tmp_path: Path) -> None:
    assert describe(str(tmp_path / "absent"))["refused"] == (
        "config.json is missing or not a JSON object"
    )
    no_weights = _folder(tmp_path, "no_weights", BERT_JSON)
    assert describe(str(no_weights))["refused"] == (
        "no weights beside config.json (model.safetensors, pytorch_model.bin or an index)"
    )
    nothing = _folder(tmp_path, "nothing", {"vocab_size": 3}, "model.safetensors")
    assert describe(str(nothing))["refused"] == (
        "config.json names no architecture (architectures or model_type)"
    )
    both = _folder(tmp_path, "both", BERT_JSON, "pytorch_model.bin", "model.safetensors")
    assert describe(str(both))["weights"] == ["model.safetensors"]  # transformers' preference


def test_the_parent_side_imports_nothing_heavy(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "bert", BERT_JSON, "model.safetensors")
    code = (
        "import sys; from modelgate.checks import hf_folder as h; "
        f"h.describe(h.hf_folder({str(folder)!r})); "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'safetensors') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# the child's side: tiny models saved with save_pretrained, built back
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models in every layout a Hugging Face folder comes in, built once."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64}  # fmt: skip
    models = {
        "bert": transformers.BertModel(transformers.BertConfig(vocab_size=100, **small)),
        "gpt2": transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64,
            bos_token_id=99, eos_token_id=99)),
        "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=100, max_position_embeddings=64, num_key_value_heads=1, **small)),
        "vit": transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=32, patch_size=8, num_labels=3, **small)),
        "t5": transformers.T5ForConditionalGeneration(transformers.T5Config(
            d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, vocab_size=100)),
    }  # fmt: skip
    out = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        out[name] = root / name
    bert = models["bert"]
    bert.save_pretrained(root / "bert_sharded", max_shard_size="20KB")
    out["bert_sharded"] = root / "bert_sharded"
    # what older transformers wrote (5 writes safetensors only): a torch.save state dict
    state = {k: v.contiguous() for k, v in bert.state_dict().items()}
    for name in ("bert_bin", "bert_bin_sharded", "bert_missing", "bert_extra", "bert_resized"):
        bert.config.save_pretrained(root / name)
        out[name] = root / name
    torch.save(state, root / "bert_bin" / "pytorch_model.bin")
    keys = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}  # fmt: skip
    for shard, names in halves.items():
        torch.save({k: state[k] for k in names}, root / "bert_bin_sharded" / shard)
    index = {"metadata": {}, "weight_map": {k: s for s, ns in halves.items() for k in ns}}
    (root / "bert_bin_sharded" / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    # weights edited after the save: a tensor dropped, one added, a config that disagrees
    weights = load_file(root / "bert" / "model.safetensors")
    dropped = {k: v for k, v in weights.items() if k != "encoder.layer.1.output.dense.bias"}
    save_file(dropped, root / "bert_missing" / "model.safetensors", metadata={"format": "pt"})
    extra = {**weights, "encoder.layer.2.output.dense.bias": torch.zeros(32)}
    save_file(extra, root / "bert_extra" / "model.safetensors", metadata={"format": "pt"})
    save_file(weights, root / "bert_resized" / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((root / "bert_resized" / "config.json").read_text())
    (root / "bert_resized" / "config.json").write_text(
        json.dumps({**config, "intermediate_size": 48})
    )
    custom = root / "bert_custom"
    bert.save_pretrained(custom)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(
        json.dumps({**config, "auto_map": {"AutoModel": "modeling_custom.CustomBert"}})
    )
    (custom / "modeling_custom.py").write_text("raise SystemExit('custom code ran')\n")
    out["bert_custom"] = custom
    return out


def _version() -> str:
    import transformers

    return transformers.__version__


def _notes(cls: str, cache: str | None) -> list[str]:
    """The notes of a build; "{version}" stands for transformers' (known only at run time)."""
    return [
        *([f"use_cache=False: no KV cache {cache}"] if cache else []),
        "return_dict=False: the outputs are a tuple of tensors",
        f"{cls} from transformers {{version}}, float32, attention sdpa",
    ]


PREFILL = "in or out: the prefill call"
SEQ2SEQ_NOTES = [
    "config.json names no position limit; 128 tokens",
    "seq2seq: the whole encoder-decoder call with decoder ids of the same length; to check "
    "the encoder or one decoding step, give the inputs",
]
# folder -> (inputs used, positional names, keyword names, notes)
BUILD_TABLE = {
    "bert": (_inputs(_ids(128), _mask(128)), ["input_ids", "attention_mask"], [],
             _notes("BertModel", "outputs")),
    # GPT-2's forward takes past_key_values second: the mask goes by keyword
    "gpt2": (_inputs(_ids(64), _mask(64)), ["input_ids"], ["attention_mask"],
             _notes("GPT2LMHeadModel", PREFILL)),
    "llama": (_inputs(_ids(64), _mask(64)), ["input_ids", "attention_mask"], [],
              _notes("LlamaForCausalLM", PREFILL)),
    "vit": (_inputs(("pixel_values", [1, 3, 32, 32], "float32", PIXELS)), ["pixel_values"], [],
            _notes("ViTForImageClassification", None)),
    "t5": (_inputs(_ids(128), _mask(128), ("decoder_input_ids", [1, 128], "int64",
                                           "token ids in [0, 100), seed 0")),
           ["input_ids", "attention_mask", "decoder_input_ids"], [],
           SEQ2SEQ_NOTES + _notes("T5ForConditionalGeneration", PREFILL)),
}  # fmt: skip


@pytest.mark.torch
@pytest.mark.parametrize("name", list(BUILD_TABLE))
def test_build_with_default_inputs_exports(hf: dict[str, Path], name: str) -> None:
    import torch

    inputs, positional, keywords, notes = BUILD_TABLE[name]
    assert describe(str(hf[name]))["inputs"] == inputs
    built = build(str(hf[name]))
    assert built.inputs_used == inputs
    assert [list(t.shape) for t in built.args] == [i["shape"] for i in inputs[: len(positional)]]
    assert list(built.kwargs) == keywords
    assert (built.missing, built.unexpected, built.mismatched) == ([], [], [])
    assert built.notes == [n.replace("{version}", _version()) for n in notes]
    assert not built.module.training
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    for spec, tensor in zip(inputs, [*built.args, *built.kwargs.values()], strict=True):
        assert str(tensor.dtype) == f"torch.{spec['dtype']}"
        if spec["name"].endswith("input_ids"):
            assert int(tensor.min()) >= 0 and int(tensor.max()) < 100
        if spec["values"] == "ones":
            assert bool((tensor == 1).all())
    outputs = built.module(*built.args, **built.kwargs)
    assert isinstance(outputs, tuple) and all(isinstance(o, torch.Tensor) for o in outputs)
    program = torch.export.export(built.module, built.args, built.kwargs)
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    assert users == [i["name"] for i in inputs]


@pytest.mark.torch
def test_token_ids_are_seeded_and_skip_the_padding_id(hf: dict[str, Path]) -> None:
    import torch

    first, again = build(str(hf["bert"])), build(str(hf["bert"]))
    assert torch.equal(first.args[0], again.args[0])
    assert int(first.args[0].min()) >= 1  # BERT pads with 0
    assert len(first.args[0].unique()) > 50


@pytest.mark.torch
@pytest.mark.parametrize("layout", ["bert_sharded", "bert_bin", "bert_bin_sharded"])
def test_every_weights_layout_loads_the_same_model(hf: dict[str, Path], layout: str) -> None:
    import torch

    assert hf_folder(str(hf[layout])) == str(hf[layout])
    reference = build(str(hf["bert"]))
    built = build(str(hf[layout]))
    assert (built.missing, built.unexpected, built.mismatched) == ([], [], [])
    mine, theirs = built.module.state_dict(), reference.module.state_dict()
    assert sorted(mine) == sorted(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.torch
def test_weights_that_disagree_with_the_config_are_listed(hf: dict[str, Path]) -> None:
    assert build(str(hf["bert_missing"])).missing == ["encoder.layer.1.output.dense.bias"]
    assert build(str(hf["bert_extra"])).unexpected == ["encoder.layer.2.output.dense.bias"]
    assert build(str(hf["bert_resized"])).mismatched == [
        f"encoder.layer.{n}.{key}: checkpoint {ckpt}, model {model}"
        for n in (0, 1)
        for key, ckpt, model in (
            ("intermediate.dense.bias", [64], [48]),
            ("intermediate.dense.weight", [64, 32], [48, 32]),
            ("output.dense.weight", [32, 64], [32, 48]),
        )
    ]


@pytest.mark.torch
def test_custom_code_is_refused_and_never_runs(hf: dict[str, Path]) -> None:
    with pytest.raises(BuildRefused) as refused:
        build(str(hf["bert_custom"]))
    assert refused.value.reason == AUTO_MAP_WHY


@pytest.mark.torch
def test_a_class_transformers_does_not_have_is_refused(hf: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "renamed"
    folder.mkdir()
    config = json.loads((hf["bert"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchModel"]}))
    (folder / "model.safetensors").write_bytes((hf["bert"] / "model.safetensors").read_bytes())
    with pytest.raises(BuildRefused) as refused:
        build(str(folder))
    assert refused.value.reason == (
        f"transformers {_version()} has no model class 'NoSuchModel' (config.json "
        "architectures); modelgate builds transformers' own classes only"
    )


@pytest.mark.torch
def test_given_inputs_replace_the_defaults(hf: dict[str, Path]) -> None:
    import torch

    folder = str(hf["bert"])
    alone = build(folder, [("input_ids", (1, 16), "int64")])
    assert alone.inputs_used == _inputs(_ids(16))
    assert ([list(t.shape) for t in alone.args], alone.kwargs) == ([[1, 16]], {})
    # in forward's order whatever the config's, ids as int64 even where the config said float
    built = build(folder, [("token_type_ids", (1, 8), "int64"), ("input_ids", (1, 8), "float32")])
    assert built.inputs_used == _inputs(_ids(8), ("token_type_ids", [1, 8], "int64", "zeros"))
    assert "input_ids: given as float32, built as int64 (token ids and masks are)" in built.notes
    assert [list(t.shape) for t in built.args] == [[1, 8]]
    assert list(built.kwargs) == ["token_type_ids"]
    torch.export.export(built.module, built.args, built.kwargs)
    with pytest.raises(BuildRefused, match=r"^input 'pixel_values' is not an argument of "
                       r"BertModel.forward, which takes input_ids, attention_mask, "
                       r"token_type_ids, position_ids, inputs_embeds"):  # fmt: skip
        build(folder, [("pixel_values", (1, 3, 8, 8), "float32")])
    with pytest.raises(BuildRefused, match=r"^input 'input_ids': shape \[1, 0\]"):
        build(folder, [("input_ids", (1, 0), "int64")])
    with pytest.raises(BuildRefused, match=r"^an input of shape \[1, 8\] has no name"):
        build(folder, [(None, (1, 8), "int64")])  # type: ignore[list-item]
    with pytest.raises(BuildRefused, match=r"^no inputs given"):
        build(folder, [])


@pytest.mark.torch
def test_a_kind_without_defaults_is_refused_unless_inputs_are_given(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), vocab_size=20,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    transformers.Wav2Vec2ForCTC(config).save_pretrained(tmp_path / "w2v")
    folder = str(tmp_path / "w2v")
    with pytest.raises(BuildRefused) as refused:
        build(folder)
    assert refused.value.reason == AUDIO_WHY
    built = build(folder, [("input_values", (1, 1600), "float32")])
    assert built.inputs_used == _inputs(("input_values", [1, 1600], "float32", PIXELS))
    torch.export.export(built.module, built.args, built.kwargs)


# ---------------------------------------------------------------------------------------------
# issue 11: the tiny BERT's real Core ML conversion, and MG003 on the same program
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_programs(hf: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny BERT exported with its default input_ids (128 tokens) alone, with its
    attention mask, and with 512 ids (its whole position table), saved as .pt2, and each
    converted for real (each in a fresh process of its own)."""
    pytest.importorskip("coremltools")
    import torch

    root = tmp_path_factory.mktemp("bert_pt2")
    built = build(str(hf["bert"]))
    full = build(str(hf["bert"]), [("input_ids", (1, 512), "int64")])  # max_position_embeddings
    programs = {
        "input_ids": (built.args[0],),
        "input_ids+attention_mask": built.args,
        "input_ids of 512": full.args,
    }
    paths = {}
    for name, args in programs.items():
        paths[name] = root / f"{name}.pt2"
        torch.export.save(torch.export.export(built.module, args), paths[name])
    real = dict(zip(paths, coreml_conversions(list(paths.values())), strict=True))
    return {"paths": paths, "real": real}


@pytest.mark.coreml
@pytest.mark.slow
def test_the_tiny_bert_converts_with_ids_alone_and_fails_with_its_mask(bert_programs: dict) -> None:
    real = bert_programs["real"]
    assert real["input_ids"] == {
        "ok": True, "failed_ops": [], "first_error": None, "other_error": None,
    }  # fmt: skip
    assert real["input_ids+attention_mask"] == {
        "ok": False,
        "failed_ops": ["new_ones", "__and__"],  # the padding mask transformers 5 builds
        "first_error": "NotImplementedError: Unsupported fx node new_ones, kind new_ones",
        "other_error": None,
    }


@pytest.mark.coreml
@pytest.mark.slow
def test_a_sequence_as_long_as_the_position_table_fails_on_alias(bert_programs: dict) -> None:
    """BERT slices its position_ids buffer to the sequence: the whole buffer, when the
    sequence is max_position_embeddings long, which run_decompositions turns into alias."""
    assert bert_programs["real"]["input_ids of 512"] == {
        "ok": False,
        "failed_ops": ["alias"],
        "first_error": "NotImplementedError: Unsupported fx node alias, kind alias",
        "other_error": None,
    }


@pytest.mark.coreml
@pytest.mark.slow
@pytest.mark.parametrize("inputs", ["input_ids", "input_ids+attention_mask", "input_ids of 512"])
def test_mg003_names_the_ops_the_real_conversion_fails_on(
    bert_programs: dict, inputs: str, run_cli: Any
) -> None:
    from modelgate.opsupport import ct_exported_key

    path = bert_programs["paths"][inputs]
    code, out, _ = run_cli("check", "--static", "--format", "json", path)
    findings = json.loads(out)["models"][0]["findings"]
    flagged = [f["location"]["op"] for f in findings if f["rule"] == "MG003"]
    # MG003 has one finding per op and module; the converter meets each op kind once
    assert set(map(ct_exported_key, flagged)) == set(bert_programs["real"][inputs]["failed_ops"])
    assert code == (0 if bert_programs["real"][inputs]["ok"] else 1)


# ---------------------------------------------------------------------------------------------
# `modelgate check` on the folder itself: built with no recipe, its MG003 Core ML findings
# against the real conversion of the same model with the same inputs (issue 11, done-when)
# ---------------------------------------------------------------------------------------------


def _modelgate(cwd: Path, *args: str) -> tuple[int, dict]:
    from test_recipes import _check

    code, report, _ = _check(cwd, *args)
    return code, report


@pytest.fixture(scope="module")
def bert_checked(hf: dict[str, Path]) -> dict:
    """The tiny BERT folder checked with --convert coreml twice: with its defaults (ids and
    mask), and with a models: entry that gives input_ids alone."""
    pytest.importorskip("coremltools")
    folder = hf["bert"]
    default_code, default = _modelgate(folder.parent, "bert", "--convert", "coreml")
    config = folder.parent / "ids-only.yaml"  # not a name discovery finds: --config only
    config.write_text(
        "models:\n  - path: bert/\n    inputs: [{name: input_ids, shape: [1, 128], dtype: int64}]\n"
    )
    ids_code, ids = _modelgate(
        folder.parent, "--config", str(config), str(folder / "model.safetensors"),
        "--convert", "coreml",
    )  # fmt: skip
    return {"default": (default_code, default["models"][0]), "ids": (ids_code, ids["models"][0])}


@pytest.mark.coreml
@pytest.mark.slow
@pytest.mark.parametrize(("checked", "real"), [
    ("default", "input_ids+attention_mask"), ("ids", "input_ids"),
])  # fmt: skip
def test_a_hugging_face_folder_gets_the_mg003_findings_of_its_real_conversion(
    bert_checked: dict, bert_programs: dict, checked: str, real: str
) -> None:
    from modelgate.opsupport import ct_exported_key

    code, model = bert_checked[checked]
    outcome = bert_programs["real"][real]
    built = model["metrics"]["built"]
    assert built["ok"] is True and built["by"] == "transformers from config.json"
    names = [i["name"] for i in built["inputs"]]
    assert names == (["input_ids", "attention_mask"] if checked == "default" else ["input_ids"])
    assert all(i["shape"] == [1, 128] and i["dtype"] == "int64" for i in built["inputs"])
    flagged = {ct_exported_key(f["location"]["op"]) for f in model["findings"]
               if f["rule"] == "MG003" and f["location"]["op"]}  # fmt: skip
    assert flagged == set(outcome["failed_ops"])
    (coreml,) = model["metrics"]["targets"]
    assert (coreml["result"] == "ok") is outcome["ok"]
    assert code == (0 if outcome["ok"] else 1)
    if not outcome["ok"]:  # the measured outcome: Core ML failed where the real one did
        (mg101,) = [f for f in model["findings"] if f["rule"] == "MG101"]
        assert "new_ones" in mg101["message"]
    notes = [n for n in model["notes"] if n.startswith("built from")]
    assert notes and "with transformers from config.json" in notes[0]
