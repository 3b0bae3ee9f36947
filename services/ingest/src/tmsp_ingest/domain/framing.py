"""Syslog stream framing: RFC 5425 octet counting and RFC 6587 newline framing.

A frame starting with a digit is octet-counted (``MSG-LEN SP SYSLOG-MSG``); anything else
runs to the next LF. The decoder is fed bytes as they arrive and yields whole messages;
frames longer than ``max_frame`` and malformed lengths raise :class:`FramingError` (the
stream cannot be resynchronised after that, so the connection is closed).
"""

from __future__ import annotations


class FramingError(ValueError):
    pass


class FrameDecoder:
    def __init__(self, max_frame: int = 64 * 1024) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while buf:
            first = buf[0]
            if 0x30 <= first <= 0x39:
                space = buf.find(b" ", 0, 12)
                if space == -1:
                    if len(buf) >= 12 or not bytes(buf).isdigit():
                        raise FramingError("bad octet count")
                    break
                digits = bytes(buf[:space])
                if not digits.isdigit() or (len(digits) > 1 and digits[0] == 0x30):
                    raise FramingError("bad octet count")
                length = int(digits)
                if length == 0 or length > self.max_frame:
                    raise FramingError(f"frame length {length} outside 1..{self.max_frame}")
                end = space + 1 + length
                if len(buf) < end:
                    break
                out.append(bytes(buf[space + 1 : end]))
                del buf[:end]
            elif first in (0x0A, 0x0D, 0x20, 0x00):
                del buf[:1]  # stray separators between frames
            else:
                newline = buf.find(b"\n")
                if newline == -1:
                    if len(buf) > self.max_frame:
                        raise FramingError(f"line longer than {self.max_frame} bytes")
                    break
                if newline > self.max_frame:
                    raise FramingError(f"line longer than {self.max_frame} bytes")
                out.append(bytes(buf[:newline]).rstrip(b"\r"))
                del buf[: newline + 1]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
