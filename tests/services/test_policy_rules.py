"""Stored policy rules: creating, replacing, ordering and removing them, the effective
policy and its version, the ``admin.policy.*`` entries, and changes racing each other
(two real store handles on one database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledgergate.core.policy.effective import PolicyError
from ledgergate.core.policy.engine import policy_version
from ledgergate.core.policy.rules import PolicySettings
from ledgergate.services import policy_rules as pr
from ledgergate.services.audit import verify_store
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.policy import describe
from ledgergate.store import PolicyRuleRow, Store
from tests.services.synth import T0, Ledger

FILE = PolicySettings.model_validate({"rules": [{"id": "no-ddl", "deny": {"kinds": ["ddl"]}}]})
DENY_DCL = {"deny": {"kinds": ["dcl"]}, "message": "grants go through tickets"}


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path)


@pytest.fixture
def st(led: Ledger) -> Store:
    return led.store()


@pytest.fixture
def w(led: Ledger, st: Store) -> LedgerWriter:
    # The API's and the CLI's shape: the writer shares the handle, so a change and its
    # entry commit together.
    return LedgerWriter.open(st, "api@gw", led.signer, shared=True, owns_store=False)


def _put(st: Store, w: LedgerWriter, rule_id: str, doc: Any, **kw: Any) -> pr.RuleChange:
    return pr.put_rule(st, w, FILE, rule_id, doc, now_ns=kw.pop("now_ns", T0), by="api:root", **kw)


def _ids(st: Store) -> list[str]:
    return [r.id for r in pr.load(st, FILE)[1].rules]


def _entries(st: Store, kind: str) -> list[dict[str, Any]]:
    return [json.loads(e.canonical) for e in st.find_entries(kinds=[kind])]


def test_put_creates_replaces_and_orders_rules_after_the_files(st: Store, w: LedgerWriter) -> None:
    v0 = policy_version(FILE)
    a = _put(st, w, "no-dcl", DENY_DCL)
    assert a.created and a.position == 0 and a.old_version == v0
    assert a.new_version == policy_version(pr.load(st, FILE)[1]) != v0
    _put(st, w, "mask-email", {"mask": {"columns": ["*.*.email"]}})
    _put(st, w, "first", {"deny": {"do_blocks": True}}, position=0)
    assert _ids(st) == ["no-ddl", "first", "no-dcl", "mask-email"]
    assert [r.position for r in st.list_policy_rules()] == [0, 1, 2]
    # replacing keeps the place unless told; a position past the end means last
    b = _put(st, w, "no-dcl", {**DENY_DCL, "message": "no"}, now_ns=T0 + 5)
    assert not b.created and b.position == 1 and _ids(st)[2] == "no-dcl"
    row = next(r for r in st.list_policy_rules() if r.id == "no-dcl")
    assert (row.created_ns, row.updated_ns, row.updated_by) == (T0, T0 + 5, "api:root")
    assert _put(st, w, "first", {"deny": {"do_blocks": True}}, position=99).position == 2
    assert _ids(st) == ["no-ddl", "no-dcl", "mask-email", "first"]
    epoch, eff, rows = pr.load(st, FILE)
    assert epoch == st.policy_epoch() >= 5  # at least once per change
    d = describe(pr.current(st, FILE)[0], rows)
    assert [(r["id"], r["source"]) for r in d["rules"]] == [
        ("no-ddl", "file"),
        ("no-dcl", "api"),
        ("mask-email", "api"),
        ("first", "api"),
    ]
    assert d["rules"][1]["stored"]["created_by"] == "api:root" and d["version"] == policy_version(
        eff
    )


def test_versions_chain_from_change_to_change_in_the_entries(
    led: Ledger, st: Store, w: LedgerWriter
) -> None:
    a = _put(st, w, "no-dcl", DENY_DCL)
    b = _put(st, w, "mask-email", {"mask": {"columns": ["*.*.email"]}})
    c = pr.delete_rule(st, w, FILE, "no-dcl", now_ns=T0 + 1, by="cli:ann")
    assert a.new_version == b.old_version and b.new_version == c.old_version
    assert c.new_version == policy_version(pr.load(st, FILE)[1])
    assert _ids(st) == ["no-ddl", "mask-email"] and st.list_policy_rules()[0].position == 0
    puts = _entries(st, "admin.policy.put")
    assert [(e["rule_id"], e["created"], e["by"]) for e in puts] == [
        ("no-dcl", True, "api:root"),
        ("mask-email", True, "api:root"),
    ]
    assert puts[0]["rule"]["deny"] == {"kinds": ["dcl"]} and puts[0]["position"] == 0
    assert (puts[1]["old_version"], puts[1]["new_version"]) == (a.new_version, b.new_version)
    (gone,) = _entries(st, "admin.policy.delete")
    assert gone["rule_id"] == "no-dcl" and gone["by"] == "cli:ann"
    assert gone["rule"]["message"] == "grants go through tickets"
    assert (gone["old_version"], gone["new_version"]) == (c.old_version, c.new_version)
    assert verify_store(st, [led.signer.verifier]).ok


def test_refused_changes_change_nothing(st: Store, w: LedgerWriter) -> None:
    with pytest.raises(pr.PolicyChangeError, match="belongs to the configuration file") as e:
        _put(st, w, "no-ddl", DENY_DCL)
    assert e.value.reason == "file rule"
    with pytest.raises(pr.PolicyChangeError, match="belongs to the configuration file") as e:
        pr.delete_rule(st, w, FILE, "no-ddl", now_ns=T0, by="x")
    assert e.value.reason == "file rule"
    with pytest.raises(pr.PolicyChangeError, match="no stored policy rule 'nope'") as e:
        pr.delete_rule(st, w, FILE, "nope", now_ns=T0, by="x")
    assert e.value.reason == "unknown rule"
    with pytest.raises(
        pr.PolicyChangeError, match=r"rule 'x': deny\.kinds: unknown statement"
    ) as e:
        _put(st, w, "x", {"deny": {"kinds": ["drop"]}})
    assert e.value.reason == "invalid"
    with pytest.raises(pr.PolicyChangeError, match="position"):
        _put(st, w, "x", DENY_DCL, position=-1)
    # a lone surrogate (JSON can spell one: "\ud800") has no place in a ledger entry
    with pytest.raises(pr.PolicyChangeError, match=r"rule 'x': .*not valid Unicode") as e:
        _put(st, w, "x", {**DENY_DCL, "message": "no \ud800"})
    assert e.value.reason == "invalid"
    assert st.list_policy_rules() == [] and st.policy_epoch() == 0
    assert _entries(st, "admin.policy.put") == []


def test_a_stored_rule_that_clashes_with_a_new_file_rule_can_still_be_removed(
    st: Store, w: LedgerWriter
) -> None:
    _put(st, w, "no-dcl", DENY_DCL)
    grown = PolicySettings.model_validate(
        {"rules": [*FILE.model_dump()["rules"], {"id": "no-dcl", "deny": {"kinds": ["dcl"]}}]}
    )
    with pytest.raises(PolicyError, match="'no-dcl': this id is already used"):
        pr.load(st, grown)
    with pytest.raises(pr.PolicyChangeError, match="already used") as e:
        pr.put_rule(st, w, grown, "other", DENY_DCL, now_ns=T0, by="x")
    assert e.value.reason == "invalid"
    c = pr.delete_rule(st, w, grown, "no-dcl", now_ns=T0, by="x")
    assert c.old_version is None and c.new_version == policy_version(grown)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "its stored body is not JSON"),
        ("[" * 100_000, "its stored body is not JSON"),  # nested past the JSON parser
        ('["deny"]', "its stored body is not a mapping"),
        ('{"deny": {"kinds": ["vacuum"]}}', r"deny\.kinds: unknown statement kind"),
    ],
)
def test_a_damaged_stored_rule_is_named_and_can_be_removed(
    st: Store, w: LedgerWriter, body: str, message: str
) -> None:
    _put(st, w, "no-dcl", DENY_DCL)
    st.put_policy_rule(PolicyRuleRow("broken", body, 1, T0, "x", T0, "x"))
    with pytest.raises(PolicyError, match=f"rule 'broken': .*{message}"):
        pr.load(st, FILE)
    with pytest.raises(pr.PolicyChangeError, match="rule 'broken'") as e:
        _put(st, w, "other", {"deny": {"do_blocks": True}})
    assert e.value.reason == "invalid"
    c = pr.delete_rule(st, w, FILE, "broken", now_ns=T0, by="x")
    assert c.old_version is None and c.new_version == policy_version(pr.load(st, FILE)[1])
    assert _ids(st) == ["no-ddl", "no-dcl"]


class _Racing:
    """A real store handle that lets another admin (a second real handle on the same
    database) change the rules right after this one first reads them."""

    def __init__(self, st: Store, other: Store, w: LedgerWriter) -> None:
        self._st, self._other, self._w, self.raced = st, other, w, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._st, name)

    def list_policy_rules(self) -> list[PolicyRuleRow]:
        rows = self._st.list_policy_rules()
        if not self.raced:
            self.raced += 1
            pr.put_rule(self._other, self._w, FILE, "theirs", DENY_DCL, now_ns=T0, by="api:eve")
        return rows


def test_a_change_racing_another_is_computed_again(led: Ledger, st: Store) -> None:
    other = led.store()
    their_w = LedgerWriter.open(other, "cli@gw", led.signer, shared=True, owns_store=False)
    racing = _Racing(st, other, their_w)
    w = LedgerWriter.open(st, "api@gw", led.signer, shared=True, owns_store=False)
    mine = pr.put_rule(racing, w, FILE, "mine", {"deny": {"do_blocks": True}}, now_ns=T0, by="a")  # type: ignore[arg-type]
    assert racing.raced == 1 and _ids(st) == ["no-ddl", "theirs", "mine"]
    (theirs,) = [e for e in _entries(st, "admin.policy.put") if e["rule_id"] == "theirs"]
    assert mine.old_version == theirs["new_version"]  # computed against their change
    assert mine.position == 1
