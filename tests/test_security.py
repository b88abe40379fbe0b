"""SASL and TLS clusters: replication through each secure combination, and failures that
name the cluster and what to check, quickly and without a secret or a stack trace."""

from __future__ import annotations

import datetime
import logging
import socket
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from kafka_support import count, create_topic, produce, running, wait_until
from workbench import certificates
from cluster.cli import main
from replicator.config import parse_config
from replicator.errors import ClusterError
from replicator.flow import Flow
from replicator.link import ADMIN_BOOTSTRAP_TIMEOUT_MS

pytestmark = pytest.mark.kafka


def sasl_cluster(endpoint, mechanism: str) -> dict:
    return {
        "bootstrapServers": endpoint.sasl.bootstrap_servers,
        "securityProtocol": "SASL_PLAINTEXT",
        "saslMechanism": mechanism,
        "saslUsername": endpoint.sasl.username,
        "saslPasswordEnv": "TEST_SASL_PASSWORD",
    }


def sasl_flow(sandbox, name, source_mechanism, target_mechanism) -> Flow:
    return Flow(parse_config({
        "sourceKafka": sasl_cluster(sandbox.info.source, source_mechanism),
        "targetKafka": sasl_cluster(sandbox.info.target, target_mechanism),
        "consumerGroup": {"sourceToTarget": name},
        "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": name}]}},
    }), "sourceToTarget", None)


def test_replicates_between_sasl_clusters(sandbox, name, monkeypatch):
    monkeypatch.setenv("TEST_SASL_PASSWORD", sandbox.info.source.sasl.password())
    assert sandbox.info.source.sasl.password() == sandbox.info.target.sasl.password()
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, f"k{i}".encode(), b"v", [], None) for i in range(50)])

    with running(sasl_flow(sandbox, name, "SCRAM-SHA-512", "PLAIN")):
        wait_until(lambda: count(sandbox.target, name) >= 50, what="50 records on the target")


def test_a_wrong_password_names_the_cluster_and_never_shows_the_password(sandbox, name, monkeypatch,
                                                                         caplog):
    wrong = "not-the-password-4711"
    monkeypatch.setenv("TEST_SASL_PASSWORD", wrong)
    create_topic(sandbox.source, name, partitions=1)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ClusterError) as caught:
        with running(sasl_flow(sandbox, name, "SCRAM-SHA-256", "SCRAM-SHA-256")):
            pass

    message = str(caught.value)
    assert message.startswith(f"source cluster ({sandbox.info.source.sasl.bootstrap_servers})")
    assert "SASL credentials (user 'replicator', SCRAM-SHA-256)" in message
    assert wrong not in message
    assert wrong not in caplog.text


# -- TLS ----------------------------------------------------------------------------------


def ssl_cluster(endpoint, **settings) -> dict:
    return {
        "bootstrapServers": endpoint.tls.ssl_bootstrap_servers,
        "securityProtocol": "SSL",
        "sslCaFile": str(endpoint.tls.ca_file),
        **settings,
    }


def mtls_cluster(endpoint, **settings) -> dict:
    """The listener that requires a client certificate, with the sandbox's."""
    return ssl_cluster(endpoint, **{"bootstrapServers": endpoint.tls.mtls_bootstrap_servers,
                                    "sslCertFile": str(endpoint.tls.cert_file),
                                    "sslKeyFile": str(endpoint.tls.key_file), **settings})


def sasl_ssl_cluster(endpoint, mechanism: str) -> dict:
    return {
        **sasl_cluster(endpoint, mechanism),
        "bootstrapServers": endpoint.tls.sasl_ssl_bootstrap_servers,
        "securityProtocol": "SASL_SSL",
        "sslCaFile": str(endpoint.tls.ca_file),
    }


def one_way(name: str, source: dict, target: dict) -> dict:
    return {
        "sourceKafka": source,
        "targetKafka": target,
        "consumerGroup": {"sourceToTarget": name},
        "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": name}]}},
    }


def replicate_50_records(sandbox, name, source: dict, target: dict) -> None:
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, f"k{i}".encode(), b"v", [], None) for i in range(50)])
    with running(Flow(parse_config(one_way(name, source, target)), "sourceToTarget", None)):
        wait_until(lambda: count(sandbox.target, name) >= 50, what="50 records on the target")


def test_replicates_between_ssl_clusters(sandbox, name):
    replicate_50_records(sandbox, name, ssl_cluster(sandbox.info.source), ssl_cluster(sandbox.info.target))


def test_replicates_from_sasl_ssl_to_a_cluster_that_requires_a_client_certificate(sandbox, name, monkeypatch):
    monkeypatch.setenv("TEST_SASL_PASSWORD", sandbox.info.source.sasl.password())
    replicate_50_records(sandbox, name, sasl_ssl_cluster(sandbox.info.source, "SCRAM-SHA-512"),
                         mtls_cluster(sandbox.info.target))


def test_replicates_from_plaintext_to_sasl_ssl(sandbox, name, monkeypatch):
    monkeypatch.setenv("TEST_SASL_PASSWORD", sandbox.info.target.sasl.password())
    replicate_50_records(sandbox, name, {"bootstrapServers": sandbox.source},
                         sasl_ssl_cluster(sandbox.info.target, "SCRAM-SHA-256"))


