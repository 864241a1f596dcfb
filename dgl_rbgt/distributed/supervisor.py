"""A process supervisor with torchrun's failure semantics, for any set of commands on any hosts.

If any process fails, every process it started is stopped (SIGTERM, then SIGKILL after ``grace``
seconds) and the run ends non-zero, naming the first failure (host, role, rank, exit code, pid) as
the root cause. Ctrl-C and SIGTERM stop everything the same way. Nothing restarts.

How processes are run:

- every command runs under the **guard** (:mod:`.guard`, as ``python -c``), which stops the
  command's whole process group when its stdin closes (the supervisor died, or ssh dropped) or
  when it is signalled, and reports the command's exit and peak memory;
- a **local** host (an address of this machine) runs the guard as a subprocess in a new session,
  so the supervisor can signal the whole process group;
- a host with ``run_via`` runs ``run_via + guard argv`` (namespaces, containers, schedulers);
- any other host is reached with ``ssh -o BatchMode=yes`` (never prompts); the remote command is
  the guard argv, each word quoted with :func:`shlex.quote`.

No shell string is ever built for a local process: commands are argv lists. Nothing here knows
about DistDGL: :mod:`.launcher` describes that job.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional, Sequence

from ..errors import UserError
from . import guard
from .guard import GUARD_ENDED, GUARD_MARK

__all__ = ["Proc", "Transport", "LocalTransport", "PrefixTransport", "SshTransport", "Launcher",
           "LaunchResult", "GUARD_SOURCE", "guard_argv", "find_used_ports", "probe_ports", "describe_exit",
           "exit_status"]

logger = logging.getLogger(__name__)

# The guard program, sent as ``python -c`` source so a host needs no checkout to run it.
GUARD_SOURCE = Path(guard.__file__).read_text()


def guard_argv(python: str, workdir: str, grace: float, env: dict[str, str], command: Sequence[str]) -> list[str]:
    """The argv that runs ``command`` under the guard on a host."""
    for key in env:
        if not key or "=" in key:
            raise ValueError(f"bad environment variable name {key!r}")
    return [python, "-c", GUARD_SOURCE, workdir, repr(float(grace)),
            *[f"{k}={v}" for k, v in env.items()], "--", *command]


# ---- transports ---------------------------------------------------------------------------------

class Transport:
    """How a command reaches a host: turns the guard argv into the argv to run here."""

    kind = "local"

    def argv(self, guarded: list[str]) -> list[str]:
        return guarded


class LocalTransport(Transport):
    kind = "local"


@dataclass
class PrefixTransport(Transport):
    prefix: list[str]
    kind = "run_via"

    def argv(self, guarded: list[str]) -> list[str]:
        return [*self.prefix, *guarded]


@dataclass
class SshTransport(Transport):
    address: str
    user: Optional[str] = None
    port: int = 22
    kind = "ssh"

    def argv(self, guarded: list[str]) -> list[str]:
        target = f"{self.user}@{self.address}" if self.user else self.address
        # BatchMode: fail instead of prompting; keepalives: notice a dead peer within ~30 s.
        return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=10",
                "-o", "ServerAliveCountMax=3", "-p", str(self.port), "--", target, "exec " + shlex.join(guarded)]


# ---- processes ----------------------------------------------------------------------------------

@dataclass
class Proc:
    """One process to start on one host.

    ``daemon`` processes (DistDGL servers) are expected to keep running until the others finish;
    once every non-daemon process has exited with status 0 they get ``daemon_exit_timeout``
    seconds to exit on their own (servers do when the trainers shut them down), then are stopped.
    """

    host: str
    role: str
    rank: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    transport: Transport = field(default_factory=LocalTransport)
    python: str = sys.executable
    workdir: str = field(default_factory=os.getcwd)
    daemon: bool = False
    # filled in while running
    popen: Optional[subprocess.Popen] = field(default=None, repr=False)
    returncode: Optional[int] = None
    peak_rss_kb: Optional[int] = None
    peak_pss_kb: Optional[int] = None  # sampled; shared pages split between the processes sharing them
    child_pid: Optional[int] = None
    command_exit: Optional[int] = None  # the command's own exit status, from the guard's first line
    command_ended: Optional[float] = None  # when that line arrived (the launcher's clock)
    traceback_at: Optional[float] = None  # when its first Python traceback began (the launcher's clock)
    started: float = 0.0
    ended: Optional[float] = None
    stopped_by_launcher: bool = False
    reader: Optional[threading.Thread] = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.host} {self.role} {self.rank}"

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen else None

    @property
    def exit_code(self) -> Optional[int]:
        """The command's own exit status when the guard reported it, else the guard's."""
        return self.command_exit if self.command_exit is not None else self.returncode

    @property
    def failed(self) -> bool:
        return self.exit_code not in (None, 0)

    @property
    def failed_at(self) -> float:
        """When the failure became known: the first traceback the command printed, else the
        guard's first line, else the guard's own exit. A trainer prints its traceback when the
        exception reaches its entry point, but exits only after its sampler processes are gone;
        meanwhile a peer whose collective breaks can fail and exit first."""
        if self.command_ended is not None:
            ended = self.command_ended
        else:
            ended = self.ended if self.ended is not None else float("inf")
        return ended if self.traceback_at is None else min(self.traceback_at, ended)


def _split_guard_line(line: str, mark: str) -> tuple[str, dict[str, str]]:
    """The command's output before ``mark`` (a guard line may be glued to output without a
    newline) and the guard's ``key=value`` fields after it."""
    line, _, stats = line.rpartition(mark)
    return line, dict(item.split("=", 1) for item in stats.split() if "=" in item)


