"""The native modules fuzzed under AddressSanitizer and UBSan (tests/native/fuzz.py).

Each target runs in its own process: the sanitized builds loaded in place of the
installed modules, the sanitizer runtime preloaded, atheris steering by the coverage of
the C code and of the Python around it. A memory error, undefined behaviour, or a
difference from the Python reference fails the run with the sanitizer's report or the
mismatching input. ``LEDGERGATE_FUZZ_RUNS`` sets the inputs per target (20,000 by
default, a few seconds each; more by hand, e.g. 2,000,000 for a deep run). A planted bug
in a test module shows that the sanitized runs do catch what they are for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.native import sanitized
from tests.native.fuzz import TARGETS

RUNS = int(os.environ.get("LEDGERGATE_FUZZ_RUNS", "20000"))
CANARY = sanitized.Native("_canary", "tests/native/canary.c")


@pytest.fixture(scope="module")
def builds() -> dict[str, Path]:
    try:
        return {k: sanitized.build(n) for k, n in sanitized.MODULES.items()}
    except sanitized.Unavailable as e:
        pytest.fail(f"the sanitized builds need {e}")


def run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=sanitized.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_under_sanitizers(target: str, builds: dict[str, Path], tmp_path: Path) -> None:
    env = sanitized.environment(builds)
    done = run(
        env,
        "-m",
        "tests.native.fuzz",
        target,
        f"-runs={RUNS}",
        "-max_len=4096",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
    )
    report = done.stderr[-6000:]
    assert done.returncode == 0, f"fuzz target {target} failed:\n{report}"
    assert f"Done {RUNS} runs" in done.stderr, report
    # every sanitized module was the one in use, and its code was reached
    assert f"Loaded {len(sanitized.MODULES)} modules" in done.stderr, report
    assert not list(tmp_path.iterdir()), "the fuzzer left a crash input"


def test_the_sanitized_runs_catch_a_read_past_a_buffer(tmp_path: Path) -> None:
    build = sanitized.build(CANARY, source=sanitized.ROOT / CANARY.source)
    env = sanitized.environment({"_canary": build})
    code = "from tests.native import sanitized; sanitized.install(); import _canary; "
    bad = run(env, "-c", code + "_canary.read_past(b'abcd')", timeout=60)
    assert bad.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in bad.stderr, bad.stderr[-3000:]
    assert "canary.c" in bad.stderr  # the report names the line
    good = run(env, "-c", code + "assert _canary.add_one(41) == 42", timeout=60)
    assert good.returncode == 0, good.stderr[-3000:]
    ub = run(env, "-c", code + "_canary.add_one(2**31 - 1)", timeout=60)
    assert ub.returncode != 0
    assert "runtime error: signed integer overflow" in ub.stderr, ub.stderr[-3000:]


def test_a_mismatch_with_the_reference_fails_the_run(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    # The sqlshape target against a reference that is wrong on purpose: the run must stop
    # with the mismatch and leave the input that made it.
    env = sanitized.environment(builds)
    code = (
        "import sys; from tests.native import fuzz; "
        "fuzz.shape_reference = lambda s: 'not the shape'; "
        "sys.argv = ['fuzz', 'sqlshape', '-runs=1000', "
        f"'-artifact_prefix={tmp_path}/']; fuzz.main()"
    )
    done = run(env, "-c", code, timeout=120)
    assert done.returncode != 0
    said = done.stdout + done.stderr  # atheris prints the Python traceback on stdout
    assert "Mismatch: shape of" in said and "not the shape" in said, said[-3000:]
    assert list(tmp_path.iterdir()), "no crash input was written"
