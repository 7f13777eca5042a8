"""The node's side of witnessing: each new checkpoint goes to the node's witnesses, and their
cosignatures come back into the log's store and into receipts.

```toml
[witness]
quorum = 2                          # cosignatures a checkpoint needs before a receipt names it
serve = "127.0.0.1:50060"           # optional: witness the [federation] peers' logs (C2SP add-checkpoint)
follow = ["peers/south.pub"]        # ... and these logs too (node keys, PEM files or 64 hex digits)
[[witness.witnesses]]
url = "http://127.0.0.1:50070"      # a `veil witness serve`, or a peer node's [witness] serve
key = "audit.example/witness-1+1a2b3c4d+BA..."   # its verifier key (`veil witness key`)
```

Protocol (C2SP tlog-witness, :mod:`veil_server.witness.service`): ``old`` is the size the witness
last cosigned for this log, as the node remembers it (the largest it stored a cosignature for);
on 409 the node retries once with the size the witness holds. A witness that holds a *larger*
size than the log, or answers 422, has caught a rolled-back or forked log: at start the node
refuses to serve (:class:`StartRefused` ``LOG_ROLLED_BACK_WITNESSED``); later it logs the
refusal and receipts go without that witness's cosignature (the SDK, holding pinned witness keys
and a quorum, then refuses them). An unreachable witness delays cosignatures, nothing else.

Checkpoints are sent from a background thread (never inside a state transaction); a receipt
asks for the cosignatures of its checkpoint synchronously if they are not there yet.
"""

from __future__ import annotations

import base64
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

from veil.audit.records import Checkpoint
from veil.audit.witness import VerifierKey, WitnessError, body_of, format_note, parse_note, sign_note

from .anchoring import StartRefused
from .log import AuditLog

log = logging.getLogger("veil.witnessing")
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WitnessEndpoint:
    url: str
    key: VerifierKey


@dataclass(frozen=True)
class WitnessSettings:
    witnesses: tuple[WitnessEndpoint, ...] = ()
    quorum: int = 0
    serve: str = ""
    follow: tuple[bytes, ...] = ()  # raw Ed25519 node keys of logs this node witnesses


def parse_witness(raw: Any, *, error: type[Exception], base_dir: Any = None) -> WitnessSettings:
    from pathlib import Path

    from ..witness.settings import WitnessConfigError, _raw_key

    section = dict(raw or {})
    unknown = set(section) - {"witnesses", "quorum", "serve", "follow"}
    if unknown:
        raise error(f"[witness]: unknown key(s) {', '.join(sorted(unknown))}")
    endpoints = []
    for i, w in enumerate(section.get("witnesses", [])):
        url = str(w.get("url", ""))
        if not url.startswith(("http://", "https://")):
            raise error(f"witness.witnesses[{i}].url must be an http(s) URL")
        try:
            key = VerifierKey.parse(str(w.get("key", "")))
        except WitnessError as e:
            raise error(f"witness.witnesses[{i}].key: {e} (print it with `veil witness key`)") from None
        endpoints.append(WitnessEndpoint(url.rstrip("/"), key))
    quorum = section.get("quorum", len(endpoints))
    if not isinstance(quorum, int) or not 0 <= quorum <= len(endpoints):
        raise error(f"witness.quorum must be an integer between 0 and the {len(endpoints)} witnesses listed")
    follow = []
    for i, k in enumerate(section.get("follow", [])):
        text = str(k)
        entry = {"public_key": text} if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text) \
            else {"public_key_file": text}
        try:
            follow.append(_raw_key(entry, f"witness.follow[{i}]", Path(base_dir or ".")))
        except WitnessConfigError as e:
            raise error(str(e)) from None
    return WitnessSettings(tuple(endpoints), quorum, str(section.get("serve", "")), tuple(follow))


class WitnessConflict(Exception):
    """A witness holds a checkpoint this log is not consistent with."""


