#!/usr/bin/python3
"""longctx.attention over numpy arrays (CTest `python_attention`, label unit; no torch):

- out/lse against the plain float64 numpy reference (pylongctx_testlib.reference) for windowed
  causal + globals and bidirectional, union and weighted fusion, grouped-query heads, a given
  scale, a window wider than the sequence, float16 inputs and a batch axis;
- bitwise the same as `longctx attention` (the CLI) on the same .npy inputs;
- zero copy: contiguous float32 inputs and q sliced out of a fused [n, 3, H, d] projection are
  read in place (longctx.staged_copies() does not move), transposed/float64 inputs are copied
  (it moves) and give the same bits;
- bitwise identical for 1 and 2 threads;
- bad input (shape, dtype, globals, window, fusion, NaN, scale) raises longctx.Error with the
  code InvalidArgument and a one-line message.
"""

import os
import subprocess
import tempfile

import numpy as np

import longctx
from pylongctx_testlib import (LSE_TOL, OUT_TOL, LongctxTestCase, main, max_lse_error,
                               max_rel_error, need_bin, reference)


def qkv(n=150, H=4, Hkv=2, d=16, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, H, d)).astype(dtype),
            rng.standard_normal((n, Hkv, d)).astype(dtype),
            rng.standard_normal((n, Hkv, d)).astype(dtype))


GLOBALS = [0, 1, 2, 40, 41, 97, 149]


class AttentionVsReference(LongctxTestCase):
    def check(self, q, k, v, **kw):
        out, lse = longctx.attention(q, k, v, **kw)
        self.assertIsInstance(out, np.ndarray)
        self.assertEqual(out.dtype, np.float32)
        self.assertEqual(out.shape, q.shape)
        self.assertEqual(lse.shape, q.shape[:-1])
        ref_kw = {key: kw[key] for key in ("window", "fusion", "causal", "scale") if key in kw}
        ref_out, ref_lse = reference(q, k, v, kw.get("globals") or (), **ref_kw)
        e_out, e_lse = max_rel_error(out, ref_out), max_lse_error(lse, ref_lse)
        self.assertLessEqual(e_out, OUT_TOL, f"{kw}: output error {e_out:.3g}")
        self.assertLessEqual(e_lse, LSE_TOL, f"{kw}: lse error {e_lse:.3g}")
        return out, lse

    def test_union_causal_globals(self):
        self.check(*qkv(), window=16, globals=GLOBALS)

    def test_weighted_causal_globals(self):
        self.check(*qkv(seed=1), window=16, globals=GLOBALS, fusion="weighted:0.3")

    def test_union_bidirectional(self):
        self.check(*qkv(seed=2), window=9, globals=GLOBALS, causal=False)

    def test_weighted_bidirectional(self):
        self.check(*qkv(seed=3), window=9, globals=GLOBALS, causal=False, fusion="weighted:0.75")

    def test_no_globals_and_scale(self):
        self.check(*qkv(seed=4), window=5, scale=0.5)

    def test_window_wider_than_sequence_is_dense_causal(self):
        q, k, v = qkv(n=40, seed=5)
        self.check(q, k, v, window=1000)

    def test_multi_query_and_odd_head_dim(self):
        self.check(*qkv(n=70, H=3, Hkv=1, d=7, seed=6), window=11, globals=[3, 69])

    def test_float16(self):
        q, k, v = qkv(seed=7, dtype=np.float16)
        self.check(q, k, v, window=16, globals=GLOBALS)  # reference on the same f16 values

    def test_batch_axis_equals_per_element_calls(self):
        qs, ks, vs = zip(*(qkv(n=64, seed=10 + b) for b in range(3)))
        q, k, v = np.stack(qs), np.stack(ks), np.stack(vs)
        out, lse = longctx.attention(q, k, v, window=8, globals=[0, 31], threads=1)
        self.assertEqual(out.shape, q.shape)
        for b in range(3):
            ob, lb = longctx.attention(qs[b], ks[b], vs[b], window=8, globals=[0, 31], threads=1)
            np.testing.assert_array_equal(out[b], ob)
            np.testing.assert_array_equal(lse[b], lb)

    def test_globals_as_numpy_int32(self):
        q, k, v = qkv(seed=8)
        a = longctx.attention(q, k, v, window=16, globals=np.array(GLOBALS, np.int32))
        b = longctx.attention(q, k, v, window=16, globals=GLOBALS)
        np.testing.assert_array_equal(a[0], b[0])


