"""The launcher's failure semantics on dummy commands (no DGL): torchrun's rules, no orphans, logs
prefixed, ports in use refused."""
import io
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from dgl_rbgt.config import parse_distributed
from dgl_rbgt.distributed.launcher import build_procs, check_ports, malloc_tunables
from dgl_rbgt.distributed.supervisor import (GUARD_SOURCE, Launcher, LocalTransport, PrefixTransport, Proc,
                                             SshTransport, describe_exit, find_used_ports, guard_argv,
                                             probe_ports)
from dgl_rbgt.errors import UserError

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def run(procs, grace=2.0, **kw):
    out = io.StringIO()
    t0 = time.monotonic()
    result = Launcher(procs, grace=grace, out=out, **kw).run()
    return result, out.getvalue(), time.monotonic() - t0


def pids_of(result):
    return [p.child_pid for p in result.procs if p.child_pid] + [p.pid for p in result.procs if p.pid]


def gone(pids, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not left:
            return True
        time.sleep(0.05)
    return False


SLEEPER = "import time; print('up', flush=True); time.sleep(60)"


def test_success_prefixes_every_line_and_passes_env_and_cwd(tmp_path):
    procs = [Proc("10.0.0.1", "server", 0, py(SLEEPER), daemon=True),
             Proc("10.0.0.1", "trainer", 0, py("""
                import os, sys
                print('hello', os.environ['K'], os.getcwd())
                print('to stderr', file=sys.stderr)
                print('no newline at end', end='')
             """), env={"K": "v w"}, workdir=str(tmp_path))]
    result, out, _ = run(procs, daemon_exit_timeout=0.5)
    assert result.returncode == 0 and result.failure is None
    assert f"[10.0.0.1 trainer 0] hello v w {tmp_path}" in out
    assert "[10.0.0.1 trainer 0] to stderr" in out
    assert "[10.0.0.1 trainer 0] no newline at end" in out
    assert "[10.0.0.1 server 0] up" in out
    assert "still running" in out  # the daemon was stopped after the worker finished
    assert result.procs[1].peak_rss_kb > 0 and result.procs[1].returncode == 0
    assert gone(pids_of(result))


def test_one_failure_stops_all_names_the_root_cause(tmp_path):
    marker = tmp_path / "grandchild.pid"
    procs = [Proc("10.0.0.1", "server", 0, py(SLEEPER), daemon=True),
             # a worker whose own child (a grandchild of the launcher) must die with it
             Proc("10.0.0.1", "trainer", 0, py(f"""
                import subprocess, sys, time
                p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
                open({str(marker)!r}, 'w').write(str(p.pid))
                time.sleep(60)
             """)),
             Proc("10.0.0.2", "trainer", 1, py("import time, sys; time.sleep(1.5); print('bye'); sys.exit(3)"))]
    result, out, seconds = run(procs)
    assert result.returncode == 3
    f = result.failure
    assert (f.host, f.role, f.rank, f.returncode) == ("10.0.0.2", "trainer", 1, 3)
    assert f"launch: trainer 1 on host 10.0.0.2 failed (exit code 3, pid {f.child_pid})" in out
    assert seconds < 10
    assert all(p.stopped_by_launcher for p in result.procs[:2])
    assert gone(pids_of(result) + [int(marker.read_text())])


def test_daemons_start_an_interval_apart_and_workers_at_once():
    procs = [Proc("10.0.0.1", "server", 0, py(SLEEPER), daemon=True),
             Proc("10.0.0.2", "server", 1, py(SLEEPER), daemon=True),
             Proc("10.0.0.1", "trainer", 0, py("print('done')")),
             Proc("10.0.0.2", "trainer", 1, py("print('done')"))]
    result, out, _ = run(procs, daemon_exit_timeout=0.5, daemon_start_interval=0.8)
    assert result.returncode == 0
    server0, server1, trainer0, trainer1 = (p.started for p in result.procs)
    assert server1 - server0 >= 0.8
    assert 0 <= trainer0 - server1 < 0.5 and 0 <= trainer1 - trainer0 < 0.5  # no wait after the last server


def test_daemon_failing_during_the_interval_starts_nothing_more():
    procs = [Proc("10.0.0.1", "server", 0, py("import sys; sys.exit(4)"), daemon=True),
             Proc("10.0.0.2", "server", 1, py(SLEEPER), daemon=True),
             Proc("10.0.0.1", "trainer", 0, py(SLEEPER))]
    result, out, seconds = run(procs, daemon_start_interval=30)
    assert result.returncode == 4 and result.failure.role == "server" and result.failure.rank == 0
    assert result.procs[1].popen is None and result.procs[2].popen is None
    assert seconds < 15


def test_root_cause_is_the_first_command_to_fail_not_the_first_guard_to_exit():
    """Trainer 0 fails first but leaves a child that ignores SIGTERM, so its guard spends two
    seconds cleaning up; trainer 1 would fail later (as a peer of a dead trainer does) with a
    guard that exits at once. The launcher must still name trainer 0."""
    procs = [Proc("10.0.0.1", "trainer", 0, py("""
                import subprocess, sys, time
                subprocess.Popen([sys.executable, '-c', 'import signal, time; '
                                  'signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])
                time.sleep(0.5)
                sys.exit(5)
             """)),
             # after the settle window (trainer 0's report + 1 s), before trainer 0's guard exits
             Proc("10.0.0.2", "trainer", 1, py("import sys, time; time.sleep(1.9); sys.exit(7)"))]
    result, out, seconds = run(procs, grace=2.0)
    f = result.failure
    assert (f.rank, f.exit_code, result.returncode) == (0, 5, 5), out  # the guard itself may be killed
    assert "launch: trainer 0 on host 10.0.0.1 failed (exit code 5" in out
    assert not result.procs[0].stopped_by_launcher
    assert seconds < 10
    assert gone(pids_of(result))


def raises_then_exits(before: float, message: str, after: float) -> list[str]:
    """A command that prints a traceback ``before`` s after it starts and exits (status 1)
    ``after`` s later."""
    return py(f"""
        import sys, time, traceback
        time.sleep({before})
        try:
            raise RuntimeError({message!r})
        except RuntimeError:
            traceback.print_exc()
        sys.stderr.flush()
        time.sleep({after})
        sys.exit(1)
    """)


def test_root_cause_is_the_first_traceback_when_its_process_exits_later():
    """Trainer 1 raises first but exits only after a slow cleanup (a trainer waits for its sampler
    processes); its peer's collective breaks meanwhile, and the peer prints its own traceback and
    exits first. The launcher names the trainer whose traceback came first."""
    procs = [Proc("10.0.0.1", "trainer", 0, raises_then_exits(0.8, "Connection reset by peer", 0.0)),
             # cleaning up past the peer's exit, within the settle window
             Proc("10.0.0.2", "trainer", 1, raises_then_exits(0.3, "the root cause", 0.9))]
    result, out, seconds = run(procs)
    f = result.failure
    assert (f.rank, f.exit_code, result.returncode) == (1, 1, 1), out
    assert "launch: trainer 1 on host 10.0.0.2 failed (exit code 1" in out
    assert result.procs[0].failed_at > result.procs[1].traceback_at
    assert seconds < 10
    assert gone(pids_of(result))


def test_a_killed_process_is_the_cause_even_when_a_peer_reports_first():
    """A peer whose connection to a killed trainer breaks can exit (status 1) a moment before the
    killed trainer's exit reaches the launcher; the launcher names the killed one."""
    procs = [Proc("10.0.0.1", "trainer", 0, py("import sys, time; time.sleep(0.3); sys.exit(1)")),
             Proc("10.0.0.2", "trainer", 1, py("import os, signal, time; time.sleep(0.6); os.kill(os.getpid(), signal.SIGKILL)"))]
    result, out, seconds = run(procs)
    f = result.failure
    assert (f.rank, f.exit_code, result.returncode) == (1, -9, 128 + 9), out
    assert "launch: trainer 1 on host 10.0.0.2 failed (killed by SIGKILL (-9)" in out
    assert seconds < 10
    assert gone(pids_of(result))


def test_a_peer_that_aborts_itself_is_not_the_cause():
    """When a trainer raises and exits, a DistDGL server whose socket to it breaks aborts
    (SIGABRT from C++ ``terminate``), possibly before the trainer's exit reaches the launcher. A
    signal the process raised itself is a consequence like a peer's exit status 1: the launcher
    names the trainer whose traceback came first."""
    procs = [Proc("10.0.0.1", "server", 0, py("import os, time; time.sleep(0.6); os.abort()"), daemon=True),
             Proc("10.0.0.2", "trainer", 1, raises_then_exits(0.3, "the root cause", 0.6))]
    result, out, seconds = run(procs)
    f = result.failure
    assert (f.role, f.rank, f.exit_code, result.returncode) == ("trainer", 1, 1, 1), out
    assert result.procs[0].exit_code == -signal.SIGABRT  # the server did abort, and first
    assert result.procs[0].failed_at < result.procs[1].command_ended
    assert "launch: trainer 1 on host 10.0.0.2 failed (exit code 1" in out
    assert seconds < 10
    assert gone(pids_of(result))


def test_signal_death_is_reported_as_signal():
    procs = [Proc("h", "trainer", 0, py("import os, signal, time; time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL)")),
             Proc("h", "trainer", 1, py(SLEEPER))]
    result, out, _ = run(procs)
    assert result.failure.rank == 0 and result.failure.returncode == -9
    assert result.returncode == 128 + 9
    assert "killed by SIGKILL (-9)" in out


def test_sigterm_ignored_means_sigkill_after_grace():
    stubborn = py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('ready', flush=True)
        time.sleep(60)
    """)
    procs = [Proc("h", "trainer", 0, stubborn), Proc("h", "trainer", 1, py("import time, sys; time.sleep(1); sys.exit(5)"))]
    result, out, seconds = run(procs, grace=1.0)
    assert result.returncode == 5
    assert result.procs[0].returncode == -signal.SIGKILL
    assert seconds < 10
    assert gone(pids_of(result))


def test_missing_program_fails_cleanly():
    procs = [Proc("h", "trainer", 0, ["/nonexistent/program"]), Proc("h", "trainer", 1, py(SLEEPER))]
    result, out, _ = run(procs)
    assert result.failure.rank == 0 and result.returncode == 127
    assert "cannot start '/nonexistent/program'" in out


def launcher_script(tmp_path, body: str) -> list[str]:
    script = tmp_path / "launch.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from dgl_rbgt.distributed.supervisor import Launcher, Proc
        PY = sys.executable
        procs = [Proc("h", "server", 0, [PY, "-c", "import time; time.sleep(60)"], daemon=True),
                 Proc("h", "trainer", 0, [PY, "-c", "import time; print('working', flush=True); time.sleep(60)"])]
        {body}
    """))
    return [PY, str(script)]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_launcher_signal_stops_everything(tmp_path, watched, helpers, sig, code):
    w = watched(launcher_script(tmp_path, "sys.exit(Launcher(procs, grace=2).run().returncode)"), name="launcher")
    assert w.wait(30, until=lambda: "working" in w.output()) is None, w.output()
    kids = w.scan()
    assert len(kids) >= 4  # two guards and their commands
    t0 = time.monotonic()
    os.kill(w.proc.pid, sig)
    rc = w.wait(30)
    assert rc == code, w.output()
    assert time.monotonic() - t0 < 10
    assert f"{signal.Signals(sig).name} received; stopping every process" in w.output()
    assert not helpers.alive(w.seen.values())


