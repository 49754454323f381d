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


def test_the_readme_shows_how_to_start_the_server_run_the_job_and_open_the_dashboard():
    readme = (ROOT / "README.md").read_text()
    for text in (
        "docker compose up -d qdrant",
        "docker compose run --rm ingest",
        "http://localhost:6333/dashboard",
        "QDRANT_API_KEY",
    ):
        assert text in readme, text
