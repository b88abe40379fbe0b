"""Wait until the Ray head accepts connections on host:port (the driver's init container)."""

import socket
import sys
import time

host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    try:
        with socket.create_connection((host, port), timeout=5):
            print(f"Ray head {host}:{port} is up")
            break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"Ray head {host}:{port} did not answer within {timeout:.0f}s: {exc}")
        print(f"waiting for the Ray head {host}:{port}: {exc}", flush=True)
        time.sleep(3)