def test_launcher_killed_hard_leaves_no_orphans(tmp_path, watched, helpers):
    """SIGKILL cannot be caught: the guards notice their stdin closing and stop their commands."""
    w = watched(launcher_script(tmp_path, "Launcher(procs, grace=2).run()"), name="launcher")
    assert w.wait(30, until=lambda: "working" in w.output()) is None, w.output()
    w.scan()
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait(10)
    deadline = time.monotonic() + 10
    while helpers.alive(w.seen.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not helpers.alive(w.seen.values())


def test_run_via_prefix_runs_the_same_guard(tmp_path):
    procs = [Proc("h", "trainer", 0, py("import os; print('via', os.environ['X'])"), env={"X": "1"},
                  transport=PrefixTransport(["env", "PREFIXED=1"]))]
    result, out, _ = run(procs)
    assert result.returncode == 0 and "[h trainer 0] via 1" in out
    assert result.procs[0].transport.kind == "run_via"


def test_ssh_command_is_quoted_word_by_word():
    nasty = ["python", "-c", "print('a b'); import os", "--spec", "/tmp/x y/launch.json", "$(rm -rf /)"]
    guarded = guard_argv("/venv/bin/python", "/work dir", 3.0, {"A": "1 2", "B": "'q'"}, nasty)
    argv = SshTransport("10.0.0.2", "alice", 2222).argv(guarded)
    assert argv[:1] == ["ssh"] and "BatchMode=yes" in argv and argv[argv.index("-p") + 1] == "2222"
    assert "alice@10.0.0.2" in argv
    remote = argv[-1]
    assert remote.startswith("exec ")
    assert shlex.split(remote[len("exec "):]) == guarded  # the remote shell sees exactly these words
    assert guarded[2] == GUARD_SOURCE
    assert argv[argv.index("--") + 1] == "alice@10.0.0.2"  # nothing after the options can be one


def test_ssh_remote_command_runs_in_a_posix_shell(tmp_path):
    """What sshd does with the command: ``sh -c STRING``. Run it here and check what the guard got."""
    odd = tmp_path / "dir with 'quotes' and $HOME"
    odd.mkdir()
    command = [PY, "-c", "import os, sys; print(repr(sys.argv[1:]), os.getcwd(), os.environ['V'])", "a b", "$(echo no)", "'x'"]
    argv = SshTransport("10.0.0.2").argv(guard_argv(PY, str(odd), 1.0, {"V": "v $x"}, command))
    # stdin stays open like ssh's channel (the guard stops its command when stdin closes)
    proc = subprocess.Popen(["sh", "-c", argv[-1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, out
    finally:
        proc.kill()
        proc.stdin.close()
    assert out.splitlines()[0] == f"{['a b', '$(echo no)', chr(39) + 'x' + chr(39)]!r} {odd} v $x"


def test_describe_exit():
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-15) == "killed by SIGTERM (-15)"
    assert describe_exit(137) == "exit code 137 (SIGKILL)"


def test_empty_and_bad_env():
    with pytest.raises(ValueError, match="nothing to launch"):
        Launcher([])
    with pytest.raises(ValueError, match="bad environment variable name"):
        guard_argv(PY, "/", 1.0, {"A=B": "x"}, ["true"])


# ---- ports ----------------------------------------------------------------------------------------

@pytest.fixture
def listening():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


def test_port_in_use_is_found(listening, helpers):
    free = helpers.free_port()
    assert find_used_ports("127.0.0.1", [listening, free]) == [listening]
    assert probe_ports("127.0.0.1", [listening, free], LocalTransport()) == [str(listening)]
    # through a transport: the probe runs as a command on the host
    assert probe_ports("127.0.0.1", [listening, free], PrefixTransport(["env"])) == [str(listening)]


def test_check_ports_refuses_with_a_fix(listening):
    dist = parse_distributed({"hosts": [{"address": "127.0.0.1"}], "port": listening})
    with pytest.raises(UserError, match=rf"in use: 127\.0\.0\.1 port\(s\) {listening} .*set distributed\.port"):
        check_ports(dist)
    dist = parse_distributed({"hosts": [{"address": "127.0.0.1"}], "port": 30050 if listening != 30050 else 30060,
                              "master_port": listening})
    with pytest.raises(UserError, match=rf"port\(s\) {listening}"):
        check_ports(dist)


def test_unreachable_host_is_a_user_error():
    with pytest.raises(UserError, match=r"host 10\.0\.0\.9: cannot run commands there through run_via"):
        probe_ports("10.0.0.9", [30050], PrefixTransport([PY, "-c", "import sys; sys.exit(255)"]))


def test_build_procs_sets_what_distdgl_and_torch_read():
    dist = parse_distributed({"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.2", "ssh_user": "bob"}],
                              "trainers_per_host": 2, "samplers": 1, "servers_per_host": 2, "port": 31000,
                              "master_port": 31500, "graph_format": ["csc", "coo"]})
    procs = build_procs(dist, spec_path="/r/launch.json", ip_config="/r/ip.txt", part_config="/p/g.json")
    servers = [p for p in procs if p.role == "server"]
    trainers = [p for p in procs if p.role == "trainer"]
    assert [p.rank for p in servers] == [0, 1, 2, 3] and all(p.daemon for p in servers)
    assert [p.rank for p in trainers] == [0, 1, 2, 3] and not any(p.daemon for p in trainers)
    assert procs.index(servers[-1]) < procs.index(trainers[0])  # servers start first
    s = servers[3].env
    assert (s["DGL_ROLE"], s["DGL_SERVER_ID"], s["DGL_NUM_SERVER"], s["DGL_NUM_CLIENT"]) == ("server", "3", "2", "8")
    assert s["DGL_CONF_PATH"] == "/p/g.json" and s["DGL_IP_CONFIG"] == "/r/ip.txt" and s["DGL_GRAPH_FORMAT"] == "csc,coo"
    t = trainers[3].env
    assert (t["DGL_DIST_MODE"], t["DGL_ROLE"], t["DGL_NUM_SAMPLER"]) == ("distributed", "client", "1")
    assert (t["RANK"], t["WORLD_SIZE"], t["LOCAL_RANK"], t["MASTER_ADDR"], t["MASTER_PORT"]) == ("3", "4", "1", "10.0.0.1", "31500")
    assert t["DGL_RBGT_HOST_ADDR"] == "10.0.0.2"
    assert trainers[3].command[-5:] == ["dgl_rbgt.distributed.trainer", "--spec", trainers[3].command[-3], "--rank", "3"]
    assert servers[3].command[-5:] == ["dgl_rbgt.distributed.server", "--spec", servers[3].command[-3], "--rank", "3"]
    assert isinstance(trainers[3].transport, SshTransport) and trainers[3].transport.user == "bob"


def test_malloc_threshold_reaches_every_process_and_glibc(monkeypatch):
    hosts = [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    procs = build_procs(parse_distributed({"hosts": hosts}), spec_path="s", ip_config="i", part_config="p")
    assert not any("GLIBC_TUNABLES" in p.env for p in procs)  # glibc's default unless asked
    dist = parse_distributed({"hosts": hosts, "malloc_mmap_threshold_mb": 16})
    ours = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=16777216"
    procs = build_procs(dist, spec_path="s", ip_config="i", part_config="p")
    assert {p.env["GLIBC_TUNABLES"] for p in procs} == {ours} and {p.role for p in procs} == {"server", "trainer"}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")  # kept, ours appended (the later wins)
    procs = build_procs(dist, spec_path="s", ip_config="i", part_config="p")
    assert procs[0].env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + ours
    with pytest.raises(ValueError, match="malloc_mmap_threshold_mb"):
        parse_distributed({"hosts": hosts, "malloc_mmap_threshold_mb": 0})
    for bad in (0, -16, 1.5, "16", True):
        with pytest.raises(ValueError, match="mmap_threshold_mb must be a whole number of MB"):
            malloc_tunables(bad)

    # glibc reads the string: a 1 MB block, mapped on its own by default (threshold 128 KB at
    # start), comes from the heap under a 16 MB threshold, and a 20 MB block is still mapped.
    probe = textwrap.dedent("""
        import ctypes
        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]
        libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = Info; libc.malloc.restype = ctypes.c_void_p
        counts = []
        for size in (1 << 20, 20 << 20):
            before = libc.mallinfo2().hblks; libc.malloc(size); counts.append(libc.mallinfo2().hblks - before)
        print(*counts)
    """)
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    tuned = subprocess.run([sys.executable, "-c", probe], env={**env, "GLIBC_TUNABLES": ours},
                           capture_output=True, text=True, check=True)
    assert (default.stdout.split(), tuned.stdout.split()) == (["1", "1"], ["0", "1"])


class BrokenOut(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_lost_output_does_not_block_children():
    """With the launcher's own stdout gone (e.g. piped into `head`), children must still be able to
    write (their pipes keep being drained) and the job ends normally."""
    chatty = py("import sys; [print('x' * 1000) for _ in range(300)]")  # 300 KB: more than a pipe holds
    t0 = time.monotonic()
    result = Launcher([Proc("h", "trainer", 0, chatty)], grace=1.0, out=BrokenOut()).run()
    assert result.returncode == 0 and time.monotonic() - t0 < 30
