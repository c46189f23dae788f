#!/usr/bin/python3
"""longctx.torch.HybridAttention (CTest `python_torch`, label reference: needs python3-torch):

- forward over torch tensors equals longctx.attention on the same numpy arrays (bitwise) and the
  float64 reference; float32 tensors, bfloat16 tensors and q/k/v sliced from one fused projection
  are read in place (longctx.staged_copies() does not move);
- the C++ backward against an independent float64 torch-autograd reference (dense masks written
  from DESIGN.md §1): relative L2 error of dq, dk, dv <= 1e-5 (the bound the C++ unit tests use),
  both fusions, causal and bidirectional, grouped-query heads, a batch axis;
- torch.autograd.gradcheck in float64. The kernels compute in float32 (attention_backward.h:
  f32 only), so a float64 input is rounded to float32 inside: gradcheck's default eps = 1e-6
  would be below float32 resolution. It runs with eps = 1e-3 (central differences; truncation
  error ~eps^2) and atol = rtol = 2e-3, which float32 rounding (~1e-7 relative / 1e-3 step
  = ~1e-4) meets and a wrong gradient (a missing term, a wrong key set, a transposed head)
  does not: the test also checks that a deliberately wrong backward FAILS the same gradcheck;
- a non-contiguous (broadcast) grad_output, gradients for q only, and bad input -> longctx.Error.
"""

import numpy as np
import torch

import longctx
import longctx.torch as lt
from pylongctx_testlib import LSE_TOL, OUT_TOL, LongctxTestCase, main, masks, max_lse_error, max_rel_error, reference

torch.manual_seed(0)


def torch_reference(q, k, v, globals_=(), window=64, fusion="union", causal=True, scale=None):
    """Float64 autograd-able hybrid attention of q [n, H, d], k/v [n, Hkv, d] (dense masks)."""
    n, H, d = q.shape
    group = H // k.shape[1]
    scale = 1.0 / d ** 0.5 if scale is None else scale
    win, glob, union = (torch.from_numpy(m) for m in masks(n, globals_, window, causal))
    kk = k.repeat_interleave(group, dim=1)  # [n, H, d]
    vv = v.repeat_interleave(group, dim=1)
    s = scale * torch.einsum("ihc,jhc->hij", q, kk)  # [H, n, n]

    def attend(mask):
        m = s.masked_fill(~mask, -1e300)  # finite, so an empty row's (unused) softmax is finite
        p = torch.softmax(m, dim=-1) * mask
        return torch.einsum("hij,jhc->ihc", p, vv)

    if fusion == "union":
        return attend(union)
    a = float(fusion.split(":")[1])
    has = glob.any(dim=1)[:, None, None]
    return torch.where(has, a * attend(win) + (1 - a) * attend(glob), attend(win))


def rel_l2(a, b):
    return float((a.double() - b.double()).norm() / max(float(b.double().norm()), 1e-30))


