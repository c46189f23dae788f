#!/usr/bin/python3
"""Independent float64 torch-autograd reference for the loss and weight gradients of longctx.

Written from the math (DESIGN.md section 1 and 6, the published Llama architecture), not from the
C++ code, so that it can check `longctx grad`. Importable:

    from grad_reference import (read_safetensors, write_safetensors, parse_loss_spec,
                                windows_for, reference_loss_and_grads, reference_forward)

Model (Hugging Face Llama layout): x = embed[ids]; per layer h = RMSNorm(x) * w_in;
q = rope(h Wq^T), k = rope(h Wk^T), v = h Wv^T (rotate-half RoPE, theta from config, positions
0..n-1); o = hybrid attention (window of that layer, the globals, causal, union or weighted:A,
GQA with query head h reading kv head h // (H / Hkv)); x += o Wo^T; h2 = RMSNorm(x) * w_post;
x += (silu(h2 Wg^T) * (h2 Wu^T)) Wd^T; hf = RMSNorm(x) * w_final; logits = hf lm_head^T
(lm_head = embed when tie_word_embeddings or when lm_head.weight is absent).

Losses (total = sum of weight * term over the enabled terms):
  ce       mean over T = {t < n-1 : mask[t+1] = 1} of -log softmax(logits_t)[ids[t+1]]
  length   mean over T of (hf_t . length_head.weight[0] + length_head.bias[0] - log(1+end-t))^2,
           end = max(T) + 1
  entropy  mean over (layer, query head, global position i) of the entropy (nats) of
           softmax_j(scale q_i . k_j) over all j <= i
  cache_l1 mean(|K|) + mean(|V|) over all layers and elements (K post-RoPE, [n, Hkv, hd] each)
"""

import json
import math
import struct

import numpy as np
import torch

LOSS_NAMES = {"ce": "ce", "length": "length", "entropy": "entropy", "cache-l1": "cache_l1",
              "cache_l1": "cache_l1"}
TERM_ORDER = ("ce", "length", "entropy", "cache_l1")
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"
LEN_W, LEN_B = "length_head.weight", "length_head.bias"


# ----------------------------------------------------------------------------- safetensors I/O
def read_safetensors(path, as_numpy=False):
    """name -> float64 torch tensor (or numpy array with as_numpy). F32, F16, BF16, F64."""
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
        dt = meta["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif dt == "F64":
            arr = np.frombuffer(raw, dtype="<f8").astype(np.float64)
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32).astype(np.float64)
        else:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        n_expect = int(np.prod(meta["shape"])) if meta["shape"] else 1
        if arr.size != n_expect:
            raise ValueError("%s: tensor %s has %d values for shape %s"
                             % (path, name, arr.size, meta["shape"]))
        arr = arr.reshape(meta["shape"]).copy()
        out[name] = arr if as_numpy else torch.from_numpy(arr)
    return out


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """Writes name -> array (numpy or torch) as safetensors (F32 by default; F16, BF16, F64)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, off = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        a = np.ascontiguousarray(a, dtype=np.float64)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F64":
            raw = a.astype("<f8").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":  # round to nearest even
            u = a.astype("<f4").view("<u4").astype(np.uint64)
            u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
            raw = u.tobytes()
        else:
            raise ValueError("unsupported dtype " + dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for c in chunks:
            f.write(c)


# ----------------------------------------------------------------------------- config helpers
def parse_loss_spec(spec):
    """'ce,length:0.5,entropy:0.1,cache-l1:0.01' -> {'ce': 1.0, 'length': 0.5, ...}."""
    out = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, w = item.partition(":")
        if name not in LOSS_NAMES:
            raise ValueError("unknown loss term %r" % name)
        out[LOSS_NAMES[name]] = float(w) if w else 1.0
    return out


def windows_for(config, window_flag=None):
    """Per-layer windows: the --window flag (one value or one per layer), else config
    longctx.window, else sliding_window, else 64."""
    layers = config["num_hidden_layers"]
    if window_flag is not None:
        vals = [int(x) for x in str(window_flag).split(",")] if not isinstance(window_flag, (list, tuple)) \
            else [int(x) for x in window_flag]
    else:
        w = (config.get("longctx") or {}).get("window")
        if w is None:
            w = config.get("sliding_window") or 64
        vals = list(w) if isinstance(w, (list, tuple)) else [int(w)]
    if len(vals) == 1:
        vals = vals * layers
    if len(vals) != layers:
        raise ValueError("%d windows for %d layers" % (len(vals), layers))
    return vals


def parse_fusion(fusion):
    """'union' -> None; 'weighted:A' -> A."""
    if fusion in (None, "", "union"):
        return None
    if fusion.startswith("weighted:"):
        return float(fusion.split(":", 1)[1])
    raise ValueError("unknown fusion %r" % fusion)


def _dims(config):
    D, H = config["hidden_size"], config["num_attention_heads"]
    Hkv = config.get("num_key_value_heads") or H
    hd = config.get("head_dim") or D // H
    if config.get("rope_scaling") not in (None, {}):
        raise ValueError("the gradient reference implements plain RoPE only (rope_scaling set)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ValueError("the gradient reference implements bias-free Llama only")
    return D, H, Hkv, hd, config.get("rms_norm_eps", 1e-6), config.get("rope_theta", 10000.0)


# ----------------------------------------------------------------------------- model pieces
def rms_norm(x, w, eps):
    return (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)) * w


def rope(x, theta, skip=None):
    """x [n, heads, hd]; rotate-half RoPE at absolute positions 0..n-1, or, with skip = (at,
    distance), positions i + distance for i >= at (the positional skip of `train
    --position-skip-to`)."""
    n, _, hd = x.shape
    half = hd // 2
    inv = 1.0 / (theta ** (torch.arange(0, half, dtype=torch.float64) * 2.0 / hd))
    pos = torch.arange(n, dtype=torch.float64)
    if skip:
        pos = pos + (pos >= skip[0]).to(torch.float64) * float(skip[1])
    ang = pos[:, None] * inv[None, :]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _masked_attention(q, k, v, mask, scale, bias=None):
    """q [n,H,d], k/v [n,H,d] (already expanded for GQA), mask [n,n] bool with every row
    non-empty, bias [n,n] added to the logits (None: none). Returns [n,H,d]."""
    s = torch.einsum("ihd,jhd->hij", q, k) * scale
    if bias is not None:
        s = s + bias[None]
    s = s.masked_fill(~mask[None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.einsum("hij,jhd->ihd", p, v)


def attention_masks(n, globals_, window):
    """(window mask, global-part mask, has-global rows, union mask, is-global) per DESIGN §1."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    causal = j <= i
    isg = torch.zeros(n, dtype=torch.bool)
    if len(globals_):
        isg[torch.as_tensor(np.asarray(globals_, dtype=np.int64))] = True
    win = causal & (j > i - window)
    # global part: a global query sees every visible key; other queries see the visible globals
    gpart = causal & (isg[None, :] | isg[:, None])
    union = win | gpart
    has = gpart.any(-1)
    return win, gpart, has, union, isg


