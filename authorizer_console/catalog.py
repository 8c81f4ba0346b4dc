"""What the console shows for codes: business type names in Chinese and English from
the center's catalog (read by authq.catalog, which the teller's command line shares),
rejection reasons and image kinds. Data only: reading them never touches the network."""

from __future__ import annotations

from authq.catalog import BusinessName, business_name, business_names
from authq.render import image_kinds

from server.domain.reasons import REJECTION_REASONS

__all__ = [
    "IMAGE_KINDS",
    "KIND_LABELS",
    "REASONS",
    "BusinessName",
    "business_name",
    "business_names",
]

# In the API's order (ImageKind): the console's number keys choose them by it.
IMAGE_KINDS = tuple(image_kinds())
KIND_LABELS = {
    "ID_FRONT": "ID card front",
    "ID_BACK": "ID card back",
    "VOUCHER": "Voucher",
    "APPLICATION_FORM": "Application form",
    "CUSTOMER_PHOTO": "Customer at the counter",
    "OTHER": "Other document",
}
# Code and what it means, in the center's order (the authorizer's command line offers
# the same codes).
REASONS: tuple[tuple[str, str], ...] = tuple(REJECTION_REASONS.items())
