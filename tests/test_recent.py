"""RecentLog: the last ``maxlen`` entries and the count of all, read like a list."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvframe.recent import RecentLog


@given(st.integers(1, 20), st.lists(st.integers(), max_size=60), st.integers(0, 70))
def test_recent_log_is_the_tail_of_the_list_it_replaces(maxlen, items, mark):
    log: RecentLog[int] = RecentLog(maxlen)
    for x in items[:mark]:
        log.append(x)
    at = log.total
    for x in items[mark:]:
        log.append(x)
    tail = items[-maxlen:]
    assert log == tail and list(log) == tail and len(log) == len(tail)
    assert log.total == len(items) and log.dropped == len(items) - len(tail)
    assert log[-3:] == tail[-3:]
    if items:
        assert log[-1] == items[-1]
    assert log.since(at) == items[min(mark, len(items)):][-maxlen:]
    assert pickle.loads(pickle.dumps(log)) == log == copy.deepcopy(log)


def test_recent_log_needs_room():
    with pytest.raises(ValueError, match="at least one entry"):
        RecentLog(0)
