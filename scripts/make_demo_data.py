#!/usr/bin/env python3
"""Make the bundled demo pool and demo target sets (seeded, deterministic, stdlib only).

    python scripts/make_demo_data.py                 # rewrites sample_data/
    python scripts/make_demo_data.py --out /tmp/x    # writes the same bytes elsewhere

Writes, under the output folder:
  demo_pool.jsonl            the training pool: open-instruct `messages` chats from 12 task
                             families (the `dataset` field), shuffled, with a few planted
                             low-quality rows (empty answers, wrong answers, duplicated chats)
  demo_pool_planted.json     which rows were planted and how (so tests can check them)
  targets/<name>.jsonl       target validation sets: same format plus a `subtask` field,
                             an equal number of examples per subtask

Every family is a small program of templates and vocabulary slots, so a family has real
variety inside it (phrasing, length, answer style) and close families exist (two kinds of
arithmetic; sentiment vs. topic classification). Targets are fresh draws from the same
generators with other seeds, checked not to repeat any pool prompt.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

SEED = 20250611
TARGET_SEED = 777
HELDOUT_SEED = 4242
HELDOUT_PER_SUBTASK = 32
PER_SUBTASK = 8

# rows per family before the planted duplicates are added
FAMILY_COUNTS: dict[str, int] = {
    "arithmetic_add": 360,
    "arithmetic_mul": 340,
    "unit_conversion": 280,
    "sentiment": 320,
    "topic_classification": 300,
    "translation_toy": 280,
    "grammar_fix": 260,
    "date_reasoning": 260,
    "code_python": 220,
    "trivia_qa": 300,
    "summarization": 200,
    "list_sorting": 240,
}
N_EMPTY = 12
N_WRONG = 36
N_DUPLICATE = 24
SYSTEM_RATE = 0.10
MULTI_TURN_RATE = 0.025
WRONG_FAMILIES = ("arithmetic_add", "arithmetic_mul", "unit_conversion", "trivia_qa", "date_reasoning")

# A generator returns (user prompt, assistant answer, short final answer).
Gen = Callable[[random.Random], tuple[str, str, str]]

# ----------------------------------------------------------------------------- vocabulary
NAMES = [
    "Maya", "Liam", "Sofia", "Noah", "Aisha", "Ethan", "Priya", "Lucas", "Chen", "Olivia",
    "Mateo", "Zara", "Hiro", "Emma", "Kofi", "Ines", "Omar", "Lena", "Diego", "Hannah",
    "Ravi", "Chloe", "Yusuf", "Mia", "Tomas", "Amara", "Jonas", "Leila", "Sam", "Nora",
    "Felix", "Ana", "Arjun", "Grace", "Malik", "Julia", "Kenji", "Elena", "Ben", "Fatima",
    "Oscar", "Isla", "Pavel", "Rosa", "Theo", "Anya", "Marcus", "Keiko", "Luis", "Ruth",
]
COUNTABLES = [
    "apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "seashells",
    "trading cards", "coins", "balloons", "crayons", "toy cars", "oranges", "beads",
    "postcards", "buttons", "shells", "comic books", "paper cranes", "cupcakes", "rocks",
]
PLACES = ["the park", "school", "the library", "the market", "the museum", "the beach",
          "the zoo", "the bakery", "the station", "the gym", "the pool", "the farm"]
FRUITS = ["apples", "pears", "plums", "peaches", "lemons", "mangoes", "cherries", "apricots"]
ITEMS = [  # (singular, plural, low price, high price) in dollars
    ("notebook", "notebooks", 2, 9), ("pen", "pens", 1, 4), ("sandwich", "sandwiches", 4, 11),
    ("movie ticket", "movie tickets", 8, 16), ("T-shirt", "T-shirts", 9, 30),
    ("bus pass", "bus passes", 3, 12), ("candle", "candles", 2, 15), ("plant pot", "plant pots", 3, 18),
    ("concert ticket", "concert tickets", 25, 90), ("mug", "mugs", 4, 14), ("scarf", "scarves", 7, 25),
    ("loaf of bread", "loaves of bread", 2, 6), ("bottle of juice", "bottles of juice", 1, 5),
    ("board game", "board games", 12, 45), ("backpack", "backpacks", 20, 60),
]
PER_KG = ["rice", "flour", "cheese", "coffee beans", "grapes", "tomatoes", "potatoes", "chicken"]


def _fmt(x: float) -> str:
    """Numbers as people write them: integers plain, else up to 2 decimals, no trailing zeros."""
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return s


def _money(x: float) -> str:
    if abs(x - round(x)) < 1e-9:
        return f"${int(round(x))}"
    return f"${x:.2f}"


def _pick(r: random.Random, seq):
    return seq[r.randrange(len(seq))]


# ----------------------------------------------------------------------------- arithmetic_add
def gen_arithmetic_add(r: random.Random) -> tuple[str, str, str]:
    name, name2 = r.sample(NAMES, 2)
    obj = _pick(r, COUNTABLES)
    big = r.random() < 0.25
    a = r.randint(100, 9999) if big else r.randint(3, 95)
    b = r.randint(50, 4999) if big else r.randint(2, 60)
    c = r.randint(1, min(a + b - 1, 40))
    kind = r.randrange(14)
    if kind == 0:
        q = f"{name} has {a} {obj}. {name2} gives {name} {b} more. How many {obj} does {name} have now?"
        ans, expl = a + b, f"{name} starts with {a} {obj} and receives {b} more, so {a} + {b} = {a + b}."
    elif kind == 1:
        hi, lo = max(a, b), min(a, b)
        q = f"{name} had {hi} {obj} and gave {lo} of them to {name2}. How many {obj} does {name} have left?"
        ans, expl = hi - lo, f"Giving away {lo} from {hi} leaves {hi} - {lo} = {hi - lo}."
    elif kind == 2:
        q = (f"A library had {a} books on its shelves. On Monday it received {b} new books, and on "
             f"Tuesday {c} books were borrowed. How many books are on the shelves now?")
        ans = a + b - c
        expl = f"After Monday there are {a} + {b} = {a + b} books. After Tuesday there are {a + b} - {c} = {ans}."
    elif kind == 3:
        q = _pick(r, ["What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}.",
                      "{a} plus {b} equals what?", "Find the sum of {a} and {b}."]).format(a=a, b=b)
        ans, expl = a + b, f"{a} + {b} = {a + b}."
    elif kind == 4:
        q = f"Add the numbers {a}, {b} and {c}."
        ans, expl = a + b + c, f"{a} + {b} = {a + b}, and {a + b} + {c} = {a + b + c}."
    elif kind == 5:
        on = r.randint(1, 30)
        off = r.randint(1, a)
        q = (f"A bus leaves the depot with {a} passengers. At the first stop {off} people get off and "
             f"{on} people get on. How many passengers are on the bus now?")
        ans = a - off + on
        expl = f"{a} - {off} = {a - off} after people get off, then {a - off} + {on} = {ans}."
    elif kind == 6:
        g = r.randint(2, 4)
        scores = [r.randint(5, 40) for _ in range(g)]
        games = ", ".join(str(s) for s in scores[:-1]) + f" and {scores[-1]}"
        q = f"{name} scored {games} points in {g} basketball games. How many points did {name} score in total?"
        ans = sum(scores)
        expl = " + ".join(str(s) for s in scores) + f" = {ans}."
    elif kind == 7:
        t0, rise = r.randint(-10, 25), r.randint(1, 18)
        q = (f"The temperature was {t0} degrees Celsius at 7 a.m. and rose by {rise} degrees by noon. "
             f"What was the temperature at noon?")
        ans, expl = t0 + rise, f"{t0} + {rise} = {t0 + rise} degrees."
    elif kind == 8:
        q = (f"{name} walked {a} meters from home to {_pick(r, PLACES)} and then {b} meters to a "
             f"friend's house. How far did {name} walk altogether?")
        ans, expl = a + b, f"{a} m + {b} m = {a + b} m."
    elif kind == 9:
        fruit = _pick(r, FRUITS)
        q = f"A farmer picked {a} {fruit} on Saturday and {b} {fruit} on Sunday. How many {fruit} did the farmer pick over the weekend?"
        ans, expl = a + b, f"Saturday plus Sunday: {a} + {b} = {a + b} {fruit}."
    elif kind == 10:
        hi, lo = max(a, b), min(a, b)
        q = _pick(r, ["What is {hi} - {lo}?", "Subtract {lo} from {hi}.", "Compute {hi} minus {lo}.",
                      "What do you get when you take {lo} away from {hi}?"]).format(hi=hi, lo=lo)
        ans, expl = hi - lo, f"{hi} - {lo} = {hi - lo}."
    elif kind == 11:
        q = f"A school has {a} boys and {b} girls. How many students are there in the school?"
        ans, expl = a + b, f"Boys plus girls: {a} + {b} = {a + b} students."
    elif kind == 12:
        m1, m2 = r.sample(["January", "February", "March", "April", "May", "June", "July",
                           "August", "September", "October"], 2)
        q = f"{name} saved ${a} in {m1} and ${b} in {m2}. How much money did {name} save in the two months?"
        ans, expl = a + b, f"${a} + ${b} = ${a + b}."
    else:
        spent = r.randint(1, a)
        q = (f"{name} had ${a} in a wallet, spent ${spent} at {_pick(r, PLACES)} and then found ${c} "
             f"in a coat pocket. How much money does {name} have now?")
        ans = a - spent + c
        expl = f"${a} - ${spent} = ${a - spent}, and ${a - spent} + ${c} = ${ans}."
    style = r.randrange(4)
    if style == 0:
        out = str(ans)
    elif style == 1:
        out = f"{expl} The answer is {ans}."
    elif style == 2:
        out = f"Let's work it out step by step.\n{expl}\nSo the answer is {ans}."
    else:
        out = expl
    return q, out, str(ans)


# ----------------------------------------------------------------------------- arithmetic_mul
def gen_arithmetic_mul(r: random.Random) -> tuple[str, str, str]:
    name = _pick(r, NAMES)
    kind = r.randrange(13)
    if kind == 0:
        sg, pl, lo, hi = _pick(r, ITEMS)
        p, n = r.randint(lo, hi), r.randint(2, 12)
        q = _pick(r, [f"Each {sg} costs ${p}. How much do {n} {pl} cost?",
                      f"{name} buys {n} {pl} at ${p} each. What is the total cost?",
                      f"One {sg} is priced at ${p}. What is the price of {n} {pl}?"])
        ans = n * p
        expl, out_ans = f"{n} × ${p} = ${ans}.", _money(ans)
    elif kind == 1:
        n, k = r.randint(2, 15), r.randint(3, 24)
        obj = _pick(r, COUNTABLES)
        q = f"{name} buys {n} packs of {obj} with {k} {obj} in each pack. How many {obj} does {name} buy?"
        ans = n * k
        expl, out_ans = f"{n} packs × {k} per pack = {ans} {obj}.", str(ans)
    elif kind == 2:
        v, t = r.randint(30, 120), r.randint(2, 9)
        q = f"A car travels at {v} km/h for {t} hours. How far does it travel?"
        ans = v * t
        expl, out_ans = f"Distance = speed × time = {v} × {t} = {ans} km.", f"{ans} km"
    elif kind == 3:
        a, b = r.randint(2, 99), r.randint(2, 30)
        q = _pick(r, ["What is {a} × {b}?", "What is {a} times {b}?", "Multiply {a} by {b}.",
                      "Compute {a} * {b}.", "Find the product of {a} and {b}."]).format(a=a, b=b)
        ans = a * b
        expl, out_ans = f"{a} × {b} = {ans}.", str(ans)
    elif kind == 4:
        n, each = r.randint(2, 12), r.randint(2, 15)
        total = n * each
        obj = _pick(r, ["candies", "stickers", "marbles", "grapes", "cookies", "pencils"])
        q = f"{total} {obj} are shared equally among {n} children. How many {obj} does each child get?"
        expl, out_ans = f"{total} ÷ {n} = {each}.", str(each)
    elif kind == 5:
        item = _pick(r, PER_KG)
        p = r.choice([1.5, 2, 2.25, 2.5, 3, 3.75, 4, 4.5, 6, 8.5, 12])
        w = r.randint(2, 9)
        q = f"{item.capitalize()} costs ${_fmt(p)} per kilogram. How much do {w} kilograms of {item} cost?"
        ans = p * w
        expl, out_ans = f"{w} kg × ${_fmt(p)}/kg = {_money(ans)}.", _money(ans)
    elif kind == 6:
        a, b = r.randint(3, 40), r.randint(3, 40)
        unit = _pick(r, ["cm", "m", "inches", "feet"])
        q = f"A rectangle is {a} {unit} long and {b} {unit} wide. What is its area?"
        ans = a * b
        expl, out_ans = f"Area = length × width = {a} × {b} = {ans} square {unit}.", f"{ans} square {unit}"
    elif kind == 7:
        rate, h = r.randint(9, 45), r.randint(3, 40)
        q = f"{name} earns ${rate} per hour and works {h} hours this week. How much does {name} earn this week?"
        ans = rate * h
        expl, out_ans = f"${rate} × {h} hours = ${ans}.", f"${ans}"
    elif kind == 8:
        sg, pl, lo, hi = _pick(r, ITEMS)
        p, n = r.randint(lo, hi), r.randint(2, 10)
        total = p * n
        q = _pick(r, [f"{n} {pl} cost ${total} in total. What is the price of one {sg}?",
                      f"If {n} {pl} cost ${total}, how much does a single {sg} cost?"])
        expl, out_ans = f"Unit price = ${total} ÷ {n} = ${p}.", f"${p}"
    elif kind == 9:
        k, boxes = r.choice([6, 8, 10, 12, 24]), r.randint(2, 20)
        n = k * boxes
        obj = _pick(r, ["eggs", "muffins", "bottles", "cans", "jars"])
        q = f"A box holds {k} {obj}. How many boxes are needed to pack {n} {obj}?"
        expl, out_ans = f"{n} ÷ {k} = {boxes} boxes.", str(boxes)
    elif kind == 10:
        rows, seats = r.randint(5, 40), r.randint(8, 30)
        q = f"A theater has {rows} rows with {seats} seats in each row. How many seats are there?"
        ans = rows * seats
        expl, out_ans = f"{rows} × {seats} = {ans} seats.", str(ans)
    elif kind == 11:
        sg, pl, lo, hi = _pick(r, ITEMS)
        p1, n1 = r.randint(lo, hi), r.randint(2, 6)
        sg2, pl2, lo2, hi2 = _pick(r, ITEMS)
        p2, n2 = r.randint(lo2, hi2), r.randint(1, 5)
        ans = p1 * n1 + p2 * n2
        q = (f"{name} buys {n1} {pl if n1 > 1 else sg} at ${p1} each and {n2} {pl2 if n2 > 1 else sg2} "
             f"at ${p2} each. How much does {name} spend in total?")
        expl = f"{n1} × ${p1} = ${p1 * n1} and {n2} × ${p2} = ${p2 * n2}; together ${ans}."
        out_ans = f"${ans}"
    else:
        per_day, days = r.randint(2, 25), r.choice([7, 14, 30, 5, 10])
        obj = _pick(r, ["pages", "kilometers", "glasses of water", "push-ups", "words of French"])
        q = f"{name} does {per_day} {obj} every day. How many {obj} is that in {days} days?"
        ans = per_day * days
        expl, out_ans = f"{per_day} × {days} = {ans} {obj}.", str(ans)
    style = r.randrange(4)
    if style == 0:
        out = out_ans
    elif style == 1:
        out = f"{expl} The answer is {out_ans}."
    elif style == 2:
        out = f"Step by step:\n{expl}\nAnswer: {out_ans}"
    else:
        out = expl
    return q, out, out_ans


# ----------------------------------------------------------------------------- unit_conversion
CONVERSIONS = [  # (from, to, factor, quantity)
    ("kilometers", "meters", 1000, "length"), ("meters", "centimeters", 100, "length"),
    ("centimeters", "millimeters", 10, "length"), ("meters", "kilometers", 0.001, "length"),
    ("inches", "centimeters", 2.54, "length"), ("miles", "kilometers", 1.609, "length"),
    ("feet", "inches", 12, "length"), ("yards", "feet", 3, "length"),
    ("kilograms", "grams", 1000, "mass"), ("grams", "kilograms", 0.001, "mass"),
    ("pounds", "kilograms", 0.4536, "mass"), ("tonnes", "kilograms", 1000, "mass"),
    ("hours", "minutes", 60, "time"), ("minutes", "seconds", 60, "time"),
    ("days", "hours", 24, "time"), ("weeks", "days", 7, "time"), ("hours", "seconds", 3600, "time"),
    ("liters", "milliliters", 1000, "volume"), ("milliliters", "liters", 0.001, "volume"),
    ("gallons", "liters", 3.785, "volume"), ("cups", "milliliters", 240, "volume"),
]


def _singular(unit: str) -> str:
    return {"inches": "inch", "feet": "foot"}.get(unit, unit[:-1] if unit.endswith("s") else unit)


def gen_unit_conversion(r: random.Random) -> tuple[str, str, str]:
    if r.random() < 0.15:  # temperature
        if r.random() < 0.5:
            c = r.randint(-20, 40)
            f = c * 9 / 5 + 32
            q = _pick(r, [f"Convert {c} degrees Celsius to Fahrenheit.",
                          f"What is {c}°C in °F?", f"The thermometer shows {c}°C. What is that in Fahrenheit?"])
            expl = f"°F = °C × 9/5 + 32 = {c} × 9/5 + 32 = {_fmt(f)}."
            short = f"{_fmt(f)}°F"
        else:
            f = r.randint(-4, 104)
            c = (f - 32) * 5 / 9
            q = _pick(r, [f"Convert {f} degrees Fahrenheit to Celsius.", f"What is {f}°F in °C?",
                          f"A weather report says it is {f}°F. How much is that in Celsius?"])
            expl = f"°C = (°F - 32) × 5/9 = ({f} - 32) × 5/9 = {_fmt(c)}."
            short = f"{_fmt(c)}°C"
    else:
        u1, u2, factor, qty = _pick(r, CONVERSIONS)
        if factor < 1:
            v = r.choice([r.randint(1, 99) * 10, r.randint(100, 9999)])
        else:
            v = r.choice([r.randint(1, 20), r.randint(2, 120) / 4, round(r.uniform(0.5, 50), 1)])
        res = v * factor
        vs = _fmt(v)
        kind = r.randrange(6)
        if kind == 0:
            q = f"Convert {vs} {u1} to {u2}."
        elif kind == 1:
            q = f"How many {u2} are in {vs} {u1}?"
        elif kind == 2:
            q = f"{vs} {u1} is how many {u2}?"
        elif kind == 3:
            ctx = {"length": f"A hiking trail is {vs} {u1} long.",
                   "mass": f"A bag of supplies weighs {vs} {u1}.",
                   "time": f"A train journey takes {vs} {u1}.",
                   "volume": f"A recipe calls for {vs} {u1} of milk."}[qty]
            q = f"{ctx} Express this in {u2}."
        elif kind == 4:
            q = f"Please change {vs} {u1} into {u2} and show the calculation."
        else:
            q = f"I measured {vs} {u1}. What is that in {u2}?"
        f_s = _fmt(factor) if factor >= 1 else f"1/{_fmt(1 / factor)}"
        if factor >= 1:
            expl = f"1 {_singular(u1)} = {f_s} {u2}, so {vs} × {f_s} = {_fmt(res)} {u2}."
        else:
            expl = f"There are {_fmt(1 / factor)} {u1} in one {_singular(u2)}, so {vs} ÷ {_fmt(1 / factor)} = {_fmt(res)} {u2}."
        short = f"{_fmt(res)} {u2}"
    style = r.randrange(3)
    out = short if style == 0 else (expl if style == 1 else f"{expl}\nAnswer: {short}")
    return q, out, short


# ----------------------------------------------------------------------------- sentiment
REVIEW_SUBJECTS = {
    "movie": ["the movie", "this film", "the sequel", "the documentary", "this thriller", "the animated feature"],
    "restaurant": ["this restaurant", "the new bistro", "the pizza place downtown", "the cafe", "this sushi bar"],
    "product": ["these headphones", "the blender", "this backpack", "the phone case", "this vacuum cleaner",
                "the running shoes", "this desk lamp", "the coffee maker", "the electric kettle"],
    "hotel": ["the hotel", "this resort", "the guesthouse", "our room", "the hostel"],
    "book": ["this novel", "the cookbook", "the biography", "this mystery novel", "the textbook"],
    "app": ["this app", "the latest update", "the budgeting app", "this game", "the photo editor"],
}
POS_ASPECTS = {
    "movie": ["the acting was superb", "the soundtrack gave me chills", "the plot kept me guessing until the end",
              "the cinematography is stunning", "I laughed the whole way through", "the characters felt real"],
    "restaurant": ["the food was delicious", "the staff were warm and attentive", "portions were generous",
                   "the prices are fair", "the desserts are to die for", "we were seated right away"],
    "product": ["it works exactly as described", "the battery lasts for days", "the build quality is excellent",
                "it was easy to set up", "it is surprisingly quiet", "it looks great on my desk"],
    "hotel": ["the room was spotless", "the view from the balcony was amazing", "breakfast was excellent",
              "the bed was very comfortable", "check-in took two minutes", "the staff went out of their way to help"],
    "book": ["the writing is beautiful", "I could not put it down", "the recipes actually work",
             "the story is moving", "the explanations are crystal clear", "every chapter ends on a hook"],
    "app": ["it is fast and intuitive", "the new design is clean", "syncing finally works",
            "it never crashes", "the dark mode is lovely", "it saves me hours every week"],
}
NEG_ASPECTS = {
    "movie": ["the plot made no sense", "it dragged on for far too long", "the dialogue was wooden",
              "the ending was a letdown", "the special effects looked cheap", "I nearly fell asleep"],
    "restaurant": ["the food arrived cold", "we waited an hour for a table", "the waiter was rude",
                   "it was overpriced for what you get", "the soup was far too salty", "the place was dirty"],
    "product": ["it broke after a week", "the battery barely lasts an hour", "it feels cheap and flimsy",
                "the instructions were useless", "it is incredibly loud", "it stopped charging after two days"],
    "hotel": ["the room smelled of smoke", "the air conditioning did not work", "the walls were paper thin",
              "the staff ignored our complaints", "there was mold in the bathroom", "the wifi never worked"],
    "book": ["the plot is predictable", "the characters are flat", "half the recipes failed",
             "it is full of typos", "the middle chapters are a slog", "the ending felt rushed"],
    "app": ["it crashes every time I open it", "the update deleted my data", "it drains my battery",
            "there are ads everywhere", "the login keeps failing", "it is painfully slow"],
}
POS_OPEN = ["I loved {s}.", "Absolutely fantastic experience with {s}!", "{S} exceeded my expectations.",
            "Really happy with {s}.", "Five stars for {s}.", "{S} is a gem.", "Highly recommend {s}."]
NEG_OPEN = ["I regret choosing {s}.", "Very disappointed with {s}.", "{S} was a waste of money.",
            "Avoid {s}.", "One star for {s}, and that is generous.", "{S} was a letdown.", "Not impressed by {s}."]
POS_CLOSE = ["Would definitely go back.", "Worth every penny.", "I will buy it again.", "Can't wait for more.",
             "Ten out of ten.", "", ""]
NEG_CLOSE = ["Never again.", "I want my money back.", "Save yourself the trouble.", "Two hours I will never get back.",
             "Returning it tomorrow.", "", ""]


def _review(r: random.Random, positive: bool) -> str:
    domain = _pick(r, sorted(REVIEW_SUBJECTS))
    subj = _pick(r, REVIEW_SUBJECTS[domain])
    main = POS_ASPECTS if positive else NEG_ASPECTS
    other = NEG_ASPECTS if positive else POS_ASPECTS
    opener = _pick(r, POS_OPEN if positive else NEG_OPEN).format(s=subj, S=subj[0].upper() + subj[1:])
    aspects = r.sample(main[domain], r.randint(1, 3))
    parts = [opener]
    body = " and ".join(aspects) if len(aspects) < 3 else f"{aspects[0]}, {aspects[1]}, and {aspects[2]}"
    parts.append(body[0].upper() + body[1:] + ".")
    if r.random() < 0.3:  # a mixed note that does not flip the overall label
        caveat = _pick(r, other[domain])
        parts.append(f"Sure, {caveat}, but overall it {'was worth it' if positive else 'was not worth it'}.")
    close = _pick(r, POS_CLOSE if positive else NEG_CLOSE)
    if close:
        parts.append(close)
    return " ".join(parts)


def gen_sentiment(r: random.Random) -> tuple[str, str, str]:
    positive = r.random() < 0.5
    text = _review(r, positive)
    label = "positive" if positive else "negative"
    kind = r.randrange(6)
    if kind == 0:
        q = f"Classify the sentiment of this review as positive or negative.\n\nReview: {text}"
    elif kind == 1:
        q = f"Is the following review positive or negative?\n{text}"
    elif kind == 2:
        q = f"Review: {text}\nSentiment:"
    elif kind == 3:
        q = f"What is the sentiment of the text below? Answer with one word.\n\n\"{text}\""
    elif kind == 4:
        q = f"Read the customer feedback and tell me whether the customer was satisfied.\n\n{text}"
    else:
        q = f"Decide if the writer of this comment liked it or not.\nComment: {text}"
    style = r.randrange(4)
    if kind == 4:
        out = ("Yes, the customer was satisfied. The feedback is positive." if positive
               else "No, the customer was not satisfied. The feedback is negative.")
    elif style == 0:
        out = label.capitalize()
    elif style == 1:
        out = label
    elif style == 2:
        out = f"The sentiment is {label}."
    else:
        cue = "praises" if positive else "complains about"
        out = f"{label.capitalize()}. The reviewer {cue} the experience overall."
    return q, out, label


# ----------------------------------------------------------------------------- topic_classification
TEAMS = ["Riverside Rovers", "Northfield United", "the Harbor Hawks", "Eastport City", "the Valley Wolves",
         "Lakeside FC", "the Mountain Lions", "Westbrook Athletic"]
COMPANIES = ["Novatek", "BrightPath", "Quantia", "Helio Systems", "Orbitron", "GreenLeaf Foods", "Apex Motors",
             "Lumen Labs", "BlueWave Bank", "Crestline Retail"]
COUNTRIES_NEWS = ["Norway", "Brazil", "Kenya", "Japan", "Canada", "India", "Chile", "Poland", "Vietnam", "Ghana"]
TOPIC_TEMPLATES = {
    "sports": [
        "{team} beat {team2} {s1}-{s2} to reach the {event} final",
        "Star striker signs a four-year contract with {team}",
        "{team} coach resigns after a run of {n} straight defeats",
        "Marathon record falls as runner finishes in under two hours and {n} minutes",
        "{team2} stun {team} with a late goal in the {event}",
        "Tennis champion withdraws from {event} with a wrist injury",
    ],
    "politics": [
        "{country} parliament passes new {bill} bill after long debate",
        "Prime minister of {country} calls early elections for {month}",
        "Opposition leaders in {country} demand inquiry into {bill} spending",
        "{country} and {country2} sign trade agreement after months of talks",
        "Voters in {country} head to the polls in a tight {bill} referendum",
        "Minister resigns as {country} cabinet reshuffle begins",
    ],
    "technology": [
        "{company} unveils a foldable {gadget} with a {n}-hour battery",
        "{company} releases an update that fixes a major security flaw in its {gadget}",
        "New chip from {company} promises {n} percent faster AI processing",
        "{company} opens its {gadget} software to outside developers",
        "Engineers at {company} demonstrate a {gadget} that runs without a charger for a week",
        "Hackers exploit a bug in popular {gadget} firmware, {company} warns",
    ],
    "business": [
        "{company} shares {move} {n} percent after quarterly results",
        "{company} to cut {n}00 jobs as sales slow",
        "{company} agrees to buy rival in a deal worth ${n} billion",
        "Central bank of {country} raises interest rates to {n} percent",
        "{company} posts record profit as demand for {product} grows",
        "Retail sales in {country} fall for the {nth} month in a row",
    ],
    "science": [
        "Astronomers spot a planet the size of Earth orbiting a nearby star",
        "Researchers in {country} discover a new species of {animal} in the rainforest",
        "Fossil of a {n}-meter sea reptile found on a {country} beach",
        "Physicists measure the mass of the neutrino with new precision",
        "Ancient DNA reveals how {animal}s spread across {continent}",
        "Probe sends back the first close-up images of an icy moon",
    ],
    "health": [
        "Study links {habit} to a lower risk of heart disease",
        "Hospitals in {country} report a rise in flu cases this {season}",
        "New vaccine shows {n} percent protection in early trials",
        "Doctors warn that {habit2} may harm sleep quality",
        "Health officials in {country} launch a campaign to promote {habit}",
        "Researchers find that {habit} improves memory in older adults",
    ],
    "entertainment": [
        "Director's new film tops the box office for the {nth} weekend",
        "Pop star announces a {n}-city world tour",
        "Long-running TV series to end after its {nth} season",
        "Festival in {country} celebrates {n} years of independent cinema",
        "Streaming service orders a second season of hit fantasy drama",
        "Novelist's debut book is being adapted into a miniseries",
    ],
}
TOPIC_BODY = {
    "sports": ["Fans packed the stadium for the match.", "The team will play again next weekend.",
               "Injuries have troubled the squad all season."],
    "politics": ["The vote was closer than expected.", "Critics say the plan lacks funding.",
                 "Talks are expected to continue next week."],
    "technology": ["The device goes on sale next month.", "Analysts expect strong demand.",
                   "The company did not reveal a price."],
    "business": ["Investors reacted quickly to the news.", "The company expects a slower year ahead.",
                 "Markets closed mixed on the day."],
    "science": ["The findings were published in a peer-reviewed journal.", "More observations are planned.",
                "The team spent three years collecting data."],
    "health": ["Experts say more research is needed.", "The study followed thousands of participants.",
               "Doctors recommend talking to a physician first."],
    "entertainment": ["Tickets sold out within hours.", "Critics have praised the performances.",
                      "The premiere is scheduled for the spring."],
}


def _headline(r: random.Random, topic: str) -> str:
    t1, t2 = r.sample(TEAMS, 2)
    c1, c2 = r.sample(COUNTRIES_NEWS, 2)
    text = _pick(r, TOPIC_TEMPLATES[topic]).format(
        team=t1, team2=t2, s1=r.randint(1, 5), s2=r.randint(0, 3), event=_pick(r, ["cup", "league", "championship", "Open"]),
        n=r.randint(2, 60), country=c1, country2=c2, bill=_pick(r, ["climate", "housing", "pension", "education", "tax"]),
        month=_pick(r, ["March", "June", "October", "November"]), company=_pick(r, COMPANIES),
        gadget=_pick(r, ["phone", "laptop", "smartwatch", "tablet", "router", "headset"]),
        move=_pick(r, ["jump", "fall", "climb", "slide"]), product=_pick(r, ["electric cars", "cloud services", "snacks", "solar panels"]),
        nth=_pick(r, ["second", "third", "fourth", "fifth"]), animal=_pick(r, ["frog", "beetle", "orchid", "bat", "horse", "wolf"]),
        continent=_pick(r, ["Europe", "Asia", "Africa", "the Americas"]), habit=_pick(r, ["daily walking", "eating more fiber", "regular swimming", "a Mediterranean diet"]),
        habit2=_pick(r, ["late-night screen use", "drinking coffee after 4 p.m.", "irregular bedtimes"]),
        season=_pick(r, ["winter", "autumn", "spring"]))
    return text[0].upper() + text[1:]


TOPICS = sorted(TOPIC_TEMPLATES)


def gen_topic_classification(r: random.Random) -> tuple[str, str, str]:
    topic = _pick(r, TOPICS)
    text = _headline(r, topic)
    if r.random() < 0.4:
        text = text + ". " + " ".join(r.sample(TOPIC_BODY[topic], r.randint(1, 2)))
    labels = ", ".join(TOPICS)
    kind = r.randrange(5)
    if kind == 0:
        q = f"Classify the news headline into one of these topics: {labels}.\n\nHeadline: {text}"
    elif kind == 1:
        q = f"What topic is this news item about?\n{text}"
    elif kind == 2:
        q = f"Article: {text}\nTopic:"
    elif kind == 3:
        q = f"Which section of a newspaper would this story appear in? Choose from {labels}.\n\n\"{text}\""
    else:
        q = f"Label the following text with its category ({' / '.join(TOPICS)}): {text}"
    style = r.randrange(3)
    out = topic.capitalize() if style == 0 else (topic if style == 1 else f"This is {'an' if topic[0] in 'aeiou' else 'a'} {topic} story.")
    return q, out, topic


# ----------------------------------------------------------------------------- translation_toy
GLOSSARY = {  # english: (french, spanish, german)
    "dog": ("chien", "perro", "Hund"), "cat": ("chat", "gato", "Katze"), "house": ("maison", "casa", "Haus"),
    "water": ("eau", "agua", "Wasser"), "bread": ("pain", "pan", "Brot"), "book": ("livre", "libro", "Buch"),
    "tree": ("arbre", "árbol", "Baum"), "car": ("voiture", "coche", "Auto"), "sun": ("soleil", "sol", "Sonne"),
    "moon": ("lune", "luna", "Mond"), "city": ("ville", "ciudad", "Stadt"), "school": ("école", "escuela", "Schule"),
    "friend": ("ami", "amigo", "Freund"), "apple": ("pomme", "manzana", "Apfel"), "milk": ("lait", "leche", "Milch"),
    "cheese": ("fromage", "queso", "Käse"), "bird": ("oiseau", "pájaro", "Vogel"), "flower": ("fleur", "flor", "Blume"),
    "river": ("rivière", "río", "Fluss"), "mountain": ("montagne", "montaña", "Berg"), "door": ("porte", "puerta", "Tür"),
    "window": ("fenêtre", "ventana", "Fenster"), "table": ("table", "mesa", "Tisch"), "chair": ("chaise", "silla", "Stuhl"),
    "night": ("nuit", "noche", "Nacht"), "day": ("jour", "día", "Tag"), "sea": ("mer", "mar", "Meer"),
    "street": ("rue", "calle", "Straße"), "child": ("enfant", "niño", "Kind"), "train": ("train", "tren", "Zug"),
    "red": ("rouge", "rojo", "rot"), "blue": ("bleu", "azul", "blau"), "green": ("vert", "verde", "grün"),
    "black": ("noir", "negro", "schwarz"), "white": ("blanc", "blanco", "weiß"), "big": ("grand", "grande", "groß"),
    "small": ("petit", "pequeño", "klein"), "happy": ("heureux", "feliz", "glücklich"), "cold": ("froid", "frío", "kalt"),
    "hot": ("chaud", "caliente", "heiß"), "to eat": ("manger", "comer", "essen"), "to drink": ("boire", "beber", "trinken"),
    "to sleep": ("dormir", "dormir", "schlafen"), "to read": ("lire", "leer", "lesen"), "to speak": ("parler", "hablar", "sprechen"),
    "to run": ("courir", "correr", "laufen"), "to write": ("écrire", "escribir", "schreiben"), "to see": ("voir", "ver", "sehen"),
}
PHRASES = [  # english, french, spanish, german
    ("Good morning.", "Bonjour.", "Buenos días.", "Guten Morgen."),
    ("Thank you very much.", "Merci beaucoup.", "Muchas gracias.", "Vielen Dank."),
    ("Where is the train station?", "Où est la gare ?", "¿Dónde está la estación de tren?", "Wo ist der Bahnhof?"),
    ("I would like a coffee, please.", "Je voudrais un café, s'il vous plaît.", "Quisiera un café, por favor.", "Ich hätte gern einen Kaffee, bitte."),
    ("How much does this cost?", "Combien ça coûte ?", "¿Cuánto cuesta esto?", "Wie viel kostet das?"),
    ("My name is Anna.", "Je m'appelle Anna.", "Me llamo Anna.", "Ich heiße Anna."),
    ("I do not understand.", "Je ne comprends pas.", "No entiendo.", "Ich verstehe nicht."),
    ("The cat is sleeping.", "Le chat dort.", "El gato está durmiendo.", "Die Katze schläft."),
    ("The weather is nice today.", "Il fait beau aujourd'hui.", "Hace buen tiempo hoy.", "Das Wetter ist heute schön."),
    ("I am hungry.", "J'ai faim.", "Tengo hambre.", "Ich habe Hunger."),
    ("Where are the toilets?", "Où sont les toilettes ?", "¿Dónde están los baños?", "Wo sind die Toiletten?"),
    ("I live in a small city.", "J'habite dans une petite ville.", "Vivo en una ciudad pequeña.", "Ich wohne in einer kleinen Stadt."),
    ("The book is on the table.", "Le livre est sur la table.", "El libro está en la mesa.", "Das Buch liegt auf dem Tisch."),
    ("We are going to the beach.", "Nous allons à la plage.", "Vamos a la playa.", "Wir gehen an den Strand."),
    ("Do you speak English?", "Parlez-vous anglais ?", "¿Habla usted inglés?", "Sprechen Sie Englisch?"),
    ("See you tomorrow.", "À demain.", "Hasta mañana.", "Bis morgen."),
    ("The water is cold.", "L'eau est froide.", "El agua está fría.", "Das Wasser ist kalt."),
    ("I like to read books.", "J'aime lire des livres.", "Me gusta leer libros.", "Ich lese gern Bücher."),
    ("The children are playing in the park.", "Les enfants jouent dans le parc.", "Los niños juegan en el parque.", "Die Kinder spielen im Park."),
    ("What time is it?", "Quelle heure est-il ?", "¿Qué hora es?", "Wie spät ist es?"),
    ("I have two brothers.", "J'ai deux frères.", "Tengo dos hermanos.", "Ich habe zwei Brüder."),
    ("The house is big.", "La maison est grande.", "La casa es grande.", "Das Haus ist groß."),
    ("Can you help me?", "Pouvez-vous m'aider ?", "¿Puede ayudarme?", "Können Sie mir helfen?"),
    ("The train leaves at eight.", "Le train part à huit heures.", "El tren sale a las ocho.", "Der Zug fährt um acht ab."),
    ("My friend drinks tea.", "Mon ami boit du thé.", "Mi amigo bebe té.", "Mein Freund trinkt Tee."),
    ("It is raining.", "Il pleut.", "Está lloviendo.", "Es regnet."),
]
NUMBERS = {1: ("un", "uno", "eins"), 2: ("deux", "dos", "zwei"), 3: ("trois", "tres", "drei"), 4: ("quatre", "cuatro", "vier"),
           5: ("cinq", "cinco", "fünf"), 6: ("six", "seis", "sechs"), 7: ("sept", "siete", "sieben"), 8: ("huit", "ocho", "acht"),
           9: ("neuf", "nueve", "neun"), 10: ("dix", "diez", "zehn"), 20: ("vingt", "veinte", "zwanzig"),
           100: ("cent", "cien", "hundert")}
LANGS = ["French", "Spanish", "German"]


def gen_translation_toy(r: random.Random) -> tuple[str, str, str]:
    li = r.randrange(3)
    lang = LANGS[li]
    kind = r.randrange(6)
    if kind == 0:
        words = r.sample(sorted(GLOSSARY), r.randint(2, 6))
        q = _pick(r, ["Translate the following English words into {l}: {w}.", "Give the {l} for each word: {w}",
                      "{l} translations, please: {w}"]).format(l=lang, w=", ".join(words))
        tr = [GLOSSARY[w][li] for w in words]
        short = ", ".join(tr)
        out = short if r.random() < 0.5 else "\n".join(f"{w} → {t}" for w, t in zip(words, tr))
    elif kind == 1:
        w = _pick(r, sorted(GLOSSARY))
        t = GLOSSARY[w][li]
        q = _pick(r, [f"What is the {lang} word for \"{w}\"?", f"How do you say \"{w}\" in {lang}?",
                      f"Translate \"{w}\" to {lang}."])
        short = t
        out = _pick(r, [t, f"The {lang} word for \"{w}\" is \"{t}\".", f"In {lang}, \"{w}\" is \"{t}\"."])
    elif kind in (2, 3):
        ph = _pick(r, PHRASES)
        en, tgt = ph[0], ph[1 + li]
        if kind == 2:
            q = _pick(r, [f"Translate into {lang}: {en}", f"Translate this sentence from English to {lang}.\n\n{en}",
                          f"English: {en}\n{lang}:", f"How would you say \"{en}\" in {lang}?"])
            short = tgt
        else:
            q = _pick(r, [f"Translate from {lang} to English: {tgt}", f"What does \"{tgt}\" mean in English?",
                          f"{lang}: {tgt}\nEnglish:"])
            short = en
        out = short
    elif kind == 4:
        n = _pick(r, sorted(NUMBERS))
        t = NUMBERS[n][li]
        q = _pick(r, [f"How do you say the number {n} in {lang}?", f"Write {n} as a {lang} word."])
        short = t
        out = _pick(r, [t, f"{n} in {lang} is \"{t}\"."])
    else:
        w = _pick(r, sorted(GLOSSARY))
        others = [o for o in range(3) if o != li]
        q = f"Give the {lang} and {LANGS[others[0]]} words for \"{w}\"."
        short = f"{lang}: {GLOSSARY[w][li]}; {LANGS[others[0]]}: {GLOSSARY[w][others[0]]}"
        out = short
    return q, out, short


# ----------------------------------------------------------------------------- grammar_fix
SUBJ_3SG = ["She", "He", "My brother", "The teacher", "Our neighbor", "The dog", "My sister", "The manager"]
VERBS = [("go", "goes", "went"), ("play", "plays", "played"), ("watch", "watches", "watched"),
         ("study", "studies", "studied"), ("write", "writes", "wrote"), ("eat", "eats", "ate"),
         ("drive", "drives", "drove"), ("read", "reads", "read"), ("visit", "visits", "visited"),
         ("cook", "cooks", "cooked"), ("buy", "buys", "bought"), ("walk", "walks", "walked")]
VERB_OBJ = {"go": "to the gym", "play": "the piano", "watch": "the news", "study": "chemistry",
            "write": "a letter", "eat": "breakfast", "drive": "to work", "read": "the newspaper",
            "visit": "her grandmother", "cook": "dinner", "buy": "fresh bread", "walk": "to school"}
TIMES = ["every day", "on Sundays", "every morning", "twice a week", "after lunch", "in the evening"]
VOWEL_NOUNS = ["apple", "umbrella", "orange", "egg", "hour", "elephant", "idea", "island", "old car", "honest answer"]
CONS_NOUNS = ["banana", "book", "car", "house", "university", "cup", "chair", "garden"]
PLURAL_NOUNS = [("cat", "cats"), ("book", "books"), ("child", "children"), ("box", "boxes"), ("city", "cities"),
                ("mouse", "mice"), ("bus", "buses"), ("tooth", "teeth"), ("knife", "knives"), ("story", "stories")]


def _grammar_pair(r: random.Random) -> tuple[str, str, str]:
    """(wrong sentence, corrected sentence, why)."""
    kind = r.randrange(8)
    if kind == 0:
        s, v = _pick(r, SUBJ_3SG), _pick(r, VERBS)
        obj, t = VERB_OBJ[v[0]], _pick(r, TIMES)
        return (f"{s} {v[0]} {obj} {t}.", f"{s} {v[1]} {obj} {t}.",
                f"The verb must agree with the singular subject \"{s}\", so \"{v[0]}\" becomes \"{v[1]}\".")
    if kind == 1:
        v = _pick(r, VERBS)
        when = _pick(r, ["Yesterday", "Last week", "Two days ago", "Last night"])
        subj = _pick(r, ["I", "we", "they", "my parents", "Tom", "my cousin"])
        return (f"{when} {subj} {v[0]} {VERB_OBJ[v[0]]}.", f"{when} {subj} {v[2]} {VERB_OBJ[v[0]]}.",
                f"\"{when}\" refers to the past, so the verb needs the past tense \"{v[2]}\".")
    if kind == 2:
        n = _pick(r, VOWEL_NOUNS)
        pre = _pick(r, ["I ate", "She found", "We need", "He bought", "They saw", "I have"])
        return (f"{pre} a {n}.", f"{pre} an {n}.", f"Use \"an\" before a vowel sound: \"an {n}\".")
    if kind == 3:
        n = _pick(r, CONS_NOUNS)
        pre = _pick(r, ["She wants", "I saw", "He has", "We visited", "They built"])
        art = "a"
        return (f"{pre} an {n}.", f"{pre} {art} {n}.", f"\"{n}\" starts with a consonant sound, so use \"a\".")
    if kind == 4:
        sg, pl = _pick(r, PLURAL_NOUNS)
        num = _pick(r, ["two", "three", "five", "many", "several"])
        pre = _pick(r, ["There are", "I counted", "We saw", "She has"])
        return (f"{pre} {num} {sg}.", f"{pre} {num} {pl}.", f"After \"{num}\" the noun must be plural: \"{pl}\".")
    if kind == 5:
        which = r.randrange(3)
        if which == 0:
            good = f"Their {_pick(r, ['house', 'car', 'garden', 'dog'])} is {_pick(r, ['very old', 'next to ours', 'quite big'])}."
            bad = "There" + good[5:]
            why = "\"Their\" shows possession; \"there\" refers to a place."
        elif which == 1:
            good = f"They're {_pick(r, ['coming tomorrow', 'late again', 'my best friends', 'at the cinema'])}."
            bad = "Their" + good[7:]
            why = "\"They're\" is short for \"they are\"."
        else:
            good = f"The keys are over there on the {_pick(r, ['table', 'shelf', 'counter'])}."
            bad = good.replace("over there", "over their")
            why = "\"There\" refers to a place; \"their\" shows possession."
        return bad, good, why
    if kind == 6:
        animal = _pick(r, ["The dog", "The cat", "The company", "The bird", "The team"])
        rest = _pick(r, ["wagged its tail", "lost its way", "changed its logo", "built its nest", "won its first game"])
        wrong_rest = rest.replace("its", "it's")
        bad = f"{animal} {wrong_rest}."
        return bad, f"{animal} {rest}.", "\"Its\" is possessive; \"it's\" means \"it is\"."
    subj = _pick(r, ["i", "yesterday i", "when i was young i"])
    rest = _pick(r, ["went to the market.", "lived in Spain.", "forgot my keys.", "learned to swim."])
    bad = f"{subj} {rest}"
    good = re.sub(r"\bi\b", "I", bad)
    good = good[0].upper() + good[1:]
    return bad, good, "The pronoun \"I\" and the first word of a sentence are capitalized."


def gen_grammar_fix(r: random.Random) -> tuple[str, str, str]:
    bad, good, why = _grammar_pair(r)
    kind = r.randrange(5)
    if kind == 0:
        q = f"Fix the grammar in this sentence: {bad}"
    elif kind == 1:
        q = f"Correct any errors in the following sentence.\n\n{bad}"
    elif kind == 2:
        q = f"Rewrite the sentence with correct grammar: \"{bad}\""
    elif kind == 3:
        q = f"Proofread: {bad}"
    else:
        q = f"Is this sentence grammatically correct? If not, correct it.\n{bad}"
    style = r.randrange(3)
    if kind == 4:
        out = f"No. The correct sentence is: {good}" + (f" {why}" if style else "")
    elif style == 0:
        out = good
    elif style == 1:
        out = f"{good}\n\n{why}"
    else:
        out = f"Corrected: {good}"
    return q, out, good


# ----------------------------------------------------------------------------- date_reasoning
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def _date_s(d: dt.date, style: int) -> str:
    if style == 0:
        return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"
    if style == 1:
        return f"{d.day} {MONTHS[d.month - 1]} {d.year}"
    return d.isoformat()


def _rand_date(r: random.Random) -> dt.date:
    return dt.date(1990, 1, 1) + dt.timedelta(days=r.randrange(365 * 45))


def gen_date_reasoning(r: random.Random) -> tuple[str, str, str]:
    st = r.randrange(3)
    kind = r.randrange(8)
    if kind == 0:
        w, n = r.randrange(7), r.randint(1, 60)
        res = WEEKDAYS[(w + n) % 7]
        q = f"What day of the week is {n} days after {WEEKDAYS[w]}?"
        wk, dd = n // 7, n % 7
        expl = (f"{n} days is {wk} week{'s' * (wk != 1)} and {dd} day{'s' * (dd != 1)}. " if wk else "")
        expl += f"{dd} day{'s' * (dd != 1)} after {WEEKDAYS[w]} is {res}."
        short = res
    elif kind == 1:
        d, n = _rand_date(r), r.randint(1, 100)
        res = d + dt.timedelta(days=n)
        q = f"If today is {_date_s(d, st)}, what will the date be in {n} days?"
        expl = f"Adding {n} days to {_date_s(d, st)} gives {_date_s(res, st)}."
        short = _date_s(res, st)
    elif kind == 2:
        d1 = _rand_date(r)
        d2 = d1 + dt.timedelta(days=r.randint(1, 400))
        n = (d2 - d1).days
        q = f"How many days are there from {_date_s(d1, st)} to {_date_s(d2, st)}?"
        expl = f"Counting from {_date_s(d1, st)} to {_date_s(d2, st)} gives {n} days."
        short = str(n)
    elif kind == 3:
        d = _rand_date(r)
        res = WEEKDAYS[d.weekday()]
        q = _pick(r, [f"What day of the week was {_date_s(d, st)}?", f"On which weekday did {_date_s(d, st)} fall?"])
        expl = f"{_date_s(d, st)} was a {res}."
        short = res
    elif kind == 4:
        y = r.randint(1890, 2100)
        leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
        q = f"Is {y} a leap year?"
        if y % 400 == 0:
            why = f"{y} is divisible by 400"
        elif y % 100 == 0:
            why = f"{y} is divisible by 100 but not by 400"
        elif y % 4 == 0:
            why = f"{y} is divisible by 4 and not by 100"
        else:
            why = f"{y} is not divisible by 4"
        expl = f"{'Yes' if leap else 'No'}. {why}, so it {'is' if leap else 'is not'} a leap year."
        short = "Yes" if leap else "No"
    elif kind == 5:
        name = _pick(r, NAMES)
        today = _rand_date(r)
        bday = today + dt.timedelta(days=r.randint(1, 200))
        n = (bday - today).days
        q = f"{name}'s birthday is on {_date_s(bday, st)}. Today is {_date_s(today, st)}. How many days are left until the birthday?"
        expl = f"From {_date_s(today, st)} to {_date_s(bday, st)} is {n} days."
        short = str(n)
    elif kind == 6:
        d, w = _rand_date(r), r.randint(1, 20)
        res = d + dt.timedelta(weeks=w)
        q = f"A project starts on {_date_s(d, st)} and lasts {w} weeks. On what date does it end?"
        expl = f"{w} weeks is {7 * w} days; {_date_s(d, st)} plus {7 * w} days is {_date_s(res, st)}."
        short = _date_s(res, st)
    else:
        m, n = r.randrange(12), r.randint(1, 30)
        res = MONTHS[(m + n) % 12]
        q = f"What month comes {n} months after {MONTHS[m]}?"
        yr, mm = n // 12, n % 12
        expl = (f"{n} month{'s' * (n != 1)} is {yr} year{'s' * (yr != 1)} and {mm} month{'s' * (mm != 1)}; " if yr else "")
        expl += f"{mm} month{'s' * (mm != 1)} after {MONTHS[m]} is {res}."
        short = res
    style = r.randrange(3)
    out = short if style == 0 else (expl if style == 1 else f"{expl}\nSo the answer is {short}.")
    return q, out, short


# ----------------------------------------------------------------------------- code_python
def _code_tasks(r: random.Random) -> tuple[str, str, str]:
    """(task description, function name, code)."""
    arg = _pick(r, ["nums", "values", "numbers", "items", "xs", "data"])
    sarg = _pick(r, ["text", "s", "word", "sentence"])
    tasks = [
        ("returns the sum of a list of numbers", ["total", "sum_list", "add_all"],
         "def {f}({a}):\n    result = 0\n    for x in {a}:\n        result += x\n    return result"),
        ("returns a list with the square of every element", ["squares", "square_all", "squared"],
         "def {f}({a}):\n    return [x * x for x in {a}]"),
        ("keeps only the even numbers of a list", ["evens", "only_even", "filter_even"],
         "def {f}({a}):\n    return [x for x in {a} if x % 2 == 0]"),
        ("counts the vowels in a string", ["count_vowels", "vowel_count", "num_vowels"],
         "def {f}({s}):\n    return sum(1 for ch in {s}.lower() if ch in \"aeiou\")"),
        ("reverses a string", ["reverse", "reverse_string", "backwards"],
         "def {f}({s}):\n    return {s}[::-1]"),
        ("checks whether a string is a palindrome", ["is_palindrome", "palindrome", "reads_same_backwards"],
         "def {f}({s}):\n    cleaned = \"\".join(ch.lower() for ch in {s} if ch.isalnum())\n    return cleaned == cleaned[::-1]"),
        ("computes the factorial of n", ["factorial", "fact"],
         "def {f}(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result"),
        ("returns the n-th Fibonacci number", ["fib", "fibonacci", "nth_fibonacci"],
         "def {f}(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
        ("finds the largest number in a list without using max()", ["largest", "find_max", "biggest"],
         "def {f}({a}):\n    best = {a}[0]\n    for x in {a}[1:]:\n        if x > best:\n            best = x\n    return best"),
        ("counts the words in a sentence", ["word_count", "count_words"],
         "def {f}({s}):\n    return len({s}.split())"),
        ("converts a temperature from Celsius to Fahrenheit", ["c_to_f", "celsius_to_fahrenheit", "to_fahrenheit"],
         "def {f}(celsius):\n    return celsius * 9 / 5 + 32"),
        ("checks whether a number is prime", ["is_prime", "prime"],
         "def {f}(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n    return True"),
        ("removes duplicates from a list while keeping the original order", ["dedupe", "unique", "remove_duplicates"],
         "def {f}({a}):\n    seen = set()\n    out = []\n    for x in {a}:\n        if x not in seen:\n            seen.add(x)\n            out.append(x)\n    return out"),
        ("flattens a list of lists into one list", ["flatten", "flat"],
         "def {f}(lists):\n    return [x for sub in lists for x in sub]"),
        ("returns a dictionary mapping each word to how often it appears", ["word_freq", "count_each_word", "frequencies"],
         "def {f}({s}):\n    counts = {{}}\n    for w in {s}.split():\n        counts[w] = counts.get(w, 0) + 1\n    return counts"),
        ("returns the sum of the digits of a non-negative integer", ["digit_sum", "sum_digits"],
         "def {f}(n):\n    return sum(int(d) for d in str(n))"),
        ("computes the greatest common divisor of two integers", ["gcd", "greatest_common_divisor"],
         "def {f}(a, b):\n    while b:\n        a, b = b, a % b\n    return abs(a)"),
        ("returns the average of a list of numbers", ["average", "mean", "avg"],
         "def {f}({a}):\n    if not {a}:\n        return 0.0\n    return sum({a}) / len({a})"),
        ("capitalizes the first letter of every word in a string", ["title_case", "capitalize_words"],
         "def {f}({s}):\n    return \" \".join(w[:1].upper() + w[1:] for w in {s}.split())"),
        ("merges two dictionaries, with values from the second winning", ["merge", "merge_dicts"],
         "def {f}(first, second):\n    merged = dict(first)\n    merged.update(second)\n    return merged"),
        ("returns the index of a value in a list, or -1 if it is missing", ["find_index", "index_of"],
         "def {f}({a}, target):\n    for i, x in enumerate({a}):\n        if x == target:\n            return i\n    return -1"),
        ("counts how many times a given character occurs in a string", ["count_char", "char_count"],
         "def {f}({s}, ch):\n    return sum(1 for c in {s} if c == ch)"),
    ]
    desc, fnames, code = _pick(r, tasks)
    f = _pick(r, fnames)
    return desc, f, code.format(f=f, a=arg, s=sarg)


def gen_code_python(r: random.Random) -> tuple[str, str, str]:
    desc, f, code = _code_tasks(r)
    kind = r.randrange(5)
    if kind == 0:
        q = f"Write a Python function `{f}` that {desc}."
    elif kind == 1:
        q = f"Write a Python function that {desc}. Call it {f}."
    elif kind == 2:
        q = f"In Python, how can I write a function named {f} that {desc}?"
    elif kind == 3:
        q = f"Implement `{f}` in Python: it {desc}. Keep it short."
    else:
        q = f"I need a small helper for my script. It {desc}. Please write it in Python (name: {f})."
    lines = code.split("\n")
    if r.random() < 0.4:  # add a docstring
        doc = desc[0].upper() + desc[1:]
        lines.insert(1, f"    \"\"\"{doc}.\"\"\"")
    block = "```python\n" + "\n".join(lines) + "\n```"
    style = r.randrange(3)
    if style == 0:
        out = block
    elif style == 1:
        out = f"Here is a simple implementation:\n\n{block}"
    else:
        out = f"{block}\n\nThe function `{f}` {desc}."
    return q, out, f


# ----------------------------------------------------------------------------- trivia_qa
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Brazil": "Brasília", "Argentina": "Buenos Aires",
    "Canada": "Ottawa", "Australia": "Canberra", "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja",
    "Mexico": "Mexico City", "Peru": "Lima", "Chile": "Santiago", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens", "Turkey": "Ankara", "Russia": "Moscow",
    "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "Morocco": "Rabat", "Ghana": "Accra", "Ethiopia": "Addis Ababa", "Colombia": "Bogotá",
    "New Zealand": "Wellington", "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest",
    "Czechia": "Prague", "Denmark": "Copenhagen", "the Netherlands": "Amsterdam", "Belgium": "Brussels",
    "Switzerland": "Bern", "Pakistan": "Islamabad", "the Philippines": "Manila", "Cuba": "Havana",
}
CURRENCIES = {"Japan": "the yen", "United Kingdom": "the pound sterling", "India": "the rupee", "Mexico": "the peso",
              "Switzerland": "the Swiss franc", "China": "the renminbi (yuan)", "South Africa": "the rand",
              "Brazil": "the real", "Sweden": "the krona", "Poland": "the złoty", "Russia": "the ruble",
              "Thailand": "the baht", "South Korea": "the won", "Turkey": "the lira"}
ELEMENTS = {"oxygen": "O", "hydrogen": "H", "carbon": "C", "nitrogen": "N", "gold": "Au", "silver": "Ag",
            "iron": "Fe", "sodium": "Na", "potassium": "K", "copper": "Cu", "lead": "Pb", "helium": "He",
            "calcium": "Ca", "zinc": "Zn", "mercury": "Hg", "tin": "Sn", "neon": "Ne", "sulfur": "S",
            "chlorine": "Cl", "uranium": "U"}
AUTHORS = {"Pride and Prejudice": "Jane Austen", "1984": "George Orwell", "Hamlet": "William Shakespeare",
           "War and Peace": "Leo Tolstoy", "Don Quixote": "Miguel de Cervantes", "The Odyssey": "Homer",
           "Moby-Dick": "Herman Melville", "One Hundred Years of Solitude": "Gabriel García Márquez",
           "Frankenstein": "Mary Shelley", "The Old Man and the Sea": "Ernest Hemingway",
           "Things Fall Apart": "Chinua Achebe", "Crime and Punishment": "Fyodor Dostoevsky",
           "The Little Prince": "Antoine de Saint-Exupéry", "Great Expectations": "Charles Dickens"}
FACTS = [
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the longest river in Africa?", "The Nile"),
    ("What is the tallest mountain on Earth?", "Mount Everest"),
    ("How many continents are there?", "Seven"),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius"),
    ("What gas do plants absorb from the air for photosynthesis?", "Carbon dioxide"),
    ("How many legs does a spider have?", "Eight"),
    ("What is the largest ocean on Earth?", "The Pacific Ocean"),
    ("What is the hardest natural substance?", "Diamond"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("What is the smallest prime number?", "2"),
    ("How many sides does a hexagon have?", "Six"),
    ("Which organ pumps blood through the human body?", "The heart"),
    ("What is the freezing point of water in Fahrenheit?", "32 degrees Fahrenheit"),
    ("What is the largest desert in the world by area?", "Antarctica (the largest hot desert is the Sahara)"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("In which country are the pyramids of Giza?", "Egypt"),
]


TRIVIA_ANSWER_GROUPS = [sorted(CAPITALS.values()), sorted(CAPITALS), sorted(CURRENCIES.values()),
                        sorted(ELEMENTS.values()), sorted(ELEMENTS), sorted(AUTHORS.values()),
                        sorted(a for _, a in FACTS)]


def gen_trivia_qa(r: random.Random) -> tuple[str, str, str]:
    kind = r.choices(range(6), weights=[5, 2, 2, 2, 2, 2])[0]
    if kind == 0:
        c = _pick(r, sorted(CAPITALS))
        a = CAPITALS[c]
        q = _pick(r, [f"What is the capital of {c}?", f"Name the capital city of {c}.", f"{c[0].upper() + c[1:]}'s capital is which city?",
                      f"Q: What is the capital of {c}?\nA:"])
        out = _pick(r, [a, f"The capital of {c} is {a}.", f"{a} is the capital of {c}."])
    elif kind == 1:
        c = _pick(r, sorted(CAPITALS))
        a = c
        q = _pick(r, [f"Which country has {CAPITALS[c]} as its capital?", f"{CAPITALS[c]} is the capital of which country?"])
        out = _pick(r, [a[0].upper() + a[1:], f"{CAPITALS[c]} is the capital of {c}."])
    elif kind == 2:
        c = _pick(r, sorted(CURRENCIES))
        a = CURRENCIES[c]
        q = _pick(r, [f"What currency is used in {c}?", f"What is the official currency of {c}?"])
        out = _pick(r, [a[0].upper() + a[1:], f"{c} uses {a}."])
    elif kind == 3:
        e = _pick(r, sorted(ELEMENTS))
        a = ELEMENTS[e]
        q = _pick(r, [f"What is the chemical symbol for {e}?", f"Which element has the symbol {a}?"])
        if q.startswith("Which"):
            a = e
            out = _pick(r, [e.capitalize(), f"The symbol {ELEMENTS[e]} stands for {e}."])
        else:
            out = _pick(r, [a, f"The chemical symbol for {e} is {a}."])
    elif kind == 4:
        b = _pick(r, sorted(AUTHORS))
        a = AUTHORS[b]
        q = _pick(r, [f"Who wrote \"{b}\"?", f"Who is the author of {b}?"])
        out = _pick(r, [a, f"\"{b}\" was written by {a}."])
    else:
        q, a = _pick(r, FACTS)
        out = _pick(r, [a, a + "."])
    return q, out, a


# ----------------------------------------------------------------------------- summarization
def gen_summarization(r: random.Random) -> tuple[str, str, str]:
    kind = r.randrange(6)
    town = _pick(r, ["Millbrook", "Eastvale", "Port Alder", "Greystone", "Willow Creek", "Harborview", "Ashford"])
    company = _pick(r, COMPANIES)
    name = _pick(r, NAMES)
    weekday = _pick(r, WEEKDAYS)
    filler = ["Residents were invited to share their views.", "Local businesses welcomed the news.",
              "More details will be published next week.", "The announcement was made at a press briefing.",
              "Several people had raised the issue in recent months.", "Officials thanked volunteers for their help.",
              "Parking near the site is expected to be limited.", "A follow-up meeting has been scheduled."]
    if kind == 0:
        n, what = r.randint(2, 40), _pick(r, ["a new community library", "a skate park", "a covered market", "a cycling path"])
        facts = [f"The {town} town council voted on {weekday} to build {what}.",
                 f"The project will cost about {n} million dollars and take {r.randint(1, 3)} years.",
                 f"Council member {name} said the plan had strong support from families."]
        summary = f"{town}'s council approved building {what}, a roughly {n}-million-dollar project."
    elif kind == 1:
        pct, prod = r.randint(3, 45), _pick(r, ["smartwatch", "electric scooter", "meal kit", "home battery", "laptop"])
        facts = [f"{company} reported that sales of its {prod} rose {pct} percent in the last quarter.",
                 "The company credited a lower price and a new advertising campaign.",
                 f"Chief executive {name} said the firm would hire more staff in {town}."]
        summary = f"{company}'s {prod} sales grew {pct}% last quarter, helped by lower prices and advertising."
    elif kind == 2:
        hi, rain = r.randint(12, 36), r.randint(10, 90)
        cond = _pick(r, ["sunny spells", "heavy showers", "strong winds", "thunderstorms", "morning fog"])
        facts = [f"Forecasters expect {cond} across {town} on {weekday}.",
                 f"Temperatures will reach a high of {hi} degrees Celsius.",
                 f"The chance of rain is {rain} percent, so an umbrella may be useful."]
        summary = f"{town} can expect {cond} on {weekday}, highs of {hi}°C and a {rain}% chance of rain."
    elif kind == 3:
        topic = _pick(r, ["the office move", "the new holiday policy", "the budget for next year", "the website redesign"])
        owner, due = _pick(r, NAMES), _pick(r, ["Friday", "the end of the month", "next Tuesday", "March 1"])
        facts = [f"The team met on {weekday} to discuss {topic}.",
                 "After a long discussion, they agreed on a plan and a timeline.",
                 f"{owner} will prepare a written proposal by {due}.",
                 "Everyone else will send comments before the next meeting."]
        summary = f"The team agreed on a plan for {topic}; {owner} will draft a proposal by {due}."
    elif kind == 4:
        t1, t2 = r.sample(TEAMS, 2)
        s1, s2 = r.randint(2, 5), r.randint(0, 1)
        scorer = _pick(r, NAMES)
        facts = [f"{t1} defeated {t2} {s1}-{s2} on {weekday} night.",
                 f"{scorer} scored twice in the second half.",
                 f"The win moves {t1} to the top of the table with {r.randint(3, 9)} games left."]
        summary = f"{t1} beat {t2} {s1}-{s2}, with two goals from {scorer}, and now lead the table."
    else:
        n, habit = r.randint(200, 9000), _pick(r, ["walking 20 minutes a day", "reading before bed", "eating breakfast", "gardening"])
        facts = [f"Researchers followed {n} adults for five years.",
                 f"They found that people who reported {habit} had better sleep and mood.",
                 "The authors caution that the study shows a link, not a cause."]
        summary = f"A five-year study of {n} adults linked {habit} to better sleep and mood, without proving cause."
    body = list(facts)
    for _ in range(r.randint(0, 3)):
        body.insert(r.randint(1, len(body)), _pick(r, filler))
    text = " ".join(body)
    q = _pick(r, [f"Summarize the following text in one sentence.\n\n{text}",
                  f"{text}\n\nTL;DR:", f"Give a brief summary of this paragraph:\n{text}",
                  f"Write a one-line summary.\n\nText: {text}", f"What is the main point of this passage?\n\n{text}"])
    return q, summary, summary


# ----------------------------------------------------------------------------- list_sorting
WORDS = ["pear", "banana", "kiwi", "apple", "mango", "grape", "cherry", "plum", "lime", "fig", "melon", "papaya",
         "zebra", "otter", "eagle", "lynx", "heron", "bison", "koala", "gecko", "panda", "walrus", "falcon", "moose"]


def gen_list_sorting(r: random.Random) -> tuple[str, str, str]:
    kind = r.randrange(7)
    if kind in (0, 1):
        xs = [r.randint(-20 if r.random() < 0.2 else 0, r.choice([50, 100, 1000])) for _ in range(r.randint(4, 12))]
        asc = kind == 0
        ys = sorted(xs, reverse=not asc)
        order = "ascending" if asc else "descending"
        q = _pick(r, [f"Sort these numbers in {order} order: {', '.join(map(str, xs))}",
                      f"Arrange the following from {'smallest to largest' if asc else 'largest to smallest'}: {' '.join(map(str, xs))}",
                      f"Put this list in {order} order.\n{xs}"])
        short = ", ".join(map(str, ys))
    elif kind == 2:
        ws = r.sample(WORDS, r.randint(4, 9))
        ys = sorted(ws)
        q = _pick(r, [f"Sort these words alphabetically: {', '.join(ws)}", f"Put the words in alphabetical order: {' '.join(ws)}"])
        short = ", ".join(ys)
    elif kind == 3:
        xs = [r.randint(0, 500) for _ in range(r.randint(5, 12))]
        which = r.choice(["largest", "smallest"])
        q = f"What is the {which} number in this list? {', '.join(map(str, xs))}"
        short = str(max(xs) if which == "largest" else min(xs))
    elif kind == 4:
        base = [r.randint(1, 30) for _ in range(r.randint(3, 7))]
        xs = base + r.sample(base, r.randint(1, len(base)))
        r.shuffle(xs)
        seen: list[int] = []
        for x in xs:
            if x not in seen:
                seen.append(x)
        q = f"Remove the duplicates from this list, keeping the first occurrence of each number: {xs}"
        short = str(seen)
    elif kind == 5:
        ws = r.sample(WORDS, r.randint(4, 8))
        ys = sorted(ws, key=lambda w: (len(w), w))
        q = f"Sort these words by length, shortest first (break ties alphabetically): {', '.join(ws)}"
        short = ", ".join(ys)
    else:
        xs = [r.randint(1, 99) for _ in range(r.randint(5, 10))]
        k = r.randint(2, 3)
        q = f"Give the {k} largest numbers from this list, largest first: {', '.join(map(str, xs))}"
        short = ", ".join(map(str, sorted(xs, reverse=True)[:k]))
    out = short if r.random() < 0.6 else _pick(r, [f"Here is the result: {short}", f"Result:\n{short}", f"{short}."])
    return q, out, short


# ----------------------------------------------------------------------------- absent from the pool
def gen_logic_puzzle(r: random.Random) -> tuple[str, str, str]:
    """Transitive-ordering puzzles: used only in the `reasoning_mix` target (absent from the pool)."""
    people = r.sample(NAMES, r.choice([3, 4]))
    rel, inv = _pick(r, [("taller", "shortest"), ("older", "youngest"), ("faster", "slowest"), ("heavier", "lightest")])
    top_word = {"taller": "tallest", "older": "oldest", "faster": "fastest", "heavier": "heaviest"}[rel]
    clues = [f"{people[i]} is {rel} than {people[i + 1]}." for i in range(len(people) - 1)]
    r.shuffle(clues)
    if r.random() < 0.5:
        q, ans = f"{' '.join(clues)} Who is the {inv}?", people[-1]
    else:
        q, ans = f"{' '.join(clues)} Who is the {top_word}?", people[0]
    out = _pick(r, [ans, f"The ordering is {' > '.join(people)}, so the answer is {ans}."])
    return q, out, ans


GENERATORS: dict[str, Gen] = {
    "arithmetic_add": gen_arithmetic_add,
    "arithmetic_mul": gen_arithmetic_mul,
    "unit_conversion": gen_unit_conversion,
    "sentiment": gen_sentiment,
    "topic_classification": gen_topic_classification,
    "translation_toy": gen_translation_toy,
    "grammar_fix": gen_grammar_fix,
    "date_reasoning": gen_date_reasoning,
    "code_python": gen_code_python,
    "trivia_qa": gen_trivia_qa,
    "summarization": gen_summarization,
    "list_sorting": gen_list_sorting,
}

SYSTEM_PROMPTS = {
    "_any": ["You are a helpful assistant.", "You are a helpful, honest assistant. Answer concisely.",
             "You are an AI assistant. Keep answers short and accurate."],
    "arithmetic_add": ["You are a patient math tutor. Show your work."],
    "arithmetic_mul": ["You are a patient math tutor. Show your work."],
    "unit_conversion": ["You are a science teacher who is careful with units."],
    "sentiment": ["You label customer feedback for a support team."],
    "topic_classification": ["You are a news editor who files stories into sections."],
    "translation_toy": ["You are a language tutor for beginners."],
    "grammar_fix": ["You are a friendly English teacher."],
    "code_python": ["You are an expert Python programmer. Write clean, idiomatic code."],
    "summarization": ["You write short, neutral summaries."],
}
FOLLOW_UP_FAMILIES = ("arithmetic_add", "arithmetic_mul", "unit_conversion", "sentiment", "topic_classification",
                      "translation_toy", "grammar_fix", "date_reasoning", "trivia_qa", "list_sorting")
FOLLOW_UPS = ["Thanks! Can you give me just the final answer?", "Could you state only the answer, please?",
              "OK. What is the short answer?", "Just the answer this time, please."]


# ----------------------------------------------------------------------------- assembly
def _chat(r: random.Random, family: str, gen: Gen) -> tuple[list[dict], str]:
    user, answer, short = gen(r)
    msgs: list[dict] = []
    if r.random() < SYSTEM_RATE:
        pool = SYSTEM_PROMPTS["_any"] + SYSTEM_PROMPTS.get(family, [])
        msgs.append({"role": "system", "content": _pick(r, pool)})
    msgs.append({"role": "user", "content": user})
    msgs.append({"role": "assistant", "content": answer})
    if family in FOLLOW_UP_FAMILIES and r.random() < MULTI_TURN_RATE and answer != short:
        msgs.append({"role": "user", "content": _pick(r, FOLLOW_UPS)})
        msgs.append({"role": "assistant", "content": short})
    return msgs, short


def _wrong(r: random.Random, family: str, short: str) -> str:
    """A plausible but wrong replacement for the final answer `short`."""
    if family == "trivia_qa":  # a wrong answer of the same kind (a capital for a capital...)
        for group in TRIVIA_ANSWER_GROUPS:
            if short in group:
                return _pick(r, [g for g in group if g != short])
        raise ValueError(f"no wrong answer for {short!r}")
    if family == "date_reasoning":
        y = re.search(r"\b\d{4}\b", short)
        if y:
            return short[: y.start()] + str(int(y.group(0)) + r.choice([1, -1])) + short[y.end():]
    m = re.search(r"-?\d+(?:\.\d+)?", short)
    if m:
        num = m.group(0)
        val = float(num)
        delta = r.choice([1, 2, 10, -1, -2, -10]) if val == int(val) else r.choice([0.5, 1.25, -0.5])
        new = _fmt(val + delta)
        return short[: m.start()] + new + short[m.end():]
    if short in WEEKDAYS:
        return WEEKDAYS[(WEEKDAYS.index(short) + r.randint(1, 6)) % 7]
    if short in MONTHS:
        return MONTHS[(MONTHS.index(short) + r.randint(1, 11)) % 12]
    if short in ("Yes", "No"):
        return "No" if short == "Yes" else "Yes"
    raise ValueError(f"no wrong answer for {short!r}")


def _replace_answer(text: str, short: str, wrong: str) -> str:
    pat = re.compile(r"(?<![\w.])" + re.escape(short) + r"(?![\w])")
    out = pat.sub(wrong, text)
    return out if out != text else wrong


def _dump(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False)


def make_pool(seed: int = SEED) -> tuple[list[dict], dict]:
    r = random.Random(seed)
    rows: list[dict] = []
    shorts: dict[str, str] = {}
    for family, n in FAMILY_COUNTS.items():
        gen = GENERATORS[family]
        fr = random.Random(f"{seed}:{family}")
        seen: set[str] = set()
        for i in range(n):
            for _attempt in range(1000):  # no accidental exact duplicates: only the planted ones
                msgs, short = _chat(fr, family, gen)
                key = json.dumps(msgs, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    break
            else:
                raise RuntimeError(f"{family}: not enough variety for {n} distinct chats")
            rid = f"{family}_{i}"
            rows.append({"dataset": family, "id": rid, "messages": msgs})
            shorts[rid] = short
    planted: dict = {"empty_answer": [], "wrong_answer": [], "duplicate": []}
    # empty assistant answers (any family)
    idx = list(range(len(rows)))
    r.shuffle(idx)
    cursor = 0
    for _ in range(N_EMPTY):
        row = rows[idx[cursor]]
        cursor += 1
        row["messages"][-1]["content"] = ""
        planted["empty_answer"].append(row["id"])
    # wrong answers in families where the answer can be checked
    n_wrong = 0
    while n_wrong < N_WRONG:
        row = rows[idx[cursor]]
        cursor += 1
        n_turns = sum(1 for m in row["messages"] if m["role"] == "assistant")
        if row["dataset"] not in WRONG_FAMILIES or n_turns > 1:
            continue
        short = shorts[row["id"]]
        wrong = _wrong(r, row["dataset"], short)
        ans = row["messages"][-1]
        ans["content"] = _replace_answer(ans["content"], short, wrong)
        planted["wrong_answer"].append({"id": row["id"], "correct": short, "given": wrong})
        n_wrong += 1
    # exact duplicates of other chats (same dataset and messages, a new id, as in merged pools)
    counters = dict(FAMILY_COUNTS)
    dups = []
    for _ in range(N_DUPLICATE):
        src = rows[idx[cursor]]
        cursor += 1
        fam = src["dataset"]
        new_id = f"{fam}_{counters[fam]}"
        counters[fam] += 1
        dups.append({"dataset": fam, "id": new_id, "messages": json.loads(json.dumps(src["messages"]))})
        planted["duplicate"].append({"id": new_id, "copy_of": src["id"]})
    rows.extend(dups)
    r.shuffle(rows)
    return rows, planted


TARGETS: dict[str, dict] = {
    # name -> {subtask: (dataset/family, generator)}, description
    "arithmetic": {"desc": "Word problems and bare sums/products; both subtasks are families of the pool.",
                   "subtasks": {"add": ("arithmetic_add", gen_arithmetic_add),
                                "multiply": ("arithmetic_mul", gen_arithmetic_mul)}},
    "classification": {"desc": "Review sentiment and news-topic labels; both subtasks are families of the pool.",
                       "subtasks": {"sentiment": ("sentiment", gen_sentiment),
                                    "topic": ("topic_classification", gen_topic_classification)}},
    "reasoning_mix": {"desc": "Date reasoning (in the pool) and ordering logic puzzles (absent from the pool): only partly represented.",
                      "subtasks": {"dates": ("date_reasoning", gen_date_reasoning),
                                   "logic": ("logic_puzzle", gen_logic_puzzle)}},
    "language": {"desc": "Toy translation and grammar correction; both subtasks are families of the pool.",
                 "subtasks": {"translation": ("translation_toy", gen_translation_toy),
                              "grammar": ("grammar_fix", gen_grammar_fix)}},
}


def make_targets(pool_rows: list[dict], seed: int = TARGET_SEED, per_subtask: int = PER_SUBTASK,
                 avoid: set[str] | None = None, prefix: str = "tgt") -> dict[str, list[dict]]:
    """Fresh draws per target subtask; `avoid` adds prompts never to repeat (held-out sets
    avoid the selection targets' prompts too)."""
    seen_prompts = {m["content"] for row in pool_rows for m in row["messages"] if m["role"] == "user"}
    seen_prompts |= avoid or set()
    out: dict[str, list[dict]] = {}
    for name, spec in TARGETS.items():
        rows = []
        for sub, (family, gen) in spec["subtasks"].items():
            r = random.Random(f"{seed}:{name}:{sub}")
            k = 0
            while k < per_subtask:
                q, a, _ = gen(r)
                if q in seen_prompts:  # never a copy of a pool row (or of another target row)
                    continue
                seen_prompts.add(q)
                rows.append({"dataset": family, "id": f"{prefix}_{name}_{sub}_{k}", "subtask": sub,
                             "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                k += 1
        out[name] = rows
    return out


def generate(out_dir: str | Path) -> dict:
    """Write the pool, its planted-rows manifest and the targets under `out_dir`; return a summary."""
    out_dir = Path(out_dir)
    (out_dir / "targets").mkdir(parents=True, exist_ok=True)
    rows, planted = make_pool()
    pool_text = "".join(_dump(row) + "\n" for row in rows)
    (out_dir / "demo_pool.jsonl").write_bytes(pool_text.encode("utf-8"))
    (out_dir / "demo_pool_planted.json").write_bytes(
        (json.dumps(planted, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    targets = make_targets(rows)
    for name, trows in targets.items():
        (out_dir / "targets" / f"{name}.jsonl").write_bytes("".join(_dump(t) + "\n" for t in trows).encode("utf-8"))
    # Held-out examples of the same subtasks, to measure what fine-tuning on a selection does
    # to the target loss without testing on the examples the selection was made for.
    used = {m["content"] for tr in targets.values() for t in tr for m in t["messages"]
            if m["role"] == "user"}
    heldout = make_targets(rows, seed=HELDOUT_SEED, per_subtask=HELDOUT_PER_SUBTASK, avoid=used,
                           prefix="heldout")
    (out_dir / "targets" / "heldout").mkdir(exist_ok=True)
    for name, trows in heldout.items():
        (out_dir / "targets" / "heldout" / f"{name}.jsonl").write_bytes(
            "".join(_dump(t) + "\n" for t in trows).encode("utf-8"))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["dataset"]] = counts.get(row["dataset"], 0) + 1
    return {
        "rows": len(rows),
        "families": dict(sorted(counts.items())),
        "bytes": len(pool_text.encode("utf-8")),
        "sha256": hashlib.sha256(pool_text.encode("utf-8")).hexdigest(),
        "planted": {k: len(v) for k, v in planted.items()},
        "targets": {n: {s: sum(1 for t in tr if t["subtask"] == s) for s in TARGETS[n]["subtasks"]} for n, tr in targets.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "sample_data"),
                    help="output folder (default: the repository's sample_data/)")
    args = ap.parse_args(argv)
    summary = generate(args.out)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
