"""Shared by the kill tests: start a child, wait for the flag file it writes at the point of
interest, then SIGKILL it."""

import os
import signal
import subprocess
import time


def kill_at_flag(argv, flag, cwd, what: str, timeout: float = 300.0) -> None:
    """Run ``argv``; once ``flag`` exists send SIGKILL; fail if the child exits first or ``what``
    (the point it should reach) never comes within ``timeout`` s."""
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not flag.exists():
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"the child never reached {what}"
            time.sleep(0.2)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