def encrypted_client_key(sandbox, tmp_path, password: str) -> str:
    tls = sandbox.info.target.tls
    key = certificates.load(tls.cert_file, tls.key_file).key_pem(password)
    return str(certificates.write(tmp_path / "client-encrypted.key", key, private=True))


def test_replicates_with_an_encrypted_client_key_whose_password_is_in_the_environment(
        sandbox, name, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY_PASSWORD", "key-password-0815")
    key_file = encrypted_client_key(sandbox, tmp_path, "key-password-0815")
    replicate_50_records(sandbox, name, {"bootstrapServers": sandbox.source},
                         mtls_cluster(sandbox.info.target, sslKeyFile=key_file,
                                      sslKeyPasswordEnv="TEST_KEY_PASSWORD"))


def test_the_readmes_tls_example_replicates_from_sasl_ssl_to_mtls(sandbox, name, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Connecting with TLS"):]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    source, target = example["sourceKafka"], example["targetKafka"]
    # Its servers and files become the sandbox's; everything else is as the README says.
    source.update(bootstrapServers=sandbox.info.source.tls.sasl_ssl_bootstrap_servers,
                  sslCaFile=str(sandbox.info.source.tls.ca_file))
    target.update(bootstrapServers=sandbox.info.target.tls.mtls_bootstrap_servers,
                  sslCaFile=str(sandbox.info.target.tls.ca_file),
                  sslCertFile=str(sandbox.info.target.tls.cert_file),
                  sslKeyFile=encrypted_client_key(sandbox, tmp_path, "key-password-0815"))
    monkeypatch.setenv("SOURCE_KAFKA_SASL_PASSWORD", sandbox.info.source.sasl.password())
    monkeypatch.setenv("TARGET_KAFKA_SSL_KEY_PASSWORD", "key-password-0815")

    replicate_50_records(sandbox, name, source, target)


def check_fails(tmp_path, capsys, config: dict) -> str:
    """`check --connect` on the config: exit 4 (a cluster cannot be used), quickly, with one
    error line and no stack trace."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    assert main(["check", "--connect", "--config", str(path)]) == 4
    # Sooner than kafka-python's bootstrap gives up: the handshake itself said what is wrong.
    assert time.monotonic() - started < ADMIN_BOOTSTRAP_TIMEOUT_MS / 1000
    output = capsys.readouterr()
    assert "Traceback" not in output.out + output.err
    [error] = [line for line in output.err.splitlines() if line.startswith("error: ")]
    return error


def test_an_unknown_ca_is_named_with_the_ca_file_to_check(sandbox, name, tmp_path, capsys):
    other_ca = certificates.write(tmp_path / "other-ca.crt",
                                  certificates.new_authority("another CA").certificate_pem())
    source = ssl_cluster(sandbox.info.source, sslCaFile=str(other_ca))

    error = check_fails(tmp_path, capsys, one_way(name, source, ssl_cluster(sandbox.info.target)))

    assert error.startswith(f"error: source cluster ({source['bootstrapServers']}): the broker's "
                            f"certificate is not signed by a CA in sslCaFile {other_ca}")
    assert "check that sslCaFile holds the certificate of the CA that signed" in error


def by_a_name_the_certificate_does_not_list(bootstrap: str) -> str:
    """127.1 is 127.0.0.1 written short: the same broker, under a name that is not among
    its certificate's names (localhost and 127.0.0.1)."""
    host, port = bootstrap.rsplit(":", 1)
    assert socket.gethostbyname("127.1") == host
    return f"127.1:{port}"


def test_a_host_name_missing_from_the_certificate_is_refused_when_checked(sandbox, name, tmp_path, capsys):
    bootstrap = by_a_name_the_certificate_does_not_list(sandbox.info.target.tls.ssl_bootstrap_servers)
    target = ssl_cluster(sandbox.info.target, bootstrapServers=bootstrap, sslCheckHostname=True)

    error = check_fails(tmp_path, capsys, one_way(name, ssl_cluster(sandbox.info.source), target))

    assert error.startswith(f"error: target cluster ({bootstrap}): the broker's certificate is not "
                            "valid for the host name 127.1")
    assert "check that bootstrapServers uses a name or address the certificate lists" in error


def test_a_host_name_missing_from_the_certificate_connects_when_not_checked(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    bootstrap = by_a_name_the_certificate_does_not_list(sandbox.info.target.tls.ssl_bootstrap_servers)
    target = ssl_cluster(sandbox.info.target, bootstrapServers=bootstrap, sslCheckHostname=False)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(one_way(name, ssl_cluster(sandbox.info.source), target)))

    assert main(["check", "--connect", "--config", str(path)]) == 0
    assert f"target cluster {bootstrap}: reachable" in capsys.readouterr().out


def test_a_missing_certificate_file_is_named_before_connecting(sandbox, name, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    missing = tmp_path / "no-such-client.crt"
    # Were the source (first in line) tried first, its closed port would be the error.
    source = ssl_cluster(sandbox.info.source, bootstrapServers=closed)
    target = mtls_cluster(sandbox.info.target, sslCertFile=str(missing))

    error = check_fails(tmp_path, capsys, one_way(name, source, target))

    assert error == (f"error: target cluster ({target['bootstrapServers']}): sslCertFile {missing} cannot "
                     "be read (No such file or directory); check the path and that the replicator may read it")


def test_a_ca_file_without_a_certificate_is_named(sandbox, name, tmp_path, capsys):
    source = ssl_cluster(sandbox.info.source, sslCaFile=str(sandbox.info.source.tls.key_file))

    error = check_fails(tmp_path, capsys, one_way(name, source, ssl_cluster(sandbox.info.target)))

    assert error.startswith(f"error: source cluster ({source['bootstrapServers']}): sslCaFile "
                            f"{sandbox.info.source.tls.key_file} holds no PEM certificate")


def test_a_wrong_key_password_is_named_and_never_shown(sandbox, name, tmp_path, capsys, monkeypatch, caplog):
    right, wrong = "key-password-0815", "not-the-key-password-4711"
    monkeypatch.setenv("TEST_KEY_PASSWORD", wrong)
    key_file = encrypted_client_key(sandbox, tmp_path, right)
    target = mtls_cluster(sandbox.info.target, sslKeyFile=key_file, sslKeyPasswordEnv="TEST_KEY_PASSWORD")
    caplog.set_level(logging.DEBUG)

    error = check_fails(tmp_path, capsys, one_way(name, ssl_cluster(sandbox.info.source), target))

    assert error == (f"error: target cluster ({target['bootstrapServers']}): sslKeyFile {key_file} cannot "
                     "be decrypted with the key password (sslKeyPasswordEnv TEST_KEY_PASSWORD); "
                     "check the key password")
    assert wrong not in caplog.text and right not in caplog.text


def test_an_encrypted_key_without_a_password_is_named(sandbox, name, tmp_path, capsys):
    key_file = encrypted_client_key(sandbox, tmp_path, "key-password-0815")
    target = mtls_cluster(sandbox.info.target, sslKeyFile=key_file)

    error = check_fails(tmp_path, capsys, one_way(name, ssl_cluster(sandbox.info.source), target))

    assert error == (f"error: target cluster ({target['bootstrapServers']}): sslKeyFile {key_file} is "
                     "encrypted; set sslKeyPasswordEnv (or sslKeyPassword) to its password")


NEW_YEAR_2024 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def test_an_expired_client_certificate_is_named_with_its_expiry(sandbox, name, tmp_path, capsys):
    expired = certificates.issue(sandbox.sandbox.authority(), "expired client", server=False,
                                 not_after=NEW_YEAR_2024)
    cert_file = certificates.write(tmp_path / "expired.crt", expired.certificate_pem())
    key_file = certificates.write(tmp_path / "expired.key", expired.key_pem(), private=True)
    target = mtls_cluster(sandbox.info.target, sslCertFile=str(cert_file), sslKeyFile=str(key_file))

    error = check_fails(tmp_path, capsys, one_way(name, ssl_cluster(sandbox.info.source), target))

    assert error.startswith(f"error: target cluster ({target['bootstrapServers']}): the broker refused "
                            f"the client certificate sslCertFile {cert_file}")
    assert error.endswith("it expired on 2024-01-01 00:00 UTC; renew it")


def test_a_client_without_a_certificate_is_told_the_listener_requires_one(sandbox, name, tmp_path, capsys):
    target = mtls_cluster(sandbox.info.target, sslCertFile=None, sslKeyFile=None)

    error = check_fails(tmp_path, capsys, one_way(name, ssl_cluster(sandbox.info.source), target))

    assert error.startswith(f"error: target cluster ({target['bootstrapServers']}): the broker refused "
                            "the connection")
    assert error.endswith("it requires a client certificate (mutual TLS); set sslCertFile and sslKeyFile")


def test_an_expired_ca_certificate_is_named_with_the_ca_file(sandbox, name, tmp_path, capsys):
    ca = sandbox.sandbox.authority()
    # The sandbox's CA as it was once issued: same name and key, valid until 2024.
    expired = (x509.CertificateBuilder().subject_name(ca.certificate.subject)
               .issuer_name(ca.certificate.subject).public_key(ca.key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NEW_YEAR_2024 - datetime.timedelta(days=30)).not_valid_after(NEW_YEAR_2024))
    for extension in ca.certificate.extensions:
        expired = expired.add_extension(extension.value, extension.critical)
    ca_file = certificates.write(tmp_path / "expired-ca.crt",
                                 certificates.Issued(ca.key, expired.sign(ca.key, hashes.SHA256())).certificate_pem())
    source = ssl_cluster(sandbox.info.source, sslCaFile=str(ca_file))

    error = check_fails(tmp_path, capsys, one_way(name, source, ssl_cluster(sandbox.info.target)))

    assert error == (f"error: source cluster ({source['bootstrapServers']}): the broker's certificate chain "
                     "is not valid now (certificate has expired); check the dates of the broker's "
                     f"certificate and of the CA in sslCaFile {ca_file}, and the clocks")
