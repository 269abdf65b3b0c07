"""trainer: an RQ worker on queue "training" that fits, evaluates, registers and promotes models."""
