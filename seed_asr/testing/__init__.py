"""Support for tests and benchmarks: synthetic shards, fixed distributed batches, local process groups."""
