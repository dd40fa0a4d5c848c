"""The video layer: the only part of framefleet that imports PyAV."""

from framefleet.processing.batch import FrameBatch
from framefleet.video.container import RemoteVideo, VideoSource
from framefleet.video.decode import VideoReader
from framefleet.video.encode import EncodeOptions, VideoFormat, VideoWriter
from framefleet.video.orientation import Orientation
from framefleet.video.probe import StreamInfo, VideoInfo, count_frames, probe
from framefleet.video.remux import CarriedStream

__all__ = [
    "CarriedStream",
    "EncodeOptions",
    "FrameBatch",
    "Orientation",
    "RemoteVideo",
    "StreamInfo",
    "VideoFormat",
    "VideoInfo",
    "VideoReader",
    "VideoSource",
    "VideoWriter",
    "count_frames",
    "probe",
]
