"""Undo the usual evasions before a text is judged: what an attacker hides, the guard reads.

`canonical(text)` folds what looks alike into one form (NFKC, homoglyphs of other scripts, invisible and
zero-width characters removed, Unicode tag characters decoded, leetspeak and spaced-out letters joined,
case folded). `variants(text)` adds what a wrapper hides: base64 / hex blobs decoded, the rot13 reading,
the reversed reading. `evasion_signs(text)` counts the evasions themselves (a word mixing Latin and Cyrillic
letters, invisible characters), which are evidence on their own: benign text seldom has them.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass

# Letters of other scripts that render like Latin ones (the common subset of Unicode's confusables.txt
# that attacks use; NFKC already folds full-width and mathematical alphanumerics).
_HOMOGLYPHS = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "ɡ": "g", "һ": "h", "ӏ": "l", "ү": "y", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H",
    "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin look-alikes and symbols
    "ı": "i", "ȷ": "j", "ſ": "s", "ℓ": "l", "⍺": "a", "∪": "u", "∨": "v",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "!": "i", "|": "l", "+": "t", "€": "e"})
_TAG_BASE = 0xE0000  # U+E0020..U+E007E mirror ASCII: "ASCII smuggling" hides a prompt in them
_INVISIBLE_EXTRA = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\u180e"}
_SPACED = re.compile(r"(?<!\S)(?:\w[ .\-_*]){3,}\w(?!\S)")  # "i g n o r e", "i.g.n.o.r.e"
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_-]{16,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[ :]?){8,}")
_SPACES = re.compile(r"\s+")
_TAG = re.compile("[\U000E0000-\U000E007F]")
_ASCII_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what `_is_invisible` removes of ASCII: controls


def _is_invisible(ch: str) -> bool:
    if ch in "\n\t ":
        return False
    cat = unicodedata.category(ch)
    return cat in ("Cf", "Cc", "Co", "Cn", "Mn") or ch in _INVISIBLE_EXTRA or (
        0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF)  # variation selectors


def _is_tag(ch: str) -> bool:
    return 0xE0000 <= ord(ch) <= 0xE007F


def reveal_tags(text: str) -> str:
    """Unicode tag characters turned back into the ASCII they mirror (U+E0041 → 'A')."""
    if text.isascii() or not _TAG.search(text):
        return text
    return "".join(chr(ord(ch) - _TAG_BASE) if 0xE0020 <= ord(ch) <= 0xE007E else ch for ch in text)


def strip_invisible(text: str) -> str:
    """Zero-width, format, control, private-use and combining characters removed; tags revealed.

    Combining marks go too (after NFKD they are only accents): "ïgnörë" reads "ignore". ASCII text (most
    requests) takes a regex instead of the per-character walk: of ASCII only control characters are invisible.
    """
    if text.isascii():
        return _ASCII_INVISIBLE.sub("", text)
    text = reveal_tags(text)
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not _is_invisible(ch))


def join_spaced(text: str) -> str:
    """Letters spaced out to dodge word matching joined back ("i g n o r e" → "ignore")."""
    return _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group()), text)


def visible(text: str) -> str:
    """`canonical`'s first half: NFKC, then invisible characters removed (`strip_invisible`)."""
    return strip_invisible(unicodedata.normalize("NFKC", text))


def fold_visible(text: str) -> str:
    """`canonical`'s second half, for text `visible` already returned: homoglyphs, NFKC, spacing, case."""
    text = unicodedata.normalize("NFKC", text.translate(_HOMOGLYPHS))
    return _SPACES.sub(" ", join_spaced(text)).strip().casefold()


def canonical(text: str) -> str:
    """The folded reading a guard matches on: NFKC, homoglyphs, invisibles, spacing, case; single spaces."""
    return fold_visible(visible(text))


def deleet(text: str) -> str:
    """Leetspeak read as letters, only inside words that mix letters and leet digits/symbols ("1gn0r3")."""
    def fix(match: re.Match[str]) -> str:
        word = match.group()
        return word.translate(_LEET) if re.search(r"[a-z]", word) and re.search(r"[0-9@$!|+€]", word) else word
    return re.sub(r"[\w@$!|+€]+", fix, text)


def _printable_share(text: str) -> float:
    return sum(ch.isprintable() or ch in "\n\t" for ch in text) / max(len(text), 1)


