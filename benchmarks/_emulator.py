"""Start `python -m aiodots.testing` in its own process and read its URL."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """Run the emulator in a child process (so its CPU and memory are not counted as the
    client's) and yield its base URL; it is stopped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiodots.testing", "--port", "0", "--no-record", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("DOTS_BASE_URL="):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield line.split("=", 1)[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
