"""Prometheus metrics of a running service, read from the registry and the ledgers at each scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from framefleet.service.runtime import Service


class ServiceCollector(Collector):
    """Jobs by state for the whole service; items, frames, frame rate, queue and workers per running job."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("framefleet_jobs", "Jobs by state.", labels=["state"])
        for state, count in self.service.registry.counts().items():
            jobs.add_metric([state], count)
        yield jobs
        items = GaugeMetricFamily("framefleet_items", "Items (videos) of running jobs by state.",
                                  labels=["job", "state"])
        frames = CounterMetricFamily("framefleet_frames_processed", "Frames in finished segments.", labels=["job"])
        fps = GaugeMetricFamily("framefleet_fps", "Frames per second now.", labels=["job"])
        failures = GaugeMetricFamily("framefleet_failed_items", "Items that ended failed.", labels=["job"])
        queue = GaugeMetricFamily("framefleet_queue_depth", "Tasks waiting for a worker.", labels=["job"])
        workers = GaugeMetricFamily("framefleet_workers", "Workers the job holds.", labels=["job"])
        busy = GaugeMetricFamily("framefleet_busy_workers", "Workers running a task.", labels=["job"])
        for record in self.service.registry.active(queued_limit=0):
            runner = self.service.runner(record.id)
            # counts only: a scrape must not read every finished task, as the full status does
            figures = self.service.read_job(record, lambda view: (view.counts(), view.frames()[0], view.tasks()),
                                            None)
            if figures is None:
                continue
            counts, done, tasks = figures
            for state, count in counts.items():
                items.add_metric([record.id, state], count)
            frames.add_metric([record.id], done)
            failures.add_metric([record.id], counts["failed"])
            queue.add_metric([record.id], tasks["pending"])
            live = runner.live() if runner is not None and runner.alive else None
            fps.add_metric([record.id], live.fps if live else 0.0)
            workers.add_metric([record.id], live.workers if live else 0)
            busy.add_metric([record.id], live.busy if live else 0)
        yield from (items, frames, fps, failures, queue, workers, busy)


def metrics_registry(service: Service) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) holding the service's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    return registry
