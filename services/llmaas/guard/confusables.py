"""Cyrillic, Greek and other letters that look like Latin ones (a subset of Unicode's confusables.txt, lower case:
the comparison form is case-folded before they are mapped). Only letters a reader takes for Latin are listed, so
that a real Cyrillic or Greek word is never mistaken for a homoglyph trick."""

# Cyrillic
_CYRILLIC = "аaвbеeёeһhіiїiјjкkӏlмmнhоoрpсcѕsтtуyүyхxԁdԛqԝwɡgьb"
# Greek
_GREEK = "αaβbεeηnιiκkμuνvοoρpτtυuχxγyϲcϳj"
# Armenian and Latin-extended look-alikes seen in evasion kits
_OTHER = "օoսuզqհhıiȷjɑaɩiꞇtǀl"

HOMOGLYPHS: dict[int, str] = {
    ord(k): v for table in (_CYRILLIC, _GREEK, _OTHER) for k, v in zip(table[::2], table[1::2], strict=True)}
