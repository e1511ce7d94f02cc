"""SSH exec command lines against rules' ``commands`` patterns, argv-aware."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.policy.engine import PolicySet
from ledgergate.core.policy.rules import PolicySettings
from ledgergate.core.policy.ssh import (
    UnreadableCommand,
    argv_matches,
    check_exec,
    check_sftp,
    simple_commands,
)


@pytest.mark.parametrize(
    ("line", "commands"),
    [
        ("ls -la /tmp", [["ls", "-la", "/tmp"]]),
        ("sudo -u root rm -rf /", [["rm", "-rf", "/"]]),
        ("echo hi; rm -f -r /x && true", [["echo", "hi"], ["rm", "-f", "-r", "/x"], ["true"]]),
        (
            "bash -c 'kubectl -n prod delete pod x'",
            [["kubectl", "-n", "prod", "delete", "pod", "x"]],
        ),
        ("cat $(which rm) > /tmp/o", [["which", "rm"], ["cat", "$SUBSTITUTION"]]),
        ("FOO=1 env BAR=2 nohup rm -rf /a &", [["rm", "-rf", "/a"]]),
        ("timeout 5 sh -c 'a | b'", [["a"], ["b"]]),
        ("echo 'rm -rf /'", [["echo", "rm -rf /"]]),  # a quoted argument is not a command
    ],
)
def test_a_line_is_read_into_its_simple_commands(line: str, commands: list[list[str]]) -> None:
    assert simple_commands(line) == commands


@pytest.mark.parametrize(
    ("pattern", "argv", "matches"),
    [
        ("rm -rf *", ["rm", "-f", "-r", "/tmp"], True),
        ("rm -rf *", ["/bin/rm", "-fr", "x"], True),
        ("rm -rf *", ["rm", "-r", "x"], False),  # -f missing
        ("rm -rf *", ["rmdir", "-rf"], False),
        ("kubectl * delete *", ["kubectl", "-n", "prod", "delete", "pod", "x"], True),
        ("kubectl delete *", ["kubectl", "get", "pods"], False),
        ("systemctl stop *", ["systemctl", "--now", "stop", "nginx"], True),
        ("git push --force *", ["git", "push", "origin", "--force"], True),
        ("git push --force *", ["git", "push", "origin"], False),
        ("psql", ["psql", "-c", "select 1"], False),  # no trailing * : exactly psql
        ("psql *", ["psql", "-c", "select 1"], True),
    ],
)
def test_argv_matching(pattern: str, argv: list[str], matches: bool) -> None:
    assert argv_matches(pattern, argv) is matches


def _policy(*rules: dict[str, object]) -> PolicySet:
    return PolicySet(PolicySettings.model_validate({"rules": list(rules)}))


def test_exec_decisions_deny_allow_and_unreadable() -> None:
    ps = _policy(
        {"id": "no-rm", "deny": {"commands": ["rm -rf *"]}},
        {"id": "ops", "allow": [{"commands": ["ls *", "cat *", "rm *", "systemctl status *"]}]},
    )
    sp = ps.for_session("web", ())
    assert check_exec(sp, "ls -la").allowed
    assert check_exec(sp, "ls; cat /etc/hosts").allowed
    d = check_exec(sp, "ls && rm -fr /srv")
    assert not d.allowed and d.rule == "no-rm"
    d = check_exec(sp, "ls | wc -l")  # wc is not allowed
    assert not d.allowed and d.rule == "ops"
    d = check_exec(sp, "echo 'unclosed")
    assert not d.allowed and d.rule == "policy.unparseable"
    assert check_exec(sp, "echo 'unclosed", unparseable="allow").allowed
    assert check_exec(None, "anything at all").allowed


def test_sftp_decisions_by_operation_and_path() -> None:
    ps = _policy({"id": "ro-etc", "deny": {"operations": ["write"], "paths": ["/etc/*"]}})
    sp = ps.for_session("web", ())
    assert check_sftp(sp, "open-read", ("/etc/passwd",)).allowed
    d = check_sftp(sp, "remove", ("/etc/hosts",))
    assert not d.allowed and d.rule == "ro-etc"
    d = check_sftp(sp, "rename", ("/tmp/a", "/etc/a"))
    assert not d.allowed
    assert check_sftp(sp, "write", ("/tmp/x",)).allowed


def test_a_bad_pattern_is_refused_when_the_policy_loads() -> None:
    with pytest.raises(ValueError, match="command pattern"):
        PolicySettings.model_validate({"rules": [{"id": "x", "deny": {"commands": ["rm '"]}}]})


@given(st.text(max_size=200))
def test_reading_never_fails_but_with_unreadable(line: str) -> None:
    with contextlib.suppress(UnreadableCommand):  # anything else fails the test
        simple_commands(line)


def test_forwarding_is_refused_unless_an_allow_rule_names_it() -> None:
    from ledgergate.core.policy.ssh import check_channel, check_forward

    assert not check_forward(None, "db:5432").allowed
    assert not check_forward(_policy().for_session("web", ()), "db:5432").allowed
    ps = _policy(
        {"id": "tunnel", "allow": [{"operations": ["port-forward"], "paths": ["db:5432"]}]},
        {"id": "no-rm", "deny": {"commands": ["rm -rf *"]}},
    )
    sp = ps.for_session("web", ())
    assert check_forward(sp, "db:5432").allowed
    d = check_forward(sp, "db:22")
    assert not d.allowed and "db:22" in (d.message or "")
    # an allow rule that only opens a tunnel makes no allow-list of commands or SFTP
    assert check_exec(sp, "ls -la").allowed and not check_exec(sp, "rm -rf /").allowed
    assert check_sftp(sp, "write", ("/tmp/x",)).allowed
    assert check_channel(sp, "shell").allowed


# Lines a reviewer found going around ``rm -rf *`` (each must be refused: matched, or
# unreadable, which a guarded connection refuses).
BYPASSES = [
    "echo hi\nrm -rf /tmp/x",
    "{ rm -rf /tmp/x; }",
    "if true; then rm -rf /tmp/x; fi",
    "for i in 1; do rm -rf /tmp/x; done",
    "while true; do rm -rf /x; done",
    "case x in x) rm -rf /;; esac",
    "! rm -rf /tmp/x",
    "eval rm -rf /tmp/x",
    "bash -lc 'rm -rf /tmp/x'",
    "sh -ec 'rm -rf /tmp/x'",
    "$(echo rm) -rf /tmp/x",
    "X=rm; $X -rf /tmp/x",
    "busybox rm -rf /tmp/x",
    "su -c 'rm -rf /tmp/x'",
    "sudo --user root rm -rf /tmp/x",
    "sudo -E -u root -- rm -rf /",
    "nice -n 10 rm -rf /tmp/x",
    "timeout -s KILL 5 rm -rf /tmp/x",
    "env -u HOME rm -rf /tmp/x",
    "xargs -n 1 rm -rf",
    "cat <(rm -rf /tmp/x)",
    "bash <<EOF\nrm -rf /tmp/x\nEOF",
    "$'\\x72m' -rf /tmp/x",
    "/bin/r? -rf /tmp/x",
    "rm --recursive --force /tmp/x",
    "setsid rm -rf /tmp/x",
    "true &&\nrm -rf /tmp/x",
    "echo a|&rm -rf /tmp/x",
]


@pytest.mark.parametrize("line", BYPASSES)
def test_shell_syntax_does_not_go_around_a_guardrail(line: str) -> None:
    sp = _policy({"id": "no-rm", "deny": {"commands": ["rm -rf *"]}}).for_session("web", ())
    d = check_exec(sp, line)
    assert not d.allowed and d.rule in ("no-rm", "policy.unparseable"), (line, d)


def test_an_allow_list_holds_for_every_command_of_a_line() -> None:
    sp = _policy({"id": "ro", "allow": [{"commands": ["ls *", "ls"]}]}).for_session("web", ())
    assert check_exec(sp, "ls -la /srv").allowed
    for line in ("ls\nrm -rf /", "bash /tmp/evil.sh -c ls", "ls; $(curl x)"):
        assert not check_exec(sp, line).allowed, line


def test_sftp_paths_are_normalised_and_the_unresolvable_refused() -> None:
    from ledgergate.core.policy.ssh import sftp_path

    assert sftp_path("//etc/x", None) == "/etc/x"
    assert sftp_path("/tmp/../etc/./x", None) == "/etc/x"
    assert sftp_path("../etc/x", "/home/lgssh") == "/home/etc/x"
    assert sftp_path("x", None) is None  # relative, and the working directory unknown
    sp = _policy({"id": "ro-etc", "deny": {"operations": ["write"], "paths": ["/etc/*"]}})
    guarded = sp.for_session("web", ())
    d = check_sftp(guarded, "write", (None,), modifies=True)
    assert not d.allowed and d.rule == "policy.unparseable"
    d = check_sftp(
        guarded, "extended:posix-rename@openssh.com", ("/tmp/a", "/etc/a"), modifies=True
    )
    assert not d.allowed and d.rule == "ro-etc"
    assert check_sftp(None, "write", (None,), modifies=True).allowed  # no rules: nothing to decide
