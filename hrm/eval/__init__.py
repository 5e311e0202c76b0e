"""Evaluation: the batched ACT engine (`engine`) predicts; `metrics` and `stats` score exactly;
`votes` combines predictions (ARC augmentation voting, majorities, ensembles); `shard` is the
one recipe that runs a checkpoint over a range of examples."""
