"""The fused fast path's prepacked matmul runs at a bounded set of row counts, and padding changes no row."""

import pytest
import torch
from torch import nn

from tuneforge.serve.engine.fused import FusedLinear, padded_rows


def test_row_counts_are_bounded_and_padding_is_at_most_an_eighth():
    assert [padded_rows(r) for r in (1, 16, 17, 33, 100, 300, 512)] == [1, 16, 18, 36, 104, 320, 512]
    assert all(rows <= padded_rows(rows) <= rows * 9 // 8 for rows in range(1, 4097))
    assert len({padded_rows(rows) for rows in range(1, 513)}) == 56  # oneDNN primitives per weight shape


def test_padded_bf16_matmul_returns_the_unpadded_rows_bit_for_bit():
    torch.manual_seed(0)
    linear = nn.Linear(64, 96, bias=False).to(torch.bfloat16)
    fused = FusedLinear([linear])
    if fused.packed is None:
        pytest.skip("no oneDNN prepacked bf16 matmul on this build")
    x = torch.randn(37, 64, dtype=torch.bfloat16)  # runs at 40 rows
    with torch.inference_mode():
        got = fused(x)
        unpadded = torch.ops.mkldnn._linear_pointwise(x, fused.packed, None, "none", [], "")
    assert got.shape == (37, 96)
    assert torch.equal(got, unpadded)


def test_padding_leaves_an_attached_lora_update_on_the_real_rows():
    """A LoRA kept beside a prepacked bf16 weight is applied to the rows asked for (not the padded ones)."""
    from tuneforge.models.lora import _lora_hook

    torch.manual_seed(0)
    linear = nn.Linear(64, 96, bias=False).to(torch.bfloat16)
    linear.lora_update = (torch.randn(4, 64), torch.randn(96, 4) * 0.1)
    linear.register_forward_hook(_lora_hook)
    x = torch.randn(17, 64, dtype=torch.bfloat16)  # runs at 18 rows
    with torch.inference_mode():
        want = linear(x)
        fused = FusedLinear([linear])
        if fused.packed is None:
            pytest.skip("no oneDNN prepacked bf16 matmul on this build")
        got = fused(x)
    assert got.shape == (17, 96)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
