"""Conversion, compression and measurement checks: what a model costs on the device.

:mod:`settings` says what to run (config and CLI), :mod:`pipeline` runs it for one model in
child processes (:mod:`isolate`) and stores the results on the graph view, where the rules
(MG101-MG107) and :mod:`figures` read them. The child-side work is each target's ``step``
(``targets/``) on what :mod:`steps` loads, with the targets' helpers (:mod:`coreml`,
:mod:`compress`, :mod:`weightmap`, :mod:`onnx_export`, :mod:`onnx_inputs`), the error
wording in :mod:`errors`, and the numbers in :mod:`measure` (numpy only) and
:mod:`graphstats` (no dependency at all). Nothing heavy is imported until a child needs it.
"""
