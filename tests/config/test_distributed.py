"""The distributed: section: every documented mistake is refused with its key path and a fix."""
from pathlib import Path

import pytest
import yaml

from dgl_rbgt.distributed.addresses import is_local_address
from dgl_rbgt.config import (DistributedSection, check_recipe_for_distributed,
                                         load_distributed_recipe, parse_distributed, partition_dir_of)
from dgl_rbgt.errors import RecipeError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "recipes" / "distributed").glob("*.yaml"))


def section(**kw):
    data = {"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]}
    data.update(kw)
    return data


def test_defaults():
    d = parse_distributed(section())
    assert (d.trainers_per_host, d.samplers, d.servers_per_host, d.port, d.master_port) == (1, 0, 1, 30050, 29500)
    assert d.partition_method == "metis" and d.partition_dir == "partitions/{name}" and d.balance_train
    assert d.hosts[1].ssh_port == 22 and d.hosts[1].ssh_user is None and d.hosts[0].run_via is None
    assert d.num_trainers == 2 and d.server_ports() == [30050]


@pytest.mark.parametrize("data, message", [
    (section(hosts=[]), r"distributed\.hosts: List should have at least 1 item"),
    (section(hosts=[{"address": "node1"}]), r"distributed\.hosts\.0\.address: 'node1' is not an IP address"),
    (section(hosts=[{"address": "::1"}]), r"distributed\.hosts\.0\.address: '::1' is IPv6"),
    (section(hosts=[{"address": "0.0.0.0"}]), r"cannot be a host address"),
    (section(hosts=[{"address": "10.0.0.1", "colour": 1}]), r"distributed\.hosts\.0\.colour: unknown key"),
    (section(hosts=[{"address": "10.0.0.1", "ssh_user": "-oProxyCommand=x"}]), r"ssh_user: .*not a plain login"),
    (section(hosts=[{"address": "10.0.0.1", "ssh_port": 0}]), r"ssh_port: .*greater than or equal to 1"),
    (section(hosts=[{"address": "10.0.0.1", "run_via": []}]), r"run_via: .*at least 1 item"),
    (section(hosts=[{"address": "10.0.0.1"}, {"address": "10.0.0.1"}]),
     r"hosts\.1\.address 10\.0\.0\.1 repeats hosts\.0.*network namespace"),
    (section(hosts=[{"address": "127.0.0.1"}, {"address": "10.0.0.2"}]), r"127\.0\.0\.1 is a loopback address"),
    (section(trainers_per_host=0), r"distributed\.trainers_per_host: .*greater than or equal to 1"),
    (section(trainers_per_host="2"), r"distributed\.trainers_per_host: Input should be a valid integer"),
    (section(samplers=-1), r"distributed\.samplers"),
    (section(port=80), r"distributed\.port: .*greater than or equal to 1024"),
    (section(port=70000), r"distributed\.port: .*less than or equal to 65535"),
    (section(port=65535, servers_per_host=2), r"runs past 65535"),
    (section(port=30050, servers_per_host=2, master_port=30051), r"master_port 30051 collides with the server ports 30050\.\.30051"),
    (section(partition_method="kahip"), r"distributed\.partition_method: Input should be 'metis' or 'random'"),
    (section(partition_dir="parts/{recipe}"), r"only placeholder allowed is \{name\}"),
    (section(graph_format=["csc", "csc"]), r"graph_format repeats"),
    (section(stop_grace_seconds=0), r"stop_grace_seconds"),
    (section(server_start_interval=-1), r"distributed\.server_start_interval: .*greater than or equal to 0"),
    (section(server_start_interval="soon"), r"distributed\.server_start_interval: Input should be a valid number"),
    (section(hostz=[]), r"distributed\.hostz: unknown key"),
])
def test_bad_sections_name_the_key(data, message):
    with pytest.raises(RecipeError, match=message):
        parse_distributed(data)


def test_errors_are_one_line_and_all_reported():
    with pytest.raises(RecipeError) as info:
        parse_distributed(section(port=1, samplers=-1))
    text = str(info.value)
    assert "distributed.port" in text and "distributed.samplers" in text and "\n" not in text


def test_partition_dir_placeholder(tmp_path):
    class R:
        name = "demo"
    d = parse_distributed(section())
    assert partition_dir_of(R, d, tmp_path) == tmp_path / "partitions" / "demo"
    d = parse_distributed(section(partition_dir=str(tmp_path / "p-{name}")))
    assert partition_dir_of(R, d) == tmp_path / "p-demo"


def test_local_addresses():
    assert is_local_address("127.0.0.1") and is_local_address("127.0.0.5")
    assert not is_local_address("192.0.2.1")  # TEST-NET-1: documentation only, never assigned


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    recipe, dist = load_distributed_recipe(path)
    assert recipe.name == path.stem
    assert isinstance(dist, DistributedSection)
    text = path.read_text()
    assert "dgl-rbgt partition" in text and "dgl-rbgt launch" in text and "dgl-rbgt train" in text


def test_shipped_recipes_found():
    assert {p.name for p in SHIPPED} >= {"quickstart_local.yaml", "quickstart_2hosts.yaml", "rbtransformer_local.yaml",
                                         "spexphormer_local.yaml"}


def write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"name": "t", "dataset": {"name": "csbm"}, "model": {"name": "gcn"},
        "train": {"batching": "neighbor", "fanouts": [5, 5]}}


def test_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match=r"no 'distributed:' section"):
        load_distributed_recipe(write(tmp_path, BASE))
    bad = {**BASE, "distributed": section(port="x")}
    with pytest.raises(RecipeError, match=r"r\.yaml: distributed\.port: Input should be a valid integer"):
        load_distributed_recipe(write(tmp_path, bad))
    full = {**BASE, "train": {"batching": "full"}, "distributed": section()}
    with pytest.raises(RecipeError, match=r"train\.batching: 'full' needs the whole graph in one process"):
        load_distributed_recipe(write(tmp_path, full))
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_distributed_recipe(tmp_path / "missing.yaml")


def test_overrides_reach_the_section(tmp_path):
    path = write(tmp_path, {**BASE, "distributed": section()})
    recipe, dist = load_distributed_recipe(path, ["distributed.port=31000", "distributed.hosts.1.ssh_user=bob",
                                                  "train.epochs=3"])
    assert dist.port == 31000 and dist.hosts[1].ssh_user == "bob" and recipe.train.epochs == 3
    check_recipe_for_distributed(recipe, dist)