def handicap_bias(n, globals_, handicap):
    """The simulated dilution of `train --dilute-to` / `grad --handicap`: handicap = (nats,
    [(begin, end), ...]); the logits of a global query (row in globals_) to a key in a span are
    lowered by nats. Returns [n, n] or None."""
    if not handicap or not len(globals_):
        return None
    nats, spans = handicap
    b = torch.zeros(n, n, dtype=torch.float64)
    g = torch.as_tensor(np.asarray(globals_, dtype=np.int64))
    for lo, hi in spans:
        b[g, lo:hi] = -float(nats)
    return b


def hybrid_attention(q, k, v, globals_, window, alpha, scale=None, handicap=None):
    """Hybrid causal attention. q [n,H,d], k/v [n,Hkv,d]; alpha None = union, else weighted:A;
    handicap: see handicap_bias (it touches the global queries' all-visible-keys softmax only)."""
    n, H, d = q.shape
    Hkv = k.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    win, gpart, has, union, _ = attention_masks(n, globals_, window)
    bias = handicap_bias(n, globals_, handicap)
    if alpha is None:
        return _masked_attention(q, k, v, union, scale, bias)
    ow = _masked_attention(q, k, v, win, scale)
    # Rows without a visible global get a dummy key (themselves) so that their softmax stays
    # finite (no NaN in the backward); their global part is discarded below.
    safe = gpart | (~has[:, None] & torch.eye(n, dtype=torch.bool))
    og = _masked_attention(q, k, v, safe, scale, bias)
    return torch.where(has[:, None, None], alpha * ow + (1.0 - alpha) * og, ow)


