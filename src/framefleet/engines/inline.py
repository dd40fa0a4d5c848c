"""The inline engine (`--engine inline`): workers are threads of the job's own process.

For finding out what a pipeline does (a breakpoint in an op stops right there; an op's traceback is the
job's) and for tests of the scheduler's policy, whose failures an op can script in-process. The scheduler
treats these workers like any other: an error fails the attempt, a hang past `hang_timeout` makes it kill
the worker. A thread cannot be killed, so a killed worker is forgotten: whatever it still reports is
dropped, and a hung one keeps running until its process ends (the CLI then exits without waiting for it;
a program that runs a job with `RunSettings(engine="inline")` can check `hung_workers`). A crash that takes a process down takes the job down here; the memory cap does not apply (it
would cap the job).
"""

from __future__ import annotations

import queue
import threading

from framefleet.engines.events import Errored, Event, Finished, Progressed, Ready
from framefleet.errors import FramefleetError
from framefleet.files.remote_inputs import WorkerStorage
from framefleet.jobs.task import TaskRequest
from framefleet.jobs.worker import Worker, traceback_tail
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import available_cores
from framefleet.settings import EngineOptions

_FORGOTTEN: list[threading.Thread] = []
"""Threads of workers the scheduler killed (they were hung, or their lease ran out)."""


def hung_workers() -> int:
    """How many killed inline workers are still running (a hung op never returns)."""
    return sum(thread.is_alive() for thread in _FORGOTTEN)


def inline_worker_count(options: EngineOptions) -> tuple[int, int]:
    """(workers, threads per worker): one worker with every core, unless the options say otherwise."""
    workers = max(1, options.workers or 1)
    return workers, options.threads_per_worker or max(1, available_cores() // workers)


class InlinePool:
    """Worker threads, each with its own `Worker` and inbox; events arrive on one queue."""

    one_machine = True

    def __init__(self, pipeline: Pipeline, threads: int, worker_storage: WorkerStorage | None = None) -> None:
        self._pipeline = pipeline
        self._threads = threads
        self._storage = worker_storage or WorkerStorage()
        self._workers: dict[str, tuple[queue.SimpleQueue[TaskRequest | None], threading.Thread, threading.Event]] = {}
        """Each worker's inbox, thread, and the event that cuts its segment short."""
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._fatal: str | None = None
        self._serial = 0

    def spawn(self) -> str:
        self._serial += 1
        name = f"inline-{self._serial}"
        inbox: queue.SimpleQueue[TaskRequest | None] = queue.SimpleQueue()
        cut = threading.Event()
        thread = threading.Thread(target=self._serve, args=(name, inbox, cut), name=name, daemon=True)
        self._workers[name] = inbox, thread, cut
        thread.start()
        return name

    def submit(self, worker: str, request: TaskRequest) -> bool:
        if worker not in self._workers:
            return False
        self._workers[worker][0].put(request)
        return True

    def cut(self, worker: str) -> bool:
        if worker not in self._workers:
            return False
        self._workers[worker][2].set()
        return True

    def events(self, timeout: float) -> list[Event]:
        found: list[Event] = []
        try:
            found.append(self._events.get(timeout=timeout))
            while True:
                found.append(self._events.get_nowait())
        except queue.Empty:
            pass
        if self._fatal is not None:
            raise FramefleetError(f"a worker could not start: {self._fatal}")
        return [event for event in found if event.worker in self._workers]

    def kill(self, worker: str) -> None:
        if worker in self._workers:
            inbox, thread, _ = self._workers.pop(worker)
            inbox.put(None)  # it stops after its current task, if that ever ends
            _FORGOTTEN.append(thread)

    def close(self) -> None:
        for inbox, _, _ in self._workers.values():
            inbox.put(None)
        for _, thread, _ in self._workers.values():
            thread.join(timeout=10)
        self._workers.clear()

    def _serve(self, name: str, inbox: queue.SimpleQueue[TaskRequest | None], cut: threading.Event) -> None:
        try:
            worker = Worker(self._pipeline, self._threads, self._storage, own_process=False)
        except Exception as exc:  # noqa: BLE001 - the scheduler stops the job with this
            self._fatal = f"{type(exc).__name__}: {exc}"
            self._events.put(Ready(name))  # wakes the scheduler, which then raises
            return
        self._events.put(Ready(name))
        try:
            while (request := inbox.get()) is not None:
                cut.clear()  # set for the task before, after it ended
                try:
                    result = worker.run(request, progress=lambda frames: self._events.put(Progressed(name, frames)),
                                        cut=cut)
                except Exception as exc:  # noqa: BLE001 - the input's fault, or a bug: reported either way
                    self._events.put(Errored.of(name, exc, traceback_tail()))
                else:
                    self._events.put(Finished(name, result))
        finally:
            worker.close()