class SameAsCli(LongctxTestCase):
    def test_bitwise_equal_to_longctx_attention(self):
        bin_ = need_bin(self)
        q, k, v = qkv(n=300, H=4, Hkv=2, d=32, seed=20)
        g = np.array([0, 1, 100, 200, 299], np.int64)
        with tempfile.TemporaryDirectory() as t:
            for name, a in (("q", q), ("k", k), ("v", v), ("g", g)):
                np.save(os.path.join(t, name + ".npy"), a)
            for fusion, bidir in (("union", False), ("weighted:0.4", True)):
                args = [bin_, "attention", "--q", f"{t}/q.npy", "--k", f"{t}/k.npy", "--v",
                        f"{t}/v.npy", "--globals", f"{t}/g.npy", "--window", "24", "--fusion",
                        fusion, "--out", f"{t}/o.npy", "--lse", f"{t}/l.npy", "--threads", "2"]
                if bidir:
                    args.append("--bidirectional")
                r = subprocess.run(args, capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                out, lse = longctx.attention(q, k, v, window=24, globals=g, fusion=fusion,
                                             causal=not bidir, threads=2)
                np.testing.assert_array_equal(out, np.load(f"{t}/o.npy"))
                np.testing.assert_array_equal(lse, np.load(f"{t}/l.npy"))


class ZeroCopy(LongctxTestCase):
    def test_contiguous_float32_is_not_copied(self):
        q, k, v = qkv(seed=30)
        before = longctx.staged_copies()
        longctx.attention(q, k, v, window=16, globals=GLOBALS)
        self.assertEqual(longctx.staged_copies(), before)

    def test_float16_is_not_copied(self):
        q, k, v = qkv(seed=31, dtype=np.float16)
        before = longctx.staged_copies()
        longctx.attention(q, k, v, window=16)
        self.assertEqual(longctx.staged_copies(), before)

    def test_slice_of_fused_projection_is_read_in_place(self):
        n, H, d = 120, 4, 16
        rng = np.random.default_rng(32)
        qkv_fused = rng.standard_normal((n, 3, H, d)).astype(np.float32)  # one [n, 3*H*d] matmul
        q, k, v = qkv_fused[:, 0], qkv_fused[:, 1], qkv_fused[:, 2]
        self.assertFalse(q.flags.c_contiguous)
        before = longctx.staged_copies()
        out, lse = longctx.attention(q, k, v, window=10, globals=[0, 60], threads=1)
        self.assertEqual(longctx.staged_copies(), before)
        ref = longctx.attention(q.copy(), k.copy(), v.copy(), window=10, globals=[0, 60], threads=1)
        np.testing.assert_array_equal(out, ref[0])
        np.testing.assert_array_equal(lse, ref[1])

    def test_head_major_layout_is_copied_and_equal(self):
        q, k, v = qkv(seed=33)
        qt = np.ascontiguousarray(q.transpose(1, 0, 2)).transpose(1, 0, 2)  # [n, H, d] view of [H, n, d]
        before = longctx.staged_copies()
        out, _ = longctx.attention(qt, k, v, window=16, globals=GLOBALS, threads=1)
        self.assertEqual(longctx.staged_copies(), before + 1)
        ref, _ = longctx.attention(q, k, v, window=16, globals=GLOBALS, threads=1)
        np.testing.assert_array_equal(out, ref)

    def test_float64_is_copied_to_float32(self):
        q, k, v = qkv(seed=34)
        before = longctx.staged_copies()
        out, _ = longctx.attention(q.astype(np.float64), k.astype(np.float64),
                                   v.astype(np.float64), window=16, threads=1)
        self.assertEqual(longctx.staged_copies(), before + 3)
        ref, _ = longctx.attention(q, k, v, window=16, threads=1)
        np.testing.assert_array_equal(out, ref)


class Determinism(LongctxTestCase):
    def test_thread_count_does_not_change_bits(self):
        q, k, v = qkv(n=700, seed=40)
        g = [0, 5, 300, 699]
        a = longctx.attention(q, k, v, window=33, globals=g, fusion="weighted:0.5", threads=1)
        b = longctx.attention(q, k, v, window=33, globals=g, fusion="weighted:0.5", threads=2)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


class BadInput(LongctxTestCase):
    def setUp(self):
        self.q, self.k, self.v = qkv(n=20, seed=50)

    def test_wrong_rank(self):
        self.assertError(lambda: longctx.attention(self.q[0], self.k, self.v), contains="q:")

    def test_wrong_dtype(self):
        self.assertError(lambda: longctx.attention(self.q.astype(np.int32), self.k, self.v),
                         contains="int32")

    def test_not_an_array(self):
        self.assertError(lambda: longctx.attention("queries", self.k, self.v))

    def test_kv_shapes_differ(self):
        self.assertError(lambda: longctx.attention(self.q, self.k, self.v[:10]))

    def test_heads_not_a_multiple(self):
        q = np.zeros((20, 3, 16), np.float32)
        self.assertError(lambda: longctx.attention(q, self.k, self.v), contains="multiple")

    def test_token_counts_differ(self):
        self.assertError(lambda: longctx.attention(self.q[:10], self.k, self.v))

    def test_unsorted_globals(self):
        self.assertError(lambda: longctx.attention(self.q, self.k, self.v, globals=[5, 2]),
                         contains="sorted")

    def test_global_out_of_range(self):
        self.assertError(lambda: longctx.attention(self.q, self.k, self.v, globals=[20]))

    def test_float_globals(self):
        self.assertError(lambda: longctx.attention(self.q, self.k, self.v, globals=[1.5]))

    def test_window_zero(self):
        self.assertError(lambda: longctx.attention(self.q, self.k, self.v, window=0),
                         contains="window")

    def test_bad_fusion(self):
        self.assertError(lambda: longctx.attention(self.q, self.k, self.v, fusion="weighted:7"))

    def test_negative_scale(self):
        self.assertError(lambda: longctx.attention(self.q, self.k, self.v, scale=-1.0))

    def test_nan_input_names_the_position(self):
        k = self.k.copy()
        k[3, 1, 2] = np.nan
        self.assertError(lambda: longctx.attention(self.q, k, self.v), contains="[3, 1, 2]")

    def test_big_endian(self):
        self.assertError(lambda: longctx.attention(self.q.astype(">f4"), self.k, self.v))


if __name__ == "__main__":
    main()