def global_row_entropy(q, k, globals_, scale=None):
    """Entropy (nats) of softmax_j(scale q_i.k_j) over all j <= i for every global i and every
    query head: returns [H, |G|]."""
    n, H, d = q.shape
    Hkv = k.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    g = torch.as_tensor(np.asarray(globals_, dtype=np.int64))
    k = k.repeat_interleave(H // Hkv, dim=1)
    s = torch.einsum("ghd,jhd->hgj", q[g], k) * scale
    vis = torch.arange(n)[None, :] <= g[:, None]  # [G, n]
    s = s.masked_fill(~vis[None], float("-inf"))
    logp = torch.log_softmax(s, dim=-1)
    p = torch.exp(logp)
    return -(p * logp.masked_fill(~vis[None], 0.0)).sum(-1)


def reference_forward(w, config, ids, globals_, fusion, windows):
    """Forward pass in float64. w: name -> tensor. Returns dict with hidden (final normed, [n,D]),
    logits [n,V], K and V (lists over layers of [n,Hkv,hd], K post-RoPE), entropy ([L,H,|G|])."""
    D, H, Hkv, hd, eps, theta = _dims(config)
    alpha = parse_fusion(fusion) if isinstance(fusion, str) or fusion is None else fusion
    n = len(ids)
    L = config["num_hidden_layers"]
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    x = w[EMBED][ids_t]
    scale = 1.0 / math.sqrt(hd)
    logn_base = int((config.get("longctx") or {}).get("logn_base", 0))
    Ks, Vs, ents = [], [], []
    for layer in range(L):
        p = "model.layers.%d." % layer
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        skip = (config.get("longctx") or {}).get("_skip")
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, H, hd), theta, skip)
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, Hkv, hd), theta, skip)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, Hkv, hd)
        if logn_base and len(globals_):
            # a global query at position i: logits x max(1, ln(i + 1) / ln(logn_base))
            gi = torch.as_tensor(np.asarray(globals_, dtype=np.int64))
            f = torch.clamp(torch.log(gi.to(torch.float64) + 1.0) / math.log(logn_base), min=1.0)
            qs = torch.ones(n, dtype=torch.float64)
            qs = qs.index_put((gi,), f)
            q = q * qs[:, None, None]
        Ks.append(k)
        Vs.append(v)
        if len(globals_):
            ents.append(global_row_entropy(q, k, globals_, scale))
        o = hybrid_attention(q, k, v, globals_, windows[layer], alpha, scale,
                             (config.get("longctx") or {}).get("_handicap"))
        x = x + o.reshape(n, H * hd) @ w[p + "self_attn.o_proj.weight"].T
        h2 = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h2 @ w[p + "mlp.gate_proj.weight"].T
        u = h2 @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    hf = rms_norm(x, w["model.norm.weight"], eps)
    head = w[LM_HEAD] if (LM_HEAD in w and not config.get("tie_word_embeddings", False)) else w[EMBED]
    return {"hidden": hf, "logits": hf @ head.T, "K": Ks, "V": Vs,
            "entropy": torch.stack(ents) if ents else None}


def loss_positions(n, mask):
    """T = {t in [0, n-1) : mask[t+1] = 1} (mask defaults to all ones)."""
    if mask is None:
        return np.arange(n - 1, dtype=np.int64)
    m = np.asarray(mask).reshape(-1)
    if len(m) != n:
        raise ValueError("mask has %d entries for %d tokens" % (len(m), n))
    return np.nonzero(m[1:] != 0)[0].astype(np.int64)


def reference_losses(w, config, ids, globals_, mask, loss_weights, fusion, windows):
    """Returns (terms: name -> 0-dim tensor for each enabled term, total: 0-dim tensor)."""
    f = reference_forward(w, config, ids, globals_, fusion, windows)
    n = len(ids)
    T = loss_positions(n, mask)
    Tt = torch.as_tensor(T)
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    terms = {}
    for name in loss_weights:
        if name not in TERM_ORDER:
            raise ValueError("unknown loss term %r" % name)
    if "ce" in loss_weights:
        if len(T) == 0:
            raise ValueError("ce: no predicted positions")
        logp = torch.log_softmax(f["logits"][Tt], dim=-1)
        terms["ce"] = -logp.gather(1, ids_t[Tt + 1][:, None]).mean()
    if "length" in loss_weights:
        if len(T) == 0:
            raise ValueError("length: no predicted positions")
        if LEN_W not in w or LEN_B not in w:
            raise ValueError("length loss needs length_head.weight and length_head.bias")
        end = int(T.max()) + 1
        pred = f["hidden"][Tt] @ w[LEN_W][0] + w[LEN_B][0]
        y = torch.log(1.0 + (end - Tt).to(torch.float64))
        terms["length"] = ((pred - y) ** 2).mean()
    if "entropy" in loss_weights:
        if f["entropy"] is None:
            raise ValueError("entropy: no global positions")
        terms["entropy"] = f["entropy"].mean()
    if "cache_l1" in loss_weights:
        terms["cache_l1"] = torch.stack(f["K"]).abs().mean() + torch.stack(f["V"]).abs().mean()
    total = sum(loss_weights[k] * terms[k] for k in TERM_ORDER if k in terms)
    return terms, total


def reference_loss_and_grads(model_dir_tensors, config, ids, globals_, mask, loss_weights, fusion,
                             windows):
    """model_dir_tensors: name -> tensor/array as in model.safetensors (plus optional length_head.*).
    config: parsed config.json. loss_weights: e.g. parse_loss_spec('ce,entropy:0.1').
    fusion: 'union' | 'weighted:A'. windows: one per layer (see windows_for).
    Returns (loss_terms, grads): loss_terms has each enabled term (ce, length, entropy, cache_l1)
    and 'loss' (the weighted total), as floats; grads maps every tensor name of the input
    (lm_head.weight absent when tied: its use is summed into the embedding) to a float64 numpy
    array of the same shape."""
    w = {}
    for name, t in model_dir_tensors.items():
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(np.asarray(t, dtype=np.float64))
        w[name] = t.detach().to(torch.float64).clone().requires_grad_(True)
    if config.get("tie_word_embeddings", False):
        w.pop(LM_HEAD, None)
    terms, total = reference_losses(w, config, ids, globals_, mask, loss_weights, fusion, windows)
    names = sorted(w)
    gs = torch.autograd.grad(total, [w[k] for k in names], allow_unused=True)
    grads = {}
    for k, g in zip(names, gs):
        grads[k] = (torch.zeros_like(w[k]) if g is None else g).detach().numpy()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["loss"] = float(total.detach())
    return out, grads
