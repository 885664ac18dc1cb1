"""The Redis side: the shared counter's background writer (counter.py) and its I/O-free state
(ledger, lifecycle, health), the batch script and its arguments, the client for a server, a
Redis Cluster or Sentinel, URLs, key names, failure kinds and the eviction policy."""
