"""counting_addon with its Redis writes held back: the cost of its hooks alone.

benchmarks/instructions.sh loads this instead of counting_addon/addon.py for its "hooks only"
variant. The writer makes its first write, then waits an hour before the next, so a measured
run sees the addon's hooks with a healthy Redis connection and no writes (a Redis that is down
instead would add the cost of reconnecting, which grows with the run's length, not with its
requests).
"""

from counting_addon.proxy import CountingProxy, script_names
from counting_addon.store import counter

counter.WRITE_INTERVAL = 3600.0

# As counting_addon/addon.py gives them to mitmproxy.
globals().update(script_names(CountingProxy()))
