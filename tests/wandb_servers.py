"""Servers for W&B to talk to that fail in the ways a cluster node meets: a closed port, a listener that never
replies, and a stand-in W&B server that rejects the key or stops answering mid-run. All on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: a connection is refused at once
    yield f"http://127.0.0.1:{port}"


@contextmanager
def silent_listener(held: list | None = None):
    """Accepts every connection (into ``held``) and holds it open without a byte of reply, as a firewall that
    drops packets would make a client wait."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.2)
    held, stop = [] if held is None else held, threading.Event()

    def hold():
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


DEAD_SERVERS = {"closed_port": closed_port, "silent_listener": silent_listener}


class StandInWandb(BaseHTTPRequestHandler):
    """Just enough of a W&B server for wandb-core 0.31 to start a run and stream to it (the queries it sends at
    start), answering ``status`` to everything when that is set, and never answering once ``stall`` is set."""

    protocol_version = "HTTP/1.1"
    status: int | None = None
    stall = threading.Event()

    def reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/sdk/otel"):  # wandb's own telemetry: answered, so the process exits promptly
            return self.reply({})
        if self.stall.is_set():
            return self.stall_forever()
        if self.status is not None:
            return self.reply({"errors": [{"message": "permission denied"}]}, self.status)
        try:
            query = json.loads(body)
        except ValueError:
            query = {}
        match = re.search(r"(?:query|mutation)\s+(\w+)", query.get("query") or "")
        variables = query.get("variables") or {}
        operation = match.group(1) if match else None
        if operation == "Viewer":
            return self.reply({"data": {"viewer": {"id": "u", "entity": "e", "username": "u", "email": "",
                                                   "flags": "{}", "teams": {"edges": []}}}})
        if operation == "UpsertBucket":
            project = {"id": "p", "name": variables.get("project") or "genzoo", "entity": {"id": "e", "name": "e"}}
            return self.reply({"data": {"upsertBucket": {"inserted": True, "bucket": {
                "id": "b", "name": variables.get("name") or "run", "displayName": "run", "historyLineCount": 0,
                "eventsLineCount": 0, "project": project}}}})
        if operation == "CreateRunFiles":
            port = self.server.server_address[1]
            files = [{"name": f, "uploadUrl": f"http://127.0.0.1:{port}/upload/{f}"} for f in variables["files"]]
            return self.reply({"data": {"createRunFiles": {"runID": "r", "uploadHeaders": [], "files": files}}})
        if "file_stream" in self.path:
            return self.reply({"exitcode": None, "limits": {}})
        return self.reply({"data": {}})

    do_GET = do_PUT = do_POST

    def stall_forever(self) -> None:
        while not self.server.closing.is_set():
            time.sleep(0.1)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def stand_in_wandb(status: int | None = None):
    handler = type("Handler", (StandInWandb,), {"status": status, "stall": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.closing = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.stall
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
