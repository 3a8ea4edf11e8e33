"""Numbers, dates, times and money written as words, the way the corpus transcripts show them.

Hand-written rather than taken from a library (num2words): the corpus needs one fixed transcript
convention in both languages, which no library's output matches without rewriting it.

English convention: lower case words, no hyphens and no "and" inside numbers ("one hundred twenty
three"); years in pairs ("nineteen eighty four", "two thousand five", "twenty twenty four"); dates as
"<month> <ordinal>" ("march third"); times on a twelve-hour clock with the part of the day ("seven
oh five in the evening", "noon"); money as "<n> dollars and <m> cents"; digit strings one digit at a
time with "zero".

Mandarin convention: Chinese numerals ("一百二十三", "一千零五", "十五"); 两 for a quantity of exactly two
before a measure word; years digit by digit with 零 ("二零二四年"); dates "三月五日"; times
"下午三点十五分" (两点 for two o'clock); money "十二元五角"; digit strings with 零 and 一.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_ONES_EN = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS_EN = ("_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL_EN = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
_MONTHS_EN = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
)
_DIGITS_ZH = "零一二三四五六七八九"


def cardinal_en(n: int) -> str:
    """0 <= n < 10**9 in words: 123 -> "one hundred twenty three"."""
    if not 0 <= n < 10**9:
        raise ValueError(f"cardinal_en supports 0 <= n < 10**9, got {n}")
    if n < 20:
        return _ONES_EN[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS_EN[tens] + (f" {_ONES_EN[ones]}" if ones else "")
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{cardinal_en(head)} {name}" + (f" {cardinal_en(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_en(n: int) -> str:
    """1 <= n: 3 -> "third", 21 -> "twenty first", 40 -> "fortieth"."""
    words = cardinal_en(n).split()
    last = words[-1]
    if last in _ORDINAL_EN:
        words[-1] = _ORDINAL_EN[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_en(year: int) -> str:
    """1000 <= year <= 2099: 1984 -> "nineteen eighty four", 2005 -> "two thousand five"."""
    if not 1000 <= year <= 2099:
        raise ValueError(f"year_en supports 1000..2099, got {year}")
    head, tail = divmod(year, 100)
    if 2000 <= year < 2010:
        return cardinal_en(year)
    if tail == 0:
        return f"{cardinal_en(head)} hundred"
    return f"{cardinal_en(head)} " + (f"oh {cardinal_en(tail)}" if tail < 10 else cardinal_en(tail))


def time_en(hour: int, minute: int) -> str:
    """24-hour clock -> words: (19, 5) -> "seven oh five in the evening", (12, 0) -> "noon"."""
    if (hour, minute) == (12, 0):
        return "noon"
    if (hour, minute) == (0, 0):
        return "midnight"
    clock = cardinal_en(hour % 12 or 12)
    if minute:
        clock += f" oh {cardinal_en(minute)}" if minute < 10 else f" {cardinal_en(minute)}"
    if 5 <= hour < 12:
        part = "in the morning"
    elif 12 <= hour < 18:
        part = "in the afternoon"
    elif 18 <= hour < 22:
        part = "in the evening"
    else:
        part = "at night"
    return f"{clock} {part}"


def date_en(month: int, day: int, year: int | None = None) -> str:
    """(3, 3) -> "march third"; with a year -> "march third twenty twenty four"."""
    text = f"{_MONTHS_EN[month - 1]} {ordinal_en(day)}"
    return text if year is None else f"{text} {year_en(year)}"


def money_en(units: int, cents: int, currency: str) -> str:
    """(12, 50, "dollar") -> "twelve dollars and fifty cents"; pounds take "pence"."""
    sub = "pence" if currency == "pound" else ("cent" if cents == 1 else "cents")
    parts = []
    if units:
        parts.append(f"{cardinal_en(units)} {currency}" + ("" if units == 1 else "s"))
    if cents:
        parts.append(f"{cardinal_en(cents)} {sub}")
    return " and ".join(parts) or f"zero {currency}s"


def digits_en(digits: str) -> str:
    """"5021" -> "five zero two one"."""
    return " ".join(_ONES_EN[int(d)] for d in digits)


def cardinal_zh(n: int) -> str:
    """0 <= n < 10**8 in Chinese numerals: 123 -> 一百二十三, 1005 -> 一千零五, 15 -> 十五."""
    if not 0 <= n < 10**8:
        raise ValueError(f"cardinal_zh supports 0 <= n < 10**8, got {n}")
    if n < 10:
        return _DIGITS_ZH[n]
    if n >= 10_000:
        high, low = divmod(n, 10_000)
        rest = "" if low == 0 else ("零" if low < 1000 else "") + cardinal_zh(low)
        return cardinal_zh(high) + "万" + rest
    out, zero_pending = "", False
    for size, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // size % 10
        if digit == 0:
            zero_pending = bool(out)
            continue
        if zero_pending:
            out += "零"
            zero_pending = False
        out += ("" if (unit == "十" and digit == 1 and not out) else _DIGITS_ZH[digit]) + unit
    return out


def quantity_zh(n: int) -> str:
    """A count before a measure word: 两 for exactly two, else :func:`cardinal_zh`."""
    return "两" if n == 2 else cardinal_zh(n)


def digits_zh(digits: str) -> str:
    """"2024" -> 二零二四."""
    return "".join(_DIGITS_ZH[int(d)] for d in digits)


def time_zh(hour: int, minute: int) -> str:
    """24-hour clock -> (19, 5) -> 晚上七点零五分, (8, 0) -> 早上八点, (14, 0) -> 下午两点."""
    if hour < 5:
        part = "凌晨"
    elif hour < 9:
        part = "早上"
    elif hour < 12:
        part = "上午"
    elif hour < 13:
        part = "中午"
    elif hour < 18:
        part = "下午"
    else:
        part = "晚上"
    text = f"{part}{quantity_zh(hour % 12 or 12)}点"
    if minute:
        text += ("零" if minute < 10 else "") + f"{cardinal_zh(minute)}分"
    return text


def date_zh(month: int, day: int, year: int | None = None) -> str:
    """(3, 5) -> 三月五日; with a year -> 二零二四年三月五日."""
    text = f"{cardinal_zh(month)}月{cardinal_zh(day)}日"
    return text if year is None else f"{digits_zh(str(year))}年{text}"


def money_zh(yuan: int, jiao: int) -> str:
    """(12, 5) -> 十二元五角, (0, 5) -> 五角."""
    text = f"{cardinal_zh(yuan)}元" if yuan else ""
    return text + (f"{cardinal_zh(jiao)}角" if jiao else "") or "零元"


def _digit_string(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(rng.randint(lo, hi)))


def _duration_en(rng: random.Random) -> str:
    unit = rng.choice(("second", "minute", "minute", "hour"))
    n = rng.choice((1, 2, 3, 5, 10, 15, 20, 25, 30, 45, 90)) if unit != "hour" else rng.randint(1, 12)
    return f"{cardinal_en(n)} {unit}" + ("" if n == 1 else "s")


def _duration_zh(rng: random.Random) -> str:
    unit = rng.choice(("秒", "分钟", "分钟", "个小时"))
    n = rng.choice((1, 2, 3, 5, 10, 15, 20, 25, 30, 45, 90)) if unit != "个小时" else rng.randint(1, 12)
    return quantity_zh(n) + unit


def _money_en(rng: random.Random) -> str:
    units = rng.choice((0, rng.randint(1, 20), rng.randint(1, 999), rng.randint(1000, 9999)))
    cents = rng.choice((0, 0, rng.randint(1, 99), rng.randrange(5, 100, 5)))
    return money_en(units, cents if units or cents else 50, rng.choice(("dollar", "dollar", "euro", "pound")))


def _money_zh(rng: random.Random) -> str:
    yuan = rng.choice((0, rng.randint(1, 20), rng.randint(1, 999), rng.randint(1000, 9999)))
    return money_zh(yuan, rng.choice((0, 0, rng.randint(1, 9))) if yuan else rng.randint(1, 9))


def _temperature_en(rng: random.Random) -> str:
    n = rng.randint(-15, 40)
    return ("minus " if n < 0 else "") + cardinal_en(abs(n)) + (" degree" if abs(n) == 1 else " degrees")


def _temperature_zh(rng: random.Random) -> str:
    n = rng.randint(-15, 40)
    return ("零下" if n < 0 else "") + cardinal_zh(abs(n)) + "度"


def _time(rng: random.Random) -> tuple[int, int]:
    return rng.randrange(24), rng.choice((0, 0, 15, 30, 45, rng.randrange(60)))


def _date(rng: random.Random) -> tuple[int, int]:
    return rng.randint(1, 12), rng.randint(1, 28)


NumberSlot = Callable[[random.Random], str]

#: The number slots a template may use, per language: slot name -> sampler of its words.
NUMBER_SLOTS: dict[str, dict[str, NumberSlot]] = {
    "en": {
        "small": lambda rng: cardinal_en(rng.randint(0, 20)),
        "few": lambda rng: cardinal_en(rng.randint(2, 12)),
        "count": lambda rng: cardinal_en(rng.randint(2, 999)),
        "big": lambda rng: cardinal_en(rng.randint(1000, 999_999)),
        "house_number": lambda rng: cardinal_en(rng.randint(1, 999)),
        "percent": lambda rng: f"{cardinal_en(rng.randint(1, 99))} percent",
        "year": lambda rng: year_en(rng.randint(1900, 2030)),
        "time": lambda rng: time_en(*_time(rng)),
        "date": lambda rng: date_en(*_date(rng)),
        "full_date": lambda rng: date_en(*_date(rng), year=rng.randint(1990, 2030)),
        "digits": lambda rng: digits_en(_digit_string(rng, 4, 6)),
        "phone": lambda rng: digits_en(_digit_string(rng, 7, 10)),
        "duration": _duration_en,
        "money": _money_en,
        "temperature": _temperature_en,
    },
    "zh": {
        "small": lambda rng: cardinal_zh(rng.randint(0, 20)),
        "few": lambda rng: quantity_zh(rng.randint(2, 12)),
        "count": lambda rng: quantity_zh(rng.randint(2, 999)),
        "big": lambda rng: cardinal_zh(rng.randint(1000, 999_999)),
        "house_number": lambda rng: cardinal_zh(rng.randint(1, 999)),
        "percent": lambda rng: f"百分之{cardinal_zh(rng.randint(1, 99))}",
        "year": lambda rng: digits_zh(str(rng.randint(1900, 2030))),
        "time": lambda rng: time_zh(*_time(rng)),
        "date": lambda rng: date_zh(*_date(rng)),
        "full_date": lambda rng: date_zh(*_date(rng), year=rng.randint(1990, 2030)),
        "digits": lambda rng: digits_zh(_digit_string(rng, 4, 6)),
        "phone": lambda rng: digits_zh(_digit_string(rng, 7, 11)),
        "duration": _duration_zh,
        "money": _money_zh,
        "temperature": _temperature_zh,
    },
}
