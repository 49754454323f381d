"""How a collection is spread over the peers of a Qdrant cluster: Qdrant's own collection parameters, as plain data.

- `shard_number`: the collection is cut into this many shards; a point goes to a shard by a hash of its id, so the
  pages of one document are spread over them. Unset, the server makes one shard per peer it has when the collection
  is created (one on a single node). Fixed at creation: a server outside Qdrant Cloud cannot change it later.
- `replication_factor`: each shard is kept on this many peers, at most one copy per peer (with fewer peers, every
  peer holds a copy). Replicas survive the loss of a peer and share the reads.
- `write_consistency_factor`: a write succeeds once this many replicas of its shard have applied it (1 to the
  replication factor); the other replicas apply it too, or are marked dead and recovered later.

The embedded engine (qdrant-edge) is one shard inside this process: these parameters do nothing there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from config import Settings
from core.errors import ConfigError

FIELDS = ("shard_number", "replication_factor", "write_consistency_factor")


@dataclass(frozen=True)
class Distribution:
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> "Distribution":
        d = cls(s.shard_number, s.replication_factor, s.write_consistency_factor)
        rf, wcf = d.replication_factor, d.write_consistency_factor
        if rf is not None and wcf is not None and wcf > rf:
            raise ConfigError(
                f"TOKENDIRECT_WRITE_CONSISTENCY_FACTOR ({wcf}) exceeds TOKENDIRECT_REPLICATION_FACTOR ({rf}): every "
                "write would wait for more replicas than a shard has"
            )
        return d

    def requested(self) -> dict[str, int]:
        """The parameters set, as create_collection takes them (the server decides the rest)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


EMBEDDED = Distribution(1, 1, 1)  # what the embedded engine is: one shard, one copy
