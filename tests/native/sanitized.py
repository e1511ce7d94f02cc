"""The native modules built again under AddressSanitizer and UBSan, for fuzzing.

Each C module of ledgergate (the DataRow loop, the sealer of draft runs, the statement
shape) is compiled by clang with ``-fsanitize=address,undefined,fuzzer-no-link``: every
memory access bounds-checked, undefined behaviour fatal, and its branches counted by
libFuzzer so that atheris steers its inputs into the C code as well as the Python around
it. The builds are cached under ``~/.cache/ledgergate/sanitized`` by the digest of the
source, the flags and the compiler; a fuzz target loads them in place of the installed
modules (``install``) in a process started with the sanitizer runtime preloaded
(``environment``). Nothing here is used by the gateway.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LEDGERGATE_CACHE", Path.home() / ".cache" / "ledgergate"))
FLAGS = (
    "-shared",
    "-fPIC",
    "-g",
    "-O1",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined,fuzzer-no-link",
    "-fno-sanitize-recover=all",
    "-Wall",
    "-Werror=implicit-function-declaration",
)
# The environment variable fuzz targets find their sanitized builds in: NAME=PATH,...
BUILDS_VAR = "LEDGERGATE_SANITIZED"


@dataclass(frozen=True, slots=True)
class Native:
    module: str  # the dotted name the project imports it by
    source: str  # relative to the repository
    libraries: tuple[str, ...] = ()


MODULES = {
    "datarows": Native("ledgergate.wire.pg._datarows", "src/ledgergate/wire/pg/_datarows.c"),
    "sealer": Native(
        "ledgergate.core.ledger._sealer", "src/ledgergate/core/ledger/_sealer.c", ("crypto", "z")
    ),
    "sqlshape": Native("ledgergate.core._sqlshape", "src/ledgergate/core/_sqlshape.c"),
    "records": Native(
        "ledgergate.wire.kafka._records", "src/ledgergate/wire/kafka/_records.c", ("crypto",)
    ),
}


class Unavailable(Exception):
    """No clang or no atheris runtime: the sanitized builds cannot be made here."""


def compiler() -> str:
    cc = shutil.which("clang")
    if cc is None:
        raise Unavailable("clang is not installed (scripts/install-deps installs it)")
    return cc


def runtime() -> Path:
    """atheris's AddressSanitizer runtime with libFuzzer in it (UBSan's handlers too)."""
    try:
        import atheris
    except ImportError as e:
        raise Unavailable("atheris is not installed (the [test] extra)") from e
    path = Path(atheris.path()) / "asan_with_fuzzer.so"
    if not path.exists():
        raise Unavailable(f"atheris has no {path.name}")
    return path


def build(native: Native, *, source: Path | None = None) -> Path:
    """The sanitized build of ``native`` (from ``source`` when given), made if missing."""
    cc = compiler()
    src = source or ROOT / native.source
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True)
    key = hashlib.sha256()
    for part in (src.read_bytes(), " ".join(FLAGS).encode(), version.stdout.encode()):
        key.update(part)
    name = native.module.rpartition(".")[2] + sysconfig.get_config_var("EXT_SUFFIX")
    out = CACHE / "sanitized" / key.hexdigest()[:16] / name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    cmd = [
        cc,
        *FLAGS,
        f"-I{sysconfig.get_paths()['include']}",
        str(src),
        "-o",
        str(tmp),
        *(f"-l{lib}" for lib in native.libraries),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"clang failed on {src.name}:\n{done.stderr}")
    tmp.replace(out)
    return out


def environment(builds: dict[str, Path]) -> dict[str, str]:
    """The environment a fuzz target runs in: the runtime preloaded, errors fatal."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(runtime())
    # CPython's own allocations at exit are not the C modules' leaks.
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:allocator_may_return_null=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    env[BUILDS_VAR] = ",".join(f"{k}={v}" for k, v in builds.items())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def install() -> None:
    """In a fuzz target's process: load each sanitized build under the name the project
    imports it by, before anything of the project is imported."""
    for item in filter(None, os.environ.get(BUILDS_VAR, "").split(",")):
        key, _, path = item.partition("=")
        name = MODULES[key].module if key in MODULES else key
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
