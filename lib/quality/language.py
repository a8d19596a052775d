"""Language of an answer by Unicode script, and drift away from the expected language.

Counts characters per script with explicit ranges (shared/reference/engine_apis.md §6):
Python's `re` has no `\\p{Han}`, and a per-script count also works per sentence, which
whole-text detectors (langdetect, fastText) miss. Stdlib only; lib/quality/__init__.py is the entry.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

LANGS: tuple[str, ...] = ("ko", "ja", "zh", "en")
LANG_NAMES = {"ko": "Korean", "ja": "Japanese", "zh": "Chinese", "en": "English"}
# Script ranges from §6. Latin counts letters only: digits and punctuation say nothing
# about the language.
_HANGUL = "\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff\uffa0-\uffdc"
_HAN = "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U000323af"
_KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_LATIN = "A-Za-z\u00c0-\u024f"
_HANGUL_RE = re.compile(f"[{_HANGUL}]+")
_HAN_RE = re.compile(f"[{_HAN}]+")
_KANA_RE = re.compile(f"[{_KANA}]+")
_LATIN_RE = re.compile(f"[{_LATIN}]+")
# Full-width punctuation that Chinese uses and Korean never does (Korean uses ASCII).
_ZH_PUNCT_RE = re.compile("[，。！？：；、]")
_HAN_RUN_RE = re.compile(f"[{_HAN}]{{4,}}")
_CJK_RUN_RE = re.compile(f"[{_HAN}{_KANA}]{{8,}}")
# Chinese-only characters, for telling Chinese from Japanese (which has 時 for 时, 説 for
# 说, 這 rarely): simplified forms Japanese does not share, particles Japanese never
# writes, and traditional function characters. Shared forms (的 是 了 会 国) are left out.
_ZH_SIMPLIFIED = (
    "这们吗说个还让进过时为对发应经开关问题现实业产动术么给从样种东车长门见头买卖间师书习语认识"
    "论设计调议员务讲谈级络结统较该线组织维续显风飞华劳势场报执视觉读请谢谁课讨记运远选边达际险"
    "陆难顺须领频马鸟鱼龙"
)
_ZH_PARTICLES = "你您她很呢吧"
_ZH_MARKER_RE = re.compile(f"[{_ZH_SIMPLIFIED}{_ZH_PARTICLES}這們嗎說讓麼裡]")
# For Korean, also simplified forms that Japanese shares (会 国 学 数 ...): Korean Hanja is
# written in traditional forms, so unquoted simplified words mean Chinese drifted in
# (최근 인공지능 技术의 발전은 社会 전반에...). All checked against hanziconv's table.
_KO_ZH_RE = re.compile(
    f"[{_ZH_SIMPLIFIED}{_ZH_PARTICLES}"
    "会国学数据准确济响区图广义乐亿仅众优传体价兴军农决况净减则刚创别办单历压厅县参双变叶号听启"
    "围园圆圣坏块坚处备复够夸夺奋奖妇孙宁宝审宪宫宽导寿将尔尽层岁岛币帅帮库废异张弹强归当录彻忆"
    "态总恶惊惯愿战户扩扫扬扰护担拥择损换携摄断无旧晓机杀杂权条来极构标树档梦检楼欢欧毕气汇汉沟"
    "没测浓涨温湾满灭灯灵灾点炼烟热爱状独环电画疗监盘码礼离积称稳穷竞笔简类粮紧纪约红纳纸练细终"
    "绝继综绿网罗罢联职肃肤胜脑脚脸节艺药获营虑虽补装规览触订许访证评诉词译试诚话询详误诸贝负贡"
    "财责贤败账货质购贯费资赛赶轨转轮软轻载辅辆输辞辽迁违连适递遗邮郑释钟钢钱铁银锁错闭闻阅队阳"
    "阴阵陈随隐雾静顾饭馆驱验鲜鸡麦黄齐]"
)
# Quoted or parenthesised short spans are examples and glosses, not drift.
_QUOTED_RE = re.compile(
    "'[^'\n]{1,40}'|\"[^\"\n]{1,40}\"|‘[^’\n]{1,40}’|“[^”\n]{1,40}”|「[^」\n]{1,40}」"
    "|\\([^()\n]{1,40}\\)|（[^（）\n]{1,40}）"
)

# Hanja glosses are legitimate Korean: 대한민국(大韓民國), 一石二鳥(일석이조).
_GLOSS_AFTER_RE = re.compile(f"[(（][{_HAN}][^()（）\\n{_HANGUL}]{{0,40}}[)）]")  # after Hangul
_GLOSS_BEFORE_RE = re.compile(f"[{_HAN}]{{1,12}}\\s?(?=[(（][{_HANGUL}])")
CODE_BLOCK_RE = re.compile(r"```.*?(?:```|\Z)", re.S)  # unclosed: cut off inside code
_INLINE_CODE_RE = re.compile(r"`[^`\n]+`")
_URL_RE = re.compile(r"https?://\S+")
# A sentence ends at 。！？, at .!? before a space or the end (not in 3.5 or e.g.x), or
# at a line break.
SENTENCE_RE = re.compile(r"(?:[^\n。！？!?.]+|[.!?](?![\s.!?]|\Z))+(?:[。！？]+|[.!?]+)?")
_LETTER_RE = re.compile(r"[^\W\d_]")
# Scripts that can make a sentence drift away from each expected language.
# Japanese always has Han, so there only Hangul, Chinese-only characters, the Chinese comma
# and kana-less sentences are suspect.
_FOREIGN_RE = {
    "ko": re.compile(f"[{_HAN}{_KANA}]"),
    "zh": re.compile(f"[{_HANGUL}{_KANA}]"),
    "ja": re.compile(f"[{_HANGUL}{_ZH_SIMPLIFIED}{_ZH_PARTICLES}這們嗎說讓麼裡，]"),
    "en": re.compile(f"[{_HANGUL}{_HAN}{_KANA}]"),
}

_SCRIPT_OF = {"ko": "hangul", "zh": "han", "ja": "kana", "en": "latin"}
# (hangul, han, kana, latin) character counts
Counts = tuple[int, int, int, int]


def normalize_lang(code: str | None) -> str | None:
    """'ko-KR' -> 'ko', '' -> None; raise ValueError for a language this module cannot judge."""
    if code is None or not code.strip():
        return None
    base = code.strip().lower().replace("_", "-").split("-")[0]
    if base not in LANGS:
        raise ValueError(f"unsupported language {code!r} (supported: {', '.join(LANGS)})")
    return base


def _count(text: str) -> Counts:
    return (
        sum(map(len, _HANGUL_RE.findall(text))),
        sum(map(len, _HAN_RE.findall(text))),
        sum(map(len, _KANA_RE.findall(text))),
        sum(map(len, _LATIN_RE.findall(text))),
    )


def _classify(c: Counts) -> str | None:
    """The dominant language of a piece of text, or None when it has no letters."""
    hangul, han, kana, latin = c
    cjk = hangul + han + kana
    # One Hangul syllable or Han character carries about as much as 3-4 Latin letters,
    # so English terms inside Korean (API, NLP) do not tip the balance.
    if not cjk:
        return "en" if latin else None
    if latin > 4 * cjk:
        return "en"
    if 2 * hangul >= cjk:
        return "ko"
    if 10 * kana >= kana + han:  # Japanese prose is rarely under 10% kana
        return "ja"
    return "zh" if han else "ko"


def _clean(text: str) -> str:
    """Drop what must not count for the language: code, URLs, Hanja glosses."""
    if "`" in text:
        text = _INLINE_CODE_RE.sub(" ", CODE_BLOCK_RE.sub("\n", text))
    if "://" in text:
        text = _URL_RE.sub(" ", text)
    if ("(" in text or "（" in text) and _HAN_RE.search(text):
        text = _GLOSS_BEFORE_RE.sub("", _GLOSS_AFTER_RE.sub(_drop_gloss, text))
    return text


def _drop_gloss(match: re.Match[str]) -> str:
    """Drop a parenthesised Han gloss when it follows a Hangul word (space allowed)."""
    text, i = match.string, match.start()
    before = text[i - 1 : i] if text[i - 1 : i] != " " else text[i - 2 : i - 1]
    return "" if before and "\uac00" <= before <= "\ud7a3" else match.group()


def detect_language(text: str) -> str | None:
    """The language of a prompt or answer: 'ko', 'ja', 'zh', 'en', or None (no letters)."""
    return _classify(_count(_clean(text)))


def _foreign_sentence(expected: str, c: Counts, seg: str) -> str | None:
    """The language one sentence drifted to, when it is clearly not `expected`."""
    hangul, han, kana, latin = c
    if expected == "ko":
        if kana >= 3 and kana >= hangul:
            return "ja"
        # §6: a sentence more than half Han with >= 4 Han, or a run of 4 Han outside
        # glosses (catches a sentence that turns Chinese halfway).
        if han >= 4 and (han > hangul + kana or _HAN_RUN_RE.search(_QUOTED_RE.sub("", seg))):
            return "zh"
        if han >= 2 and han > hangul and _ZH_PUNCT_RE.search(seg):
            return "zh"
        if han >= 2 and len(_KO_ZH_RE.findall(_QUOTED_RE.sub("", seg))) >= 2:
            return "zh"
    elif expected == "zh":
        if hangul >= 4 and hangul >= han:
            return "ko"
        if kana >= 3 and 5 * kana >= kana + han:
            return "ja"
    elif expected == "ja":
        if hangul >= 4 and hangul >= han + kana:
            return "ko"
        markers = len(_ZH_MARKER_RE.findall(seg)) if han >= 4 else 0
        if markers >= 2 or (kana == 0 and han >= 4 and (markers or "，" in seg)):
            return "zh"
        if kana == 0 and han >= 15:
            return "zh"
    elif expected == "en":
        cjk = hangul + han + kana
        if cjk >= 6 and (2 * cjk > latin or _CJK_RUN_RE.search(_QUOTED_RE.sub("", seg))):
            return _classify((hangul, han, kana, 0))
    return None


def _foreign_overall(expected: str, c: Counts) -> str | None:
    """The language the whole answer drifted to, by script shares (§6 thresholds)."""
    hangul, han, kana, latin = c
    cjk = hangul + han + kana
    dominant = _classify(c)
    if expected == "en":
        return dominant if dominant not in (None, "en") else None
    if dominant == "en" and latin >= 20:
        return "en"
    if not cjk:
        return None
    if expected == "ko":
        if 5 * kana > cjk:
            return "ja"
        if 10 * han > 3 * cjk:
            return "ja" if 10 * kana >= kana + han else "zh"
    elif expected == "zh":
        if 10 * hangul > 3 * cjk:
            return "ko"
        if 20 * kana > 3 * (kana + han):
            return "ja"
    elif expected == "ja":
        if 10 * hangul > 3 * cjk:
            return "ko"
        if han >= 10 and 10 * kana < kana + han:
            return "zh"
    return None


def _shares(c: Counts) -> dict[str, float]:
    total = sum(c) or 1
    names = ("hangul", "han", "kana", "latin")
    return {name: round(c[i] / total, 3) for i, name in enumerate(names)}


def snippet(text: str, width: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def check_language(
    blocks: Iterable[str], expected: str | None
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Script shares and drift of the answer's text blocks against `expected`.

    Returns the result's `lang` part and its flags. Blocks are already free of code and
    JSON keys; each is split into sentences, so a Korean answer that ends in Chinese is
    caught even when the overall shares stay Korean.
    """
    text = "\n".join(_clean(block) for block in blocks)  # a block never runs into the next
    counts = _count(text)
    lang = {
        "expected": expected,
        "detected": _classify(counts),
        "shares": _shares(counts),
        "drifted_sentences": 0,
    }
    if expected is None:
        return lang, []
    # Only sentences holding a script foreign to `expected` can drift: skip the rest
    # without counting (most answers have none, which keeps the check in microseconds).
    foreign, ja = _FOREIGN_RE[expected], expected == "ja"
    drifted = []
    if ja or foreign.search(text):
        for i, seg in enumerate(SENTENCE_RE.findall(text), 1):
            suspect = foreign.search(seg) or (ja and not _KANA_RE.search(seg))
            if suspect and (to := _foreign_sentence(expected, _count(seg), seg)):
                drifted.append((i, seg, to))
    overall = _foreign_overall(expected, counts)
    if overall and not drifted and _QUOTED_RE.search(text):
        # A short answer around a quoted proverb ('知彼知己 百戰不殆'는 ... 뜻입니다) is not
        # drift; judge without quotes, unless quotes hold most of the text.
        unquoted = _count(_QUOTED_RE.sub("", text))
        if 2 * sum(unquoted[:3]) >= sum(counts[:3]):
            overall = _foreign_overall(expected, unquoted)
    lang["drifted_sentences"] = len(drifted)
    if not overall and not drifted:
        return lang, []
    target = overall or Counter(to for _, _, to in drifted).most_common(1)[0][0]
    lang["detected"] = target
    name, expected_name = LANG_NAMES[target], LANG_NAMES[expected]
    if overall:
        script = _SCRIPT_OF[target]
        pct = round(100 * lang["shares"][script])
        how = "mostly" if pct >= 50 else "partly"
        reason = f"answer is {how} {name} ({script} {pct}%) for a {expected_name} prompt"
    else:
        i, seg, _ = drifted[0]
        n = sum(1 for seg in SENTENCE_RE.findall(text) if _LETTER_RE.search(seg))
        reason = (
            f"{len(drifted)} of {n} sentences drifted to {name}"
            f" (first at sentence {i}: {snippet(seg)!r}) in a {expected_name} answer"
        )
    return lang, [{"code": "lang_drift", "reason": reason}]
