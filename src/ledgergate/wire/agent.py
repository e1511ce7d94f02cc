"""The agent protocol's lines, sans-IO: bytes of one JSON line in, a message out; a
message in, the bytes of its line out.

An agent's connection to the gateway opens with one line (``Control`` or ``Leg``); on a
control connection the gateway answers with ``Answer`` and then sends ``Open`` lines.
After a ``Leg`` line the connection carries a backend leg's bytes, which this module
never sees. Anything else is an ``AgentLineError`` (the shell refuses that connection
alone). No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = [
    "AgentLineError",
    "Answer",
    "Control",
    "Leg",
    "Open",
    "encode",
    "parse_from_gateway",
    "parse_hello",
]


class AgentLineError(ValueError):
    """A line that is not one of the agent protocol's."""


@dataclass(frozen=True, slots=True)
class Control:
    token: str


@dataclass(frozen=True, slots=True)
class Leg:
    leg: str
    token: str
    error: str | None = None  # the agent could not reach the backend


@dataclass(frozen=True, slots=True)
class Open:
    leg: str
    connection: str
    # The server to reach, "HOST:PORT" as the backend advertised it (a Kafka broker);
    # None: the connection's own target. The agent carries only addresses it was given.
    address: str | None = None
    # The agent authenticates to the server with the credential it holds for this
    # connection (``credentials: agent:…``) before the leg carries the session.
    auth: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    agent: str | None = None
    error: str | None = None


Message = Control | Leg | Open | Answer


def _object(line: bytes) -> dict[str, object]:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise AgentLineError("the line is not JSON") from None
    if not isinstance(doc, dict):
        raise AgentLineError("the line is not a JSON object")
    return doc


def parse_hello(line: bytes) -> Control | Leg:
    """The first line an agent sends on a connection."""
    doc = _object(line)
    if isinstance(doc.get("control"), str):
        return Control(str(doc["control"]))
    leg, token, error = doc.get("leg"), doc.get("token"), doc.get("error")
    if isinstance(leg, str) and isinstance(token, str):
        return Leg(leg, token, error if isinstance(error, str) else None)
    raise AgentLineError("expected a control or a leg line")


def parse_from_gateway(line: bytes) -> Answer | Open | None:
    """A line the gateway sends an agent; None for one this agent does not know (a newer
    gateway may send more kinds)."""
    doc = _object(line)
    if isinstance(doc.get("open"), str):
        address = doc.get("address")
        return Open(
            str(doc["open"]),
            str(doc.get("connection")),
            address if isinstance(address, str) else None,
            doc.get("auth") is True,
        )
    if isinstance(doc.get("ok"), bool):
        agent, error = doc.get("agent"), doc.get("error")
        return Answer(
            bool(doc["ok"]),
            agent if isinstance(agent, str) else None,
            error if isinstance(error, str) else None,
        )
    return None


def encode(msg: Message) -> bytes:
    match msg:
        case Control(token=t):
            doc: dict[str, object] = {"control": t}
        case Leg(leg=leg, token=t, error=err):
            doc = {"leg": leg, "token": t}
            if err is not None:
                doc["error"] = err
        case Open(leg=leg, connection=c, address=addr, auth=auth):
            doc = {"open": leg, "connection": c}
            if addr is not None:
                doc["address"] = addr
            if auth:
                doc["auth"] = True
        case Answer(ok=ok, agent=a, error=err):
            doc = {"ok": ok}
            if a is not None:
                doc["agent"] = a
            if err is not None:
                doc["error"] = err
    return orjson.dumps(doc) + b"\n"
