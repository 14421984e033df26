"""The guard's output side: an incremental scan of a chat answer for exfiltration and for a leak of the request's
system prompt (issue 19, item 5), fed each delta's text as it comes.

- `exfiltration_image`: a Markdown image `![alt](url)` or an HTML `<img src=url>` whose URL is external (http, https
  or protocol-relative) and carries data: a query value of 12 characters or more or percent-encoded, or a path segment
  that looks like base64 (24+ characters mixing upper case, lower case and digits) or hex (48+, longer than a commit
  id). A client that renders the answer fetches the image, and so sends the data, without anyone clicking.
- `exfiltration_link`: a Markdown link `[text](url)` to an external host carrying data the same way.
- `system_prompt_leak`: 8 consecutive words (case-folded, punctuation ignored) of the request's system or developer
  messages, when they hold at least 16 words.

Precision first: ordinary links and images (documentation, badges, plain paths) pass; the platform must not refuse
ordinary work. Cost: per delta, substring tests for "[", "(" and "<" (a regex for the triggers "![", "](", "<img"
only then), and, with a system prompt to protect, each new word tested against the prompt's words: an 8-word run is
looked for in the prompt (a substring search) only while all its words are the prompt's. Memory is bounded: a 1-2
KiB tail of the output, an unfinished construct of at most 2 KiB, 32 recent words, at most MAX_SYSTEM_WORDS words of
the system prompt. Nothing outlives the request, and no text is ever logged.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from urllib.parse import urlsplit

EXFILTRATION_IMAGE = "exfiltration_image"
EXFILTRATION_LINK = "exfiltration_link"
SYSTEM_PROMPT_LEAK = "system_prompt_leak"

LEAK_WORDS = 8  # a run this long, verbatim, is a leak; shorter ones are common phrases
MIN_SYSTEM_WORDS = 16  # shorter system prompts ("You are a helpful assistant.") are not worth protecting
MAX_SYSTEM_WORDS = 20_000  # the first 20k words of a system prompt are protected (bounded memory and set-up cost)
TAIL = 1024  # output kept to find where a construct starts (a link's "[")
MAX_PENDING = 2048  # an unfinished image or link longer than this is judged on what came
PIECE = 512  # a long delta (a whole answer) is scanned in pieces of this size

# Words: what whitespace separates once punctuation is blanked (str.translate and str.split run in C; a \w+ regex
# costs ~0.3 µs per word).
_BLANK = str.maketrans(dict.fromkeys(string.punctuation + "‘’“”«»‹›–—…•·、。，！？：；（）「」『』【】", " "))
_WORDS_AT = re.compile(r"\S+")
_RUN = b"\x01" * LEAK_WORDS
_TRIGGER = re.compile(r"!\[|\]\(|<img\b", re.IGNORECASE)
# A construct from its trigger: complete once its URL is terminated. `viable`: the text so far can still become one.
_IMAGE_MD = re.compile(r"!\[[^\]\n]{0,500}\]\(\s*<?([^\s)>\"']*)[\s)>\"']")
_IMAGE_MD_VIABLE = re.compile(r"!\[[^\]\n]{0,500}(?:\](?:\(\s*<?[^\s)>\"']*)?)?")
_LINK_MD = re.compile(r"\]\(\s*<?([^\s)>\"']*)[\s)>\"']")
_LINK_MD_VIABLE = re.compile(r"\](?:\(\s*<?[^\s)>\"']*)?")
_IMG_HTML = re.compile(r"<img\b[^>]{0,2000}>", re.IGNORECASE)
_IMG_HTML_VIABLE = re.compile(r"<img\b[^>]{0,2000}", re.IGNORECASE)
_SRC = re.compile(r"""\bsrc\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_B64_SEGMENT = re.compile(r"[A-Za-z0-9+_-]{24,}={0,2}")
_HEX_SEGMENT = re.compile(r"[0-9a-fA-F]{48,}")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def carries_data(url: str) -> bool:
    """An external URL (http, https, protocol-relative) with data in it: a long or encoded query value, or a
    base64- or hex-like path segment."""
    lowered = url[:8].lower()
    if not (lowered.startswith(("http://", "https://")) or url.startswith("//")):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return True  # a URL the parser refuses (a broken IPv6 host) is no documentation link
    if not parts.netloc:
        return False
    for pair in parts.query.split("&"):
        value = pair.partition("=")[2] or (pair if "=" not in pair else "")
        if len(value) >= 12 or _PERCENT.search(value):
            return True
    for segment in parts.path.split("/"):
        stem = segment.rsplit(".", 1)[0] if "." in segment[-6:] else segment
        if _HEX_SEGMENT.fullmatch(stem):
            return True
        if (_B64_SEGMENT.fullmatch(stem) and any(c.isdigit() for c in stem) and any(c.isupper() for c in stem)
                and any(c.islower() for c in stem)):
            return True
    return False


