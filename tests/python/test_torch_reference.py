#!/usr/bin/python3
"""Independent float64 reference for `longctx attention`, written from DESIGN.md section 1.

Run (this is what CTest registers):

    /usr/bin/python3 tests/python/test_torch_reference.py --longctx build/launch/longctx

The reference builds an explicit dense boolean mask per (query i, key j) from the
rules in DESIGN.md section 1 and evaluates softmax attention in float64 with torch.
It then runs the binary on the same .npy inputs and compares:

  * output O [n, H, d] float32: max over (i, h) of
        ||O[i,h,:] - R[i,h,:]||_inf / max(||R[i,h,:]||_inf, 1e-30)  <= 1e-5
  * LSE L [n, H] float32 (natural log, over the union of allowed keys, in both
    fusion modes):  |L - Lref| <= 1e-5 * max(1, |Lref|)

The fp16 case compares against the reference computed from the fp16-rounded inputs.
The extreme-logit cases (|logit| up to ~1e3 and ~3e4; exp(3e4) overflows fp32 and fp64)
use inputs whose logits in a row are pairwise >= 8 (1e3) or >= 16 (3e4) apart, so
the softmax is well conditioned: an fp32 kernel's logit rounding (~eps*|logit|, e.g.
from folding scale*log2(e) into q) cannot move O, while a wrong max / rescale does.
The same 1e-5 bound applies to them (no extra slack needed).  (With exact ties at
|logit| ~ 3e4 no fp32 kernel can meet 1e-5: one ulp of a logit is ~2e-3.)

Also checked: three CLI errors (unsorted globals, K with a wrong head size,
--window 0) exit non-zero with a single-line message on stderr.

Exit status 0 only if every case passes; the last line is "N passed, M failed".
If the binary does not exist every case fails (no skipping).
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

OUT_TOL = 1e-5
LSE_TOL = 1e-5
TIMEOUT_S = 120


# --------------------------------------------------------------------------------------------
# Reference (float64, dense n x n masks)
# --------------------------------------------------------------------------------------------

def masks(n, W, bidirectional, globals_):
    """Boolean [n, n] masks (query i = row, key j = column) from DESIGN.md section 1.

    Returns (union, window, global_keys):
      window      : the window rule alone
      union       : window | global keys visible to i | (i global -> all visible keys)
      global_keys : the key set of the "global" branch of weighted fusion
                    (non-global query: visible global keys, including those in its
                    window; global query: every visible key)
    """
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    if bidirectional:
        window = (i - j).abs() < W
        visible = torch.ones(n, n, dtype=torch.bool)
    else:
        window = (j <= i) & (j > i - W)
        visible = j <= i
    is_global = torch.zeros(n, dtype=torch.bool)
    if len(globals_) > 0:
        is_global[torch.as_tensor(np.asarray(globals_, dtype=np.int64))] = True
    gq = is_global.view(n, 1).expand(n, n)  # query i is global
    gk = is_global.view(1, n).expand(n, n)  # key j is global
    union = window | (gk & visible) | (gq & visible)
    global_keys = torch.where(gq, visible, gk & visible)
    return union, window, global_keys


def masked_attention(S, V, mask):
    """S [H, n, n] float64 logits, V [n, H, d], mask [n, n] bool.

    Returns O [n, H, d] and LSE [n, H]; rows with an empty mask give O = 0, LSE = -inf."""
    s = S.masked_fill(~mask.unsqueeze(0), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # [H, n]; -inf for empty rows
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    p = torch.exp(s - safe.unsqueeze(-1))  # exp(-inf) = 0 for masked entries
    o = torch.einsum("hij,jhd->ihd", p, V)
    return o, lse.transpose(0, 1).contiguous()


def reference(q, k, v, globals_, W, bidirectional=False, fusion="union", scale=None):
    """q [n,H,d], k/v [n,Hkv,d] numpy arrays (any float dtype) -> (O [n,H,d], L [n,H]) float64."""
    q = torch.from_numpy(np.asarray(q, dtype=np.float64))
    k = torch.from_numpy(np.asarray(k, dtype=np.float64))
    v = torch.from_numpy(np.asarray(v, dtype=np.float64))
    n, H, d = q.shape
    Hkv = k.shape[1]
    assert H % Hkv == 0
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    kv_head = torch.arange(H) // (H // Hkv)  # GQA: query head h uses kv head h // (H/Hkv)
    K = k[:, kv_head, :]
    V = v[:, kv_head, :]
    S = torch.einsum("ihd,jhd->hij", q, K) * scale  # [H, n, n]
    union, window, global_keys = masks(n, W, bidirectional, globals_)

    o_union, l_union = masked_attention(S, V, union)
    if fusion == "union":
        return o_union.numpy(), l_union.numpy()
    assert fusion.startswith("weighted:")
    a = float(fusion.split(":", 1)[1])
    o_win, _ = masked_attention(S, V, window)
    o_glb, _ = masked_attention(S, V, global_keys)
    has_global = global_keys.any(dim=1).view(n, 1, 1)  # query sees at least one global key
    o = torch.where(has_global, a * o_win + (1.0 - a) * o_glb, o_win)
    return o.numpy(), l_union.numpy()  # L is the union LSE in weighted mode too


def naive_reference(q, k, v, globals_, W, bidirectional, fusion, scale=None):
    """Scalar-loop version of the same rules, used only to self-check `reference` on tiny inputs."""
    n, H, d = q.shape
    Hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    G = set(int(g) for g in globals_)
    O = np.zeros((n, H, d))
    L = np.zeros((n, H))

    def attend(i, h, keys):
        if not keys:
            return None, -math.inf
        hk = h // (H // Hkv)
        logits = [scale * sum(float(q[i, h, t]) * float(k[j, hk, t]) for t in range(d)) for j in keys]
        m = max(logits)
        w = [math.exp(x - m) for x in logits]
        z = sum(w)
        out = np.zeros(d)
        for wj, j in zip(w, keys):
            out += (wj / z) * v[j, hk].astype(np.float64)
        return out, m + math.log(z)

    for i in range(n):
        vis = [j for j in range(n) if bidirectional or j <= i]
        win = [j for j in vis if (abs(i - j) < W if bidirectional else i - W < j <= i)]
        if i in G:
            allowed = vis
            gkeys = vis
        else:
            allowed = sorted(set(win) | {j for j in vis if j in G})
            gkeys = [j for j in vis if j in G]
        for h in range(H):
            ou, lu = attend(i, h, allowed)
            L[i, h] = lu
            if fusion == "union":
                O[i, h] = ou
            else:
                a = float(fusion.split(":", 1)[1])
                ow, _ = attend(i, h, win)
                og, _ = attend(i, h, gkeys)
                O[i, h] = ow if og is None else a * ow + (1 - a) * og
    return O, L


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

def G_every3(n):
    return np.arange(0, n, 3)


CASES = []


def case(name, n, H, Hkv, d, W, bidir=False, fusion="union", globals_=None, gdtype="int64",
         seed=0, dtype="float32", scale=None, extreme=None, threads=None):
    CASES.append(dict(name=name, n=n, H=H, Hkv=Hkv, d=d, W=W, bidir=bidir, fusion=fusion,
                      globals_=globals_, gdtype=gdtype, seed=seed, dtype=dtype, scale=scale,
                      extreme=extreme, threads=threads))


WA = "weighted:0.7"
# globals_: None = no --globals flag; otherwise an array (possibly empty) written to G.npy.
case("n1_causal_union_W1", 1, 1, 1, 32, 1, seed=1)
case("n1_bidir_weighted_g0", 1, 4, 2, 64, 5, bidir=True, fusion=WA, globals_=[0], seed=2)
case("n7_causal_union_g0_d80", 7, 3, 3, 80, 5, globals_=[0], seed=3)
case("n7_bidir_weighted_glast_gqa4", 7, 4, 1, 32, 5, bidir=True, fusion=WA, globals_=[6], seed=4)
case("n7_causal_union_allglobal_Wbig", 7, 4, 2, 128, 100, globals_=np.arange(7), seed=5)
case("n7_causal_weighted_every3_W1", 7, 1, 1, 64, 1, fusion=WA, globals_=G_every3(7), gdtype="int32", seed=6)
case("n200_causal_union_W64", 200, 4, 2, 64, 64, seed=7, threads=2)
case("n200_causal_weighted_every3_W64", 200, 4, 2, 64, 64, fusion=WA, globals_=G_every3(200), seed=8)
case("n200_bidir_union_g0_W5_d80", 200, 3, 3, 80, 5, bidir=True, globals_=[0], seed=9)
case("n200_bidir_weighted_glast_W5_d128", 200, 4, 1, 128, 5, bidir=True, fusion=WA, globals_=[199], seed=10)
case("n200_causal_union_every3_W1", 200, 1, 1, 32, 1, globals_=G_every3(200), seed=11)
case("n200_bidir_weighted_allglobal_W1", 200, 1, 1, 32, 1, bidir=True, fusion=WA, globals_=np.arange(200), seed=12)
case("n200_bidir_union_emptyG_Wbig", 200, 4, 2, 64, 300, bidir=True, globals_=np.zeros(0, np.int64), seed=13)
case("n200_causal_weighted_g0_Wbig", 200, 3, 3, 32, 300, fusion=WA, globals_=[0], seed=14)
case("n200_causal_union_scale0.05", 200, 4, 2, 64, 64, globals_=[0, 50, 199], scale=0.05, seed=15)
case("n200_causal_weighted0.25_sparseG", 200, 4, 2, 80, 64, fusion="weighted:0.25",
     globals_=[3, 97, 150], gdtype="int32", seed=16)
case("n513_causal_union_every3_W64_d128", 513, 4, 2, 128, 64, globals_=G_every3(513), seed=17, threads=2)
case("n513_bidir_weighted_g0_W64_d80", 513, 4, 1, 80, 64, bidir=True, fusion=WA, globals_=[0], gdtype="int32", seed=18)
case("n513_causal_weighted_glast_W5", 513, 3, 3, 64, 5, fusion=WA, globals_=[512], seed=19)
case("n513_causal_union_allglobal_Wbig", 513, 1, 1, 32, 600, globals_=np.arange(513), seed=20)
case("n513_bidir_union_every3_W1", 513, 4, 2, 64, 1, bidir=True, globals_=G_every3(513), seed=21)
case("n513_causal_union_noG_W64_d80", 513, 3, 3, 80, 64, seed=22, threads=4)
case("n513_bidir_weighted_every3_W5_d32", 513, 4, 2, 32, 5, bidir=True, fusion=WA, globals_=G_every3(513), seed=23)
case("fp16_n200_causal_union_every3", 200, 4, 2, 64, 64, globals_=G_every3(200), dtype="float16", seed=24)
case("extreme1e3_n128_causal_union_every3", 128, 4, 2, 64, 64, globals_=G_every3(128), extreme=1e3, seed=25)
case("extreme3e4_n513_bidir_weighted_every3", 513, 4, 2, 64, 64, bidir=True, fusion=WA,
     globals_=G_every3(513), extreme=3e4, seed=26)
case("extreme3e4_n200_causal_union_noG", 200, 3, 3, 64, 64, extreme=3e4, seed=27)


def make_inputs(c):
    rng = np.random.default_rng(c["seed"])
    n, H, Hkv, d = c["n"], c["H"], c["Hkv"], c["d"]
    v = rng.standard_normal((n, Hkv, d)).astype(np.float32)
    if c["extreme"] is None:
        q = rng.standard_normal((n, H, d)).astype(np.float32)
        k = rng.standard_normal((n, Hkv, d)).astype(np.float32)
    else:
        # Well-conditioned extreme logits (d = 64, default scale 1/8, exact in fp32):
        #   k[j, g] = ck * pi_g(j) * u_g,  q[i, h] = s_ih * r_ih * u_{g(h)},  u_g a random +-1 vector,
        #   pi_g a random permutation of 0..n-1, s = +-1, r in 1..R, so
        #   logit(i, j) = s * r * gap * pi(j) with gap = 8 * ck: the logits of a row are pairwise
        #   >= gap apart and reach +-extreme.  Rows are (nearly) one-hot, so the result does not
        #   depend on the O(eps * |logit|) rounding an fp32 kernel makes in its logits (~2e-3 at
        #   3e4; with near-ties that would move O by ~1e-3), only on the max handling.
        assert d == 64 and c["scale"] is None
        gap = 8.0 if c["extreme"] < 1e4 else 16.0
        ck = gap / 8.0
        R = max(1, int(round(c["extreme"] / (gap * max(n - 1, 1)))))
        grp = H // Hkv
        u = rng.choice([-1.0, 1.0], size=(Hkv, d))
        k = np.empty((n, Hkv, d), np.float32)
        q = np.empty((n, H, d), np.float32)
        for g in range(Hkv):
            k[:, g, :] = ck * rng.permutation(n)[:, None] * u[g][None, :]
        for h in range(H):
            s_r = rng.choice([-1.0, 1.0], size=n) * rng.integers(1, R + 1, size=n)
            q[:, h, :] = s_r[:, None] * u[h // grp][None, :]
    if c["dtype"] == "float16":
        q, k, v = (x.astype(np.float16) for x in (q, k, v))
    return q, k, v


def write_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr))


def run_cli(binary, args, timeout=TIMEOUT_S):
    t0 = time.time()
    p = subprocess.run([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p, time.time() - t0


EXTRA_ARGS = []


def check_case(binary, c, tmp):
    q, k, v = make_inputs(c)
    d = c["d"]
    args = ["attention"]
    for name, arr in (("q", q), ("k", k), ("v", v)):
        path = os.path.join(tmp, name.upper() + ".npy")
        write_npy(path, arr)
        args += ["--" + name, path]
    gl = None
    if c["globals_"] is not None:
        gl = np.asarray(c["globals_"]).astype(c["gdtype"])
        gpath = os.path.join(tmp, "G.npy")
        write_npy(gpath, gl)
        args += ["--globals", gpath]
    args += ["--window", str(c["W"])]
    if c["bidir"]:
        args.append("--bidirectional")
    args += ["--fusion", c["fusion"]]
    if c["scale"] is not None:
        args += ["--scale", repr(c["scale"])]
    if c["threads"] is not None:
        args += ["--threads", str(c["threads"])]
    opath, lpath = os.path.join(tmp, "O.npy"), os.path.join(tmp, "L.npy")
    args += ["--out", opath, "--lse", lpath] + EXTRA_ARGS

    R, Lref = reference(q, k, v, [] if gl is None else gl, c["W"], c["bidir"], c["fusion"], c["scale"])
    if c["extreme"] is not None:  # document that the extremes were actually reached
        qq = torch.from_numpy(q.astype(np.float64))
        kk = torch.from_numpy(k.astype(np.float64))[:, torch.arange(c["H"]) // (c["H"] // c["Hkv"])]
        S = torch.einsum("ihd,jhd->hij", qq, kk) / math.sqrt(d)
        _, win, _ = masks(c["n"], c["W"], c["bidir"], [] if gl is None else gl)
        sw = S.masked_select(win.unsqueeze(0).expand_as(S))
        c["note"] = "window logits in [%.0f, %.0f]" % (sw.min().item(), sw.max().item())

    try:
        p, dt = run_cli(binary, args)
    except subprocess.TimeoutExpired:
        return False, "timed out after %d s: %s" % (TIMEOUT_S, " ".join(args))
    if p.returncode != 0:
        return False, "exit %d: %s\n    cmd: %s %s" % (
            p.returncode, p.stderr.decode(errors="replace").strip(), binary, " ".join(args))
    problems = []
    try:
        O = np.load(opath)
        L = np.load(lpath)
    except Exception as e:  # noqa: BLE001
        return False, "cannot read outputs: %s" % e
    n, H = c["n"], c["H"]
    if O.shape != (n, H, d):
        return False, "O shape %s, expected %s" % (O.shape, (n, H, d))
    if L.shape != (n, H):
        return False, "L shape %s, expected %s" % (L.shape, (n, H))
    if O.dtype != np.float32:
        problems.append("O dtype %s (expected float32)" % O.dtype)
    if L.dtype != np.float32:
        problems.append("L dtype %s (expected float32)" % L.dtype)
    O64 = O.astype(np.float64)
    L64 = L.astype(np.float64)
    if not np.all(np.isfinite(O64)):
        bad = np.argwhere(~np.isfinite(O64))[0]
        problems.append("non-finite O at (i,h,t)=%s" % (tuple(int(x) for x in bad),))
    else:
        denom = np.maximum(np.abs(R).max(axis=2), 1e-30)
        rel = np.abs(O64 - R).max(axis=2) / denom  # [n, H]
        worst = np.unravel_index(np.argmax(rel), rel.shape)
        c["out_err"] = float(rel.max())
        if rel.max() > OUT_TOL:
            nbad = int((rel > OUT_TOL).sum())
            problems.append("O rel err %.3e > %.0e at (i=%d, h=%d) [%d of %d rows bad]; got %s ref %s" % (
                rel.max(), OUT_TOL, worst[0], worst[1], nbad, rel.size,
                np.array2string(O64[worst][:4], precision=6), np.array2string(R[worst][:4], precision=6)))
    if not np.all(np.isfinite(L64)):
        bad = np.argwhere(~np.isfinite(L64))[0]
        problems.append("non-finite L at (i,h)=%s" % (tuple(int(x) for x in bad),))
    else:
        lerr = np.abs(L64 - Lref) / np.maximum(1.0, np.abs(Lref))
        c["lse_err"] = float(lerr.max())
        if lerr.max() > LSE_TOL:
            worst = np.unravel_index(np.argmax(lerr), lerr.shape)
            problems.append("L err %.3e > %.0e at (i=%d, h=%d): got %.9g ref %.9g" % (
                lerr.max(), LSE_TOL, worst[0], worst[1], L64[worst], Lref[worst]))
    c["time"] = dt
    if problems:
        return False, "; ".join(problems) + "\n    cmd: %s %s" % (binary, " ".join(args))
    return True, ""


def error_cases(binary, tmp):
    """(name, args) whose run must fail with a one-line stderr message."""
    rng = np.random.default_rng(99)
    n, H, d = 16, 2, 32
    q = rng.standard_normal((n, H, d)).astype(np.float32)
    k = rng.standard_normal((n, H, d)).astype(np.float32)
    v = rng.standard_normal((n, H, d)).astype(np.float32)
    kbad = rng.standard_normal((n, H, d + 8)).astype(np.float32)
    vbad = rng.standard_normal((n, H, d + 8)).astype(np.float32)
    paths = {}
    for name, arr in (("Q", q), ("K", k), ("V", v), ("Kbad", kbad), ("Vbad", vbad),
                      ("Gunsorted", np.array([5, 2, 9], np.int64))):
        paths[name] = os.path.join(tmp, name + ".npy")
        write_npy(paths[name], arr)
    out = os.path.join(tmp, "Oerr.npy")
    base = ["attention", "--q", paths["Q"], "--out", out]
    kv = ["--k", paths["K"], "--v", paths["V"]]
    return [
        ("error_unsorted_globals", base + kv + ["--globals", paths["Gunsorted"], "--window", "4"]),
        # K and V agree with each other ([n, Hkv, d+8]) but not with Q ([n, H, d]).
        ("error_k_wrong_d", base + ["--k", paths["Kbad"], "--v", paths["Vbad"], "--window", "4"]),
        ("error_window_0", base + kv + ["--window", "0"]),
    ]


def check_error(binary, args):
    try:
        p, _ = run_cli(binary, args)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    err = p.stderr.decode(errors="replace").strip()
    cmd = "\n    cmd: %s %s" % (binary, " ".join(args))
    if p.returncode == 0:
        return False, "exit 0 (expected non-zero); stderr=%r%s" % (err, cmd)
    if not err:
        return False, "exit %d but empty stderr%s" % (p.returncode, cmd)
    if "\n" in err:
        return False, "stderr has %d lines (expected 1): %r%s" % (err.count("\n") + 1, err, cmd)
    return True, "exit %d: %s" % (p.returncode, err)


def self_check():
    """The vectorized reference must agree with the scalar loop on tiny inputs."""
    rng = np.random.default_rng(123)
    worst = 0.0
    for bidir in (False, True):
        for fusion in ("union", "weighted:0.7"):
            for G in ([], [0], [4], [1, 3, 6], list(range(7))):
                for W in (1, 3, 9):
                    q = rng.standard_normal((7, 4, 8))
                    k = rng.standard_normal((7, 2, 8))
                    v = rng.standard_normal((7, 2, 8))
                    R, L = reference(q, k, v, G, W, bidir, fusion)
                    R2, L2 = naive_reference(q, k, v, G, W, bidir, fusion)
                    worst = max(worst, np.abs(R - R2).max(), np.abs(L - L2).max())
    # Hand-checked identity: with W >= n and no globals, causal union = full causal attention,
    # and a global query in bidirectional mode = full attention over all keys.
    q = rng.standard_normal((5, 1, 4)); k = rng.standard_normal((5, 1, 4)); v = rng.standard_normal((5, 1, 4))
    s = (q[:, 0] @ k[:, 0].T) / 2.0
    full = np.exp(s - s.max(1, keepdims=True)); full /= full.sum(1, keepdims=True)
    R, _ = reference(q, k, v, [2], 1, True, "union")
    worst = max(worst, np.abs(R[2, 0] - full[2] @ v[:, 0]).max())
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--longctx", required=True, help="path to the longctx binary")
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--extra", action="append", default=[],
                    help="extra argument appended to every attention run, e.g. --extra=--isa --extra=generic")
    args = ap.parse_args()

    torch.set_num_threads(1)
    EXTRA_ARGS.extend(args.extra)
    if args.list:
        for c in CASES:
            print(c["name"])
        return 0

    sc = self_check()
    print("reference self-check (vectorized vs scalar loops): max diff %.2e" % sc)
    if sc > 1e-12:
        print("FAIL: the reference disagrees with its own scalar version")
        print("0 passed, 1 failed")
        return 1

    cases = [c for c in CASES if args.only is None or args.only in c["name"]]
    binary = os.path.abspath(args.longctx)
    npass = nfail = 0
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print("FAIL: longctx binary not found or not executable: %s" % binary)
        print("%d passed, %d failed" % (0, len(cases) + 3))
        return 2

    with tempfile.TemporaryDirectory(prefix="longctx_ref_") as tmp:
        for c in cases:
            sub = os.path.join(tmp, c["name"])
            os.mkdir(sub)
            try:
                ok, msg = check_case(binary, c, sub)
            except Exception as e:  # noqa: BLE001
                ok, msg = False, "harness error: %r" % (e,)
            if ok:
                npass += 1
                extra = ""
                if "note" in c:
                    extra = "  (" + c["note"] + ")"
                print("PASS %-42s O err %.2e  L err %.2e  %.2fs%s" % (
                    c["name"], c.get("out_err", 0), c.get("lse_err", 0), c.get("time", 0), extra))
            else:
                nfail += 1
                print("FAIL %-42s %s" % (c["name"], msg))
            sys.stdout.flush()
        if args.only is None or "error" in args.only:
            for name, eargs in error_cases(binary, tmp):
                ok, msg = check_error(binary, eargs)
                if ok:
                    npass += 1
                    print("PASS %-42s %s" % (name, msg))
                else:
                    nfail += 1
                    print("FAIL %-42s %s" % (name, msg))
    print("%d passed, %d failed" % (npass, nfail))
    return 0 if nfail == 0 and npass > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
