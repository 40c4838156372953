#!/usr/bin/python3
"""Writes the seeds of fuzz_h2 (tests/fuzz/corpus/h2/): what an HTTP/2
server sends after the TLS handshake, made with python3-h2, behind the
target's two control bytes.  Run it again only to change the seeds."""
import os
import sys

import h2.config
import h2.connection
import h2.errors

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "h2")


def pair(settings=None):
    """A server that has read the client's preface and streams 1, 3 and 5;
    what it sends from here on is the seed."""
    srv = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    srv.initiate_connection()
    if settings:
        srv.update_settings(settings)
    cli = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    cli.initiate_connection()
    for sid in (1, 3, 5):
        cli.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                               (":authority", "a"), (":path", "/")], end_stream=True)
    srv.receive_data(cli.data_to_send())
    return srv


def ok():
    s = pair()
    for sid in (1, 3):
        s.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                             ("content-length", "11")])
        s.send_data(sid, b'{"ok":true}', end_stream=True)
    return s.data_to_send()


def sse():
    s = pair({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    s.send_headers(1, [(":status", "103"), ("link", "</a>")])
    s.send_headers(1, [(":status", "200"), ("content-type", "text/event-stream")])
    for i in range(3):
        s.send_data(1, b"event: ping\ndata: {\"i\":%d}\n\n" % i)
    s.send_headers(1, [("x-trailer", "1")], end_stream=True)
    return s.data_to_send()


def goaway():
    s = pair()
    s.send_headers(1, [(":status", "200")])
    s.send_data(1, b"part")
    s.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=1)
    return s.data_to_send()


def rst():
    s = pair()
    s.send_headers(1, [(":status", "529"), ("retry-after", "3")])
    s.reset_stream(1, h2.errors.ErrorCodes.PROTOCOL_ERROR)
    s.reset_stream(3, h2.errors.ErrorCodes.REFUSED_STREAM)
    s.ping(b"12345678")
    return s.data_to_send()


def status_only():
    s = pair()
    s.send_headers(1, [(":status", "204")], end_stream=True)
    return s.data_to_send()


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {"ok": (b"\x3f\x00", ok()), "ok-bytewise": (b"\x00\x01", ok()),
             "sse-pause": (b"\xc7\x02", sse()), "goaway": (b"\x0f\x05", goaway()),
             "rst": (b"\x43\x0b", rst()), "status-only": (b"\x3f\x00", status_only())}
    for name, (ctl, body) in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(ctl + body)
    print("wrote %d seeds to %s" % (len(seeds), OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