def describe_exit(code: int) -> str:
    """``exit code 3`` / ``killed by SIGKILL (-9)``; 128+N from a guard or shell also decoded."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} ({code})"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 128:
        try:
            return f"exit code {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def exit_status(code: int) -> int:
    """A shell-style exit status for the launcher: the child's code, or 128 + signal."""
    return 128 - code if code < 0 else code


@dataclass
class LaunchResult:
    returncode: int
    failure: Optional[Proc]  # the first process that failed (root cause), if any
    interrupted: Optional[str]  # signal name when the launcher was asked to stop
    procs: list[Proc]

    def table(self) -> list[dict]:
        return [{"host": p.host, "role": p.role, "rank": p.rank, "pid": p.child_pid or p.pid,
                 "returncode": p.returncode, "stopped_by_launcher": p.stopped_by_launcher,
                 "peak_rss_mb": None if p.peak_rss_kb is None else round(p.peak_rss_kb / 1024, 1),
                 "peak_pss_mb": None if not p.peak_pss_kb else round(p.peak_pss_kb / 1024, 1),
                 "seconds": None if p.ended is None else round(p.ended - p.started, 2)} for p in self.procs]


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: Seconds the other processes get to report their exits once one has failed, before the root
#: cause is chosen among them (a peer of a killed process can fail a fraction of a second first).
FAILURE_SETTLE = 1.0

#: Signals that come from outside a process (the OOM killer, ``kill``, a scheduler), as opposed
#: to the ones a process raises itself when it aborts or crashes (SIGABRT, SIGSEGV, SIGBUS).
_SENT_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})

#: The first line of a Python traceback (``traceback.print_exc``).
TRACEBACK_START = "Traceback (most recent call last):"


