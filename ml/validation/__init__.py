"""The data gate: an expectation suite defined in code, and the quarantine for batches it rejects."""
