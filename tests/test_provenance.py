"""Provenance headers stop records from going back where they came from."""

import pytest

from replicator import batches
from replicator.provenance import HOPS, ORIGIN, Provenance, origin_of, user_headers

S2T = Provenance(source_cluster_id="src", target_cluster_id="tgt")
T2S = Provenance(source_cluster_id="tgt", target_cluster_id="src")


def test_a_local_record_is_stamped_with_its_origin_and_one_hop():
    assert S2T.forward([]) == [(ORIGIN, b"src"), (HOPS, b"1")]


def test_user_headers_are_kept_in_order():
    headers = [("b", b"2"), ("a", b"1"), ("b", b"3")]
    forwarded = S2T.forward(headers)
    assert user_headers(forwarded) == headers
    assert origin_of(forwarded) == "src"


def test_a_record_is_never_sent_back_to_its_origin():
    arrived_on_target = S2T.forward([("k", b"v")])
    assert T2S.forward(arrived_on_target) is None


def test_a_record_from_a_third_cluster_keeps_its_origin_and_counts_hops():
    from_elsewhere = [(ORIGIN, b"third"), (HOPS, b"2"), ("k", b"v")]
    forwarded = S2T.forward(from_elsewhere)
    assert forwarded == [("k", b"v"), (ORIGIN, b"third"), (HOPS, b"3")]


def test_a_garbled_hop_count_counts_as_zero():
    assert S2T.forward([(ORIGIN, b"third"), (HOPS, b"x")])[-1] == (HOPS, b"1")


@pytest.mark.parametrize("headers", [
    [],
    [("h", b"x"), ("n", None)],
    [(ORIGIN, b"third"), (HOPS, b"2"), ("k", b"v")],
    [("k", b"v"), (ORIGIN, b"tgt"), (HOPS, b"1")],
], ids=["none", "the record's own", "from a third cluster", "back at its origin"])
def test_forward_fields_writes_as_bytes_what_forward_gives(headers):
    fields = batches.encode_fields(b"key", b"value", headers)
    forwarded = S2T.forward(headers)
    expected = None if forwarded is None else batches.encode_fields(b"key", b"value", forwarded)
    assert S2T.forward_fields(fields) == expected
