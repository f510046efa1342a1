#!/usr/bin/env python3
"""The HTTP API of cairn-server (docs/backend.md) through a real HTTP client (Python's
http.client and raw sockets) against the real binaries: documents written by a device that
syncs are read over HTTP, with the device tokens and the sync rules; every error is a JSON
error with its status; the limits (headers, body, slow requests, connections) hold.

  http_api_test.py --server PATH/cairn-server --cli PATH/cairn --openapi docs/openapi.json
"""
import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

ARGS = None


class Server:
    """A cairn-server on free ports (sync and HTTP), its log in DIR/server.log."""

    def __init__(self, work, *extra):
        self.log_path = os.path.join(work, "server-%d.log" % time.monotonic_ns())
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [ARGS.server, "--db", os.path.join(work, "server.db"), "--listen", "127.0.0.1:0",
             "--http", "127.0.0.1:0", *extra], stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            text = read(self.log_path)
            sync = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            web = re.search(r"HTTP API on https?://127\.0\.0\.1:(\d+)", text)
            if sync and web:
                self.sync_port, self.http_port = int(sync.group(1)), int(web.group(1))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start:\n" + text)
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()

    def request(self, method, path, token=None, body=None, headers=None, source="127.0.0.1"):
        """(status, headers, JSON body or text) of one request on a new connection, from the
        address `source` (any of 127/8)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=20,
                                          source_address=(source, 0))
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode("utf-8", "replace")
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), parsed

    def raw(self, data, responses=1, wait=10.0):
        """What the server answers to `data` sent as is: until it closes, or `responses`
        responses have come whole, or `wait` s passed."""
        s = socket.create_connection(("127.0.0.1", self.http_port), timeout=wait)
        try:
            s.sendall(data)
        except OSError:
            pass  # (it may close before taking all of it: its answer is what counts)
        out = b""
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline and whole_responses(out) < responses:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass  # a reset after the answer, or the time is up
        s.close()
        return out


def whole_responses(data):
    """How many whole responses (headers and Content-Length bytes of body) `data` holds."""
    n, at = 0, 0
    while True:
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return n
        m = re.search(rb"content-length: *(\d+)", data[at:end].lower())
        length = int(m.group(1)) if m else 0
        if len(data) < end + 4 + length:
            return n
        n, at = n + 1, end + 4 + length


def read(path):
    with open(path) as f:
        return f.read()


def cli(db, *args, env=None):
    r = subprocess.run([ARGS.cli, "--db", db, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("cairn %s: %s" % (" ".join(args), r.stderr))
    return r.stdout


def get_doc(db, collection, key):
    """A replica's document, or None when it has none (cairn get exits 1: ENOTFOUND)."""
    r = subprocess.run([ARGS.cli, "--db", db, "get", collection, key], capture_output=True,
                       text=True)
    if r.returncode == 1:
        return None
    if r.returncode != 0:
        raise RuntimeError("cairn get: " + r.stderr)
    return json.loads(r.stdout)


