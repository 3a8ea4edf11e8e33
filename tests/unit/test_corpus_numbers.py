"""Number verbalisers against hand-written transcripts of the corpus convention."""

import pytest

from seed_asr.corpus import numbers as nb


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"), (13, "thirteen"), (20, "twenty"), (21, "twenty one"), (100, "one hundred"),
        (105, "one hundred five"), (123, "one hundred twenty three"), (1000, "one thousand"),
        (1005, "one thousand five"), (20_000, "twenty thousand"),
        (123_456, "one hundred twenty three thousand four hundred fifty six"),
        (1_000_000, "one million"), (7_000_019, "seven million nineteen"),
    ],
)
def test_cardinal_en(n, words):
    assert nb.cardinal_en(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (8, "eighth"), (9, "ninth"),
     (12, "twelfth"), (20, "twentieth"), (21, "twenty first"), (30, "thirtieth"), (100, "one hundredth")],
)
def test_ordinal_en(n, words):
    assert nb.ordinal_en(n) == words


def test_years_times_dates_money_en():
    assert nb.year_en(1984) == "nineteen eighty four"
    assert nb.year_en(1900) == "nineteen hundred"
    assert nb.year_en(1905) == "nineteen oh five"
    assert nb.year_en(2005) == "two thousand five"
    assert nb.year_en(2024) == "twenty twenty four"
    assert nb.time_en(19, 5) == "seven oh five in the evening"
    assert nb.time_en(7, 30) == "seven thirty in the morning"
    assert nb.time_en(13, 45) == "one forty five in the afternoon"
    assert nb.time_en(23, 0) == "eleven at night"
    assert nb.time_en(12, 0) == "noon"
    assert nb.time_en(0, 0) == "midnight"
    assert nb.date_en(3, 3) == "march third"
    assert nb.date_en(12, 31, 1999) == "december thirty first nineteen ninety nine"
    assert nb.money_en(12, 50, "dollar") == "twelve dollars and fifty cents"
    assert nb.money_en(1, 0, "euro") == "one euro"
    assert nb.money_en(0, 1, "dollar") == "one cent"
    assert nb.money_en(3, 20, "pound") == "three pounds and twenty pence"
    assert nb.digits_en("5021") == "five zero two one"


@pytest.mark.parametrize(
    ("n", "chars"),
    [
        (0, "零"), (7, "七"), (10, "十"), (15, "十五"), (20, "二十"), (110, "一百一十"), (105, "一百零五"),
        (1005, "一千零五"), (1050, "一千零五十"), (1500, "一千五百"), (10_000, "一万"), (10_005, "一万零五"),
        (20_001, "二万零一"), (100_000, "十万"), (120_000, "十二万"), (1_000_000, "一百万"),
        (10_050_000, "一千零五万"), (12_345_678, "一千二百三十四万五千六百七十八"),
    ],
)
def test_cardinal_zh(n, chars):
    assert nb.cardinal_zh(n) == chars


def test_times_dates_money_zh():
    assert nb.quantity_zh(2) == "两"
    assert nb.quantity_zh(12) == "十二"
    assert nb.time_zh(14, 0) == "下午两点"
    assert nb.time_zh(19, 5) == "晚上七点零五分"
    assert nb.time_zh(8, 30) == "早上八点三十分"
    assert nb.date_zh(3, 5) == "三月五日"
    assert nb.date_zh(3, 5, 2024) == "二零二四年三月五日"
    assert nb.money_zh(12, 5) == "十二元五角"
    assert nb.money_zh(0, 5) == "五角"
    assert nb.digits_zh("2024") == "二零二四"


@pytest.mark.parametrize("call", [lambda: nb.cardinal_en(-1), lambda: nb.cardinal_en(10**9),
                                  lambda: nb.cardinal_zh(10**8), lambda: nb.year_en(2100)])
def test_out_of_range_is_an_error(call):
    with pytest.raises(ValueError, match="supports"):
        call()
