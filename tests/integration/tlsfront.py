"""A TLS front for the fake upstream, for the https tests.

- TestPKI: a test CA and server certificates made with the openssl command
  (once per test process, in a temporary directory): "good" (DNS:localhost
  and IP:127.0.0.1), "wronghost" (DNS:wrong.invalid only), "expired" (the
  right names, valid only in the past) and "unknown" (the right names, from
  a CA the proxy is never told about).
- TlsRelay: a TLS server on 127.0.0.1 that relays every connection, byte for
  byte, to one plain TCP port (the fake upstream's): one upstream connection
  per TLS connection, a close answered with a close and a reset with a
  reset, so the fake's faults reach the proxy as they would from a TLS
  origin.  It counts handshakes (and resumed ones) and the SNI names seen.

Only the standard library and the openssl command are used.  Everything is
bounded: sockets have timeouts and the threads are daemons stopped by stop().
"""

import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

_CA_CNF = """
[ ca ]
default_ca = zt
[ zt ]
dir = %(dir)s
database = %(dir)s/index.txt
new_certs_dir = %(dir)s
serial = %(dir)s/serial
private_key = %(dir)s/ca.key
certificate = %(dir)s/ca.pem
default_md = sha256
default_days = 365
policy = pol
unique_subject = no
copy_extensions = none
[ pol ]
commonName = supplied
"""


def _run(args, cwd):
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("%s failed: %s" % (" ".join(args), r.stderr[-2000:]))


class TestPKI:
    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        if not shutil.which("openssl"):
            raise unittest_skip("the openssl command is not installed")
        self.dir = tempfile.mkdtemp(prefix="zt-pki-")
        d = self.dir
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for name, cn in (("ca", "zephyr test CA"), ("other-ca", "zephyr unknown CA")):
            _run(["openssl", "req", "-x509"] + ec + ["-keyout", name + ".key", "-out", name + ".pem",
                  "-days", "3650", "-subj", "/CN=" + cn,
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
        with open(os.path.join(d, "index.txt"), "w"):
            pass
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(_CA_CNF % {"dir": d})
        self.ca = os.path.join(d, "ca.pem")
        self.other_ca = os.path.join(d, "other-ca.pem")
        good_san = "subjectAltName=DNS:localhost,IP:127.0.0.1"
        self._server("good", good_san)
        self._server("wronghost", "subjectAltName=DNS:wrong.invalid")
        self._server("expired", good_san, dates=("20200101000000Z", "20200201000000Z"))
        # Signed by the CA nobody trusts.
        _run(["openssl", "req"] + ec + ["-keyout", "unknown.key", "-out", "unknown.csr",
                                         "-subj", "/CN=localhost"], d)
        with open(os.path.join(d, "unknown.ext"), "w") as f:
            f.write(good_san + "\n")
        _run(["openssl", "x509", "-req", "-in", "unknown.csr", "-CA", "other-ca.pem",
              "-CAkey", "other-ca.key", "-CAcreateserial", "-days", "365",
              "-extfile", "unknown.ext", "-out", "unknown.pem"], d)

    def _server(self, name, san, dates=None):
        d = self.dir
        _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name], d)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(san + "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        args = ["openssl", "ca", "-batch", "-notext", "-config", "ca.cnf", "-in", name + ".csr",
                "-out", name + ".pem", "-extfile", name + ".ext"]
        if dates:
            args += ["-startdate", dates[0], "-enddate", dates[1]]
        _run(args, d)

    def cert(self, kind):
        return os.path.join(self.dir, kind + ".pem"), os.path.join(self.dir, kind + ".key")


def unittest_skip(why):
    import unittest
    return unittest.SkipTest(why)


class TlsRelay:
    """TLS on 127.0.0.1:port in front of target_port (plain TCP)."""

    def __init__(self, target_port, kind="good", pki=None):
        self.pki = pki or TestPKI.get()
        self.target_port = target_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*self.pki.cert(kind))
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sni = []
        self.ctx.sni_callback = self._on_sni
        self.lock = threading.Lock()
        self.handshakes = 0
        self.resumed = 0
        self.failed = 0
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = set()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _on_sni(self, sslobj, name, ctx):
        with self.lock:
            self.sni.append(name)

    def counts(self):
        with self.lock:
            return {"handshakes": self.handshakes, "resumed": self.resumed, "failed": self.failed}

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = tls = None
        try:
            try:
                tls = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                with self.lock:
                    self.failed += 1
                return
            with self.lock:
                self.conns.add(tls)
                self.handshakes += 1
                if tls.session_reused:
                    self.resumed += 1
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                return
            self._pump(tls, up)
        finally:
            with self.lock:
                self.conns.discard(tls)
            for s in (up, tls, raw):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def drop_all(self):
        """Closes every relayed connection, as an origin does after its
        keep-alive timeout."""
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def open_count(self):
        with self.lock:
            return len(self.conns)

    def _pump(self, tls, up):
        tls.settimeout(None)
        up.settimeout(None)
        while not self.stopping:
            if tls.pending():
                r = [tls]
            else:
                r, _, _ = select.select([tls, up], [], [], 0.2)
            if tls in r:
                try:
                    data = tls.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                except (ssl.SSLError, OSError):
                    return
                if not data:
                    return
                try:
                    up.sendall(data)
                except OSError:
                    return
            if up in r:
                try:
                    data = up.recv(65536)
                except ConnectionResetError:
                    # Pass the reset on.
                    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                except OSError:
                    return
                if not data:
                    return
                try:
                    tls.sendall(data)
                except (ssl.SSLError, OSError):
                    return

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.thread.join(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if not self.conns:
                    return
            time.sleep(0.02)