def token(secret, sub, *args):
    r = subprocess.run([ARGS.server, "token", "--token-secret", secret, "--sub", sub, *args],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def error_of(body):
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


class HttpApiTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="cairn-http-")
        self.secret = os.path.join(self.work, "secret")
        with open(self.secret, "w") as f:
            f.write(base64.b64encode(os.urandom(48)).decode())
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def start(self, *extra):
        s = Server(self.work, "--token-secret", self.secret, *extra)
        self.servers.append(s)
        return s

    def device_writes(self, server, name, sub, docs, *token_args):
        """A device's replica writes `docs` (collection, key, fields) and syncs them."""
        db = os.path.join(self.work, name + ".db")
        for coll, key, fields in docs:
            cli(db, "put", coll, key, json.dumps(fields))
        cli(db, "sync", "--server", "127.0.0.1:%d" % server.sync_port, "--once",
            "--token", token(self.secret, sub, *token_args))
        return db

    def test_documents_a_device_wrote_are_read_over_http(self):
        s = self.start()
        self.device_writes(s, "dev", "dev", [
            ("tasks", "t1", {"title": "inspect pump", "n": 3, "ok": True}),
            ("tasks", "a/b ü", {"title": "odd key"}),
            ("notes", "n1", {"text": "hidden"})])
        reader = token(self.secret, "backend", "--read", "tasks")
        status, _, body = s.request("GET", "/v1/docs/tasks/t1", reader)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["key"], "t1")
        self.assertEqual(body["fields"], {"title": "inspect pump", "n": 3, "ok": True})
        self.assertIsInstance(body["cursor"], int)
        self.assertGreater(body["cursor"], 0)
        # A key with a '/', a space and a non-ASCII letter, percent-encoded.
        path = "/v1/docs/tasks/" + urllib.parse.quote("a/b ü", safe="")
        status, _, body = s.request("GET", path, reader)
        self.assertEqual((status, body["key"]), (200, "a/b ü"), body)
        # Not there: 404; another collection than its token reads: 403.
        status, _, body = s.request("GET", "/v1/docs/tasks/nope", reader)
        self.assertEqual((status, error_of(body)), (404, "ENOTFOUND"))
        status, _, body = s.request("GET", "/v1/docs/notes/n1", reader)
        self.assertEqual((status, error_of(body)), (403, "EPERM"))
        status, _, body = s.request("GET", "/v1/docs/notes", reader)
        self.assertEqual((status, error_of(body)), (403, "EPERM"))
        status, _, body = s.request("GET", "/healthz")
        self.assertEqual((status, body), (200, {"ok": True}))

    def test_tokens_are_checked_as_for_devices(self):
        s = self.start()
        self.device_writes(s, "dev", "dev", [("tasks", "t1", {"title": "x"})])
        for tok in [None, "not.a.token", token(self.secret, "x", "--ttl", "1")[:-3] + "abc"]:
            status, headers, body = s.request("GET", "/v1/docs/tasks/t1", tok)
            self.assertEqual((status, error_of(body)), (401, "EPERM"), body)
            self.assertEqual(headers.get("www-authenticate"), "Bearer")
        status, _, body = s.request("GET", "/v1/docs/tasks/t1",
                                    headers={"Authorization": "Basic eDp5"})
        self.assertEqual(status, 401, body)
        # Signed with another secret.
        other = os.path.join(self.work, "other-secret")
        with open(other, "w") as f:
            f.write(base64.b64encode(os.urandom(48)).decode())
        status, _, body = s.request("GET", "/v1/docs/tasks/t1", token(other, "x"))
        self.assertEqual((status, error_of(body)), (401, "EPERM"), body)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/t1", token(self.secret, "x"))[0], 200)
        # Expired (an hour ago, past the leeway): ETOKEN.
        status, _, body = s.request("GET", "/v1/docs/tasks/t1",
                                    token(self.secret, "x", "--ttl", "-3600"))
        self.assertEqual((status, error_of(body)), (401, "ETOKEN"), body)

    def test_lists_are_paged_without_gaps_or_repeats(self):
        s = self.start()
        keys = ["k%03d" % i for i in range(57)]
        self.device_writes(s, "dev", "dev", [("tasks", k, {"i": i}) for i, k in enumerate(keys)])
        db = os.path.join(self.work, "dev.db")
        cli(db, "del", "tasks", "k010")  # deleted: not listed
        cli(db, "sync", "--server", "127.0.0.1:%d" % s.sync_port, "--once",
            "--token", token(self.secret, "dev"))
        reader = token(self.secret, "backend")
        seen, after, pages = [], None, 0
        while True:
            q = "?limit=10" + ("&after=" + urllib.parse.quote(after) if after else "")
            status, _, body = s.request("GET", "/v1/docs/tasks" + q, reader)
            self.assertEqual(status, 200, body)
            pages += 1
            self.assertLessEqual(len(body["docs"]), 10)
            for d in body["docs"]:
                self.assertEqual(d["fields"], {"i": int(d["key"][1:])})
            seen += [d["key"] for d in body["docs"]]
            after = body["next"]
            if after is None:
                break
            self.assertEqual(after, seen[-1])
        self.assertEqual(seen, [k for k in keys if k != "k010"])
        self.assertEqual(pages, 6)
        status, _, body = s.request("GET", "/v1/docs/tasks", reader)
        self.assertEqual((len(body["docs"]), body["next"]), (56, None))
        status, _, body = s.request("GET", "/v1/docs/empty", reader)
        self.assertEqual((status, body), (200, {"docs": [], "next": None}))
        for q in ["limit=0", "limit=1001", "limit=ten", "limit=-1", "after=%zz"]:
            status, _, body = s.request("GET", "/v1/docs/tasks?" + q, reader)
            self.assertEqual((status, error_of(body)), (400, "EINVAL"), q)

    def test_sync_rules_hide_what_a_caller_may_not_read(self):
        rules = os.path.join(self.work, "rules.json")
        with open(rules, "w") as f:
            json.dump({"collections": {"tasks": {"channels": ["user:{owner}", "team:{team}"]}},
                       "grants": {"read": ["user:{sub}", "team:{teams[]}"],
                                  "write": ["user:{sub}", "team:{teams[]}"]}}, f)
        s = self.start("--rules", rules)
        self.device_writes(s, "alice", "alice", [
            ("tasks", "mine", {"owner": "alice"}),
            ("tasks", "red", {"owner": "alice", "team": "red"})], "--claim-list", "teams=red")
        bob = token(self.secret, "bob", "--claim-list", "teams=red")
        carol = token(self.secret, "carol")
        admin = token(self.secret, "ops", "--admin")
        self.assertEqual(s.request("GET", "/v1/docs/tasks/red", bob)[0], 200)
        # Not in bob's channels: not there for him (404, as a missing one: nothing told).
        status, _, body = s.request("GET", "/v1/docs/tasks/mine", bob)
        self.assertEqual((status, error_of(body)), (404, "ENOTFOUND"))
        self.assertEqual(s.request("GET", "/v1/docs/tasks/mine", admin)[0], 200)
        listed = lambda tok: [d["key"] for d in s.request("GET", "/v1/docs/tasks", tok)[2]["docs"]]
        self.assertEqual(listed(bob), ["red"])
        self.assertEqual(listed(carol), [])
        self.assertEqual(listed(admin), ["mine", "red"])
        # The change feed the same: what each may read, and a document that leaves bob's view
        # (moved out of team red) as null for him, for carol nothing of it.
        feed = lambda tok, since=0: s.request("GET", "/v1/changes?since=%d" % since, tok)[2]
        keys = lambda page: [(c["key"], c["fields"] is not None) for c in page["changes"]]
        self.assertEqual(keys(feed(bob)), [("red", True)])
        self.assertEqual(keys(feed(carol)), [])
        self.assertEqual(sorted(keys(feed(admin))), [("mine", True), ("red", True)])
        head = feed(admin)["cursor"]
        alice = token(self.secret, "alice", "--claim-list", "teams=red")
        status, _, body = s.request("PATCH", "/v1/docs/tasks/red", admin,
                                    json.dumps({"fields": {"team": "blue"}}))
        self.assertEqual(status, 200, body)
        self.assertEqual(keys(feed(bob, head)), [("red", False)])
        self.assertEqual(feed(bob, head)["changes"][0]["fields"], None)
        self.assertEqual(keys(feed(carol, head)), [])
        self.assertEqual(keys(feed(alice, head)), [("red", True)])
        self.assertEqual(feed(carol, head)["cursor"], feed(bob, head)["cursor"])

    def test_writes_go_through_the_merge_and_reach_devices(self):
        s = self.start()
        dev = self.device_writes(s, "dev", "dev", [("tasks", "t1", {"title": "pump", "n": 1})])
        backend = token(self.secret, "backend")
        sync_dev = lambda: cli(dev, "sync", "--server", "127.0.0.1:%d" % s.sync_port, "--once",
                               "--token", token(self.secret, "dev"))
        get_dev = lambda key: get_doc(dev, "tasks", key)
        # PATCH: fields set, one transaction, after what the device wrote (it wins).
        status, _, body = s.request("PATCH", "/v1/docs/tasks/t1", backend,
                                    json.dumps({"fields": {"n": 2, "status": "approved"}}),
                                    {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        cursor = body["cursor"]
        self.assertIsInstance(cursor, int)
        got = s.request("GET", "/v1/docs/tasks/t1", backend)[2]
        self.assertEqual(got["fields"], {"title": "pump", "n": 2, "status": "approved"})
        self.assertGreaterEqual(got["cursor"], cursor)
        sync_dev()
        self.assertEqual(get_dev("t1"), {"title": "pump", "n": 2, "status": "approved"})
        # Increments count, each once.
        for _ in range(2):
            status, _, body = s.request("POST", "/v1/docs/tasks/t1/inc", backend,
                                        json.dumps({"field": "count", "delta": 5}))
            self.assertEqual(status, 200, body)
        # A batch, atomically: two documents set, one counted, one deleted.
        status, _, body = s.request("POST", "/v1/batch", backend, json.dumps({"ops": [
            {"op": "set", "collection": "tasks", "key": "t2", "fields": {"title": "valve"}},
            {"op": "inc", "collection": "tasks", "key": "t2", "field": "count", "delta": -3},
            {"op": "set", "collection": "orders", "key": "o1", "fields": {"qty": 4}},
            {"op": "del", "collection": "tasks", "key": "t1"}]}))
        self.assertEqual(status, 200, body)
        self.assertGreater(body["cursor"], cursor)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/t1", backend)[0], 404)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/t2", backend)[2]["fields"],
                         {"title": "valve", "count": -3})
        sync_dev()
        self.assertIsNone(get_dev("t1"))
        self.assertEqual(get_dev("t2"), {"title": "valve", "count": -3})
        self.assertEqual(get_doc(dev, "orders", "o1"), {"qty": 4})
        # DELETE, then a write brings it back with only the new field (docs/crdt-semantics.md).
        self.assertEqual(s.request("DELETE", "/v1/docs/tasks/t2", backend)[0], 200)
        self.assertEqual(s.request("PATCH", "/v1/docs/tasks/t2", backend,
                                   json.dumps({"fields": {"title": "again"}}))[0], 200)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/t2", backend)[2]["fields"],
                         {"title": "again"})
        # A device syncing live sees an API write without syncing again.
        watch = subprocess.Popen([ARGS.cli, "--db", dev, "sync", "--server",
                                  "127.0.0.1:%d" % s.sync_port, "--watch",
                                  "--token", token(self.secret, "dev")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Connected and caught up (GET /v1/clients) before the write is made.
            admin = token(self.secret, "ops", "--admin")
            deadline = time.monotonic() + 15
            while [(c["subject"], c["lag"]) for c in
                   s.request("GET", "/v1/clients", admin)[2]["clients"]] != [("dev", 0)]:
                self.assertLess(time.monotonic(), deadline, "the live device never caught up")
                time.sleep(0.05)
            self.assertEqual(s.request("PATCH", "/v1/docs/tasks/live", backend,
                                       json.dumps({"fields": {"v": 1}}))[0], 200)
            deadline = time.monotonic() + 15
            while get_dev("live") != {"v": 1}:
                self.assertLess(time.monotonic(), deadline, "the live device never got it")
                time.sleep(0.1)
        finally:
            watch.terminate()
            watch.wait(timeout=20)
        self.assertIn("own writes (HTTP API, SQL inbox) of this process are made as origin",
                      read(s.log_path))
        # The server's own file may be read with cairn, not written (such a write would never
        # reach the clients): exit 3, pointing to the HTTP API; nothing written.
        server_db = os.path.join(self.work, "server.db")
        self.assertEqual(get_doc(server_db, "tasks", "live"), {"v": 1})
        for args in [("put", "tasks", "live", '{"v": 2}'), ("del", "tasks", "live"),
                     ("inc", "tasks", "live", "v", "1")]:
            r = subprocess.run([ARGS.cli, "--db", server_db, *args], capture_output=True,
                               text=True)
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("cairn-server's file", r.stderr)
            self.assertIn("HTTP API", r.stderr)
        self.assertEqual(get_doc(server_db, "tasks", "live"), {"v": 1})
        self.assertEqual(s.request("GET", "/v1/docs/tasks/live", backend)[2]["fields"], {"v": 1})

    def test_a_write_retried_with_its_idempotency_key_applies_once(self):
        s = self.start()
        backend = token(self.secret, "backend")
        inc = json.dumps({"field": "count", "delta": 1})

        def write(path, body, key, tok=backend):
            return s.request("POST", path, tok, body, {"Idempotency-Key": key})

        def count(server):
            return server.request("GET", "/v1/docs/tasks/t1", backend)[2]["fields"]["count"]

        # The same request five times: applied once, each answer the first one's.
        answers = [write("/v1/docs/tasks/t1/inc", inc, "inc-1") for _ in range(5)]
        self.assertEqual([a[0] for a in answers], [200] * 5, answers)
        self.assertEqual(len({a[2]["cursor"] for a in answers}), 1, answers)
        self.assertNotIn("idempotent-replayed", answers[0][1])
        self.assertEqual([a[1].get("idempotent-replayed") for a in answers[1:]], ["true"] * 4)
        self.assertEqual(count(s), 1)
        # The key with another request: 409, nothing applied; a key of another subject and a
        # request without a key are their own.
        status, _, body = write("/v1/docs/tasks/t1/inc", json.dumps({"field": "count",
                                                                     "delta": 7}), "inc-1")
        self.assertEqual((status, error_of(body)), (409, "EINVAL"), body)
        status, _, body = write("/v1/docs/tasks/t2/inc", inc, "inc-1")
        self.assertEqual((status, error_of(body)), (409, "EINVAL"), body)
        self.assertEqual(count(s), 1)
        self.assertEqual(write("/v1/docs/tasks/t1/inc", inc, "inc-1",
                               token(self.secret, "other"))[0], 200)
        self.assertEqual(s.request("POST", "/v1/docs/tasks/t1/inc", backend, inc)[0], 200)
        self.assertEqual(count(s), 3)
        # A bad key: 400, nothing applied.
        for bad in ["x" * 256, "tab\tkey", "caf\u00e9"]:
            status, _, body = write("/v1/docs/tasks/t1/inc", inc, bad)
            self.assertEqual((status, error_of(body)), (400, "EINVAL"), (bad, body))
        self.assertEqual(count(s), 3)
        # A batch, and a refused write: each answered again as it was.
        batch = json.dumps({"ops": [
            {"op": "inc", "collection": "tasks", "key": "t1", "field": "count", "delta": 10},
            {"op": "set", "collection": "tasks", "key": "t3", "fields": {"a": 1}}]})
        first = write("/v1/batch", batch, "batch-1")
        self.assertEqual(first[0], 200, first)
        notes_only = token(self.secret, "clerk", "--write", "notes")
        refused = [write("/v1/docs/tasks/t9/inc", inc, "no-1", notes_only) for _ in range(3)]
        self.assertEqual([(r[0], error_of(r[2])) for r in refused], [(403, "EPERM")] * 3)
        self.assertEqual(refused[0][2], refused[2][2])
        self.assertEqual(refused[2][1].get("idempotent-replayed"), "true")
        # Across a restart of the server: kept in its file with the write.
        s.stop()
        self.servers.remove(s)
        s = self.start()
        again = write("/v1/batch", batch, "batch-1")
        self.assertEqual((again[0], again[2]), (200, first[2]))
        self.assertEqual(write("/v1/docs/tasks/t1/inc", inc, "inc-1")[2], answers[0][2])
        self.assertEqual(count(s), 13)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/t9", backend)[0], 404)

    def test_the_change_feed_gives_each_change_once_in_cursor_order(self):
        s = self.start()
        backend = token(self.secret, "backend")
        dev = self.device_writes(s, "dev", "dev", [("tasks", "t1", {"n": 1}),
                                                   ("tasks", "t2", {"n": 2}),
                                                   ("notes", "n1", {"text": "x"})])
        feed = lambda since, q="", tok=backend: s.request(
            "GET", "/v1/changes?since=%d%s" % (since, q), tok)

        # What the device wrote, and nothing more after the cursor given.
        status, _, page = feed(0)
        self.assertEqual(status, 200, page)
        self.assertEqual(set(page), {"changes", "cursor"})
        self.assertEqual(sorted((c["collection"], c["key"], json.dumps(c["fields"]))
                                for c in page["changes"]),
                         [("notes", "n1", '{"text": "x"}'), ("tasks", "t1", '{"n": 1}'),
                          ("tasks", "t2", '{"n": 2}')])
        self.assertTrue(all(c["cursor"] == page["cursor"] for c in page["changes"]))
        first = page["cursor"]
        self.assertEqual(feed(first)[2], {"changes": [], "cursor": first})
        # A token reading notes only: notes only.
        notes = feed(0, tok=token(self.secret, "clerk", "--read", "notes"))[2]
        self.assertEqual([c["key"] for c in notes["changes"]], ["n1"])

        # An API write and a device's delete: each once, the deleted one null.
        self.assertEqual(s.request("PATCH", "/v1/docs/tasks/t1", backend,
                                   json.dumps({"fields": {"n": 10}}))[0], 200)
        cli(dev, "del", "tasks", "t2")
        cli(dev, "sync", "--server", "127.0.0.1:%d" % s.sync_port, "--once",
            "--token", token(self.secret, "dev"))
        page = feed(first)[2]
        self.assertEqual([(c["key"], c["fields"]) for c in page["changes"]],
                         [("t1", {"n": 10}), ("t2", None)])
        self.assertLess(page["changes"][0]["cursor"], page["changes"][1]["cursor"])
        second = page["cursor"]

        # Pages: 30 writes read 7 at a time, no gap, no repeat, cursors rising.
        for i in range(30):
            self.assertEqual(s.request("PATCH", "/v1/docs/pages/p%02d" % i, backend,
                                       json.dumps({"fields": {"i": i}}))[0], 200)
        seen, cursor, last = [], second, 0
        while True:
            status, _, page = feed(cursor, "&limit=7")
            self.assertEqual(status, 200, page)
            self.assertLessEqual(len(page["changes"]), 7)
            if not page["changes"]:
                break
            for c in page["changes"]:
                self.assertGreater(c["cursor"], last)
                last = c["cursor"]
            seen += [c["key"] for c in page["changes"]]
            cursor = page["cursor"]
        self.assertEqual(seen, ["p%02d" % i for i in range(30)])
        # A document changed twice in a page shows once, at its last change, as it is now.
        for n in (1, 2):
            s.request("PATCH", "/v1/docs/pages/p00", backend, json.dumps({"fields": {"n": n}}))
        page = feed(cursor)[2]
        self.assertEqual([(c["key"], c["fields"]) for c in page["changes"]],
                         [("p00", {"i": 0, "n": 2})])
        cursor = page["cursor"]

        # Long poll: answered when a change is committed, or empty at its deadline.
        got = {}
        poll = threading.Thread(target=lambda: got.update(
            r=feed(cursor, "&wait_ms=20000"), t=time.monotonic()))
        started = time.monotonic()
        poll.start()
        time.sleep(0.5)
        self.assertTrue(poll.is_alive())
        wrote = time.monotonic()
        s.request("PATCH", "/v1/docs/tasks/t9", backend, json.dumps({"fields": {"late": True}}))
        poll.join(20)
        status, _, page = got["r"]
        self.assertEqual(status, 200, page)
        self.assertEqual([c["key"] for c in page["changes"]], ["t9"])
        self.assertLess(got["t"] - wrote, 5, "woken by the commit, not by its deadline")
        self.assertGreater(got["t"] - started, 0.4)
        cursor = page["cursor"]
        started = time.monotonic()
        status, _, page = feed(cursor, "&wait_ms=700")
        self.assertEqual((status, page), (200, {"changes": [], "cursor": cursor}))
        self.assertGreater(time.monotonic() - started, 0.6)

        # A restart of the server: the reader resumes from its cursor, nothing lost or repeated.
        s.stop()
        self.servers.remove(s)
        s = self.start()
        status, _, page = feed(second)
        self.assertEqual(status, 200, page)
        self.assertEqual([c["key"] for c in page["changes"]],
                         ["p%02d" % i for i in range(1, 30)] + ["p00", "t9"])
        self.assertEqual(feed(cursor)[2], {"changes": [], "cursor": cursor})

        # Bad requests: 400 (405 for another method), nothing changed.
        for q in ["since=abc", "since=-1", "since=%d" % (cursor + 1), "limit=0", "wait_ms=60001",
                  "since=1&cursor=2"]:
            status, _, body = s.request("GET", "/v1/changes?" + q, backend)
            self.assertEqual((status, error_of(body)), (400, "EINVAL"), (q, body))
        status, headers, body = s.request("POST", "/v1/changes", backend, "{}")
        self.assertEqual((status, error_of(body)), (405, "EINVAL"))

    def test_a_long_poll_of_a_client_that_went_is_forgotten(self):
        s = self.start()
        admin = token(self.secret, "ops", "--admin")

        def waiting():
            status, _, text = s.request("GET", "/metrics", admin)
            self.assertEqual(status, 200, text)
            return int(float(re.search(r"^cairn_change_feed_polls (\S+)$", text, re.M).group(1)))

        head = s.request("GET", "/v1/changes?since=0", admin)[2]["cursor"]
        clients = []
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", s.http_port), timeout=10)
            c.sendall(("GET /v1/changes?since=%d&wait_ms=60000 HTTP/1.1\r\nHost: x\r\n"
                       "Authorization: Bearer %s\r\n\r\n" % (head, admin)).encode())
            clients.append(c)
        deadline = time.monotonic() + 10
        while waiting() < 3:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        # Two clients go: their polls are dropped at once, not at their deadline a minute later
        # (they would count against the 1,000 that may wait).
        for c in clients[:2]:
            c.close()
        deadline = time.monotonic() + 10
        while waiting() != 1:
            self.assertLess(time.monotonic(), deadline, "the polls of closed connections wait on")
            time.sleep(0.05)
        # The one left is answered by the next write; behind it on its connection, pipelined, a
        # write of its own, answered after it (on a later turn of the server's loop).
        clients[2].sendall(("PATCH /v1/docs/tasks/b HTTP/1.1\r\nHost: x\r\n"
                            "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                            "Content-Length: 18\r\n\r\n{\"fields\":{\"b\":1}}" % admin).encode())
        self.assertEqual(s.request("PATCH", "/v1/docs/tasks/a", admin,
                                   json.dumps({"fields": {"a": 1}}))[0], 200)
        out = b""
        clients[2].settimeout(10)
        while whole_responses(out) < 2:
            chunk = clients[2].recv(65536)
            self.assertTrue(chunk, out)
            out += chunk
        clients[2].close()
        first, second = out.split(b"\r\n\r\n", 1)[1], out.split(b"HTTP/1.1 ")[2]
        self.assertIn(b'"key":"a"', first)
        self.assertTrue(second.startswith(b"200 "), out)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/b", admin)[2]["fields"], {"b": 1})
        self.assertEqual(waiting(), 0)

    def test_a_feed_behind_the_trimmed_log_is_told_where_to_start_again(self):
        s = self.start("--keep-log", "5")
        backend = token(self.secret, "backend")
        for i in range(12):
            s.request("PATCH", "/v1/docs/tasks/t%d" % i, backend, json.dumps({"fields": {"i": i}}))
        status, headers, body = s.request("GET", "/v1/changes?since=0", backend)
        self.assertEqual((status, error_of(body)), (410, "ENOTFOUND"), body)
        head = int(headers["cairn-head"])
        self.assertEqual(head, 12)
        # Read the documents, then follow from the head: the next write and nothing before it.
        self.assertEqual(len(s.request("GET", "/v1/docs/tasks", backend)[2]["docs"]), 12)
        s.request("PATCH", "/v1/docs/tasks/t0", backend, json.dumps({"fields": {"i": 100}}))
        status, _, page = s.request("GET", "/v1/changes?since=%d" % head, backend)
        self.assertEqual((status, [(c["key"], c["fields"]) for c in page["changes"]]),
                         (200, [("t0", {"i": 100})]))

    def test_refused_ops_and_connected_clients_are_listed_for_admins(self):
        s = self.start()
        admin = token(self.secret, "ops", "--admin")
        db = os.path.join(self.work, "dev.db")
        cli(db, "put", "tasks", "t1", json.dumps({"a": 1}))
        cli(db, "put", "notes", "n1", json.dumps({"b": 2}))
        cli(db, "sync", "--server", "127.0.0.1:%d" % s.sync_port, "--once",
            "--token", token(self.secret, "dev", "--write", "tasks"))
        status, _, body = s.request("GET", "/v1/refused", admin)
        self.assertEqual(status, 200, body)
        self.assertEqual(set(body), {"refused", "cursor"})
        [r] = body["refused"]
        self.assertEqual((r["subject"], r["code"], r["first_seq"], r["last_seq"]),
                         ("dev", "EPERM", 2, 2), r)
        self.assertIn("notes", r["reason"])
        self.assertEqual(len(r["origin"]), 32)
        self.assertIsInstance(r["at_ms"], int)
        cursor = body["cursor"]
        self.assertGreaterEqual(cursor, r["cursor"])
        self.assertEqual(s.request("GET", "/v1/refused?since=%d" % cursor, admin)[2],
                         {"refused": [], "cursor": cursor})
        # An HTTP write refused: listed too, with no subject bound to its origin.
        clerk = token(self.secret, "clerk", "--write", "notes")
        self.assertEqual(s.request("PATCH", "/v1/docs/tasks/x", clerk,
                                   json.dumps({"fields": {"v": 1}}))[0], 403)
        [r2] = s.request("GET", "/v1/refused?since=%d" % cursor, admin)[2]["refused"]
        self.assertEqual((r2["subject"], r2["code"]), (None, "EPERM"))
        # Pages of one refusal each.
        for i in range(3):
            s.request("PATCH", "/v1/docs/tasks/y%d" % i, clerk, json.dumps({"fields": {"v": i}}))
        since, pages = 0, []
        while True:
            page = s.request("GET", "/v1/refused?limit=1&since=%d" % since, admin)[2]
            if not page["refused"]:
                break
            pages.append(len(page["refused"]))
            since = page["cursor"]
        self.assertEqual(pages, [1] * 5)
        # Admins only; bad parameters.
        for tok in [clerk, token(self.secret, "dev")]:
            for path in ["/v1/refused", "/v1/clients"]:
                status, _, body = s.request("GET", path, tok)
                self.assertEqual((status, error_of(body)), (403, "EPERM"), path)
        for q in ["since=x", "limit=0", "after=3"]:
            status, _, body = s.request("GET", "/v1/refused?" + q, admin)
            self.assertEqual((status, error_of(body)), (400, "EINVAL"), q)

        # Clients: a device syncing live is listed while it is connected, with its lag.
        self.assertEqual(s.request("GET", "/v1/clients", admin)[2]["clients"], [])
        watch = subprocess.Popen([ARGS.cli, "--db", db, "sync", "--server",
                                  "127.0.0.1:%d" % s.sync_port, "--watch",
                                  "--token", token(self.secret, "dev", "--write", "tasks")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        replica = json.loads(cli(db, "status"))["replica_id"]
        try:
            deadline = time.monotonic() + 15
            while True:
                body = s.request("GET", "/v1/clients", admin)[2]
                if body["clients"] and body["clients"][0]["lag"] == 0:
                    break
                self.assertLess(time.monotonic(), deadline, body)
                time.sleep(0.05)
            [c] = body["clients"]
            self.assertEqual((c["id"], c["subject"], c["cursor"]), (replica, "dev", body["head"]))
            self.assertTrue(c["address"].startswith("127.0.0.1:"), c)
            self.assertLessEqual(c["since_ms"], time.time() * 1000 + 1000)
        finally:
            watch.terminate()
            watch.wait(timeout=20)
        deadline = time.monotonic() + 15
        while s.request("GET", "/v1/clients", admin)[2]["clients"]:
            self.assertLess(time.monotonic(), deadline, "a closed session is still listed")
            time.sleep(0.05)

    def test_metrics_are_prometheus_text_and_count_what_the_server_does(self):
        from prometheus_client.parser import text_string_to_metric_families
        s = self.start()
        admin = token(self.secret, "ops", "--admin")

        def metrics():
            """{(sample name, frozen labels): value} and {family: type}, parsed."""
            status, headers, text = s.request("GET", "/metrics", admin)
            self.assertEqual(status, 200, text)
            self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"))
            values, types = {}, {}
            for family in text_string_to_metric_families(text):
                types[family.name] = family.type
                for sample in family.samples:
                    values[(sample.name, frozenset(sample.labels.items()))] = sample.value
            return values, types

        def value(values, name, **labels):
            return values.get((name, frozenset(labels.items())), 0)

        before, types = metrics()
        self.assertEqual(types["cairn_ops_in"], "counter")
        self.assertEqual(types["cairn_connections"], "gauge")
        self.assertEqual(types["cairn_push_seconds"], "histogram")
        self.assertEqual(value(before, "cairn_ops_in_total"), 0)
        self.assertGreaterEqual(value(before, "cairn_connections", port="http"), 1)
        # A device's push of three ops, one of them refused (a collection it may not write).
        db = os.path.join(self.work, "dev.db")
        for coll, key in [("tasks", "a"), ("tasks", "b"), ("notes", "n")]:
            cli(db, "put", coll, key, json.dumps({"v": 1}))
        cli(db, "sync", "--server", "127.0.0.1:%d" % s.sync_port, "--once",
            "--token", token(self.secret, "dev", "--write", "tasks"))
        # An HTTP write of one op.
        s.request("PATCH", "/v1/docs/tasks/c", admin, json.dumps({"fields": {"v": 2}}))
        # A second device receives the three documents.
        other = os.path.join(self.work, "other.db")
        cli(other, "sync", "--server", "127.0.0.1:%d" % s.sync_port, "--once",
            "--token", token(self.secret, "other"))
        after, _ = metrics()
        self.assertEqual(value(after, "cairn_ops_in_total"), 3)
        self.assertEqual(value(after, "cairn_pushes_total"), 2)
        self.assertEqual(value(after, "cairn_refused_total", code="EPERM"), 1)
        self.assertGreaterEqual(value(after, "cairn_ops_out_total"), 3)
        self.assertEqual(value(after, "cairn_push_seconds_count"), 1)
        self.assertEqual(value(after, "cairn_push_seconds_bucket", le="+Inf"), 1)
        self.assertEqual(value(after, "cairn_store_seconds_count", op="apply_push"), 2)
        self.assertGreater(value(after, "cairn_bytes_in_total"), value(before, "cairn_bytes_in_total"))
        self.assertGreater(value(after, "cairn_bytes_out_total"), value(before, "cairn_bytes_out_total"))
        self.assertEqual(value(after, "cairn_log_head"),
                         s.request("GET", "/v1/changes?since=0", admin)[2]["cursor"])
        self.assertGreaterEqual(value(after, "cairn_http_responses_total", status="200"), 2)
        self.assertEqual(value(after, "cairn_connections", port="sync"), 0)
        # Admins only.
        status, _, body = s.request("GET", "/metrics", token(self.secret, "dev"))
        self.assertEqual((status, error_of(body)), (403, "EPERM"))
        self.assertEqual(s.request("GET", "/metrics")[0], 401)

    def test_the_openapi_document_is_served_and_describes_every_route(self):
        s = self.start()
        status, headers, served = s.request("GET", "/v1/openapi.json")
        self.assertEqual(status, 200, served)
        with open(ARGS.openapi) as f:
            self.assertEqual(served, json.load(f))
        self.assertTrue(served["openapi"].startswith("3."))
        # Every route and method the server answers is described, and nothing else.
        described = {(path, m.upper()) for path, ops in served["paths"].items() for m in ops}
        self.assertEqual(described, {
            ("/healthz", "GET"), ("/metrics", "GET"), ("/v1/openapi.json", "GET"),
            ("/v1/docs/{collection}", "GET"), ("/v1/docs/{collection}/{key}", "GET"),
            ("/v1/docs/{collection}/{key}", "PATCH"), ("/v1/docs/{collection}/{key}", "DELETE"),
            ("/v1/docs/{collection}/{key}/inc", "POST"), ("/v1/batch", "POST"),
            ("/v1/changes", "GET"), ("/v1/refused", "GET"), ("/v1/clients", "GET")})
        admin = token(self.secret, "ops", "--admin")
        for path, method in described:
            concrete = path.replace("{collection}", "tasks").replace("{key}", "k")
            body = {"PATCH": '{"fields":{"a":1}}', "POST": '{"field":"n","delta":1}'}.get(method)
            if path == "/v1/batch":
                body = '{"ops":[{"op":"del","collection":"tasks","key":"k"}]}'
            got = s.request(method, concrete, admin, body)[0]
            self.assertIn(str(got), served["paths"][path][method.lower()]["responses"],
                          (method, concrete))
        # Every reference resolves.
        refs = re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', json.dumps(served))
        self.assertEqual({kind for kind, _ in refs}, {"schemas", "responses"})
        for kind, name in refs:
            self.assertIn(name, served["components"][kind])

    def test_the_api_is_served_over_tls_when_the_server_has_a_certificate(self):
        certs = os.path.join(self.work, "certs")
        os.mkdir(certs)
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "..", "..", "examples", "make_dev_certs.py"),
                        certs], check=True, capture_output=True)
        s = self.start("--tls-cert", os.path.join(certs, "server.pem"),
                       "--tls-key", os.path.join(certs, "server.key"))
        self.assertIn("HTTP API on https://", read(s.log_path))
        backend = token(self.secret, "backend")
        trusted = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        conn = http.client.HTTPSConnection("localhost", s.http_port, context=trusted, timeout=20)
        body = json.dumps({"fields": {"v": 1}})
        conn.request("PATCH", "/v1/docs/tasks/t1", body=body,
                     headers={"Authorization": "Bearer " + backend})
        r = conn.getresponse()
        self.assertEqual(r.status, 200, r.read())
        r.read()
        conn.request("GET", "/v1/docs/tasks/t1", headers={"Authorization": "Bearer " + backend})
        r = conn.getresponse()  # (the same connection: kept alive over TLS)
        self.assertEqual((r.status, json.loads(r.read())["fields"]), (200, {"v": 1}))
        conn.close()
        # Another CA's client refuses the server; plain HTTP on the TLS port gets no answer.
        wrong = ssl.create_default_context(cafile=os.path.join(certs, "other_ca.pem"))
        conn = http.client.HTTPSConnection("localhost", s.http_port, context=wrong, timeout=20)
        with self.assertRaises(ssl.SSLError):
            conn.request("GET", "/healthz")
        conn.close()
        self.assertFalse(s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait=3)
                         .startswith(b"HTTP/1.1 200"))

    def test_the_backend_example_answers_reports_two_devices_sync(self):
        """examples/backend/inspection_backend.py against a server and two live devices."""
        example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                               "examples", "backend", "inspection_backend.py")
        s = self.start()
        devices = [os.path.join(self.work, "tablet%d.db" % i) for i in (1, 2)]
        watchers = []
        backend_log = os.path.join(self.work, "backend.out")
        cursor_file = os.path.join(self.work, "backend.cursor")

        def run_backend():
            with open(backend_log, "w") as out:  # (the child keeps its own descriptor)
                return subprocess.Popen(
                    [sys.executable, example, "--url", "http://127.0.0.1:%d" % s.http_port,
                     "--cursor-file", cursor_file, "--wait-ms", "5000"],
                    env=dict(os.environ, CAIRN_TOKEN=token(self.secret, "backend")),
                    stdout=out, stderr=subprocess.STDOUT)

        def wait_received(keys):
            deadline = time.monotonic() + 30
            while True:
                docs = [get_doc(db, "reports", k) for db in devices for k in keys]
                if all(d is not None and d.get("status") == "received" for d in docs):
                    return docs
                self.assertLess(time.monotonic(), deadline, (docs, read(backend_log)))
                time.sleep(0.1)

        backend = run_backend()
        try:
            for i, db in enumerate(devices):
                cli(db, "put", "reports", "boot", json.dumps({"n": i}))  # (the replica made)
                watchers.append(subprocess.Popen(
                    [ARGS.cli, "--db", db, "sync", "--server", "127.0.0.1:%d" % s.sync_port,
                     "--watch", "--token", token(self.secret, "tech%d" % i)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            cli(devices[0], "put", "reports", "r1", json.dumps({"status": "submitted", "site": "B7"}))
            cli(devices[1], "put", "reports", "r2", json.dumps({"status": "submitted", "site": "C2"}))
            docs = wait_received(["r1", "r2"])
            self.assertEqual(docs[0]["site"], "B7")
            self.assertIsInstance(docs[0]["received_ms"], int)
            # A restart of the backend resumes from its cursor: only the new report answered.
            deadline = time.monotonic() + 15
            while not os.path.exists(cursor_file) or int(read(cursor_file)) < json.loads(
                    cli(devices[0], "status"))["cursor"]:
                self.assertLess(time.monotonic(), deadline, "the backend never saved its cursor")
                time.sleep(0.1)
            backend.kill()
            backend.wait()
            first_run = read(backend_log).split("\n")
            self.assertEqual(sorted(l for l in first_run if l.startswith("reviewed")),
                             ["reviewed r1", "reviewed r2"])
            cli(devices[1], "put", "reports", "r3", json.dumps({"status": "submitted"}))
            backend = run_backend()
            wait_received(["r1", "r2", "r3"])
            time.sleep(0.5)
            self.assertEqual([l for l in read(backend_log).split("\n") if l.startswith("reviewed")],
                             ["reviewed r3"])
        finally:
            backend.kill()
            backend.wait()
            for w in watchers:
                w.terminate()
                w.wait(timeout=20)

    def test_bad_writes_are_refused_and_change_nothing(self):
        s = self.start()
        backend = token(self.secret, "backend")
        self.assertEqual(s.request("PATCH", "/v1/docs/tasks/k", backend,
                                   json.dumps({"fields": {"v": 1}}))[0], 200)
        cases = [
            ("PATCH", "/v1/docs/tasks/k", "{not json", None, 400),
            ("PATCH", "/v1/docs/tasks/k", json.dumps({"fields": {}}), None, 400),
            ("PATCH", "/v1/docs/tasks/k", json.dumps({"fields": {"v": 2}, "x": 1}), None, 400),
            ("PATCH", "/v1/docs/tasks/k", json.dumps({"fields": {"v": [1, 2]}}), None, 400),
            ("PATCH", "/v1/docs/tasks/k", json.dumps({"fields": {"bad-name": 2}}), None, 400),
            ("PATCH", "/v1/docs/tasks/k", json.dumps({"fields": {"key": 2}}), None, 400),
            ("PATCH", "/v1/docs/tasks/k", json.dumps({"fields": {"v": 2}}), "text/plain", 415),
            ("POST", "/v1/docs/tasks/k/inc", json.dumps({"field": "v", "delta": "x"}), None, 400),
            ("POST", "/v1/docs/tasks/k/inc", json.dumps({"field": "v", "delta": 2**63}), None, 400),
            ("POST", "/v1/docs/tasks/k/inc", json.dumps({"field": "v", "delta": 1.5}), None, 400),
            ("POST", "/v1/docs/tasks/k/inc", json.dumps({"delta": 1}), None, 400),
            ("POST", "/v1/batch", json.dumps({"ops": []}), None, 400),
            ("POST", "/v1/batch", json.dumps({"ops": [{"op": "put", "collection": "tasks",
                                                       "key": "k"}]}), None, 400),
            # One bad op refuses the whole batch: the good one before it is not applied.
            ("POST", "/v1/batch", json.dumps({"ops": [
                {"op": "set", "collection": "tasks", "key": "k", "fields": {"v": 3}},
                {"op": "set", "collection": "bad name", "key": "k", "fields": {"v": 3}}]}),
             None, 400),
            ("GET", "/v1/docs/tasks/k/inc", None, None, 405),
            ("PUT", "/v1/batch", "{}", None, 405),
        ]
        for method, path, body, ctype, want in cases:
            headers = {"Content-Type": ctype} if ctype else {}
            status, _, got = s.request(method, path, backend, body, headers)
            self.assertEqual(status, want, (method, path, body, got))
            self.assertIn(error_of(got), ["EINVAL"])
        self.assertEqual(s.request("GET", "/v1/docs/tasks/k", backend)[2]["fields"], {"v": 1})
        # Grants: a token that may not write the collection (403, nothing written).
        reader = token(self.secret, "reader", "--write", "orders")
        status, _, got = s.request("PATCH", "/v1/docs/tasks/k", reader,
                                   json.dumps({"fields": {"v": 9}}))
        self.assertEqual((status, error_of(got)), (403, "EPERM"), got)
        status, _, got = s.request("POST", "/v1/batch", reader, json.dumps({"ops": [
            {"op": "set", "collection": "orders", "key": "o", "fields": {"v": 1}},
            {"op": "del", "collection": "tasks", "key": "k"}]}))
        self.assertEqual((status, error_of(got)), (403, "EPERM"), got)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/k", backend)[2]["fields"], {"v": 1})
        self.assertEqual(s.request("GET", "/v1/docs/orders/o", backend)[0], 404)
        self.assertEqual(s.request("PATCH", "/v1/docs/orders/o", reader,
                                   json.dumps({"fields": {"v": 1}}))[0], 200)

    def test_sync_rules_judge_http_writes(self):
        rules = os.path.join(self.work, "rules.json")
        with open(rules, "w") as f:
            json.dump({"collections": {"tasks": {"channels": ["user:{owner}", "team:{team}"]},
                                       "news": {"channels": ["public"], "devices": "read-only"}},
                       "grants": {"read": ["public", "user:{sub}", "team:{teams[]}"],
                                  "write": ["user:{sub}", "team:{teams[]}"]}}, f)
        s = self.start("--rules", rules)
        bob = token(self.secret, "bob", "--claim-list", "teams=red")
        admin = token(self.secret, "ops", "--admin")
        patch = lambda tok, key, fields: s.request("PATCH", "/v1/docs/tasks/" + key, tok,
                                                   json.dumps({"fields": fields}))
        self.assertEqual(patch(bob, "r1", {"owner": "bob", "team": "red"})[0], 200)
        # Into a channel bob may not write: refused whole, with the reason, nothing written.
        status, _, got = patch(bob, "r1", {"team": "blue"})
        self.assertEqual((status, error_of(got)), (403, "EPERM"), got)
        self.assertIn("may not write tasks/r1", got["error"]["message"])
        self.assertEqual(s.request("GET", "/v1/docs/tasks/r1", admin)[2]["fields"],
                         {"owner": "bob", "team": "red"})
        status, _, got = patch(bob, "a1", {"owner": "alice"})
        self.assertEqual(status, 403, got)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/a1", admin)[0], 404)
        # A read-only collection: written by admin tokens only.
        news = lambda tok: s.request("PATCH", "/v1/docs/news/n1", tok,
                                     json.dumps({"fields": {"text": "hello"}}))[0]
        self.assertEqual(news(bob), 403)
        self.assertEqual(news(admin), 200)
        self.assertEqual(s.request("GET", "/v1/docs/news/n1", bob)[2]["fields"], {"text": "hello"})
        # Admin moves a task anywhere; bob no longer sees it.
        self.assertEqual(patch(admin, "r1", {"team": "blue", "owner": "carol"})[0], 200)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/r1", bob)[0], 404)

    def test_bad_requests_get_json_errors_and_change_nothing(self):
        s = self.start("--http-max-body-bytes", "4096")
        reader = token(self.secret, "backend")
        cases = [("GET", "/nope", 404, "ENOTFOUND"), ("GET", "/v1/docs", 404, "ENOTFOUND"),
                 ("GET", "/v1/docs/bad-name/k", 400, "EINVAL"),
                 ("GET", "/v1/docs/cairn_x/k", 400, "EINVAL"),
                 ("GET", "/v1/docs/tasks/%ff%fe", 400, "EINVAL"),
                 ("GET", "/v1/docs/tasks/a%zz", 400, "EINVAL"),
                 ("POST", "/healthz", 405, "EINVAL"), ("PUT", "/v1/docs/tasks/k", 405, "EINVAL"),
                 ("GET", "/v1/docs/tasks/", 400, "EINVAL")]
        for method, path, want_status, want_code in cases:
            status, headers, body = s.request(method, path, reader)
            self.assertEqual((status, error_of(body)), (want_status, want_code), (method, path))
            self.assertEqual(headers["content-type"], "application/json")
        # A body over the limit: refused at its Content-Length, before it is sent (413), and the
        # connection closed.
        out = s.raw(b"PUT /v1/docs/tasks/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413 "), out)
        self.assertIn(b'"code":"EINVAL"', out)
        # Chunked, past the limit as it arrives: 413 too.
        chunk = b"%x\r\n%s\r\n" % (3000, b"x" * 3000)
        out = s.raw(b"PUT /v1/docs/tasks/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + chunk + chunk + b"0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413 "), out)
        # Headers past the limit (431), not HTTP (400).
        out = s.raw(b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 431 "), out)
        out = s.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03hello tls\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out)
        # The server still serves.
        self.assertEqual(s.request("GET", "/healthz")[0], 200)

    def test_requests_on_one_connection_are_answered_in_order(self):
        s = self.start()
        self.device_writes(s, "dev", "dev", [("tasks", "a", {"v": 1}), ("tasks", "b", {"v": 2})])
        tok = token(self.secret, "backend").encode()
        req = lambda key: (b"GET /v1/docs/tasks/" + key + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: Bearer " + tok + b"\r\n\r\n")
        # Pipelined in one send: three responses, in order; the connection stays open.
        out = s.raw(req(b"a") + req(b"b") + req(b"zz"), responses=3)
        statuses = re.findall(rb"HTTP/1\.1 (\d+) ", out)
        self.assertEqual(statuses, [b"200", b"200", b"404"], out)
        self.assertLess(out.index(b'"v":1'), out.index(b'"v":2'))
        # Kept alive: http.client reuses one connection.
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
        for key, v in [("a", 1), ("b", 2), ("a", 1)]:
            conn.request("GET", "/v1/docs/tasks/" + key,
                         headers={"Authorization": "Bearer " + tok.decode()})
            r = conn.getresponse()
            self.assertEqual(json.loads(r.read())["fields"], {"v": v})
        # HEAD: the headers alone (the next response on the connection is read whole).
        conn.request("HEAD", "/v1/docs/tasks/a", headers={"Authorization": "Bearer " + tok.decode()})
        r = conn.getresponse()
        self.assertEqual((r.status, r.read()), (200, b""))
        self.assertGreater(int(r.getheader("Content-Length")), 0)
        conn.request("GET", "/healthz")
        self.assertEqual(json.loads(conn.getresponse().read()), {"ok": True})
        conn.close()
        # An Upgrade is not taken: answered as HTTP/1.1, then closed.
        out = s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                    b"Upgrade: h2c\r\n\r\n", responses=2)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)
        self.assertIn(b"Connection: close", out)
        # HTTP/1.0 without keep-alive: closed after the response.
        out = s.raw(b"GET /healthz HTTP/1.0\r\n\r\n", responses=2)  # (one comes)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)
        self.assertIn(b"Connection: close", out)

    def test_too_many_requests_from_one_address_get_429_and_change_nothing(self):
        s = self.start("--http-rate", "1", "--http-burst", "6")
        admin = token(self.secret, "ops", "--admin")
        # A burst of 6 passes, then every request is refused with 429 until the address has
        # earned more (1 a second): writes among them change nothing.
        answers = []
        for i in range(12):
            answers.append(s.request("PATCH", "/v1/docs/tasks/t%d" % i, admin,
                                     json.dumps({"fields": {"n": i}})))
        statuses = [a[0] for a in answers]
        self.assertEqual(statuses[:6], [200] * 6, answers)
        self.assertGreaterEqual(statuses.count(429), 5, statuses)  # (one may be earned meanwhile)
        refused = [i for i, a in enumerate(answers) if a[0] == 429]
        for i in refused:
            _, headers, body = answers[i]
            self.assertEqual(error_of(body), "EBUSY")
            self.assertIn("too many requests from 127.0.0.1", body["error"]["message"])
            self.assertEqual(headers["retry-after"], "1")
        # /healthz is not counted: a load balancer's check still passes.
        self.assertEqual(s.request("GET", "/healthz")[0], 200)
        # Another address has its own bucket: the refused writes changed nothing.
        other = "127.0.0.2"
        status, _, body = s.request("GET", "/v1/docs/tasks?limit=100", admin, source=other)
        self.assertEqual(status, 200, body)
        self.assertEqual({d["key"]: d["fields"] for d in body["docs"]},
                         {"t%d" % i: {"n": i} for i in range(12) if i not in refused})
        # Once it has earned one, the first address is served again.
        time.sleep(1.2)
        self.assertEqual(s.request("GET", "/v1/docs/tasks/t0", admin)[0], 200)
        status, _, text = s.request("GET", "/metrics", admin, source=other)
        self.assertEqual(status, 200, text)
        m = re.search(r'cairn_http_responses_total\{status="429"\} (\d+)', text)
        self.assertIsNotNone(m, text)
        self.assertEqual(int(m.group(1)), len(refused))
        # 0: no limit.
        t = self.start("--http-rate", "0")
        self.assertEqual({t.request("GET", "/v1/docs/tasks/x", admin)[0] for _ in range(200)},
                         {404})

    def test_slow_requests_and_connection_limits(self):
        s = self.start("--frame-timeout-ms", "500", "--max-connections-per-address", "3")
        # A request that does not complete within the timeout: closed without an answer.
        c = socket.create_connection(("127.0.0.1", s.http_port), timeout=5)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        self.assertEqual(c.recv(100), b"")
        self.assertLess(time.monotonic() - start, 4.5)
        c.close()
        # The HTTP port counts against the same per-address limit as the sync port. (Each held
        # connection is answered once first: the server has counted it.)
        held = []
        for _ in range(3):
            h = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
            h.request("GET", "/healthz")
            self.assertEqual(h.getresponse().read(), b'{"ok":true}')
            held.append(h)
        for port in [s.sync_port, s.http_port]:
            extra = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                self.assertEqual(extra.recv(100), b"")  # closed at accept
            except ConnectionResetError:
                pass
            extra.close()
        for h in held:
            h.close()
        deadline = time.monotonic() + 10
        while True:  # (the server sees the closes soon)
            try:
                if s.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertIn("too many connections from 127.0.0.1", read(s.log_path))


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--cli", required=True)
    p.add_argument("--openapi", required=True, help="docs/openapi.json")
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
