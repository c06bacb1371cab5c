"""Ports on 127.0.0.1 for the helper processes the developer tools start (servers,
peers, a Spark cluster): a free one, and waiting until something listens on it."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None,
              poll: float = 0.05) -> None:
    """Until something listens on port; an error if proc (the process meant to listen)
    exits first or nothing listens within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        if listening(port):
            return
        time.sleep(poll)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")
