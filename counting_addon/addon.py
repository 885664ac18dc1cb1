"""The mitmproxy script: mitmdump -s counting_addon/addon.py --mode reverse:https://example.com"""

from counting_addon import CountingProxy

addons = [CountingProxy()]
