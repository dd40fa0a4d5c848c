"""Spot capacity: preemption notices from Azure, AWS, GCP and SIGTERM, and draining this node in Ray.

`NoticeWatcher` (watcher.py) polls the sources (sources.py) and hands each `Notice` (notices.py) to a
callback once; `drain_for_notice` (ray_drain.py, needs Ray) tells Ray to schedule nothing new on the node.
"""

from framefleet.spot.notices import Clock, MalformedNotice, Notice
from framefleet.spot.watcher import NoticeWatcher, WatchSettings

__all__ = ["Clock", "MalformedNotice", "Notice", "NoticeWatcher", "WatchSettings"]
