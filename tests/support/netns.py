"""Several DistDGL "hosts" on one Linux box: one network namespace and one mount namespace each.

DistDGL finds a machine by its IP address and names shared memory after the graph, so two
partitions on one machine collide. :class:`EmulatedHosts` gives every emulated host

- its own **network namespace** with its own address (``10.77.<subnet>.<i+1>/24`` on ``eth0``),
  joined to the others through a bridge that lives in one more namespace (nothing is added to the
  machine's own network);
- its own **mount namespace** with a private tmpfs on ``/dev/shm``, kept alive by a bind mount so
  that every process of that host (server, trainers, samplers) shares it.

Hosts are reached with ``nsenter --net=... --mount=... --`` (the recipe's ``run_via``). Everything
is removed on exit: processes still inside the namespaces are killed, the namespaces deleted.
Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and ``ip``, ``unshare``, ``nsenter``; use
:func:`namespaces_available` to check first. Test scaffolding (needs root), used by the distributed tests and ``tools/bench_distributed.py``.

Example
-------
>>> with EmulatedHosts(2) as hosts:                      # doctest: +SKIP
...     recipe["distributed"]["hosts"] = hosts.host_entries()
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

__all__ = ["EmulatedHosts", "namespaces_available", "remove_stale"]

logger = logging.getLogger(__name__)

_TOOLS = ("ip", "unshare", "nsenter", "mount", "umount")
_NAME = re.compile(r"^rbgt(\d+)x([0-9a-f]+)(sw|h\d+)$")
_RUN = Path("/run")


def _run(argv: list[str], timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


def namespaces_available() -> tuple[bool, str]:
    """Whether this process can create network and mount namespaces; the reason when not."""
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return False, f"missing tools: {', '.join(missing)} (apt-get install iproute2 util-linux mount)"
    name = f"rbgt{os.getpid()}x{uuid.uuid4().hex[:6]}h0"
    try:
        _run(["ip", "netns", "add", name], timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        return False, f"cannot create a network namespace ({exc})"
    try:
        _run(["ip", "netns", "exec", name, "true"], timeout=10)
        _run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/dev/shm"],
             timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        return False, f"cannot use network/mount namespaces ({exc})"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return True, "ok"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Remove namespaces (and mount folders) left by an EmulatedHosts whose process died."""
    done = _run(["ip", "netns", "list"], check=False)
    removed = []
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m and not _alive(int(m.group(1))):
            _kill_inside(name)
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for folder in _RUN.glob("rbgt*x*"):
        m = re.match(r"^rbgt(\d+)x", folder.name)
        if m and folder.is_dir() and not _alive(int(m.group(1))):
            for f in folder.glob("*.mnt"):
                _run(["umount", "-l", str(f)], check=False)
            _run(["umount", "-l", str(folder)], check=False)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def _kill_inside(netns: str) -> list[int]:
    done = _run(["ip", "netns", "pids", netns], check=False)
    pids = [int(p) for p in done.stdout.split() if p.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


class EmulatedHosts:
    """``n`` emulated hosts (network + mount namespaces) for as long as the ``with`` block runs.

    Parameters
    ----------
    n : int
        Number of hosts.
    subnet : int
        Third octet of the addresses: host i is ``10.77.<subnet>.<i+1>``.
    shm_size : str
        Size limit of each host's private ``/dev/shm`` (tmpfs ``size=`` option).
    """

    def __init__(self, n: int, *, subnet: int = 0, shm_size: str = "4g"):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 <= subnet <= 255:
            raise ValueError(f"subnet must be in 0..255, got {subnet}")
        self.n = n
        self.subnet = subnet
        self.shm_size = shm_size
        self.tag = f"rbgt{os.getpid()}x{uuid.uuid4().hex[:6]}"
        self.switch = f"{self.tag}sw"
        self.netns = [f"{self.tag}h{i}" for i in range(n)]
        self.addresses = [f"10.77.{subnet}.{i + 1}" for i in range(n)]
        self.folder = _RUN / self.tag
        self.mounts = [self.folder / f"h{i}.mnt" for i in range(n)]
        self._made: list[str] = []
        self._mounted: list[Path] = []
        self._folder_mounted = False

    def run_via(self, i: int) -> list[str]:
        """argv prefix that runs a command on host ``i``."""
        return ["nsenter", f"--net=/run/netns/{self.netns[i]}", f"--mount={self.mounts[i]}", "--"]

    def host_entries(self) -> list[dict]:
        """The ``distributed.hosts`` entries of a recipe for these hosts."""
        return [{"address": a, "run_via": self.run_via(i)} for i, a in enumerate(self.addresses)]

    def __enter__(self) -> "EmulatedHosts":
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        remove_stale()
        _run(["ip", "netns", "add", self.switch])
        self._made.append(self.switch)
        sw = ["ip", "-n", self.switch]
        _run([*sw, "link", "add", "br0", "type", "bridge"])
        _run([*sw, "link", "set", "br0", "up"])
        self.folder.mkdir(parents=True, exist_ok=False)
        # A private bind mount: the persistent mount namespaces below are bound to files in it.
        _run(["mount", "--bind", str(self.folder), str(self.folder)])
        self._folder_mounted = True
        _run(["mount", "--make-private", str(self.folder)])
        for i, (ns, addr, mnt) in enumerate(zip(self.netns, self.addresses, self.mounts)):
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
            _run([*sw, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run([*sw, "link", "set", f"h{i}", "master", "br0"])
            _run([*sw, "link", "set", f"h{i}", "up"])
            hn = ["ip", "-n", ns]
            _run([*hn, "addr", "add", f"{addr}/24", "dev", "eth0"])
            _run([*hn, "link", "set", "eth0", "up"])
            _run([*hn, "link", "set", "lo", "up"])
            mnt.touch()
            _run(["unshare", f"--mount={mnt}", "--propagation", "private",
                  "mount", "-t", "tmpfs", "-o", f"size={self.shm_size},mode=1777", "tmpfs", "/dev/shm"])
            self._mounted.append(mnt)
        logger.info("emulated hosts %s (namespaces %s)", ", ".join(self.addresses), ", ".join(self.netns))

    def kill_all(self) -> list[int]:
        """SIGKILL every process still inside the hosts' namespaces; returns their pids."""
        killed = []
        for ns in self.netns:
            if ns in self._made:
                killed += _kill_inside(ns)
        return killed

    def close(self) -> None:
        """Kill what runs inside, unmount the private /dev/shm's, delete the namespaces."""
        left = self.kill_all()
        if left:
            logger.warning("killed %d process(es) left inside the emulated hosts: %s", len(left), left)
        for mnt in self._mounted:
            _run(["umount", str(mnt)], check=False)
        self._mounted = []
        if self._folder_mounted:
            _run(["umount", str(self.folder)], check=False)
            self._folder_mounted = False
        shutil.rmtree(self.folder, ignore_errors=True)
        for ns in reversed(self._made):
            _run(["ip", "netns", "del", ns], check=False)
        self._made = []
