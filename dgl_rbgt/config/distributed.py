"""The ``distributed:`` section of a recipe: which hosts, how many processes, which ports, how to
partition.

The section is validated like the rest of a recipe (unknown keys, wrong types and out-of-range
values name their key path). Example::

    distributed:
      hosts:
        - {address: 10.0.0.1}
        - {address: 10.0.0.2, ssh_user: alice}
      trainers_per_host: 2
      port: 30050

Every host holds exactly one partition: DistDGL clients find their machine by IP address and name
shared memory after the graph, so two partitions on one address cannot work. To run several
"hosts" on one box, give each its own network namespace (own address) and mount namespace (own
``/dev/shm``) and reach it with ``run_via`` (see docs/distributed.md).
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ..errors import RecipeError
from .messages import format_errors

__all__ = ["HostSection", "DistributedSection", "parse_distributed",
           "partition_dir_of"]

_STRICT = ConfigDict(extra="forbid", strict=True)
_Port = Annotated[int, Field(ge=1024, le=65535)]
_SSH_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")


class HostSection(BaseModel):
    """One machine: its IPv4 address (the one DistDGL servers listen on) and how to reach it."""

    model_config = _STRICT

    address: str  # IPv4 address of the host, as the other hosts reach it
    ssh_user: Optional[str] = None  # ssh login on a remote host (default: ssh's own default)
    ssh_port: int = Field(22, ge=1, le=65535)
    # argv prefix that runs a command on this host instead of ssh, e.g.
    # ["nsenter", "--net=/run/netns/h1", "--"] or ["docker", "exec", "-i", "node1"]
    run_via: Optional[list[Annotated[str, Field(min_length=1)]]] = Field(None, min_length=1)

    @field_validator("address")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address; give the host's IPv4 address, e.g. 10.0.0.1 "
                             f"(DistDGL matches hosts by address, not by name)") from None
        if ip.version != 4:
            raise ValueError(f"{value!r} is IPv6; DistDGL 2.1 finds its machine by IPv4 address only")
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"{value!r} cannot be a host address; give the address its servers listen on")
        return str(ip)

    @field_validator("ssh_user")
    @classmethod
    def _user(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _SSH_USER.match(value):
            raise ValueError(f"{value!r} is not a plain login name (letters, digits, '.', '_', '-'; "
                             f"not starting with '-')")
        return value


class DistributedSection(BaseModel):
    """How a recipe runs on DistDGL: hosts, processes per host, ports and partitioning."""

    model_config = _STRICT

    hosts: list[HostSection] = Field(..., min_length=1)  # one partition per host, in this order
    trainers_per_host: int = Field(1, ge=1)
    samplers: int = Field(0, ge=0)  # sampler processes per trainer (0: sample in the trainer)
    servers_per_host: int = Field(1, ge=1)
    port: _Port = 30050  # DistDGL server port; server j of a host listens on port + j
    master_port: _Port = 29500  # torch.distributed rendezvous on the first host
    partition_method: Literal["metis", "random"] = "metis"
    partition_dir: str = Field("partitions/{name}", min_length=1)  # {name}: the recipe name
    balance_train: bool = True  # balance training nodes across partitions (METIS constraint)
    balance_edges: bool = False  # also balance edges across partitions (METIS constraint)
    num_hops: int = Field(1, ge=1)  # halo hops stored with each partition
    graph_format: list[Literal["csc", "csr", "coo"]] = Field(default_factory=lambda: ["csc"], min_length=1)
    server_threads: int = Field(1, ge=1)  # OMP threads per server process
    trainer_threads: Optional[int] = Field(None, ge=1)  # default: train.threads, else cores / (2 x trainers)
    python: Optional[str] = Field(None, min_length=1)  # interpreter on the hosts (default: the launcher's)
    workdir: Optional[str] = Field(None, min_length=1)  # folder on every host (default: the launcher's cwd)
    stop_grace_seconds: float = Field(10.0, gt=0, le=60)  # SIGTERM -> SIGKILL when stopping processes
    # Seconds between starting one server and the next. A server briefly holds its partition twice
    # while it loads it (read, then copied to shared memory); hosts that share one machine's memory
    # (network namespaces on one box) load one after another with an interval longer than a load.
    server_start_interval: float = Field(0.0, ge=0, le=600)
    # glibc's allocator in the launched processes: blocks of at least this many MB get a mapping of
    # their own, backed by transparent huge pages, and go back to the system when freed. The
    # default (None) keeps glibc's threshold, which rises to 32 MB as large blocks are freed, so a
    # step's activations (25 MB each for 100k nodes at width 64) are kept in the heap: a trainer's
    # 100k-node RBTransformer step peaked 0.5 GB lower with 16, at the same speed on one thread
    # (docs/scaling.md). Needs transparent huge pages in `always` or `madvise` mode: without them
    # the same setting made that step 1.5x slower.
    malloc_mmap_threshold_mb: Optional[int] = Field(None, ge=1, le=1024)

    @field_validator("partition_dir")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        stripped = value.replace("{name}", "")
        if "{" in stripped or "}" in stripped:
            raise ValueError(f"{value!r}: the only placeholder allowed is {{name}} (the recipe name)")
        return value

    @model_validator(mode="after")
    def _check(self):
        seen: dict[str, int] = {}
        for i, host in enumerate(self.hosts):
            if host.address in seen:
                raise ValueError(f"hosts.{i}.address {host.address} repeats hosts.{seen[host.address]}: DistDGL "
                                 f"finds a machine's partition by its address, so every host needs its own "
                                 f"address (several hosts on one box: one network namespace each, see "
                                 f"docs/distributed.md)")
            seen[host.address] = i
        loopback = [h.address for h in self.hosts if ipaddress.ip_address(h.address).is_loopback]
        if loopback and len(self.hosts) > 1:
            raise ValueError(f"host {loopback[0]} is a loopback address: with several hosts every host must "
                             f"be reachable from the others, so use their network addresses")
        last = self.port + self.servers_per_host - 1
        if last > 65535:
            raise ValueError(f"port {self.port} + servers_per_host {self.servers_per_host} runs past 65535")
        if self.port <= self.master_port <= last:
            raise ValueError(f"master_port {self.master_port} collides with the server ports "
                             f"{self.port}..{last}; pick another")
        if len(set(self.graph_format)) != len(self.graph_format):
            raise ValueError(f"graph_format repeats a format: {self.graph_format}")
        return self

    @property
    def num_trainers(self) -> int:
        return len(self.hosts) * self.trainers_per_host

    def server_ports(self) -> list[int]:
        return list(range(self.port, self.port + self.servers_per_host))


def partition_dir_of(recipe, dist: DistributedSection, workdir: str | os.PathLike | None = None) -> Path:
    """The partition folder with ``{name}`` filled in; relative paths are under ``workdir``."""
    path = Path(dist.partition_dir.replace("{name}", recipe.name))
    if not path.is_absolute():
        path = Path(workdir or dist.workdir or os.getcwd()) / path
    return path


# ---- recipes with a distributed section ---------------------------------------------------------

def parse_distributed(data: Any, source: str = "recipe") -> DistributedSection:
    """Validate a ``distributed`` mapping; errors name their key paths (``distributed.hosts.0...``)."""

    wrapper = create_model("DistributedRecipe", __config__=_STRICT, distributed=(DistributedSection, ...))
    try:
        return wrapper.model_validate({"distributed": data}).distributed
    except ValidationError as exc:
        raise RecipeError(f"{source}: {format_errors(exc, {'distributed': data})}") from None
