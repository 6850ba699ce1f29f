"""Console output shared by the commands: rich for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console(stderr=False, highlight=False)
# Errors are not wrapped: a path or URL broken across lines cannot be copied (nor matched).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def styled(style: str, text: object) -> str:
    """`text` in a rich style, escaped: a message may hold '[...]' (a path, a list) that rich
    would otherwise take for markup and drop."""
    return f"[{style}]{escape(str(text))}[/{style}]"
