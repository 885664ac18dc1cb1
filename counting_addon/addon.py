"""The mitmproxy script: mitmdump -s counting_addon/addon.py --mode reverse:https://example.com"""

from counting_addon import CountingProxy

# The addons themselves rather than the CountingProxy holding them: one level less for
# mitmproxy to walk on each of the ~8 hook calls of every request.
addons = CountingProxy().addons
