"""The README documents every setting config.py reads from the environment."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_every_environment_variable_config_reads_is_in_the_readme():
    names = set(re.findall(r'_env(?:_int|_float|_bool)?\("([A-Z0-9_]+)"', (ROOT / "config.py").read_text()))
    readme = (ROOT / "README.md").read_text()
    assert names and sorted(n for n in names if f"`{n}`" not in readme) == []
