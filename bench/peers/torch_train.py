#!/usr/bin/python3
"""The torch peer of `longctx bench train`: one training step's forward + backward of the same
model in python3-torch float32, what a user writes without longctx.

Model (Hugging Face Llama layout, the math of tests/python/grad_reference.py in float32): x =
embed[ids]; per layer h = RMSNorm(x) * w_in; q = rope(h Wq^T), k = rope(h Wk^T), v = h Wv^T
(rotate-half RoPE); o = hybrid attention (causal, the layer's window W, the globals, union fusion,
GQA as HF repeat_kv); x += o Wo^T; h2 = RMSNorm(x) * w_post; x += (silu(h2 Wg^T) * (h2 Wu^T)) Wd^T;
logits = RMSNorm(x) * w_final @ lm_head^T; loss = mean next-token cross-entropy; loss.backward().

Attention, two peers (bench/peers/torch_attention.py, whose differentiable functions are reused):
  dense   softmax(Q K^T * scale + mask) V with the DESIGN.md section 1 mask (union); skipped when
          the [H, n, n] scores exceed 4 GiB or autograd's saved score matrices would not fit
          in the memory available.
  chunks  Longformer sliding chunks for the band, extra score columns for the global keys and a
          dense pass for the global queries; skipped when its estimated saved tensors would not
          fit in the memory available.

Usage: torch_train.py --model DIR --ids ids.npy --globals globals.npy --threads T --repeats R
                      [--modes auto|dense|chunks|dense,chunks] [--json OUT]
Prints one line per peer and writes OUT: {"torch", "threads", "n", "peers": {name: {"loss",
"best_s", "median_s", "times_s"} or {"skipped": reason}}}. Times: forward + backward of the whole
model (parameter gradients set to None before each), best and median of R after one warm-up.
"""

import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_attention as ta  # noqa: E402  (the sliding-chunks functions; differentiable)

DENSE_SCORE_LIMIT = 4 << 30
EMBED, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"


def read_safetensors(path):
    """name -> float32 torch tensor (F32, F16, BF16, F64 on disk)."""
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
        raw, dt = data[a:b], meta["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "F64":
            arr = np.frombuffer(raw, dtype="<f8").astype(np.float32)
        else:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(meta["shape"]).copy())
    return out


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {}
    for fn in sorted(os.listdir(model_dir)):
        if fn.endswith(".safetensors"):
            w.update(read_safetensors(os.path.join(model_dir, fn)))
    layers = cfg["num_hidden_layers"]
    lc = cfg.get("longctx") or {}
    win = lc.get("window", cfg.get("sliding_window") or 64)
    windows = list(win) if isinstance(win, list) else [int(win)] * layers
    if len(windows) != layers:
        raise ValueError("%d windows for %d layers" % (len(windows), layers))
    if lc.get("fusion", "union") != "union":
        raise ValueError("the torch peer computes union fusion only, the model has %s" % lc["fusion"])
    if cfg.get("rope_scaling") not in (None, {}) or cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ValueError("the torch peer implements plain bias-free Llama with plain RoPE")
    if cfg.get("tie_word_embeddings", False) or LM_HEAD not in w:
        w.pop(LM_HEAD, None)
    return cfg, w, windows


