"""Evaluation: what the protocols share (``common``), the two-domain protocol (``two_domain``)
and ``unpaired eval`` of a run (``run``)."""
