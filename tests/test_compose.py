"""docker-compose.yml, read by a YAML parser and held to what server mode promises (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
API_KEY = re.compile(r"^\$\{QDRANT_API_KEY:\?.+\}$")  # read from the environment, and required


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def qdrant(compose) -> dict:
    return compose["services"]["qdrant"]


@pytest.fixture(scope="module")
def ingest(compose) -> dict:
    return compose["services"]["ingest"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the other spelling compose accepts: ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_qdrant_is_a_pinned_release(qdrant):
    image, _, tag = qdrant["image"].partition(":")
    assert image == "qdrant/qdrant"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{qdrant['image']} is not pinned to a release"


def test_qdrant_publishes_rest_and_grpc(qdrant):
    published = sorted(str(p).rsplit(":", 2)[-2:] for p in qdrant["ports"])  # [host port, container port]
    assert published == [["6333", "6333"], ["6334", "6334"]]


def test_qdrant_keeps_its_data_in_a_named_volume(compose, qdrant):
    (volume,) = [v.split(":")[0] for v in qdrant["volumes"] if v.split(":")[1] == "/qdrant/storage"]
    assert not volume.startswith((".", "/", "$")), "a named volume, not a host folder"
    assert volume in compose["volumes"]


def test_qdrant_has_a_healthcheck(qdrant):
    check = qdrant["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and "6333" in " ".join(check["test"])
    assert {"interval", "timeout", "retries"} <= check.keys()


def test_the_api_key_comes_from_the_environment(qdrant, ingest):
    assert API_KEY.match(environment(qdrant)["QDRANT__SERVICE__API_KEY"])
    assert environment(ingest)["TOKENDIRECT_QDRANT_API_KEY"] == environment(qdrant)["QDRANT__SERVICE__API_KEY"]


def test_the_ingest_job_ingests_the_mounted_documents_read_only(ingest):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tokendirect"]' in dockerfile
    assert ingest["command"][:2] == ["ingest", "/data"]  # tokendirect ingest /data
    data = [v for v in ingest["volumes"] if str(v).rsplit(":", 2)[-2:] == ["/data", "ro"]]
    assert len(data) == 1, ingest["volumes"]


def test_the_ingest_job_talks_to_the_server_once_it_is_healthy(ingest):
    assert environment(ingest)["TOKENDIRECT_QDRANT_URL"] == "http://qdrant:6333"
    assert ingest["depends_on"]["qdrant"]["condition"] == "service_healthy"


def test_the_ingest_job_runs_only_when_asked(ingest):
    """`docker compose up -d qdrant` leaves it alone; `docker compose run --rm ingest` runs it once and exits."""
    assert ingest.get("profiles"), "a profile keeps `docker compose up` from starting the job"
    assert ingest.get("restart", "no") == "no"


def assert_readme_shows(*texts: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert [t for t in texts if t not in readme] == []


def test_the_readme_shows_how_to_start_the_server_run_the_job_and_open_the_dashboard():
    assert_readme_shows(
        "docker compose up -d qdrant",
        "docker compose run --rm ingest",
        "http://localhost:6333/dashboard",
        "QDRANT_API_KEY",
    )


# -- the cluster: docker-compose.cluster.yml ---------------------------------------------------------------------

NODES = ["qdrant-1", "qdrant-2", "qdrant-3"]
P2P = "6335"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())


def flags(command) -> dict[str, str]:
    """--name value pairs of a node's command (a list, or `bash -c "... ./entrypoint.sh --name value ..."`)."""
    words = " ".join(command).replace(";", " ").split()
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


def test_the_cluster_is_three_nodes_of_the_pinned_release(compose, cluster):
    nodes = [name for name, service in cluster["services"].items() if "qdrant/qdrant" in service.get("image", "")]
    assert nodes == NODES
    assert {cluster["services"][n]["image"] for n in NODES} == {compose["services"]["qdrant"]["image"]}


def test_every_node_runs_in_cluster_mode_and_peers_talk_on_an_unpublished_port(cluster):
    for name in NODES:
        node = cluster["services"][name]
        env = environment(node)
        assert env["QDRANT__CLUSTER__ENABLED"] == "true" and env["QDRANT__CLUSTER__P2P__PORT"] == P2P
        assert P2P in [str(p) for p in node["expose"]]
        published = [str(p).rsplit(":", 1)[-1] for p in node.get("ports", [])]
        assert P2P not in published, "the peer port accepts writes: it stays inside the compose network"


