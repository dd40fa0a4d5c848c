"""Batch jobs: the spec, the run, the job directory and its ledger (store and view), the worker and the task body."""
