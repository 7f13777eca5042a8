"""A node replica as a real `veil node serve` process on a loopback port of its own (issue 9):
shared by the replica tests and the state benchmark."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

VEIL = str(Path(sys.executable).parent / "veil")


class Replica:
    """One `veil node serve` process of the node in ``folder``."""

    def __init__(self, folder: Path, name: str) -> None:
        env = {**os.environ, "VEIL_LISTEN": "127.0.0.1:0", "VEIL_REPLICA": name}
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen([VEIL, "node", "serve", "--config", str(folder / "veil.toml")], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.port = 0
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"\(port (\d+)\)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60) or not self.port:
            self.stop()
            raise AssertionError(f"replica {name} did not start:\n{''.join(self.lines)}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(folder: Path, *names: str) -> list[Replica]:
    """Replicas of the node in ``folder``, one per name (stopped again if one fails to start)."""
    replicas: list[Replica] = []
    try:
        for n in names:
            replicas.append(Replica(folder, n))
    except BaseException:
        for r in replicas:
            r.stop()
        raise
    return replicas
