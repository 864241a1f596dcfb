"""Start DistDGL servers and trainers on every host, stream their logs, stop them all together.

Failure semantics follow torchrun's: if any process fails, every process the launcher started is
stopped (SIGTERM, then SIGKILL after ``grace`` seconds) and the launcher exits non-zero, naming
the first failure (host, role, rank, exit code, pid) as the root cause. Ctrl-C and SIGTERM stop
everything the same way. Nothing restarts.

How processes are run:

- every command runs under a small **guard** (``python -c GUARD``, no package import), which
  sets the working folder and environment, starts the command in the guard's process group, and
  stops that whole group when its stdin closes (the launcher died, or ssh dropped) or when it
  receives SIGTERM/SIGINT/SIGHUP. When the command exits the guard reaps what it left behind and
  exits with the command's status (re-raising its signal), after printing one line with the
  command's peak resident memory;
- a **local** host (an address of this machine) runs the guard as a subprocess in a new session,
  so the launcher can signal the whole process group;
- a host with ``run_via`` runs ``run_via + guard argv`` (namespaces, containers, schedulers);
- any other host is reached with ``ssh -o BatchMode=yes`` (never prompts); the remote command is
  the guard argv, each word quoted with :func:`shlex.quote`.

No shell string is ever built for a local process: commands are argv lists.
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
from typing import IO, Optional, Sequence

from ..errors import UserError

__all__ = ["Proc", "Transport", "LocalTransport", "PrefixTransport", "SshTransport", "Launcher",
           "LaunchResult", "GUARD_SOURCE", "guard_argv", "find_used_ports", "probe_ports", "describe_exit"]

logger = logging.getLogger(__name__)

GUARD_MARK = "dgl-rbgt-guard:"
# Printed by the guard the moment its command ends by itself, before it cleans up the command's
# leftovers (which can take seconds): the launcher orders failures by when this line arrives.
GUARD_ENDED = "dgl-rbgt-guard-ended:"

# The guard runs on every host with only the standard library (no dgl_rbgt import, no torch),
# so it starts in milliseconds and works before anything else is checked.
# argv: GUARD WORKDIR GRACE_SECONDS [KEY=VALUE ...] -- COMMAND [ARG ...]
GUARD_SOURCE = r'''
import os, resource, signal, subprocess, sys, threading, time
args = sys.argv[1:]
cut = args.index("--")
workdir, grace, pairs, cmd = args[0], float(args[1]), args[2:cut], args[cut + 1:]
env = dict(os.environ)
for pair in pairs:
    key, _, value = pair.partition("=")
    env[key] = value
os.chdir(workdir)
try:  # lead a process group of our own: stopping it must never reach whoever started us
    os.setpgid(0, 0)
except OSError:
    pass  # already a session leader (the launcher's new session, or sshd's)
stop = threading.Event()
def on_signal(signum, frame):
    stop.set()
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on_signal)
def watch_stdin():
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    stop.set()
threading.Thread(target=watch_stdin, daemon=True).start()
try:
    child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
except OSError as exc:
    print("%s cannot start %r: %s" % (sys.argv[0], cmd[0], exc), file=sys.stderr, flush=True)
    sys.exit(127)
me, group = os.getpid(), os.getpgrp()
def others():  # live members of this process group other than the guard (zombies excluded)
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == group:
                found.append(int(name))
    return found
def signal_group(sig):
    for pid in others():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
while child.poll() is None and not stop.wait(0.05):
    pass
if child.poll() is not None:
    print("GUARD_ENDED exit=%d pid=%d" % (child.returncode, child.pid), flush=True)
if child.poll() is None:  # asked to stop: TERM the group, then KILL what is left after grace
    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
rc = child.wait() if child.poll() is not None else None
signal_group(signal.SIGTERM)  # leftovers (sampler pools, ...) of the command
deadline = time.monotonic() + min(grace, 2.0)
while others() and time.monotonic() < deadline:
    for pid in others():
        try:
            os.waitpid(pid, os.WNOHANG)
        except OSError:
            pass
    time.sleep(0.05)
signal_group(signal.SIGKILL)
if rc is None:
    rc = child.wait()
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("GUARD_MARK exit=%d maxrss_kb=%d pid=%d" % (rc, peak, child.pid), flush=True)
if rc < 0:  # die of the same signal, so the launcher sees what killed the command
    try:
        signal.signal(-rc, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(me, -rc)
    time.sleep(1)
sys.exit(rc if rc >= 0 else 128 - rc)
'''.replace("GUARD_MARK", GUARD_MARK).replace("GUARD_ENDED", GUARD_ENDED)


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
    child_pid: Optional[int] = None
    command_exit: Optional[int] = None  # the command's own exit status, from the guard's first line
    command_ended: Optional[float] = None  # when that line arrived (the launcher's clock)
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
        """When the failure became known: the guard's first line, else the guard's own exit."""
        if self.command_ended is not None:
            return self.command_ended
        return self.ended if self.ended is not None else float("inf")


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
                 "seconds": None if p.ended is None else round(p.ended - p.started, 2)} for p in self.procs]


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
    """

    def __init__(self, procs: list[Proc], *, grace: float = 10.0, out: IO[str] | None = None,
                 daemon_exit_timeout: float = 30.0, poll: float = 0.05):
        if not procs:
            raise ValueError("nothing to launch: procs is empty")
        self.procs = procs
        self.grace = grace
        self.out = out if out is not None else sys.stdout
        self.daemon_exit_timeout = daemon_exit_timeout
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
                    proc.child_pid = int(fields["pid"])
                except (KeyError, ValueError):
                    pass
                if not line:
                    continue
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
            for proc in self.procs:
                if asked:
                    break
                self._start(proc)
            while not asked:
                for proc in self.procs:
                    if proc.popen is not None and proc.returncode is None and proc.popen.poll() is not None:
                        self._note_exit(proc)
                        self._signal(proc, signal.SIGKILL)  # leftovers of a finished group
                # The root cause is the earliest failure, not the first guard to exit: a guard
                # cleans up its command's leftovers (sampler pools) for up to two seconds, while
                # a peer that fails because of it may exit at once.
                failed = [p for p in self.procs if p.failed]
                if failed:
                    failure = min(failed, key=lambda p: p.failed_at)
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


