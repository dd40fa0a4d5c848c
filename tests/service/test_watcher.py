"""The watcher of `framefleet serve`, one look at a time: `Watcher.poll` over real files and a real ledger.

No worker runs here: the test plays the job where it must (claiming and completing tasks in the ledger).
A file becomes an item once two looks in a row agree on its size and version; the ledger keeps one item
per URI and version, so a file listed again (or after a restart) adds nothing and a replaced one (a new
version) starts over. What the watcher saw is read back from the ledger, the single source of truth.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from framefleet.files import storage
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.results import ProbeResult, Segment, TaskMetrics
from framefleet.jobs.run import canonical_output_root
from framefleet.jobs.store import Ledger
from framefleet.service.watcher import PARTIAL_SUFFIXES, Watcher, WatchRule

TINY = {"width": 64, "height": 48, "frames": 4, "gop": 4, "bframes": 0}


@pytest.fixture(scope="module")
def clip(clip_factory) -> Path:
    return clip_factory("watch-tiny.mp4", **TINY)


@pytest.fixture(scope="module")
def other_clip(clip_factory) -> Path:
    return clip_factory("watch-other.mp4", **{**TINY, "frames": 7})


@pytest.fixture
def ledger(tmp_path):
    (tmp_path / "job").mkdir()
    ledger = Ledger(tmp_path / "job" / "ledger.sqlite")
    yield ledger
    ledger.close()


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


def watcher_for(src: Path | str, out: Path | str, ledger: Ledger, interval: float = 10.0) -> Watcher:
    rule = WatchRule(name="t", source=storage.canonical_uri(str(src)), output=storage.canonical_uri(str(out)),
                     pipeline={"op": "identity"}, interval=interval)
    return Watcher(rule, ledger, canonical_output_root(str(out)))


def items(ledger: Ledger) -> dict[str, tuple[int | None, str | None]]:
    """relpath -> (size, version) of every item."""
    return {item.relpath: (item.size, item.version) for item in ledger.items()}


def version_of(path: Path) -> str:
    st = path.stat()
    return f"{st.st_mtime_ns}-{st.st_size}"


def relpaths(refs) -> list[str]:
    return [ref.relpath for ref in refs]


def set_mtime(path: Path, seconds_ago: float) -> None:
    """A distinct, deterministic mtime (a rewrite within the same clock tick could keep the old one)."""
    when = time.time_ns() - int(seconds_ago * 1e9)
    os.utime(path, ns=(when, when))


# -- a file becomes an item once two looks agree ------------------------------------------------------


def test_a_new_file_is_an_item_on_the_second_look_not_the_first(src, tmp_path, ledger, clip):
    watcher = watcher_for(src, tmp_path / "out", ledger)
    assert watcher.poll() == [] and items(ledger) == {}  # an empty folder

    shutil.copyfile(clip, src / "a.mp4")
    assert watcher.poll() == []
    assert items(ledger) == {}, "a file seen once may still be being written"

    added = watcher.poll()
    assert relpaths(added) == ["a.mp4"]
    (item,) = ledger.items()
    assert (item.uri, item.relpath, item.state) == ((src / "a.mp4").as_posix(), "a.mp4", "pending")
    assert (item.size, item.version) == (clip.stat().st_size, version_of(src / "a.mp4"))
    assert item.output_uri == (tmp_path / "out" / "a.mp4").as_posix()
    assert LedgerReads(ledger).attempts() == []
    assert LedgerReads(ledger).tasks()["pending"] == 1  # its probe
    assert watcher.polls == 3 and watcher.last_error is None


def test_a_burst_of_files_in_folders_is_added_together_once_stable(src, tmp_path, ledger, clip):
    watcher = watcher_for(src, tmp_path / "out", ledger)
    names = ["a.mp4", "b/c.mp4", "b/d e.mkv", "z/y/x.mov"]
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, src / name)
    assert watcher.poll() == []
    assert sorted(relpaths(watcher.poll())) == sorted(names)
    assert sorted(items(ledger)) == sorted(names)
    assert {i.output_uri for i in ledger.items()} == {
        (tmp_path / "out" / name).as_posix() for name in names}


def test_a_growing_file_waits_until_two_looks_agree(src, tmp_path, ledger, clip):
    data = clip.read_bytes()
    target = src / "growing.mp4"
    watcher = watcher_for(src, tmp_path / "out", ledger)

    target.write_bytes(data[: len(data) // 3])
    assert watcher.poll() == []
    with target.open("ab") as handle:  # the writer goes on between two looks
        handle.write(data[len(data) // 3: 2 * len(data) // 3])
    assert watcher.poll() == []
    with target.open("ab") as handle:
        handle.write(data[2 * len(data) // 3:])
    assert watcher.poll() == [], "the size changed since the last look"
    assert items(ledger) == {}

    assert relpaths(watcher.poll()) == ["growing.mp4"]
    assert items(ledger) == {"growing.mp4": (len(data), version_of(target))}
    assert target.read_bytes() == data


def test_a_file_whose_mtime_changes_without_its_size_also_waits(src, tmp_path, ledger, clip):
    target = src / "rewritten.mp4"
    shutil.copyfile(clip, target)
    set_mtime(target, 60)
    watcher = watcher_for(src, tmp_path / "out", ledger)
    assert watcher.poll() == []
    set_mtime(target, 30)  # rewritten in place, same size: another version
    assert watcher.poll() == []
    assert relpaths(watcher.poll()) == ["rewritten.mp4"]
    assert items(ledger)["rewritten.mp4"][1] == version_of(target)


def test_a_file_removed_before_it_settled_is_never_an_item(src, tmp_path, ledger, clip):
    watcher = watcher_for(src, tmp_path / "out", ledger)
    shutil.copyfile(clip, src / "gone.mp4")
    assert watcher.poll() == []
    (src / "gone.mp4").unlink()
    assert watcher.poll() == [] and watcher.poll() == []
    assert items(ledger) == {}
    shutil.copyfile(clip, src / "gone.mp4")  # and back again: two new looks
    assert watcher.poll() == []
    assert relpaths(watcher.poll()) == ["gone.mp4"]


# -- names that are never items ------------------------------------------------------------------------


def test_hidden_partial_and_lock_names_are_never_items(src, tmp_path, ledger, clip):
    ignored = [".hidden.mp4", ".folder/in-hidden.mp4", "~x.mp4", "sub/~\u00e9dit.mkv", "X.MP4.PART",
               *(f"up{suffix}" for suffix in PARTIAL_SUFFIXES), *(f"v.mp4{suffix}" for suffix in PARTIAL_SUFFIXES)]
    for name in [*ignored, "notes.txt", "keep.mp4"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        if name == "notes.txt":
            (src / name).write_text("not a video\n")
        else:
            shutil.copyfile(clip, src / name)  # real video bytes: only the name keeps them out
    watcher = watcher_for(src, tmp_path / "out", ledger)
    for _ in range(4):
        watcher.poll()
    assert sorted(items(ledger)) == ["keep.mp4"]
    assert watcher.last_error is None

    # The usual upload pattern: written under a partial name, then renamed into place (mtime kept).
    (src / "v.mp4.part").rename(src / "v.mp4")
    assert watcher.poll() == []
    assert relpaths(watcher.poll()) == ["v.mp4"]
    assert sorted(items(ledger)) == ["keep.mp4", "v.mp4"]


def test_outputs_written_inside_the_watched_folder_are_not_items(src, ledger, clip):
    out = src / "done"
    (out / "sub").mkdir(parents=True)
    shutil.copyfile(clip, out / "a.mp4")  # an output of an earlier item
    shutil.copyfile(clip, out / "sub" / "b.mp4")
    shutil.copyfile(clip, src / "a.mp4")
    watcher = watcher_for(src, out, ledger)
    for _ in range(3):
        watcher.poll()
    (item,) = ledger.items()
    assert item.relpath == "a.mp4" and item.output_uri == (out / "a.mp4").as_posix()

    # Also when the output root is named through a symbolic link to it.
    link = src.parent / "out-link"
    link.symlink_to(out, target_is_directory=True)
    other = Ledger(src.parent / "other.sqlite")
    try:
        watcher = watcher_for(src, link, other)
        for _ in range(3):
            watcher.poll()
        assert sorted(items(other)) == ["a.mp4"]
    finally:
        other.close()


# -- exactly once: duplicates, restarts, replacements -------------------------------------------------


def test_a_file_seen_on_many_looks_is_one_item(src, tmp_path, ledger, clip):
    shutil.copyfile(clip, src / "a.mp4")
    watcher = watcher_for(src, tmp_path / "out", ledger)
    added = [relpaths(watcher.poll()) for _ in range(12)]
    assert added == [[], ["a.mp4"]] + [[]] * 10
    assert len(ledger.items()) == 1 and LedgerReads(ledger).tasks()["pending"] == 1


def test_the_same_bytes_copied_again_with_the_same_mtime_add_nothing(src, tmp_path, ledger, clip):
    target = src / "a.mp4"
    shutil.copyfile(clip, target)
    watcher = watcher_for(src, tmp_path / "out", ledger)
    watcher.poll(), watcher.poll()
    (before,) = ledger.items()
    stamp = target.stat().st_mtime_ns
    target.write_bytes(clip.read_bytes())  # a duplicate delivery of the same file (cp -p, rsync -t)
    os.utime(target, ns=(stamp, stamp))
    for _ in range(4):
        assert watcher.poll() == []
    assert ledger.items() == [before]


def test_a_restarted_watcher_adds_nothing_for_recorded_files(src, tmp_path, clip):
    path = tmp_path / "ledger.sqlite"
    for name in ("a.mp4", "b/c.mp4"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, src / name)
    first = Ledger(path)
    watcher = watcher_for(src, tmp_path / "out", first)
    watcher.poll(), watcher.poll()
    shutil.copyfile(clip, src / "late.mp4")
    watcher.poll()  # late.mp4 seen once: not recorded yet when the service stops
    recorded = items(first)
    assert sorted(recorded) == ["a.mp4", "b/c.mp4"]
    first.close()

    again = Ledger(path)  # the service started again: a new watcher over the same ledger
    try:
        restarted = watcher_for(src, tmp_path / "out", again)
        assert restarted.poll() == [], "a file seen once before the restart needs two looks after it"
        assert relpaths(restarted.poll()) == ["late.mp4"]
        for _ in range(3):
            assert restarted.poll() == []
        assert items(again) == {**recorded, "late.mp4": (clip.stat().st_size, version_of(src / "late.mp4"))}
        assert LedgerReads(again).tasks()["pending"] == 3  # one probe each, none twice
    finally:
        again.close()


def _process(ledger: Ledger) -> None:
    """Play the job: run every pending task to done (a probe plans one segment)."""
    while (task := ledger.claim("w", 60)) is not None:
        if task.kind == "probe":
            ledger.complete(task, result=ProbeResult(frames=4, duration=0.2), segments=[Segment(None, None)])
        else:
            ledger.complete(task, metrics=TaskMetrics(frames=4))


def test_a_replaced_file_is_a_new_version_and_starts_over(src, tmp_path, ledger, clip, other_clip):
    target, neighbour = src / "a.mp4", src / "b.mp4"
    shutil.copyfile(clip, target)
    shutil.copyfile(clip, neighbour)
    set_mtime(target, 120)
    watcher = watcher_for(src, tmp_path / "out", ledger)
    watcher.poll(), watcher.poll()
    _process(ledger)
    first = {item.relpath: item for item in ledger.items()}
    assert {item.state for item in first.values()} == {"done"}
    neighbour_attempts = LedgerReads(ledger).attempts(first["b.mp4"].id)

    shutil.copyfile(other_clip, target)  # replaced: new bytes, new size, new mtime
    assert watcher.poll() == []
    assert relpaths(watcher.poll()) == ["a.mp4"]
    for _ in range(3):
        assert watcher.poll() == []

    now = {item.relpath: item for item in ledger.items()}
    replaced = now["a.mp4"]
    assert replaced.id == first["a.mp4"].id, "one item per URI: the same item, a new version"
    assert (replaced.size, replaced.version) == (other_clip.stat().st_size, version_of(target))
    assert replaced.version != first["a.mp4"].version
    assert (replaced.state, replaced.frames, replaced.error) == ("pending", None, None)
    assert LedgerReads(ledger).attempts(replaced.id) == [], "the old version's history is gone with it"
    assert LedgerReads(ledger).join_parts(replaced.id) == ()
    task = ledger.claim("w", 60)  # its tasks start over with a new probe
    assert (task.item_id, task.kind, task.seq) == (replaced.id, "probe", 0)
    assert now["b.mp4"] == first["b.mp4"] and LedgerReads(ledger).attempts(now["b.mp4"].id) == neighbour_attempts

    # A replacement that lands while the old version is still settling is one new version, not two.
    shutil.copyfile(clip, neighbour)
    set_mtime(neighbour, 10)
    watcher.poll()
    set_mtime(neighbour, 5)
    assert watcher.poll() == []
    assert relpaths(watcher.poll()) == ["b.mp4"]
    assert items(ledger)["b.mp4"] == (clip.stat().st_size, version_of(neighbour))


def test_a_replaced_file_is_picked_up_after_a_restart_too(src, tmp_path, clip, other_clip):
    path = tmp_path / "ledger.sqlite"
    target = src / "a.mp4"
    shutil.copyfile(clip, target)
    set_mtime(target, 60)
    first = Ledger(path)
    watcher = watcher_for(src, tmp_path / "out", first)
    watcher.poll(), watcher.poll()
    _process(first)
    first.close()

    shutil.copyfile(other_clip, target)  # replaced while the service was down
    again = Ledger(path)
    try:
        restarted = watcher_for(src, tmp_path / "out", again)
        assert restarted.poll() == []
        assert relpaths(restarted.poll()) == ["a.mp4"]
        (item,) = again.items()
        assert (item.state, item.version) == ("pending", version_of(target))
    finally:
        again.close()


# -- one bad file must not stop the others -----------------------------------------------------------


def test_two_files_bound_for_the_same_output_do_not_stop_the_others(src, tmp_path, ledger, clip):
    shutil.copyfile(clip, src / "a.mp4")
    watcher = watcher_for(src, tmp_path / "out", ledger)
    watcher.poll(), watcher.poll()
    shutil.copyfile(clip, src / "a.avi")  # its output would be a.mp4 too
    shutil.copyfile(clip, src / "b.mp4")
    watcher.poll(), watcher.poll(), watcher.poll()
    assert sorted(items(ledger)) == ["a.mp4", "b.mp4"], "the file recorded first keeps its output"
    assert watcher.last_error is not None and "a.avi" in watcher.last_error, watcher.last_error
    assert "a.mp4" in watcher.last_error

    (src / "a.avi").rename(src / "a2.avi")  # the operator renames it: it is processed, the warning goes
    watcher.poll(), watcher.poll()
    assert sorted(items(ledger)) == ["a.mp4", "a2.avi", "b.mp4"]
    assert watcher.last_error is None
    outputs = [item.output_uri for item in ledger.items()]
    assert len(set(outputs)) == len(outputs)


def test_a_file_with_an_unusable_name_does_not_stop_the_others(src, tmp_path, ledger, clip):
    shutil.copyfile(clip, src / "bad\nname.mp4")  # a control character: no output path can mirror it
    shutil.copyfile(clip, src / "good.mp4")
    watcher = watcher_for(src, tmp_path / "out", ledger)
    watcher.poll(), watcher.poll()
    assert sorted(items(ledger)) == ["good.mp4"]
    assert watcher.last_error is not None and "control character" in watcher.last_error


# -- the watching thread -------------------------------------------------------------------------------


def wait_until(condition, timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_missing_source_is_reported_and_the_thread_keeps_watching(tmp_path, ledger, clip):
    src = tmp_path / "not-yet"
    watcher = watcher_for(src, tmp_path / "out", ledger, interval=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: watcher.last_error is not None, what="the listing error")
        assert str(src) in watcher.last_error and "no such file" in watcher.last_error, watcher.last_error
        time.sleep(0.3)  # several more failed looks
        assert thread.is_alive() and watcher.polls == 0 and items(ledger) == {}

        src.mkdir()  # the folder appears (a mount came back): watching goes on by itself
        shutil.copyfile(clip, src / "a.mp4")
        wait_until(lambda: "a.mp4" in items(ledger), what="the file to be an item")
        wait_until(lambda: watcher.last_error is None and watcher.polls >= 2, what="the error to clear")
        assert thread.is_alive()

        shutil.rmtree(src)  # and goes away again
        wait_until(lambda: watcher.last_error is not None, what="the listing error again")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive(), "the thread ends once stopped"
    assert sorted(items(ledger)) == ["a.mp4"]


def test_the_thread_stops_promptly_even_with_a_long_interval(src, tmp_path, ledger):
    watcher = watcher_for(src, tmp_path / "out", ledger, interval=3600)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    wait_until(lambda: watcher.polls == 1, what="the first look")
    started = time.monotonic()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 2
