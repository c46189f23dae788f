#!/usr/bin/python3
"""The model families (DESIGN.md section 7) against an independent float64 torch implementation.

Each case writes a family preset with `longctx mkmodel` (random weights in the real HF layout, a
tokenizer.json), edits its config.json where the case says (another rope type, the
rope_parameters spelling, dtype instead of torch_dtype, an eos_token_id list), runs
`longctx run --dump-hidden --dump-logits` on 1 process and under `mpirun -np 4`, and compares:

- hidden.npy and logits.npy of the 1-process run with the reference, and of the 4-rank run with
  the 1-process run: each within TOL relative (per row, inf-norm), the tolerance of a float32
  path against float64 over a few layers (the measured errors are printed, ~1e-6);
- the tokens: every generated token is the reference's argmax after the token before it, and 4
  ranks generate the same tokens as 1;
- that the case tests something: the reference with the family's feature removed (plain RoPE
  instead of the scaling, no biases, no q/k norm) differs from the run by more than ABLATE.

The reference reads config.json and model.safetensors itself (the format parsed here from its
definition) and computes from the published architectures: Llama (RMSNorm, rotate-half RoPE,
GQA, SwiGLU), Llama 3.x RoPE scaling (linear, dynamic NTK, llama3 wavelength bands, YaRN with its
attention factor), Qwen2 (q/k/v biases), Qwen3 (RMSNorm over head_dim per head on q and k before
RoPE, explicit head_dim), Mistral (sliding_window = the window), tied embeddings. The attention
mask is the hybrid mask of DESIGN.md section 1 (per-layer window, the run's globals, causal,
union or weighted:A) with the global positions the run wrote. Dynamic NTK's sequence length
(model/rope.h): the document's length for the document's tokens, position + 1 for a token
appended after the prefill.

Usage: test_family_reference.py --longctx build/launch/longctx
Prints "N passed, M failed" last; exit 0 only if all pass.
"""

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

MPIRUN = ["timeout", "300", "mpirun", "--oversubscribe", "--allow-run-as-root", "--mca", "btl",
          "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include",
          "lo", "--mca", "pml", "ob1"]
TOL = 1e-4     # float32 run vs float64 reference, relative per row
ABLATE = 1e-2  # the reference without the case's feature must differ by more than this

DOC = ("The parties agree as follows. First, the supplier delivers the goods; second, the buyer "
       "pays within thirty days!\n\nIs the warranty void if the seal is broken? It is. "
       "Notices go to the addresses above: London, Paris, Berlin.\n\nSigned, the parties. ") * 3
QUERY = "Who pays, and when?"


# The safetensors reader and RMSNorm of the plain-Llama reference (same directory, on sys.path
# when run as a script).
from test_model_reference import read_safetensors, rms_norm  # noqa: E402


# ---- RoPE: inverse frequencies from the published formulas -----------------------------------

def rope_settings(cfg):
    """(theta, scaling dict, type) from either spelling."""
    if cfg.get("rope_parameters") is not None:
        sc = dict(cfg["rope_parameters"])
        theta = sc.get("rope_theta", cfg.get("rope_theta", 10000.0))
    else:
        sc = dict(cfg.get("rope_scaling") or {})
        theta = cfg.get("rope_theta", 10000.0)
    kind = sc.get("rope_type", sc.get("type", "default"))
    return theta, sc, kind


def inv_freq(cfg, hd, seq_len, plain=False):
    """(inv_freq [hd/2], cos/sin multiplier) for a token computed at sequence length seq_len."""
    theta, sc, kind = rope_settings(cfg)
    if plain:
        kind = "default"
    two_i = torch.arange(0, hd, 2, dtype=torch.float64)
    f = sc.get("factor", 1.0)
    l0 = sc.get("original_max_position_embeddings") or cfg.get("max_position_embeddings")
    if kind == "default":
        return theta ** (-two_i / hd), 1.0
    if kind == "linear":  # positions / f
        return theta ** (-two_i / hd) / f, 1.0
    if kind == "dynamic":  # NTK: a larger base once the sequence outgrows L0
        base = theta
        if seq_len > l0:
            base = theta * ((f * seq_len / l0) - (f - 1)) ** (hd / (hd - 2))
        return base ** (-two_i / hd), 1.0
    if kind == "llama3":
        inv = theta ** (-two_i / hd)
        lo, hi = sc["low_freq_factor"], sc["high_freq_factor"]
        wavelen = 2 * math.pi / inv
        smooth = (l0 / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * inv / f + smooth * inv
        out = torch.where(wavelen > l0 / lo, inv / f, blended)
        return torch.where(wavelen < l0 / hi, inv, out), 1.0
    if kind == "yarn":
        if "factor" not in sc:
            f = cfg["max_position_embeddings"] / l0
        fast = sc.get("beta_fast") or 32.0
        slow = sc.get("beta_slow") or 1.0

        def corr(rot):  # the dimension that turns `rot` times over L0 positions
            return hd * math.log(l0 / (rot * 2 * math.pi)) / (2 * math.log(theta))
        low, high = corr(fast), corr(slow)
        if sc.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, hd - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(hd // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        extra = theta ** (-two_i / hd)
        inv = extra / f * ramp + extra * (1 - ramp)

        def mscale(s, m=1.0):
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
        if sc.get("attention_factor") is not None:
            att = sc["attention_factor"]
        elif sc.get("mscale") and sc.get("mscale_all_dim"):
            att = mscale(f, sc["mscale"]) / mscale(f, sc["mscale_all_dim"])
        else:
            att = mscale(f)
        return inv, att
    raise ValueError("rope type " + kind)


def rope_tables(cfg, hd, n_total, n_doc, plain=False):
    cos = torch.zeros(n_total, hd // 2, dtype=torch.float64)
    sin = torch.zeros_like(cos)
    cache = {}
    for p in range(n_total):
        seq = n_doc if p < n_doc else p + 1
        if seq not in cache:
            cache[seq] = inv_freq(cfg, hd, seq, plain)
        inv, att = cache[seq]
        cos[p] = torch.cos(p * inv) * att
        sin[p] = torch.sin(p * inv) * att
    return cos[:, None, :], sin[:, None, :]


def rope(x, cos, sin):  # x [n, heads, hd], rotate-half
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def attend(q, k, v, mask, scale):
    s = torch.einsum("ihd,jhd->hij", q, k) * scale
    s = s.masked_fill(~mask[None], float("-inf"))
    p = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)
    return torch.einsum("hij,jhd->ihd", p, v), mask.any(-1)


def reference(model_dir, ids, n_doc, globals_, windows, fusion, ablate=None):
    """Final-norm hidden states and logits, float64. ablate: a feature to leave out."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    mt = cfg.get("model_type", "llama")
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or (128 if mt == "qwen3" else D // H)
    eps = cfg.get("rms_norm_eps", 1e-6)
    n = len(ids)
    cos, sin = rope_tables(cfg, hd, n, n_doc, plain=ablate == "rope")
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
        q = h @ w[p + "self_attn.q_proj.weight"].T
        k = h @ w[p + "self_attn.k_proj.weight"].T
        v = h @ w[p + "self_attn.v_proj.weight"].T
        if mt == "qwen2" and ablate != "bias":  # Qwen2: biases on q, k, v (not o)
            q = q + w[p + "self_attn.q_proj.bias"]
            k = k + w[p + "self_attn.k_proj.bias"]
            v = v + w[p + "self_attn.v_proj.bias"]
        q, k, v = q.reshape(n, H, hd), k.reshape(n, Hkv, hd), v.reshape(n, Hkv, hd)
        if mt == "qwen3" and ablate != "qk_norm":  # Qwen3: RMSNorm per head, before RoPE
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        scale = 1.0 / math.sqrt(hd)
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
    if cfg.get("tie_word_embeddings", False):
        assert "lm_head.weight" not in w, "a tied checkpoint with its own lm_head"
        head = w["model.embed_tokens.weight"]
    else:
        head = w["lm_head.weight"]
    return hidden.numpy(), (hidden @ head.T).numpy()


def row_err(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float((np.abs(a - b).max(1) / np.maximum(np.abs(b).max(1), 1e-30)).max())


# ---- cases ------------------------------------------------------------------------------------

def set_rope_scaling(scaling, spelling="rope_scaling"):
    def edit(cfg):
        cfg.pop("rope_scaling", None)
        cfg.pop("rope_parameters", None)
        if spelling == "rope_parameters":
            scaling2 = dict(scaling)
            scaling2["rope_theta"] = cfg.pop("rope_theta")
            cfg["rope_parameters"] = scaling2
        else:
            cfg["rope_scaling"] = scaling
    return edit


def chain(*edits):
    def edit(cfg):
        for e in edits:
            e(cfg)
    return edit


def use_dtype_key(cfg):  # the newer spelling of torch_dtype
    cfg["dtype"] = cfg.pop("torch_dtype")


def short_context(length):
    def edit(cfg):
        cfg["max_position_embeddings"] = length
    return edit


GEN = ["--query", QUERY, "--generate", "12"]

CASES = [  # name, preset, dtype, config edit, run flags, fusion, feature ablated
    ("llama3 rope_scaling llama3", "llama3", "f32", None, GEN, "union", "rope"),
    ("llama3 linear (x4)", "llama3", "bf16",
     set_rope_scaling({"type": "linear", "factor": 4.0}), GEN, "union", "rope"),
    ("llama3 dynamic (x4, L0 64)", "llama3", "f32",
     chain(set_rope_scaling({"rope_type": "dynamic", "factor": 4.0}), short_context(64)), GEN,
     "union", "rope"),
    ("llama3 yarn (x8, L0 64, default attention factor)", "llama3", "f32",
     set_rope_scaling({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64,
                       "beta_fast": 32, "beta_slow": 1}), GEN, "union", "rope"),
    ("llama3 yarn in rope_parameters (x4, attention_factor 1.3, dtype key)", "llama3", "f16",
     chain(set_rope_scaling({"rope_type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 128, "attention_factor": 1.3},
                            "rope_parameters"), use_dtype_key), GEN, "union", "rope"),
    ("llama3 rope_parameters llama3", "llama3", "bf16",
     set_rope_scaling({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
                      "rope_parameters"), ["--window", "24"], "union", "rope"),
    ("qwen2 (q/k/v biases, tied embeddings)", "qwen2", "f16", None, GEN, "union", "bias"),
    ("qwen3 (q/k norm, head_dim 32)", "qwen3", "bf16", None,
     GEN + ["--fusion", "weighted:0.6"], "weighted:0.6", "qk_norm"),
    ("mistral (sliding_window 48)", "mistral", "f32", None, GEN, "union", None),
]


def run_longctx(binary, mdir, doc, out, ranks, flags, logits):
    cmd = [binary, "run", "--model", mdir, "--input", doc, "--out", out, "--dump-hidden",
           "--dump-logits", logits, "--threads", "1", "--progress", "off"] + flags
    if ranks > 1:
        cmd = MPIRUN + ["-np", str(ranks)] + cmd
    p = subprocess.run(cmd, capture_output=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), p.stderr.decode()[-2000:]))


def make_model(binary, tmp, name, preset, dtype, edit):
    mdir = os.path.join(tmp, "m_" + name)
    subprocess.run([binary, "mkmodel", "--out", mdir, "--preset", preset, "--dtype", dtype,
                    "--seed", "11"], check=True, capture_output=True, timeout=120)
    if edit:
        path = os.path.join(mdir, "config.json")
        cfg = json.load(open(path))
        edit(cfg)
        json.dump(cfg, open(path, "w"), indent=2)
    return mdir


def check_case(binary, tmp, doc, idx, case):
    name, preset, dtype, edit, flags, fusion, ablate = case
    mdir = make_model(binary, tmp, str(idx), preset, dtype, edit)
    outs = {}
    for ranks in (1, 4):
        out = os.path.join(tmp, "out_%d_%d" % (idx, ranks))
        run_longctx(binary, mdir, doc, out, ranks, flags, os.path.join(out + ".logits.npy"))
        outs[ranks] = out
    ids = np.load(os.path.join(outs[1], "tokens.npy"))
    globals_ = np.load(os.path.join(outs[1], "globals.npy"))
    report = json.load(open(os.path.join(outs[1], "report.json")))
    n_doc = report["tokens"] - report["query_tokens"] - report["generated_tokens"]
    h1 = np.load(os.path.join(outs[1], "hidden.npy"))
    h4 = np.load(os.path.join(outs[4], "hidden.npy"))
    l1 = np.load(outs[1] + ".logits.npy")
    l4 = np.load(outs[4] + ".logits.npy")
    assert l1.dtype == np.float32 and l1.shape == (len(ids), json.load(
        open(os.path.join(mdir, "config.json")))["vocab_size"]), "logits shape %s" % (l1.shape,)
    assert np.array_equal(np.load(os.path.join(outs[4], "tokens.npy")), ids), \
        "4 ranks generated other tokens than 1"
    assert np.array_equal(np.load(os.path.join(outs[4], "globals.npy")), globals_)
    ref_h, ref_l = reference(mdir, ids, n_doc, globals_, report["windows"], fusion)
    errs = {"hidden": row_err(h1, ref_h), "logits": row_err(l1, ref_l),
            "4 ranks hidden": row_err(h4, h1), "4 ranks logits": row_err(l4, l1)}
    ok = all(e <= TOL for e in errs.values())
    for t in range(n_doc, len(ids)):
        if t >= n_doc + report["query_tokens"] and int(np.argmax(ref_l[t - 1])) != int(ids[t]):
            print("  generated token %d is %d, the reference's argmax is %d"
                  % (t, ids[t], int(np.argmax(ref_l[t - 1]))))
            ok = False
    sensitivity = ""
    if ablate:
        _, abl_l = reference(mdir, ids, n_doc, globals_, report["windows"], fusion, ablate)
        e_abl = row_err(l1, abl_l)
        sensitivity = ", without %s %.2e" % (ablate, e_abl)
        if e_abl <= ABLATE:
            print("  the reference without %s is as close (%.2e): the case tests nothing"
                  % (ablate, e_abl))
            ok = False
    print("%s: %s [%s]: %s (windows %s, %d tokens, %d generated, %d globals%s)" % (
        "ok" if ok else "FAIL", name, dtype,
        ", ".join("%s %.2e" % kv for kv in errs.items()), report["windows"], len(ids),
        report["generated_tokens"], len(globals_), sensitivity))
    return ok


def check_eos_list(binary, tmp, doc):
    """eos_token_id as a list: generation stops at the first generated token in it."""
    mdir = make_model(binary, tmp, "eos", "llama3", "f32", None)
    out = os.path.join(tmp, "out_eos_free")
    cfg_path = os.path.join(mdir, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["eos_token_id"] = []  # none: the free run generates all 12
    json.dump(cfg, open(cfg_path, "w"))
    run_longctx(binary, mdir, doc, out, 1, GEN, out + ".logits.npy")
    rep = json.load(open(os.path.join(out, "report.json")))
    gen = np.load(os.path.join(out, "tokens.npy"))[rep["tokens"] - rep["generated_tokens"]:]
    assert len(gen) == 12, "the free run generated %d tokens" % len(gen)
    # The first token that did not occur before it, past the first: generation must stop there.
    firsts = [k for k in range(1, len(gen)) if gen[k] not in gen[:k]]
    assert firsts, "the free run generated one token over and over"
    expected = firsts[len(firsts) // 2]
    stop = int(gen[expected])
    cfg["eos_token_id"] = [cfg["vocab_size"] - 1, stop]  # the second entry of a list
    json.dump(cfg, open(cfg_path, "w"))
    for ranks in (1, 4):
        out = os.path.join(tmp, "out_eos_%d" % ranks)
        run_longctx(binary, mdir, doc, out, ranks, GEN, out + ".logits.npy")
        rep = json.load(open(os.path.join(out, "report.json")))
        got = rep["generated_tokens"]
        if got != expected:
            print("FAIL: eos_token_id list on %d rank(s): %d tokens generated, expected %d"
                  % (ranks, got, expected))
            return False
    print("ok: eos_token_id [%d, %d]: generation stops after %d tokens on 1 and 4 ranks"
          % (cfg["vocab_size"] - 1, stop, expected))
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--longctx", required=True)
    ap.add_argument("--only", help="run the cases whose name contains this")
    args = ap.parse_args()
    binary = os.path.abspath(args.longctx)
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="longctx_family_ref_") as tmp:
        doc = os.path.join(tmp, "doc.txt")
        with open(doc, "w") as f:
            f.write(DOC)
        checks = [(c[0], lambda i=i, c=c: check_case(binary, tmp, doc, i, c))
                  for i, c in enumerate(CASES)]
        checks.append(("eos_token_id list", lambda: check_eos_list(binary, tmp, doc)))
        for name, fn in checks:
            if args.only and args.only not in name:
                continue
            try:
                ok = fn()
            except Exception as e:  # noqa: BLE001 - report and count every failure
                print("FAIL: %s: %s" % (name, e))
                ok = False
            passed += ok
            failed += not ok
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