@dataclass(frozen=True)
class Finding:
    reason: str
    start: int  # where the offending part begins in the output (characters): a non-streamed answer is cut there


def system_text(messages) -> str:
    return "\n".join(m.content for m in messages if m.role in ("system", "developer") and m.content)


@dataclass(frozen=True)
class SystemPrompt:
    """What the leak check keeps of a system prompt, for the request's life only: its words (case-folded), as a set
    (a run of output words is checked only while every word of it is one of them) and joined by spaces (where a run
    of 8 is then looked for, a substring search in C)."""
    vocab: frozenset[str]
    joined: str

    def repeats(self, run: list[str]) -> bool:
        return f" {' '.join(run)} " in self.joined


def protect(text: str) -> SystemPrompt | None:
    """None: too short to matter. Built in C (casefold, translate, split, set, join): no per-word Python work."""
    words = text.casefold().translate(_BLANK).split()
    if len(words) < MIN_SYSTEM_WORDS:
        return None
    words = words[:MAX_SYSTEM_WORDS]
    return SystemPrompt(frozenset(words), f" {' '.join(words)} ")


class OutputScanner:
    """Fed the answer's text in order; feed() returns the findings that text completed (each reason once)."""

    def __init__(self, system_prompt: str = "", *, system: SystemPrompt | None = None, exact: bool = False) -> None:
        """`exact`: a leak's start is the first word of the repeated run (else, for a short delta, the delta's
        start: a stream is cut at the delta anyway)."""
        self._exact = exact
        if system is None and system_prompt:
            system = protect(system_prompt)
        self._system = system  # None: no leak check
        self._vocab = system.vocab if system is not None else frozenset()
        self.reasons: list[str] = []  # in the order found
        self._tail = ""  # the output's last characters (up to TAIL, more while a construct is pending)
        self._base = 0  # the output offset of _tail[0]
        self._pending = -1  # the offset in _tail of an unfinished construct's trigger (-1: none)
        self._recent: list[str] = []  # the last complete words, casefolded (LEAK_WORDS - 1 to 32 of them)
        self._run = 0  # how many of them, the last ones, are words of the system prompt
        self._partial = ""  # the last delta's trailing word, which the next one may continue

    def feed(self, text: str) -> list[Finding]:
        if len(text) <= PIECE:
            if self._pending < 0 and "[" not in text and "(" not in text and "<" not in text:
                # The common delta: no trigger can start or end in it; only the tail is kept, and the leak check.
                old = len(self._tail)
                self._tail += text
                if old >= 2 * TAIL:
                    self._trim()
                if self._system is None or SYSTEM_PROMPT_LEAK in self.reasons:
                    return []
                found: list[Finding] = []
                self._leak(text, self._base + old, found)
                return found
            return self._feed(text)
        found: list[Finding] = []
        for i in range(0, len(text), PIECE):
            found += self._feed(text[i:i + PIECE])
        return found

    def end(self) -> list[Finding]:
        """The answer ended: an image or link still unfinished is judged on what came."""
        found: list[Finding] = []
        if self._pending >= 0:
            self._constructs(self._pending, found, final=True)
        return found

    def _feed(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        old = len(self._tail)
        self._tail += text
        # A trigger is in the new text, or ends there ("!" then "[", "]" then "("; "<" then "img" is pending).
        self._constructs(self._pending if self._pending >= 0 else max(old - 3, 0), found)
        if self._system is not None and SYSTEM_PROMPT_LEAK not in self.reasons:
            self._leak(text, self._base + old, found)
        if len(self._tail) > 2 * TAIL:
            self._trim()
        return found

    def _trim(self) -> None:
        """Keeps TAIL characters, or everything since a pending construct's trigger (now and then, not at every
        delta)."""
        keep = len(self._tail) - TAIL
        if self._pending >= 0:
            keep = min(keep, self._pending)
        if keep > 0:
            self._tail = self._tail[keep:]
            self._base += keep
            if self._pending >= 0:
                self._pending -= keep

    def _add(self, found: list[Finding], reason: str, start: int) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
            found.append(Finding(reason, start))

    def _constructs(self, pos: int, found: list[Finding], final: bool = False) -> None:
        tail = self._tail
        self._pending = -1
        while True:
            trigger = _TRIGGER.search(tail, pos)
            if trigger is None:
                # "<", "<i" or "<im" at the end: the next delta may make it an <img.
                lt = tail.find("<", max(pos, len(tail) - 3))
                if lt >= 0 and not final and "<img"[:len(tail) - lt] == tail[lt:].lower():
                    self._pending = lt
                return
            at = trigger.start()
            kind = tail[at]
            complete, viable = ((_IMAGE_MD, _IMAGE_MD_VIABLE) if kind == "!" else
                                (_LINK_MD, _LINK_MD_VIABLE) if kind == "]" else (_IMG_HTML, _IMG_HTML_VIABLE))
            match = complete.match(tail, at)
            if match is not None:
                url, pos = (match.group(1) if kind != "<" else _src(match.group(0))), match.end()
            elif viable.fullmatch(tail, at):
                if not final and len(tail) - at < MAX_PENDING:
                    self._pending = at  # wait for the rest
                    return
                url, pos = _unfinished_url(kind, tail[at:]), len(tail)  # too long to wait for, or the end
            else:
                pos = at + 1
                continue
            if not carries_data(url):
                continue
            if kind == "]":
                # A link: it starts at its "[" (an image's "![" when the "![" trigger could not match it).
                opening = tail.rfind("[", max(0, at - 500), at)
                start = opening if opening >= 0 else at
                if start > 0 and tail[start - 1] == "!":
                    self._add(found, EXFILTRATION_IMAGE, self._base + start - 1)
                else:
                    self._add(found, EXFILTRATION_LINK, self._base + start)
            else:
                self._add(found, EXFILTRATION_IMAGE, self._base + at)

    def _leak(self, text: str, offset: int, found: list[Finding]) -> None:
        """`offset`: the output offset of `text`. A delta's trailing word is checked as it stands (a leak shows as
        soon as its last word does) and again, whole, with the next delta."""
        joined = self._partial + text
        words = joined.translate(_BLANK).split()
        if not words:
            self._partial = ""
            return
        last = joined[-1]
        trailing = not last.isspace() and _BLANK.get(ord(last)) is None
        recent, vocab, system = self._recent, self._vocab, self._system
        if len(words) <= 8 and not self._exact:
            # A token's worth: word by word, a run of 8 looked for only while every word is the system prompt's.
            run = self._run
            for n, word in enumerate(words):
                word = word.casefold()
                run = run + 1 if word in vocab else 0
                recent.append(word)
                if run >= LEAK_WORDS and system.repeats(recent[-LEAK_WORDS:]):
                    self._add(found, SYSTEM_PROMPT_LEAK, offset - len(self._partial))
                    return
                if trailing and n == len(words) - 1:
                    recent.pop()  # checked, not committed: the next delta may continue it
                else:
                    self._run = run
            if len(recent) > 4 * LEAK_WORDS:
                del recent[:-(LEAK_WORDS - 1)]
        else:
            # A whole answer (or a long delta): which words are the prompt's, in C; a run of 8 of them looked for.
            window = recent[-(LEAK_WORDS - 1):] + joined.casefold().translate(_BLANK).split()
            flags = bytes(map(vocab.__contains__, window))
            i = flags.find(_RUN)
            while i >= 0:
                if system.repeats(window[i:i + LEAK_WORDS]):
                    k = i - min(len(recent), LEAK_WORDS - 1)  # the run's first word, in this text
                    start = offset - len(self._partial)
                    if k > 0:
                        start += next(m.start() for n, m in enumerate(_WORDS_AT.finditer(joined.translate(_BLANK)))
                                      if n == k)
                    self._add(found, SYSTEM_PROMPT_LEAK, start)
                    return
                i = flags.find(_RUN, i + 1)
            if trailing:
                window.pop()
                flags = flags[:-1]
            self._recent = window[-(LEAK_WORDS - 1):]
            self._run = len(flags) - len(flags.rstrip(b"\x01"))
        self._partial = words[-1] if trailing else ""


def _src(tag: str) -> str:
    src = _SRC.search(tag)
    return src.group(1) if src else ""


def _unfinished_url(kind: str, text: str) -> str:
    if kind == "<":
        return _src(text)
    return text.partition("](")[2].strip().lstrip("<") if kind == "!" else text[2:].strip().lstrip("<")


def first_offending(text: str) -> int:
    """Where the earliest exfiltration in a whole answer starts (len(text): none): exact, where a stream's scan can
    only say which delta completed a finding. Run once, on a finding that cuts, over a buffered answer."""
    scanner = OutputScanner(exact=True)
    found = scanner.feed(text) + scanner.end()
    return min((f.start for f in found), default=len(text))


CUT_REASONS = frozenset({EXFILTRATION_IMAGE, EXFILTRATION_LINK})


class OutputGuard:
    """One chat answer's output check, in the tenant's guard mode: `enforce` cuts the answer at an exfiltration,
    shadow only reports it. A system-prompt leak is only reported, in either mode: an ordinary answer may restate
    its instructions ("as instructed, I answer in French and cite the policy ..."), and the platform must not refuse
    ordinary work; the tenant's admin reads the flag (header, metric, span) and decides."""

    def __init__(self, system_prompt: str = "", enforce: bool = False, *, system: SystemPrompt | None = None) -> None:
        self.enforce = enforce
        self.system = system if system is not None else protect(system_prompt)
        self.scanner = OutputScanner(system=self.system)

    def fresh(self) -> OutputGuard:
        """The same check for another answer to the same request (another choice): the system prompt's words kept
        once."""
        return OutputGuard(enforce=self.enforce, system=self.system)

    @property
    def reasons(self) -> list[str]:
        return self.scanner.reasons

    def cuts(self, found: list[Finding]) -> bool:
        """Whether these findings end the answer: an exfiltration, under enforce."""
        return self.enforce and any(f.reason in CUT_REASONS for f in found)


def header(guards: list[OutputGuard]) -> tuple[str, str]:
    """x-llmaas-output-guard on a non-streamed answer (its choices' guards): `filtered` (an exfiltration cut under
    enforce) or `flagged` (reported only), with the reasons found."""
    reasons = list(dict.fromkeys(r for guard in guards for r in guard.reasons))
    cut = any(guard.enforce for guard in guards) and any(r in CUT_REASONS for r in reasons)
    return ("x-llmaas-output-guard", f"{'filtered' if cut else 'flagged'}; reasons={','.join(reasons)}")
