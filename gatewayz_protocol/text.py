"""Text another writer left: what a decoder of foreign data may take as text.

Bytes read from Redis are decoded strictly (a lone surrogate's 3 bytes are not UTF-8), but JSON
may spell one as an escape (``"\\ud800"``): valid JSON, valid UTF-8 as stored, and a Python str no
encoder writes. One in a label value, an exemplar's trace id or a help text made every
exposition and the dashboard of the replica serving it answer 500, and the snapshot it published
unreadable by its followers. Every decoder of foreign JSON asks ``is_text`` of what it decoded.
"""

from __future__ import annotations


def is_text(value: object) -> bool:
    """Whether ``value`` is a str every encoder can write: UTF-8 encodable, no lone surrogate."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
