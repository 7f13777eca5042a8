"""One federation member as a process of its own, for ``bench/perf_bench.py`` (issue 22).

``python bench/federation_node.py CONFIG`` serves the node of ``CONFIG`` exactly as
``veil node serve`` does (TLS and the mutual-TLS port from the config), and prints one line per
peer answer this node receives as a coordinator: ``answer <step> <member> <bytes>`` -- the
serialised envelope each member sent back, which is what that member sends over the wire for the
step (gRPC framing aside). Stops on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path


def main() -> None:
    from veil_server.api.server import run_server
    from veil_server.config import load_config

    config = load_config(Path(sys.argv[1]), env={})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    lock = threading.Lock()

    def observe(node: str, what: str, sender: str, data: bytes) -> None:
        if what.startswith("response:"):
            with lock:
                print(f"answer {what.removeprefix('response:')} {sender} {len(data)}", flush=True)

    with run_server(config, grace=0.5) as running:
        if running.federation is not None:
            running.federation.observe(observe)
        print(f"member '{config.name}' serving (port {running.port})", flush=True)
        stop.wait()
    sys.stdout.flush()
    os._exit(0)  # as `veil node serve`: skip finalisation, which can kill library threads mid-call


if __name__ == "__main__":
    main()
