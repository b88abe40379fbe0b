"""Links to the two clusters: kafka-python clients built from a ClusterConfig.

Connection and authentication failures become ClusterError naming the side.

TLS is checked here rather than left to kafka-python, which logs why a file or a
handshake failed and retries until its bootstrap times out: the TLS context is built
here (so an unusable file or key password is named before any connection), and the
first client of a TLS cluster opens with a handshake of its own that says what to check.
"""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cryptography import x509
from kafka import KafkaAdminClient
from kafka.errors import (
    AuthorizationError,
    KafkaConnectionError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
)

from .config import ClusterConfig, ReplicatorConfig
from .errors import ClusterError, ProblemFound, ReplicatorError
from .own_topics import NotReady
from .selection import Selection

log = logging.getLogger(__name__)

ADMIN_BOOTSTRAP_TIMEOUT_MS = 10_000
TLS_CHECK_TIMEOUT_SECONDS = 5.0

class _Masked(str):
    """A secret string that kafka-python can use but never prints (it logs its configs)."""

    def __repr__(self) -> str:
        return "'**********'"

    __str__ = __repr__


def client_settings(cluster: ClusterConfig) -> dict:
    """kafka-python connection settings shared by consumers, producers and admin clients."""
    settings: dict = {
        "bootstrap_servers": [s.strip() for s in cluster.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": cluster.security_protocol,
        "client_id": cluster.client_id,
        # kafka-python 3 backs off up to 30 s between attempts to reach a broker (Kafka's Java
        # clients: 1 s), so after a broker restart the group member could wait half a minute
        # per try to find its coordinator again; its bootstrap then gave up.
        "reconnect_backoff_max_ms": 1000,
    }
    if cluster.security_protocol.startswith("SASL"):
        settings["sasl_mechanism"] = cluster.sasl_mechanism
        settings["sasl_plain_username"] = cluster.sasl_username
        settings["sasl_plain_password"] = _Masked(cluster.resolved_sasl_password())
    if cluster.security_protocol.endswith("SSL"):
        settings["ssl_context"] = _tls_context(cluster)
    return settings


class _TlsProblem(ReplicatorError):
    """A TLS file or handshake that cannot work; reaching() names the cluster."""


def _tls_context(cluster: ClusterConfig) -> ssl.SSLContext:
    """The context kafka-python would build from the cluster's ssl* settings."""
    pem = {field: _read(field, path) for field, path in _tls_files(cluster).items()}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = cluster.ssl_check_hostname
    if "sslCaFile" in pem:
        try:
            context.load_verify_locations(cadata=pem["sslCaFile"].decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError):
            raise _TlsProblem(f"sslCaFile {cluster.ssl_ca_file} holds no PEM certificate; check that "
                              "it is the certificate of the CA that signed the brokers' certificates") from None
    else:
        context.load_default_certs()
    if cluster.ssl_cert_file is not None:
        _load_client_certificate(context, cluster, pem.get("sslKeyFile", pem["sslCertFile"]))
    elif cluster.ssl_key_file is not None:
        raise _TlsProblem("sslKeyFile is set without sslCertFile; set both (the client certificate and "
                          "its key) or neither")
    return context


def _tls_files(cluster: ClusterConfig) -> dict[str, Path]:
    files = {"sslCaFile": cluster.ssl_ca_file, "sslCertFile": cluster.ssl_cert_file,
             "sslKeyFile": cluster.ssl_key_file}
    return {field: path for field, path in files.items() if path is not None}


def _read(field: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _TlsProblem(f"{field} {path} cannot be read ({exc.strerror}); check the path and that "
                          "the replicator may read it") from None


def _load_client_certificate(context: ssl.SSLContext, cluster: ClusterConfig, key_pem: bytes) -> None:
    key_file = cluster.ssl_key_file or cluster.ssl_cert_file
    password = cluster.resolved_ssl_key_password()
    password_source = ("sslKeyPassword" if cluster.ssl_key_password is not None
                       else f"sslKeyPasswordEnv {cluster.ssl_key_password_env}")
    encrypted = b"ENCRYPTED" in key_pem  # PKCS#8 and traditional PEM both say so in the header
    if encrypted and password is None:
        raise _TlsProblem(f"sslKeyFile {key_file} is encrypted; set sslKeyPasswordEnv (or "
                          "sslKeyPassword) to its password")
    try:
        # A callable, never None: with None, OpenSSL asks for the password on the terminal.
        context.load_cert_chain(cluster.ssl_cert_file, cluster.ssl_key_file, password=lambda: password or "")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            reason = (f"sslKeyFile {key_file} is not the key of sslCertFile {cluster.ssl_cert_file}; "
                      "check that the two belong together")
        elif encrypted:
            reason = (f"sslKeyFile {key_file} cannot be decrypted with the key password "
                      f"({password_source}); check the key password")
        else:
            reason = (f"sslCertFile {cluster.ssl_cert_file} and sslKeyFile {key_file} must be a PEM "
                      f"certificate and its PEM private key ({exc.reason or 'unreadable'}); check both files")
        raise _TlsProblem(reason) from None


# ApiVersions v0: every broker answers it before authentication. It is sent because with
# TLS 1.3 a broker refuses a client certificate only after the handshake has finished.
_CLIENT_ID = b"kafka-replicator-tls-check"
_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
_API_VERSIONS_REQUEST = struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS

# X509_V_ERR_* codes: the issuer of a certificate is not among the trusted CAs ...
_UNKNOWN_ISSUER = {2, 18, 19, 20, 21}
# ... a certificate is not yet or no longer valid; the host name is not in the certificate.
_OUT_OF_DATE = {9, 10}
_HOSTNAME_MISMATCH = 62


def _check_tls(cluster: ClusterConfig, context: ssl.SSLContext) -> None:
    """Raise _TlsProblem if no bootstrap server accepts a TLS connection with ``context``.

    Servers that cannot be reached at all are skipped: that is kafka-python's to report.
    """
    problems = []
    for server in cluster.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")
        try:
            raw = socket.create_connection((host, int(port)), timeout=TLS_CHECK_TIMEOUT_SECONDS)
        except (OSError, ValueError):
            continue
        try:
            # The name kafka-python gives as server_hostname.
            with context.wrap_socket(raw, server_hostname=host.rstrip(".")) as tls:
                tls.sendall(_API_VERSIONS_REQUEST)
                if tls.recv(4):
                    return
                problems.append(f"{server.strip()} closed the connection after the TLS handshake; "
                                "check the broker's log")
        except ssl.SSLCertVerificationError as exc:
            problems.append(_broker_certificate_refused(cluster, host, exc))
        except ssl.SSLError as exc:
            problems.append(_handshake_refused(cluster, server.strip(), exc))
        except OSError as exc:
            problems.append(f"the TLS handshake with {server.strip()} failed "
                            f"({exc.strerror or type(exc).__name__}); check that it is a TLS listener "
                            f"(securityProtocol is {cluster.security_protocol})")
        finally:
            raw.close()
    if problems:
        raise _TlsProblem(problems[0])


def _broker_certificate_refused(cluster: ClusterConfig, host: str,
                                exc: ssl.SSLCertVerificationError) -> str:
    trusted = (f"sslCaFile {cluster.ssl_ca_file}" if cluster.ssl_ca_file
               else "the system's trusted CAs (sslCaFile is not set)")
    if exc.verify_code in _UNKNOWN_ISSUER:
        return (f"the broker's certificate is not signed by a CA in {trusted} ({exc.verify_message}); "
                "check that sslCaFile holds the certificate of the CA that signed the brokers' certificates")
    if exc.verify_code == _HOSTNAME_MISMATCH:
        return (f"the broker's certificate is not valid for the host name {host} ({exc.verify_message}); "
                "check that bootstrapServers uses a name or address the certificate lists "
                "(sslCheckHostname: false skips this check)")
    if exc.verify_code in _OUT_OF_DATE:
        return (f"the broker's certificate chain is not valid now ({exc.verify_message}); check the "
                f"dates of the broker's certificate and of the CA in {trusted}, and the clocks")
    return f"the broker's certificate was refused ({exc.verify_message}); check {trusted}"


def _handshake_refused(cluster: ClusterConfig, server: str, exc: ssl.SSLError) -> str:
    reason = exc.reason or type(exc).__name__
    said = reason.lower().replace("_", " ")  # e.g. "sslv3 alert bad certificate"
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        if cluster.ssl_cert_file is None:
            return (f"the broker refused the connection ({said}): it requires a client certificate "
                    "(mutual TLS); set sslCertFile and sslKeyFile")
        expired = _expired_on(cluster.ssl_cert_file)
        if expired is not None:
            return (f"the broker refused the client certificate sslCertFile {cluster.ssl_cert_file} "
                    f"({said}): it expired on {expired:%Y-%m-%d %H:%M} UTC; renew it")
        return (f"the broker refused the client certificate sslCertFile {cluster.ssl_cert_file} ({said}); "
                "check that it is signed by a CA the broker trusts")
    if reason in ("UNEXPECTED_EOF_WHILE_READING", "WRONG_VERSION_NUMBER", "SSLEOFError"):
        return (f"{server} broke off the TLS handshake ({said}); check that it is a TLS listener "
                f"(securityProtocol is {cluster.security_protocol})")
    return f"the TLS handshake with {server} failed ({said}); check the ssl* settings"


def _expired_on(certificate_file: Path) -> datetime.datetime | None:
    """When the certificate expired, or None if it has not (or cannot be read)."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    except (OSError, ValueError):
        return None
    expiry = certificate.not_valid_after_utc
    return expiry if expiry < datetime.datetime.now(datetime.timezone.utc) else None


@contextmanager
def reaching(side: str, cluster: ClusterConfig) -> Iterator[None]:
    """Turn kafka-python's connection and auth errors into a ClusterError for `side`."""
    try:
        yield
    except _TlsProblem as exc:
        raise _error(side, cluster, str(exc)) from None
    except SaslAuthenticationFailedError:
        raise cluster_refused(side, cluster) from None
    except AuthorizationError as exc:
        raise _error(side, cluster, f"not authorized: {type(exc).__name__}; grant the "
                     "replicator's principal access to its topics and groups") from None
    except NotReady as exc:
        raise _error(side, cluster, str(exc)) from None
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        # kafka-python 3 reports a refused SASL login as a bootstrap timeout.
        credentials = (
            f", and the SASL credentials (user {cluster.sasl_username!r}, {cluster.sasl_mechanism})"
            if cluster.security_protocol.startswith("SASL") else ""
        )
        raise _error(
            side, cluster,
            f"no broker accepted the connection ({type(exc).__name__}); check bootstrapServers, "
            f"the network, securityProtocol ({cluster.security_protocol}){credentials}",
        ) from None


def cluster_refused(side: str, cluster: ClusterConfig) -> ClusterError:
    return _error(
        side, cluster,
        f"authentication failed for user {cluster.sasl_username!r} with {cluster.sasl_mechanism}; "
        "check saslUsername and the password (saslPassword or saslPasswordEnv)",
    )


def _error(side: str, cluster: ClusterConfig, reason: str) -> ClusterError:
    return ClusterError(side, cluster.bootstrap_servers, reason)


def admin_client(side: str, cluster: ClusterConfig) -> KafkaAdminClient:
    """An admin client; it is the first client a flow opens, so it fails fast and clearly."""
    with reaching(side, cluster):
        settings = client_settings(cluster)
        if "ssl_context" in settings:
            _check_tls(cluster, settings["ssl_context"])
        return KafkaAdminClient(**settings, request_timeout_ms=15000,
                                bootstrap_timeout_ms=ADMIN_BOOTSTRAP_TIMEOUT_MS)


def cluster_id(admin: KafkaAdminClient, side: str, cluster: ClusterConfig) -> str:
    """The Kafka cluster id, which provenance headers, the offset map and `check` name."""
    with reaching(side, cluster):
        return admin.describe_cluster()["cluster_id"]


def check_clusters(config: ReplicatorConfig) -> list[str]:
    """Reach both clusters and find every enabled direction's source topics.

    Returns one line per finding; raises ClusterError for an unreachable cluster
    and ProblemFound naming the source topics that do not exist.
    """
    lines = []
    topics_by_side: dict[str, set[str]] = {}
    sides = (("source", config.source_kafka), ("target", config.target_kafka))
    for side, cluster in sides:
        with reaching(side, cluster):
            client_settings(cluster)  # reads the TLS files: a bad one is named before any connection
    for side, cluster in sides:
        admin = admin_client(side, cluster)
        try:
            identity = cluster_id(admin, side, cluster)
            with reaching(side, cluster):
                topics_by_side[side] = set(admin.list_topics())
        finally:
            admin.close()
        lines.append(f"{side} cluster {cluster.bootstrap_servers}: reachable, cluster id {identity}")
    missing = []
    for direction in config.enabled_directions():
        (side, _), _ = config.clusters(direction)
        for route in config.direction(direction).topics:
            if route.source_topic_name not in topics_by_side[side]:
                missing.append(f"{direction}: {route.source_topic_name!r} on the {side} cluster")
    if missing:
        raise ProblemFound("source topics not found: " + "; ".join(missing)
                          + " (create them, or fix sourceTopicName)")
    lines.append("all source topics exist")
    for direction in config.enabled_directions():
        selection = Selection.of(config.direction(direction))
        if selection.by_pattern:
            (side, _), _ = config.clusters(direction)
            chosen = sorted(set(selection.routes(topics_by_side[side])) - set(selection.explicit))
            lines.append(f"{direction}: include/exclude select {len(chosen)} topics on the {side} "
                         f"cluster now: {', '.join(chosen) or '(none yet)'}")
    return lines
