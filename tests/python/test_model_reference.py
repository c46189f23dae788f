#!/usr/bin/python3
"""`longctx run` against an independent float64 implementation of the same transformer.

The reference reads the model directory itself (config.json, and model.safetensors parsed here
from the format's definition: 8-byte little-endian header length, JSON header, raw tensors) —
not through longctx — and computes in float64 with torch: embedding, per layer RMSNorm, Q/K/V
projections, rotate-half RoPE at absolute positions, hybrid attention with the dense mask of
DESIGN.md section 1 (window per layer, the run's globals, causal, union or weighted:A), output
projection, RMSNorm, SwiGLU MLP, final RMSNorm. It takes the token ids and global positions the
run wrote (tokens.npy, globals.npy); global selection has its own unit tests.

Checks, per case: hidden.npy of `longctx run` (1 process) vs the reference, and of
`mpirun -np 4 longctx run` vs the 1-process run, each within 1e-4 relative (per row, inf-norm).

Usage: test_model_reference.py --longctx build/launch/longctx
Prints "N passed, M failed" last; exit 0 only if all pass.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

MPIRUN = ["timeout", "300", "mpirun", "--oversubscribe", "--allow-run-as-root", "--mca", "btl",
          "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include",
          "lo", "--mca", "pml", "ob1"]
TOL = 1e-4


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen])
    data = blob[8 + hlen:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        raw = data[a:b]
        if meta["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif meta["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif meta["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32).astype(np.float64)
        else:
            raise ValueError("unsupported dtype " + meta["dtype"])
        out[name] = torch.from_numpy(arr.reshape(meta["shape"]).copy())
    return out


def rms_norm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rope(x, theta):  # x [n, heads, hd], rotate-half, positions 0..n-1
    n, _, hd = x.shape
    half = hd // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def attend(q, k, v, mask, scale):  # q [n,H,d], k/v [n,H,d], mask [n,n] bool
    s = torch.einsum("ihd,jhd->hij", q, k) * scale
    s = s.masked_fill(~mask[None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.nan_to_num(p, nan=0.0)
    return torch.einsum("hij,jhd->ihd", p, v), mask.any(-1)


def reference_hidden(model_dir, ids, globals_, windows, fusion):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim", D // H)
    eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    n = len(ids)
    x = w["model.embed_tokens.weight"][torch.as_tensor(ids, dtype=torch.long)]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    causal = j <= i
    isg = torch.zeros(n, dtype=torch.bool)
    isg[torch.as_tensor(globals_, dtype=torch.long)] = True
    weighted = fusion.startswith("weighted:")
    alpha = float(fusion.split(":")[1]) if weighted else 0.0
    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        W = windows[layer]
        win = causal & (j > i - W)
        glob = causal & (isg[None, :] | isg[:, None])
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, H, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, Hkv, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, Hkv, hd)
        q, k = rope(q, theta), rope(k, theta)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        scale = 1.0 / np.sqrt(hd)
        if not weighted:
            o, _ = attend(q, k, v, win | glob, scale)
        else:
            ow, _ = attend(q, k, v, win, scale)
            og, has = attend(q, k, v, glob, scale)
            o = torch.where(has[:, None, None], alpha * ow + (1 - alpha) * og, ow)
        x = x + o.reshape(n, H * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    hidden = rms_norm(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return hidden.numpy(), (hidden @ head.T).numpy()


def row_err(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float((np.abs(a - b).max(1) / np.maximum(np.abs(b).max(1), 1e-30)).max())


DOC = ("The parties agree as follows. First, the supplier delivers the goods; second, the buyer "
       "pays within thirty days!\n\nIs the warranty void if the seal is broken? It is. "
       "Notices go to the addresses above: London, Paris, Berlin.\n\nSigned, the parties. ") * 6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--longctx", required=True)
    args = ap.parse_args()
    binary = os.path.abspath(args.longctx)
    passed = failed = 0
    cases = [  # (preset, dtype, run flags, windows of the layers, fusion)
        ("tiny", "f32", [], None, "union"),
        ("tiny", "bf16", ["--window", "17", "--global-max", "12"], None, "union"),
        ("small", "f16", ["--fusion", "weighted:0.7", "--window", "9,40,9,40"], None, "weighted:0.7"),
        # A question against the cached document, then greedy generation: must equal one
        # forward pass over document + question + answer with the same globals.
        ("tiny", "f32", ["--query", "Who pays, and when?", "--generate", "24", "--window", "33"],
         None, "union"),
        ("small", "bf16", ["--generate", "16", "--fusion", "weighted:0.6", "--window", "5,70,5,70"],
         None, "weighted:0.6"),
    ]
    with tempfile.TemporaryDirectory(prefix="longctx_model_ref_") as tmp:
        doc = os.path.join(tmp, "doc.txt")
        with open(doc, "w") as f:
            f.write(DOC)
        for preset, dtype, flags, _, fusion in cases:
            name = "%s/%s %s" % (preset, dtype, " ".join(flags))
            try:
                mdir = os.path.join(tmp, "m_%s_%s" % (preset, dtype))
                subprocess.run([binary, "mkmodel", "--out", mdir, "--preset", preset, "--dtype",
                                dtype, "--seed", "7"], check=True, capture_output=True, timeout=120)
                outs = {}
                for ranks in (1, 4):
                    out = os.path.join(tmp, "out_%s_%s_%d" % (preset, dtype, ranks))
                    cmd = [binary, "run", "--model", mdir, "--input", doc, "--out", out,
                           "--dump-hidden", "--threads", "1", "--progress", "off"] + flags
                    if ranks > 1:
                        cmd = MPIRUN + ["-np", str(ranks)] + cmd
                    p = subprocess.run(cmd, capture_output=True, timeout=300)
                    if p.returncode != 0:
                        raise RuntimeError("%s failed: %s" % (" ".join(cmd), p.stderr.decode()[-2000:]))
                    outs[ranks] = out
                ids = np.load(os.path.join(outs[1], "tokens.npy"))
                globals_ = np.load(os.path.join(outs[1], "globals.npy"))
                report = json.load(open(os.path.join(outs[1], "report.json")))
                h1 = np.load(os.path.join(outs[1], "hidden.npy"))
                h3 = np.load(os.path.join(outs[4], "hidden.npy"))
                n_doc = len(DOC.encode())
                assert report["tokens"] == len(ids) == h1.shape[0], "token count"
                assert np.array_equal(np.load(os.path.join(outs[4], "globals.npy")), globals_)
                assert np.array_equal(np.load(os.path.join(outs[4], "tokens.npy")), ids), \
                    "4 ranks generated other tokens than 1"
                ref, logits = reference_hidden(mdir, ids, globals_, report["windows"], fusion)
                e_ref, e_ranks = row_err(h1, ref), row_err(h3, h1)
                ok = e_ref <= TOL and e_ranks <= TOL
                # Greedy decoding: each generated token is the argmax after the one before it.
                first_gen = n_doc + report["query_tokens"]
                for t in range(first_gen, len(ids)):
                    if int(np.argmax(logits[t - 1])) != int(ids[t]):
                        print("  generated token %d is %d, the reference's argmax is %d"
                              % (t, ids[t], int(np.argmax(logits[t - 1]))))
                        ok = False
                if len(ids) > n_doc:
                    q = report["query_tokens"]
                    assert all(p in set(globals_.tolist()) for p in range(n_doc, n_doc + q)), \
                        "query tokens must be global"
                print("%s: %s vs float64 reference %.2e, 4 ranks vs 1 %.2e (windows %s, %d globals, "
                      "%d tokens of which %d appended)" % ("ok" if ok else "FAIL", name, e_ref, e_ranks,
                      report["windows"], len(globals_), len(ids), len(ids) - n_doc))
                passed += ok
                failed += not ok
            except Exception as e:  # noqa: BLE001 - report and count every failure
                print("FAIL: %s: %s" % (name, e))
                failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
