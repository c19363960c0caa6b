"""``routing-persistence run``: the long-running consumer around the pipeline."""
