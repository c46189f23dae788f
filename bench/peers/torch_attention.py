#!/usr/bin/python3
"""Peer baselines for longctx attention: what a user runs without longctx, in torch float32.

  dense   softmax(Q K^T * scale + mask) @ V per head, mask = DESIGN.md section 1 (union);
          materialises the [H, n, n] score matrix, so it is skipped when that exceeds 4 GiB.
  chunks  Longformer "sliding_chunks" (Beltagy et al. 2020; HF LongformerSelfAttention
          `_sliding_chunks_query_key_matmul` / `_sliding_chunks_matmul_attn_probs_value`),
          re-implemented here: Q and K are split into overlapping chunks of 2w (stride w,
          w = W), chunk x chunk scores are computed with one batched matmul, the diagonals
          [-w, w] are extracted and masked to the causal band of W keys (i-W < j <= i), or
          |i-j| < W with --bidirectional; probabilities are multiplied with V through the
          skewed 3w-wide value chunks.  Global tokens are handled the Longformer way: extra
          score columns for the global keys (softmax jointly with the band; a global key
          inside the band is counted once) and a separate dense pass for the global queries.

Column err_vs_ref: max per-row relative error vs dense (vs chunks where dense was skipped).
Both peers compute the same function as `longctx attention --fusion union` (causal by
default).  GQA is handled like HF `repeat_kv` (K/V expanded to H heads, included in the time).

Usage:
  /usr/bin/python3 bench/peers/torch_attention.py --n 4096 16384 65536 --d 64 --window 64 \
      --heads 8 --kv-heads 8 --threads 16 [--globals 64] [--longctx build/launch/longctx] \
      [--json bench/results/peers.json]

Throughput counts only the allowed (query, key) pairs: GFLOP/s = pairs * H * 4 * d / time / 1e9
(2d for QK^T plus 2d for PV), the same count for every implementation.
Times: best of --repeats (default 3) after one warm-up, torch.set_num_threads(--threads).
The longctx time is the wall time of the whole `longctx attention` process, so it includes
process start-up and .npy file I/O (the peers' times do not).
"""

import argparse
import json
import math
import os
import re
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

DENSE_LIMIT_BYTES = 4 << 30


# --------------------------------------------------------------------------------------------
# Masks / counting (DESIGN.md section 1, union fusion)
# --------------------------------------------------------------------------------------------

def global_positions(n, count):
    if count <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


def allowed_pairs(n, W, G, bidirectional):
    """Number of allowed (query, key) pairs per head, computed in closed form per row."""
    i = np.arange(n, dtype=np.int64)
    is_g = np.zeros(n, bool)
    is_g[G] = True
    G = np.asarray(G, np.int64)
    if bidirectional:
        lo = np.maximum(i - W + 1, 0)
        hi = np.minimum(i + W - 1, n - 1)
        win = hi - lo + 1
        # global keys outside [lo, hi]
        outside = np.searchsorted(G, lo, "left") + (len(G) - np.searchsorted(G, hi, "right"))
        rows = np.where(is_g, n, win + outside)
    else:
        lo = np.maximum(i - W + 1, 0)
        win = i - lo + 1
        outside = np.searchsorted(G, lo, "left")  # globals < lo (all <= i)
        rows = np.where(is_g, i + 1, win + outside)
    return int(rows.sum())


def dense_mask(n, W, G, bidirectional):
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    if bidirectional:
        window = (i - j).abs() < W
        visible = torch.ones(n, n, dtype=torch.bool)
    else:
        window = (j <= i) & (j > i - W)
        visible = j <= i
    is_g = torch.zeros(n, dtype=torch.bool)
    if len(G):
        is_g[torch.as_tensor(G)] = True
    return window | (is_g.view(1, n) & visible) | (is_g.view(n, 1) & visible)


# --------------------------------------------------------------------------------------------
# Peer (a): dense masked attention
# --------------------------------------------------------------------------------------------

