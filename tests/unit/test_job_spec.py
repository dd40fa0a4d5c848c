"""JobSpec as the service's registry keeps it: `to_dict` is JSON-ready and `from_dict` gives the same job back."""

from __future__ import annotations

import json

from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.settings import RunSettings


def test_a_job_spec_survives_json_with_its_pipeline_and_settings():
    pipeline = Pipeline.from_options({"steps": [{"op": "resize", "max_size": 96}, {"op": "identity"}], "crf": 30,
                                      "segment_seconds": 4, "strict": True, "limits": {"max_pixels": 10_000_000}})
    settings = RunSettings(engine="inline").given(workers=3, max_attempts=2, preemption_notice=30.0)
    spec = JobSpec(["/in/a", "s3://bucket/b"], "/out", pipeline, settings)
    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.inputs == ["/in/a", "s3://bucket/b"] and again.output == "/out"
    assert again.pipeline.fingerprint() == pipeline.fingerprint() and again.pipeline.spec() == pipeline.spec()
    assert again.pipeline.segment_seconds == 4 and again.pipeline.strict
    assert again.settings == settings and again.settings.options.workers == 3
