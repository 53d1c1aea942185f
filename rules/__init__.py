"""Every check modelgate makes, one module per rule, registered here explicitly."""

from __future__ import annotations

from modelgate.registry import Registry

from . import (
    mg001_oversized_linear,
    mg002_fp16_batchnorm,
    mg003_unsupported_op,
    mg004_dropout_in_eval,
    mg005_dynamic_shape,
    mg006_adaptive_pool_expansion,
    mg007_fp64_weights,
    mg101_coreml_conversion_failed,
    mg102_onnx_export_failed,
    mg103_compression_skipped_layers,
    mg104_unreliable_measurement,
    mg105_compression_failed,
    mg106_check_not_run,
    mg107_conversion_failed,
    mg108_missing_runtime_kernel,
    mg109_not_delegated,
    mg110_ep_coverage,
    mg111_recipe_mismatch,
    mg112_build_failed,
    mg301_size_budget,
    mg302_latency_budget,
    mg303_drift_budget,
    mg304_budget_unmeasured,
    mg901_unsafe_pickle,
    mg902_unreadable_model,
    mg903_native_code,
    mg904_weights_only_globals,
)

REGISTRY = Registry(
    [
        mg001_oversized_linear,
        mg002_fp16_batchnorm,
        mg003_unsupported_op,
        mg004_dropout_in_eval,
        mg005_dynamic_shape,
        mg006_adaptive_pool_expansion,
        mg007_fp64_weights,
        mg101_coreml_conversion_failed,
        mg102_onnx_export_failed,
        mg103_compression_skipped_layers,
        mg104_unreliable_measurement,
        mg105_compression_failed,
        mg106_check_not_run,
        mg107_conversion_failed,
        mg108_missing_runtime_kernel,
        mg109_not_delegated,
        mg110_ep_coverage,
        mg111_recipe_mismatch,
        mg112_build_failed,
        mg301_size_budget,
        mg302_latency_budget,
        mg303_drift_budget,
        mg304_budget_unmeasured,
        mg901_unsafe_pickle,
        mg902_unreadable_model,
        mg903_native_code,
        mg904_weights_only_globals,
    ]
)
