"""Runs each cmocka unit-test binary of the build as one pytest test."""
import glob
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("TG_BUILD_DIR", os.path.join(REPO, "build"))
BINARIES = sorted(p for p in glob.glob(os.path.join(BUILD, "tests", "unit", "test_*"))
                  if os.access(p, os.X_OK) and not p.endswith((".o", ".log", ".trs")))


def test_unit_binaries_were_built():
    assert BINARIES, f"no unit-test binaries under {BUILD}/tests/unit: run scripts/build"


@pytest.mark.parametrize("binary", BINARIES, ids=[os.path.basename(b) for b in BINARIES])
def test_unit(binary):
    r = subprocess.run([binary], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{os.path.basename(binary)} failed:\n{r.stdout}\n{r.stderr}"
