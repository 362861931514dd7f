"""With CI set, a skip fails the run; without it, a skip stays a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_TESTS = """
import pytest

def test_skipped_inside():
    pytest.skip("no such server")

@pytest.mark.skip(reason="marked")
def test_marked():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    raise AssertionError

def test_passes():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> pytest.RunResult:
    pytester.makepyfile(test_inner=_TESTS)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return pytester.runpytest_subprocess("-p", "tests.ci_skips", "-p", "no:cacheprovider", "-q")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_every_skip_fails_the_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    result = _run(pytester, monkeypatch, ci)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    result.stdout.fnmatch_lines(["*skipped in CI*no such server*", "*skipped in CI*marked*"])


def test_a_skipped_module_fails_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_module='import pytest\npytest.skip("whole module", allow_module_level=True)\n')
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "tests.ci_skips", "-p", "no:cacheprovider", "-q")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skipped in CI*whole module*"])


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_outside_ci_a_skip_stays_a_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                        ci: str | None) -> None:
    result = _run(pytester, monkeypatch, ci)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
