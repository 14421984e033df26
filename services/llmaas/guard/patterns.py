"""Attack patterns per language, matched on the comparison form (normalize.py): lower case, no accents on Latin
letters, full-width folded, so "Ｏｕｂｌｉｅｚ", "oubliez" and "OUBLIEZ" are one pattern, written here without accents.

Each pattern names an attack, not a word: "ignore" alone is honest ("can I ignore this warning?"); "ignore" followed
by an instruction-like object qualified as previous/all/yours is not. Phrasings the patterns miss are the learned
layer's job; these are the precise, explainable part.
"""

from __future__ import annotations

import operator
import re
import string
from dataclasses import dataclass
from itertools import compress, islice

import ahocorasick_rs

# Words reused across patterns. The gaps (.{0,n}) bound how far apart the parts of one phrase may be.
_EN_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|former|foregoing|initial|original|all|your|system|these|those|developer)"
_EN_RULES = (r"(?:instructions?|prompts?|rules?|directives?|guidelines?|commands?|orders?|constraints?|restrictions?|"
             r"programming|guidance|tasks?|assignments?|context|information|messages?|text)")
_FR_PREVIOUS = r"(?:precedent|anterieur|ci-dessus|plus haut|d'avant|initia|d'origine|originel|systeme|recu|donne(?![- ]?(?:moi|nous|lui)\b)|toutes|tous|tes|vos)"
_FR_RULES = r"(?:instructions?|consignes?|regles?|directives?|ordres?|indications?|taches?|prompts?)"
_FR_OVERRIDE = (r"(?:ignore|oublie|neglige|outrepasse|contourne|ne tien[st] pas compte d|ne suis plus|"
                r"fai[st]e?s? abstraction d|laisse[sz]? tomber|ne prete[sz]? (?:aucune|pas|plus) (?:d')?attention)")
_DE_RULES = r"(?:anweisung|instruktion|befehl|regel|vorgabe|auftrag|auftrage|aufgabe|richtlinie|prompt)"
_ES_RULES = r"(?:instrucciones|instruccion|indicaciones|reglas|ordenes|directrices|directivas|tareas|prompts?)"
_ZH_PREVIOUS = r"(?:之前|以前|先前|上面|上述|前面|此前|原来|原來|原有|所有|一切|全部|你的|系统|系統|开发者|開發者)"
_ZH_RULES = r"(?:指令|指示|说明|說明|规则|規則|提示|设定|設定|要求|限制|命令|约束|約束)"
_ZH_NOT = r"(?<!不要)(?<!不能)(?<!不可)(?<!别)(?<!勿)(?<!未)"
_JA_PREVIOUS = r"(?:以前|前|これまで|上記|先ほど|最初|元|すべて|全て|今まで|システム|既存|与えられた)"
_JA_RULES = r"(?:指示|命令|ルール|指図|設定|制約|プロンプト|規則)"

