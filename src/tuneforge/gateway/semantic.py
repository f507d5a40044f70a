"""The semantic cache: a question close in meaning to one already answered gets that answer.

Only the request's *question* is compared — the last user turn of a chat, or a completion's prompt. All the
rest must be equal for two requests to meet: tenant, model version, sampling parameters, system prompt and
earlier turns, and the question's *must-match signature* (its numbers, in order, and its count of
negations), because an encoder puts "a refund after 14 days" next to "after 30 days" and "can I" next to
"can't I". Those together name a context; each context keeps a list of its last `max_entries` questions
(name of the exact-cache entry + int8 embedding, ~450 bytes) in the response cache's store, under its byte
bound and TTL. A lookup embeds the question (all-MiniLM-L6-v2, the classifier's int8 ONNX graph, offline;
its first 256 word pieces), reads the list
and takes the nearest question at or above `threshold`; its exact-cache entry is the answer.

Questions in languages the encoder was not trained on are left out (`semantic.languages`, default English):
in Chinese, MiniLM's vocabulary has no pieces for most characters and different questions embed alike.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.gateway.cache import ResponseCache, answer_fields, digest
from tuneforge.gateway.config import SemanticCacheConfig

NAME_BYTES = 64  # an exact entry's digest, hex
DIM = 384
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NEGATION = re.compile(r"\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot|"
                       r"(?:do|does|did|is|are|was|were|ca|wo|should|could|would|has|have|had|must|need)nt)\b"
                       r"|n't\b", re.IGNORECASE)
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "‘": "'", "`": "'"})  # phone keyboards type ’
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_HEX = re.compile(rb"[0-9a-f]+")
# Words an encoder puts next to each other although they change the answer ("open on Saturday" / "on Sunday"
# 0.95, "price per month" / "per year" 0.94 with MiniLM): they must match, like numbers.
_MUST_MATCH = frozenset("""monday tuesday wednesday thursday friday saturday sunday weekday weekdays weekend weekends
january february march april may june july august september october november december today tomorrow yesterday
tonight morning afternoon evening night second seconds minute minutes hour hours hourly day days daily week weeks
weekly fortnight month months monthly quarter quarterly year years yearly annual annually one two three four five
six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty
forty fifty sixty seventy eighty ninety hundred thousand million billion dozen half quarter double triple first
second third fourth fifth sixth seventh eighth ninth tenth last next previous am pm noon midnight before after
since until till early earlier earliest late later latest minimum maximum min max least most more less fewer
cheapest cheaper dearer above below over under higher lower greater smaller bigger larger shorter longer faster
slower include includes including exclude excludes excluding increase decrease raise reduce enable disable
activate deactivate buy sell upgrade downgrade open close opens closes start stop adult adults child children
kid kids senior seniors student students infant infants baby babies male female""".split())
# A semantic hit answers a question the model never saw: requests whose answer repeats or acts on more than the
# question are never compared (echo returns the prompt, tool calls carry the first question's arguments).
_NOT_COMPARED = ("echo", "tools", "functions", "tool_choice", "function_call", "logprobs", "prompt_logprobs")
LOOKUPS = 3  # entries tried, nearest first: a question whose answer expired or was evicted does not shadow the next
MAX_PIECES = 256  # a longer question is not compared: the encoder reads only its first 256 word pieces


@dataclass
class Probe:
    """A request's question, embedded, and the list of its context."""

    context: str  # the list's key
    vector: np.ndarray  # (384,) float32, unit length


