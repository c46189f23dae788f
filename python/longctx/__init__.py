"""longctx from Python: the hybrid-attention kernel, the engine and the coordinator client.

- ``attention(q, k, v, window=64, globals=None, fusion="union", causal=True, scale=None)``:
  sliding-window + global-token attention on the CPU (the kernel ``longctx attention`` runs) over
  numpy arrays or torch tensors, read in place when their layout allows. Returns ``(out, lse)``.
- ``longctx.torch.HybridAttention``: the same kernel as a ``torch.autograd.Function`` (C++
  forward and backward).
- ``Engine(model_dir)``: a model in this process; ``prefill(text_or_ids)`` then
  ``ask(question, generate=N)`` — what ``longctx run`` computes, on one process.
- ``Client(address, token)``: submit jobs to a ``longctx coordinator`` and watch their events.

Every error is a ``longctx.Error`` whose ``.code`` names the status code ("InvalidArgument",
"NotFound", "Unavailable", ...) and whose ``.message`` is one line. See docs/python.md.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._arrays import check_shapes, describe, error, is_torch, positions

__all__ = ["Error", "attention", "staged_copies", "Engine", "Document", "Answer", "Client",
           "JobEvent", "JobResult"]
__version__ = "0.1.0"

#: The one exception type of longctx: ``.code`` (e.g. "InvalidArgument") and ``.message``.
Error = _core.Error


def attention(q: Any, k: Any, v: Any, window: int = 64, globals: Any = None,
              fusion: str = "union", causal: bool = True, scale: Optional[float] = None, *,
              threads: int = 0) -> Tuple[Any, Any]:
    """Hybrid sliding-window + global-token attention (DESIGN.md §1), fp32 accumulation.

    Args:
      q: ``[n, H, d]`` or ``[batch, n, H, d]`` queries; k, v: ``[.., n, Hkv, d]`` with
        ``H % Hkv == 0`` (grouped-query attention). float32, float16, bfloat16 (torch) or
        float64 (copied to float32). numpy arrays or CPU torch tensors (no autograd here: see
        longctx.torch.HybridAttention).
      window: W in tokens, >= 1. Causal: key j is in query i's window when i-W < j <= i;
        bidirectional: when |i-j| < W.
      globals: sorted unique positions in [0, n) (the same for every batch element). A global
        token is a key for every query that can see it, and a global query sees every key.
      fusion: "union" (one softmax over window and global keys) or "weighted:A"
        (A * window attention + (1-A) * global attention).
      causal: False for bidirectional attention.
      scale: softmax scale; None = 1/sqrt(d).
      threads: 0 = every core.

    Returns:
      ``(out, lse)``: out ``[.., n, H, d]`` and lse ``[.., n, H]`` (natural-log log-sum-exp of the
      scores over each query's keys; the union's for both fusions), float32, of the input's kind
      (numpy in, numpy out; torch in, torch out).

    Inputs whose last two axes are dense (head stride = d, element stride 1) are read in place
    (no copy); ``staged_copies()`` counts the inputs that had to be copied. Non-finite inputs
    raise longctx.Error.
    """
    g = positions(globals)
    (dq, keep_q), (dk, keep_k), (dv, keep_v) = describe(q, "q"), describe(k, "k"), describe(v, "v")
    check_shapes(dq[2], dk[2], dv[2])
    out_shape, lse_shape = dq[2], dq[2][:-1]
    if is_torch(q):
        import torch
        out = torch.empty(out_shape, dtype=torch.float32)
        lse = torch.empty(lse_shape, dtype=torch.float32)
        out_ptr, lse_ptr = out.data_ptr(), lse.data_ptr()
    else:
        out = np.empty(out_shape, dtype=np.float32)
        lse = np.empty(lse_shape, dtype=np.float32)
        out_ptr, lse_ptr = out.ctypes.data, lse.ctypes.data
    _core.attention(dq, dk, dv, g, int(window), str(fusion), bool(causal),
                    0.0 if scale is None else float(scale), int(threads), out_ptr, lse_ptr)
    del keep_q, keep_k, keep_v  # alive until the call returned
    return out, lse


def staged_copies() -> int:
    """How many attention inputs had to be copied (not token-major, or float64) since import."""
    return int(_core.staged_copies())


# ---- Engine ----------------------------------------------------------------------------------


@dataclass
class Document:
    """A prefilled document: its id, token count, global positions and the greedy next token."""
    doc_id: str
    tokens: int
    globals: List[int]
    next_token: int
    seconds: float


@dataclass
class Answer:
    """What ``Engine.ask`` produced.

    ``ids``: the appended tokens (the question's, then the generated ones), exactly the tail of
    the ``tokens.npy`` that ``longctx run --query Q --generate N`` writes; ``generated_ids`` the
    generated part; ``generated``: those tokens as bytes (``generated.txt``); ``text``: the same
    decoded as UTF-8 (invalid bytes replaced); ``globals``: positions of the appended tokens that
    joined the globals.
    """
    ids: List[int]
    generated_ids: List[int]
    generated: bytes
    text: str
    globals: List[int]
    query_tokens: int
    seconds: float
    first_token_seconds: float


def _as_bytes(text: Union[str, bytes], name: str) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise error("InvalidArgument", f"{name} must be str or bytes, got {type(text).__name__}")


class Engine:
    """A model loaded once in this process (worker::Engine over a one-rank communicator).

    ``model_dir``: a Hugging Face layout directory (config.json + model.safetensors, e.g. from
    ``longctx mkmodel``) or "builtin:tiny" / "builtin:small". Text is read as ``longctx run``
    reads it: with ``tokenizer`` (a tokenizer.json, a directory holding one, or "bytes"), else
    the model directory's tokenizer.json, else bytes (id = byte). The keyword options override
    the model's ``"longctx"`` block as the ``longctx run`` flags of the same names do; ``threads``
    0 = every core; ``kv_*`` are the decode cache's tiers (``--kv-codec`` etc.).

    One call runs at a time (calls from several threads wait for each other; a call from inside
    one of its own callbacks raises longctx.Error FailedPrecondition); the GIL is released while
    the engine computes.
    """

    def __init__(self, model_dir: Union[str, "os.PathLike[str]"] = "builtin:tiny", *,
                 seed: int = 0, threads: int = 0,
                 window: Union[None, int, Sequence[int]] = None,
                 global_ratio: Optional[float] = None, global_max: Optional[int] = None,
                 sinks: Optional[int] = None, fusion: Optional[str] = None,
                 query_globals: Optional[bool] = None, logn_base: Optional[int] = None,
                 tokenizer: Optional[str] = None, kv_codec: str = "f32",
                 kv_block_tokens: int = 64, kv_device_budget: Optional[str] = None,
                 kv_host_budget: Optional[str] = None) -> None:
        a = _core.EngineArgs()
        a.model = os.fspath(model_dir)
        a.seed = int(seed)
        a.threads = int(threads)
        if window is not None:
            scalar = isinstance(window, (int, np.integer))
            a.window = [int(window)] if scalar else [int(w) for w in window]
        a.global_ratio = global_ratio
        a.global_max = global_max
        a.sinks = sinks
        a.fusion = fusion
        a.query_globals = query_globals
        a.logn_base = logn_base
        a.tokenizer = None if tokenizer is None else os.fspath(tokenizer)
        a.kv_codec = kv_codec
        a.kv_block_tokens = int(kv_block_tokens)
        a.kv_device_budget = None if kv_device_budget is None else str(kv_device_budget)
        a.kv_host_budget = None if kv_host_budget is None else str(kv_host_budget)
        self._engine = _core.Engine(a)

    @property
    def config(self) -> Dict[str, Any]:
        """The model's vocab_size, hidden_size, num_hidden_layers, windows, fusion,
        eos_token_ids, and the tokenizer in use."""
        return dict(self._engine.config())

    def prefill(self, text_or_ids: Union[str, bytes, Sequence[int], Any], doc_id: str = "default",
                *, on_layer: Optional[Callable[[int, int], None]] = None) -> Document:
        """Prefills a document and keeps its KV cache under ``doc_id`` (replacing one of that id).

        ``text_or_ids``: str (encoded as UTF-8) or bytes, tokenized as ``longctx run --input``
        does (a tokenizer.json adds its BOS); or a sequence / 1-D array of token ids (as
        ``--input-ids``). ``on_layer(layer, layers)`` is called after each layer.
        """
        if isinstance(text_or_ids, (str, bytes, bytearray, memoryview)):
            info = self._engine.prefill(doc_id, _as_bytes(text_or_ids, "text"), None, on_layer)
        else:
            if is_torch(text_or_ids):
                text_or_ids = text_or_ids.detach().cpu().numpy()
            ids = np.asarray(text_or_ids)
            if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
                raise error("InvalidArgument",
                            f"token ids must be a 1-D sequence of integers, got dtype {ids.dtype} "
                            f"and {ids.ndim} dimension(s)")
            info = self._engine.prefill(doc_id, None, [int(i) for i in ids], on_layer)
        return Document(doc_id=info["doc_id"], tokens=info["tokens"], globals=list(info["globals"]),
                        next_token=info["next_token"], seconds=info["seconds"])

    def ask(self, question: Union[str, bytes] = "", generate: Union[int, str] = 0,
            doc_id: str = "default", *, max_generate: int = 256,
            on_token: Optional[Callable[[int, int], None]] = None) -> Answer:
        """Appends ``question`` (every token global) to the prefilled document ``doc_id``, then
        generates ``generate`` tokens greedily (or "auto": as many as the model's length head
        predicts, at most ``max_generate``). The document is left as it was prefilled, so every
        question sees only the document. ``on_token(token_id, index)`` sees each generated token
        as it is produced."""
        if generate == "auto":
            n = -1
        elif isinstance(generate, (int, np.integer)) and not isinstance(generate, bool):
            n = int(generate)
            if n < 0:
                raise error("InvalidArgument", f"generate must be >= 0 or 'auto', got {n}")
        else:
            raise error("InvalidArgument", f"generate must be an int or 'auto', got {generate!r}")
        r = self._engine.ask(doc_id, _as_bytes(question, "question"), n, int(max_generate),
                             on_token)
        ids = list(r["appended"])
        q = int(r["query_tokens"])
        gen = bytes(r["generated"])
        return Answer(ids=ids, generated_ids=ids[q:], generated=gen,
                      text=gen.decode("utf-8", errors="replace"),
                      globals=list(r["appended_globals"]), query_tokens=q, seconds=r["seconds"],
                      first_token_seconds=r["first_token_seconds"])

    def drop(self, doc_id: str = "default") -> None:
        """Frees a prefilled document's KV cache."""
        self._engine.drop(doc_id)

    def __contains__(self, doc_id: str) -> bool:
        return bool(self._engine.has(doc_id))

    def encode(self, text: Union[str, bytes], add_special_tokens: bool = True) -> List[int]:
        """Token ids of ``text`` with this engine's tokenizer."""
        return list(self._engine.encode(_as_bytes(text, "text"), add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> bytes:
        """The bytes of ``ids`` (UTF-8 for a tokenizer.json; raw bytes for the byte tokenizer)."""
        return bytes(self._engine.decode([int(i) for i in ids], skip_special_tokens))


# ---- Client ----------------------------------------------------------------------------------


@dataclass
class JobResult:
    """A finished job, as ``longctx submit --out`` writes it to result.json/generated.txt."""
    job_id: int
    group_id: str
    document_tokens: int
    globals: List[int]
    appended_tokens: List[int]
    generated: bytes
    text: str
    next_token: int
    prefilled: bool
    prefill_seconds: float
    first_token_seconds: float
    ms_per_token: float
    seconds: float
    comm_bytes: int


@dataclass
class JobEvent:
    """One event of a job as it arrives: kind is "queued", "started", "progress" (layer of
    layers), "token" (token id, index from 0), "result" (result set) or "failed" (error set)."""
    kind: str
    job_id: int
    layer: int = 0
    layers: int = 0
    token: int = 0
    index: int = 0
    group_id: str = ""
    error: str = ""
    result: Optional[JobResult] = None


def _job_result(d: Dict[str, Any], job_id: int, group_id: str) -> JobResult:
    gen = bytes(d["generated"])
    return JobResult(job_id=job_id, group_id=group_id, document_tokens=d["document_tokens"],
                     globals=list(d["globals"]), appended_tokens=list(d["appended_tokens"]),
                     generated=gen, text=gen.decode("utf-8", errors="replace"),
                     next_token=d["next_token"], prefilled=d["prefilled"],
                     prefill_seconds=d["prefill_seconds"],
                     first_token_seconds=d["first_token_seconds"], ms_per_token=d["ms_per_token"],
                     seconds=d["seconds"], comm_bytes=d["comm_bytes"])


def _job_event(d: Dict[str, Any]) -> JobEvent:
    result = d.get("result")
    return JobEvent(kind=d["kind"], job_id=d["job_id"], layer=d["layer"], layers=d["layers"],
                    token=d["token"], index=d["index"], group_id=d["group_id"], error=d["error"],
                    result=(None if result is None
                            else _job_result(result, d["job_id"], d["group_id"])))


def _fnv1a(data: bytes) -> int:
    """64-bit FNV-1a, as ``longctx submit`` names a document by its contents."""
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


class Client:
    """A client of ``longctx coordinator`` (what ``longctx submit`` / ``longctx status`` do).

    ``address``: "HOST:PORT". ``token``: the shared token; None reads ``token_file``, else the
    LONGCTX_TOKEN environment variable. ``timeout``: seconds each call may take (connecting gets
    at most 30 of them). One connection, opened on first use and again after an error; calls from
    several threads take turns.
    """

    def __init__(self, address: str = "127.0.0.1:7070", token: Optional[str] = None, *,
                 token_file: Union[str, "os.PathLike[str]"] = "", timeout: float = 3600.0) -> None:
        self._timeout = float(timeout)
        self._client = _core.Client(str(address), token, os.fspath(token_file))

    def submit(self, document: Union[None, str, bytes] = None, *, doc_id: Optional[str] = None,
               question: Union[str, bytes] = "", generate: int = 0,
               on_event: Optional[Callable[[JobEvent], None]] = None,
               timeout: Optional[float] = None) -> JobResult:
        """Runs one job to its end and returns its result.

        With ``document`` (str as UTF-8, or bytes; its bytes are the tokens): uploads it under
        ``doc_id`` (default: "doc-" + FNV-1a of the contents, as ``longctx submit``), prefills it,
        then answers. Without: ``question``/``generate`` on a document a worker group holds.
        ``on_event`` sees every event as it arrives (progress, each generated token, ...).
        A failed job raises longctx.Error with the coordinator's message.
        """
        doc = None if document is None else _as_bytes(document, "document")
        if doc_id is None:
            if doc is None:
                raise error("InvalidArgument", "give a document or the doc_id of a held one")
            doc_id = f"doc-{_fnv1a(doc):016x}"
        cb = None
        if on_event is not None:
            cb = lambda d: on_event(_job_event(d))  # noqa: E731
        d = self._client.submit(str(doc_id), doc, _as_bytes(question, "question"), int(generate),
                                self._timeout if timeout is None else float(timeout), cb)
        return _job_event(d).result  # type: ignore[return-value]

    def stream(self, document: Union[None, str, bytes] = None, **kwargs: Any) -> Iterator[JobEvent]:
        """``submit`` as an iterator: yields each JobEvent as it arrives (the last one is the
        "result" event); a failed job raises longctx.Error from the iterator. Leaving the loop
        early does not cancel the job (the coordinator has no cancel); its remaining events are
        dropped."""
        events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        stop = threading.Event()

        def on_event(e: JobEvent) -> None:
            if not stop.is_set():
                events.put(("event", e))

        def run() -> None:
            try:
                self.submit(document, on_event=on_event, **kwargs)
                events.put(("done", None))
            except BaseException as e:  # handed to the consumer
                events.put(("error", e))

        t = threading.Thread(target=run, name="longctx-stream", daemon=True)
        t.start()
        try:
            while True:
                what, x = events.get()
                if what == "event":
                    yield x
                elif what == "error":
                    raise x
                else:
                    return
        finally:
            stop.set()

    def status(self, job_id: int = 0, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The service's state: worker groups ("workers"), recent jobs ("jobs"), counts; with
        ``job_id`` also that job's record ("job", with its "result" when done)."""
        t = self._timeout if timeout is None else float(timeout)
        d = dict(self._client.status(int(job_id), t))
        job = d.get("job")
        if job is not None and job.get("result") is not None:
            job["result"] = _job_result(job["result"], job["job_id"], job["group_id"])
        return d

    def close(self) -> None:
        """Closes the connection (a later call opens a new one)."""
        self._client.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def __getattr__(name: str) -> Any:
    # `longctx.torch` without importing torch at `import longctx`.
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'longctx' has no attribute {name!r}")