def test_the_first_node_starts_the_cluster_and_the_others_join_it(cluster):
    first = flags(cluster["services"]["qdrant-1"]["command"])
    assert first == {"--uri": f"http://qdrant-1:{P2P}"}
    for name in NODES[1:]:
        joining = flags(cluster["services"][name]["command"])
        assert joining == {"--bootstrap": f"http://qdrant-1:{P2P}", "--uri": f"http://{name}:{P2P}"}
        assert "qdrant-1" in cluster["services"][name]["depends_on"]


def test_each_node_keeps_its_data_in_a_volume_of_its_own(cluster):
    volumes = []
    for name in NODES:
        (volume,) = [v.split(":")[0] for v in cluster["services"][name]["volumes"] if v.endswith(":/qdrant/storage")]
        assert volume in cluster["volumes"] and not volume.startswith((".", "/", "$"))
        volumes.append(volume)
    assert len(set(volumes)) == len(NODES)


def test_every_node_requires_the_api_key_and_checks_it_between_peers(cluster):
    keys = {environment(cluster["services"][n])["QDRANT__SERVICE__API_KEY"] for n in NODES}
    assert len(keys) == 1 and API_KEY.match(keys.pop())
    assert all(environment(cluster["services"][n])["QDRANT__SERVICE__ENFORCE_INTERNAL_AUTH"] == "true" for n in NODES)


def test_every_node_is_healthy_once_ready(cluster):
    for name in NODES:
        check = cluster["services"][name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and "/readyz" in " ".join(check["test"])
        assert {"interval", "timeout", "retries"} <= check.keys()


@pytest.mark.parametrize("job", ["ingest", "ingest-gpu"])
def test_the_ingest_job_writes_to_the_cluster_once_every_node_is_ready(cluster, job):
    service = cluster["services"][job]
    env = environment(service)
    assert env["TOKENDIRECT_QDRANT_URL"] in {f"http://{n}:6333" for n in NODES}
    assert env["TOKENDIRECT_QDRANT_API_KEY"] == environment(cluster["services"]["qdrant-1"])["QDRANT__SERVICE__API_KEY"]
    assert {n: c["condition"] for n, c in service["depends_on"].items()} == dict.fromkeys(NODES, "service_healthy")
    assert service["command"][:2] == ["ingest", "/data"] and "--partition" in service["command"]
    assert service.get("profiles") and service.get("restart", "no") == "no"
    assert [v for v in service["volumes"] if str(v).rsplit(":", 2)[-2:] == ["/data", "ro"]]


def test_the_collection_is_spread_as_qdrant_allows_on_three_nodes(cluster):
    env = environment(cluster["services"]["ingest"])

    def default(name: str) -> int:  # ${NAME:-default}
        return int(re.fullmatch(r"\$\{\w+:-(\d+)\}", env[f"TOKENDIRECT_{name}"])[1])

    shards, replicas, consistency = (
        default("SHARD_NUMBER"),
        default("REPLICATION_FACTOR"),
        default("WRITE_CONSISTENCY_FACTOR"),
    )
    assert shards % len(NODES) == 0  # every node holds as many shards
    assert 2 <= replicas <= len(NODES)  # a node can go down; at most one copy of a shard per node
    assert 1 <= consistency <= replicas


def test_the_gpu_job_builds_the_gpu_image_and_asks_for_a_gpu(cluster):
    service = cluster["services"]["ingest-gpu"]
    assert service["build"]["dockerfile"] == "Dockerfile.gpu" and (ROOT / "Dockerfile.gpu").exists()
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert cluster["services"]["ingest"]["build"]["dockerfile"] == "Dockerfile"


def test_the_readme_shows_how_to_run_the_cluster_and_its_workers():
    assert_readme_shows(
        "docker compose -f docker-compose.cluster.yml up -d",
        "docker compose -f docker-compose.cluster.yml run --rm ingest",
        "--partition",
        "TOKENDIRECT_SHARD_NUMBER",
        "TOKENDIRECT_REPLICATION_FACTOR",
        "TOKENDIRECT_WRITE_CONSISTENCY_FACTOR",
        "Dockerfile.gpu",
    )
