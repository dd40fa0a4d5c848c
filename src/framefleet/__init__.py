"""framefleet: run deep-learning models over large collections of videos."""
