"""Draws the demo scene shipped in tests/data/images (PNG and JPEG)."""
import math
import sys

from PIL import Image, ImageDraw


def scene(w=320, h=240):
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    for y in range(h // 2):
        t = y / (h / 2)
        d.line([(0, y), (w, y)], fill=(int(90 + 80 * t), int(150 + 60 * t), 235))
    d.rectangle([0, h // 2, w, h], fill=(70, 140, 60))
    d.polygon([(0, h), (w * 0.45, h // 2), (w * 0.55, h // 2), (w, h)], fill=(110, 110, 115))
    d.ellipse([w - 70, 18, w - 30, 58], fill=(250, 220, 90))
    d.rectangle([40, 80, 120, 150], fill=(180, 60, 50))
    d.polygon([(30, 80), (80, 45), (130, 80)], fill=(90, 40, 30))
    d.rectangle([70, 115, 90, 150], fill=(60, 35, 20))
    for i in range(5):
        x = 190 + i * 22
        d.rectangle([x, 95 + 4 * math.sin(i), x + 6, 130], fill=(90, 60, 30))
        d.ellipse([x - 12, 70, x + 18, 105], fill=(40, 110 + 10 * i, 40))
    return img


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/images"
    img = scene()
    img.save(f"{out}/scene.png")
    img.save(f"{out}/scene.jpg", quality=90)
