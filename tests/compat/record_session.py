#!/usr/bin/env python3
"""Records sync sessions frame by frame: a TCP proxy between a cairn client and a cairn-server
(plain TCP: record against an open server without TLS) that writes every frame it passes to a
session file, each as one byte for its direction ('C' client to server, 'S' server to client)
followed by the frame as on the wire (4-byte little-endian length, then the FlatBuffers
Frame). One file per client connection: PREFIX-1.frames, PREFIX-2.frames, ...

  record_session.py --listen PORT --server HOST:PORT --out PREFIX

Runs until SIGTERM/SIGINT. Used once per release by tests/compat/record_release.sh to make the
golden sessions that tests/integration/compat_test.cc replays (docs/protocol.md "Versions").
"""
import argparse
import signal
import socket
import struct
import sys
import threading


class Session:
    """One client connection: frames of both directions, written in the order they passed."""

    def __init__(self, path):
        self.out = open(path, "wb")
        self.lock = threading.Lock()

    def write(self, direction, frame):
        with self.lock:
            self.out.write(direction + frame)
            self.out.flush()


def pump(src, dst, direction, session):
    """Forwards src to dst, recording each whole frame; closes dst's sending side at src's end."""
    pending = b""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            # Each whole frame is recorded before it is passed on, so that no answer to it is
            # recorded ahead of it.
            pending += data
            whole = 0
            while len(pending) - whole >= 4:
                n = struct.unpack("<I", pending[whole:whole + 4])[0]
                if len(pending) - whole < 4 + n:
                    break
                session.write(direction, pending[whole:whole + 4 + n])
                whole += 4 + n
            dst.sendall(data)
            pending = pending[whole:]
    except OSError:
        pass
    if pending:
        print("record_session: %d bytes of a torn frame (%s) not recorded" %
              (len(pending), direction.decode()), file=sys.stderr)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    host, port = a.server.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", a.listen))
    listener.listen()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("record_session: listening on 127.0.0.1:%d" % a.listen, flush=True)
    n = 0
    while True:
        client, _ = listener.accept()
        n += 1
        server = socket.create_connection((host, int(port)))
        session = Session("%s-%d.frames" % (a.out, n))
        threads = [threading.Thread(target=pump, args=(client, server, b"C", session)),
                   threading.Thread(target=pump, args=(server, client, b"S", session))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        server.close()
        session.out.close()


if __name__ == "__main__":
    main()
