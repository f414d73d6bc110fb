"""Writes JPEG and WebP files the way AUTOMATIC1111 saves them, for tests/unit/image-metadata.test.ts.

A1111 (modules/images.py save_image_with_geninfo) saves a JPEG with Pillow, then
`piexif.insert(piexif.dump({"Exif": {UserComment: UserComment.dump(infotext, encoding="unicode")}}))`;
a WebP with Pillow's `save(..., exif=<the same dump>)`. Run with Debian's python3-piexif and
python3-pil (piexif 1.1.3, Pillow 9.4):

    /usr/bin/python3 tools/reference/record_a1111_exif.py tests/fixtures/reference/a1111-exif
"""

import json
import sys
from pathlib import Path

import piexif
import piexif.helper
import PIL
from PIL import Image

INFOTEXT = (
    "a cat in a café, 猫, (masterpiece:1.2) 😺\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 24, Sampler: Euler a, CFG scale: 6.5, Seed: 1234567, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    exif = piexif.dump(
        {"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(INFOTEXT, encoding="unicode")}}
    )
    image = Image.new("RGB", (8, 8), (40, 120, 200))
    image.save(out / "a1111.jpg", format="JPEG", quality=80)
    piexif.insert(exif, str(out / "a1111.jpg"))
    image.save(out / "a1111.webp", format="WEBP", quality=80, lossless=False, exif=exif)
    (out / "a1111.json").write_text(
        json.dumps(
            {
                "source": f"piexif {piexif.VERSION}, Pillow {PIL.__version__}; "
                "recorded by tools/reference/record_a1111_exif.py",
                "infotext": INFOTEXT,
                "exif": exif.hex(),
            },
            ensure_ascii=True,
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
