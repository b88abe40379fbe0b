"""The check behind the demo's proof and the failover tests: sent against arrived, per partition."""

from workbench.traffic import check_partition

SENT = ["a", "b", "c", "d", "e"]


def check(arrived):
    return check_partition("t", 0, SENT, arrived)


def test_an_exact_copy_is_exact_with_nothing_to_report():
    result = check(list(SENT))
    assert result.exact
    assert (result.sent, result.arrived, result.duplicates, result.missing,
            result.out_of_order, result.foreign) == (5, 5, 0, 0, 0, 0)


def test_a_replay_after_a_failure_counts_duplicates_and_is_still_exact():
    # Copied up to d, committed up to b: the restarted member sends c, d again.
    result = check(["a", "b", "c", "d", "c", "d", "e"])
    assert result.exact and result.duplicates == 2


def test_a_record_that_never_arrived_is_missing():
    result = check(["a", "b", "d", "e"])
    assert not result.exact and (result.missing, result.out_of_order) == (1, 0)


def test_records_that_arrived_in_another_order_are_out_of_order():
    result = check(["a", "c", "b", "d", "e"])
    assert not result.exact and (result.out_of_order, result.missing) == (1, 0)


def test_a_record_that_was_not_sent_to_this_partition_is_foreign():
    result = check(["a", "b", "x", "c", "d", "e"])
    assert not result.exact and result.foreign == 1


def test_an_empty_partition_is_exact_when_nothing_was_sent_to_it():
    assert check_partition("t", 3, [], []).exact
