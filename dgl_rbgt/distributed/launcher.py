"""``dgl-rbgt launch``: a recipe's DistDGL job (servers and trainers on every host, their
environment, ports and run directory), run by the :mod:`.supervisor`."""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import IO

from ..config import partition_dir_of, recipe_to_yaml
from ..errors import UserError
from .supervisor import (Launcher, LaunchResult, LocalTransport, PrefixTransport, Proc, SshTransport, Transport,
                         probe_ports)

__all__ = ["launch_recipe", "build_procs", "malloc_tunables", "check_ports", "transport_for", "SPEC_NAME",
           "IP_CONFIG_NAME", "PROCESSES_NAME"]

logger = logging.getLogger(__name__)

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


def malloc_tunables(mmap_threshold_mb: int, inherited: str | None = None) -> str:
    """``GLIBC_TUNABLES`` for ``distributed.malloc_mmap_threshold_mb``: a fixed mmap threshold
    (no adaptive rise) and huge pages for the mappings. Tunables already set in ``inherited`` are
    kept; glibc applies the later of two settings of the same tunable, so ours win."""
    if isinstance(mmap_threshold_mb, bool) or not isinstance(mmap_threshold_mb, int) or mmap_threshold_mb < 1:
        raise ValueError(f"mmap_threshold_mb must be a whole number of MB, at least 1, got {mmap_threshold_mb!r}")
    ours = f"glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold={mmap_threshold_mb * 1024 * 1024}"
    return f"{inherited}:{ours}" if inherited else ours


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
    if dist.malloc_mmap_threshold_mb is not None:
        common["GLIBC_TUNABLES"] = malloc_tunables(dist.malloc_mmap_threshold_mb, os.environ.get("GLIBC_TUNABLES"))
    # DistDGL clients retry a missing server every 3 s, 1024 times by default (51 minutes).
    common.setdefault("DGL_DIST_MAX_TRY_TIMES", os.environ.get("DGL_DIST_MAX_TRY_TIMES", "100"))
    trainer_threads = dist.trainer_threads or max(1, (os.cpu_count() or 2) // (2 * dist.trainers_per_host))
    server = [python, "-m", "dgl_rbgt.distributed.server", "--spec", spec_path]
    trainer = [python, "-m", "dgl_rbgt.distributed.trainer", "--spec", spec_path]
    procs: list[Proc] = []
    for h, host in enumerate(hosts):
        for j in range(dist.servers_per_host):
            sid = h * dist.servers_per_host + j
            procs.append(Proc(host.address, "server", sid, [*server, "--rank", str(sid)],
                              env={**common, "DGL_ROLE": "server", "DGL_SERVER_ID": str(sid),
                                   "OMP_NUM_THREADS": str(dist.server_threads)},
                              transport=transport_for(host), python=python, workdir=workdir, daemon=True))
    for h, host in enumerate(hosts):
        for local in range(dist.trainers_per_host):
            rank = h * dist.trainers_per_host + local
            procs.append(Proc(host.address, "trainer", rank, [*trainer, "--rank", str(rank)],
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
                  grace: float | None = None) -> tuple[LaunchResult, object]:
    """Check partitions and ports, open the run directory, write the launch files, run the job.

    Returns the launch result (its ``returncode`` is the launcher's exit status) and the run
    directory. Raises UserError for anything found wrong before a process starts.
    """
    from ..train.pipeline import open_run_dir
    from .partition import check_partitions

    workdir = dist.workdir or os.getcwd()
    pdir = partition_dir_of(recipe, dist, workdir)
    report = check_partitions(recipe, dist, pdir)
    check_ports(dist)
    rd, resume = open_run_dir(recipe, run_dir, resume)
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
    launcher = Launcher(procs, grace=dist.stop_grace_seconds if grace is None else grace, out=out,
                        daemon_start_interval=dist.server_start_interval)
    launcher.emit(f"launch: {recipe.name}: {len(dist.hosts)} host(s) x {dist.trainers_per_host} trainer(s), "
                  f"{dist.servers_per_host} server(s) per host; run directory {rd_path}"
                  + (" (resuming)" if resume else ""))
    result = launcher.run()
    (rd_path / PROCESSES_NAME).write_text(json.dumps(result.table(), indent=2) + "\n")
    return result, rd
