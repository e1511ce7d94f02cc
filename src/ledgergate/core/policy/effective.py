"""The effective policy: the configuration file's rules first, then the rules kept in the
store (added through the API or the CLI), in their order.

Owns the shape of a rule document as an admin sends it (the rule without its id, or
with the same id), combining the file's policy section with the stored rules, and
validating the result as a whole with the models of ``core.policy.rules``: errors name
the rule and the bad key, as the configuration's do. Rule ids are unique across both
sources. Pure: reading the store is ``services``' business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from ledgergate.core.policy.rules import PolicyRule, PolicySettings

__all__ = ["PolicyError", "combine", "rule_document"]


class PolicyError(ValueError):
    """A rule or a policy that cannot be used; the message names the rule and the key."""


def _explain(e: ValidationError, where: Callable[[tuple[int | str, ...]], str]) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{where(loc)}{msg}")
    return "; ".join(lines)


def _key(loc: Sequence[int | str]) -> str:
    return (".".join(str(p) for p in loc) + ": ") if loc else ""


def rule_document(rule_id: str, doc: object) -> dict[str, Any]:
    """The stored form of a rule sent for ``rule_id``: checked alone, without its id,
    every setting spelled out (so a later change of a default does not change it)."""
    if not isinstance(doc, Mapping):
        raise PolicyError(f"rule {rule_id!r}: a rule is a mapping of keys to values")
    body = {str(k): v for k, v in doc.items()}
    given = body.pop("id", rule_id)
    if given != rule_id:
        raise PolicyError(f"rule {rule_id!r}: its body names another id ({given!r})")
    try:
        rule = PolicyRule.model_validate({"id": rule_id, **body})
    except ValidationError as e:
        raise PolicyError(_explain(e, lambda loc: f"rule {rule_id!r}: {_key(loc)}")) from None
    return rule.model_dump(mode="json", exclude={"id"}, exclude_none=True)


def combine(
    file: PolicySettings, stored: Sequence[tuple[str, Mapping[str, Any]]]
) -> PolicySettings:
    """The file's policy section with the stored rules (id, body) after its own rules.
    Without stored rules this is the file's section itself (same version as before)."""
    if not stored:
        return file
    owner = {r.id: "the configuration file" for r in file.rules}
    for rule_id, _ in stored:
        if rule_id in owner:
            raise PolicyError(
                f"rule {rule_id!r}: this id is already used by a rule of {owner[rule_id]}"
            )
        owner[rule_id] = "the store"
    ids = [r.id for r in file.rules] + [rule_id for rule_id, _ in stored]

    def where(loc: tuple[int | str, ...]) -> str:
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] < len(ids):
            return f"rule {ids[loc[1]]!r}: {_key(loc[2:])}"
        return _key(loc)

    doc: dict[str, Any] = file.model_dump(mode="json", exclude={"rules"})
    doc["rules"] = [*file.rules, *({**dict(body), "id": rule_id} for rule_id, body in stored)]
    try:
        return PolicySettings.model_validate(doc)
    except ValidationError as e:
        raise PolicyError(_explain(e, where)) from None
