"""Records what CLIP's own tokenizer does with text of each kind, for tests/unit/clip-text.test.ts.

Runs OpenAI CLIP's clip/simple_tokenizer.py (openai/CLIP at d05afc43) with ftfy 6.3.1
(rspeer/python-ftfy at 74dd045; CLIP's requirements.txt names ftfy without a version) on the
vocabulary in resources/clip-bpe/. Neither is vendored; point the script at
checkouts of both:

    PYTHONPATH=/path/to/python-ftfy python3 tools/reference/record_clip_text.py \\
        /path/to/CLIP/clip/simple_tokenizer.py > tests/fixtures/reference/clip-text-ids.json

Needs python3-regex (Debian) for CLIP's pre-tokenizer pattern.
"""

import importlib.util
import json
import sys
from pathlib import Path

import ftfy

HERE = Path(__file__).resolve().parent
VOCAB = HERE.parent.parent / "resources/clip-bpe/bpe_simple_vocab_16e6.txt.gz"

# (kind, text). Every kind of repair ftfy's fix_text and html.unescape make, plus text they must
# leave alone.
TEXTS = [
    ("plain", "a photo of a cat sitting on a red chair"),
    ("case and whitespace", "  A   Small\n\tRED  Circle  "),
    ("mojibake latin-1", "cafÃ© au lait"),
    ("mojibake latin-1", "schÃ¶n und grÃ¼n"),
    ("mojibake windows-1252 quotes", "â€œquotedâ€\x9d and itâ€™s fine"),
    ("mojibake windows-1252", "âœ” No problems"),
    ("mojibake twice", "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows."),
    ("mojibake with lost no-break space", "voilÃ le travail"),
    ("mojibake windows-1251", "РџСЂРёРІРµС‚ РјРёСЂ"),
    ("mojibake of cyrillic as latin-1", "ÐŸÑ€Ð¸Ð²ÐµÑ‚"),
    ("mojibake of emoji", "a party ðŸŽ‰ tonight"),
    ("mojibake mixed with correct text", "naïve cafÃ© in København"),
    ("mojibake kaomoji", "&macr;\\_(ã\x83\x84)_/&macr;"),
    ("c1 controls", "\x93smart\x94 quotes from windows-1252"),
    ("not mojibake", "Ã is a letter in Portuguese"),
    ("not mojibake accents", "crème brûlée à la carte, señor"),
    ("full-width", "ＡＢＣ ｆｕｌｌ　ｗｉｄｔｈ １２３！"),
    ("half-width katakana", "ｶﾀｶﾅ"),
    ("curly quotes", "\u201cdouble\u201d and \u2018single\u2019 quotes, it\u2019s"),
    ("ligatures", "ﬁne ﬂowers, eﬀect, oﬃce, ĳssel"),
    ("control characters", "red\x00 cir\x07cle\x1b with\x7f dots\u200b"),
    ("byte order mark", "\ufeffa cat\ufeff"),
    ("bidi controls", "left\u202aright\u202c"),
    ("line breaks", "one\r\ntwo\rthree\u2028four\u2029five\x85six"),
    ("terminal escapes", "\x1b[31mred\x1b[0m \x1b[1;32mbold green\x1b[0m"),
    ("html double-escaped", "cats &amp;amp; dogs"),
    ("html triple-escaped", "cats &amp;amp;amp; dogs"),
    ("html without semicolon", "&copy 2024 &amp friends &lt3"),
    ("html prefix without semicolon", "&copyright &notit; &notin;"),
    ("html numeric", "it&#x27;s &#39;quoted&#39; &#8220;x&#8221; &#x1F600;"),
    ("html numeric edge cases", "a&#0;b&#1;c&#x80;d&#x81;e&#xD800;f&#x110000;g&#65535;h"),
    ("html numeric long", "&#0000065;&#x000041;"),
    ("html named", "&hellip; &mdash; &eacute;t&eacute; &nbsp;x &frac12;"),
    ("html uppercase", "&EACUTE;T&EACUTE; &AMP; &COPY; &Amp;"),
    ("html unknown", "&xyz; &#x; a & b &; &#;"),
    ("html with a tag", "<b>bold</b> &amp;amp; &eacute;"),
    ("html tag on a later line", "first &amp;amp;amp;\nsecond <i> &amp;amp;amp;"),
    ("html tag on an earlier line", "first <i> &amp;amp;amp;\nsecond &amp;amp;amp;"),
    ("html entity of a bom", "a&#xfeff;b &#x2028;c"),
    ("bom escaped twice", "a &amp;#xfeff; b&amp;#xfeff;c"),
    ("information separators", "a\x1cb \x1f c\u3000d\u00a0e"),
    ("emoji", "a cat 😺 with a hat 🎩, 👍🏽 and 👨‍👩‍👧"),
    ("cjk", "一只猫坐在红色的椅子上 猫の写真 고양이"),
    ("combining accents", "cafe\u0301 nai\u0308ve A\u030a"),
    ("surrogate code points", "\ud83d\ude00 alone \ud83d end"),
    ("contractions and digits", "It's 42 cats!!! we're OK, they'll see 3.5x"),
    ("prompt syntax", "(masterpiece:1.2), [blurry], {best quality}, <lora:x:0.5>"),
    ("special tokens", "<|startoftext|>hello<|endoftext|>"),
    ("greek and math", "Δx ≈ 0.5 µm, 10³ ½ × 2 ≠ 1"),
    ("mac roman mojibake", "Ã\x87a va ? ‚Äúquoted‚Äù"),
]


def load_clip_tokenizer(path: str):
    spec = importlib.util.spec_from_file_location("simple_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    module = load_clip_tokenizer(sys.argv[1])
    tokenizer = module.SimpleTokenizer(str(VOCAB))
    entries = []
    for kind, text in TEXTS:
        cleaned = module.whitespace_clean(module.basic_clean(text)).lower()
        entries.append(
            {
                "kind": kind,
                "text": text,
                "fixed": ftfy.fix_text(text),
                "cleaned": cleaned,
                "ids": tokenizer.encode(text),
            }
        )
    json.dump(
        {
            "source": "openai/CLIP d05afc43 clip/simple_tokenizer.py SimpleTokenizer.encode, "
            + f"ftfy {ftfy.__version__} (rspeer/python-ftfy 74dd045), "
            + "vocabulary bpe_simple_vocab_16e6.txt.gz; recorded by tools/reference/record_clip_text.py",
            "entries": entries,
        },
        sys.stdout,
        ensure_ascii=True,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
