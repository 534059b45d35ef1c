"""Reading facts out of tool output, for snippets' checks."""
from __future__ import annotations

import re


def received(ping_output: str) -> int:
    """How many replies ping counted ("3 packets transmitted, 3 received, ..."); 0 if none."""
    m = re.search(r"(\d+) received", ping_output)
    return int(m.group(1)) if m else 0
