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
import posixpath
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
    "sftp_path",
    "simple_commands",
]

# Nesting of ``sh -c`` and command substitutions read at most this deep; a line nested
# deeper is unreadable (nobody types that by hand; it is how one hides a command).
MAX_DEPTH = 4
# Simple commands read from one line at most.
MAX_COMMANDS = 256

_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "mksh", "fish"})
# Reserved words that start a compound command: the command follows them.
_LEADING_WORDS = frozenset({"{", "!", "if", "then", "else", "elif", "do", "while", "until", "time"})
# Words that end a compound command, or head one whose words are not a command.
_HEADER_WORDS = frozenset({"}", "fi", "done", "esac", "for", "select", "case", "in", "function"})
# Wrappers that run a command, with their options that take a value.
_WRAPPER_OPTS: dict[str, frozenset[str]] = {
    "sudo": frozenset(
        {"-u", "-g", "-p", "-C", "-r", "-t", "-U", "-h", "-D", "-R", "-T", "--user", "--group",
         "--prompt", "--close-from", "--role", "--type", "--other-user", "--host", "--chdir",
         "--chroot", "--command-timeout"}
    ),
    "doas": frozenset({"-u", "-C"}),
    "env": frozenset({"-u", "--unset", "-C", "--chdir"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p", "-P", "-u", "--class", "--classdata"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "xargs": frozenset(
        {"-n", "-I", "-L", "-P", "-s", "-d", "-E", "-a", "--max-args", "--replace",
         "--max-lines", "--max-procs", "--max-chars", "--delimiter", "--eof", "--arg-file"}
    ),
    "stdbuf": frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}),
    "nohup": frozenset(),
    "setsid": frozenset(),
    "exec": frozenset({"-a"}),
    "command": frozenset(),
    "time": frozenset({"-f", "-o", "--format", "--output"}),
    "chroot": frozenset({"--userspec", "--groups"}),
    "taskset": frozenset(),
    "flock": frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}),
    "runuser": frozenset({"-u", "-g", "-G", "--user", "--group", "--supp-group"}),
    "unbuffer": frozenset(),
    "caffeinate": frozenset(),
}  # fmt: skip
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", "|&", ";;", "\n"})
_REDIRECTS = re.compile(r"^\d*(<|>|>>|<<<|&>|>&|<&|&>>)$")
_SUBST = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Operands a wrapper takes before the command: timeout's duration, chroot's directory,
# taskset's mask, flock's lock file.
_WRAPPER_POSITIONALS = {"timeout": 1, "chroot": 1, "taskset": 1, "flock": 1}
_SFTP_WRITES = frozenset(
    {"write", "remove", "rename", "mkdir", "rmdir", "setstat", "fsetstat", "symlink", "link"}
)


class UnreadableCommand(ValueError):
    """A command line the gateway cannot split into commands."""


def _words(text: str) -> list[str]:
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>\n")
    lex.whitespace = " \t\r"  # a newline separates commands, as ``;`` does
    lex.whitespace_split = True
    lex.commenters = ""
    try:
        return list(lex)
    except ValueError as e:
        raise UnreadableCommand(f"cannot read the command line: {e}") from None


def _options(argv: list[str], value_opts: frozenset[str], start: int = 1) -> int:
    """The index of the first operand after a wrapper's options, skipping the values of
    those in ``value_opts`` (``-u root``, ``-uroot``, ``--user root``, ``--user=root``)."""
    i = start
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return i + 1
        if not a.startswith("-") or a == "-":
            return i
        i += 1
        if a.startswith("--"):
            if "=" not in a and a in value_opts:
                i += 1
            continue
        for k, ch in enumerate(a[1:], 1):
            if f"-{ch}" in value_opts:
                if k == len(a) - 1:
                    i += 1  # the value is the next word
                break  # the rest of the cluster is the value
    return i


def _unwrap(argv: list[str], depth: int) -> list[list[str]]:
    """The command(s) a wrapper runs (``sudo -u x cmd`` → ``cmd``), repeatedly; raises
    ``UnreadableCommand`` for a wrapper whose command cannot be told."""
    while argv:
        while argv and _ASSIGN.match(argv[0]):
            argv = argv[1:]
        while argv and argv[0] in _LEADING_WORDS:
            argv = argv[1:]  # ``if``, ``then``, ``do``, ``!``, ``{``, ``time`` …
        if not argv or argv[0] in _HEADER_WORDS:
            return []  # ``}``, ``fi``, ``done``; ``for x in …``, ``case …`` headers
        name = argv[0].rsplit("/", 1)[-1]
        if name in ("env",) and any(a in ("-S", "--split-string") or a.startswith(
            ("-S", "--split-string=")) for a in argv[1:]):  # fmt: skip
            raise UnreadableCommand("env -S splits a string into a command")
        if name == "eval":
            return simple_commands(" ".join(argv[1:]), depth + 1)
        if name in ("su", "runuser") and "-c" in argv[1:]:
            k = argv.index("-c", 1)
            return simple_commands(argv[k + 1] if k + 1 < len(argv) else "", depth + 1)
        if name in _WRAPPER_OPTS:
            i = _options(argv, _WRAPPER_OPTS[name])
            skip = _WRAPPER_POSITIONALS.get(name, 0)  # timeout's duration, chroot's dir
            argv = argv[i + skip :]
            if name in ("env",):
                while argv and _ASSIGN.match(argv[0]):
                    argv = argv[1:]
            continue
        return [argv]
    return []


