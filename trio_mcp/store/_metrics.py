"""Prometheus metrics of the event history's writer."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._history import EventWriter


def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        CounterMetricFamily("trio_mcp_store_events_written_total", "Events written to the state store."),
        CounterMetricFamily(
            "trio_mcp_store_events_dropped_total",
            "Events not written to the state store; reason: buffer_full (the store was slower than "
            "the events) or store_unavailable (it could not be written to).",
            labels=["reason"],
        ),
        GaugeMetricFamily(
            "trio_mcp_store_available", "1 while the state store takes the event history's writes, else 0."
        ),
        GaugeMetricFamily(
            "trio_mcp_store_events_buffered", "Events waiting to be written to the state store."
        ),
    )


class HistoryCollector:
    """A ``prometheus_client`` collector of an :class:`EventWriter`'s statistics."""

    def __init__(self, writer: EventWriter) -> None:
        self._writer = writer

    def describe(self) -> list[Metric]:
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        stats = self._writer.statistics()
        written, dropped, available, buffered = _families()
        written.add_metric([], float(stats.written))
        dropped.add_metric(["buffer_full"], float(stats.dropped_buffer_full))
        dropped.add_metric(["store_unavailable"], float(stats.dropped_unavailable))
        available.add_metric([], float(stats.available))
        buffered.add_metric([], float(stats.buffered))
        yield from (written, dropped, available, buffered)