# ---- a recipe's DistDGL job ----------------------------------------------------------------------

SPEC_NAME = "launch.json"
IP_CONFIG_NAME = "ip_config.txt"
PROCESSES_NAME = "processes.json"


def transport_for(host) -> Transport:
    """``run_via`` when given, a plain subprocess for this machine's addresses, else ssh."""
    from .addresses import is_local_address

    if host.run_via:
        return PrefixTransport(list(host.run_via))
    if is_local_address(host.address):
        return LocalTransport()
    return SshTransport(host.address, host.ssh_user, host.ssh_port)


def build_procs(dist, *, spec_path: str, ip_config: str, part_config: str, python: str | None = None,
                workdir: str | None = None, env: dict[str, str] | None = None) -> list[Proc]:
    """Servers (first) and trainers of every host, with the environment DistDGL and
    torch.distributed read (the same variables as DGL's tools/launch.py and torchrun set)."""
    python = dist.python or python or sys.executable
    workdir = dist.workdir or workdir or os.getcwd()
    hosts = dist.hosts
    num_clients = dist.trainers_per_host * (1 + dist.samplers) * len(hosts)
    common = {
        "DGL_NUM_SAMPLER": str(dist.samplers),
        "DGL_NUM_CLIENT": str(num_clients),
        "DGL_CONF_PATH": part_config,
        "DGL_IP_CONFIG": ip_config,
        "DGL_NUM_SERVER": str(dist.servers_per_host),
        "DGL_GRAPH_FORMAT": ",".join(dist.graph_format),
        "DGL_KEEP_ALIVE": "0",
        "PYTHONUNBUFFERED": "1",
        "OUTDATED_IGNORE": "1",
        **(env or {}),
    }
    for key in ("PYTHONPATH", "DGL_RBGT_DATA"):
        if os.environ.get(key):
            common.setdefault(key, os.environ[key])
    # DistDGL clients retry a missing server every 3 s, 1024 times by default (51 minutes).
    common.setdefault("DGL_DIST_MAX_TRY_TIMES", os.environ.get("DGL_DIST_MAX_TRY_TIMES", "100"))
    trainer_threads = dist.trainer_threads or max(1, (os.cpu_count() or 2) // (2 * dist.trainers_per_host))
    module = [python, "-m", "dgl_rbgt.distributed.trainer", "--spec", spec_path]
    procs: list[Proc] = []
    for h, host in enumerate(hosts):
        for j in range(dist.servers_per_host):
            sid = h * dist.servers_per_host + j
            procs.append(Proc(host.address, "server", sid, [*module, "--role", "server", "--rank", str(sid)],
                              env={**common, "DGL_ROLE": "server", "DGL_SERVER_ID": str(sid),
                                   "OMP_NUM_THREADS": str(dist.server_threads)},
                              transport=transport_for(host), python=python, workdir=workdir, daemon=True))
    for h, host in enumerate(hosts):
        for local in range(dist.trainers_per_host):
            rank = h * dist.trainers_per_host + local
            procs.append(Proc(host.address, "trainer", rank, [*module, "--role", "trainer", "--rank", str(rank)],
                              env={**common, "DGL_DIST_MODE": "distributed", "DGL_ROLE": "client",
                                   "DGL_GROUP_ID": "0", "OMP_NUM_THREADS": str(trainer_threads),
                                   "MASTER_ADDR": hosts[0].address, "MASTER_PORT": str(dist.master_port),
                                   "RANK": str(rank), "WORLD_SIZE": str(dist.num_trainers),
                                   "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(dist.trainers_per_host),
                                   "GROUP_RANK": str(h), "DGL_RBGT_HOST_ADDR": host.address},
                              transport=transport_for(host), python=python, workdir=workdir))
    return procs


def check_ports(dist, python: str | None = None) -> None:
    """Refuse to start when a server port (or the rendezvous port on the first host) is taken."""
    python = dist.python or python or sys.executable
    problems = []
    for h, host in enumerate(dist.hosts):
        ports = dist.server_ports() + ([dist.master_port] if h == 0 else [])
        used = probe_ports(host.address, ports, transport_for(host), python=python)
        if used:
            problems.append(f"{host.address} port(s) {', '.join(used)}")
    if problems:
        raise UserError(f"in use: {'; '.join(problems)} (another DistDGL job or leftover servers?); stop them "
                        f"or set distributed.port / distributed.master_port to free ports")


def launch_recipe(recipe, dist, *, run_dir=None, resume: bool = False, out: IO[str] | None = None,
                  grace: float | None = None) -> tuple[LaunchResult, "RunDir"]:
    """Check partitions and ports, open the run directory, write the launch files, run the job.

    Returns the launch result (its ``returncode`` is the launcher's exit status) and the run
    directory. Raises UserError for anything found wrong before a process starts.
    """
    import json

    from ..config import recipe_to_yaml
    from ..train.pipeline import open_run_dir
    from ..config import partition_dir_of
    from .partition import check_partitions

    workdir = dist.workdir or os.getcwd()
    pdir = partition_dir_of(recipe, dist, workdir)
    report = check_partitions(recipe, dist, pdir)
    check_ports(dist)
    rd = open_run_dir(recipe, run_dir, resume)
    rd_path = rd.path.resolve()
    ip_config = rd_path / IP_CONFIG_NAME
    ip_config.write_text("".join(f"{h.address} {dist.port}\n" for h in dist.hosts))
    recipe_data = recipe.model_dump(mode="json")
    recipe_data.pop("distributed", None)
    spec = {
        "recipe": recipe_data,
        "distributed": dist.model_dump(mode="json"),
        "partition": {**{k: report[k] for k in ("graph_name", "in_feats", "num_classes", "metric", "label_shape",
                                                "label_dtype", "dataset")}, "tables": report.get("tables")},
        "part_config": str((pdir / report["part_config"]).resolve()),
        "ip_config": str(ip_config),
        "run_dir": str(rd_path),
        "resume": bool(resume),
    }
    spec_path = rd_path / SPEC_NAME
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    procs = build_procs(dist, spec_path=str(spec_path), ip_config=str(ip_config), part_config=spec["part_config"],
                        workdir=workdir)
    launcher = Launcher(procs, grace=dist.stop_grace_seconds if grace is None else grace, out=out)
    launcher.emit(f"launch: {recipe.name}: {len(dist.hosts)} host(s) x {dist.trainers_per_host} trainer(s), "
                  f"{dist.servers_per_host} server(s) per host; run directory {rd_path}"
                  + (" (resuming)" if resume else ""))
    result = launcher.run()
    (rd_path / PROCESSES_NAME).write_text(json.dumps(result.table(), indent=2) + "\n")
    return result, rd
