#!/usr/bin/env python3
"""The HTTP API of cairn-server (docs/backend.md) through a real HTTP client (Python's
http.client and raw sockets) against the real binaries: documents written by a device that
syncs are read over HTTP, with the device tokens and the sync rules; every error is a JSON
error with its status; the limits (headers, body, slow requests, connections) hold.

  http_api_test.py --server PATH/cairn-server --cli PATH/cairn
"""
import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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
            web = re.search(r"HTTP API on http://127\.0\.0\.1:(\d+)", text)
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

    def request(self, method, path, token=None, body=None, headers=None):
        """(status, headers, JSON body or text) of one request on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=20)
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
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
