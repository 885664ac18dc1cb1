"""scripts/run: the counting reverse proxy started for you, with an embedded Redis when none
answers. Not part of the addon: mitmproxy never imports it."""
