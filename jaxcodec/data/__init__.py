"""Data: the corpus manifest, the shard format shared with the teachers, and the training input pipeline."""