def question_of(body: dict[str, Any], chat: bool) -> tuple[str, dict[str, Any]] | None:
    """(the question, the rest of the request) or None when the request has no one text question (a chat
    whose last turn is not the user's, a prompt given as token ids or as a batch)."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return None
        last = messages[-1]
        if last.get("role") != "user" or not isinstance(last.get("content"), str):
            return None
        rest = dict(body, messages=[*messages[:-1], {k: v for k, v in last.items() if k != "content"}])
        return last["content"], rest
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return None
    return prompt, {k: v for k, v in body.items() if k != "prompt"}


def signature(question: str) -> list[Any]:
    """What two questions must share to answer each other: their numbers in order, their negation count, their
    calendar, unit, ordinal and comparison words, and their names (capitalised words inside a sentence)."""
    text = unicodedata.normalize("NFKC", question).translate(_APOSTROPHES).replace("can not", "cannot")
    words, names = [], set()
    for sentence in _SENTENCES.split(text):
        for i, word in enumerate(_WORD.findall(sentence)):
            lower = word.lower()
            if lower.endswith("s") and lower[:-1] in _MUST_MATCH:
                lower = lower[:-1]  # "days" is "day": the question is the same
            if lower in _MUST_MATCH:
                words.append(lower)
            elif i > 0 and word[0].isupper() and word != "I":
                names.add(lower)
    return [_NUMBER.findall(text), len(_NEGATION.findall(text)), sorted(set(words)), sorted(names)]


SURE = 0.9  # langdetect's probability above which its language is taken; short questions with names read
# as Norwegian or Catalan at 0.5-0.7 ("Does Veltra allow overdrafts?": no 0.71), real ones at 0.99+


def in_languages(question: str, languages: list[str]) -> bool:
    """Is the question in one of `languages`: the shared detector's answer when it is sure of it; otherwise (a
    short question, or names that confuse it) the question passes when its letters are Latin and English is
    allowed."""
    from tuneforge.core.language import detect_language_scored

    found = detect_language_scored(question)
    if found is not None and found[1] >= SURE:
        return found[0] in languages
    latin = all(not ch.isalpha() or "LATIN" in unicodedata.name(ch, "") for ch in question)
    return latin and "en" in languages


def _embed(question: str) -> np.ndarray:
    from tuneforge.serve.safety.sentences import SENTENCES

    return SENTENCES.encode([question])[0]


def warm_up_semantic() -> None:
    """Load the encoder and the language profiles now (at start-up), not on a first request."""
    _embed("warm up")
    in_languages("Is the language detector loaded yet?", ["en"])


def quantized(vector: np.ndarray) -> bytes:
    """A unit vector as 384 int8 (×127): the stored form, cosine error under 0.01."""
    return np.clip(np.round(vector * 127), -127, 127).astype(np.int8).tobytes()


def ranked(vector: np.ndarray, entries: list[bytes], threshold: float = -1.0) -> list[tuple[str, float]]:
    """The stored questions at or above `threshold` cosine to `vector`, nearest first: (exact entry's digest,
    cosine). Entries of another shape or whose name is not a hex digest are skipped."""
    entries = [e for e in entries if len(e) == NAME_BYTES + DIM and _HEX.fullmatch(e[:NAME_BYTES])]
    if not entries:
        return []
    stored = np.frombuffer(b"".join(e[NAME_BYTES:] for e in entries), np.int8).reshape(len(entries), DIM)
    scores = stored.astype(np.float32) @ vector / 127.0
    order = np.argsort(-scores, kind="stable")
    return [(entries[i][:NAME_BYTES].decode(), float(scores[i])) for i in order if scores[i] >= threshold]


def nearest(vector: np.ndarray, entries: list[bytes]) -> tuple[str, float] | None:
    """The stored question closest to `vector`: (its exact entry's digest, cosine), or None if none."""
    found = ranked(vector, entries)
    return found[0] if found else None


def prepare(question: str, languages: list[str]) -> tuple[list, np.ndarray] | None:
    """(signature, embedding) of a question the cache may compare, or None (another language, too long). All
    CPU work of a probe, run off the event loop."""
    from tuneforge.serve.safety.sentences import pieces

    if len(question) > 8 * MAX_PIECES or len(pieces(question)) > MAX_PIECES or not in_languages(question, languages):
        return None
    return signature(question), _embed(question)


class SemanticCache:
    """Lookups and additions on a `ResponseCache`'s store (its Redis, its bound, its degraded state)."""

    def __init__(self, store: ResponseCache, cfg: SemanticCacheConfig) -> None:
        self.store, self.cfg = store, cfg

    async def probe(self, tenant: str, version: str, body: dict[str, Any], chat: bool) -> Probe | None:
        """The request's question embedded and its context named, or None when it cannot use the cache."""
        if any(body.get(field) for field in _NOT_COMPARED):
            return None
        split = question_of(body, chat)
        if split is None or not split[0].strip():
            return None
        question, rest = split
        prepared = await asyncio.to_thread(prepare, question, self.cfg.languages)  # language, pieces, embedding
        if prepared is None:
            return None
        context = digest(tenant, version, answer_fields(rest), prepared[0], chat)
        return Probe(self.store.name("s", context), prepared[1])

    async def lookup(self, probe: Probe) -> list[tuple[str, float]]:
        """(exact entry's name, similarity) of the cached questions at or above the threshold, nearest first
        (the caller takes the first whose entry is still there)."""
        found = ranked(probe.vector, await self.store.members(probe.context), self.cfg.threshold)
        return [(self.store.name("e", name), score) for name, score in found[:LOOKUPS]]

    async def remember(self, probe: Probe, entry: str) -> None:
        """Add the question whose answer was just cached as `entry` (once: a re-asked question replaces itself)."""
        name = entry.rsplit(":", 1)[1].encode()
        await self.store.push(probe.context, name + quantized(probe.vector), self.cfg.max_entries)
