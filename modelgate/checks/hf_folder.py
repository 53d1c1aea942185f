"""Hugging Face folders, the parent's side: is this a folder to build, what is it, which inputs.

A folder that ``save_pretrained`` wrote (``config.json`` naming its architecture beside
``model.safetensors``, ``pytorch_model.bin`` or a sharded index) needs no build recipe: the
architecture is in ``config.json``. This module reads JSON only (it imports nothing heavy,
so discovery and the result cache's key can call it); :mod:`modelgate.checks.hf_build` builds
the model in the child.

Default inputs follow how each kind of model is called in deployment: token ids with their
attention mask for text models, pixel values of the config's image size for vision models,
decoder ids too for encoder-decoders. Where a kind has no sensible default (audio clips,
video, multimodal models) the build is refused with what to put in the config instead.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
MAX_JSON = 16 * 1024 * 1024  # a real config is a few kB
SINGLE = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SHARD = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")
_CLASS = re.compile(r"[A-Z][A-Za-z0-9]{0,99}")  # a transformers class name, nothing else
MAX_TOKENS = 128  # default sequence length, where the config allows that many positions
SEED = 0

TEXT = "text encoder"
CAUSAL = "causal LM"
SEQ2SEQ = "seq2seq"
VISION = "vision"
AUDIO = "audio"
UNKNOWN = "unknown"

# architecture class suffixes, checked in this order (transformers names its heads this way)
_SUFFIXES = (
    (AUDIO, ("ForCTC", "ForAudioClassification", "ForAudioFrameClassification", "ForXVector",
             "ForSpeechSeq2Seq", "ForTextToSpeech", "ForTextToWaveform")),
    (UNKNOWN, ("ForVideoClassification", "ForVisualQuestionAnswering", "ForImageTextToText",
               "ForVision2Seq", "ForZeroShotImageClassification", "ForZeroShotObjectDetection")),
    (CAUSAL, ("ForCausalLM", "LMHeadModel")),
    (VISION, ("ForImageClassification", "ForImageClassificationWithTeacher",
              "ForSemanticSegmentation", "ForInstanceSegmentation", "ForUniversalSegmentation",
              "ForDepthEstimation", "ForObjectDetection", "ForMaskedImageModeling",
              "ForKeypointDetection", "ForImageToImage", "Backbone")),
    (TEXT, ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
            "ForQuestionAnswering", "ForMultipleChoice", "ForNextSentencePrediction",
            "ForPreTraining", "ForTextEncoding", "EncoderModel")),
)  # fmt: skip
_AUDIO_KEYS = ("num_mel_bins", "feat_extract_norm")  # Whisper / Speech2Text; wav2vec2 family
_DECODER_KEYS = ("num_key_value_heads", "num_kv_heads", "n_positions")  # decoder-only configs
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
# RoBERTa-style position ids start after the padding index: padding_idx + 1 positions are lost
_PADDED_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                     "roberta-prelayernorm", "data2vec-text", "ibert", "xmod", "mpnet",
                     "esm"}  # fmt: skip
_FALLBACK_HINT = (
    "give the inputs in the config: inputs: [{name: input_values, shape: [1, 16000], "
    "dtype: float32}]"
)


class BuildRefused(Exception):
    """The folder is not built; the message says why and what to put in the config."""

    @property
    def reason(self) -> str:
        return str(self)


# ---- the parent's side: JSON only --------------------------------------------------------


def hf_folder(path: str) -> str | None:
    """The Hugging Face folder ``path`` is, or holds the weights of; None otherwise.

    A folder counts when its ``config.json`` names an architecture (``architectures`` or
    ``model_type``) and weights lie beside it; a file counts when it is those weights
    (``model.safetensors``, ``pytorch_model.bin``, an ``*.index.json`` or one of its shards).
    """
    if os.path.isdir(path):
        folder = path
    else:
        folder, name = os.path.split(path)
        folder = folder or "."
        if name not in SINGLE + INDEXES and not _SHARD.fullmatch(name):
            return None
        if _SHARD.fullmatch(name) and not _index_for(folder, name):
            return None
    if not _weights(folder) or _architecture(_read_json(os.path.join(folder, CONFIG))) is None:
        return None
    return folder


def describe(folder: str) -> dict[str, Any]:
    """What :func:`build` would make of ``folder``, from its JSON alone.

    Keys: ``architecture`` (the class, or None: transformers' base model for ``model_type``),
    ``model_type``, ``kind`` (text encoder, causal LM, seq2seq, vision, audio, unknown),
    ``weights`` (the files transformers loads), ``inputs`` (the defaults, a list of
    {name, shape, dtype, values}, or None), ``no_default`` (why there are none, and what to
    configure), ``refused`` (why the folder cannot be built at all, whatever the inputs) and
    ``notes``.
    """
    config = _read_json(os.path.join(folder, CONFIG)) or {}
    architectures = config.get("architectures")
    arch = architectures[0] if isinstance(architectures, list) and architectures else None
    model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    out: dict[str, Any] = {
        "architecture": arch if isinstance(arch, str) else None,
        "model_type": model_type,
        "kind": UNKNOWN,
        "weights": _weights(folder),
        "inputs": None,
        "no_default": None,
        "refused": None,
        "notes": [],
    }
    out["refused"] = _refusal(config, out)
    out["kind"] = _kind(out["architecture"], config)
    if isinstance(architectures, list) and len(architectures) > 1:
        out["notes"].append(f"config.json names {len(architectures)} architectures; built {arch}")
    inputs, why = _defaults(out["kind"], config, folder, out["notes"])
    out["inputs"], out["no_default"] = inputs, why
    return out


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_JSON:
            return None
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(MAX_JSON).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _architecture(config: dict[str, Any] | None) -> str | None:
    if not config:
        return None
    arch = config.get("architectures")
    if isinstance(arch, list) and arch and isinstance(arch[0], str):
        return arch[0]
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) and model_type else None


def _weights(folder: str) -> list[str]:
    """The weight files transformers would load, in its order of preference: one
    safetensors file or index first, then the ``.bin`` ones."""
    for single, index in zip(SINGLE, INDEXES, strict=True):
        for name in (single, index):
            if os.path.isfile(os.path.join(folder, name)):
                return [name]
    return []


def _index_for(folder: str, shard: str) -> bool:
    index = INDEXES[0] if shard.endswith(".safetensors") else INDEXES[1]
    return os.path.isfile(os.path.join(folder, index))


def _refusal(config: dict[str, Any], out: dict[str, Any]) -> str | None:
    if not config:
        return f"{CONFIG} is missing or not a JSON object"
    if _has_auto_map(config):
        return (
            f"{CONFIG} has auto_map: the architecture is custom code shipped with the model "
            "(trust_remote_code), which modelgate never runs; give a build recipe in the "
            "config's models: instead"
        )
    arch = out["architecture"]
    if arch is not None and not _CLASS.fullmatch(arch):
        return f"{CONFIG} names architecture {arch[:80]!r}, which is not a transformers class"
    if arch is None and out["model_type"] is None:
        return f"{CONFIG} names no architecture (architectures or model_type)"
    if not out["weights"]:
        return "no weights beside config.json (model.safetensors, pytorch_model.bin or an index)"
    return None


def _has_auto_map(doc: Any, depth: int = 0) -> bool:
    """``auto_map`` anywhere: the top config, or a sub-config (text_config, vision_config)."""
    if depth > 8 or not isinstance(doc, dict):
        return False
    return "auto_map" in doc or any(_has_auto_map(v, depth + 1) for v in doc.values())


def _kind(arch: str | None, config: dict[str, Any]) -> str:
    if any(key in config for key in _AUDIO_KEYS):
        return AUDIO
    if arch:
        for kind, suffixes in _SUFFIXES:
            if arch.endswith(suffixes):
                return kind
    if "text_config" in config and "vision_config" in config:
        return UNKNOWN  # CLIP, vision-language models: text and images together
    if config.get("is_encoder_decoder"):
        return SEQ2SEQ
    if arch and arch.endswith("ForConditionalGeneration"):
        return UNKNOWN  # conditional generation that is not an encoder-decoder: multimodal
    if "vocab_size" in config:
        decoder = config.get("is_decoder") or any(k in config for k in _DECODER_KEYS)
        return CAUSAL if decoder else TEXT
    if "num_channels" in config or "image_size" in config:
        return VISION
    return UNKNOWN


def _defaults(
    kind: str, config: dict[str, Any], folder: str, notes: list[str]
) -> tuple[list[dict[str, Any]] | None, str | None]:
    if kind in (TEXT, CAUSAL, SEQ2SEQ):
        return _text_defaults(kind, config, notes)
    if kind == VISION:
        return _vision_defaults(config, folder, notes)
    if kind == AUDIO:
        return None, (
            "an audio model takes a clip whose length is the deployment's, which the config "
            f"does not say; {_FALLBACK_HINT} (input_features for Whisper-style models)"
        )
    return None, (
        "no default inputs for this kind of model (multimodal, video, or an architecture "
        "modelgate does not recognise); give the inputs in the config, e.g. inputs: "
        "[{name: input_ids, shape: [1, 128], dtype: int64}, {name: pixel_values, "
        "shape: [1, 3, 224, 224]}]"
    )


def _text_defaults(
    kind: str, config: dict[str, Any], notes: list[str]
) -> tuple[list[dict[str, Any]] | None, str | None]:
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 1:
        return None, f"{CONFIG} has no vocab_size to draw token ids from; give the inputs"
    limit = next((config[k] for k in _POSITION_KEYS if isinstance(config.get(k), int)), None)
    tokens = MAX_TOKENS
    if limit is not None:
        if config.get("model_type") in _PADDED_POSITIONS:
            limit -= int(config.get("pad_token_id") or 0) + 1
        tokens = max(1, min(MAX_TOKENS, limit))
    else:
        notes.append(f"{CONFIG} names no position limit; {MAX_TOKENS} tokens")
    start = config.get("decoder_start_token_id")
    names = ["input_ids", "attention_mask"] + (["decoder_input_ids"] if kind == SEQ2SEQ else [])
    inputs = [_spec(n, [1, tokens], "int64", _values(n, "int64", vocab, start)) for n in names]
    if kind == SEQ2SEQ:
        notes.append(
            "seq2seq: the whole encoder-decoder call with decoder ids of the same length; to "
            "check the encoder or one decoding step, give the inputs"
        )
    return inputs, None


def _vision_defaults(
    config: dict[str, Any], folder: str, notes: list[str]
) -> tuple[list[dict[str, Any]] | None, str | None]:
    size = _hw(config.get("image_size"))
    if size is None:
        pre = _read_json(os.path.join(folder, PREPROCESSOR)) or {}
        size = _hw(pre.get("crop_size")) or _hw(pre.get("size"))
        if size is not None:
            notes.append(f"image size {size[0]}x{size[1]} from {PREPROCESSOR}")
    if size is None:
        return None, (
            f"{CONFIG} names no image_size (nor {PREPROCESSOR} a size); give the inputs, e.g. "
            "inputs: [{name: pixel_values, shape: [1, 3, 224, 224]}]"
        )
    channels = config.get("num_channels", 3)
    channels = channels if isinstance(channels, int) and channels > 0 else 3
    return [
        _spec("pixel_values", [1, channels, *size], "float32", f"normal(0, 1), seed {SEED}")
    ], None


def _hw(value: Any) -> list[int] | None:
    """An image size as config and preprocessor files write it: 224, [224, 224],
    {"height": 224, "width": 224} or {"shortest_edge": 224}."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return [value, value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_hw(v) for v in value):
        return [int(value[0]), int(value[1])]
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return _hw([value["height"], value["width"]])
        return _hw(value.get("shortest_edge"))
    return None


def _spec(name: str, shape: list[int], dtype: str, values: str) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype, "values": values}


# ---- the child's side: torch and transformers ---------------------------------------------


def _values(name: str, dtype: str, vocab: Any, start: Any) -> str:
    """How an input's values are drawn (what :func:`_tensors` makes, and what the report says)."""
    if name.endswith("_mask"):
        return "ones"
    if name in ("token_type_ids",):
        return "zeros"
    if name == "position_ids":
        return "0, 1, 2, ..."
    if name.endswith("_ids") and isinstance(vocab, int):
        first = ""
        if name == "decoder_input_ids" and isinstance(start, int):
            first = f", the first {start} (decoder_start_token_id)"
        return f"token ids in [0, {vocab}), seed {SEED}{first}"
    if dtype.startswith(("float", "bfloat")):
        return f"normal(0, 1), seed {SEED}"
    return "zeros"
