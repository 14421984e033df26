"""Building the guard's learned layer: the corpus (shared data + the project's own sets and generated variants),
its deterministic train/test split, and the training command."""
