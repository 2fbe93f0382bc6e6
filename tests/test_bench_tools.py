"""The benchmark's CPU accounting: a process tree's CPU time includes busy descendants."""

import os
import signal
import subprocess
import sys
import time

import pytest

from bench.http_bench import machine_busy_seconds, tree_cpu_seconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

BUSY_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
                          "import time\\nend = time.process_time() + 0.4\\n"
                          "while time.process_time() < end: pass\\ntime.sleep(30)"])
time.sleep(30)
"""


def test_tree_cpu_counts_a_busy_grandchild():
    parent = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_seconds(parent.pid) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The grandchild burnt 0.4 s of CPU; the two interpreters' start-up adds a little.
        assert 0.4 <= tree_cpu_seconds(parent.pid) < 5
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the grandchild too
        parent.wait()


def test_tree_cpu_of_no_process_is_zero():
    assert tree_cpu_seconds(None) == 0.0


def test_machine_busy_time_grows_while_working():
    before = machine_busy_seconds()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert machine_busy_seconds() - before >= 0.15


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to compare placements")
def test_round_trip_costs_price_both_placements_and_restore_affinity(pg_cluster):
    from bench.layers_bench import round_trip_costs

    url = pg_cluster.create_database("cueline_round_trips")
    before = os.sched_getaffinity(0)
    rows = round_trip_costs(url, queries=200)
    assert os.sched_getaffinity(0) == before
    if not rows:  # not allowed to pin the backend (not root): nothing measured, nothing pinned
        return
    assert [row["placement"] for row in rows] == ["same core", "different cores"]
    assert all(0 < row["client_cpu_us"] <= row["wall_us"] * 2 for row in rows)
