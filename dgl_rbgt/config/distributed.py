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

__all__ = ["HostSection", "DistributedSection", "load_distributed_recipe", "parse_distributed",
           "check_recipe_for_distributed", "partition_dir_of", "local_ipv4_addresses", "is_local_address"]

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
    # Spexphormer: training table draws stored with the partitions; epochs cycle through them,
    # one per neighbour_tables.resample_every epochs
    table_draws: int = Field(1, ge=1)
    graph_format: list[Literal["csc", "csr", "coo"]] = Field(default_factory=lambda: ["csc"], min_length=1)
    server_threads: int = Field(1, ge=1)  # OMP threads per server process
    trainer_threads: Optional[int] = Field(None, ge=1)  # default: train.threads, else cores / (2 x trainers)
    python: Optional[str] = Field(None, min_length=1)  # interpreter on the hosts (default: the launcher's)
    workdir: Optional[str] = Field(None, min_length=1)  # folder on every host (default: the launcher's cwd)
    stop_grace_seconds: float = Field(10.0, gt=0, le=60)  # SIGTERM -> SIGKILL when stopping processes

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
    from ..recipes import _format_errors

    wrapper = create_model("DistributedRecipe", __config__=_STRICT, distributed=(DistributedSection, ...))
    try:
        return wrapper.model_validate({"distributed": data}).distributed
    except ValidationError as exc:
        raise RecipeError(f"{source}: {_format_errors(exc, {'distributed': data})}") from None


def load_distributed_recipe(path: str | os.PathLike, overrides: list[str] = ()):
    """Read, override and validate a recipe that has a ``distributed:`` section.

    Returns ``(recipe, dist)`` with ``dist`` being ``recipe.distributed``.
    """
    from ..recipes import load_recipe

    path = Path(path)
    recipe = load_recipe(path, overrides)
    dist = recipe.distributed
    if dist is None:
        raise RecipeError(f"{path}: no 'distributed:' section; add one with at least "
                          f"'hosts: [{{address: 127.0.0.1}}]' (see docs/distributed.md)")
    check_recipe_for_distributed(recipe, dist, source=str(path))
    return recipe, dist


def check_recipe_for_distributed(recipe, dist: DistributedSection, source: str = "recipe") -> None:
    """Cross-checks between the recipe and its distributed section."""
    t = recipe.train
    if t.batching == "full":
        raise RecipeError(f"{source}: train.batching: 'full' needs the whole graph in one process; a distributed "
                          f"run trains on mini-batches: neighbor (GCN, GAT; with train.fanouts), node_batch "
                          f"(RBTransformer) or neighbour_tables (Spexphormer)")
    if t.batching == "neighbour_tables" and recipe.neighbour_tables.resample_every > 0 \
            and dist.table_draws == 1 and t.epochs > recipe.neighbour_tables.resample_every:
        raise RecipeError(f"{source}: neighbour_tables.resample_every: {recipe.neighbour_tables.resample_every} asks "
                          f"for fresh tables during the run, but distributed.table_draws is 1 (the partitions "
                          f"store the draws); set distributed.table_draws to the number of draws to cycle "
                          f"through, or neighbour_tables.resample_every: 0 for one fixed draw")


# ---- addresses of this machine -----------------------------------------------------------------

def local_ipv4_addresses() -> set[str]:
    """IPv4 addresses of this machine's interfaces (as DistDGL sees them), plus 127.0.0.1."""
    import fcntl
    import socket
    import struct

    found = {"127.0.0.1"}
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                raw = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
            except OSError:
                continue
        found.add(socket.inet_ntoa(raw[20:24]))
    return found


def interface_of(address: str) -> str | None:
    """The name of the interface that holds ``address`` here (for GLOO/NCCL_SOCKET_IFNAME)."""
    import fcntl
    import socket
    import struct

    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                raw = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
        if socket.inet_ntoa(raw[20:24]) == address:
            return name
    return None


def is_local_address(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback or address in local_ipv4_addresses()