def _shell_script(argv: list[str]) -> str | None:
    """The script of ``sh -c SCRIPT`` (``-c`` anywhere in the options before the first
    operand: ``bash -lc``, ``sh -e -c``), or None when the shell runs a file or stdin."""
    i, has_c = 1, False
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not (a.startswith("-") or a.startswith("+")) or a in ("-", "+"):
            break
        i += 1
        if a.startswith("--"):
            continue
        if "c" in a[1:]:
            has_c = True
        if a[-1] in "oO" and i < len(argv):
            i += 1  # set -o OPTION
    if has_c:
        return argv[i] if i < len(argv) else ""
    return None


def simple_commands(text: str, depth: int = 0) -> list[list[str]]:
    """The argv of every simple command a shell would run for ``text``; raises
    ``UnreadableCommand`` when it cannot be split, or when a command's program cannot
    be known before the shell runs (a variable, a glob, process substitution, a
    here-document fed to a shell)."""
    if depth > MAX_DEPTH:
        raise UnreadableCommand("the command line nests shells or substitutions too deep")
    out: list[list[str]] = []
    for m in _SUBST.finditer(text):
        out.extend(simple_commands(m.group(1) or m.group(2) or "", depth + 1))
    cur: list[str] = []
    skip = False
    # a substitution's output is a word only known when it runs: as a program it makes
    # the line unreadable (see below), as an argument it is just that
    for w in _words(_SUBST.sub(" $SUBSTITUTION ", text)):
        if skip:
            skip = False
            continue
        if "<(" in w or ">(" in w:
            raise UnreadableCommand("process substitution runs a command the line hides")
        if w.startswith("<<") and w != "<<<":
            raise UnreadableCommand("a here-document can feed a shell its commands")
        if w in _SEPARATORS or set(w) <= set(";&|()\n"):
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
    for raw in out:
        for argv in _unwrap(raw, depth):
            if not argv:
                continue
            prog = argv[0]
            if any(c in prog for c in "$`*?[") or prog.startswith(("<", ">")):
                raise UnreadableCommand(f"the program {prog!r} is only known when it runs")
            name = prog.rsplit("/", 1)[-1]
            if name in _SHELLS:
                script = _shell_script(argv)
                if script is not None:
                    result.extend(simple_commands(script, depth + 1))
                    continue
            if name == "busybox" and len(argv) > 1 and not argv[1].startswith("-"):
                argv = argv[1:]  # busybox APPLET args
            result.append(argv)
            if len(result) > MAX_COMMANDS:
                raise UnreadableCommand("the command line holds too many commands")
    return result


# Long options that are another spelling of a short one, where rules name the short one
# (``rm -rf *`` must match ``rm --recursive --force``).
_LONG_SHORT = {"--recursive": "-r", "--force": "-f", "--no-preserve-root": "--no-preserve-root"}


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
            long = w.split("=", 1)[0]
            flags.add(_LONG_SHORT.get(long, long))
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


# OpenSSH's extensions by the operation they are (``sftp rename`` sends posix-rename):
# rules name the operation.
SFTP_EXTENSION_OPS = {
    "extended:posix-rename@openssh.com": "rename",
    "extended:hardlink@openssh.com": "link",
    "extended:lsetstat@openssh.com": "setstat",
    "extended:fsync@openssh.com": "fsync",
    "extended:statvfs@openssh.com": "statvfs",
    "extended:fstatvfs@openssh.com": "statvfs",
    "extended:expand-path@openssh.com": "realpath",
    "extended:home-directory": "realpath",
    "extended:copy-data": "copy-data",
    "extended:limits@openssh.com": "limits",
    "extended:users-groups-by-id@openssh.com": "stat",
}


def sftp_path(path: str | None, cwd: str | None) -> str | None:
    """The absolute, normal form of an SFTP path (``//etc/../etc/x`` → ``/etc/x``); a
    relative one against ``cwd`` (the server's REALPATH of "."); None when that is not
    known."""
    if path is None:
        return None
    if not path.startswith("/"):
        if cwd is None:
            return None
        path = cwd.rstrip("/") + "/" + path
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/")


def check_sftp(
    sp: SessionPolicy | None,
    op: str,
    paths: tuple[str | None, ...],
    *,
    modifies: bool | None = None,
) -> Decision:
    """The decision on one SFTP operation on ``paths`` (a rename names two; normal,
    absolute paths, None for one that could not be made so); ``modifies`` (as the SFTP
    tracker says: an OPEN for writing, an extension that may change files) classes it as
    ``write``, else the operation's name does. Fail closed: where rules about requests
    apply, an operation on a path that could not be resolved, or an extension that may
    change files without naming them, is refused."""
    sp = _sessions_policy(sp)
    if sp is None or not sp.requests_guarded:
        return ALLOW
    op = SFTP_EXTENSION_OPS.get(op, op)
    writes = modifies if modifies is not None else op in _SFTP_WRITES
    action = "write" if writes else "read"
    if any(p is None for p in paths) or (writes and not paths):
        return Decision(
            False,
            "policy.unparseable",
            f"refused: the path of this {op} cannot be told for sure (use an absolute path)",
        )
    review: Decision | None = None
    for p in paths or ("",):
        d = sp.check_request(RequestView(method="", operation=op, path=p or "", action=action))
        if not d.allowed:
            return d
        if d.review is not None and review is None:
            review = d
    return review or ALLOW
