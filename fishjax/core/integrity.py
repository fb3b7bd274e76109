"""A seal over every byte of a file: its sha256, written inside the file itself.

A sealed file (a fishjax safetensors artefact, or a JSON document) holds two entries in
its header or top-level object:

- `"fishjax_integrity": "sha256"`: says the file is sealed;
- `"fishjax_sha256": "<64 hex>"`: the sha256 of the file's bytes with these 64 digits
  replaced by zeros.

So one changed byte anywhere, in the tensors, in the header's shapes or offsets, in the
metadata or in the seal itself, makes the file fail its check; a file that says it is
sealed but has lost its seal (a changed key name) fails too. Files written before seals
existed have neither entry and are read as before (their content hash, if any, is still
checked by the caller).
"""

from __future__ import annotations

import hashlib
import re

SEAL_KEY = "fishjax_sha256"
SEALED_KEY = "fishjax_integrity"
SEALED_VALUE = "sha256"
PLACEHOLDER = "0" * 64

_SEAL = re.compile(rb'"' + SEAL_KEY.encode() + rb'":\s*"([0-9a-f]{64})"')
_SEALED = re.compile(rb'"' + SEALED_KEY.encode() + rb'":\s*"' + SEALED_VALUE.encode() + rb'"')


def seal_entries() -> dict[str, str]:
    """The two entries a sealed file starts with (the seal still a placeholder)."""
    return {SEALED_KEY: SEALED_VALUE, SEAL_KEY: PLACEHOLDER}


def seal(data: bytes, header_end: int | None = None) -> bytes:
    """`data` (holding `seal_entries()` once, in `data[:header_end]`) with the placeholder
    replaced by the sha256 of `data`."""
    region = data[:header_end] if header_end is not None else data
    found = [m for m in _SEAL.finditer(region) if m.group(1) == PLACEHOLDER.encode()]
    if len(found) != 1:
        raise ValueError(f"expected one {SEAL_KEY} placeholder to seal, found {len(found)}")
    start, end = found[0].span(1)
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:start] + digest + data[end:]


def check_seal(data: bytes, header_end: int | None = None) -> bool | str:
    """True if `data` is sealed and intact; False if it carries no seal (a file written
    before seals); else the reason it fails, as a short phrase."""
    region = data[:header_end] if header_end is not None else data
    seals = list(_SEAL.finditer(region))
    sealed = _SEALED.search(region) is not None
    if not seals and not sealed:
        return False
    if len(seals) != 1 or not sealed:
        return "its integrity entries are damaged"
    start, end = seals[0].span(1)
    digest = hashlib.sha256(data[:start] + PLACEHOLDER.encode() + data[end:]).hexdigest()
    if digest != seals[0].group(1).decode():
        return "its bytes do not match the sha256 it was sealed with (changed or corrupt bytes)"
    return True
