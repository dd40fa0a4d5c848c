"""Processing one video in one process: frame batches, the overlapped decode -> ops -> encode stream, temporal
stability and its measures, input limits and the memory budget."""
