"""Unit tests are grouped like the code (engine/, stream/, trt/, simulators/), without packages.

Test modules import shared helpers by module name (``from test_data import write_record``);
every group folder goes on ``sys.path`` so such an import works from any group.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _group in sorted(p for p in HERE.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
    if str(_group) not in sys.path:
        sys.path.insert(0, str(_group))
