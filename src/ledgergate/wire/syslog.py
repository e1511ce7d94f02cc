"""Syslog messages, sans-IO: RFC 5424 message text and RFC 6587 octet-counted framing
for syslog over TCP/TLS (RFC 5425), and the reverse for reading them back.

Owns the format only: header fields are checked (printable US-ASCII, their RFC lengths),
structured-data values are escaped (``"``, ``\\`` and ``]``), and the message is UTF-8
behind a BOM as RFC 5424 asks. No sockets, no clock: the time comes in as nanoseconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "FACILITY_AUTHPRIV",
    "SEVERITY_INFO",
    "SEVERITY_NOTICE",
    "Element",
    "SyslogError",
    "frame",
    "message",
]

FACILITY_AUTHPRIV = 10  # security/authorization messages (RFC 5424 table 1)
SEVERITY_NOTICE = 5
SEVERITY_INFO = 6
_BOM = b"\xef\xbb\xbf"
# RFC 5424 6.2: HOSTNAME ≤ 255, APP-NAME ≤ 48, PROCID ≤ 128, MSGID ≤ 32, SD-NAME ≤ 32.
_LIMITS = {"hostname": 255, "app_name": 48, "procid": 128, "msgid": 32}


class SyslogError(ValueError):
    """A field that RFC 5424 does not allow."""


@dataclass(frozen=True, slots=True)
class Element:
    """One SD-ELEMENT: ``[id name="value" ...]``."""

    id: str
    params: Mapping[str, str]


def _header_field(name: str, value: str | None) -> str:
    if value is None or value == "":
        return "-"
    if len(value) > _LIMITS[name] or any(not ("!" <= c <= "~") for c in value):
        raise SyslogError(f"syslog {name} must be 1-{_LIMITS[name]} printable ASCII characters")
    return value


def _sd_name(value: str) -> str:
    if not 1 <= len(value) <= 32 or any(not ("!" <= c <= "~") or c in '= ]"' for c in value):
        raise SyslogError(f"syslog SD-NAME {value!r} is not 1-32 printable characters")
    return value


def _sd_value(value: str) -> str:
    # RFC 5424 6.3.3 escapes '"', '\\' and ']'; control characters (a newline would
    # split the message for line-based receivers) become spaces.
    value = "".join(" " if c < " " or c == "\x7f" else c for c in value)
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _timestamp(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns // 1000 / 1e6, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def message(
    *,
    facility: int,
    severity: int,
    ts_ns: int,
    hostname: str | None,
    app_name: str | None,
    procid: str | None = None,
    msgid: str | None = None,
    data: Sequence[Element] = (),
    msg: str = "",
) -> bytes:
    """One RFC 5424 SYSLOG-MSG."""
    if not 0 <= facility <= 23 or not 0 <= severity <= 7:
        raise SyslogError("syslog facility is 0-23 and severity 0-7")
    sd = "".join(
        f"[{_sd_name(e.id)}"
        + "".join(f' {_sd_name(k)}="{_sd_value(v)}"' for k, v in e.params.items())
        + "]"
        for e in data
    )
    head = (
        f"<{facility * 8 + severity}>1 {_timestamp(ts_ns)} "
        f"{_header_field('hostname', hostname)} {_header_field('app_name', app_name)} "
        f"{_header_field('procid', procid)} {_header_field('msgid', msgid)} {sd or '-'}"
    )
    out = head.encode("utf-8")  # the header fields are ASCII; SD values are UTF-8
    if msg:
        out += b" " + _BOM + msg.encode("utf-8")
    return out


def frame(msg: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(msg)).encode("ascii") + b" " + msg
