"""PDF first pages via pypdfium2, and SVG dimensions read without rendering."""

from __future__ import annotations

import re

import defusedxml.ElementTree
import pypdfium2
from PIL import Image

# Only this much of an SVG file is parsed for its root attributes.
SVG_MAX_BYTES = 4 * 1024 * 1024

_SVG_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(px)?\s*$")


def render_pdf_first_page(
    path: str | bytes, max_side: int
) -> tuple[Image.Image | None, int]:
    """Return the first page rendered to fit ``max_side`` pixels, and the page count.

    The image is None for a document without pages. Raises
    ``pypdfium2.PdfiumError`` for a file pdfium cannot open, including one that
    needs a password.
    """
    document = pypdfium2.PdfDocument(path)
    try:
        page_count = len(document)
        if page_count == 0:
            return None, 0
        page = document[0]
        try:
            width_points, height_points = page.get_size()
            scale = max_side / max(width_points, height_points, 1.0)
            bitmap = page.render(scale=scale, may_draw_forms=True)
            image = bitmap.to_pil().convert("RGB")
        finally:
            page.close()
        return image, page_count
    finally:
        document.close()


def _svg_length(value: str | None) -> float | None:
    """Return a length in CSS pixels, or None for relative units such as ``100%`` or ``em``."""
    if value is None:
        return None
    match = _SVG_LENGTH.match(value)
    if match is None:
        return None
    return float(match.group(1))


def read_svg_size(path: str | bytes) -> dict:
    """Return ``{"width", "height"}`` from the root ``<svg>`` element, or an empty dict.

    The file is parsed with defusedxml, which rejects DTDs, entity expansion and
    external references, and nothing is rendered, so no external resource is
    ever fetched. Width and height come from the root attributes when they are
    plain numbers or pixels, otherwise from the ``viewBox``.
    Raises ``ValueError`` for a file that is not well-formed or not allowed.
    """
    with open(path, "rb") as handle:
        data = handle.read(SVG_MAX_BYTES + 1)
    if len(data) > SVG_MAX_BYTES:
        raise ValueError(f"SVG larger than {SVG_MAX_BYTES} bytes; dimensions not read")
    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as error:
        raise ValueError(f"SVG rejected by the safe XML parser: {error}") from error
    except defusedxml.ElementTree.ParseError as error:
        raise ValueError(f"invalid SVG: {error}") from error
    if not root.tag.endswith("svg"):
        raise ValueError(f"invalid SVG: root element is {root.tag!r}, expected svg")

    width = _svg_length(root.get("width"))
    height = _svg_length(root.get("height"))
    if width is None or height is None:
        view_box = (root.get("viewBox") or "").replace(",", " ").split()
        if len(view_box) == 4:
            try:
                width, height = float(view_box[2]), float(view_box[3])
            except ValueError:
                width = height = None
    if not width or not height or width <= 0 or height <= 0:
        return {}
    return {"width": round(width), "height": round(height)}
