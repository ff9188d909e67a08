"""The bench's paravirt-call section runs both loops to their exit and reports a ratio."""

from __future__ import annotations

from pvframe.tools import bench


def test_pv_call_cost_measures_both_loops():
    rows = bench.pv_call_cost(iterations=300, repeat=1)
    assert [r["op"] for r in rows] == ["read_cr0", "irq_disable"]
    for r in rows:
        assert r["trapped_us"] > 0 and r["pv_call_us"] > 0
        assert r["ratio"] == r["pv_call_us"] / r["trapped_us"]
