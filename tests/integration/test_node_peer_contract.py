"""The bench's Node.js peer keeps syncgate's contract (`python -m bench.node_peer_check`).

The peer is the bar the performance targets are measured against, so it must do the same
work: the same answers to the same requests, the same message properties and CloudEvents
headers with a `traceparent`, one run per accepted event, one confirmed completed event per
run recorded, dead-lettering and revocation. The check runs both systems on the real broker
and exits non-zero on its first failed line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import node_peer_installed

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.skipif(not node_peer_installed(), reason="node or the peer's packages are missing")
def test_the_node_peer_does_the_same_work_as_syncgate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.node_peer_check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "[check] all checks passed" in result.stdout, out[-4000:]
    for line in (
        "the message carries a W3C traceparent",
        "the message's properties are syncgate's",
        "none for a duplicate",
    ):
        assert line in result.stdout, out[-4000:]
