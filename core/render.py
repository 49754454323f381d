"""Text queries become images, so the vision encoder puts them in the same space as pages."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

# Pages are rasterized to a 1024 px long side, so body text (10-12 pt on A4/Letter) is 13-16 px tall in the
# encoder's global view. The query canvas stays at or under the 768 px tile size, so the processor makes no
# tiles and scales the global view by 1024/768; glyphs drawn at 11 px arrive at about 15 px, like body text.
CANVAS_WIDTH = 768
DEFAULT_FONT_PX = 11
MARGIN = 8


def render_query(text: str, font_px: int = 0) -> Image.Image:
    """Render `text` black on white with Pillow's bundled font (the same on every machine), wrapped to the
    canvas width and cropped to the lines so blank canvas stays small."""
    text = " ".join(text.split())
    if not text:
        raise ValueError("the query is empty")
    font = ImageFont.load_default(size=font_px or DEFAULT_FONT_PX)
    lines = _wrap(text, font, CANVAS_WIDTH - 2 * MARGIN)
    ascent, descent = font.getmetrics()
    line_height = ascent + descent + max(2, (ascent + descent) // 4)
    height = min(CANVAS_WIDTH, 2 * MARGIN + line_height * len(lines))
    image = Image.new("RGB", (CANVAS_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + row * line_height), line, fill="black", font=font)
    return image


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        while font.getlength(word) > width:  # a single word longer than the line: break it
            cut = max(1, int(len(word) * width / font.getlength(word)))
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines
