#!/usr/bin/python3
"""`longctx grad` against an independent float64 torch-autograd reference (grad_reference.py).

Self-check (also run alone with --self-check, no binary needed; cheap):
  1. the reference forward equals test_model_reference.py's forward (hidden and logits),
  2. torch.autograd.gradcheck of the whole loss (all four terms) on a tiny float64 model,
  3. hybrid attention (union and weighted), global-row entropy and the loss terms against naive
     per-row loops written from DESIGN.md section 1 / 6 (outputs and q/k/v gradients).

Against the binary (--longctx PATH): model dirs from `longctx mkmodel` edited here (random norm
weights, GQA variants, tied embeddings, a length head), byte-level token ids of English prose.
Per case: every tensor of grads.safetensors within 1e-4 relative L2 of the reference, the loss and
each loss term within 1e-5 relative; under `mpirun -np P` (P = 2, 3, 4; short shards, globals on
shard edges) every tensor within 1e-5 relative L2 of the 1-process run and the same globals.

Prints one line per check, "N passed, M failed" last; exit 0 only if all pass and some ran.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import grad_reference as gr  # noqa: E402

MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader,tcp",
          "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo", "--mca", "pml",
          "ob1"]
GRAD_TOL = 1e-4    # per tensor relative L2, longctx (fp32) vs float64 reference
LOSS_TOL = 1e-5    # loss and each term, relative
RANK_TOL = 1e-5    # per tensor relative L2, P ranks vs 1
MASK_DTYPE = np.int64

DOC = (
    "The committee met on a grey morning in March. Nobody expected the vote to be close, but the "
    "chairman had counted wrong; three members changed their minds overnight! Was it the weather, "
    "or the letter from the mayor? Nobody could say.\n\n"
    "In the afternoon the engineers presented their plan: a bridge of steel, four hundred metres "
    "long, with two lanes for cars and one for bicycles. The cost, they said, would be modest. "
    "The treasurer disagreed; he had seen such estimates before, and they always grew.\n\n"
    "By evening the room was tired. A compromise was proposed, then withdrawn, then proposed "
    "again. At last the members agreed to wait a month. The bridge would have to wait too.\n\n"
    "Outside, the river ran high and brown after the rain. Children threw sticks from the old "
    "wooden bridge and watched them race under it. It had stood for ninety years; it could "
    "stand a little longer, surely? The ferryman thought so, and he had seen every flood.\n\n")

# Punctuation-dense text: with a high --global-ratio nearly every other token is global, so
# globals fall on (or next to) every shard edge whatever the shard boundaries are.
DENSE = ("Red, green, blue; one: two. Yes! No? Up, down; left: right.\n\nA, b; c: d. E! F? ")

passed = 0
failed = 0


def check(ok, line):
    global passed, failed
    print(("ok:   " if ok else "FAIL: ") + line, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1
    return ok


def relerr(a, b):
    """||a - b|| / ||b||; absolute ||a - b|| when b is zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = float(np.linalg.norm(b))
    d = float(np.linalg.norm(a - b))
    return d / nb if nb > 0 else d


def token_ids(n, offset, text=DOC):
    data = (text * (1 + (n + offset) // len(text) + 1)).encode()
    return np.frombuffer(data[offset:offset + n], dtype=np.uint8).astype(np.int64)


# ============================================================================= self-check
def random_model(seed, D=16, H=4, Hkv=2, hd=4, I=24, L=2, V=64, tied=False, length_head=True,
                 windows=None):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, s=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * s

    w = {gr.EMBED: rnd(V, D)}
    for l in range(L):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = 1 + 0.3 * rnd(D)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.3 * rnd(D)
        w[p + "self_attn.q_proj.weight"] = rnd(H * hd, D, s=1 / math.sqrt(D))
        w[p + "self_attn.k_proj.weight"] = rnd(Hkv * hd, D, s=1 / math.sqrt(D))
        w[p + "self_attn.v_proj.weight"] = rnd(Hkv * hd, D, s=1 / math.sqrt(D))
        w[p + "self_attn.o_proj.weight"] = rnd(D, H * hd, s=1 / math.sqrt(H * hd))
        w[p + "mlp.gate_proj.weight"] = rnd(I, D, s=1 / math.sqrt(D))
        w[p + "mlp.up_proj.weight"] = rnd(I, D, s=1 / math.sqrt(D))
        w[p + "mlp.down_proj.weight"] = rnd(D, I, s=1 / math.sqrt(I))
    w["model.norm.weight"] = 1 + 0.3 * rnd(D)
    if not tied:
        w[gr.LM_HEAD] = rnd(V, D, s=1 / math.sqrt(D))
    if length_head:
        w[gr.LEN_W] = rnd(1, D, s=0.3)
        w[gr.LEN_B] = torch.tensor([0.5], dtype=torch.float64)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "hidden_size": D, "intermediate_size": I, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": Hkv, "head_dim": hd, "vocab_size": V,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tied}
    if windows is not None:
        cfg["longctx"] = {"window": windows}
    return w, cfg


def naive_attention_row(q, k, v, i, h, keys, scale, group):
    kh = h // group
    s = torch.stack([(q[i, h] * k[j, kh]).sum() * scale for j in keys])
    p = torch.softmax(s, 0)
    return sum(p[a] * v[j, kh] for a, j in enumerate(keys))


def naive_hybrid_attention(q, k, v, globals_, W, alpha):
    """Per query row and head, key sets written straight from DESIGN.md section 1."""
    n, H, d = q.shape
    group = H // k.shape[1]
    scale = 1.0 / math.sqrt(d)
    G = sorted(int(x) for x in globals_)
    rows = []
    for i in range(n):
        window = [j for j in range(max(0, i - W + 1), i + 1)]
        vis_g = [j for j in G if j <= i]
        allk = list(range(i + 1))
        heads = []
        for h in range(H):
            if alpha is None:
                keys = allk if i in G else sorted(set(window) | set(vis_g))
                heads.append(naive_attention_row(q, k, v, i, h, keys, scale, group))
            else:
                ow = naive_attention_row(q, k, v, i, h, window, scale, group)
                if i in G:
                    og = naive_attention_row(q, k, v, i, h, allk, scale, group)
                    heads.append(alpha * ow + (1 - alpha) * og)
                elif vis_g:
                    og = naive_attention_row(q, k, v, i, h, vis_g, scale, group)
                    heads.append(alpha * ow + (1 - alpha) * og)
                else:
                    heads.append(ow)
        rows.append(torch.stack(heads))
    return torch.stack(rows)


def naive_losses(w, cfg, ids, globals_, mask, weights, fusion, windows):
    """Loss terms with per-position / per-row loops over the reference forward's tensors."""
    f = gr.reference_forward(w, cfg, ids, globals_, fusion, windows)
    n = len(ids)
    m = np.ones(n, dtype=np.int64) if mask is None else np.asarray(mask)
    T = [t for t in range(n - 1) if m[t + 1] != 0]
    out = {}
    if "ce" in weights:
        out["ce"] = sum(-(f["logits"][t, ids[t + 1]] - torch.logsumexp(f["logits"][t], 0))
                        for t in T) / len(T)
    if "length" in weights:
        end = max(T) + 1
        out["length"] = sum((f["hidden"][t] @ w[gr.LEN_W][0] + w[gr.LEN_B][0]
                             - math.log(1 + end - t)) ** 2 for t in T) / len(T)
    if "entropy" in weights:
        # recompute q, k per layer with a plain loop to get the rows
        D, H, Hkv, hd, eps, theta = gr._dims(cfg)
        x = w[gr.EMBED][torch.as_tensor(ids)]
        ents = []
        for l in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % l
            hN = gr.rms_norm(x, w[p + "input_layernorm.weight"], eps)
            q = gr.rope((hN @ w[p + "self_attn.q_proj.weight"].T).reshape(n, H, hd), theta)
            k = gr.rope((hN @ w[p + "self_attn.k_proj.weight"].T).reshape(n, Hkv, hd), theta)
            for h in range(H):
                for i in globals_:
                    s = torch.stack([(q[i, h] * k[j, h // (H // Hkv)]).sum() / math.sqrt(hd)
                                     for j in range(i + 1)])
                    pr = torch.softmax(s, 0)
                    ents.append(-(pr * torch.log(pr)).sum())
            # continue the layer (attention by the naive row loop)
            vv = (hN @ w[p + "self_attn.v_proj.weight"].T).reshape(n, Hkv, hd)
            o = naive_hybrid_attention(q, k, vv, globals_, windows[l], gr.parse_fusion(fusion))
            x = x + o.reshape(n, H * hd) @ w[p + "self_attn.o_proj.weight"].T
            h2 = gr.rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            x = x + (torch.nn.functional.silu(h2 @ w[p + "mlp.gate_proj.weight"].T)
                     * (h2 @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        out["entropy"] = sum(ents) / len(ents)
    if "cache_l1" in weights:
        numel = sum(k.numel() for k in f["K"])
        out["cache_l1"] = (sum(k.abs().sum() for k in f["K"]) / numel
                           + sum(v.abs().sum() for v in f["V"]) / numel)
    return out


def self_check():
    import test_model_reference as tmr  # the existing independent forward reference
    torch.manual_seed(0)
    # 1. forward vs test_model_reference.py (reads the model dir itself)
    with tempfile.TemporaryDirectory(prefix="longctx_gradref_self_") as tmp:
        for tied, Hkv, fusion, windows in ((False, 2, "union", [5, 23]),
                                           (True, 1, "weighted:0.7", [9, 3]),
                                           (False, 4, "weighted:0.6", [64, 64])):
            w, cfg = random_model(11 + Hkv, Hkv=Hkv, tied=tied, length_head=False, V=256)
            d = os.path.join(tmp, "m%d%d" % (tied, Hkv))
            os.makedirs(d)
            gr.write_safetensors(os.path.join(d, "model.safetensors"), w, dtype="F32")
            json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
            wf = gr.read_safetensors(os.path.join(d, "model.safetensors"))
            ids = token_ids(90, 37)
            G = sorted(set([0, 1, 2, 3] + [i for i in range(90) if chr(ids[i]) in ".!?\n"]))
            hid, logits = tmr.reference_hidden(d, ids, np.array(G), windows, fusion)
            f = gr.reference_forward(wf, cfg, ids, G, fusion, windows)
            e = max(float(np.abs(f["hidden"].numpy() - hid).max() / np.abs(hid).max()),
                    float(np.abs(f["logits"].numpy() - logits).max() / np.abs(logits).max()))
            check(e < 1e-12, "self-check forward == test_model_reference (tied=%s Hkv=%d %s windows "
                  "%s, %d globals): max rel %.1e" % (tied, Hkv, fusion, windows, len(G), e))

    # 3a. attention vs naive per-row loops: outputs and q/k/v gradients
    n, H, Hkv, d = 14, 4, 2, 4
    q = torch.randn(n, H, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(n, Hkv, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(n, Hkv, d, dtype=torch.float64, requires_grad=True)
    R = torch.randn(n, H, d, dtype=torch.float64)
    for G, W, alpha in (([0, 6, 7, 11], 4, None), ([3, 9], 3, 0.7), ([5], 20, 0.7), ([], 2, 0.7),
                        ([0, 1, 2, 3, 4, 5, 13], 1, None), ([2, 13], 5, 0.3)):
        a = gr.hybrid_attention(q, k, v, G, W, alpha)
        b = naive_hybrid_attention(q, k, v, G, W, alpha)
        ga = torch.autograd.grad((a * R).sum(), [q, k, v])
        gb = torch.autograd.grad((b * R).sum(), [q, k, v])
        e = max([float((a - b).abs().max())] + [float((x - y).abs().max()) for x, y in zip(ga, gb)])
        check(e < 1e-12 and all(torch.isfinite(x).all() for x in ga),
              "self-check attention vs naive rows (globals %s, W %d, %s): max abs %.1e (out, dq, dk, dv)"
              % (G, W, "union" if alpha is None else "weighted:%g" % alpha, e))

    # 3b. loss terms vs naive loops (entropy rows, ce/length positions, cache-l1 sums)
    for tied, fusion, mask in ((False, "union", None), (True, "weighted:0.7", "tail")):
        w, cfg = random_model(5, tied=tied, V=64)
        ids = np.random.RandomState(3).randint(0, 64, size=16)
        G = [0, 4, 9, 15]
        m = None
        if mask == "tail":
            m = np.zeros(16, dtype=np.int64)
            m[11:] = 1
        weights = gr.parse_loss_spec("ce,length:0.5,entropy:0.2,cache-l1:0.1")
        terms, _ = gr.reference_losses(w, cfg, ids, G, m, weights, fusion, [3, 6])
        nterms = naive_losses(w, cfg, ids, G, m, weights, fusion, [3, 6])
        e = max(abs(float(terms[t]) - float(nterms[t])) / abs(float(nterms[t])) for t in nterms)
        check(e < 1e-12, "self-check loss terms vs naive loops (tied=%s %s mask=%s): max rel %.1e "
              "(%s)" % (tied, fusion, mask, e, ", ".join("%s %.4f" % (t, float(terms[t])) for t in terms)))

    # 2. gradcheck of the total loss with respect to every weight
    for tied, fusion, Hkv, fast in ((False, "weighted:0.7", 1, False), (True, "union", 2, True)):
        # full gradcheck (one finite difference per parameter) on a very small model; fast mode
        # (random directions) on a larger one
        D, H, hd, I = (4, 2, 2, 6) if not fast else (8, 4, 4, 12)
        w, cfg = random_model(9, D=D, H=H, Hkv=Hkv, hd=hd, I=I, L=2, V=20, tied=tied)
        ids = np.random.RandomState(4).randint(0, 20, size=12)
        G = [0, 5, 9]
        m = np.ones(12, dtype=np.int64)
        m[:3] = 0
        names = sorted(w)
        weights = gr.parse_loss_spec("ce,length:0.5,entropy:0.3,cache-l1:0.2")

        def fn(*ts):
            return gr.reference_losses(dict(zip(names, ts)), cfg, ids, G, m, weights, fusion,
                                       [3, 7])[1]
        inputs = tuple(w[k].clone().requires_grad_(True) for k in names)
        t0 = time.time()
        try:
            ok = torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5,
                                          fast_mode=fast)
            msg = ""
        except Exception as ex:  # noqa: BLE001
            ok, msg = False, str(ex)[:400]
        check(ok, "self-check gradcheck all terms (tied=%s %s Hkv=%d, %d params, fast_mode=%s, %.1fs)%s"
              % (tied, fusion, Hkv, sum(x.numel() for x in inputs), fast, time.time() - t0,
                 (": " + msg) if msg else ""))
        # and the public entry point returns the same gradients as autograd on fn
        terms, grads = gr.reference_loss_and_grads(w, cfg, ids, G, m, weights, fusion, [3, 7])
        loss = fn(*inputs)
        gs = torch.autograd.grad(loss, inputs)
        e = max(relerr(grads[k], g.numpy()) for k, g in zip(names, gs) if k in grads)
        check(e < 1e-13 and (gr.LM_HEAD not in grads) == tied and abs(terms["loss"] - float(loss)) < 1e-12,
              "self-check reference_loss_and_grads entry point (tied=%s): max rel %.1e" % (tied, e))


# ============================================================================= against the binary
def mkmodel(binary, tmp, name, preset="tiny", tied=False, hkv=None, length_head=False, seed=7):
    d = os.path.join(tmp, name)
    subprocess.run([binary, "mkmodel", "--out", d, "--preset", preset, "--dtype", "f32", "--seed",
                    str(seed)], check=True, capture_output=True, timeout=120)
    cfg_path, st_path = os.path.join(d, "config.json"), os.path.join(d, "model.safetensors")
    cfg = json.load(open(cfg_path))
    w = gr.read_safetensors(st_path, as_numpy=True)
    rs = np.random.RandomState(seed + 1000)
    D = cfg["hidden_size"]
    hd = cfg.get("head_dim") or D // cfg["num_attention_heads"]
    for k in list(w):  # random norm weights, so that dw and the w * dy paths are exercised
        if w[k].ndim == 1:
            w[k] = 1.0 + 0.25 * rs.randn(*w[k].shape)
    if hkv is not None:
        cfg["num_key_value_heads"] = hkv
        for l in range(cfg["num_hidden_layers"]):
            for p in ("k_proj", "v_proj"):
                w["model.layers.%d.self_attn.%s.weight" % (l, p)] = rs.randn(hkv * hd, D) / math.sqrt(D)
    if tied:
        cfg["tie_word_embeddings"] = True
        w.pop(gr.LM_HEAD, None)
    if length_head:
        w[gr.LEN_W] = 0.2 * rs.randn(1, D)
        w[gr.LEN_B] = np.array([0.7])
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    gr.write_safetensors(st_path, w)
    return d


def run_grad(binary, mdir, ids, out, flags, mask=None, ranks=1, timeout=300):
    os.makedirs(out, exist_ok=True)
    ids_path = os.path.join(out, "ids.npy")
    np.save(ids_path, np.asarray(ids, dtype=np.int64))
    cmd = [binary, "grad", "--model", mdir, "--input-ids", ids_path, "--out", out,
           "--threads", "1"] + flags
    if mask is not None:
        mpath = os.path.join(out, "mask.npy")
        np.save(mpath, np.asarray(mask, dtype=MASK_DTYPE))
        cmd += ["--loss-mask", mpath]
    if ranks > 1:
        cmd = ["timeout", str(timeout)] + MPIRUN + ["-np", str(ranks)] + cmd
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout + 30)
    if p.returncode != 0:
        raise RuntimeError("exit %d: %s\n%s" % (p.returncode, " ".join(cmd),
                                                 (p.stderr.decode(errors="replace") or
                                                  p.stdout.decode(errors="replace"))[-1500:]))
    report = json.load(open(os.path.join(out, "report.json")))
    globals_ = np.load(os.path.join(out, "globals.npy"))
    grads = gr.read_safetensors(os.path.join(out, "grads.safetensors"), as_numpy=True)
    return report, globals_, grads, time.time() - t0


def flag_value(flags, name, default=None):
    return flags[flags.index(name) + 1] if name in flags else default


def compare_to_reference(case, mdir, ids, mask, flags, report, globals_, grads):
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    w = gr.read_safetensors(os.path.join(mdir, "model.safetensors"))
    weights = gr.parse_loss_spec(flag_value(flags, "--loss", "ce"))
    fusion = flag_value(flags, "--fusion", (cfg.get("longctx") or {}).get("fusion", "union"))
    windows = gr.windows_for(cfg, flag_value(flags, "--window"))
    if "--logn-base" in flags:
        cfg.setdefault("longctx", {})["logn_base"] = int(flag_value(flags, "--logn-base"))
    if "--handicap" in flags:  # NATS@B:E,B:E
        nats, spans = flag_value(flags, "--handicap").split("@")
        cfg.setdefault("longctx", {})["_handicap"] = (
            float(nats), [tuple(int(x) for x in s.split(":")) for s in spans.split(",")])
    if "--position-skip" in flags:  # AT DISTANCE
        i = flags.index("--position-skip")
        cfg.setdefault("longctx", {})["_skip"] = (int(flags[i + 1]), int(flags[i + 2]))
    if "windows" in report and list(report["windows"]) != windows:
        check(False, "%s: report windows %s, expected %s" % (case, report["windows"], windows))
    n = len(ids)
    g = np.asarray(globals_, dtype=np.int64)
    check(g.ndim == 1 and np.all(np.diff(g) > 0) and (len(g) == 0 or (g[0] >= 0 and g[-1] < n)),
          "%s: globals.npy sorted, unique, in range (%d globals)" % (case, len(g)))
    t0 = time.time()
    terms, ref = gr.reference_loss_and_grads(w, cfg, ids, g, mask, weights, fusion, windows)
    tref = time.time() - t0
    # loss and terms
    errs = {"loss": abs(report.get("loss", float("nan")) - terms["loss"]) / max(abs(terms["loss"]), 1e-30)}
    got_terms = report.get("loss_terms", {})
    for t in gr.TERM_ORDER:
        if t in weights:
            errs[t] = abs(got_terms.get(t, float("nan")) - terms[t]) / max(abs(terms[t]), 1e-30)
    extra = sorted(set(got_terms) - set(weights))
    ok = all(e <= LOSS_TOL for e in errs.values()) and not extra
    check(ok, "%s: loss %.6f (ref %.6f), rel err %s%s" % (
        case, report.get("loss", float("nan")), terms["loss"],
        ", ".join("%s %.1e" % kv for kv in errs.items()),
        ("; unexpected terms %s" % extra) if extra else ""))
    # every gradient tensor
    missing = sorted(set(ref) - set(grads))
    unexpected = sorted(set(grads) - set(ref))
    bad, worst = [], ("", -1.0)
    for k in sorted(set(ref) & set(grads)):
        if tuple(grads[k].shape) != tuple(ref[k].shape):
            bad.append("%s shape %s, expected %s" % (k, list(grads[k].shape), list(ref[k].shape)))
            continue
        e = relerr(grads[k], ref[k])
        if not e <= GRAD_TOL:
            bad.append("%s rel L2 %.2e (|ref| %.3e, |got| %.3e)" % (k, e, np.linalg.norm(ref[k]),
                                                                   np.linalg.norm(grads[k])))
        if not e < worst[1]:
            worst = (k, e)
    ok = not bad and not missing and not unexpected
    check(ok, "%s: %d gradient tensors vs float64 reference, worst %s %.2e (reference %.1fs)%s%s" % (
        case, len(ref), worst[0], worst[1], tref,
        ("; missing %s" % missing) if missing else "",
        ("; unexpected %s" % unexpected) if unexpected else ""))
    for b in bad:
        print("        " + b)
    return ok


def compare_ranks(case, ranks, r1, rP):
    rep1, g1, gr1, _ = r1
    repP, gP, grP, dt = rP
    same_g = np.array_equal(g1, gP)
    lerr = abs(repP.get("loss", float("nan")) - rep1["loss"]) / max(abs(rep1["loss"]), 1e-30)
    bad, worst = [], ("", -1.0)
    if set(gr1) != set(grP):
        bad.append("tensor names differ: %s" % sorted(set(gr1) ^ set(grP)))
    for k in sorted(set(gr1) & set(grP)):
        if grP[k].shape != gr1[k].shape:
            bad.append("%s shape %s vs %s" % (k, grP[k].shape, gr1[k].shape))
            continue
        e = relerr(grP[k], gr1[k])
        if not e <= RANK_TOL:
            bad.append("%s rel L2 %.2e" % (k, e))
        if not e < worst[1]:
            worst = (k, e)
    if repP.get("ranks", ranks) != ranks:
        bad.append("report.json says %s ranks" % repP.get("ranks"))
    ok = same_g and lerr <= RANK_TOL and not bad
    check(ok, "%s: mpirun -np %d vs 1 process: globals %s, loss rel %.1e, worst tensor %s %.2e (%.1fs)"
          % (case, ranks, "equal" if same_g else "DIFFER (%s vs %s)" % (gP.tolist(), g1.tolist()),
             lerr, worst[0], worst[1], dt))
    for b in bad:
        print("        " + b)


def against_binary(binary, only=None, keep=None):
    tmp = keep or tempfile.mkdtemp(prefix="longctx_gradref_")
    os.makedirs(tmp, exist_ok=True)
    try:
        models = {}

        def model(key, **kw):
            if key not in models:
                models[key] = mkmodel(binary, tmp, key, **kw)
            return models[key]

        all_loss = "ce,length:0.5,entropy:0.2,cache-l1:0.05"
        # (name, model key, model kwargs, n, text offset, flags, mask tail length)
        cases = [
            ("tiny untied union ce default-window", "t_untied", {}, 400, 0, [], None),
            ("tiny weighted:0.7 W17 ce", "t_untied", {}, 300, 55, ["--fusion", "weighted:0.7",
                                                                  "--window", "17"], None),
            ("tiny Hkv=1 tied union W9,40 all-losses", "t_tied_kv1",
             dict(tied=True, hkv=1, length_head=True), 500, 130,
             ["--window", "9,40", "--loss", all_loss], None),
            ("tiny H=Hkv=4 weighted:0.7 W33 length-only", "t_kv4_len",
             dict(hkv=4, length_head=True), 260, 7, ["--fusion", "weighted:0.7", "--window", "33",
                                                     "--loss", "length:1"], None),
            ("tiny union W20 entropy-only", "t_untied", {}, 250, 300,
             ["--window", "20", "--loss", "entropy:1"], None),
            ("tiny weighted:0.7 W12,30 cache-l1-only", "t_tied_kv1",
             dict(tied=True, hkv=1, length_head=True), 200, 410,
             ["--fusion", "weighted:0.7", "--window", "12,30", "--loss", "cache-l1:1"], None),
            ("tiny union W25 ce+length masked tail answer", "t_kv4_len",
             dict(hkv=4, length_head=True), 350, 220,
             ["--window", "25", "--loss", "ce,length:0.3"], 60),
            ("tiny weighted:0.7 W48 n700 ce+entropy global-max 30", "t_untied", {}, 700, 90,
             ["--fusion", "weighted:0.7", "--window", "48", "--global-max", "30",
              "--loss", "ce,entropy:0.5"], None),
            ("tiny union W16 ce+entropy logn-base 16", "t_untied", {}, 400, 150,
             ["--window", "16", "--logn-base", "16", "--loss", "ce,entropy:0.5"], None),
            ("tiny union W16 ce handicap 2.5 nats on two spans", "t_untied", {}, 400, 150,
             ["--window", "16", "--handicap", "2.5@40:90,200:230"], None),
            ("tiny weighted:0.7 W20 ce+length handicap 1.5 nats", "t_kv4_len",
             dict(hkv=4, length_head=True), 300, 40,
             ["--fusion", "weighted:0.7", "--window", "20", "--loss", "ce,length:0.3",
              "--handicap", "1.5@100:160"], None),
            ("tiny union W16 ce position-skip 250 by 900000 + handicap", "t_untied", {}, 400, 150,
             ["--window", "16", "--position-skip", "250", "900000", "--handicap", "2@40:90"],
             None),
            ("small tied weighted:0.7 W5,70,5,70 all-losses", "s_tied_len",
             dict(preset="small", tied=True, length_head=True), 300, 600,
             ["--fusion", "weighted:0.7", "--window", "5,70,5,70", "--loss", all_loss], None),
        ]
        # distributed: short shards (n ~ 100, W 64 on up to 4 ranks), dense globals (many on
        # shard edges, sinks at the front)
        mpi_cases = [
            ("mpi tiny union W64 all-losses dense-globals ratio0.5", "t_tied_kv1",
             dict(tied=True, hkv=1, length_head=True), 100, 3,
             ["--window", "64", "--global-ratio", "0.5", "--loss", all_loss], None, DENSE),
            ("mpi tiny weighted:0.7 W64,9 ce+entropy masked sparse-globals", "t_untied", {}, 104,
             333, ["--fusion", "weighted:0.7", "--window", "64,9", "--global-ratio", "0.2",
                   "--loss", "ce,entropy:0.3"], 30, DOC),
            ("mpi tiny weighted:0.7 W64,9 all-losses dense-globals ratio0.4 sinks2", "t_kv4_len",
             dict(hkv=4, length_head=True), 97, 20,
             ["--fusion", "weighted:0.7", "--window", "64,9", "--global-ratio", "0.4",
              "--sinks", "2", "--loss", all_loss], 40, DENSE),
            ("mpi tiny weighted:0.7 W64,9 all-losses logn-base 8", "t_untied", {}, 101, 60,
             ["--fusion", "weighted:0.7", "--window", "64,9", "--global-ratio", "0.3",
              "--logn-base", "8", "--loss", "ce,entropy:0.3,cache-l1:0.05"], None, DENSE),
            # spans cut by every shard edge on 2-4 ranks (n 103: shards of ~26-52 tokens)
            ("mpi tiny union W64,9 ce+cache-l1 handicap 3 nats on three spans", "t_untied", {},
             103, 45, ["--window", "64,9", "--global-ratio", "0.4",
                       "--handicap", "3@5:30,40:60,70:99", "--loss", "ce,cache-l1:0.05"], None,
             DENSE),
            ("mpi tiny union W64,9 ce position-skip 61 by 1000000", "t_untied", {}, 103, 45,
             ["--window", "64,9", "--global-ratio", "0.4", "--position-skip", "61", "1000000"],
             None, DENSE),
        ]
        cases = [c + (DOC,) for c in cases]
        for idx, (name, key, kw, n, off, flags, tail, text) in enumerate(cases + mpi_cases):
            if only and only not in name:
                continue
            try:
                mdir = model(key, **kw)
                ids = token_ids(n, off, text)
                mask = None
                if tail is not None:
                    mask = np.zeros(n, dtype=np.int64)
                    mask[n - tail:] = 1
                out1 = os.path.join(tmp, "out%d_1" % idx)
                r1 = run_grad(binary, mdir, ids, out1, flags, mask)
                compare_to_reference(name, mdir, ids, mask, flags, r1[0], r1[1], r1[2])
                if name.startswith("mpi"):
                    for ranks in (2, 3, 4):
                        try:
                            rP = run_grad(binary, mdir, ids, os.path.join(tmp, "out%d_%d" % (idx, ranks)),
                                          flags, mask, ranks=ranks)
                            compare_ranks(name, ranks, r1, rP)
                        except Exception as e:  # noqa: BLE001
                            check(False, "%s: mpirun -np %d: %s" % (name, ranks, e))
            except Exception as e:  # noqa: BLE001 - report and count every failure
                check(False, "%s: %s" % (name, e))
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--longctx", help="path to the longctx binary")
    ap.add_argument("--self-check", action="store_true", help="only the reference's self-check")
    ap.add_argument("--only", help="run only cases whose name contains this")
    ap.add_argument("--keep", help="work in this directory and keep it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    if not args.only:
        try:
            self_check()
        except Exception as e:  # noqa: BLE001
            check(False, "self-check crashed: %s" % e)
    if not args.self_check:
        if not args.longctx:
            check(False, "--longctx PATH is required (or --self-check)")
        else:
            against_binary(os.path.abspath(args.longctx), args.only, args.keep)
    print("(%.1fs)" % (time.time() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
