"""The run's report, built from its stored results only: `build` assembles the document from
one module per section and renders it (`document`) with its figures (`plots`)."""
