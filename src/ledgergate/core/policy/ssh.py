"""Guardrails, allow-lists and review conditions for SSH exec commands and SFTP.

Owns what a rule's ``commands`` patterns mean for an exec command line, argv-aware:

- The line is split as a POSIX shell splits words (quotes, escapes) into its simple
  commands: ``;``, ``&&``, ``||``, ``|``, ``&`` and parentheses separate them,
  redirections (``> file``) are dropped, command substitutions (``$(…)`` and
  backquotes) are commands too, and ``sh -c 'script'`` (bash, zsh, dash) is read into
  its own commands. Leading ``VAR=value`` words and the wrappers ``sudo`` (with its
  options), ``env``, ``nohup``, ``nice``, ``time``, ``timeout N``, ``exec``, ``command``
  and ``xargs`` are looked through: ``sudo -u root rm -rf /`` is ``rm -rf /`` too.
- A pattern is split the same way. Its flags (words starting with ``-``) must all be
  among the command's, in any order, clusters expanded (``-rf`` is ``-r`` and ``-f``,
  so ``rm -rf *`` matches ``rm -f -r /tmp``). Its other words are matched against the
  command's other words in order, each a glob (``fnmatch``), where a ``*`` word stands
  for any number of words (``kubectl * delete *`` matches ``kubectl -n prod delete pod
  x``). The first word matches the program's path or its base name (``rm`` matches
  ``/bin/rm``).

A line that cannot be split (an unclosed quote) is "unreadable": on a connection where
rules about commands apply it is refused (fail closed, ``policy.unparseable``). A line is
refused if any of its commands matches a guardrail; where allow rules apply, each of its
commands must match one. SFTP operations are decided on their ``operations`` (the
operation's name: ``write``, ``remove``, ``rename``, ``mkdir``, …, and its class:
``read``/``write``) and ``paths`` (the file's path). Pure.
"""

from __future__ import annotations

import copy
import re
import shlex
import weakref
from fnmatch import fnmatchcase

from ledgergate.core.policy.engine import ALLOW, Decision, SessionPolicy
from ledgergate.core.policy.http import RequestView, request_matches
from ledgergate.core.policy.rules import PolicyRule

__all__ = [
    "UnreadableCommand",
    "argv_matches",
    "check_channel",
    "check_exec",
    "check_forward",
    "check_sftp",
    "simple_commands",
]

# Nesting of ``sh -c`` and command substitutions read at most this deep; a line nested
# deeper is unreadable (nobody types that by hand; it is how one hides a command).
MAX_DEPTH = 4
# Simple commands read from one line at most.
MAX_COMMANDS = 256

_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "busybox"})
_WRAPPERS = frozenset({"env", "nohup", "nice", "time", "exec", "command", "xargs", "stdbuf"})
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", "|&", ";;", "\n"})
_REDIRECTS = re.compile(r"^\d*(<|>|>>|<<|<<<|&>|>&|<&|&>>)$")
_SUBST = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# sudo options that take a value (sudo -u root cmd).
_SUDO_VALUE = frozenset("ugpCrtUhDRT")
_SFTP_WRITES = frozenset(
    {"write", "remove", "rename", "mkdir", "rmdir", "setstat", "fsetstat", "symlink", "link"}
)


class UnreadableCommand(ValueError):
    """A command line the gateway cannot split into commands."""


def _words(text: str) -> list[str]:
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lex.whitespace_split = True
    lex.commenters = ""
    try:
        return list(lex)
    except ValueError as e:
        raise UnreadableCommand(f"cannot read the command line: {e}") from None


def _unwrap(argv: list[str]) -> list[str]:
    """The command a wrapper runs (``sudo -u x cmd`` → ``cmd``), repeatedly."""
    while argv:
        while argv and _ASSIGN.match(argv[0]):
            argv = argv[1:]
        if not argv:
            return argv
        name = argv[0].rsplit("/", 1)[-1]
        if name == "sudo":
            i = 1
            while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
                flag = argv[i]
                i += 1
                if len(flag) == 2 and flag[1] in _SUDO_VALUE:
                    i += 1  # its value
            if i < len(argv) and argv[i] == "--":
                i += 1
            argv = argv[i:]
        elif name == "timeout":
            i = 1
            while i < len(argv) and argv[i].startswith("-"):
                i += 1
            argv = argv[i + 1 :]  # past its duration
        elif name in _WRAPPERS:
            i = 1
            while i < len(argv) and (argv[i].startswith("-") or _ASSIGN.match(argv[i])):
                i += 1
            argv = argv[i:]
        else:
            return argv
    return argv


def simple_commands(text: str, depth: int = 0) -> list[list[str]]:
    """The argv of every simple command a shell would run for ``text``; raises
    ``UnreadableCommand`` when it cannot be split."""
    if depth > MAX_DEPTH:
        raise UnreadableCommand("the command line nests shells or substitutions too deep")
    out: list[list[str]] = []
    for m in _SUBST.finditer(text):
        out.extend(simple_commands(m.group(1) or m.group(2) or "", depth + 1))
    cur: list[str] = []
    skip = False
    for w in _words(_SUBST.sub(" ", text)):
        if skip:
            skip = False
            continue
        if w in _SEPARATORS or set(w) <= set(";&|()"):
            if cur:
                out.append(cur)
            cur = []
        elif _REDIRECTS.match(w) or set(w) <= set("<>&"):
            skip = True  # the redirection's target
        else:
            cur.append(w)
    if cur:
        out.append(cur)
    result: list[list[str]] = []
    for argv in out:
        argv = _unwrap(argv)
        if not argv:
            continue
        name = argv[0].rsplit("/", 1)[-1]
        if name in _SHELLS and "-c" in argv[1:]:
            i = argv.index("-c", 1)
            if i + 1 < len(argv):
                result.extend(simple_commands(argv[i + 1], depth + 1))
                continue
        result.append(argv)
        if len(result) > MAX_COMMANDS:
            raise UnreadableCommand("the command line holds too many commands")
    return result


