"""Issue 20 (7): `explainer inspect | head` ends quietly when the reader closes the pipe."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_closed_stdout_pipe_is_a_quiet_exit():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shortcut = str(ROOT / "models" / "shortcut" / "model.onnx")
    # the reader is gone before the first write (as `head` after its lines): every write fails with EPIPE
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "explainer", "inspect", "--model", shortcut, "--json"],
                              stdout=write, stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(write)
    assert done.stderr.decode() == "" and done.returncode == 0
