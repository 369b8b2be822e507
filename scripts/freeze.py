#!/usr/bin/env python3
"""Print `name==version` for every package pip installed in this interpreter's environment.

Unlike `pip freeze`, this skips the egg-info directories that the ROS 2 wheels (and our own
message build) drop into site-packages for each message package: they are not distributions pip
can install, so a lock that lists them cannot be installed.
"""

import importlib.metadata as md

EXCLUDE = {"pip", "threedmoe-ros", "threedmoe-msgs"}

pins = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    installer = (dist.read_text("INSTALLER") or "").strip()
    if not name or installer != "pip" or name.lower().replace("_", "-") in EXCLUDE:
        continue
    if dist.read_text("direct_url.json") and '"editable": true' in dist.read_text("direct_url.json"):
        continue
    pins[name.lower()] = f"{name}=={dist.version}"
print("\n".join(pins[k] for k in sorted(pins)))