def _from_base64(blob: str) -> str | None:
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            out = decode(blob + "=" * (-len(blob) % 4)).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if len(out) >= 8 and _printable_share(out) > 0.95 and re.search(r"[A-Za-z]{3}", out):
            return out
    return None


def _from_hex(blob: str) -> str | None:
    try:
        out = bytes.fromhex(re.sub(r"[ :]", "", blob)).decode("utf-8")
    except ValueError:
        return None
    return out if _printable_share(out) > 0.95 and re.search(r"[A-Za-z]{3}", out) else None


def decoded_blobs(text: str) -> list[str]:
    """Base64 (standard and URL-safe) and hex blobs in `text` that decode to readable text."""
    found = [out for m in _B64.finditer(text) if (out := _from_base64(m.group())) is not None]
    return found + [out for m in _HEX.finditer(text) if (out := _from_hex(m.group())) is not None]


_PROSE = re.compile(r"[\w\s.,;:'\"!?()\[\]{}@\-/]")  # prose, JSON, e-mail; printable junk is ~35 % other symbols
_CHUNK = 48


def _reads_as_text(out: str) -> bool:
    """Decoded bytes that read as text all the way: every character printable, and every 48-character stretch
    at least 90 % letters, digits, spaces and common punctuation, with a space in it. A blob with instructions glued
    to its end (base64 letters that decode to printable junk) fails in its last stretch and stays as written."""
    if not all(ch.isprintable() or ch in "\n\t\r" for ch in out):
        return False
    for start in range(0, len(out), _CHUNK):
        chunk = out[start:start + _CHUNK]
        if len(_PROSE.findall(chunk)) < 0.9 * len(chunk) or (len(chunk) >= _CHUNK // 2 and not re.search(r"\s", chunk)):
            return False
    return True


def _reveal(decoded: str | None, blob: str) -> str:
    return decoded if decoded is not None and _reads_as_text(decoded) else blob


def reveal_blobs(text: str) -> str:
    """`text` with each base64/hex blob that decodes to text (`_reads_as_text`) replaced by that text; other blobs
    stay as written. What the classifier reads, so it judges the hidden words rather than the blob's look: as
    written, a blob of a benign invoice and one of a jailbreak both read as noise to it."""
    if not _B64.search(text) and not _HEX.search(text):
        return text
    text = _B64.sub(lambda m: _reveal(_from_base64(m.group()), m.group()), text)
    return _HEX.sub(lambda m: _reveal(_from_hex(m.group()), m.group()), text)


def variants(text: str, max_chars: int | None = None) -> list[tuple[str, str]]:
    """(name, canonical text) readings of `text` to judge: as written, leet-folded, rot13, reversed, and
    each decoded base64/hex blob. A guard that judges every reading defeats the wrapper."""
    if max_chars is not None and len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + "\n" + text[-half:]
    base = canonical(text)
    out = [("text", base)]
    leet = deleet(base)
    if leet != base:
        out.append(("leetspeak", leet))
    out.append(("rot13", codecs.encode(base, "rot13")))
    out.append(("reversed", base[::-1]))
    out += [("base64/hex", canonical(blob)) for blob in decoded_blobs(text)]
    return out


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ")[0] if name else ""


@dataclass(frozen=True)
class EvasionSigns:
    """Evasions found in a text: each is a sign of an attack whatever the text says."""

    invisible: int  # zero-width, tag, format characters
    mixed_script_words: int  # words with Latin letters and Cyrillic/Greek/… letters together
    tags: int  # Unicode tag characters (ASCII smuggling)


def evasion_signs(text: str) -> EvasionSigns:
    """Counts of hidden characters and of words that mix scripts ("раypal" with a Cyrillic р)."""
    if text.isascii():  # no format, tag or private-use characters, one script
        return EvasionSigns(invisible=0, mixed_script_words=0, tags=0)
    invisible = sum(1 for ch in text if ch not in "\n\t " and (unicodedata.category(ch) in ("Cf", "Co")
                    or ch in _INVISIBLE_EXTRA or 0xFE00 <= ord(ch) <= 0xFE0F))
    tags = sum(1 for ch in text if _is_tag(ch))
    mixed = 0
    for word in re.findall(r"\w{3,}", unicodedata.normalize("NFKC", text)):
        scripts = {_script(ch) for ch in word if ch.isalpha()}
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"}:
            mixed += 1
    return EvasionSigns(invisible=invisible, mixed_script_words=mixed, tags=tags)
