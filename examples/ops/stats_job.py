"""The tutorial's job from Python (docs/ops.md): the Brightness op over clips/, records loaded back.

    python stats_job.py
"""

import framefleet
from brightness import Brightness

if __name__ == "__main__":  # workers are spawned processes: guard the entry point
    pipeline = framefleet.Pipeline(ops=(Brightness(dark=50),))
    result = framefleet.run(["clips/"], "out-py/", pipeline, workers=2)
    print(result.counts, result.frames)
    table = framefleet.load_records("out-py/")
    print(table.num_rows, "records; darkest frame:", min(table["brightness"].to_pylist()))
