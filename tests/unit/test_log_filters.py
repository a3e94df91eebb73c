"""The repeat limiter that keeps aiokafka's reconnect errors from flooding the worker log."""

from __future__ import annotations

import logging

from streams.log_filters import RepeatLimiter, limit_repeats


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def _record(name: str, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_of_a_template_are_dropped_within_the_window_then_counted():
    clock = Clock()
    lim = RepeatLimiter(window_s=30, clock=clock)
    tmpl = "Unable connect to node with id %s: %s"
    assert lim.filter(_record("aiokafka.conn", tmpl, 1, "refused"))
    passed = [lim.filter(_record("aiokafka.conn", tmpl, 1, f"errno {i}")) for i in range(500)]
    assert not any(passed)  # different args, same template: all repeats
    # Another template, or the same text from another logger, is its own line.
    assert lim.filter(_record("aiokafka.cluster", "Unable to update metadata from %s", [1]))
    assert lim.filter(_record("aiokafka.consumer", tmpl, 1, "refused"))
    clock.t = 30.0
    again = _record("aiokafka.conn", tmpl, 1, "refused")
    assert lim.filter(again)
    assert again.getMessage() == "Unable connect to node with id 1: refused [500 more like this in the last 30 s]"
    nothing_dropped = _record("aiokafka.conn", tmpl, 1, "refused")
    clock.t = 61.0
    assert lim.filter(nothing_dropped) and "more like this" not in nothing_dropped.getMessage()


def test_numbers_formatted_into_faust_producer_messages_are_one_template():
    clock = Clock()
    lim = RepeatLimiter(window_s=30, clock=clock)
    name = "faust.transport.producer"
    assert lim.filter(_record(name, "producer buffer full size 148"))
    assert not any(lim.filter(_record(name, f"producer buffer full size {n}")) for n in range(101, 800))
    assert lim.filter(_record(name, "producer flush took 0.15614986419677734"))
    assert not lim.filter(_record(name, "producer flush took 6.75e-05"))
    clock.t = 30.0
    again = _record(name, "producer buffer full size 293")
    assert lim.filter(again) and again.getMessage().endswith("[699 more like this in the last 30 s]")


def test_own_loggers_are_never_limited():
    lim = RepeatLimiter(window_s=30, clock=Clock())
    assert all(lim.filter(_record("streams.services.retry", "Milvus down, retrying in %s s", 1)) for _ in range(50))


def test_installed_once_on_each_aiokafka_logger(caplog):
    logging.getLogger("aiokafka.test_child_logger")  # exists before installing, like the client's modules
    lim = limit_repeats(window_s=30)
    try:
        assert limit_repeats(window_s=30) is lim  # idempotent
        child = logging.getLogger("aiokafka.test_child_logger")
        assert child.filters.count(lim) == 1
        with caplog.at_level(logging.ERROR):
            for _ in range(20):
                child.error("Unable connect to node with id %s", 1)
        assert len([r for r in caplog.records if r.name == "aiokafka.test_child_logger"]) == 1
    finally:  # this process's other tests keep aiokafka's logs as they are
        for name in list(logging.Logger.manager.loggerDict):
            if name.startswith("aiokafka"):
                logging.getLogger(name).removeFilter(lim)
