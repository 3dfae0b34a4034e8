"""Verbatim overlap: the longest run of words an output shares with any of a set of texts (lexical evidence).

Words are runs of letters, digits and underscores (``\\w+``), compared case-folded, so punctuation and case do not
break a match ("Hello, World" matches "hello world"). Offsets are character positions in the original strings,
so a reader can find the span in both texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Overlap:
    """The longest common word span: ``words`` long (0 = no word shared), found in ``sources[source]``.

    ``text`` is the span as written in the output, ``output[output_start:output_end]``; ``source_start`` and
    ``source_end`` locate it in the source; ``output_word`` is the index of its first word among the output's words.
    """

    words: int
    text: str = ""
    output_word: int = 0
    output_start: int = 0
    output_end: int = 0
    source: int | None = None
    source_start: int = 0
    source_end: int = 0


def _words(text: str) -> list[re.Match[str]]:
    return list(WORD.finditer(text))


def longest_common_span(output: str, sources: Sequence[str]) -> Overlap:
    """The longest run of consecutive words of ``output`` that also occurs, consecutively, in one of ``sources``.

    Ties go to the earliest source, then the earliest place in it. Time ``O(Σ source words × repeats of a word in
    the output)``: each source word only extends the matches ending at the output positions that hold it.
    """
    out_words = _words(output)
    where: dict[str, list[int]] = {}
    for i, match in enumerate(out_words):
        where.setdefault(match.group().casefold(), []).append(i)
    best = (0, 0, 0, 0)  # (length, source, end word in source, end word in output)
    for s, text in enumerate(sources):
        source_words = _words(text)
        previous: dict[int, int] = {}
        for j, match in enumerate(source_words):
            current = {i: previous.get(i - 1, 0) + 1 for i in where.get(match.group().casefold(), ())}
            for i, length in current.items():
                if length > best[0]:
                    best = (length, s, j, i)
            previous = current
    length, s, j, i = best
    if length == 0:
        return Overlap(words=0)
    first, last = out_words[i - length + 1], out_words[i]
    source_words = _words(sources[s])
    return Overlap(words=length, text=output[first.start() : last.end()], output_word=i - length + 1,
                   output_start=first.start(), output_end=last.end(), source=s,
                   source_start=source_words[j - length + 1].start(), source_end=source_words[j].end())
