"""The tutorial's job from Python (docs/ops.md): the Brightness op over clips/, records loaded back.

    python stats_job.py
"""

import framefleet
from brightness import Brightness

if __name__ == "__main__":  # workers are spawned processes: guard the entry point
    pipeline = framefleet.Pipeline(ops=(Brightness(dark=50),))
    settings = framefleet.RunSettings().given(workers=2)
    result = framefleet.run(framefleet.JobSpec(["clips/"], "out-py/", pipeline, settings))
    print(result.counts, result.frames)
    table = framefleet.load_records("out-py/")
    print(table.num_rows, "records; darkest frame:", min(table["brightness"].to_pylist()))
