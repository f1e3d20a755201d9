"""The streaming daemon: sources, batcher, model worker, post-processing, sinks, wiring."""
