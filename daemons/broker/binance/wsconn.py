"""One client websocket read without a thread of its own: a plain (or TLS) socket, non-blocking
once open, and websockets' sans-I/O protocol. The WebSocket API client (:mod:`.wsapi`) and the
venue's streams (:mod:`.userstream`) are built on it.

Whoever reads calls :meth:`Conn.read` when the descriptor is readable: it reads until the socket
would block and returns the whole messages that came (a fragmented one is put together), and
writes the protocol's own replies (the pong to a ping, the answer to a close). No extension is
offered in the handshake, so the venue sends its messages uncompressed: permessage-deflate is
optional at Binance and costs both ends CPU on the order's path.
"""
from __future__ import annotations

import select
import socket
import ssl
import threading
import time

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

READ_SIZE = 1 << 16
IDLE_READ_S = 0.2     # a connection's own thread, when no owner reads, reads this often
MAX_MESSAGE = 1 << 22
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Conn:
    """One open connection: its socket (non-blocking), protocol state and reassembly."""

    def __init__(self, sock, proto, write_timeout_s: float = 5.0):
        self.sock = sock
        self.proto = proto
        self.fd = sock.fileno()
        self.write_timeout_s = write_timeout_s
        self.dead = threading.Event()
        #: the protocol state and the socket's writes (senders and the reader share them)
        self.lock = threading.Lock()
        self.parts: list[bytes] | None = None    # a fragmented message being put together
        self.early: list[bytes] = []             # messages that came with the handshake
        self.poller = select.poll()              # for a reader that waits on this one socket
        self.poller.register(self.fd, select.POLLIN)

    def read(self) -> tuple[list[bytes], bool]:
        """Read until the socket would block: the whole messages that came, and whether the
        connection is over (closed by either side, a close frame, or a failed read or write)."""
        frames, gone = [], False
        while True:
            try:
                data = self.sock.recv(READ_SIZE)
            except WOULD_BLOCK:
                break
            except OSError:
                gone = True
                break
            with self.lock:
                if data:
                    self.proto.receive_data(data)
                else:
                    self.proto.receive_eof()
                events = self.proto.events_received()
                try:
                    for chunk in self.proto.data_to_send():   # pongs, the answer to a close
                        if chunk:
                            self.sendall(chunk)
                except OSError:
                    gone = True
            frames += [e for e in events if isinstance(e, Frame)]
            if not data or gone:
                gone = True
                break
        messages, closed = self._messages(frames)
        return messages, gone or closed or self.proto.close_expected()

    def _messages(self, frames) -> tuple[list[bytes], bool]:
        out, closed = [], False
        for f in frames:
            if f.opcode in (Opcode.TEXT, Opcode.BINARY):
                if f.fin:
                    out.append(f.data)
                else:
                    self.parts = [f.data]
            elif f.opcode is Opcode.CONT and self.parts is not None:
                self.parts.append(f.data)
                if f.fin:
                    out.append(b"".join(self.parts))
                    self.parts = None
            elif f.opcode is Opcode.CLOSE:
                closed = True
        return out, closed

    def sendall(self, data: bytes) -> None:
        """Write all of ``data`` (with :attr:`lock` held); raises TimeoutError when the socket
        stays full for ``write_timeout_s``."""
        view = memoryview(data)
        deadline = None
        while view:
            try:
                n = self.sock.send(view)
            except WOULD_BLOCK:
                if deadline is None:
                    deadline = time.monotonic() + self.write_timeout_s
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the websocket's socket stays full") from None
                select.select([], [self.sock], [], left)
                continue
            view = view[n:]

    def send_text(self, message: bytes) -> None:
        """One text frame (with :attr:`lock` held)."""
        self.proto.send_text(message)
        for chunk in self.proto.data_to_send():
            if chunk:
                self.sendall(chunk)

    def close(self) -> None:
        """A close frame if the socket takes it, then the socket closed."""
        self.dead.set()
        with self.lock:
            try:
                if self.proto.state is State.OPEN:
                    self.proto.send_close()
                    for chunk in self.proto.data_to_send():
                        if chunk:
                            self.sock.send(chunk)
            except Exception:
                pass       # best effort: the socket goes anyway
            try:
                self.sock.close()
            except OSError:
                pass


def fd_of(conn: Conn | None) -> int:
    """``conn``'s descriptor while it is open (-1: none, or closed)."""
    return conn.fd if conn is not None and not conn.dead.is_set() else -1


def open_conn(url: str, open_timeout_s: float = 5.0, write_timeout_s: float = 5.0) -> Conn:
    """Connect and make the handshake (blocking, up to ``open_timeout_s``); the connection is
    returned non-blocking. Raises OSError, or websockets' handshake error."""
    uri = parse_uri(url)
    sock = socket.create_connection((uri.host, uri.port), timeout=open_timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if uri.secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=uri.host)
        proto = ClientProtocol(uri, max_size=MAX_MESSAGE)
        proto.send_request(proto.connect())
        for data in proto.data_to_send():
            sock.sendall(data)
        deadline = time.monotonic() + open_timeout_s
        early = []
        while proto.state is State.CONNECTING:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(READ_SIZE)
            if not data:
                proto.receive_eof()
                break
            proto.receive_data(data)
            early += [e for e in proto.events_received() if isinstance(e, Frame)]
        if proto.handshake_exc is not None:
            raise proto.handshake_exc
        if proto.state is not State.OPEN:
            raise ConnectionError("the websocket handshake did not complete")
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    conn = Conn(sock, proto, write_timeout_s)
    conn.early, _ = conn._messages(early)
    return conn
