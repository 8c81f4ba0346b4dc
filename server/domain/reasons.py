"""Rejection reasons an authorizer may give (R5: a rejection always has a reason).
R16 assesses authorizers on giving reasonable reasons, so they come from a list."""

from __future__ import annotations

REJECTION_REASONS: dict[str, str] = {
    "ID_MISMATCH": "Identity document does not match the customer or the account",
    "ID_INVALID": "Identity document expired, damaged or not acceptable",
    "SIGNATURE_MISMATCH": "Signature on the voucher does not match",
    "AMOUNT_MISMATCH": "Amount keyed in differs from the voucher",
    "DATA_MISMATCH": "Transaction data differs from the documents",
    "DOCUMENT_MISSING": "A required document is missing",
    "CUSTOMER_NOT_PRESENT": "The customer is not shown at the counter",
    "SUSPECTED_FRAUD": "Suspected fraud or impersonation",
    "POLICY_VIOLATION": "Business not allowed under the rules",
    "OTHER": "Other reason, explained in the note",
}

NOTE_MAX_CHARS = 500


def check_rejection(reason_code: str, note: str) -> str | None:
    """Returns what is wrong with a rejection's reason, or None if it is acceptable."""
    if not reason_code:
        return "a rejection needs a reason_code (R5): one of " + ", ".join(REJECTION_REASONS)
    if reason_code not in REJECTION_REASONS:
        return f"unknown reason_code {reason_code!r}: one of " + ", ".join(REJECTION_REASONS)
    if reason_code == "OTHER" and not note.strip():
        return "reason_code OTHER needs a note that explains it"
    return None
