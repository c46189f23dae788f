#!/usr/bin/python3
"""docs/python.md cannot rot (CTest `python_docs`, label reference: its examples use torch):

- every ```python block of the page runs, each in a fresh /usr/bin/python3 with the build tree's
  package, and exits 0 (the Client example against a coordinator and a one-process worker group
  started here, found through LONGCTX_COORDINATOR and LONGCTX_TOKEN as the page says);
- the install step the page documents, `cmake --install BUILD --component python`, installs a
  package that a fresh interpreter imports and runs from the installed place alone (into a
  DESTDIR under a temporary directory, so the test touches no system directory).
"""

import os
import re
import subprocess
import sys
import sysconfig
import tempfile

from pylongctx_testlib import LongctxTestCase, Service, main, need_bin

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "..", "docs", "python.md")
BUILD_DIR = os.environ.get("LONGCTX_BUILD_DIR", "")


def python_blocks(text):
    """(line number, code) of every ```python fenced block."""
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return blocks


class DocExamples(LongctxTestCase):
    @classmethod
    def setUpClass(cls):
        need_bin()
        cls.svc = Service(ranks=0).start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_every_python_block_runs(self):
        with open(DOC) as f:
            blocks = python_blocks(f.read())
        self.assertGreaterEqual(len(blocks), 7, "docs/python.md lost its examples")
        env = dict(os.environ, LONGCTX_COORDINATOR=self.svc.address, LONGCTX_TOKEN=self.svc.token)
        for line, code in blocks:
            with self.subTest(line=line), tempfile.TemporaryDirectory() as cwd:
                r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                                   capture_output=True, text=True, timeout=600)
                self.assertEqual(r.returncode, 0,
                                 f"docs/python.md:{line}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
                print(f"docs/python.md:{line}: ok ({len(r.stdout.splitlines())} lines of output)")


class InstallStep(LongctxTestCase):
    def test_cmake_install_component_python(self):
        if not BUILD_DIR:
            self.fail("LONGCTX_BUILD_DIR is not set (CTest passes the build directory)")
        with tempfile.TemporaryDirectory() as dest:
            env = dict(os.environ, DESTDIR=dest)
            r = subprocess.run(["cmake", "--install", BUILD_DIR, "--component", "python"],
                               env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            site = None
            for root, dirs, _ in os.walk(dest):
                if "longctx" in dirs and os.path.isfile(os.path.join(root, "longctx", "__init__.py")):
                    site = root
                    break
            self.assertIsNotNone(site, f"no longctx/ installed under {dest}")
            want = sysconfig.get_path("platlib", "posix_local")
            self.assertEqual(os.path.relpath(site, dest), want.lstrip("/"),
                             "installed outside the interpreter's local site directory")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env["PYTHONPATH"] = site
            code = ("import longctx, numpy as np; assert longctx.__file__.startswith(%r); "
                    "o, l = longctx.attention(np.ones((8, 2, 4), np.float32), "
                    "np.ones((8, 1, 4), np.float32), np.ones((8, 1, 4), np.float32), window=4); "
                    "assert abs(float(o.sum()) - 64.0) < 1e-4" % site)
            r = subprocess.run([sys.executable, "-c", code], env=env, cwd=dest,
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    main()
