"""Reference checkpoints: finding `step_<N>` files in a run directory on any storage
(`discovery`), loading and checking them against a dataset (`loading`), and what their
tensors say about them (`health`)."""
