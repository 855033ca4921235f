"""Peer test suite: ONNX's own backend node tests, run through frontend + reference executor.

Every case whose ops are all claimed (`compiler.ops.SUPPORTED_ONNX_OPS`, plus `Constant`,
which the frontend lifts) is run; outputs must match ONNX's reference outputs with the
tolerances ONNX's backend runner uses (rtol 1e-3, atol 1e-7) and the same dtype. A claimed op
may refuse a variant only with a clean ModelError listed in KNOWN_UNSUPPORTED (with the
reason); anything else is a failure of that op. Per-op pass/unsupported/fail counts are
printed in the terminal summary.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import load
from compiler.ops import SUPPORTED_ONNX_OPS
from tests.compiler.onnx_backend_data import BackendCase, load_cases
from tests.conftest import BACKEND_REPORT

FRONTEND_OPS = frozenset({"Constant"})
# float inputs that define shapes or sampling grids (edgesim needs them constant)
SHAPE_INPUTS = {"Resize": (1, 2, 3), "Range": (0, 1, 2)}

# case name -> why edgesim refuses it (a clean ModelError is expected, not a wrong answer)
KNOWN_UNSUPPORTED: dict[str, str] = {
    **dict.fromkeys([  # 154 cases
        "test_cast_BFLOAT16_to_FLOAT", "test_cast_FLOAT16_to_FLOAT4E2M1",
        "test_cast_FLOAT16_to_FLOAT8E4M3FN", "test_cast_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_cast_FLOAT16_to_FLOAT8E5M2", "test_cast_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_cast_FLOAT16_to_INT2", "test_cast_FLOAT16_to_INT4", "test_cast_FLOAT16_to_UINT2",
        "test_cast_FLOAT16_to_UINT4", "test_cast_FLOAT4E2M1_to_FLOAT",
        "test_cast_FLOAT4E2M1_to_FLOAT16", "test_cast_FLOAT8E4M3FNUZ_to_FLOAT",
        "test_cast_FLOAT8E4M3FNUZ_to_FLOAT16", "test_cast_FLOAT8E4M3FN_to_FLOAT",
        "test_cast_FLOAT8E4M3FN_to_FLOAT16", "test_cast_FLOAT8E5M2FNUZ_to_FLOAT",
        "test_cast_FLOAT8E5M2FNUZ_to_FLOAT16", "test_cast_FLOAT8E5M2_to_FLOAT",
        "test_cast_FLOAT8E5M2_to_FLOAT16", "test_cast_FLOAT_to_BFLOAT16",
        "test_cast_FLOAT_to_FLOAT4E2M1", "test_cast_FLOAT_to_FLOAT8E4M3FN",
        "test_cast_FLOAT_to_FLOAT8E4M3FNUZ", "test_cast_FLOAT_to_FLOAT8E5M2",
        "test_cast_FLOAT_to_FLOAT8E5M2FNUZ", "test_cast_FLOAT_to_INT2", "test_cast_FLOAT_to_INT4",
        "test_cast_FLOAT_to_UINT2", "test_cast_FLOAT_to_UINT4", "test_cast_INT2_to_FLOAT",
        "test_cast_INT2_to_FLOAT16", "test_cast_INT2_to_INT8", "test_cast_INT4_to_FLOAT",
        "test_cast_INT4_to_FLOAT16", "test_cast_INT4_to_INT8", "test_cast_UINT2_to_FLOAT",
        "test_cast_UINT2_to_FLOAT16", "test_cast_UINT2_to_UINT8", "test_cast_UINT4_to_FLOAT",
        "test_cast_UINT4_to_FLOAT16", "test_cast_UINT4_to_UINT8",
        "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0", "test_cast_e8m0_FLOAT8E8M0_to_FLOAT",
        "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16", "test_cast_e8m0_FLOAT_to_FLOAT8E8M0",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ", "test_castlike_BFLOAT16_to_FLOAT",
        "test_castlike_BFLOAT16_to_FLOAT_expanded", "test_castlike_FLOAT16_to_FLOAT4E2M1",
        "test_castlike_FLOAT16_to_FLOAT4E2M1_expanded", "test_castlike_FLOAT16_to_FLOAT8E4M3FN",
        "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded", "test_castlike_FLOAT16_to_FLOAT8E5M2",
        "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E5M2_expanded", "test_castlike_FLOAT16_to_INT2",
        "test_castlike_FLOAT16_to_INT2_expanded", "test_castlike_FLOAT16_to_INT4",
        "test_castlike_FLOAT16_to_INT4_expanded", "test_castlike_FLOAT16_to_UINT2",
        "test_castlike_FLOAT16_to_UINT2_expanded", "test_castlike_FLOAT16_to_UINT4",
        "test_castlike_FLOAT16_to_UINT4_expanded", "test_castlike_FLOAT4E2M1_to_FLOAT",
        "test_castlike_FLOAT4E2M1_to_FLOAT16", "test_castlike_FLOAT4E2M1_to_FLOAT16_expanded",
        "test_castlike_FLOAT4E2M1_to_FLOAT_expanded", "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT",
        "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16",
        "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded", "test_castlike_FLOAT8E4M3FN_to_FLOAT",
        "test_castlike_FLOAT8E4M3FN_to_FLOAT16", "test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded", "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT",
        "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16",
        "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded", "test_castlike_FLOAT8E5M2_to_FLOAT",
        "test_castlike_FLOAT8E5M2_to_FLOAT16", "test_castlike_FLOAT8E5M2_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E5M2_to_FLOAT_expanded", "test_castlike_FLOAT_to_BFLOAT16",
        "test_castlike_FLOAT_to_BFLOAT16_expanded", "test_castlike_FLOAT_to_FLOAT4E2M1",
        "test_castlike_FLOAT_to_FLOAT4E2M1_expanded", "test_castlike_FLOAT_to_FLOAT8E4M3FN",
        "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ", "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded", "test_castlike_FLOAT_to_FLOAT8E5M2",
        "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ", "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_FLOAT_to_FLOAT8E5M2_expanded", "test_castlike_FLOAT_to_INT2",
        "test_castlike_FLOAT_to_INT2_expanded", "test_castlike_FLOAT_to_INT4",
        "test_castlike_FLOAT_to_INT4_expanded", "test_castlike_FLOAT_to_UINT2",
        "test_castlike_FLOAT_to_UINT2_expanded", "test_castlike_FLOAT_to_UINT4",
        "test_castlike_FLOAT_to_UINT4_expanded", "test_castlike_INT2_to_FLOAT",
        "test_castlike_INT2_to_FLOAT16", "test_castlike_INT2_to_FLOAT16_expanded",
        "test_castlike_INT2_to_FLOAT_expanded", "test_castlike_INT2_to_INT8",
        "test_castlike_INT2_to_INT8_expanded", "test_castlike_INT4_to_FLOAT",
        "test_castlike_INT4_to_FLOAT16", "test_castlike_INT4_to_FLOAT16_expanded",
        "test_castlike_INT4_to_FLOAT_expanded", "test_castlike_INT4_to_INT8",
        "test_castlike_INT4_to_INT8_expanded", "test_castlike_UINT2_to_FLOAT",
        "test_castlike_UINT2_to_FLOAT16", "test_castlike_UINT2_to_FLOAT16_expanded",
        "test_castlike_UINT2_to_FLOAT_expanded", "test_castlike_UINT2_to_UINT8",
        "test_castlike_UINT2_to_UINT8_expanded", "test_castlike_UINT4_to_FLOAT",
        "test_castlike_UINT4_to_FLOAT16", "test_castlike_UINT4_to_FLOAT16_expanded",
        "test_castlike_UINT4_to_FLOAT_expanded", "test_castlike_UINT4_to_UINT8",
        "test_castlike_UINT4_to_UINT8_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded",
    ], "Cast/CastLike to or from float8, float4, int4/int2/uint4/uint2 or bfloat16: "
       "numpy has no such dtype"),
    **dict.fromkeys([  # 17 cases
        "test_resize_downsample_scales_cubic",
        "test_resize_downsample_scales_cubic_A_n0p5_exclude_outside",
        "test_resize_downsample_scales_cubic_align_corners",
        "test_resize_downsample_scales_cubic_antialias",
        "test_resize_downsample_scales_linear_antialias", "test_resize_downsample_sizes_cubic",
        "test_resize_downsample_sizes_cubic_antialias",
        "test_resize_downsample_sizes_linear_antialias", "test_resize_tf_crop_and_resize",
        "test_resize_tf_crop_and_resize_axes_2_3", "test_resize_tf_crop_and_resize_axes_3_2",
        "test_resize_tf_crop_and_resize_extrapolation_value", "test_resize_upsample_scales_cubic",
        "test_resize_upsample_scales_cubic_A_n0p5_exclude_outside",
        "test_resize_upsample_scales_cubic_align_corners",
        "test_resize_upsample_scales_cubic_asymmetric", "test_resize_upsample_sizes_cubic",
    ], 'Resize cubic, tf_crop_and_resize and antialiased downsampling are not implemented'),
    **dict.fromkeys([  # 8 cases
        "test_batchnorm_epsilon_training_mode", "test_batchnorm_example_training_mode",
        "test_training_dropout", "test_training_dropout_default",
        "test_training_dropout_default_mask", "test_training_dropout_mask",
        "test_training_dropout_zero_ratio", "test_training_dropout_zero_ratio_mask",
    ], 'training mode (random Dropout, batch-statistics BatchNormalization) is not inference'),
    **dict.fromkeys([  # 2 cases
        "test_maxpool_with_argmax_2d_precomputed_pads",
        "test_maxpool_with_argmax_2d_precomputed_strides",
    ], "MaxPool's Indices output is not supported"),
    **dict.fromkeys([  # 2 cases
        "test_equal_string", "test_equal_string_broadcast",
    ], 'string tensors are not numeric'),
    **dict.fromkeys([  # 14 cases
        f"test_attention_{r}_with_{p}qk_matmul{x}"
        for r, p, x in [("3d", "past_and_present_", ""), ("3d", "past_and_present_", "_bias"),
                        ("3d", "past_and_present_", "_softcap"),
                        ("3d", "past_and_present_", "_softmax"),
                        ("4d", "past_and_present_", ""), ("4d", "past_and_present_", "_bias"),
                        ("4d", "past_and_present_", "_bias_3d_mask"),
                        ("4d", "past_and_present_", "_bias_3d_mask_causal"),
                        ("4d", "past_and_present_", "_bias_4d_mask"),
                        ("4d", "past_and_present_", "_bias_4d_mask_causal"),
                        ("4d", "", ""), ("4d", "", "_bias"), ("4d", "", "_softcap"),
                        ("4d", "", "_softmax")]
    ], "Attention's qk_matmul_output (a debugging output of the scores) is not supported"),
    "test_attention_4d_diff_heads_mask4d_padded_kv":
        "Attention's nonpad_kv_seqlen (opset 24 external KV cache) is not supported",
}


def _pinned(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple:
    """The backend tests feed axes, shapes and sizes as graph inputs; edgesim lowers models with
    static shapes, so integer/bool inputs and SHAPE_INPUTS become initializers with the test's
    values (the op still computes on them: they fold through the same forward rules)."""
    shape_inputs = {n.input[i] for n in model.graph.node
                    for i in SHAPE_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    pinned = {k: v for k, v in feeds.items() if v.dtype.kind in "iub" or k in shape_inputs}
    if not pinned:
        return model, feeds
    model = copy.deepcopy(model)
    kept = [vi for vi in model.graph.input if vi.name not in pinned]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in pinned.items())
    model.ir_version = max(model.ir_version, 4)  # IR < 4 wants every initializer as an input
    return model, {k: v for k, v in feeds.items() if k not in pinned}


def _run_case(case: BackendCase) -> tuple[str, str]:
    try:
        for all_feeds, refs in case.data_sets:
            model, feeds = _pinned(case.model, all_feeds)
            graph = load(model, {k: v.shape for k, v in feeds.items()})
            outs = run(graph, feeds)
            for name, ref in zip(graph.outputs, refs):
                got = outs[name]
                assert got.dtype == ref.dtype, f"{name}: dtype {got.dtype}, expected {ref.dtype}"
                np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-7, err_msg=name)
    except ModelError as e:
        if case.name in KNOWN_UNSUPPORTED:
            return "unsupported", str(e)
        return "fail", f"ModelError: {e}"
    except Exception as e:  # noqa: BLE001 - every other outcome is a failure to report
        return "fail", f"{type(e).__name__}: {str(e)[:300]}"
    if case.name in KNOWN_UNSUPPORTED:
        return "fail", "listed in KNOWN_UNSUPPORTED but passes: remove it from the list"
    return "pass", ""


@pytest.fixture(scope="session")
def backend_results(request: pytest.FixtureRequest) -> dict[str, tuple[frozenset, str, str]]:
    claimed = set(SUPPORTED_ONNX_OPS) | FRONTEND_OPS
    results = {c.name: (c.op_types, *_run_case(c))
               for c in load_cases() if c.op_types <= claimed}
    counts = {op: [0, 0, 0] for op in SUPPORTED_ONNX_OPS}
    for ops, status, _ in results.values():
        for op in ops & set(counts):
            counts[op][("pass", "unsupported", "fail").index(status)] += 1
    request.config.stash[BACKEND_REPORT] = counts
    return results


@pytest.mark.parametrize("op_type", SUPPORTED_ONNX_OPS)
def test_claimed_op_passes_onnx_backend_cases(op_type: str, backend_results: dict) -> None:
    mine = {n: r for n, r in backend_results.items() if op_type in r[0]}
    failures = [f"{n}: {msg}" for n, (_, status, msg) in sorted(mine.items()) if status == "fail"]
    assert not failures, f"{len(failures)}/{len(mine)} cases fail:\n" + "\n".join(failures)


def test_every_claimed_op_has_backend_cases(backend_results: dict) -> None:
    covered = {op for ops, _, _ in backend_results.values() for op in ops}
    untested = sorted(set(SUPPORTED_ONNX_OPS) - covered)
    # ops with no runnable case here are tested by their own CASES tables; list them honestly
    assert len(untested) <= len(SUPPORTED_ONNX_OPS) // 4, f"no backend cases for {untested}"
