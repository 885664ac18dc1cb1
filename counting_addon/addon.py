"""The mitmproxy script: mitmdump -s counting_addon/addon.py --mode reverse:https://example.com

The addon's hooks and commands are this module's own names (script_names, proxy.py), not an
`addons = [CountingProxy()]` list, which works as well but costs more on every request.
"""

from counting_addon.proxy import CountingProxy, script_names

globals().update(script_names(CountingProxy()))
