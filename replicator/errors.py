"""The few errors an operator sees, each carrying what they must know to act."""


class ReplicatorError(Exception):
    """Base of every error the replicator raises on purpose."""

    exit_code = 1  # the command line's exit code for it (README, "Commands")


class UsageError(ReplicatorError):
    """The command line asks for what the command cannot do; the message says what to add."""

    exit_code = 2


class ConfigError(ReplicatorError):
    """The configuration is invalid; the message names each field and the fix."""

    exit_code = 3


class ClusterError(ReplicatorError):
    """A cluster cannot be used: unreachable, or it refused our credentials."""

    exit_code = 4

    def __init__(self, side: str, bootstrap_servers: str, reason: str):
        self.side = side
        self.bootstrap_servers = bootstrap_servers
        self.reason = reason
        super().__init__(f"{side} cluster ({bootstrap_servers}): {reason}")


class ProblemFound(ReplicatorError):
    """A check found what stops replication or a switch-over: a source topic missing, an
    offset that cannot be translated."""


class RecordRejected(ReplicatorError):
    """The target refused a record for good; its partition stops there."""

    def __init__(self, topic: str, partition: int, offset: int, reason: str):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"record {topic}[{partition}]@{offset} rejected by the target: {reason}; "
            f"partition {topic}[{partition}] is stopped at offset {offset} and nothing after it "
            "is committed. Fix the cause (e.g. raise max.message.bytes on the target topic) "
            "and restart, or set onError: skip for this direction to log and skip such records"
        )


class Fenced(ReplicatorError):
    """Exactly-once: one of our transactions cannot go on, most likely because another
    member was given its partition and took over its transactional id."""

    def __init__(self, transactional_id: str, reason: str):
        self.transactional_id = transactional_id
        super().__init__(
            f"the target ended transactional id {transactional_id!r} ({reason}): another member "
            "most likely owns its partition now; nothing of the open transaction is visible to "
            "read_committed readers, and the flow starts again from the positions the target "
            "committed")


class PortUnavailable(ReplicatorError):
    """The probes' and metrics' port cannot be bound here (taken, or a host not of this machine)."""

    def __init__(self, host: str, port: int, reason: str):
        self.host = host
        self.port = port
        super().__init__(f"cannot serve probes and metrics on {host}:{port}: {reason}; choose "
                         "another port or host")


class TopicRecreated(ReplicatorError):
    """A replicated source topic was deleted and created again: its offsets start over, and its
    records would mix silently with the old topic's on the target."""

    def __init__(self, direction: str, topic: str, target: str, old_id: str, new_id: str):
        self.topic = topic
        super().__init__(
            f"source topic {topic!r} was deleted and created again while replicated (topic id "
            f"{old_id} is now {new_id}); replication.{direction} stopped copying it, so that the "
            f"new topic's records do not mix with the old one's in target topic {target!r}. To copy "
            f"the new topic: delete target topic {target!r} (or route {topic!r} to another "
            "targetTopicName) and restart the replicator; restarting alone would append the new "
            "topic's records to the old ones")


class AclSyncRefused(ClusterError):
    """A cluster refused what ACL sync needs (to list or change ACLs, or its ledger topic), or has
    no authorizer; the message says what to grant, or to turn syncAcls off."""
