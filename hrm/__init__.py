"""hrm: everything about HRM / TRM checkpoints and puzzles that needs no Ray.

    model/       the networks (HRM, TRM), their layers, losses and FLOP counts
    checkpoint/  finding step files (local or s3), loading and checking them, their health
    data/        the two dataset layouts: schemas, checks, readers, the writer
    puzzles/     per puzzle kind its encoding, transforms and generator; the converters
    eval/        the ACT engine, metrics, statistics, votes, and the evaluate-a-shard recipe
    storage.py   local paths and s3:// behind one small interface
    errors.py    InputError, the one error users see
    train.py     a small trainer that writes reference-format checkpoints (the demo's)
"""
