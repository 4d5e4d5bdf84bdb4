"""The suite's own bookkeeping: the files `make test` runs alone exist (a renamed one would silently run beside
another test) and their tests carry the ``serial`` marker the Makefile selects on."""

import subprocess
import sys

from support import ROOT, SERIAL, TESTS


def test_every_serial_file_exists():
    assert sorted(f for f in SERIAL if not (TESTS / f).is_file()) == []


def test_the_serial_marker_selects_exactly_the_serial_files():
    def collected(marker: str) -> set[str]:
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", marker,
                              "tests/test_traffic.py", "tests/test_suite.py"], cwd=ROOT, capture_output=True, text=True).stdout
        return {line.split("::")[0] for line in out.splitlines() if "::" in line}

    assert collected("serial") == {"tests/test_traffic.py"}
    assert collected("not serial") == {"tests/test_suite.py"}
