"""Shared by the tests of the Python package (tests/python/test_python_*.py): the plain float64
numpy reference of hybrid attention (written from DESIGN.md §1, independently of the C++ code),
the longctx.Error checks, and a coordinator + worker group started and stopped by a test.

The tests import `longctx` from the build tree (CTest sets PYTHONPATH=<build>/python) and find
the `longctx` binary in LONGCTX_BIN.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from typing import List, Optional, Sequence, Tuple

import numpy as np

import longctx

BIN = os.environ.get("LONGCTX_BIN", "")
OUT_TOL = 1e-5  # max over (i, h) of ||O - R||_inf / ||R||_inf: docs/attention.md "Accuracy"
LSE_TOL = 1e-5  # |L - Lref| / max(1, |Lref|)


def masks(n: int, globals_: Sequence[int], window: int, causal: bool):
    """(window, global, union) boolean [n, n] masks: [i, j] = key j is in query i's set."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    visible = (j <= i) if causal else np.ones((n, n), bool)
    win = ((j <= i) & (j > i - window)) if causal else (np.abs(i - j) < window)
    isg = np.zeros(n, bool)
    isg[list(globals_)] = True
    glob = visible & (isg[None, :] | isg[:, None])  # a global key, or any key of a global query
    return win, glob, win | glob