class Launcher:
    """Runs ``procs`` (in order), streams their output prefixed with ``[host role rank]``, and
    stops all of them when one fails or the launcher is interrupted.

    Parameters
    ----------
    procs : list of Proc
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.
    out : text stream
        Where prefixed log lines go (default ``sys.stdout``).
    daemon_exit_timeout : float
        Seconds daemons (servers) get to exit on their own after the other processes finished.
    daemon_start_interval : float
        Seconds between starting one daemon and the next (the others start without waiting).
    """

    def __init__(self, procs: list[Proc], *, grace: float = 10.0, out: IO[str] | None = None,
                 daemon_exit_timeout: float = 30.0, poll: float = 0.05, daemon_start_interval: float = 0.0):
        if not procs:
            raise ValueError("nothing to launch: procs is empty")
        self.procs = procs
        self.grace = grace
        self.out = out if out is not None else sys.stdout
        self.daemon_exit_timeout = daemon_exit_timeout
        self.daemon_start_interval = daemon_start_interval
        self.poll = poll
        self._lock = threading.Lock()

    # ---- output ----
    def emit(self, text: str) -> None:
        with self._lock:
            try:
                self.out.write(text if text.endswith("\n") else text + "\n")
                self.out.flush()
            except (OSError, ValueError):
                # Our own output is gone (closed pipe, full disk): keep draining the children's
                # pipes anyway, or they would block on their next write and hang the job.
                pass

    def _read(self, proc: Proc) -> None:
        prefix = f"[{proc.label}] "
        stream = proc.popen.stdout
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if GUARD_ENDED in line:  # the command ended
                line, fields = _split_guard_line(line, GUARD_ENDED)
                try:
                    proc.child_pid = int(fields["pid"])
                    proc.command_exit = int(fields["exit"])
                except (KeyError, ValueError):
                    pass
                else:
                    proc.command_ended = time.monotonic()
                if not line:
                    continue
            if GUARD_MARK in line:  # the guard's last line
                line, fields = _split_guard_line(line, GUARD_MARK)
                try:
                    proc.peak_rss_kb = int(fields["maxrss_kb"])
                    proc.peak_pss_kb = int(fields.get("maxpss_kb", 0))
                    proc.child_pid = int(fields["pid"])
                except (KeyError, ValueError):
                    pass
                if not line:
                    continue
            if proc.traceback_at is None and line.startswith(TRACEBACK_START):
                proc.traceback_at = time.monotonic()
            self.emit(prefix + line)
        stream.close()

    # ---- start / stop ----
    def _start(self, proc: Proc) -> None:
        argv = proc.transport.argv(guard_argv(proc.python, proc.workdir, self.grace, proc.env, proc.command))
        try:
            proc.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise UserError(f"cannot start {proc.role} {proc.rank} on {proc.host}: {argv[0]}: {exc.strerror}") from None
        proc.started = time.monotonic()
        proc.reader = threading.Thread(target=self._read, args=(proc,), daemon=True, name=f"log {proc.label}")
        proc.reader.start()
        self.emit(f"launch: started {proc.role} {proc.rank} on {proc.host} ({proc.transport.kind}), pid {proc.pid}")

    def _signal(self, proc: Proc, sig: int) -> None:
        if proc.popen is None or (proc.popen.poll() is not None and sig != signal.SIGKILL):
            return
        try:
            os.killpg(proc.popen.pid, sig)  # the process group the new session made
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self) -> None:
        """SIGTERM every running process group (and close stdin: remote guards stop on EOF), wait up
        to ``grace`` seconds, SIGKILL the rest, and reap every group."""
        running = [p for p in self.procs if p.popen is not None and p.popen.poll() is None]
        for p in running:
            # A guard whose command has ended is only cleaning up and exits by itself; a SIGTERM
            # now could land while Python shuts down (default handlers again) and hide its status.
            if p.command_exit is None:
                p.stopped_by_launcher = True
                self._signal(p, signal.SIGTERM)
            try:
                p.popen.stdin.close()
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + self.grace
        while any(p.popen.poll() is None for p in running) and time.monotonic() < deadline:
            time.sleep(self.poll)
        for p in self.procs:
            if p.popen is None:
                continue
            # SIGKILL the group even when its leader exited: nothing it started may outlive us.
            self._signal(p, signal.SIGKILL)
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass
            self._note_exit(p)

    def _note_exit(self, proc: Proc) -> None:
        if proc.popen is not None and proc.returncode is None and proc.popen.poll() is not None:
            proc.returncode = proc.popen.returncode
            proc.ended = time.monotonic()

    def _wait(self, seconds: float, asked: list[int]) -> None:
        """Sleep ``seconds``, or until a stop signal arrives or a started process fails."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not asked:
            for proc in self.procs:
                self._note_exit(proc)
            if any(p.failed for p in self.procs):
                return
            time.sleep(self.poll)

    def _note_exits(self) -> None:
        for proc in self.procs:
            if proc.popen is not None and proc.returncode is None and proc.popen.poll() is not None:
                self._note_exit(proc)
                self._signal(proc, signal.SIGKILL)  # leftovers of a finished group

    def _root_cause(self) -> Proc:
        """The failure to report, once one is known.

        A peer whose connection to a killed trainer breaks exits at once with an error of its own,
        and its report can reach us first. So the others get :data:`FAILURE_SETTLE` seconds to
        report too; a process killed by a signal sent from outside (the OOM killer, a user's
        ``kill``) is then the cause, else the earliest failure (:attr:`Proc.failed_at`: its first
        traceback, or its exit). A process that aborts or crashes by itself (SIGABRT from a C++
        ``terminate`` when its peer's socket closes, SIGSEGV) is a failure like any other.
        """
        deadline = time.monotonic() + FAILURE_SETTLE
        while time.monotonic() < deadline:
            time.sleep(self.poll)
            self._note_exits()
        failed = [p for p in self.procs if p.failed]
        killed = [p for p in failed if p.exit_code < 0 and -p.exit_code in _SENT_SIGNALS]
        return min(killed or failed, key=lambda p: p.failed_at)

    # ---- the run ----
    def run(self) -> LaunchResult:
        failure: Optional[Proc] = None
        interrupted: Optional[str] = None
        # Stop signals only set a flag (checked between steps), so no exception can land between
        # starting a child and recording it.
        asked: list[int] = []
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in _STOP_SIGNALS:
                handlers[sig] = signal.signal(sig, lambda signum, frame: asked.append(signum))
        daemons_deadline: Optional[float] = None
        try:
            started_daemon = False
            for proc in self.procs:
                if proc.daemon and started_daemon:
                    self._wait(self.daemon_start_interval, asked)
                if asked or any(p.failed for p in self.procs):
                    break  # the loop below reports the failure
                self._start(proc)
                started_daemon = started_daemon or proc.daemon
            while not asked:
                self._note_exits()
                # The root cause is the earliest failure, not the first guard to exit: a guard
                # cleans up its command's leftovers (sampler pools) for up to two seconds, while
                # a peer that fails because of it may exit at once.
                failed = [p for p in self.procs if p.failed]
                if failed:
                    failure = self._root_cause()
                    break
                workers = [p for p in self.procs if not p.daemon]
                if all(p.returncode is not None for p in self.procs):
                    break
                if workers and all(p.returncode == 0 for p in workers):
                    if daemons_deadline is None:
                        daemons_deadline = time.monotonic() + self.daemon_exit_timeout
                    elif time.monotonic() > daemons_deadline:
                        left = [p.label for p in self.procs if p.returncode is None]
                        self.emit(f"launch: {', '.join(left)} still running {self.daemon_exit_timeout:.0f} s "
                                  f"after the trainers finished; stopping them")
                        break
                time.sleep(self.poll)
        except KeyboardInterrupt:  # only when handlers could not be installed (not the main thread)
            asked.append(signal.SIGINT)
        finally:
            if asked:
                interrupted = signal.Signals(asked[0]).name
                self.emit(f"launch: {interrupted} received; stopping every process")
            if failure is not None:
                if failure.reader is not None and failure.child_pid is None:
                    failure.reader.join(timeout=2)  # its last line carries the command's pid
                self.emit(f"launch: {failure.role} {failure.rank} on host {failure.host} failed "
                          f"({describe_exit(failure.exit_code)}, pid {failure.child_pid or failure.pid}); "
                          f"stopping the other processes")
            try:
                self.stop_all()
                for proc in self.procs:
                    if proc.reader is not None:
                        proc.reader.join(timeout=2)
            finally:
                for sig, old in handlers.items():
                    signal.signal(sig, old)
        if interrupted:
            code = 128 + signal.Signals[interrupted].value
        elif failure is not None:
            code = exit_status(failure.exit_code)
        else:
            code = 0
        return LaunchResult(code, failure, interrupted, self.procs)


# ---- ports --------------------------------------------------------------------------------------

def find_used_ports(address: str, ports: Sequence[int]) -> list[int]:
    """Ports on ``address`` that cannot be bound here (something listens there already).

    Binds with SO_REUSEADDR like the DistDGL and torch servers do, so a port in TIME_WAIT from a
    previous run counts as free and only a live listener counts as used.
    """
    used = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                used.append(port)
    return used


_PROBE_SOURCE = r'''
import socket, sys
addr, used = sys.argv[1], []
for port in map(int, sys.argv[2:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
    except OSError:
        used.append(str(port))
    finally:
        s.close()
print(" ".join(used))
sys.exit(3 if used else 0)
'''


def probe_ports(address: str, ports: Sequence[int], transport: Transport, python: str = sys.executable,
                timeout: float = 60.0) -> list[str]:
    """Try binding ``ports`` on ``address`` on the host itself (through ``transport``); returns the
    ones in use. Raises UserError when the host cannot be reached."""
    if isinstance(transport, LocalTransport):
        return [str(p) for p in find_used_ports(address, ports)]
    argv = transport.argv([python, "-c", _PROBE_SOURCE, address, *map(str, ports)])
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        raise UserError(f"host {address}: checking its ports took more than {timeout:.0f} s "
                        f"({transport.kind}); is the host reachable?") from None
    except OSError as exc:
        raise UserError(f"host {address}: cannot run {argv[0]} ({exc.strerror})") from None
    if done.returncode == 3:
        return done.stdout.split() or ["?"]
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[-300:]
        raise UserError(f"host {address}: cannot run commands there through {transport.kind} "
                        f"({describe_exit(done.returncode)}): {detail}")
    return []
