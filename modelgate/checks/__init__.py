"""Conversion, compression and measurement checks: what a model costs on the device.

:mod:`settings` says what to run (config and CLI), :mod:`pipeline` runs it for one model in
child processes (:mod:`isolate`) and stores the results on the graph view, where the rules
(MG101-MG105) and the metrics read them. The child-side work lives in :mod:`steps` (shared),
:mod:`coreml_step` and :mod:`onnx_step`, with their helpers (:mod:`coreml`, :mod:`compress`,
:mod:`weightmap`, :mod:`onnx_export`); the numbers in :mod:`measure` (numpy only) and
:mod:`graphstats` (no dependency at all). Nothing heavy is imported until a child needs it.
"""
