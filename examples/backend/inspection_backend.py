#!/usr/bin/env python3
"""A company's backend on Cairn's HTTP API (docs/backend.md), with Python's standard library.

Field technicians submit inspection reports from their devices (collection `reports`, a
document per report with `"status": "submitted"`), offline or not. This backend follows the
change feed and answers each new report by writing its status back: `"received"`, with the
time. Every device that syncs the report sees the answer.

What it shows:
  - the change feed followed with long polls, resumed from a cursor kept in a file, so a
    restart neither misses a report nor handles one twice;
  - writes with an Idempotency-Key made of the report and its change's cursor: a crash after
    the write and before the cursor was saved repeats the write, and the server applies it once;
  - a feed behind the server's trimmed log (410) starts again from the documents.

  inspection_backend.py --url http://127.0.0.1:8080 [--token T | $CAIRN_TOKEN]
                        [--cursor-file FILE] [--collection reports]
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class Api:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, headers=None, timeout=70):
        """(status, headers, parsed JSON) of one request; HTTP errors are answers too."""
        h = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers, json.loads(e.read() or b"null")


def load_cursor(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def save_cursor(path, cursor):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(cursor))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def review(api, collection, key, fields, cursor):
    """Answers a submitted report: its status written back, once (the Idempotency-Key)."""
    if fields is None or fields.get("status") != "submitted":
        return  # deleted, or answered already (our own writes come back through the feed)
    path = "/v1/docs/%s/%s" % (collection, urllib.parse.quote(key, safe=""))
    status, headers, body = api.call(
        "PATCH", path, {"fields": {"status": "received", "received_ms": int(time.time() * 1000)}},
        {"Idempotency-Key": "review-%s-%d" % (key, cursor)})
    if status != 200:
        raise RuntimeError("writing %s/%s: %d %s" % (collection, key, status, body))
    replayed = " (replayed)" if headers.get("Idempotent-Replayed") == "true" else ""
    print("reviewed %s%s" % (key, replayed), flush=True)


def start_from_documents(api, collection):
    """After a 410: every document as it is, then the feed from the head the server gave."""
    status, headers, body = api.call("GET", "/v1/changes?since=0")
    head = int(headers["Cairn-Head"])
    after = None
    while True:
        q = "?limit=1000" + ("&after=" + urllib.parse.quote(after, safe="") if after else "")
        status, _, page = api.call("GET", "/v1/docs/%s%s" % (collection, q))
        if status != 200:
            raise RuntimeError("listing %s: %d %s" % (collection, status, page))
        for doc in page["docs"]:
            review(api, collection, doc["key"], doc["fields"], head)
        after = page["next"]
        if after is None:
            return head


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--token", default=os.environ.get("CAIRN_TOKEN", ""))
    p.add_argument("--cursor-file", default="inspection_backend.cursor")
    p.add_argument("--collection", default="reports")
    p.add_argument("--wait-ms", type=int, default=25000)
    args = p.parse_args()
    api = Api(args.url, args.token)
    cursor = load_cursor(args.cursor_file)
    backoff = 0.2
    while True:
        try:
            status, _, page = api.call(
                "GET", "/v1/changes?since=%d&wait_ms=%d" % (cursor, args.wait_ms))
            if status == 410:
                cursor = start_from_documents(api, args.collection)
            elif status != 200:
                raise RuntimeError("the change feed: %d %s" % (status, page))
            else:
                for change in page["changes"]:
                    if change["collection"] == args.collection:
                        review(api, args.collection, change["key"], change["fields"],
                               change["cursor"])
                cursor = page["cursor"]
            save_cursor(args.cursor_file, cursor)  # after the page was handled
            backoff = 0.2
        except (OSError, RuntimeError, ValueError) as e:
            print("retrying: %s" % e, file=sys.stderr, flush=True)
            time.sleep(backoff)
            backoff = min(backoff * 2, 10)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
