"""Policy rules and the policy epoch, on both engines (SQLite migration 3)."""

from __future__ import annotations

from pathlib import Path

from ledgergate.store import PolicyRuleRow, open_store
from tests.store.conftest import Opener
from tests.store.migrations import old_database


def _row(rule_id: str, position: int, body: str = '{"deny":{"kinds":["ddl"]}}') -> PolicyRuleRow:
    return PolicyRuleRow(rule_id, body, position, 10, "cli:ann", 20, "api:bob")


def test_rules_round_trip_in_order_and_every_change_raises_the_epoch(open_st: Opener) -> None:
    st = open_st()
    assert st.list_policy_rules() == [] and st.policy_epoch() == 0
    a, b, c = _row("a", 2), _row("b", 0), _row("c", 1, '{"mask":{"columns":["*.*.email"]}}')
    with st.transaction():
        for r in (a, b, c):
            st.put_policy_rule(r)
    assert st.list_policy_rules() == [b, c, a]
    assert st.policy_epoch() == 3
    moved = PolicyRuleRow("a", a.body, 0, a.created_ns, a.created_by, 30, "api:eve")
    st.put_policy_rule(moved)  # replaces by id
    assert [r.id for r in st.list_policy_rules()] == ["a", "b", "c"]  # ties: by id
    assert st.list_policy_rules()[0] == moved and st.policy_epoch() == 4
    assert st.delete_policy_rule("b") is True and st.policy_epoch() == 5
    assert st.delete_policy_rule("b") is False and st.policy_epoch() == 5
    e0 = st.access_epoch()
    st.put_policy_rule(_row("d", 9))
    assert st.access_epoch() == e0  # the two epochs are apart: no session re-check
    st.close()


def test_two_handles_see_each_others_changes(open_st: Opener) -> None:
    one, two = open_st(), open_st()
    one.put_policy_rule(_row("x", 0))
    assert two.policy_epoch() == 1 and [r.id for r in two.list_policy_rules()] == ["x"]
    one.close()
    two.close()


def test_a_version_2_database_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    raw = old_database(db, 2)
    raw.execute("INSERT INTO grants VALUES ('gr_1', '[\"*\"]', '[\"eng\"]', '[]', 1, 'cli')")
    raw.commit()
    raw.close()
    st = open_store(f"sqlite://{db}")
    assert [g.id for g in st.list_grants()] == ["gr_1"]
    assert st.list_policy_rules() == [] and st.policy_epoch() == 0
    st.put_policy_rule(_row("y", 0))
    assert st.policy_epoch() == 1
    st.close()
