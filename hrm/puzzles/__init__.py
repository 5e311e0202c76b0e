"""Converters behind `hrm-eval convert KIND`: each module exposes `configure(parser)` and
`convert(args) -> dict` (the summary, also written into the output's dataset.json)."""