def inputs(n=60, H=4, Hkv=2, d=8, dtype=torch.float32, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    mk = lambda h: torch.randn(n, h, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)  # noqa: E731
    return mk(H), mk(Hkv), mk(Hkv)


CASES = [
    dict(window=8, globals=[0, 1, 20, 41], fusion="union", causal=True),
    dict(window=8, globals=[0, 1, 20, 41], fusion="weighted:0.3", causal=True),
    dict(window=5, globals=[3, 30, 59], fusion="union", causal=False),
    dict(window=5, globals=[3, 30, 59], fusion="weighted:0.6", causal=False),
    dict(window=6, globals=[], fusion="union", causal=True),
]


class Forward(LongctxTestCase):
    def test_same_as_numpy_and_reference(self):
        q, k, v = inputs(requires_grad=False)
        for c in CASES:
            out, lse = lt.hybrid_attention(q, k, v, **c)
            self.assertIsInstance(out, torch.Tensor)
            n_out, n_lse = longctx.attention(q.numpy(), k.numpy(), v.numpy(), **c)
            np.testing.assert_array_equal(out.numpy(), n_out)
            np.testing.assert_array_equal(lse.numpy(), n_lse)
            ref_out, ref_lse = reference(q.numpy(), k.numpy(), v.numpy(), c["globals"], c["window"],
                                         c["fusion"], c["causal"])
            self.assertLessEqual(max_rel_error(out.numpy(), ref_out), OUT_TOL, str(c))
            self.assertLessEqual(max_lse_error(lse.numpy(), ref_lse), LSE_TOL, str(c))
            t_ref = torch_reference(q.double(), k.double(), v.double(), c["globals"], c["window"],
                                    c["fusion"], c["causal"])
            self.assertLessEqual(max_rel_error(out.numpy(), t_ref.numpy()), OUT_TOL, str(c))

    def test_attention_accepts_tensors(self):
        q, k, v = inputs(requires_grad=False)
        out, lse = longctx.attention(q, k, v, window=8, globals=[0, 9])
        self.assertIsInstance(out, torch.Tensor)
        self.assertEqual(out.dtype, torch.float32)
        self.assertEqual(tuple(lse.shape), tuple(q.shape[:-1]))

    def test_zero_copy(self):
        q, k, v = inputs(requires_grad=False)
        before = longctx.staged_copies()
        lt.hybrid_attention(q, k, v, window=8, globals=[0, 9])
        lt.hybrid_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), window=8)
        fused = torch.randn(50, 3, 4, 8)  # q, k, v of one [n, 3*H*d] projection
        lt.hybrid_attention(fused[:, 0], fused[:, 1, :2], fused[:, 2, :2], window=8)
        self.assertEqual(longctx.staged_copies(), before)
        lt.hybrid_attention(q.transpose(0, 1).contiguous().transpose(0, 1), k, v, window=8)
        self.assertEqual(longctx.staged_copies(), before + 1)

    def test_bfloat16_close_to_reference(self):
        q, k, v = inputs(requires_grad=False)
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
        out, _ = lt.hybrid_attention(qb, kb, vb, window=8, globals=[0, 20])
        self.assertEqual(out.dtype, torch.bfloat16)
        ref, _ = reference(qb.float().numpy(), kb.float().numpy(), vb.float().numpy(), [0, 20], 8)
        self.assertLessEqual(max_rel_error(out.float().numpy(), ref), 1e-2)  # bf16 output rounding


class Backward(LongctxTestCase):
    def grads(self, fn, q, k, v, dout):
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).backward(dout)
        return q.grad.clone(), k.grad.clone(), v.grad.clone()

    def test_against_float64_autograd(self):
        q, k, v = inputs(n=90, seed=1)
        qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
        dout = torch.randn(q.shape, dtype=torch.float64)
        for c in CASES:
            got = self.grads(lambda a, b, e: lt.hybrid_attention(a, b, e, **c)[0], q, k, v, dout.float())
            want = self.grads(lambda a, b, e: torch_reference(a, b, e, c["globals"], c["window"],
                                                              c["fusion"], c["causal"]), qd, kd, vd, dout)
            for name, g, w in zip("qkv", got, want):
                self.assertLessEqual(rel_l2(g, w), 1e-5, f"d{name} {c}")

    def test_batch_axis(self):
        qs, ks, vs = zip(*(inputs(n=40, seed=10 + b, requires_grad=False) for b in range(2)))
        q = torch.stack(qs).requires_grad_()
        k = torch.stack(ks).requires_grad_()
        v = torch.stack(vs).requires_grad_()
        dout = torch.randn(q.shape)
        got = self.grads(lambda a, b, e: lt.hybrid_attention(a, b, e, [0, 17], 6)[0], q, k, v, dout)
        for bi in range(2):
            qb, kb, vb = (t.detach()[bi].double().requires_grad_() for t in (q, k, v))
            want = self.grads(lambda a, b, e: torch_reference(a, b, e, [0, 17], 6), qb, kb, vb,
                              dout[bi].double())
            for name, g, w in zip("qkv", got, want):
                self.assertLessEqual(rel_l2(g[bi], w), 1e-5, f"d{name} batch {bi}")

    def test_broadcast_grad_output(self):
        q, k, v = inputs(seed=2)
        w = torch.randn(1, 4, 8)  # (out * w).sum(): grad_output is w expanded, stride 0 over n
        for t in (q, k, v):
            t.grad = None
        (lt.hybrid_attention(q, k, v, [0, 30], 8)[0] * w).sum().backward()
        got = (q.grad.clone(), k.grad.clone(), v.grad.clone())
        want = self.grads(lambda a, b, e: lt.hybrid_attention(a, b, e, [0, 30], 8)[0], q, k, v,
                          w.expand(q.shape).contiguous())
        for g, x in zip(got, want):
            torch.testing.assert_close(g, x, rtol=0, atol=0)

    def test_only_q_requires_grad(self):
        q, k, v = inputs(seed=3)
        k.requires_grad_(False)
        v.requires_grad_(False)
        lt.hybrid_attention(q, k, v, [0], 8)[0].sum().backward()
        self.assertIsNotNone(q.grad)
        self.assertIsNone(k.grad)

    def test_lse_is_not_differentiable(self):
        q, k, v = inputs(seed=4)
        _, lse = lt.hybrid_attention(q, k, v, [0], 8)
        self.assertFalse(lse.requires_grad)


