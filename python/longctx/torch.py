"""longctx.torch: the hybrid-attention kernel as a ``torch.autograd.Function`` whose forward and
backward are longctx's C++ ones (attention/src/hybrid_attention.cpp, attention_backward.cpp).

The kernels compute in float32. Inputs of another float dtype are copied to float32 for the call
and the results cast back to the input's dtype, so float64 inputs work (``gradcheck`` runs) but
carry float32 precision: check them with float32-sized tolerances (docs/python.md, "Precision").
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch

from . import _core
from ._arrays import check_shapes, describe, positions

__all__ = ["HybridAttention", "hybrid_attention"]


class HybridAttention(torch.autograd.Function):
    """``HybridAttention.apply(q, k, v, globals, window, fusion, causal, scale, threads)``
    -> ``(out, lse)``.

    q ``[n, H, d]`` or ``[batch, n, H, d]``, k/v ``[.., n, Hkv, d]`` (CPU tensors, float32 /
    float16 / bfloat16 / float64); the other arguments as in ``longctx.attention``. ``out`` has
    q's dtype and is differentiable with respect to q, k and v; ``lse`` (float32 log-sum-exp) is
    not differentiable. Token-major float32 inputs are read in place (no copy).
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                globals: Optional[Sequence[int]] = None, window: int = 64,
                fusion: str = "union", causal: bool = True, scale: Optional[float] = None,
                threads: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        g = positions(globals)
        (dq, _), (dk, _), (dv, _) = describe(q, "q"), describe(k, "k"), describe(v, "v")
        check_shapes(dq[2], dk[2], dv[2])
        out = torch.empty(q.shape, dtype=torch.float32)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32)
        args = (g, int(window), str(fusion), bool(causal), 0.0 if scale is None else float(scale),
                int(threads))
        _core.attention(dq, dk, dv, *args, out.data_ptr(), lse.data_ptr())
        ctx.args = args
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)
        return (out if q.dtype == torch.float32 else out.to(q.dtype)), lse

    @staticmethod
    def backward(ctx: Any, dout: Optional[torch.Tensor], _dlse: Optional[torch.Tensor]):
        q, k, v, out, lse = ctx.saved_tensors
        nones = (None,) * 6
        if dout is None or not any(ctx.needs_input_grad[:3]):
            return (None, None, None) + nones
        dq = torch.zeros(q.shape, dtype=torch.float32)
        dk = torch.zeros(k.shape, dtype=torch.float32)
        dv = torch.zeros(v.shape, dtype=torch.float32)
        (d_q, _), (d_k, _), (d_v, _) = describe(q, "q"), describe(k, "k"), describe(v, "v")
        d_out, _ = describe(dout, "dout")
        _core.attention_backward(d_q, d_k, d_v, *ctx.args, out.data_ptr(), lse.data_ptr(), d_out,
                                 dq.data_ptr(), dk.data_ptr(), dv.data_ptr())
        return (dq.to(q.dtype) if ctx.needs_input_grad[0] else None,
                dk.to(k.dtype) if ctx.needs_input_grad[1] else None,
                dv.to(v.dtype) if ctx.needs_input_grad[2] else None) + nones


def hybrid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     globals: Optional[Sequence[int]] = None, window: int = 64,
                     fusion: str = "union", causal: bool = True, scale: Optional[float] = None,
                     threads: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``HybridAttention.apply`` with keyword arguments: returns ``(out, lse)``."""
    return HybridAttention.apply(q, k, v, globals, window, fusion, causal, scale, threads)
