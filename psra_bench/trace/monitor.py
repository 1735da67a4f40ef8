"""Exact parsing of Redis/Valkey ``MONITOR`` lines: ``<sec>.<usec> [<db> <client>] "<cmd>" "<arg>" …``.

Each argument is double-quoted and escaped as the server's ``sdscatrepr`` writes it: ``\\\\``,
``\\"``, ``\\n``, ``\\r``, ``\\t``, ``\\a``, ``\\b`` and ``\\xHH`` for any other byte outside printable
ASCII. Arguments are returned as text (the bytes decoded as UTF-8, undecodable bytes replaced), the
command name lower-cased. A line that does not have this shape is :class:`UnreadableLine`; the
server's ``OK`` greeting is skipped by the caller.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["MonitorLine", "UnreadableLine", "parse_line", "unescape"]

_HEAD = re.compile(r"(\d+)\.(\d{1,6}) \[(\d+) ([^\]]*)\]")
_ARG = re.compile(r' "((?:[^"\\]|\\.)*)"', re.S)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)", re.S)
_SIMPLE = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b"}


class UnreadableLine(ValueError):
    """A MONITOR line that does not have the documented shape (the importer counts and quotes it)."""

    def __init__(self, line: str, why: str) -> None:
        self.line = line
        self.why = why
        super().__init__(f"the MONITOR line {line[:120]!r} cannot be read: {why}")


class MonitorLine(NamedTuple):
    """One command as MONITOR showed it."""

    #: Server time, seconds since the epoch (microsecond resolution).
    time: float
    db: int
    #: ``ip:port``, ``unix:/path``, or ``lua`` for a command run inside a script.
    client: str
    #: The command name, lower-cased (``get``, ``evalsha`` …).
    command: str
    #: The arguments after the command name, unescaped.
    args: tuple[str, ...]


def _replace(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) == 3:
        return chr(int(code[1:], 16))
    simple = _SIMPLE.get(code)
    if simple is None:
        raise ValueError(f"unknown escape \\{code}")
    return simple


def unescape(text: str) -> str:
    """One MONITOR argument's text (between its quotes) unescaped; ValueError on an unknown escape."""
    if "\\" not in text:
        return text
    raw = _ESCAPE.sub(_replace, text)
    return raw.encode("latin-1").decode("utf-8", "replace")


def parse_line(line: str) -> MonitorLine:
    """One MONITOR line parsed exactly (see the module doc); :class:`UnreadableLine` when it is not one."""
    text = line.rstrip("\r\n")
    head = _HEAD.match(text)
    if head is None:
        raise UnreadableLine(text, 'it does not start with "<sec>.<usec> [<db> <client>]"')
    pos = head.end()
    args: list[str] = []
    for match in _ARG.finditer(text, pos):
        if match.start() != pos:
            break
        try:
            args.append(unescape(match.group(1)))
        except (ValueError, UnicodeEncodeError) as e:
            raise UnreadableLine(text, str(e)) from None
        pos = match.end()
    if pos != len(text) or not args:
        raise UnreadableLine(text, "its arguments are not a sequence of double-quoted strings")
    sec, usec, db, client = head.groups()
    return MonitorLine(int(sec) + int(usec.ljust(6, "0")) / 1e6, int(db), client, args[0].lower(), tuple(args[1:]))
