"""What a run writes under `<output>/<run id>/` (the layout is drawn in `layout`): committed
units and their predictions, metrics and leaderboard, votes, checkpoint health."""
