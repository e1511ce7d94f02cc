"""RFC 5424 messages and RFC 6587 framing: the header's fields, escaping in structured
data, the UTF-8 message behind its BOM, and refusals of what the RFC does not allow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire import syslog
from ledgergate.wire.syslog import Element, SyslogError, frame, message

T = 1_790_000_000_123_456_789


def test_a_message_reads_as_rfc_5424() -> None:
    m = message(
        facility=syslog.FACILITY_AUTHPRIV,
        severity=syslog.SEVERITY_NOTICE,
        ts_ns=T,
        hostname="gw-1",
        app_name="ledgergate",
        msgid="checkpoint",
        data=[Element("checkpoint@32473", {"stream": "gateway@gw-1", "size": "42"})],
        msg="ledgergate-checkpoint abc=",
    )
    assert m == (
        b"<85>1 2026-09-21T14:13:20.123456Z gw-1 ledgergate - checkpoint "
        b'[checkpoint@32473 stream="gateway@gw-1" size="42"] \xef\xbb\xbfledgergate-checkpoint abc='
    )
    assert frame(m) == str(len(m)).encode() + b" " + m


def test_nil_values_and_no_message() -> None:
    m = message(facility=1, severity=6, ts_ns=0, hostname=None, app_name=None)
    assert m == b"<14>1 1970-01-01T00:00:00.000000Z - - - - -"


def test_structured_data_values_are_escaped() -> None:
    m = message(
        facility=1, severity=6, ts_ns=0, hostname="h", app_name="a",
        data=[Element("x@32473", {"v": 'a"b\\c]d'})],
    )  # fmt: skip
    assert b'[x@32473 v="a\\"b\\\\c\\]d"]' in m


@pytest.mark.parametrize(
    "kw",
    [
        {"hostname": "has space"},
        {"app_name": "a" * 49},
        {"msgid": "caf\u00e9"},
        {"facility": 24},
        {"severity": 8},
        {"data": [Element("bad id", {})]},
        {"data": [Element("ok@1", {"bad=name": "v"})]},
    ],
)
def test_what_the_rfc_forbids_is_refused(kw: dict) -> None:
    args = {"facility": 1, "severity": 6, "ts_ns": 0, "hostname": "h", "app_name": "a", **kw}
    with pytest.raises(SyslogError):
        message(**args)


@given(st.text(max_size=200), st.text(max_size=100))
def test_any_text_makes_a_well_framed_message(msg: str, value: str) -> None:
    m = message(
        facility=10, severity=5, ts_ns=T, hostname="h", app_name="a",
        data=[Element("x@32473", {"v": value})], msg=msg,
    )  # fmt: skip
    framed = frame(m)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(m)
    assert b"\n" not in m.split(b"\xef\xbb\xbf")[0]  # the header is one line