class GradCheck(LongctxTestCase):
    EPS, ATOL, RTOL = 1e-3, 2e-3, 2e-3

    def gradcheck(self, fn, args):
        return torch.autograd.gradcheck(fn, args, eps=self.EPS, atol=self.ATOL, rtol=self.RTOL,
                                        raise_exception=False)

    def test_gradcheck_float64(self):
        for c in CASES:
            q, k, v = (t.detach().double().mul(0.7).requires_grad_()
                       for t in inputs(n=14, H=2, Hkv=1, d=4, seed=5))
            c = dict(c, globals=[g for g in c["globals"] if g < 14][:2] or [], window=4)
            fn = lambda a, b, e: lt.hybrid_attention(a, b, e, **c)[0]  # noqa: E731
            self.assertTrue(self.gradcheck(fn, (q, k, v)), f"gradcheck {c}")

    def test_gradcheck_catches_a_wrong_backward(self):
        """The tolerances are tight enough to see a realistic bug: a backward over a key set one
        token narrower (window 3 instead of 4), or a gradient 2% off."""
        def wrong(window_bwd, k_factor):
            class Wrong(torch.autograd.Function):
                @staticmethod
                def forward(ctx, q, k, v):
                    ctx.save_for_backward(q, k, v)
                    return lt.HybridAttention.apply(q, k, v, [0, 5], 4)[0]

                @staticmethod
                def backward(ctx, dout):
                    with torch.enable_grad():
                        qq, kk, vv = (t.detach().requires_grad_() for t in ctx.saved_tensors)
                        out = lt.HybridAttention.apply(qq, kk, vv, [0, 5], window_bwd)[0]
                        dq, dk, dv = torch.autograd.grad(out, (qq, kk, vv), dout)
                    return dq, dk * k_factor, dv
            return Wrong.apply

        q, k, v = (t.detach().double().requires_grad_() for t in inputs(n=14, H=2, Hkv=1, d=4, seed=6))
        self.assertTrue(self.gradcheck(wrong(4, 1.0), (q, k, v)))  # the harness itself is right
        self.assertFalse(self.gradcheck(wrong(3, 1.0), (q, k, v)))
        self.assertFalse(self.gradcheck(wrong(4, 0.98), (q, k, v)))


class BadInput(LongctxTestCase):
    def test_errors(self):
        q, k, v = inputs(requires_grad=False)
        self.assertError(lambda: lt.hybrid_attention(q.int(), k, v))
        self.assertError(lambda: lt.hybrid_attention(q[0], k, v))
        self.assertError(lambda: lt.hybrid_attention(q, k, v, globals=[4, 2]))
        self.assertError(lambda: lt.hybrid_attention(q, k, v, window=0))
        bad = q.clone()
        bad[1, 0, 0] = float("inf")
        self.assertError(lambda: lt.hybrid_attention(bad, k, v), contains="[1, 0, 0]")


if __name__ == "__main__":
    main()
