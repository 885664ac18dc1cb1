"""A mitmproxy addon that counts proxied requests in Redis and answers /status and /metrics.

The addon is `CountingProxy` (proxy.py); addon.py is the script mitmproxy loads.
"""

# The one place the version is written: pyproject.toml reads it, `counting-proxy --version`
# prints it.
__version__ = "0.1.0"

from counting_addon.endpoints.access import AccessControl
from counting_addon.endpoints.metrics import MetricsEndpoint
from counting_addon.endpoints.rules import Endpoints
from counting_addon.endpoints.status import StatusEndpoint
from counting_addon.proxy import CountingProxy
from counting_addon.traffic.chunking import FrameUnknownLengthBodies
from counting_addon.traffic.counting import CountRequests
from counting_addon.traffic.streaming import StreamBodies

__all__ = [
    "AccessControl",
    "CountRequests",
    "CountingProxy",
    "Endpoints",
    "FrameUnknownLengthBodies",
    "MetricsEndpoint",
    "StatusEndpoint",
    "StreamBodies",
    "__version__",
]
