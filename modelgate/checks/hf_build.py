"""Hugging Face folders, the child's side: the model built with transformers, offline.

:func:`build` imports torch and transformers, builds the model from the class that
``config.json`` names (transformers' own classes only: a config that points at custom code,
``auto_map``, is refused and nothing from the folder runs), loads the weights (safetensors,
or ``torch.load(weights_only=True)`` for ``.bin``, which modelgate has scanned first) and
makes the inputs :mod:`modelgate.checks.hf_folder` chose. :mod:`modelgate.checks.build`
exports what it returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from modelgate.checks.hf_folder import (
    CAUSAL,
    CONFIG,
    SEED,
    SEQ2SEQ,
    BuildRefused,
    _spec,
    _values,
    describe,
)


@dataclass
class Built:
    """What :func:`build` hands to the export: ``module(*args, **kwargs)`` is the call.
    The inputs are positional while they are ``forward``'s first parameters in order (as
    modelgate runs an exported program: positionally); any after a gap are keywords."""

    module: Any  # the transformers model, in eval mode
    args: tuple[Any, ...]
    kwargs: dict[str, Any]  # input name -> tensor
    inputs_used: list[dict[str, Any]]  # {name, shape, dtype, values}, in forward's order
    missing: list[str] = field(default_factory=list)  # model tensors the weights lack
    unexpected: list[str] = field(default_factory=list)  # weights the model has no place for
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint [..], model [..]"
    notes: list[str] = field(default_factory=list)  # what was set and chosen, for the report


def build(folder: str, inputs: list[tuple[str, tuple[int, ...], str]] | None = None) -> Built:
    """Build the model ``folder`` describes, load its weights and make its inputs.

    ``inputs`` (name, shape, dtype) replaces the defaults entirely: those are the inputs
    used, each a parameter of the model's ``forward``. Raises :class:`BuildRefused`.
    """
    info = describe(folder)
    if info["refused"]:
        raise BuildRefused(info["refused"])
    if inputs is None and info["inputs"] is None:
        raise BuildRefused(info["no_default"])
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants
        import torch
        import transformers
    except ImportError as exc:
        raise BuildRefused(
            f"building a Hugging Face folder needs transformers ({exc.name} is not installed): "
            "pip install 'modelgate-lint[hf]'"
        ) from None
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import, maybe before the line above
    transformers.utils.logging.disable_progress_bar()
    notes = list(info["notes"])
    cls = _model_class(transformers, info)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BuildRefused(f"transformers could not read {CONFIG}: {_line(exc)}") from None
    stored = str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")
    if stored != "float32":
        notes.append(f"the weights are stored as {stored}; built in float32")
    cache = bool(getattr(config, "use_cache", None))
    if cache:
        config.use_cache = False  # before the build: some models copy the config at init (T5)
    try:
        model, loading = cls.from_pretrained(
            folder, config=config, local_files_only=True, output_loading_info=True,
            ignore_mismatched_sizes=True, dtype=torch.float32,
        )  # fmt: skip
    except (OSError, ValueError, RuntimeError) as exc:
        raise BuildRefused(f"transformers could not load {folder}: {_line(exc)}") from None
    model.eval()
    notes += _export_friendly(model, info["kind"], cache)
    notes.append(f"{cls.__name__} from transformers {transformers.__version__}, float32, "
                 f"attention {getattr(model.config, '_attn_implementation', None)}")  # fmt: skip
    given = [(s["name"], tuple(s["shape"]), s["dtype"]) for s in info["inputs"] or ()]
    specs, params = _given(given if inputs is None else inputs, model, notes)
    tensors = _tensors(torch, specs, model.config)
    lead = 0  # positional while the inputs are forward's first parameters, in order
    while lead < len(specs) and specs[lead]["name"] == params[lead]:
        lead += 1
    return Built(
        module=model,
        args=tuple(tensors[s["name"]] for s in specs[:lead]),
        kwargs={s["name"]: tensors[s["name"]] for s in specs[lead:]},
        inputs_used=specs,
        missing=sorted(loading.get("missing_keys") or ()),
        unexpected=sorted(loading.get("unexpected_keys") or ()),
        mismatched=sorted(
            f"{key}: checkpoint {list(ckpt)}, model {list(mine)}"
            for key, ckpt, mine in loading.get("mismatched_keys") or ()
        ),
        notes=notes,
    )


def _model_class(transformers: Any, info: dict[str, Any]) -> Any:
    """The class config.json names, from transformers itself (its lazy top-level names),
    or transformers' base model for the model_type; never code from the folder."""
    name = info["architecture"]
    if name is None:
        from transformers.models.auto import modeling_auto

        name = modeling_auto.MODEL_MAPPING_NAMES.get(info["model_type"])
        if not isinstance(name, str):
            raise BuildRefused(
                f"transformers {transformers.__version__} knows no model_type "
                f"{info['model_type']!r}"
            )
    try:
        cls = getattr(transformers, name)
    except (AttributeError, ImportError, RuntimeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise BuildRefused(
            f"transformers {transformers.__version__} has no model class {name!r} (config.json "
            "architectures); modelgate builds transformers' own classes only"
        )
    return cls


def _export_friendly(model: Any, kind: str, cache: bool) -> list[str]:
    """What users set before torch.export: no KV cache, tensors out. ``return_dict=False`` is
    set on the outer model's own copy of the config: transformers 5 heads read their inner
    model's outputs by attribute, so the inner model must keep returning them."""
    import copy

    notes = []
    if cache:
        for module in model.modules():  # and any config copied in a submodule
            if getattr(getattr(module, "config", None), "use_cache", None):
                module.config.use_cache = False
        what = "in or out: the prefill call" if kind in (CAUSAL, SEQ2SEQ) else "outputs"
        notes.append(f"use_cache=False: no KV cache {what}")
    model.config = copy.copy(model.config)
    model.config.return_dict = False
    notes.append("return_dict=False: the outputs are a tuple of tensors")
    return notes


def _given(
    inputs: list[tuple[str, tuple[int, ...], str]], model: Any, notes: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The inputs checked against ``forward``'s parameters and put in its order; and those."""
    import inspect

    params = [
        p.name
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    vocab = getattr(model.config, "vocab_size", None)
    start = getattr(model.config, "decoder_start_token_id", None)
    specs = []
    if not inputs:
        raise BuildRefused("no inputs given: the model needs at least one")
    for name, shape, dtype in inputs:
        if not name:
            raise BuildRefused(
                f"an input of shape {list(shape)} has no name: give each input the name of a "
                f"{type(model).__name__}.forward argument"
            )
        if name not in params:
            raise BuildRefused(
                f"input {name!r} is not an argument of {type(model).__name__}.forward, which "
                f"takes {', '.join(params)}"
            )
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
            raise BuildRefused(f"input {name!r}: shape {list(shape)} needs positive sizes")
        if name.endswith(("_ids", "_mask")) and not dtype.startswith("int"):
            notes.append(f"{name}: given as {dtype}, built as int64 (token ids and masks are)")
            dtype = "int64"
        if any(s["name"] == name for s in specs):
            raise BuildRefused(f"input {name!r} is given twice")
        specs.append(_spec(name, list(shape), dtype, _values(name, dtype, vocab, start)))
    return sorted(specs, key=lambda s: params.index(s["name"])), params


def _tensors(torch: Any, specs: list[dict[str, Any]], config: Any) -> dict[str, Any]:
    """The tensor of each input, as its ``values`` says: seeded, token ids within the
    vocabulary and not the padding id, the decoder's first id its start token."""
    generator = torch.Generator().manual_seed(SEED)
    vocab = getattr(config, "vocab_size", None)
    pad = getattr(config, "pad_token_id", None)
    out = {}
    for spec in specs:
        shape, values = tuple(spec["shape"]), spec["values"]
        dtype = getattr(torch, spec["dtype"])
        if values.startswith("token ids"):
            skip = isinstance(pad, int) and 0 <= pad < vocab and vocab > 1
            t = torch.randint(0, vocab - skip, shape, generator=generator)
            if skip:
                t = t + (t >= pad).long()  # every id but the padding one
            start = getattr(config, "decoder_start_token_id", None)
            if spec["name"] == "decoder_input_ids" and isinstance(start, int):
                t[..., 0] = start
            t = t.to(dtype)
        elif values == "ones":
            t = torch.ones(shape, dtype=dtype)
        elif values.startswith("0, 1"):
            t = torch.arange(shape[-1]).expand(shape).to(dtype).contiguous()
        elif values.startswith("normal"):
            t = torch.randn(shape, generator=generator).to(dtype)
        else:
            t = torch.zeros(shape, dtype=dtype)
        out[spec["name"]] = t
    return out


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
