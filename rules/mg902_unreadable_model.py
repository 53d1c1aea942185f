"""The file cannot be read as a model.

## What it does
Reports a file modelgate cannot read, with a one-line reason: empty, truncated, random
bytes, a git-lfs pointer instead of the model, a zip bomb or absurd sizes, a safetensors
header whose offsets do not match its data, ONNX external data outside the model's folder
or shorter than its tensor, an ONNX graph ONNX Runtime refuses to build (a node cycle, a
value that nothing or two nodes define), a truncated ONNX protobuf,
a zip that PyTorch and Python would read as two different archives, a sharded checkpoint
whose index and shards disagree (or a shard is missing), a FIFO, device or socket (refused
without opening it), a NumPy `.npy` / `.npz` whose header or data is malformed or truncated, a
joblib stream that `joblib.load` could not follow either (or that decompresses past 8 GB), a
legacy `.tar` torch.save file with a member missing or a link where a file must be, a
container modelgate does not read (7-Zip, GGUF, HDF5, a gzip or a zip or a tar that holds no
model), or a file that is no model at all. Training state (optimizer, scheduler, RNG state,
Trainer arguments) is not "no model": it is scanned and reported as training state; tensors in
a list, a tuple or any other container are weights (format `tensor_container`), and a pickle
is "not a model" only when it holds no tensor at all. Formats that carry pickles (NumPy object
arrays, joblib, legacy `.tar`) are read and their pickles scanned (MG901), not refused here.
A model whose check crashed a reader or ran past the time limit (`timeout:`) is reported here
too.

## Why is this bad?
What modelgate cannot read, a converter or `torch.load` cannot either, usually with a far
worse message and sometimes only on the device. A git-lfs pointer in particular means CI
checked out a 130-byte text file instead of the model.

## Example
```text
version https://git-lfs.github.com/spec/v1
oid sha256:4d7a...
size 4812873401
```

## Use instead
Commit the real file (`git lfs pull` locally; `lfs: true` in `actions/checkout`), re-export
a truncated file, and keep ONNX external data next to the model.

## Options
None.

## References
- Git LFS, https://git-lfs.com
- safetensors format, https://github.com/huggingface/safetensors#format
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph

ID = "MG902"
NAME = "unreadable-model"
SEVERITY = "error"
NEEDS = "file"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    if graph.unreadable is None:
        return
    hint = graph.metadata.get("unreadable_hint")
    yield Problem(
        graph.unreadable,
        Location(graph.path, member=graph.unreadable_member),
        fix=hint,
        key="unreadable",
    )
