"""Small helpers with no framefleet concepts in them: the cache folder, redaction, sizes, YAML files, the machine report."""
