"""sasl.py: the client's SASL/PLAIN and SASL/OAUTHBEARER messages, as librdkafka and the
Java client build them, and malformed ones refused without echoing the credential."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.kafka.sasl import SaslError, read_oauthbearer, read_plain

TOKEN = "lg_tok_s3cret"


def test_plain() -> None:
    h = read_plain(b"\x00etl\x00" + TOKEN.encode())
    assert (h.user, h.credential) == ("etl", TOKEN)
    assert read_plain(b"admin\x00\x00" + TOKEN.encode()).user == "admin"


def test_oauthbearer_as_clients_send_it() -> None:
    # librdkafka and the Java client: gs2 header "n,," (or with a=), then kvpairs.
    h = read_oauthbearer(b"n,,\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01")
    assert (h.user, h.credential) == ("", TOKEN)
    h = read_oauthbearer(
        b"n,a=etl=2Cx,\x01host=gw\x01auth=Bearer " + TOKEN.encode() + b"\x01traceId=1\x01\x01"
    )
    assert h.user == "etl,x" and h.credential == TOKEN
    assert h.extensions == (("host", "gw"), ("traceId", "1"))


@pytest.mark.parametrize(
    "msg",
    [
        b"",
        b"\x00user",
        b"\x00user\x00",
        b"a\x00b\x00c\x00d",
        b"\x00u\x00\xff\xfe",
    ],
)
def test_bad_plain(msg: bytes) -> None:
    with pytest.raises(SaslError) as e:
        read_plain(msg)
    assert TOKEN not in str(e.value)


@pytest.mark.parametrize(
    "msg",
    [
        b"",
        b"n,,",
        b"n,,\x01auth=Bearer x\x01",  # not terminated by ^A^A
        b"p=tls-unique,,\x01auth=Bearer x\x01\x01",  # channel binding
        b"n,,\x01auth=Basic x\x01\x01",
        b"n,,\x01auth=Bearer \x01\x01",
        b"n,,\x01host=gw\x01\x01",
        b"n,,\x01bad key=1\x01\x01",
    ],
)
def test_bad_oauthbearer(msg: bytes) -> None:
    with pytest.raises(SaslError):
        read_oauthbearer(msg)


def test_token_never_in_errors() -> None:
    with pytest.raises(SaslError) as e:
        read_oauthbearer(b"n,,\x01auth=Basic " + TOKEN.encode() + b"\x01\x01")
    assert TOKEN not in str(e.value)


def test_too_long() -> None:
    with pytest.raises(SaslError):
        read_plain(b"\x00u\x00" + b"x" * 20000)


@given(st.binary(max_size=200))
def test_only_sasl_errors(data: bytes) -> None:
    for read in (read_plain, read_oauthbearer):
        with contextlib.suppress(SaslError):
            read(data)