class Witnesses:
    def __init__(self, audit_log: AuditLog, settings: WitnessSettings) -> None:
        self.log = audit_log
        self.settings = settings
        self.conflicts: list[str] = []
        self._wake = threading.Condition()
        self._pending: Checkpoint | None = None
        self._closed = False
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="veil-witnessing", daemon=True)
        if settings.witnesses:
            self._thread.start()
            audit_log.on_checkpoint = self.enqueue

    # -- the note ------------------------------------------------------------------------

    def note(self, cp: Checkpoint) -> bytes:
        """The C2SP signed note of ``cp``: the node's signature and every stored cosignature."""
        body = body_of(cp)
        sig = sign_note(body, cp.origin, sign=self.log.key.sign, public_key=self.log.key.public_key_bytes)
        lines = []
        for line in self.log.cosignatures(cp.tree_size):
            lines.extend(parse_note(body + b"\n" + line)[1])
        return format_note(body, [sig, *lines])

    # -- sending -------------------------------------------------------------------------

    def enqueue(self, cp: Checkpoint) -> None:
        with self._wake:
            if self._pending is None or cp.tree_size > self._pending.tree_size:
                self._pending = cp
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                cp, self._pending = self._pending, None
            try:
                self.submit(cp)
            except Exception:  # a witness being down must not stop the node
                if not self._closed:
                    log.exception("witnessing checkpoint %d failed", cp.tree_size)

    def submit(self, cp: Checkpoint) -> dict[str, str]:
        """Send ``cp`` to every witness that has not cosigned it; store what comes back.
        Returns ``{witness name: "ok" | "conflict: ..." | "unreachable: ..."}``."""
        with self._send_lock:
            have = set(self.log.cosigners(cp.tree_size))
            out = {}
            for w in self.settings.witnesses:
                if w.key.name in have:
                    out[w.key.name] = "ok"
                    continue
                try:
                    self._send(w, cp)
                    out[w.key.name] = "ok"
                except WitnessConflict as e:
                    out[w.key.name] = f"conflict: {e}"
                    self.conflicts.append(f"{w.key.name}: {e}")
                    log.error("witness %s refused checkpoint %d: %s", w.key.name, cp.tree_size, e)
                except (OSError, WitnessError) as e:
                    out[w.key.name] = f"unreachable: {e}"
                    log.warning("witness %s: %s", w.key.name, e)
            return out

    def _send(self, w: WitnessEndpoint, cp: Checkpoint) -> None:
        old = min(self.log.witnessed_size(w.key.name), cp.tree_size)
        for _attempt in range(2):
            status, text = self._post(w, old, cp)
            if status == 200:
                body = body_of(cp)
                _, sigs = parse_note(body + b"\n" + text)
                mine = [s for s in sigs if w.key.verify(body, s) is not None]
                if not mine:
                    raise WitnessError(f"witness {w.key.name} answered without its cosignature")
                self.log.add_cosignature(cp.tree_size, w.key.name, mine[0].line().encode())
                return
            if status == 409:
                try:
                    held = int(text.decode().strip())
                except ValueError:
                    raise WitnessError(f"witness {w.key.name}: unreadable 409") from None
                old = held  # larger than this log: the witness refuses (and records) a rollback
                continue
            if status == 422 or (status == 400 and old > cp.tree_size):
                raise WitnessConflict(text.decode(errors="replace").strip()[:300])
            raise WitnessError(f"witness {w.key.name} answered HTTP {status}")
        raise WitnessError(f"witness {w.key.name} keeps changing its size")

    def _post(self, w: WitnessEndpoint, old: int, cp: Checkpoint) -> tuple[int, bytes]:
        proof = self.log.consistency_proof(old, cp.tree_size) if 0 < old < cp.tree_size else []
        if old > cp.tree_size:
            proof = []  # no proof can exist; the witness refuses and records the rollback
        payload = (f"old {old}\n" + "".join(base64.b64encode(p).decode() + "\n" for p in proof) + "\n").encode()
        payload += self.note(cp)
        req = urllib.request.Request(w.url + "/add-checkpoint", data=payload, method="POST",
                                     headers={"Content-Type": "text/plain"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                return resp.status, resp.read(64 * 1024)
        except urllib.error.HTTPError as e:
            return e.code, e.read(64 * 1024)

    # -- start and receipts ----------------------------------------------------------------

    def check_at_start(self, cp: Checkpoint) -> None:
        """Refuse to start if any witness holds a checkpoint this log contradicts."""
        if not self.settings.witnesses:
            return
        results = self.submit(cp)
        bad = {n: r for n, r in results.items() if r.startswith("conflict")}
        if bad:
            name, why = next(iter(bad.items()))
            raise StartRefused(
                "LOG_ROLLED_BACK_WITNESSED", str(self.log.path), f"entry {cp.tree_size}",
                f"witness {name} refused this log's checkpoint ({why.removeprefix('conflict: ')})",
                f"restore the newest {self.log.path.name} (the witnesses hold its later checkpoints); "
                "a log cannot be rewound once witnessed")

    def ensure(self, cp: Checkpoint) -> None:
        """Before a receipt names ``cp``: ask for the cosignatures it lacks (bounded wait)."""
        if self.settings.witnesses and len(self.log.cosigners(cp.tree_size)) < len(self.settings.witnesses):
            self.submit(cp)

    def close(self) -> None:
        """Stop sending; the checkpoint being sent (if any) gets the witnesses' timeout."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * TIMEOUT_S)
        if self.log.on_checkpoint == self.enqueue:
            self.log.on_checkpoint = None


def settings_of(config: Any) -> WitnessSettings:
    return getattr(config, "witness", None) or WitnessSettings()


def describe(settings: WitnessSettings) -> Mapping[str, Any]:
    return {"witnesses": [w.key.name for w in settings.witnesses], "quorum": settings.quorum}