_PATTERNS: dict[str, dict[str, str]] = {
    "instruction_override": {
        # "Ignore my earlier message" (or "the typos in my previous message") withdraws the user's own words: an
        # override targets the assistant's.
        "en": rf"\b(?:ignore|disregard|forget|skip|override|bypass|neglect|abandon|discard|dismiss|set aside|overlook|"
              rf"throw away|do not follow|don't follow|stop following)\b(?! (?:my|our)\b).{{0,25}}(?<!\bmy )(?<!\bour )\b{_EN_PREVIOUS}\b.{{0,30}}\b{_EN_RULES}"
              r"|\b(?:ignore|disregard|forget) (?:everything|all|anything)(?: (?:that )?(?:was |we |you |i )?"
              r"(?:said|told|discussed|talked about|written|mentioned))?\b.{0,15}\b(?:above|before|previously|so far|"
              r"earlier|until now)\b"
              rf"|\b(?:previous|prior|above|earlier|original|old|your|these|the|system|developer'?s?)\b.{{0,20}}\b{_EN_RULES}\b"
              r".{0,20}\b(?:are|is|have been|were) (?:now )?(?:cancell?ed|void|revoked|obsolete|overridden|superseded|"
              r"suspended|lifted|disabled|no longer (?:valid|in effect|apply|applicable))"
              r"|\b(?:new|updated|these|my) (?:instructions|rules|orders)\b.{0,20}\b(?:supersede|override|replace|take "
              r"precedence over)"
              r"|\b(?:stop|quit|cease) (?:following|obeying)\b.{0,20}\b(?:your|the|any|all|those)\b.{0,15}"
              rf"\b{_EN_RULES}|\bpay no (?:attention|heed) to\b.{{0,30}}\b{_EN_PREVIOUS}\b"
              r"|\b(?:start|begin) (?:over|again|afresh|from scratch)\b.{0,15}\bwithout\b.{0,30}\b(?:your|the|any)\b"
              rf".{{0,20}}{_EN_RULES}|\b(?:obey|listen to|follow) only (?:me|my)\b"
              rf"|\b(?:ignore|disregard|forget|skip|override|bypass|set aside|drop|abandon|discard)\b.{{0,25}}"
              rf"\b{_EN_RULES}\b.{{0,15}}\byou (?:were|have been|got|'ve been) (?:given|told|configured|programmed|"
              r"trained|set up|assigned)",
        "fr": rf"\b{_FR_OVERRIDE}\w*\b(?! (?:mon|ma|mes|notre|nos)\b).{{0,40}}\b{_FR_PREVIOUS}\w*\b.{{0,30}}\b{_FR_RULES}"
              rf"|\b{_FR_OVERRIDE}\w*\b.{{0,30}}\b{_FR_RULES}\b.{{0,30}}\b{_FR_PREVIOUS}"
              r"|\boublie\w* tout(?: ce (?:qui|que))?.{0,30}\b(?:precede|avant|dit|plus haut|ci-dessus|jusqu'ici)"
              rf"|\b(?:tes|vos|les|mes)\b.{{0,25}}\b{_FR_RULES}\b.{{0,25}}\b(?:sont|est|ne s'appliquent|ne comptent)\b"
              r".{0,10}\b(?:annulee|revoquee|caduque|obsolete|suspendue|levee|plus|desactivee)"
              rf"|\b(?:arrete|cesse)[sz]? de (?:suivre|respecter|obeir)\b.{{0,30}}{_FR_RULES}"
              r"|\b(?:obei[sr]|ecoute)\w* (?:uniquement|seulement) (?:a )?moi\b|\bsans (?:tes|vos) (?:regles|consignes)",
        "de": rf"\b(?:ignorier|vergiss|vergessen sie|missacht|uberspring|verwirf|verwerfen sie|hor auf)\w*\b"
              r"(?! (?:meine|meinen|meiner|unsere|unseren)\b).{0,40}"
              rf"\b(?:vorherig|vorig|bisherig|obig|vorangegangen|fruher|ursprunglich|alle|deine|ihre|system)\w*\b.{{0,30}}"
              rf"{_DE_RULES}"
              r"|\b(?:vergiss|vergessen sie|ignorier\w*) (?:alles|all das)\b.{0,40}\b(?:davor|vorher|zuvor|oben|bisher|"
              r"besprochen|gesagt)"
              rf"|\b(?:deine|ihre|die|alle)\b.{{0,25}}{_DE_RULES}\w*\b.{{0,25}}\b(?:gelten nicht mehr|sind aufgehoben|"
              r"ist aufgehoben|sind ungultig|sind nichtig|sind hinfallig|zahlen nicht mehr)"
              rf"|\b(?:beachte|befolge|folge)\b.{{0,40}}{_DE_RULES}\w*\b.{{0,20}}\bnicht mehr"
              rf"|\bohne (?:deine|ihre|die) (?:alten |bisherigen )?{_DE_RULES}\w*\b|\bnur (?:noch )?mir gehorchen|"
              r"\bgehorche nur mir"
              rf"|\babweichend (?:von|zu) (?:den |deinen |ihren |allen )?(?:vorherig|bisherig|obig|vorangegangen)\w* "
              rf"{_DE_RULES}",
        "es": rf"\b(?:ignora|ignore|ignorar|ignoren|olvida|olvide|olvidar|olviden|omite|omita|descarta|descarte|"
              rf"haz caso omiso|hagan caso omiso|no hagas caso)\w*\b(?! (?:mi|mis|nuestro|nuestra|nuestros)\b).{{0,30}}\b(?:anterior|previ|de arriba|todas|todo|"
              rf"tus|sus|inicial|original|del sistema)\w*\b.{{0,30}}\b{_ES_RULES}"
              r"|\b(?:olvida|olvide|olviden|ignora|ignore|ignoren) todo\b.{0,25}\b(?:anterior|antes|dije|digo|dicho|"
              r"dijeron|hablado|hablamos)"
              rf"|\b(?:tus|sus|las)\b.{{0,25}}\b{_ES_RULES}\b.{{0,25}}\b(?:quedan|estan|son|ya no)\b.{{0,10}}"
              r"\b(?:anuladas|revocadas|canceladas|suspendidas|validas|obsoletas|sin efecto)"
              rf"|\b(?:deja|dejen|para) de (?:seguir|obedecer|respetar)\b.{{0,30}}{_ES_RULES}"
              rf"|\bsin (?:tus|sus) {_ES_RULES}|\bobedece(?:me)? solo (?:a mi)?",
        "zh": rf"{_ZH_NOT}(?:忽略|忽视|忽視|无视|無視|忘记|忘記|忘掉|不要理会|不要理會|抛开|拋開|跳过|跳過|放弃|放棄|"
              rf"绕过|繞過|丢弃|丟棄|不再遵守|停止遵守).{{0,8}}{_ZH_PREVIOUS}.{{0,10}}{_ZH_RULES}"
              rf"|{_ZH_PREVIOUS}.{{0,6}}{_ZH_RULES}.{{0,8}}(?:作废|作廢|无效|無效|失效|已取消|不再适用|不再適用|不算数|"
              r"不算數|当作没看见|當作沒看見)|(?:不用管|不要管|别管|別管)(?:你的|之前|原来|原來|开发者|開發者).{0,8}"
              rf"{_ZH_RULES}|只(?:服从|服從|听|聽)我",
        "ja": rf"{_JA_PREVIOUS}の?.{{0,12}}{_JA_RULES}(?:を|は|に|など)?.{{0,6}}(?:無視|忘れ|破棄|取り消|従わ|リセット|"
              r"捨て|なかったこと)"
              # "無視しても大丈夫ですか" asks whether ignoring is fine; an order does not cross a sentence end.
              rf"|(?:無視|忘れ)(?:して(?!も)|しろ|せよ|てください)[^。?!]{{0,12}}{_JA_PREVIOUS}"
              rf"|{_JA_PREVIOUS}の?.{{0,8}}{_JA_RULES}.{{0,10}}(?:無効|取り消され|適用されません|気にしない|従わなくて)"
              r"|私(?:だけ|のみ)に従",
    },
    "system_prompt_extraction": {
        "en": r"\b(?:reveal|print|show|display|repeat|output|leak|tell me|give me|write out|write down|spell ?check|"
              r"share|disclose|dump|recite|return|translate|summari[sz]e|copy|paste|reproduce|quote|"
              r"what (?:is|are|were))\b.{0,30}"
              r"\b(?:system prompt|system message|system instructions|initial prompt|original prompt|hidden prompt|"
              r"prompt texts?|(?:initial|original|hidden|secret|first|full|exact) instructions|instructions (?:above|"
              r"you (?:were|have been) given)|pre-?prompt|(?:text|prompt|words|everything|instructions) above|"
              r"above (?:text|prompt|instructions)|your (?:instructions|rules|guidelines|prompt)(?! of thumb)"
              # "your instructions for resetting a router" (or "your rules of thumb") asks how to do something, not for
              # the system prompt.
              r"(?! (?:for|on|about|to|regarding) (?!(?:this|the|our) (?:conversation|chat|session)))|"
              r"(?:everything|all|the text|what was written) (?:before|above) (?:my|this) (?:first )?"
              r"(?:message|question|prompt))",
        "fr": r"\b(?:revele|affiche|montre|repete|donne|ecri|imprime|divulgue|recite|recopie|copie|reproduis|cite|"
              r"dis-moi|quel(?:le)?s? (?:est|sont)|"
              r"traduis|resume)\w*\b.{0,30}\b(?:prompt (?:systeme|initial|d'origine|cache)|message systeme|"
              r"(?:instructions|consignes) (?:initiales|systeme|d'origine|cachees|secretes|ci-dessus|precedentes)|"
              r"texte (?:ci-dessus|au-dessus|precedent)|tes (?:instructions|consignes|regles)(?! de base)"
              r"(?! (?:pour|sur|concernant|a propos) (?!(?:cette|la|notre) (?:conversation|discussion|session))))",
        "de": r"\b(?:zeig|gib|druck|wiederhol|verrat|nenn|schreib|ausgeb|gib aus|ubersetz)\w*\b.{0,30}"
              r"\b(?:systemprompt|system-prompt|systemanweisung|systemnachricht|prompt-?texte?|(?:ursprunglich|"
              r"anfanglich|geheim|versteckt|obig)\w* (?:anweisungen|prompt|text)|deine (?:anweisungen|regeln|vorgaben)"
              r"(?! (?:fur|zum|zur|uber) (?!(?:dieses|das|unser) (?:gesprach|chat)))|"
              r"(?:text|alles) (?:oben|daruber))",
        "es": r"\b(?:revela|muestra|muestrame|imprime|repite|dime|escribe|comparte|divulga|traduce|resume|cual(?:es)? "
              r"(?:es|son))\w*\b.{0,30}\b(?:prompt (?:del )?sistema|prompt inicial|mensaje del sistema|instrucciones "
              r"(?:iniciales|originales|ocultas|del sistema|secretas|anteriores)|tus (?:instrucciones|reglas)(?! basicas)"
              r"(?! (?:para|sobre|de) (?!(?:esta|la|nuestra) (?:conversacion|charla|sesion)))|"
              r"texto (?:anterior|de arriba))",
        "zh": r"(?:显示|顯示|输出|輸出|泄露|洩露|透露|告诉我|告訴我|打印|重复|重複|给我看|給我看|展示|公开|公開|说出|說出|"
              r"列出|复述|複述|翻译|翻譯).{0,12}(?:系统提示|系統提示|提示词|提示詞|系统指令|系統指令|初始指令|原始指令|"
              r"隐藏指令|隱藏指令|系统消息|系統訊息|system prompt|你的指令|你的设定|你的設定)"
              r"|(?:你的|把你的|将你的|將你的)(?:系统提示|系統提示|提示词|提示詞|系统指令|系統指令|初始指令|原始指令|设定|設定)"
              r".{0,10}(?:输出|輸出|显示|顯示|告诉|告訴|打印|重复|重複|发给|發給|公开|公開)",
        "ja": r"(?:システムプロンプト|システムメッセージ|初期指示|最初の指示|元の指示|隠された指示|隠れた指示|"
              r"設定された指示|あなたの指示|与えられた指示|上記の(?:指示|文章|テキスト)).{0,12}(?:表示|教え|出力|見せ|"
              r"書き出|開示|繰り返|公開|翻訳|そのまま)",
    },
    "persona_override": {
        "en": r"\b(?:from now on|starting now|for the rest of this conversation)\b.{0,20}\byou (?:are|will|must|shall|"
              r"have)\b.{0,60}\b(?:no|without|any|free|unfiltered|uncensored|unrestricted)\b"
              r"|\b(?:do anything now|developer mode|jailbr(?:ea|o)ken?|dan mode|evil confidant|no (?:ethical|moral) "
              r"(?:guidelines|restrictions|constraints|boundaries)|without (?:any )?(?:ethical|moral) (?:guidelines|"
              r"restrictions|constraints))\b"
              r"|\byou are (?:no longer|not) (?:an? )?(?:ai|assistant|language model|chatbot|bound)"
              r"|\bpretend (?:that )?you (?:are|have|were) (?:an? )?(?:no|not|unrestricted|unfiltered|evil|free)"
              r"|\b(?:act|roleplay|role-play|behave|pose) (?:as|like)\b.{0,40}\b(?:with no|without|never (?:been )?given|"
              r"has no|have no|free of|unbound by|not bound by)\b.{0,20}\b(?:content polic|safety|guidelines|"
              r"restrictions|rules|filters|limits|ethic|moral|censorship)",
        "fr": r"\b(?:a partir de maintenant|desormais|dorenavant)\b.{0,10}\b(?:tu es|tu seras|vous etes)\b.{0,60}"
              r"\b(?:sans|aucune?|libre)\b|\bmode developpeur\b|\bfais comme si tu n'avais (?:aucune|pas de) "
              r"(?:regle|restriction|limite)|\btu n'es plus (?:une? )?(?:ia|assistant|modele)",
        "de": r"\b(?:ab (?:jetzt|sofort)|von nun an)\b.{0,10}\b(?:bist du|du bist)\b.{0,60}\b(?:ohne|keine|frei)\b"
              r"|\bentwicklermodus\b|\btu so,? als (?:ob|hattest) du keine (?:regeln|einschrankungen)"
              r"|\bdu bist (?:kein|nicht mehr) (?:ki|assistent|sprachmodell)",
        "es": r"\b(?:a partir de ahora|desde ahora)\b.{0,10}\b(?:eres|seras|actuaras)\b.{0,60}\b(?:sin|ninguna?|libre)\b"
              r"|\bmodo desarrollador\b|\bfinge que no tienes (?:reglas|restricciones|limites)"
              r"|\bya no eres (?:una? )?(?:ia|asistente|modelo)",
        "zh": r"(?:你(?:现在|現在)?是|扮演|充当|充當|进入|進入).{0,20}(?:没有|沒有|不受|无|無|摆脱|擺脫)(?:任何)?"
              r"(?:限制|约束|約束|规则|規則|审查|審查|过滤|過濾|道德)|开发者模式|開發者模式|越狱模式|越獄模式",
        "ja": r"(?:今から|これから|今後|以降)?(?:あなた|君|お前)は.{0,20}(?:制限|制約|ルール|検閲|倫理)(?:の|が)?"
              r"(?:ない|なし|一切ない|を持たない|に縛られない)|開発者モード|脱獄モード",
    },
    "role_marker": {
        "any": r"<\|(?:im_start|im_end|system|assistant|user|endoftext|begin_of_text|start_header_id|eot_id)\|>"
               r"|\[/?inst\]|<</?sys>>|^\s{0,8}#{2,8}\s{0,8}(?:system|instruction|new instructions?|assistant)\s{0,8}:?\s{0,8}$"
               r"|^\s{0,8}(?:system|systeme|system prompt|systemnachricht|sistema|系统|系統|システム)\s{0,8}[:：]\s{0,8}"
               r"(?:you|tu|du|"
               r"eres|你|あなた|ignore|oublie|vergiss|ignora|new|nouvelle|neue|nueva)",
    },
}