def _attend(s: np.ndarray, mask: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Softmax over the masked scores s [n, n] of values v [n, d]: (o [n, d], lse [n]); an empty
    row gives o = 0 and lse = -inf."""
    m = np.where(mask, s, -np.inf)
    mx = m.max(axis=1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    p = np.where(mask, np.exp(m - mx), 0.0)
    z = p.sum(axis=1, keepdims=True)
    o = (p @ v) / np.where(z > 0, z, 1.0)
    with np.errstate(divide="ignore"):
        lse = (mx + np.log(z))[:, 0]
    return o, lse


def reference(q, k, v, globals_=(), window=64, fusion="union", causal=True, scale=None):
    """Float64 hybrid attention of q [n, H, d], k/v [n, Hkv, d]: (out [n, H, d], lse [n, H])."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    n, H, d = q.shape
    group = H // k.shape[1]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    alpha = None if fusion == "union" else float(fusion.split(":")[1])
    win, glob, union = masks(n, globals_, window, causal)
    out = np.zeros((n, H, d))
    lse = np.zeros((n, H))
    for h in range(H):
        kv = h // group
        s = scale * (q[:, h, :] @ k[:, kv, :].T)
        o_u, l_u = _attend(s, union, v[:, kv, :])
        lse[:, h] = l_u
        if alpha is None:
            out[:, h] = o_u
        else:
            o_w, _ = _attend(s, win, v[:, kv, :])
            o_g, l_g = _attend(s, glob, v[:, kv, :])
            has = np.isfinite(l_g)[:, None]
            out[:, h] = np.where(has, alpha * o_w + (1 - alpha) * o_g, o_w)
    return out, lse


def max_rel_error(out, ref) -> float:
    """max over rows (all leading axes) of ||out - ref||_inf / max(||ref||_inf, 1e-30)."""
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    err = np.abs(out - ref).max(axis=-1)
    mag = np.maximum(np.abs(ref).max(axis=-1), 1e-30)
    return float((err / mag).max())


def max_lse_error(lse, ref) -> float:
    lse = np.asarray(lse, np.float64)
    ref = np.asarray(ref, np.float64)
    return float((np.abs(lse - ref) / np.maximum(1.0, np.abs(ref))).max())


class LongctxTestCase(unittest.TestCase):
    """assertError: the call raises longctx.Error with the code and a one-line message."""

    def assertError(self, fn, code: Optional[str] = "InvalidArgument",
                    contains: Optional[str] = None):
        with self.assertRaises(longctx.Error) as cm:
            fn()
        e = cm.exception
        if code is not None:
            self.assertEqual(e.code, code, str(e))
        self.assertTrue(e.message, "empty message")
        self.assertNotIn("\n", str(e))
        self.assertEqual(str(e), f"{e.code}: {e.message}")
        if contains is not None:
            self.assertIn(contains, e.message)
        return e


def need_bin(test: Optional[unittest.TestCase] = None) -> str:
    """The longctx binary; a test without it fails (no skipping)."""
    if not BIN or not os.access(BIN, os.X_OK):
        msg = f"LONGCTX_BIN={BIN!r} is not an executable (CTest passes the built binary)"
        if test is not None:
            test.fail(msg)
        raise RuntimeError(msg)
    return BIN


# ---- a coordinator and a worker group on loopback -------------------------------------------

MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader,tcp",
          "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
          "--mca", "pml", "ob1"]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Service:
    """`longctx coordinator` and a worker group (`mpirun -np N longctx worker`, or one plain
    process when ranks == 0), each with a deadline to come up; stop() ends them by pid."""

    def __init__(self, ranks: int = 2, model: Optional[str] = None):
        self.dir = tempfile.mkdtemp(prefix="longctx-py-svc-")
        self.token = os.urandom(24).hex()
        self.token_file = os.path.join(self.dir, "token")
        with open(self.token_file, "w") as f:
            f.write(self.token + "\n")
        os.chmod(self.token_file, 0o600)
        # The worker groups have a token of their own (a client token cannot register one).
        self.worker_token_file = os.path.join(self.dir, "worker-token")
        with open(self.worker_token_file, "w") as f:
            f.write(os.urandom(24).hex() + "\n")
        os.chmod(self.worker_token_file, 0o600)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: List[subprocess.Popen] = []
        self.logs: List[str] = []
        self.ranks = ranks
        self.model = model

    def _spawn(self, argv: List[str], log: str) -> subprocess.Popen:
        path = os.path.join(self.dir, log)
        self.logs.append(path)
        env = dict(os.environ)
        env.pop("LONGCTX_TOKEN", None)
        env.setdefault("LONGCTX_COMM_TIMEOUT_S", "60")
        p = subprocess.Popen(argv, stdout=open(path, "w"), stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def start(self, deadline_s: float = 90.0) -> "Service":
        coord_log = os.path.join(self.dir, "coord.log")
        self._spawn([BIN, "coordinator", "--listen", self.address, "--token-file", self.token_file,
                     "--worker-token-file", self.worker_token_file,
                     "--state-dir", os.path.join(self.dir, "state")], "coord.log")
        end = time.time() + 15
        while "listening on" not in open(coord_log).read():
            if time.time() > end or self.procs[0].poll() is not None:
                raise RuntimeError("coordinator did not start: " + open(coord_log).read())
            time.sleep(0.1)
        worker = [BIN, "worker", "--coordinator", self.address,
                  "--worker-token-file", self.worker_token_file, "--threads", "1"]
        if self.model:
            worker += ["--model", self.model]
        if self.ranks > 0:
            worker = MPIRUN + ["-np", str(self.ranks)] + worker
        self._spawn(worker, "workers.log")
        client = longctx.Client(self.address, self.token, timeout=10)
        end = time.time() + deadline_s
        while True:
            try:
                if len(client.status()["workers"]) >= 1:
                    break
            except longctx.Error:
                pass
            if time.time() > end or self.procs[1].poll() is not None:
                raise RuntimeError("worker group did not register: " + self.log_tail())
            time.sleep(0.2)
        client.close()
        return self

    def log_tail(self) -> str:
        return " | ".join(f"{os.path.basename(p)}: {open(p).read()[-600:]}" for p in self.logs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15)
                except ProcessLookupError:
                    pass
        end = time.time() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    """unittest.main with verbose output; exits non-zero on any failure, and also when no test
    ran to completion (every test skipped, or a filter that matches nothing): a test file that
    checks nothing must not pass. Python 3.11's unittest exits 0 on "Ran 0 tests"."""
    program = unittest.main(module="__main__", verbosity=2, argv=[sys.argv[0]] + sys.argv[1:],
                            exit=False)
    result = program.result
    ran = result.testsRun - len(result.skipped)
    if not result.wasSuccessful():
        sys.exit(1)
    if ran <= 0:
        print("FAIL: no test ran (%d run, %d skipped)" % (result.testsRun, len(result.skipped)))
        sys.exit(1)
    sys.exit(0)
