"""The witness's HTTP endpoint: C2SP tlog-witness ``POST /add-checkpoint``.

Request body: ``old <size>\\n``, the consistency proof from that size to the checkpoint's, one
base64 hash a line, a blank line, then the checkpoint as a signed note (signed by the log's key).
Answers, as the spec has them:

* 200 with the witness's cosignature line(s): the checkpoint is consistent with the one it
  cosigned last (or the first it sees), and it is now the latest;
* 409 Conflict, ``Content-Type: text/x.tlog.size``, body = the size it holds: ``old`` is not
  the size it last cosigned (the client retries with that size and a proof from it);
* 422 Unprocessable: the proof does not show the old tree is a prefix of the new one (a fork,
  a rollback to a different history), or the checkpoint is smaller than the old size;
* 403: the note is not signed by the log's key; 404: a log it does not follow; 400: malformed.

Every refusal of a known log is recorded (``refusals``) so an auditor sees when a node tried
to roll back or fork. What the witness learns: origins, sizes, root hashes and proof hashes.

Departures: no TLS on the endpoint itself (everything on it is signed and public; put it behind
a TLS proxy if the transport must be private); the request size is capped at 64 KiB.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from veil.audit.merkle import ProofError, verify_consistency
from veil.audit.witness import VerifierKey, WitnessError, cosign, parse_body, parse_note

from ..access.node_key import NodeKey
from .state import WitnessState, Witnessed

log = logging.getLogger("veil.witness")

MAX_BODY = 64 * 1024
MAX_PROOF = 64  # hashes: a proof between trees of up to 2**63 entries


class Refusal(Exception):
    def __init__(self, status: int, reason: str, body: bytes = b"", content_type: str = "text/plain") -> None:
        super().__init__(reason)
        self.status, self.reason, self.body, self.content_type = status, reason, body, content_type


class Witness:
    """The decision, apart from HTTP: ``add_checkpoint(request bytes) -> cosignature lines``."""

    def __init__(self, name: str, key: NodeKey, state: WitnessState, logs: tuple[VerifierKey, ...],
                 clock: Callable[[], float] = time.time) -> None:
        self.name, self.key, self.state, self.clock = name, key, state, clock
        self.logs = {vk.name: vk for vk in logs}
        self._lock = threading.Lock()  # one decision at a time: check and advance together

    def verifier(self) -> VerifierKey:
        from veil.audit.witness import witness_verifier

        return witness_verifier(self.name, self.key.public_key_bytes)

    def add_checkpoint(self, request: bytes) -> bytes:
        old, proof, note = _parse_request(request)
        try:
            body, sigs = parse_note(note)
            cp = parse_body(body)
        except WitnessError as e:
            raise Refusal(HTTPStatus.BAD_REQUEST, f"malformed checkpoint: {e}") from None
        vk = self.logs.get(cp.origin)
        if vk is None:
            raise Refusal(HTTPStatus.NOT_FOUND, f"unknown log {cp.origin}")
        try:
            signed = any(vk.verify(body, s) is not None for s in sigs)
        except WitnessError:
            signed = False
        if not signed:
            self.state.refused(cp.origin, HTTPStatus.FORBIDDEN, "BAD_LOG_SIGNATURE", cp.size)
            raise Refusal(HTTPStatus.FORBIDDEN, "the checkpoint is not signed by the log's key")
        with self._lock:
            held = self.state.latest(cp.origin)
            if cp.size < old and old == held.size:
                self.state.refused(cp.origin, HTTPStatus.UNPROCESSABLE_ENTITY, "SMALLER_THAN_WITNESSED", cp.size)
                raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, f"checkpoint size {cp.size} is below the witnessed "
                              f"{old}: the log was rolled back")
            if old != held.size:
                raise Refusal(HTTPStatus.CONFLICT, f"old size {old}, witnessed {held.size}",
                              f"{held.size}\n".encode(), "text/x.tlog.size")
            try:
                verify_consistency(old, cp.size, held.root, cp.root, proof)
            except ProofError as e:
                self.state.refused(cp.origin, HTTPStatus.UNPROCESSABLE_ENTITY, "INCONSISTENT", cp.size)
                raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, f"not consistent with the witnessed checkpoint of "
                              f"size {old}: {e}") from None
            if not self.state.advance(cp.origin, old, Witnessed(cp.size, cp.root)):
                raise Refusal(HTTPStatus.CONFLICT, "raced", f"{self.state.latest(cp.origin).size}\n".encode(),
                              "text/x.tlog.size")
        line = cosign(body, self.name, int(self.clock()), sign=self.key.sign, public_key=self.key.public_key_bytes)
        return line.line().encode()


def _parse_request(request: bytes) -> tuple[int, list[bytes], bytes]:
    try:
        text = request.decode()
        first, rest = text.split("\n", 1)
        if not first.startswith("old "):
            raise ValueError
        old = int(first[4:])
        if str(old) != first[4:] or old < 0:
            raise ValueError
        proof_text, note = rest.split("\n\n", 1) if not rest.startswith("\n") else ("", rest[1:])
        proof = [base64.b64decode(p, validate=True) for p in proof_text.split("\n") if p]
    except ValueError:
        raise Refusal(HTTPStatus.BAD_REQUEST, "expected 'old N', proof lines, a blank line, a signed note") from None
    if len(proof) > MAX_PROOF or any(len(p) != 32 for p in proof):
        raise Refusal(HTTPStatus.BAD_REQUEST, "a proof is at most 64 hashes of 32 bytes")
    return old, proof, note.encode()


class _Handler(BaseHTTPRequestHandler):
    witness: Witness
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/add-checkpoint":
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._send(HTTPStatus.LENGTH_REQUIRED, b"Content-Length required\n")
        if not 0 < length <= MAX_BODY:
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"at most 64 KiB\n")
        request = self.rfile.read(length)
        try:
            body = self.witness.add_checkpoint(request)
        except Refusal as r:
            return self._send(r.status, r.body or (r.reason + "\n").encode(), r.content_type)
        except Exception:
            log.exception("add-checkpoint failed")
            return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"witness error\n")
        self._send(HTTPStatus.OK, body)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)


class WitnessServer:
    """``with WitnessServer(witness, "127.0.0.1:0") as s: s.url`` serves until closed."""

    def __init__(self, witness: Witness, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        handler = type("Handler", (_Handler,), {"witness": witness})
        self.witness = witness
        self.httpd = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="veil-witness", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.witness.state.close()

    def __enter__(self) -> WitnessServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_witness(name: str, state_dir, listen: str, logs: tuple[VerifierKey, ...]) -> WitnessServer:
    """Open (or create) the witness's key and state in ``state_dir`` and serve on ``listen``."""
    from pathlib import Path

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = NodeKey.load_or_create(state_dir)
    return WitnessServer(Witness(name, key, WitnessState(state_dir / "witnessed.db"), logs), listen)


def node_witness(config, key: NodeKey, node_id: str) -> WitnessServer | None:
    """The witness a node runs for its federation peers' logs (``[witness] serve``), under its
    own node key with the key name ``<node id>/witness`` (cosignature/v1 messages are domain
    separated from everything else that key signs), keeping its state in ``witnessed.db``."""
    from .settings import log_key, peer_logs

    settings = getattr(config, "witness", None)
    if settings is None or not settings.serve:
        return None
    logs = peer_logs(getattr(config, "federation", None)) + tuple(log_key(k) for k in settings.follow)
    witness = Witness(f"{node_id}/witness", key, WitnessState(config.state_dir / "witnessed.db"), logs)
    return WitnessServer(witness, settings.serve)