_SCORES = {"instruction_override": 0.95, "system_prompt_extraction": 0.9, "persona_override": 0.85, "role_marker": 0.85}

# Every match of a pattern contains one of its stems, at the start of a word (anywhere, for a CJK stem). Finding them
# all costs one pass over the text (_Index), so that each language's regular expression runs only around its own
# stems: honest text has few. A pattern added above needs its words here; tests/unit/test_guard_rules.py checks that
# the gate hides no match of the patterns.
_STEMS: dict[str, dict[str, tuple[str, ...]]] = {
    "instruction_override": {
        "en": ("ignor", "disregard", "forget", "skip", "overrid", "bypass", "neglect", "abandon", "discard", "dismiss",
               "set aside", "overlook", "throw away", "follow", "obey", "cancel", "void", "revoked", "obsolete",
               "supersede", "suspended", "lifted", "disabled", "no longer", "precedence", "replace", "listen to",
               "pay no", "start", "begin", "drop"),
        # The rules' own words stand for "vos consignes ne sont plus ...", where no verb is.
        "fr": ("ignor", "oubli", "neglig", "outrepass", "contourn", "tien", "suis plus", "abstraction", "tomber",
               "arrete", "cesse", "obei", "ecoute", "prete", "instruction", "consigne", "regle", "directive", "ordre",
               "indication", "tache", "prompt"),
        "de": ("ignor", "vergiss", "vergessen", "missacht", "uberspring", "verwirf", "verwerfen", "hor auf",
               "gelten nicht", "aufgehoben", "ungultig", "nichtig", "hinfallig", "zahlen nicht", "nicht mehr",
               "ohne deine", "ohne ihre", "ohne die", "gehorch", "abweichend"),
        "es": ("ignor", "olvid", "omit", "descart", "caso omiso", "hagas caso", "anulad", "revocad", "cancelad",
               "suspendid", "validas", "obsoletas", "sin efecto", "deja", "dejen", "para de", "sin tus", "sin sus",
               "obedece"),
        "zh": ("忽略", "忽视", "忽視", "无视", "無視", "忘记", "忘記", "忘掉", "理会", "理會", "抛开", "拋開", "跳过", "跳過",
               "放弃", "放棄", "绕过", "繞過", "丢弃", "丟棄", "遵守", "作废", "作廢", "无效", "無效", "失效", "取消", "不再适用",
               "不再適用", "不算", "当作没", "當作沒", "不用管", "不要管", "别管", "別管", "服从", "服從", "只听", "只聽"),
        "ja": ("無視", "忘れ", "破棄", "取り消", "従わ", "リセット", "捨て", "なかったこと", "無効", "適用されません", "気にしない",
               "に従"),
    },
    "system_prompt_extraction": {
        "en": ("prompt", "preprompt", "instruction", "above", "system message", "your rules", "your guidelines",
               "before my", "before this"),
        "fr": ("prompt", "message systeme", "instruction", "consigne", "texte ci-dessus", "texte au-dessus",
               "texte precedent",
               "tes regles"),
        "de": ("systemprompt", "system-prompt", "systemanweisung", "systemnachricht", "prompttext", "prompt-text",
               "ursprunglich", "anfanglich", "geheim", "versteckt", "obig", "deine anweisungen", "deine regeln",
               "deine vorgaben", "text oben", "text daruber", "alles oben", "alles daruber"),
        "es": ("prompt del sistema", "prompt sistema", "prompt inicial", "mensaje del sistema", "instrucciones",
               "tus reglas", "texto anterior", "texto de arriba"),
        "zh": ("系统提示", "系統提示", "提示词", "提示詞", "系统指令", "系統指令", "初始指令", "原始指令", "隐藏指令", "隱藏指令",
               "系统消息", "系統訊息", "你的指令", "设定", "設定", "system prompt"),
        "ja": ("システムプロンプト", "システムメッセージ", "指示", "上記の"),
    },
    "persona_override": {
        "en": ("from now on", "starting now", "rest of this conversation", "do anything now", "developer mode",
               "jailbr", "dan mode", "evil confidant", "ethical", "moral", "you are no", "pretend", "act as",
               "act like", "roleplay", "role-play", "behave as", "behave like", "pose as", "pose like"),
        "fr": ("a partir de maintenant", "desormais", "dorenavant", "mode developpeur", "fais comme si",
               "tu n'es plus"),
        "de": ("ab jetzt", "ab sofort", "von nun an", "entwicklermodus", "tu so", "du bist kein", "du bist nicht mehr"),
        "es": ("a partir de ahora", "desde ahora", "modo desarrollador", "finge que", "ya no eres"),
        "zh": ("限制", "约束", "約束", "规则", "規則", "审查", "審查", "过滤", "過濾", "道德", "开发者模式", "開發者模式",
               "越狱模式", "越獄模式"),
        "ja": ("制限", "制約", "ルール", "検閲", "倫理", "開発者モード", "脱獄モード"),
    },
    "role_marker": {
        "any": ("<|", "[inst]", "[/inst]", "<<sys", "<</sys", "##", "system", "sistema", "系统", "系統", "システム"),
    },
}
assert all(_STEMS[reason].keys() == by_lang.keys() for reason, by_lang in _PATTERNS.items())
_CJK = re.compile("[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_RADIUS = 300  # longer than any match, so a window around a stem holds every match containing it
_MAX_HITS = 48  # beyond that many stems, one pass over the whole text is cheaper


# Punctuation becomes space before tokens are taken, so that "(ignore," is the word "ignore".
_PUNCTUATION_CHARS = "()[]{}<>,.;:!?\"`*_/|#=+&%~^\\"
_PUNCTUATION = str.maketrans({c: " " for c in _PUNCTUATION_CHARS})
_PUNCTUATION_BYTES = bytes.maketrans(_PUNCTUATION_CHARS.encode(), b" " * len(_PUNCTUATION_CHARS))


def _spaced(form: str) -> bytes:
    """The form in UTF-8 with punctuation as space, so that "(ignore," is the word "ignore": bytes.translate is a C
    loop in every script, where str.translate is fast on ASCII only. A comparison form's only whitespace is a plain
    space."""
    return form.encode().translate(_PUNCTUATION_BYTES)


_Key = tuple[str, str]  # (reason, language) of a pattern
_Span = tuple[int, int]
# After one of these, a Latin stem does not start a word. Any other character ends a word, as \b sees it or more
# (a CJK character is a letter to \b, but "你的system prompt" has its stem): the gate keeps every match and a few
# more, which the patterns then refuse.
_ASCII_WORD = frozenset(string.ascii_letters + string.digits + "_")


class _Index:
    """Every stem in one Aho-Corasick automaton (the Rust aho-corasick crate): a single pass over the text finds them
    all, whatever their number. A stem spelt from an ASCII letter or digit counts only at the start of a word (the
    patterns put \b, a space or a separator before it); CJK stems and symbols count anywhere, as does every stem of
    the `anywhere` keys."""

    def __init__(self, stems_by_key: dict[_Key, tuple[str, ...]], anywhere: frozenset[_Key] = frozenset()) -> None:
        keys_by_stem: dict[str, dict[_Key, None]] = {}
        for key, stems in stems_by_key.items():
            for stem in stems:
                keys_by_stem.setdefault(stem, {})[key] = None
        self._automaton = ahocorasick_rs.AhoCorasick(list(keys_by_stem))
        # Per stem, in the automaton's order: its keys at the start of a word, and inside one.
        self._keys = [(tuple(keys), tuple(keys) if stem[0] not in _ASCII_WORD else tuple(k for k in keys if k in anywhere))
                      for stem, keys in keys_by_stem.items()]

    def present(self, form: str) -> dict[_Key, list[_Span]]:
        """(reason, language) -> the spans of its stems in form."""
        found: dict[_Key, list[_Span]] = {}
        for stem, start, end in self._automaton.find_matches_as_indexes(form, overlapping=True):
            at_word_start, inside = self._keys[stem]
            for key in inside if start and form[start - 1] in _ASCII_WORD else at_word_start:
                found.setdefault(key, []).append((start, end))
        return found


def _windows(form: str, spans: list[_Span], radius: int = _RADIUS) -> list[_Span]:
    """The spans of form around its stems' spans, merged; radius: at least the longest match of the pattern."""
    if len(spans) > _MAX_HITS:
        return [(0, len(form))]
    merged: list[_Span] = []
    for start, end in sorted(spans):
        start, end = max(0, start - radius), end + radius
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _search(pattern: re.Pattern[str], form: str, windows: list[tuple[int, int]]) -> re.Match[str] | None:
    # search(form, pos, endpos), not a slice: ^, \b and look-behinds still see the real text around a window.
    for start, end in windows:
        m = pattern.search(form, start, end)
        if m:
            return m
    return None


@dataclass(frozen=True)
class PatternHit:
    reason: str
    lang: str
    score: float


def _compile(by_lang: dict[str, str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<{lang}>{p})" for lang, p in by_lang.items()), re.M)


_COMPILED = {reason: _compile(by_lang) for reason, by_lang in _PATTERNS.items()}


def _first_characters(pattern: str) -> str | None:
    r"""The characters a match of pattern can start with, when they are a known few (None otherwise): read from the
    parsed pattern, past \b, ^ and look-behinds."""
    from re import _constants as c
    from re import _parser

    def first(items) -> set[str] | None:
        for op, av in items:
            if op in (c.AT, c.ASSERT_NOT) or op is c.ASSERT and av[0] < 0:
                continue  # zero-width, and looks back or at a boundary: the match starts at the next item
            if op is c.LITERAL:
                return {chr(av)}
            if op is c.SUBPATTERN:
                return first(av[-1])
            if op is c.BRANCH:
                chars: set[str] = set()
                for branch in av[1]:
                    more = first(branch)
                    if more is None:
                        return None
                    chars |= more
                return chars
            if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] > 0:
                return first(av[2])
            if op is c.IN and all(o is c.LITERAL for o, _ in av):
                return {chr(a) for _, a in av}
            return None
        return None

    try:
        chars = first(_parser.parse(pattern, re.M))
    except (AttributeError, ImportError, TypeError, ValueError):  # another Python's parser: no look-ahead then
        return None
    return "".join(sorted(chars)) if chars and "" not in chars else None


def _max_width(pattern: str) -> int:
    """The length of the longest match of pattern (_RADIUS when unbounded or unknown)."""
    from re import _parser

    try:
        return min(_RADIUS, _parser.parse(pattern, re.M).getwidth()[1])
    except (AttributeError, ImportError, TypeError, ValueError):
        return _RADIUS


def _compile_with_lookahead(pattern: str) -> re.Pattern[str]:
    """The pattern behind a look-ahead for its first characters: the regex engine tries the whole pattern only where
    a match can start (a Chinese pattern's look-behinds were tried at every position of a window, 3 to 5 times
    slower)."""
    chars = _first_characters(pattern)
    if chars is None:
        return re.compile(pattern, re.M)
    return re.compile("(?=[" + "".join(re.escape(ch) for ch in chars) + "])(?:" + pattern + ")", re.M)


# One regex per reason and language, each run only around its own stems: a window around "instructions" in English
# text runs the English and French patterns, not the Chinese one.
_BY_LANG = {(reason, lang): _compile_with_lookahead(p)
            for reason, by_lang in _PATTERNS.items() for lang, p in by_lang.items()}
# A window around a stem reaches as far as the pattern's longest match (and a few characters more, for \b and
# look-aheads at its end): 30 characters for a Chinese pattern, not _RADIUS. Patterns with an unbounded part (\w*)
# keep _RADIUS.
_RADII = {key: min(_RADIUS, _max_width(pattern.pattern) + 8) for key, pattern in _BY_LANG.items()}

# Hidden HTML: an element a reader never sees, carrying text. Asking how to hide a div is honest; a hidden element
# with a sentence inside is not.
_HIDDEN_HTML = re.compile(
    r"<\s*(?:[a-z0-9]+\s+)?[^>]{0,80}?(?:\bhidden\b|\bcache\b|\bversteckt\b|\boculto\b|隐藏|隱藏|非表示|"
    r"display\s*:\s*none|visibility\s*:\s*hidden|\bopacity\s*:\s*0(?:\.0+)?\s*[;\"']|\bfont-size\s*:\s*0(?:px)?\s*[;\"']|"
    r"color\s*:\s*(?:white|#fff(?:fff)?)\b)[^>]{0,80}>\s*([^<]{0,400})</")
# Every hidden element names how it hides, at the start of a word: the regex runs only around these words. In a comparison form (one space
# between words) a match reaches at most a tag name and 80 characters before its word, 490 after.
_HIDDEN_MARKERS = ("hidden", "cache", "versteckt", "oculto", "隐藏", "隱藏", "非表示", "none", "opacity", "font-size",
                   "white", "#fff")
_HIDDEN_RADIUS = 600
_HTML_COMMENT_WITH_INSTRUCTION = re.compile(r"<!--(.{0,400}?)-->", re.S)
# Markdown links that run code, and images whose URL would carry data out when the client renders them.
_MARKDOWN_SCRIPT_LINK = re.compile(r"\[[^\]]{0,200}\]\(\s*(?:javascript|vbscript|data|file)\s*:")
_MARKDOWN_IMAGE_EXFIL = re.compile(
    r"!\[[^\]]{0,200}\]\(\s*https?://[^)\s]{1,300}[?&][^)\s=]{1,40}=[^)\s]{0,200}?(?:\{|\[|\$|%7b|<|\.\.\.)"
    r"|!\[[^\]]{0,200}\]\(\s*https?://[^)\s]{1,300}[?&][^)\s]{0,300}\).{0,200}\b(?:replace|append|add|include|insert|"
    r"encode|fill)\b.{0,80}\b(?:conversation|history|password|secret|previous messages|chat|data|summary|user)", re.S)
# Repetition: the reference's "oublie oublie oublie", and token flooding in any script.
_TRIGGERS = r"(?:forget|ignore|oublie|ignore[sz]?|vergiss|ignoriere|olvida|ignora|忘记|忘記|忽略|无视|無視|忘れろ)"
# Bounded (three in a row, a few separators apart), so that it runs only around the triggers.
_REPEATED_TRIGGER = re.compile(rf"({_TRIGGERS})(?:[\s,.!;:]{{0,20}}\1){{2}}")
# Where a repetition can start: a trigger is one of these, and may be glued to the one before it.
_TRIGGER_STEMS = ("forget", "ignor", "oubli", "vergiss", "olvid", "忘记", "忘記", "忽略", "无视", "無視", "忘れろ")
_REPETITION_RADIUS = _max_width(_REPEATED_TRIGGER.pattern) + 8
_FLOOD_RUN = 20
# Within one unspaced token (Chinese, Japanese, "hahaha..."): a unit of up to 12 characters repeated 20 times.
_FLOOD_IN_TOKEN = re.compile(r"([^\W\d_].{0,11}?)\1{19,}")
_LONG_TOKEN = 40
# A byte string's shape: a space stays one, anything else is "x"; a token of _LONG_TOKEN bytes is then a substring.
_TOKEN_SHAPE = bytes.maketrans(bytes(range(256)), bytes(32 if c == 32 else 120 for c in range(256)))
_LONG_TOKEN_SHAPE = b"x" * _LONG_TOKEN


def _flooded(spaced: bytes) -> bool:
    """spaced: _spaced(form)."""
    tokens = spaced.split()
    # Cheap first: a run of 20 needs at least 19 equal neighbours anywhere.
    if len(tokens) >= _FLOOD_RUN and sum(map(operator.eq, tokens, islice(tokens, 1, None))) >= _FLOOD_RUN - 1:
        run, previous = 0, None
        for token in tokens:
            run = run + 1 if token == previous and token and not token.decode().isdigit() else 1
            previous = token
            if run >= _FLOOD_RUN:
                return True
    # A unit repeated inside one long token has few distinct characters (base64 or a URL has many). Bytes are at
    # least as many as characters: the length is checked again on the characters.
    if _LONG_TOKEN_SHAPE not in spaced.translate(_TOKEN_SHAPE):
        return False
    long = (t.decode() for t in compress(tokens, map((_LONG_TOKEN).__le__, map(len, tokens))))
    return any(len(t) >= _LONG_TOKEN and len(set(t)) <= 24 and _FLOOD_IN_TOKEN.search(t) for t in long)


# In a document or tool result (never in the user's own prompt), text that speaks to the assistant about its answer.
_ADDRESSES_ASSISTANT = re.compile(
    r"\b(?:in|to|within|into|throughout|with) your (?:response|answer|reply|output|elucidation|summary)\b"
    r"|\byour (?:response|answer|reply|output)\b.{0,40}\b(?:must|should|include|contain|mention|add)"
    r"|\b(?:ai|assistant|language model|llm|chatbot|gpt)\b\s*[,:]\s*(?:please\s+)?(?:you must|you should|ignore|do not|"
    r"don't|instead|make sure)"
    r"|\b(?:dans|a) (?:ta|votre) reponse\b|\bin (?:deiner|ihrer) antwort\b|\ben (?:tu|su) respuesta\b"
    r"|在(?:你的|您的)?(?:回答|回复|回覆|答复)中|(?:回答|返答|返信)(?:に|の中で|で)(?:は)?.{0,20}(?:含め|追加|入れ|加え)")

_ADDRESSES_STEMS = ("your respon", "your answer", "your repl", "your output", "your elucid", "your summar", "assistant",
                    "language model", "llm", "chatbot", "gpt", "ai,", "ai:", "ai ,", "ai :", "reponse", "antwort", "respuesta", "回答",
                    "回复", "回覆", "答复", "返答", "返信")

_GENERIC = {"hidden_html": 0.6, "markdown_script_link": 0.9, "markdown_image_exfiltration": 0.9,
            "excessive_repetition": 0.8, "token_flooding": 0.6, "document_addresses_assistant": 0.7}


# "Developer mode" is also a setting of phones, browsers and Windows (issue 19: "How do I enable developer mode on my
# Android phone?" was refused in six languages). Next to a device's name the term is taken for that setting before
# the patterns run; every other persona pattern, and the learned layer, still see the whole text.
_DEVICE_MODE_TERMS = ("developer mode", "mode developpeur", "entwicklermodus", "modo desarrollador", "开发者模式",
                      "開發者模式", "開発者モード")
_DEVICES = (r"android|iphone|ipad|ios|phone|smartphone|handy|telefon|telephone|telefono|movil|portable|tablet|"
            r"tablette|tableta|chrome|chromebook|firefox|browser|navigateur|navegador|windows|macos|xbox|playstation|"
            r"pixel|samsung|xiaomi|huawei|device|appareil|gerat|dispositivo|laptop|pc|settings|parametres|reglages|"
            r"einstellungen|ajustes|configuracion|extension|erweiterung|app")
_CJK_DEVICES = r"android|iphone|ipad|windows|chrome|手机|手機|安卓|平板|浏览器|瀏覽器|电脑|電腦|设备|設備|设置|スマホ|スマートフォン|タブレット|デバイス|アンドロイド|携帯|端末|ブラウザ|パソコン|設定"
_LATIN_TERMS = "|".join(t for t in _DEVICE_MODE_TERMS if t.isascii())
_CJK_TERMS = "|".join(t for t in _DEVICE_MODE_TERMS if not t.isascii())
_DEVICE_SETTING = re.compile(
    rf"\b(?:{_DEVICES})\b.{{0,40}}\b(?:{_LATIN_TERMS})\b|\b(?:{_LATIN_TERMS})\b.{{0,40}}\b(?:{_DEVICES})\b"
    rf"|(?:{_CJK_DEVICES}).{{0,12}}(?:{_CJK_TERMS})|(?:{_CJK_TERMS}).{{0,12}}(?:{_CJK_DEVICES})")
_DEVICE_TERM = re.compile(rf"{_LATIN_TERMS}|{_CJK_TERMS}")

_ADDRESSES_KEY = ("document_addresses_assistant", "any")
_HIDDEN_KEY = ("hidden_html", "any")
_REPETITION_KEY = ("excessive_repetition", "any")
_DEVICE_MODE_KEY = ("device_mode", "any")
_INDEX = _Index({(reason, lang): stems for reason, by_lang in _STEMS.items() for lang, stems in by_lang.items()}
                | {_ADDRESSES_KEY: _ADDRESSES_STEMS, _HIDDEN_KEY: _HIDDEN_MARKERS, _REPETITION_KEY: _TRIGGER_STEMS,
                   _DEVICE_MODE_KEY: _DEVICE_MODE_TERMS},
                anywhere=frozenset({_REPETITION_KEY}))


def _stems_of(form: str) -> tuple[str, dict[_Key, list[_Span]]]:
    """The form the patterns read, and its stems (_INDEX.present): "developer mode" next to a device's name replaced
    by underscores (the index finds the term in the same pass as the stems, so honest text pays nothing more)."""
    stems = _INDEX.present(form)
    if _DEVICE_MODE_KEY in stems:
        cleared = _DEVICE_SETTING.sub(lambda m: _DEVICE_TERM.sub(lambda t: "_" * len(t.group()), m.group()), form)
        if cleared != form:
            return cleared, _INDEX.present(cleared)
    return form, stems


def _language_hit(form: str, stems: dict[_Key, list[_Span]], reason: str) -> PatternHit | None:
    """The first language whose pattern of `reason` matches form (stems: _INDEX.present(form))."""
    for lang in _PATTERNS[reason]:
        spans = stems.get((reason, lang))
        if spans and _search(_BY_LANG[reason, lang], form, _windows(form, spans, _RADII[reason, lang])):
            return PatternHit(reason, lang, _SCORES[reason])
    return None


def reasons(form: str, among: frozenset[str]) -> set[str]:
    """{hit.reason for hit in scan(form)} & among, for reasons of the language patterns (_PATTERNS): only their
    patterns run (the behavioural window asks this of every prompt, and needs none of the other checks)."""
    form, stems = _stems_of(form)
    return {reason for reason in among if _language_hit(form, stems, reason)}


def scan(form: str, *, document: bool = False) -> list[PatternHit]:
    """Patterns over a comparison form; `document` adds the checks that only make sense in third-party text."""
    hits = []
    form, stems = _stems_of(form)
    for reason in _PATTERNS:
        hit = _language_hit(form, stems, reason)
        if hit:
            hits.append(hit)
    if "<" in form:
        hidden = _HIDDEN_KEY in stems and _search(_HIDDEN_HTML, form, _windows(form, stems[_HIDDEN_KEY], _HIDDEN_RADIUS))
        if hidden and len(hidden.group(1).strip()) >= 12:
            hits.append(PatternHit("hidden_html", "any", _GENERIC["hidden_html"]))
        for comment in _HTML_COMMENT_WITH_INSTRUCTION.findall(form):
            if any(p.search(comment) for p in _COMPILED.values()):
                hits.append(PatternHit("hidden_html", "any", _GENERIC["hidden_html"]))
                break
    if "](" in form:
        if _MARKDOWN_SCRIPT_LINK.search(form):
            hits.append(PatternHit("markdown_script_link", "any", _GENERIC["markdown_script_link"]))
        if _MARKDOWN_IMAGE_EXFIL.search(form):
            hits.append(PatternHit("markdown_image_exfiltration", "any", _GENERIC["markdown_image_exfiltration"]))
    if _REPETITION_KEY in stems and _search(_REPEATED_TRIGGER, form, _windows(form, stems[_REPETITION_KEY],
                                                                             _REPETITION_RADIUS)):
        hits.append(PatternHit("excessive_repetition", "any", _GENERIC["excessive_repetition"]))
    elif _flooded(_spaced(form)):
        hits.append(PatternHit("token_flooding", "any", _GENERIC["token_flooding"]))
    if document and _ADDRESSES_KEY in stems and \
            _search(_ADDRESSES_ASSISTANT, form, _windows(form, stems[_ADDRESSES_KEY])):
        hits.append(PatternHit("document_addresses_assistant", "any", _GENERIC["document_addresses_assistant"]))
    return hits


# --- sketches for the behavioural window ------------------------------------------------------------------------

def _vocabulary() -> tuple[frozenset[str], frozenset[str]]:
    sources = " ".join([p for by_lang in _PATTERNS.values() for p in by_lang.values()]
                       + [stem for by_lang in _STEMS.values() for stems in by_lang.values() for stem in stems])
    words = frozenset(w[:4] for w in re.findall(r"[a-z]{2,}", sources))
    return words, frozenset(_CJK.findall(sources))


_SKETCH_WORDS, _SKETCH_CHARS = _vocabulary()
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x9FFF), (0xF900, 0xFAFF))  # those of _CJK


