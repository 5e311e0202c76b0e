"""Puzzle datasets in the reference numpy layout and in our Parquet layout: what they hold
(`schema`), how they are checked (`checks`), read (`reader` opens either layout as a
`dataset.Dataset`) and written (`writer`, all or nothing), and copied between layouts
(`convert`)."""
