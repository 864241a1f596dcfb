"""The guard: runs one command on a host and stops its whole process group when told to.

Run as ``python -c <this file's source> WORKDIR GRACE_SECONDS [KEY=VALUE ...] -- COMMAND [ARG ...]``
(see :func:`dgl_rbgt.distributed.supervisor.guard_argv`). It needs only the standard library (no
dgl_rbgt or torch import), so it starts in milliseconds on any host, before anything else is
checked. It sets the working folder and environment, starts the command in its own process group,
and stops that group when its stdin closes (the launcher died, or ssh dropped) or on
SIGTERM/SIGINT/SIGHUP. When the command ends it prints ``dgl-rbgt-guard-ended:`` at once, then
reaps what the command left behind, prints ``dgl-rbgt-guard:`` with the command's peak resident
memory and its peak proportional set size (sampled every 5 seconds), and exits with the
command's status (re-raising its signal).
"""
import os
import resource
import signal
import subprocess
import sys
import threading
import time

#: The guard's final line: ``exit=... maxrss_kb=... maxpss_kb=... pid=...``.
GUARD_MARK = "dgl-rbgt-guard:"
#: Printed the moment the command ends by itself, before the clean-up of its leftovers (which can
#: take seconds): the launcher orders failures by when this line arrives.
GUARD_ENDED = "dgl-rbgt-guard-ended:"


def pss_kb(pid: int) -> int:
    """The process's proportional set size in kB (Linux ``smaps_rollup``; 0 where unreadable)."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def main() -> None:
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
    # Peak proportional set size, sampled: resident memory with pages shared between processes
    # (DistDGL's server shares its partition with the trainers of its host) split between them,
    # so the processes of a host add up to what the host holds; RSS counts shared pages in each.
    # Every 5 s: the kernel walks the whole address space to sum it (0.1 s for a 6 GB process).
    peak_pss, ticks = 0, 0
    while child.poll() is None and not stop.wait(0.05):
        ticks += 1
        if ticks == 20 or ticks % 100 == 0:  # once after 1 s, so short runs have a value too
            peak_pss = max(peak_pss, pss_kb(child.pid))
    if child.poll() is not None:
        print(GUARD_ENDED + " exit=%d pid=%d" % (child.returncode, child.pid), flush=True)
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
    print(GUARD_MARK + " exit=%d maxrss_kb=%d maxpss_kb=%d pid=%d" % (rc, peak, peak_pss, child.pid), flush=True)
    if rc < 0:  # die of the same signal, so the launcher sees what killed the command
        try:
            signal.signal(-rc, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(me, -rc)
        time.sleep(1)
    sys.exit(rc if rc >= 0 else 128 - rc)


if __name__ == "__main__":
    main()
