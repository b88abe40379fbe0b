"""A fetch session with one broker (KIP-227): what the broker holds, and what to tell it next.

After a full fetch the broker keeps the session's partitions with the fetch offset last
sent for each; an incremental fetch lists only the partitions added or whose offset
changed (`forgotten` ones leave the session), and its answer carries only partitions
with records, a new high watermark or an error. An idle member's fetches then cost
nothing per partition on either side. The broker never moves a fetch offset itself: a
partition whose position moved (records taken, a seek) is sent again.

Anything unexpected (the broker forgot the session, an epoch out of step, a request
lost) falls back to a full fetch, which starts a new session. Modelled on kafka-python's
`FetchSessionHandler` (and Java's), which compares every partition at every request:
here changes are recorded as they happen.
"""

from __future__ import annotations

from kafka.errors import FetchSessionIdNotFoundError

NO_SESSION = 0  # a session id: none
FULL = 0  # an epoch: a full fetch, which (re)creates the session
THROTTLED = -1  # the session id of an empty answer held back by a quota
MAX_EPOCH = 2**31 - 1


class FetchSession:
    """One broker's session. `held` is what the broker holds, per partition the (offset,
    stamp) last sent; answers are read against it."""

    def __init__(self) -> None:
        self.session_id = NO_SESSION
        self.epoch = FULL
        self.wanted: set = set()  # the partitions to fetch from this broker
        self.held: dict = {}
        self._changed: set = set()  # wanted, and not as the broker holds them
        self._forgotten: set = set()  # held, no longer wanted

    def add(self, tp) -> None:
        self.wanted.add(tp)
        self._changed.add(tp)
        self._forgotten.discard(tp)

    def remove(self, tp) -> None:
        """Fetch `tp` no more here; an answer on its way is read without it."""
        self.wanted.discard(tp)
        self._changed.discard(tp)
        if self.held.pop(tp, None) is not None:
            self._forgotten.add(tp)  # even from a full fetch in flight: its answer makes a session

    def changed(self, tp) -> None:
        """`tp`'s position or stamp moved: the broker is told at the next fetch."""
        if tp in self.wanted:
            self._changed.add(tp)

    def next_request(self, positions: dict, stamps: dict, order) -> tuple[list, list]:
        """The partitions to list in the next fetch (offsets from `positions`) and those to
        forget; a full fetch lists every wanted partition in `order`'s order."""
        if self.epoch == FULL:
            listed = order(self.wanted)
            forgotten = []
            self.held = {}
        else:
            listed = list(self._changed)
            forgotten = list(self._forgotten)
        held = self.held
        for tp in listed:
            held[tp] = (positions[tp], stamps[tp])
        self._changed = set()
        self._forgotten = set()
        return listed, forgotten

    def answered(self, error: type | None, session_id: int) -> bool:
        """Take the broker's answer to the last request; False if its partitions are not to
        be read (the broker refused the session: the next fetch is a full one)."""
        if error is not None:
            if error is FetchSessionIdNotFoundError:
                self.session_id = NO_SESSION
            self.reset()
            return False
        if session_id == THROTTLED:
            self.reset()  # an empty answer to a request the broker may not have applied
            return True
        if session_id == NO_SESSION:
            self.session_id, self.epoch = NO_SESSION, FULL  # the broker keeps none: full fetches
        elif self.epoch == FULL:
            self.session_id, self.epoch = session_id, 1
        else:
            self.epoch = 1 if self.epoch == MAX_EPOCH else self.epoch + 1
        return True

    def reset(self) -> None:
        """Fetch in full next, which replaces the session (a request lost, or answered with
        an error, leaves the broker's view unknown)."""
        self.epoch = FULL
        self._forgotten = set()
        self._changed = set(self.wanted)
