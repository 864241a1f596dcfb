"""Shared pieces of the distributed tests: free ports, bounded subprocesses, process watching."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def free_ports(n: int, address: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports, the first ``n - 1`` consecutive-safe (each checked on its own)."""
    found: list[int] = []
    while len(found) < n:
        p = free_port(address)
        if p not in found and p + 1 not in found and p - 1 not in found:
            found.append(p)
    return found


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs) -> list[psutil.Process]:
    """The processes of ``procs`` still running (zombies count as gone)."""
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


class Watched:
    """A subprocess started in its own session, its descendants recorded while it runs, and
    everything killed at the end whatever happens (tests must never leave processes behind)."""

    def __init__(self, argv, *, cwd, env=None, log: Path | None = None):
        self.log = log
        self._out = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}
        self.cmdlines: dict[int, list[str]] = {}

    def scan(self) -> list[psutil.Process]:
        found = descendants(self.proc.pid)
        for p in found:
            self.seen.setdefault(p.pid, p)
            # Re-read every scan: a process seen between fork and exec still shows its parent's
            # command line, so the first reading alone can miss what it became.
            try:
                cmdline = p.cmdline()
            except psutil.Error:
                cmdline = []
            if cmdline or p.pid not in self.cmdlines:
                self.cmdlines[p.pid] = cmdline
        return found

    def wait(self, timeout: float, poll: float = 0.2, until=None) -> int | None:
        """Wait for exit (or for ``until()`` to become true); returns the exit code or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.scan()
            rc = self.proc.poll()
            if rc is not None:
                return rc
            if until is not None and until():
                return None
            time.sleep(poll)
        return self.proc.poll()

    def output(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def kill(self) -> None:
        self.scan()
        for p in [psutil.Process(self.proc.pid)] if self.proc.poll() is None else []:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        for p in alive(self.seen.values()):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._out is not subprocess.DEVNULL:
            self._out.close()


@pytest.fixture
def watched(tmp_path):
    """Factory of Watched subprocesses, all killed when the test ends."""
    made: list[Watched] = []

    def start(argv, *, cwd=None, env=None, name="proc"):
        w = Watched(argv, cwd=cwd or tmp_path, env=env, log=tmp_path / f"{name}-{len(made)}.log")
        made.append(w)
        return w

    yield start
    for w in made:
        w.kill()


PY = sys.executable


@pytest.fixture
def helpers():
    """The helpers above, for test modules (``--import-mode=importlib`` cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(free_port=free_port, free_ports=free_ports, descendants=descendants, alive=alive,
                           PY=PY, ROOT=ROOT)