def _cjk_except(kept: frozenset[str]) -> re.Pattern[str]:
    """A character of _CJK that is not in kept: its ranges cut around the kept characters (a regular expression
    replaces them all in one call, where a Python function per run looked at each character)."""
    spans = []
    for lo, hi in _CJK_RANGES:
        start = lo
        for cp in sorted(ord(c) for c in kept if lo <= ord(c) <= hi):
            if start < cp:
                spans.append((start, cp - 1))
            start = cp + 1
        if start <= hi:
            spans.append((start, hi))
    return re.compile("[" + "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in spans) + "]")


_HIDDEN_CJK = _cjk_except(_SKETCH_CHARS)
HIDDEN = "\u00b7"


def sketch(form: str) -> str:
    """What a split attack needs of a prompt, and nothing else: the words the patterns above are made of; every
    other word (and every other CJK character) becomes a middle dot. Stored in the behavioural window instead of
    the prompt."""
    if form.isascii():
        # No CJK: a word is kept or hidden. The vocabulary holds letters only, so stripping the punctuation at a
        # word's ends (where _sketch turns every punctuation into a space, then strips) finds the same words: any
        # punctuation left within the first four characters keeps either spelling out of the vocabulary.
        return " ".join([token if token.strip(_PUNCTUATION_CHARS)[:4] in _SKETCH_WORDS else HIDDEN
                         for token in form.split()])
    return _sketch(form)


def _sketch(form: str) -> str:
    """sketch() in any script."""
    out = []
    for token in form.split():
        bare = token.translate(_PUNCTUATION).strip()
        if bare and bare[:4] in _SKETCH_WORDS:
            out.append(token)
        elif _CJK.search(token):
            out.append(_HIDDEN_CJK.sub(HIDDEN, token))
        else:
            out.append(HIDDEN)
    return " ".join(out)
