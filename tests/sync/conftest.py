"""Make the shop example importable (``shop.*``), as the example tests do."""

from __future__ import annotations

import sys

from tests.helpers import ROOT

SHOP_ROOT = ROOT / "examples" / "shop"
if str(SHOP_ROOT) not in sys.path:
    sys.path.insert(0, str(SHOP_ROOT))
