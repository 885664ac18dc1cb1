"""The proxy's own endpoints: the rules they share and their paths (rules.py), /status,
/metrics and the figures of one scrape, and who may ask them (access.py)."""
