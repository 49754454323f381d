"""A collection spread over a Qdrant cluster: Qdrant's shard, replica and write-consistency parameters as they reach
qdrant-client, and writers on several hosts creating one collection at the same moment. No server runs here, so a
recording wrapper around a real in-process client shows what a server would be asked, and the client still runs."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from qdrant_client import QdrantClient

from config import Settings
from core.errors import ConfigError, StoreError
from core.model import ModelIdentity
from core.pages import point_id
from core.store import ClientStore, EdgeStore, PagePoint, open_store
from core.store.client import MEMORY
from core.store.cluster import EMBEDDED, Distribution

# The recorded store is not in-process by name, so it asks for payload indexes, which the in-process client ignores.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")

IDENTITY = ModelIdentity("test/cluster-model", "rev-a", 16)
CLUSTER = {"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2}


class Recording:
    """A real client that notes every call (name, keyword arguments) before making it."""

    def __init__(self, client, lie_exists: int = 0):
        self.client = client
        self.calls: list[tuple[str, dict]] = []
        self.lie_exists = lie_exists  # answer "no such collection" this many times (another writer races us)

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, kwargs))
            if name == "collection_exists" and self.lie_exists:
                self.lie_exists -= 1
                return False
            return attr(*args, **kwargs)

        return call

    def made(self, name: str) -> list[dict]:
        return [kwargs for called, kwargs in self.calls if called == name]


def page(doc: str = "doc-a", number: int = 1) -> PagePoint:
    tokens = np.random.default_rng(number).normal(size=(5, IDENTITY.dim)).astype(np.float32)
    return PagePoint(point_id(doc, number), {"doc_id": doc, "source": f"/{doc}.pdf", "page": number}, tokens)


def client_store(client, settings: Settings) -> ClientStore:
    # `where` is not ":memory:", so closing the store closes this client alone (no process-wide handle)
    return ClientStore(client, settings.collection, "recorded", distribution=Distribution.from_settings(settings))


@pytest.fixture
def client():
    c = QdrantClient(location=MEMORY)
    yield c
    c.close()


def test_a_server_collection_is_created_with_the_clusters_parameters(client):
    recording = Recording(client)
    store = client_store(recording, Settings(qdrant_url="http://qdrant-1:6333", **CLUSTER))
    store.bind(IDENTITY)
    (created,) = recording.made("create_collection")
    assert {k: created[k] for k in CLUSTER} == CLUSTER
    assert "tokens" in created["vectors_config"]  # the collection itself, as before
    store.upsert([page()])  # and the client took it: the collection works
    assert store.count() == 1 and store.existing([page().point_id]) == {page().point_id}


def test_unset_parameters_are_left_to_the_server(client):
    recording = Recording(client)
    client_store(recording, Settings(qdrant_url="http://qdrant-1:6333")).bind(IDENTITY)
    (created,) = recording.made("create_collection")
    assert not set(CLUSTER) & set(created)  # the server's defaults: a shard per peer, one copy, one acknowledgement


def test_a_write_cannot_wait_for_more_replicas_than_a_shard_has():
    with pytest.raises(ConfigError, match="TOKENDIRECT_WRITE_CONSISTENCY_FACTOR .3. exceeds"):
        Distribution.from_settings(Settings(replication_factor=2, write_consistency_factor=3))
    assert Distribution.from_settings(Settings(write_consistency_factor=2)).requested() == {
        "write_consistency_factor": 2
    }  # the server's default replication may be higher: it judges


@pytest.mark.parametrize("name", ["shard_number", "replication_factor", "write_consistency_factor"])
def test_the_settings_are_read_from_the_environment_under_qdrants_names(monkeypatch, name):
    monkeypatch.setenv(f"TOKENDIRECT_{name.upper()}", "3")
    assert getattr(Settings(), name) == 3


def test_two_writers_creating_one_collection_at_once_both_go_on(client):
    """Ingest workers on several hosts start together on a fresh collection: the one that loses the race to create
    it takes the winner's collection and record, and removes nothing."""
    first = client_store(client, Settings(**CLUSTER))
    first.bind(IDENTITY)
    first.upsert([page("doc-a")])
    late = Recording(client, lie_exists=1)  # it looked before the first writer created the collection
    second = client_store(late, Settings(**CLUSTER))
    second.bind(IDENTITY)
    assert late.made("create_collection") and not late.made("delete_collection")
    second.upsert([page("doc-b")])
    assert first.count() == 2 and second.record() == first.record()


def test_a_writer_waits_for_the_record_of_a_collection_another_writer_is_creating(client):
    """Between the creator's create_collection and its record (indexes are made in between) others see a collection
    without a record: a writer waits for it rather than fail or take it for another program's."""
    first = client_store(client, Settings())
    first.ensure_indexes = lambda: time.sleep(1.0)  # a cluster agrees on each index in turn
    creating = threading.Thread(target=first.bind, args=(IDENTITY,))
    creating.start()
    while not client.collection_exists(first.collection):
        time.sleep(0.01)
    second = client_store(client, Settings())
    second.bind(IDENTITY)
    creating.join()
    assert second.record() == first.record()
    # a collection that never gets a record (another program's) is still refused, after the wait
    client.create_collection("foreign", vectors_config={})
    foreign = client_store(client, Settings(collection="foreign"))
    foreign.record_wait = 0.3
    with pytest.raises(StoreError, match="holds no token-direct record"):
        foreign.bind(IDENTITY)


def test_the_embedded_engine_is_one_shard_and_says_the_parameters_do_nothing(tmp_path, caplog):
    s = Settings(data_dir=tmp_path, qdrant_url=None, **CLUSTER)
    with caplog.at_level(logging.WARNING, logger="tokendirect.store"):
        store = open_store(s)
    try:
        assert isinstance(store, EdgeStore)
        assert "TOKENDIRECT_SHARD_NUMBER" in caplog.text and "ignores them" in caplog.text
        store.bind(IDENTITY)
        assert store.distribution() == EMBEDDED.to_dict() == dict.fromkeys(CLUSTER, 1)
    finally:
        store.close()
