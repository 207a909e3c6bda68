"""Detection: the rules and detectors, pure functions of histories and config."""
