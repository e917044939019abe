"""A small blocking MLLP client: one frame out, one ACK back. For demos, tools and ops
(resending a message by hand); senders in production are the hospitals' interface engines."""

from __future__ import annotations

import socket
import ssl

from .framing import encode_frame

_END = b"\x1c\r"


class MllpClient:
    def __init__(
        self, host: str, port: int, timeout_s: float = 30.0, tls: ssl.SSLContext | None = None
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout_s)
        self._sock = tls.wrap_socket(sock, server_hostname=host) if tls else sock
        self._buffer = b""

    def send(self, message: bytes) -> bytes:
        """Send one message; return the ACK payload (without framing)."""
        self._sock.sendall(encode_frame(message))
        while _END not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("listener closed the connection before acknowledging")
            self._buffer += chunk
        frame, self._buffer = self._buffer.split(_END, 1)
        return frame.lstrip(b"\x0b")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ack_code(ack: bytes) -> str:
    """MSA-1 of an ACK (AA, AE, AR, CA, CE, CR), or '' when there is no MSA."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.split(segment[3:4]) if len(segment) > 3 else []
            return fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
    return ""
