"""Provenance headers: where a record was first written, and how many hops it made.

They let one topic be replicated in both directions at once: a record whose
origin is the cluster we would write it to came from there, so it is not sent back.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import batches

ORIGIN = "kafka-replicator.origin"
HOPS = "kafka-replicator.hops"
_OURS = (ORIGIN, HOPS)
_OURS_ENCODED = tuple(name.encode() for name in _OURS)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Provenance:
    """The clusters a direction reads from and writes to, by Kafka cluster id."""

    source_cluster_id: str
    target_cluster_id: str

    def __post_init__(self) -> None:
        # Bytes once, not per record: this runs on the hot path.
        object.__setattr__(self, "_target_id", self.target_cluster_id.encode())
        object.__setattr__(self, "_first_hop", first_hop(self.source_cluster_id))
        encoded = batches.encode_headers(self._first_hop)
        object.__setattr__(self, "_first_hop_encoded", encoded)
        object.__setattr__(self, "_first_hop_alone", batches.varint_bytes(len(self._first_hop)) + encoded)

    def forward_fields(self, fields: bytes) -> bytes | None:
        """`forward` for a record's key, value and headers as encoded (`batches.merge`): a
        record without our headers, the common first hop, gains them without being decoded."""
        end, count, first = batches.headers_at(fields)
        if count == 0:
            return fields[:end] + self._first_hop_alone
        if not batches.has_header(fields, first, count, _OURS_ENCODED):
            return b"".join((fields[:end], batches.varint_bytes(count + len(self._first_hop)),
                             fields[first:], self._first_hop_encoded))
        key, value, headers = batches.decode_fields(fields)
        forwarded = self.forward(headers)
        return None if forwarded is None else batches.encode_fields(key, value, forwarded)

    def forward(self, headers: Headers) -> Headers | None:
        """The headers to write on the target, or None if the record must not go there."""
        if not headers:
            return list(self._first_hop)
        for name, _ in headers:
            if name in _OURS:
                break
        else:  # the common case, a record's first hop: its headers plus ours, one new list
            return headers + self._first_hop
        origin = None
        hops = 0
        kept: Headers = []
        for name, value in headers:
            if name == ORIGIN:
                origin = value
            elif name == HOPS:
                hops = _parse_hops(value)
            else:
                kept.append((name, value))
        if origin is None:
            return kept + self._first_hop
        if origin == self._target_id:
            return None
        kept.append((ORIGIN, origin))
        kept.append((HOPS, str(hops + 1).encode()))
        return kept


def first_hop(source_cluster_id: str) -> Headers:
    """The headers a record first copied from `source_cluster_id` gains, after its own."""
    return [(ORIGIN, source_cluster_id.encode()), (HOPS, b"1")]


def _parse_hops(value: bytes | None) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


def origin_of(headers: Headers) -> str | None:
    """The origin cluster id a record carries, if any."""
    for name, value in headers or ():
        if name == ORIGIN and value is not None:
            return value.decode()
    return None


def user_headers(headers: Headers) -> Headers:
    """The record's headers without ours."""
    return [(name, value) for name, value in headers or () if name not in _OURS]
