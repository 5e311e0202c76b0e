"""Checkers for decoded text outputs: code run in a sandbox, tool chains replayed on a mock environment, string matches."""
