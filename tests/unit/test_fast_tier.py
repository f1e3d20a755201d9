"""The fast tier's contract (tests/unit/conftest.py) fails the tests that break it.

Each case runs an inner pytest session in this process (pytester) with a copy of the conftest;
nothing here starts a process or a server: the inner conftest refuses before anything starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def unit_dir(pytester: pytest.Pytester) -> Path:
    pytester.makeini("[pytest]\nmarkers =\n    component: starts a process or a server\n")
    unit = pytester.mkdir("unit")
    (unit / "conftest.py").write_text(CONFTEST.read_text())
    return unit


def _run(pytester: pytest.Pytester, unit: Path, body: str, *args: str) -> pytest.RunResult:
    (unit / "test_case.py").write_text(
        "import contextlib, os, socket, subprocess\nimport pytest\n\n" + body
    )
    return pytester.runpytest_inprocess(str(unit), "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("def test_it():\n    subprocess.run(['true'])\n", "started a subprocess (['true'])"),
        ("def test_it():\n    os.system('true')\n", "started a subprocess (os.system('true'))"),
        (
            "def test_it():\n"
            "    with socket.socket() as s:\n"
            "        s.bind(('127.0.0.1', 0))\n"
            "        s.listen()\n",
            "listened on a socket (('127.0.0.1', ",
        ),
        (  # a server that logs a failed bind and carries on still fails its test
            "def test_it():\n"
            "    with contextlib.suppress(Exception):\n"
            "        subprocess.Popen(['true'])\n",
            "started a subprocess (['true'])",
        ),
    ],
    ids=["subprocess", "os.system", "listen", "swallowed"],
)
def test_the_fast_tier_fails_a_process_or_a_server(
    pytester: pytest.Pytester, unit_dir: Path, body: str, says: str
) -> None:
    result = _run(pytester, unit_dir, body, "-m", "not component")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert f"{says}" in out and "in the fast tier" in out and "pytest.mark.component" in out, out


def test_the_variable_makes_any_selection_the_fast_tier(
    pytester: pytest.Pytester, unit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSPECTOR_FAST_TIER", "1")
    result = _run(pytester, unit_dir, "def test_it():\n    subprocess.run(['true'])\n")
    result.assert_outcomes(failed=1)


PATCHED_HERE = """
def patched_here():
    here = os.path.dirname(__file__)  # where the inner conftest lies
    code = [getattr(f, "__code__", None) for f in (subprocess.Popen.__init__, socket.socket.listen)]
    return [c is not None and c.co_filename.startswith(here) for c in code]

"""


def test_outside_the_fast_tier_and_for_component_tests_nothing_is_patched(
    pytester: pytest.Pytester, unit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INSPECTOR_FAST_TIER", raising=False)
    body = PATCHED_HERE + (
        "def test_plain():\n"
        "    assert patched_here() == [False, False]\n"
        "\n"
        "@pytest.mark.component\n"
        "def test_component():\n"
        "    assert patched_here() == [False, False]\n"
    )
    _run(pytester, unit_dir, body).assert_outcomes(passed=2)
    _run(pytester, unit_dir, body, "-m", "component").assert_outcomes(passed=1, deselected=1)
    # The control: in the fast tier the same look finds both refusals in place.
    fast = PATCHED_HERE + "def test_plain():\n    assert patched_here() == [True, True]\n"
    _run(pytester, unit_dir, fast, "-m", "not component").assert_outcomes(passed=1)
