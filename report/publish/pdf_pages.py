"""On which page of a Chromium-printed PDF each linked element landed: the contents list's page numbers.

Chromium cannot number a contents list itself (CSS target-counter() is not implemented), but it writes every
internal link target as a named destination: the catalogue's /Dests dictionary maps the element's id to
[page-object /XYZ x y zoom]. The page objects are the leaves of the /Pages tree, in order. So the PDF is printed
once, read here, and printed again with the numbers filled in (report/publish/pdf.py). Chromium (Skia) writes these
dictionaries as plain objects, not inside compressed object streams; if a PDF is not of that shape, the result
is empty and the contents list is printed without page numbers.
"""

from __future__ import annotations

import re

_REF = rb"(\d+) 0 R"


def _object(pdf: bytes, number: int) -> bytes | None:
    match = re.search(rb"(?:^|[\r\n])" + str(number).encode() + rb" 0 obj\s*(.*?)endobj", pdf, re.S)
    return match.group(1) if match else None


def _page_order(pdf: bytes, node: int, depth: int = 0) -> list[int]:
    """The page objects under a /Pages node, in reading order."""
    body = _object(pdf, node)
    if body is None or depth > 32:
        return []
    if re.search(rb"/Type\s*/Page\b(?!s)", body):
        return [node]
    kids = re.search(rb"/Kids\s*\[([^\]]*)\]", body)
    if not kids:
        return []
    return [page for kid in re.findall(_REF, kids.group(1)) for page in _page_order(pdf, int(kid), depth + 1)]


def _unescape(name: bytes) -> str:
    """A PDF name's #xx escapes."""
    return re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), name).decode("utf-8", "replace")


def page_numbers(pdf: bytes) -> dict[str, int]:
    """Element id -> 1-based page number, for every named destination of the PDF; {} if it cannot be read."""
    catalog = re.search(rb"/Type\s*/Catalog(.*?)>>", pdf, re.S)
    if not catalog:
        return {}
    pages_ref = re.search(rb"/Pages\s+" + _REF, catalog.group(1))
    dests_ref = re.search(rb"/Dests\s+" + _REF, catalog.group(1))
    if not pages_ref or not dests_ref:
        return {}
    order = {page: i + 1 for i, page in enumerate(_page_order(pdf, int(pages_ref.group(1))))}
    dests = _object(pdf, int(dests_ref.group(1))) or b""
    numbers = {}
    for name, page in re.findall(rb"/([^\s/\[\]<>()]+)\s*\[\s*" + _REF, dests):
        if int(page) in order:
            numbers[_unescape(name)] = order[int(page)]
    return numbers
