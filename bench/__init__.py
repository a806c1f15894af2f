"""FinVision Realtime benchmark harness (`python -m bench`, `make bench`).

Compares the streaming API (system under test) with a naive per-client pub/sub
SSE baseline (`bench.baseline_app`) measured in the same run. See bench/README.md.
"""
