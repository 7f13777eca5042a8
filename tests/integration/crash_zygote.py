"""Starts node processes on demand by forking, for the crash test (not a test itself).

Importing grpc, DuckDB, pandas and the node takes about a second; a forked child skips it, so
the test can SIGKILL and restart a node hundreds of times in well under a minute. This process
stays single-threaded and never touches gRPC itself, so forking it is safe.

Commands on stdin, one per line: ``start`` (fork a node; the child prints ``READY pid port`` or
``FAILED pid reason``), ``reap PID`` (wait for a killed child; prints ``REAPED PID``).
A child stops gracefully on SIGTERM.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading

from veil_server.config import load_config
from veil_server.api.server import run_server


def child(config_path: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        config = load_config(config_path, env={})
        with run_server(config, listen="127.0.0.1:0", grace=0.5) as running:
            os.write(1, f"READY {os.getpid()} {running.port}\n".encode())
            stop.wait()
    except BaseException as e:  # noqa: BLE001 - reported to the test, which fails on it
        os.write(1, f"FAILED {os.getpid()} {type(e).__name__}: {e}\n".encode())
        os._exit(1)
    os._exit(0)


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    config_path = sys.argv[1]
    gc.freeze()  # children's collections skip the imported modules: fewer copy-on-write faults
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "start":
            pid = os.fork()
            if pid == 0:
                child(config_path)
        elif cmd[0] == "reap":
            pid = int(cmd[1])
            _, status = os.waitpid(pid, 0)
            os.write(1, f"REAPED {pid} {status}\n".encode())


if __name__ == "__main__":
    main()