class Model:
    def __init__(self, cfg, w, windows):
        self.D, self.H = cfg["hidden_size"], cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads") or self.H
        self.hd = cfg.get("head_dim") or self.D // self.H
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        self.L = cfg["num_hidden_layers"]
        self.windows = windows
        self.params = {k: v.clone().requires_grad_(True) for k, v in w.items()}

    def head(self):
        return self.params.get(LM_HEAD, self.params[EMBED])

    def rope_tables(self, n):
        half = self.hd // 2
        inv = 1.0 / (self.theta ** (torch.arange(0, half, dtype=torch.float64) * 2.0 / self.hd))
        ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
        return (torch.cos(ang)[:, None, :].float().contiguous(),
                torch.sin(ang)[:, None, :].float().contiguous())


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def loss_fn(m, ids, attend, cos, sin):
    """Mean next-token CE of the whole sequence; attend(q, k, v, layer) -> o [n, H, hd]."""
    P = m.params
    n = ids.shape[0]
    x = P[EMBED][ids]
    for layer in range(m.L):
        p = "model.layers.%d." % layer
        h = rms_norm(x, P[p + "input_layernorm.weight"], m.eps)
        q = rope((h @ P[p + "self_attn.q_proj.weight"].T).view(n, m.H, m.hd), cos, sin)
        k = rope((h @ P[p + "self_attn.k_proj.weight"].T).view(n, m.Hkv, m.hd), cos, sin)
        v = (h @ P[p + "self_attn.v_proj.weight"].T).view(n, m.Hkv, m.hd)
        o = attend(q, k, v, layer)
        x = x + o.reshape(n, m.H * m.hd) @ P[p + "self_attn.o_proj.weight"].T
        h2 = rms_norm(x, P[p + "post_attention_layernorm.weight"], m.eps)
        g = h2 @ P[p + "mlp.gate_proj.weight"].T
        u = h2 @ P[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ P[p + "mlp.down_proj.weight"].T
    logits = rms_norm(x, P["model.norm.weight"], m.eps) @ m.head().T
    return torch.nn.functional.cross_entropy(logits[:-1], ids[1:])


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def gib(b):
    return "%.1f GiB" % (b / 2.0 ** 30)


def dense_peer(m, n, G):
    """(attend, None) or (None, reason)."""
    scores = m.H * n * n * 4
    if scores > DENSE_SCORE_LIMIT:
        return None, "[H, n, n] scores %s > 4 GiB" % gib(scores)
    # autograd keeps each layer's probabilities; the backward holds about three more at its peak.
    need = scores * (m.L + 3) + n * n * 4 * len(set(m.windows))
    if need > 0.7 * mem_available():
        return None, "needs ~%s, %s available" % (gib(need), gib(mem_available()))
    masks = {}
    for W in set(m.windows):
        allowed = ta.dense_mask(n, W, G, False)
        masks[W] = torch.zeros(n, n).masked_fill_(~allowed, float("-inf"))
        del allowed
    scale = 1.0 / math.sqrt(m.hd)
    return (lambda q, k, v, layer: ta.dense_attention(q, k, v, masks[m.windows[layer]], scale)), None


def chunks_peer(m, n, G):
    need = 0
    for W in m.windows:
        N = max(((n + W - 1) // W) * W, 2 * W)
        # saved per layer: the band scores, probabilities and the skewed band (~5 x [H, N, 2W+1])
        # plus the global columns; the chunk scores [H, N/W-1, 2W, 2W] live transiently.
        need += 5 * m.H * N * (2 * W + 1 + len(G)) * 4
    W = max(m.windows)
    N = max(((n + W - 1) // W) * W, 2 * W)
    need += 2 * m.H * (N // W - 1) * 4 * W * W * 4
    if need > 0.7 * mem_available():
        return None, "needs ~%s, %s available" % (gib(need), gib(mem_available()))
    plans = {W: ta.SlidingChunksPlan(n, W, False) for W in set(m.windows)}
    scale = 1.0 / math.sqrt(m.hd)
    return (lambda q, k, v, layer: ta.sliding_chunks_attention(
        q, k, v, G, plans[m.windows[layer]], scale, False)), None


def time_step(m, ids, attend, cos, sin, repeats):
    times, loss = [], None
    for rep in range(repeats + 1):  # the first is the warm-up
        for p in m.params.values():
            p.grad = None
        t0 = time.perf_counter()
        out = loss_fn(m, ids, attend, cos, sin)
        out.backward()
        dt = time.perf_counter() - t0
        loss = float(out.detach())
        if rep > 0:
            times.append(dt)
    return loss, times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory (config.json, *.safetensors)")
    ap.add_argument("--ids", required=True, help="token ids (.npy, 1-D)")
    ap.add_argument("--globals", required=True, help="global positions (.npy, 1-D, sorted)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="auto", help="auto (both) | dense | chunks | dense,chunks")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg, w, windows = load_model(a.model)
    m = Model(cfg, w, windows)
    ids = torch.from_numpy(np.load(a.ids).astype(np.int64))
    G = np.load(a.globals).astype(np.int64)
    n = int(ids.shape[0])
    if n < 2:
        raise ValueError("a sequence needs at least 2 tokens")
    cos, sin = m.rope_tables(n)
    modes = ["dense", "chunks"] if a.modes == "auto" else a.modes.split(",")
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "n": n,
              "globals": int(len(G)), "peers": {}}
    for mode in modes:
        if mode == "dense":
            attend, why = dense_peer(m, n, G)
        elif mode == "chunks":
            attend, why = chunks_peer(m, n, G)
        else:
            raise ValueError("unknown mode %r (dense, chunks)" % mode)
        if attend is None:
            result["peers"][mode] = {"skipped": why}
            print("torch-%s n=%d: skipped (%s)" % (mode, n, why), flush=True)
            continue
        try:
            loss, times = time_step(m, ids, attend, cos, sin, a.repeats)
        except RuntimeError as e:  # out of memory, typically
            result["peers"][mode] = {"skipped": "failed: %s" % str(e).splitlines()[0][:200]}
            print("torch-%s n=%d: failed (%s)" % (mode, n, e), flush=True)
            continue
        finally:
            attend = None
        best, med = min(times), statistics.median(times)
        result["peers"][mode] = {"loss": loss, "best_s": best, "median_s": med, "times_s": times}
        print("torch-%s n=%d threads=%d: loss %.7f, fwd+bwd best %.4f s median %.4f s, %.0f tok/s"
              % (mode, n, a.threads, loss, best, med, n / best), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
