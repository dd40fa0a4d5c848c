"""Where videos and outputs live: fsspec storage and path safety, input sources, remote reads, bulk copies,
temporary names and lock files."""