def _flags(words: list[str]) -> tuple[set[str], list[str]]:
    """(the flags, the other words); ``--`` ends the flags."""
    flags: set[str] = set()
    rest: list[str] = []
    ended = False
    for w in words:
        if ended or not w.startswith("-") or w == "-":
            rest.append(w)
        elif w == "--":
            ended = True
        elif w.startswith("--"):
            flags.add(w.split("=", 1)[0])
        else:
            flags.update(f"-{c}" for c in w[1:])
    return flags, rest


def _glob_words(pat: list[str], words: list[str]) -> bool:
    if not pat:
        return not words
    if pat[0] == "*":
        return any(_glob_words(pat[1:], words[i:]) for i in range(len(words) + 1))
    return bool(words) and fnmatchcase(words[0], pat[0]) and _glob_words(pat[1:], words[1:])


def argv_matches(pattern: str, argv: list[str]) -> bool:
    """Does the command ``argv`` match the pattern (see the module's rules)?"""
    pwords = shlex.split(pattern)
    if not pwords or not argv:
        return False
    first, prog = pwords[0], argv[0]
    if not (fnmatchcase(prog, first) or fnmatchcase(prog.rsplit("/", 1)[-1], first)):
        return False
    pflags, pops = _flags(pwords[1:])
    aflags, aops = _flags(argv[1:])
    return pflags <= aflags and _glob_words(pops, aops)


def _forward_only(rule: PolicyRule) -> bool:
    return all(
        c.operations is not None and set(c.operations) == {"port-forward"} for c in rule.allow or ()
    )


_WITHOUT_FORWARDS: weakref.WeakKeyDictionary[SessionPolicy, SessionPolicy] = (
    weakref.WeakKeyDictionary()
)


def _sessions_policy(sp: SessionPolicy | None) -> SessionPolicy | None:
    """``sp`` without the allow rules that only let port forwarding through: those open
    a way, they do not make commands and SFTP an allow-list."""
    if sp is None or not any(_forward_only(r) for r in sp.request_allow):
        return sp
    got = _WITHOUT_FORWARDS.get(sp)
    if got is None:
        got = copy.copy(sp)
        got.request_allow = [r for r in sp.request_allow if not _forward_only(r)]
        got.requests_guarded = bool(got.request_deny or got.request_allow or got.request_review)
        _WITHOUT_FORWARDS[sp] = got
    return got


def check_exec(sp: SessionPolicy | None, text: str, *, unparseable: str = "deny") -> Decision:
    """The decision on an exec command line (``ALLOW`` where no rule is about requests)."""
    sp = _sessions_policy(sp)
    if sp is None or not sp.requests_guarded:
        return ALLOW
    try:
        commands = simple_commands(text)
    except UnreadableCommand as e:
        if unparseable == "allow":
            return ALLOW
        return Decision(False, "policy.unparseable", f"refused: {e}")
    review: Decision | None = None
    for argv in commands or [[""]]:
        d = sp.check_request(
            RequestView(method="", operation="exec", path="", action="exec", argv=tuple(argv))
        )
        if not d.allowed:
            return d
        if d.review is not None and review is None:
            review = d
    return review or ALLOW


def check_forward(sp: SessionPolicy | None, where: str) -> Decision:
    """Port forwarding to ``where`` (HOST:PORT as the host would connect): refused unless
    an allow rule's clause names the ``port-forward`` operation and matches ``where`` in
    its ``paths``; a guardrail can still refuse it."""
    refused = Decision(
        False, "ssh.forwarding", f"port forwarding to {where} is not allowed on this connection"
    )
    if sp is None:
        return refused
    view = RequestView(method="", operation="port-forward", path=where, action="forward")
    others = _sessions_policy(sp)  # the guardrails and the other allow rules
    assert others is not None
    d = others.check_request(view) if others.requests_guarded else ALLOW
    if not d.allowed:
        return d
    for rule in sp.request_allow:
        for clause in rule.allow or ():
            if (
                clause.operations is not None
                and "port-forward" in clause.operations
                and request_matches(clause, view)
            ):
                return d
    return refused


def check_channel(sp: SessionPolicy | None, op: str) -> Decision:
    """A session channel's request other than exec (``shell``, ``sftp``) by its name."""
    sp = _sessions_policy(sp)
    if sp is None or not sp.requests_guarded:
        return ALLOW
    return sp.check_request(RequestView(method="", operation=op, path="", action=op))


def check_sftp(
    sp: SessionPolicy | None, op: str, paths: tuple[str, ...], *, modifies: bool | None = None
) -> Decision:
    """The decision on one SFTP operation on ``paths`` (a rename names two); ``modifies``
    (as the SFTP tracker says: an OPEN for writing, an extension that may change files)
    classes it as ``write``, else the operation's name does."""
    sp = _sessions_policy(sp)
    if sp is None or not sp.requests_guarded:
        return ALLOW
    writes = modifies if modifies is not None else op in _SFTP_WRITES
    action = "write" if writes else "read"
    review: Decision | None = None
    for p in paths or ("",):
        d = sp.check_request(RequestView(method="", operation=op, path=p, action=action))
        if not d.allowed:
            return d
        if d.review is not None and review is None:
            review = d
    return review or ALLOW
