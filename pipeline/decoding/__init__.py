"""Decoding: CTC greedy/beam backends (ctc.py) and metrics (metrics.py)."""
