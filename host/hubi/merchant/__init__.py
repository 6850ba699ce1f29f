"""The merchant's side of a payment (DESIGN §2 links 1, 3, 5, 6): request, scan, outbox, upload.

Library API (what `hubi merchant` and `hubi demo` use): see ``core.Merchant``.
"""

from hubi.amounts import format_amount, parse_amount

from .checks import Verdict, check_note
from .config import (
    Identity,
    MerchantError,
    MerchantHome,
    default_home,
    import_identity,
    init_from_bank_home,
)
from .core import IssuedRequest, Merchant, ScanResult
from .outbox import Outbox

__all__ = [
    "Identity",
    "IssuedRequest",
    "Merchant",
    "MerchantError",
    "MerchantHome",
    "Outbox",
    "ScanResult",
    "Verdict",
    "check_note",
    "default_home",
    "format_amount",
    "import_identity",
    "init_from_bank_home",
    "parse_amount",
]
