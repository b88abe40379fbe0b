"""workbench.proxy, the chaos soak's TCP proxy: in front of an echo server (exact timings) and
in front of a real broker, which advertises it (the sandbox's proxied listener)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest
from kafka import KafkaAdminClient

from workbench.proxy import Proxy


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy(echo):
    proxy = Proxy(free_port(), echo)
    proxy.start()
    yield proxy
    proxy.stop()


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def round_trip(sock: socket.socket, data: bytes = b"ping") -> tuple[bytes, float]:
    started = time.monotonic()
    sock.sendall(data)
    return sock.recv(4096), time.monotonic() - started


def test_bytes_pass_through_both_ways(proxy):
    with connect(proxy) as sock:
        assert round_trip(sock, b"hello")[0] == b"hello"
        assert proxy.connections() == 1


def test_a_delay_makes_every_round_trip_slower_and_keeps_the_connection(proxy):
    with connect(proxy) as sock:
        proxy.delay(0.3)
        echoed, took = round_trip(sock)
        proxy.heal()
        _, healed = round_trip(sock)

    assert echoed == b"ping"
    assert took >= 0.6  # held once on the way there and once on the way back
    assert healed < 0.3


def test_a_stall_moves_no_byte_but_keeps_the_connection_open_until_healed(proxy):
    with connect(proxy) as sock:
        proxy.stall()
        sock.sendall(b"ping")
        sock.settimeout(1.0)
        with pytest.raises(socket.timeout):
            sock.recv(4096)
        assert proxy.connections() == 1
        proxy.heal()
        sock.settimeout(5)
        assert sock.recv(4096) == b"ping"


def test_a_cut_closes_every_connection_and_refuses_new_ones_until_healed(proxy):
    with connect(proxy) as sock:
        round_trip(sock)
        proxy.cut()
        try:
            assert sock.recv(4096) == b""
        except ConnectionResetError:  # the proxy resets connections, as a vanished host does
            pass
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.heal()
    with connect(proxy) as sock:
        assert round_trip(sock)[0] == b"ping"


@pytest.mark.kafka
def test_a_broker_behind_the_proxy_advertises_it_so_clients_stay_on_it(sandbox):
    proxied = sandbox.info.target.proxied
    proxy = Proxy(proxied.proxy_port, proxied.broker_port)
    proxy.start()
    admin = KafkaAdminClient(bootstrap_servers=proxied.bootstrap_servers)
    try:
        brokers = admin.describe_cluster()["brokers"]
        assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.1", proxied.proxy_port)]
        assert proxy.connections() >= 1
    finally:
        admin.close()
        proxy.stop()