def expand_kv(x, H):
    """[n, Hkv, d] -> [H, n, d] (HF repeat_kv)."""
    n, Hkv, d = x.shape
    x = x.transpose(0, 1)
    if Hkv == H:
        return x
    return x.repeat_interleave(H // Hkv, dim=0)


def dense_attention(q, k, v, add_mask, scale):
    """q [n,H,d]; k,v [n,Hkv,d]; add_mask [n,n] float (0 / -inf). Returns [n,H,d]."""
    H = q.shape[1]
    Q = q.transpose(0, 1)  # [H, n, d]
    K = expand_kv(k, H)
    V = expand_kv(v, H)
    s = torch.baddbmm(add_mask.unsqueeze(0), Q, K.transpose(1, 2), alpha=scale)  # [H, n, n]
    p = torch.softmax(s, dim=-1)
    return torch.bmm(p, V).transpose(0, 1)


# --------------------------------------------------------------------------------------------
# Peer (b): Longformer sliding_chunks
# --------------------------------------------------------------------------------------------

def _overlapping_chunks(x, w):
    """[B, N, d] with N % w == 0, N >= 2w -> view [B, N/w - 1, 2w, d] (stride w)."""
    B, N, d = x.shape
    x = x.contiguous()
    s0, s1, s2 = x.stride()
    return x.as_strided((B, N // w - 1, 2 * w, d), (s0, w * s1, s1, s2))


class SlidingChunksPlan:
    """Index tensors that depend only on (n, w, W, direction); built once per shape, as a
    Longformer layer would reuse them across heads/batches."""

    def __init__(self, n, W, bidirectional):
        w = W
        self.w = w
        self.n = n
        N = max(((n + w - 1) // w) * w, 2 * w)  # pad to a multiple of w, at least 2 chunks
        self.N = N
        nc = N // w - 1
        i = torch.arange(N).view(N, 1)
        o = torch.arange(-w, w + 1).view(1, 2 * w + 1)
        j = i + o
        blk = i // w
        # Any chunk containing both i and j gives the same score; pick as HF does:
        # upper diagonals (o >= 0) from chunk i//w (rows in its first half), lower ones from
        # chunk i//w - 1 (rows in its second half); clamp at the ends.
        c = torch.where(o >= 0, blk, blk - 1).clamp(0, nc - 1)
        x = i - c * w
        y = x + o
        ok = (y >= 0) & (y < 2 * w) & (j >= 0) & (j < n) & (i < n)
        if bidirectional:
            band = o.abs() < W
        else:
            band = (o <= 0) & (o > -W)
        self.valid = ok & band                        # [N, 2w+1]
        flat = (c * (2 * w) + x) * (2 * w) + y
        self.index = torch.where(ok, flat, torch.zeros_like(flat))  # gather index into chunk scores
        self.add_mask = torch.zeros(N, 2 * w + 1)
        self.add_mask.masked_fill_(~self.valid, float("-inf"))
        self.j = j.clamp(0, N - 1)


def sliding_chunks_qk(Q, K, plan):
    """Q, K [B, N, d] -> diagonal scores [B, N, 2w+1] (unmasked, garbage where invalid)."""
    w = plan.w
    qc = _overlapping_chunks(Q, w)
    kc = _overlapping_chunks(K, w)
    B, nc = qc.shape[0], qc.shape[1]
    chunk_scores = torch.matmul(qc, kc.transpose(-1, -2))  # [B, nc, 2w, 2w]
    return chunk_scores.reshape(B, -1)[:, plan.index]     # [B, N, 2w+1]


def sliding_chunks_pv(P, V, w):
    """P [B, N, 2w+1] band probabilities, V [B, N, d] -> [B, N, d] (HF skew trick)."""
    B, N, d = V.shape
    nb = N // w
    Vp = torch.nn.functional.pad(V, (0, 0, w, w))  # [B, N+2w, d]
    s0, s1, s2 = Vp.stride()
    vchunks = Vp.as_strided((B, nb, 3 * w, d), (s0, w * s1, s1, s2))
    Pc = P.reshape(B, nb, w, 2 * w + 1)
    Pc = torch.nn.functional.pad(Pc, (0, w + 1))  # [B, nb, w, 3w+2]
    Pc = Pc.reshape(B, nb, -1)[:, :, :-w].reshape(B, nb, w, 3 * w + 1)[:, :, :, :-1]  # skew -> [.., w, 3w]
    return torch.matmul(Pc, vchunks).reshape(B, N, d)


def sliding_chunks_attention(q, k, v, G, plan, scale, bidirectional):
    """Union semantics with Longformer-style global handling. q [n,H,d], k/v [n,Hkv,d]."""
    n, H, d = q.shape
    N, w = plan.N, plan.w
    Q = q.transpose(0, 1)
    K = expand_kv(k, H)
    V = expand_kv(v, H)
    if N != n:
        pad = (0, 0, 0, N - n)
        Q, K, V = (torch.nn.functional.pad(t, pad) for t in (Q, K, V))
    scores = sliding_chunks_qk(Q * scale, K, plan) + plan.add_mask  # [H, N, 2w+1]
    g = len(G)
    if g == 0:
        P = torch.softmax(scores, dim=-1)
        out = sliding_chunks_pv(P, V, w)
    else:
        Gt = torch.as_tensor(G)
        Kg, Vg = K[:, Gt], V[:, Gt]  # [H, g, d]
        gs = torch.matmul(Q * scale, Kg.transpose(1, 2))  # [H, N, g]
        i = torch.arange(N).view(N, 1)
        gj = Gt.view(1, g)
        in_band = ((i - gj).abs() < plan.w) if bidirectional else ((gj <= i) & (gj > i - plan.w))
        gvis = torch.ones_like(in_band) if bidirectional else (gj <= i)
        gmask = torch.zeros(N, g).masked_fill_(~gvis | in_band, float("-inf"))  # count once
        allsc = torch.cat([scores, gs + gmask], dim=-1)
        P = torch.softmax(allsc, dim=-1)
        out = sliding_chunks_pv(P[..., : 2 * w + 1].contiguous(), V, w) + torch.matmul(P[..., 2 * w + 1:], Vg)
        # Global queries: a separate dense pass over every visible key.
        Qg = Q[:, Gt]  # [H, g, d]
        s = torch.matmul(Qg * scale, K[:, :n].transpose(1, 2))  # [H, g, n]
        if not bidirectional:
            jj = torch.arange(n).view(1, n)
            s = s.masked_fill(jj > Gt.view(g, 1), float("-inf"))
        out[:, Gt] = torch.matmul(torch.softmax(s, dim=-1), V[:, :n])
    return out[:, :n].transpose(0, 1)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def best_time(fn, repeats):
    fn()  # warm-up
    best = math.inf
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def rel_err(a, b):
    a = a.double()
    b = b.double()
    return float(((a - b).abs().amax(-1) / b.abs().amax(-1).clamp_min(1e-30)).max())


def make_inputs(n, H, Hkv, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, H, d, generator=g), torch.randn(n, Hkv, d, generator=g),
            torch.randn(n, Hkv, d, generator=g))


def run_longctx(binary, q, k, v, G, W, threads, bidirectional, repeats, tmp):
    paths = {}
    for name, t in (("q", q), ("k", k), ("v", v)):
        paths[name] = os.path.join(tmp, name + ".npy")
        np.save(paths[name], t.numpy())
    out = os.path.join(tmp, "o.npy")
    cmd = [binary, "attention", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"],
           "--window", str(W), "--threads", str(threads), "--out", out]
    if len(G):
        gp = os.path.join(tmp, "g.npy")
        np.save(gp, np.asarray(G, np.int64))
        cmd += ["--globals", gp]
    if bidirectional:
        cmd.append("--bidirectional")

    kernel_times = []

    def once():
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("longctx failed (%d): %s" % (p.returncode, p.stderr.decode().strip()))
        # The binary reports its attention time: "attention n=... threads=T: 0.123 s, ..."
        m = re.search(r": ([0-9.]+) s, [0-9.]+ GFLOP/s", p.stdout.decode())
        if m:
            kernel_times.append(float(m.group(1)))
        return None

    t, _ = best_time(once, repeats)
    kernel = min(kernel_times) if kernel_times else None
    return t, kernel, torch.from_numpy(np.load(out)), " ".join(cmd)


def check_small(args):
    """sliding_chunks vs dense at a small n (incl. a ragged n), same d/W/heads/globals."""
    results = []
    for n in (512, 509):
        q, k, v = make_inputs(n, args.heads, args.kv_heads, args.d, seed=1)
        G = global_positions(n, min(args.globals, n) if args.globals else 0)
        scale = 1.0 / math.sqrt(args.d)
        m = dense_mask(n, args.window, G, args.bidirectional)
        add = torch.zeros(n, n).masked_fill_(~m, float("-inf"))
        ref = dense_attention(q, k, v, add, scale)
        plan = SlidingChunksPlan(n, args.window, args.bidirectional)
        out = sliding_chunks_attention(q, k, v, G, plan, scale, args.bidirectional)
        results.append((n, len(G), rel_err(out, ref)))
    return results


def main():
    ap = argparse.ArgumentParser(description="torch float32 peers for longctx attention")
    ap.add_argument("--n", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--globals", type=int, default=0, help="number of evenly spaced global tokens")
    ap.add_argument("--bidirectional", action="store_true")
    ap.add_argument("--longctx", default=None, help="longctx binary to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunks-limit-gib", type=float, default=16.0,
                    help="skip sliding_chunks when its chunk-score tensor exceeds this")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.kv_heads is None:
        args.kv_heads = args.heads
    if args.heads % args.kv_heads:
        ap.error("--heads must be a multiple of --kv-heads")
    torch.set_num_threads(args.threads)
    scale = 1.0 / math.sqrt(args.d)

    print("torch %s, %d threads, %s; d=%d W=%d H=%d Hkv=%d globals=%d %s" % (
        torch.__version__, torch.get_num_threads(), platform.processor() or platform.machine(),
        args.d, args.window, args.heads, args.kv_heads, args.globals,
        "bidirectional" if args.bidirectional else "causal"))
    checks = check_small(args)
    for n, g, e in checks:
        print("check: sliding_chunks vs dense at n=%d (%d globals): max rel err %.2e" % (n, g, e))
    if max(e for _, _, e in checks) > 1e-5:
        print("ERROR: sliding_chunks disagrees with dense attention")
        return 1

    rows = []
    hdr = "%8s %-8s %10s %10s %12s %10s" % ("n", "impl", "time_s", "GFLOP/s", "longctx/peer", "err_vs_ref")
    print(hdr)
    for n in args.n:
        H, Hkv, d, W = args.heads, args.kv_heads, args.d, args.window
        G = global_positions(n, args.globals)
        pairs = allowed_pairs(n, W, G, args.bidirectional)
        flops = pairs * H * 4.0 * d
        q, k, v = make_inputs(n, H, Hkv, d)
        shape_rows = []
        ref = None

        def add_row(impl, t, out=None, note=""):
            r = dict(n=n, impl=impl, d=d, window=W, heads=H, kv_heads=Hkv, globals=len(G),
                     bidirectional=args.bidirectional, threads=args.threads, pairs=pairs * H,
                     flops=flops, time_s=t, gflops=(flops / t / 1e9) if t else None, note=note)
            if out is not None and ref is not None:
                r["rel_err_vs_dense"] = rel_err(out, ref)
            shape_rows.append(r)

        # (a) dense
        if n * n * 4 * H > DENSE_LIMIT_BYTES:
            reason = "score matrix %.1f GiB > 4 GiB" % (n * n * 4 * H / 2**30)
            print("%8d %-8s skipped: %s" % (n, "dense", reason))
            add_row("dense", None, note="skipped: " + reason)
        else:
            m = dense_mask(n, W, G, args.bidirectional)
            add = torch.zeros(n, n).masked_fill_(~m, float("-inf"))
            del m
            t, ref = best_time(lambda: dense_attention(q, k, v, add, scale), args.repeats)
            del add
            add_row("dense", t)
        # (b) sliding chunks
        plan = SlidingChunksPlan(n, W, args.bidirectional)
        chunk_bytes = H * (plan.N // plan.w - 1) * (2 * plan.w) ** 2 * 4
        if chunk_bytes > args.chunks_limit_gib * 2**30:
            reason = "chunk scores %.1f GiB > --chunks-limit-gib" % (chunk_bytes / 2**30)
            print("%8d %-8s skipped: %s" % (n, "chunks", reason))
            add_row("chunks", None, note="skipped: " + reason)
            chunks_out = None
        else:
            t, chunks_out = best_time(
                lambda: sliding_chunks_attention(q, k, v, G, plan, scale, args.bidirectional), args.repeats)
            add_row("chunks", t, chunks_out)
        if ref is None:
            ref = chunks_out
        # longctx
        if args.longctx:
            with tempfile.TemporaryDirectory(prefix="longctx_peer_") as tmp:
                try:
                    t, kt, out, cmd = run_longctx(os.path.abspath(args.longctx), q, k, v, G, W,
                                                  args.threads, args.bidirectional, args.repeats, tmp)
                    add_row("lc-proc", t, out, note="process wall time incl. start-up and .npy I/O")
                    shape_rows[-1]["command"] = cmd
                    if ref is not None:
                        shape_rows[-1]["rel_err_vs_peer"] = rel_err(out, ref)
                    # Last: the attention time the binary reports (the same work the peers time).
                    add_row("longctx", kt, out, note="attention time reported by the binary")
                    shape_rows[-1]["command"] = cmd
                    if ref is not None:
                        shape_rows[-1]["rel_err_vs_peer"] = rel_err(out, ref)
                except RuntimeError as e:
                    print("%8d %-8s failed: %s" % (n, "longctx", e))
                    add_row("longctx", None, note="failed: %s" % e)
            lt = shape_rows[-1]["time_s"]
            lp = shape_rows[-2]["time_s"] if len(shape_rows) >= 2 else None
            for r in shape_rows[:-2]:
                if lt and r["time_s"]:
                    r["longctx_over_peer"] = r["time_s"] / lt  # throughput ratio, attention time
                if lp and r["time_s"]:
                    r["longctx_process_over_peer"] = r["time_s"] / lp  # whole process
        for r in shape_rows:
            if r["time_s"] is None:
                continue
            err = r.get("rel_err_vs_dense", r.get("rel_err_vs_peer"))
            ratio = r.get("longctx_over_peer")
            print("%8d %-8s %10.4f %10.2f %12s %10s" % (
                n, r["impl"], r["time_s"], r["gflops"],
                ("%.2fx" % ratio) if ratio else "-", ("%.1e" % err) if err is not None else "-"))
        sys.stdout.flush()
        rows.extend(shape_rows)

    if args.longctx:
        print("note: 'longctx' is the attention time the binary reports, the same work the peers"
              " time; 'lc-proc' is the whole process (start-up + .npy read/write + compute);"
              " longctx/peer = peer time / longctx attention time (>1: longctx faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(tool="bench/peers/torch_attention.py", torch=torch.__version__,
                           host=platform.node(), threads=args.threads,
                           checks=[dict(n=n, globals=g, rel_err=e) for n, g, e in checks],
                           results=rows), f, indent=1)
        print("wrote %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
