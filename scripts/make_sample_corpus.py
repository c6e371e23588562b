"""Writes the shipped sample corpus tasks/data/corpus/{en,es,fr,it}.jsonl.

A template generator written for this project: documents in the styles of the real corpus
(trial registrations, abstracts, drug leaflets, encyclopedia entries on diseases and drugs),
filled from a multilingual lexicon (scripts/sample_corpus_lexicon.py) with templates per
language (scripts/sample_corpus_templates.py). Records look like
HiTZ/Multilingual-Medical-Corpus rows: {"text": "..."}. Deterministic for a given --seed.

  python scripts/make_sample_corpus.py [--num_docs N] [--seed 0] [--out tasks/data/corpus]
"""
import argparse
import json
import os
import random
import re
import string
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sample_corpus_lexicon as lex  # noqa: E402
from sample_corpus_templates import STYLES, WORDS  # noqa: E402

MIN_WORDS, MAX_WORDS = 30, 150
STYLE_WEIGHTS = {"trial": 0.25, "abstract": 0.35, "leaflet": 0.15, "disease_entry": 0.15,
                 "drug_entry": 0.10}
_ARTICLE = re.compile(r"^(el |la |los |las |le |les |l'|il |lo |i |gli )")
# Prepositions that fuse with the definite article: (lang, prep) -> {article: fused form}.
_CONTRACTIONS = {
    ("es", "of"): {"el ": "del "},
    ("es", "to"): {"el ": "al "},
    ("fr", "of"): {"le ": "du ", "les ": "des "},
    ("fr", "to"): {"le ": "au ", "les ": "aux "},
    ("it", "of"): {"il ": "del ", "lo ": "dello ", "la ": "della ", "l'": "dell'", "i ": "dei ",
                   "gli ": "degli ", "le ": "delle "},
    ("it", "to"): {"il ": "al ", "lo ": "allo ", "la ": "alla ", "l'": "all'", "i ": "ai ",
                   "gli ": "agli ", "le ": "alle "},
    ("it", "on"): {"il ": "sul ", "lo ": "sullo ", "la ": "sulla ", "l'": "sull'", "i ": "sui ",
                   "gli ": "sugli ", "le ": "sulle "},
}
_PREPOSITIONS = {"en": {"of": "of", "to": "to", "on": "on"},
                 "es": {"of": "de", "to": "a", "on": "sobre"},
                 "fr": {"of": "de", "to": "à", "on": "sur"},
                 "it": {"of": "di", "to": "a", "on": "su"}}
# Dose forms (indices into lex.DOSE_FORMS) that suit a drug class; others take oral forms.
_FORMS_BY_CLASS = {"mab": [3], "glp1": [3], "ics": [5], "bronch": [5], "ppi": [6]}
_ORAL_FORMS = [0, 1, 2, 4]
# Usual single doses in mg by drug class (inhaled and thyroid doses are fractions of a mg).
_DOSES_MG = {
    "ace": [2.5, 5, 10], "bb": [2.5, 5, 10, 50, 100], "doac": [2.5, 5, 15, 20],
    "statin": [10, 20, 40], "biguanide": [500, 850, 1000], "sglt2": [10, 25],
    "glp1": [0.5, 1, 1.8], "hormone": [0.05, 0.1], "bisphos": [70], "ics": [0.1, 0.2, 0.4],
    "bronch": [0.012, 0.018], "antibiotic": [250, 500, 1000], "antiviral": [50, 400],
    "kinase": [80, 100, 150, 420], "mab": [40, 100, 200, 300], "chemo": [75, 500, 1000],
    "dopa": [0.25, 1, 100], "chol": [1.5, 5, 10], "antiepileptic": [25, 50, 100, 250, 500],
    "ssri": [10, 20, 50], "antipsychotic": [5, 10, 25, 100, 300], "dmard": [7.5, 15, 200],
    "nsaid": [200, 400, 500], "ppi": [20, 40], "asa": [500, 1000], "diuretic": [20, 40],
}
_NUM_DOCS = {"en": 420, "es": 480, "fr": 360, "it": 320}  # ordered like the real corpus rows
_CENTURY = {"en": ["18th", "19th", "20th"], "es": ["XVIII", "XIX", "XX"],
            "fr": ["XVIIIe", "XIXe", "XXe"], "it": ["XVIII", "XIX", "XX"]}
_ACRONYM_WORDS = ["HEART", "CARE", "PROTECT", "REDUCE", "ACTION", "FIRST", "SHIELD", "TARGET",
                  "ADVANCE", "EVOLVE", "CLEAR", "RESTORE"]


def strip_article(phrase):
    return _ARTICLE.sub("", phrase, count=1)


def contract(lang, prep, phrase):
    """Preposition + phrase (which carries its article in es/fr/it): de + le -> du."""
    for art, fused in _CONTRACTIONS.get((lang, prep), {}).items():
        if phrase.startswith(art):
            return fused + phrase[len(art):]
    if (lang, prep) == ("fr", "of"):
        return de_bare(phrase)
    return _PREPOSITIONS[lang][prep] + " " + phrase


def de_bare(phrase):
    """French 'de' before a noun without article, elided before a vowel or mute h."""
    return ("d'" if phrase[:1].lower() in "aeiouyhéèêœ" else "de ") + phrase


def italian_plural_article(noun_phrase):
    """i / gli / le for the Italian population phrases (all plural)."""
    if noun_phrase.startswith("donne"):
        return "le"
    return "gli" if noun_phrase[:1] in "aeiou" else "i"


def fmt_int(lang, x):
    if x < 10000 and lang == "es" or x < 1000:
        return str(x)
    sep = {"en": ",", "es": " ", "fr": " ", "it": "."}[lang]
    return f"{x:,}".replace(",", sep)


def fmt_dec(lang, x, digits=1):
    s = f"{x:.{digits}f}"
    return s if lang == "en" else s.replace(".", ",")


def fmt_num(lang, x):
    """Shortest form of x: 500, 2.5 / 2,5, 0.012 / 0,012."""
    s = f"{x:g}"
    return s if lang == "en" else s.replace(".", ",")


def _capitalise(s):
    return s[:1].upper() + s[1:]


def _pick(rng, rows, k=1):
    return rng.sample(rows, k) if k > 1 else rng.choice(rows)


def bind_document(lang, rng):
    """All slot values for one document; entities agree (drugs treat the chosen disease)."""
    li = lex.LANGS.index(lang)
    area, *names = _pick(rng, lex.DISEASES)
    disease_art = names[li]
    drugs = [d for d in lex.DRUGS if area in d[0].split("|")]
    drug_row = _pick(rng, drugs)
    others = [d for d in drugs if d is not drug_row] or [d for d in lex.DRUGS if d is not drug_row]
    drug2_row = _pick(rng, others)
    drug, drug2 = drug_row[2 + li], drug2_row[2 + li]
    english_name = names[0]
    symptoms = _pick(rng, [s[1 + li] for s in lex.SYMPTOMS
                           if any(word in english_name for word in s[0].split())], 3)
    side_effects = _pick(rng, [s[li] for s in lex.SIDE_EFFECTS], 4)
    specific = [o[1 + li] for o in lex.OUTCOMES if o[0] == area]
    generic = [o[1 + li] for o in lex.OUTCOMES if o[0] == "*"]
    outcome = _pick(rng, specific if rng.random() < 0.7 else generic)
    outcome2 = _pick(rng, [o for o in specific + generic if o != outcome])
    pop = _pick(rng, lex.POPULATIONS)[li]
    risk, risk2 = _pick(rng, [r[li] for r in lex.RISK_FACTORS], 2)
    words = WORDS[lang]
    comparator = drug2 if rng.random() < 0.3 else _pick(rng, words["comparator"])

    n = rng.choice([rng.randint(40, 400), rng.randint(400, 6000)])
    n1 = n // 2 + rng.randint(-n // 20, n // 20)
    pct = rng.uniform(4, 60)
    hr = rng.uniform(0.55, 1.05)
    half = rng.uniform(0.04, 0.2)
    pval = rng.choice(["< 0.001", "= 0.002", "= 0.01", "= 0.03", "= 0.04", "= 0.21"])
    year = rng.randint(2006, 2022)
    agemin = rng.choice([18, 18, 40, 50, 65])
    month = rng.choice(lex.MONTHS[lang])
    slots = {
        "disease": strip_article(disease_art), "the_disease": disease_art,
        "of_disease": contract(lang, "of", disease_art), "drug": drug, "drug2": drug2,
        "drug_class": lex.DRUG_CLASSES[drug_row[1]][li], "comparator": comparator,
        "symptom": symptoms[0], "symptom2": symptoms[1], "symptom3": symptoms[2],
        "se1": side_effects[0], "se2": side_effects[1], "se3": side_effects[2],
        "se4": side_effects[3], "outcome": outcome, "outcome2": outcome2,
        "outcome_bare": strip_article(outcome), "of_outcome": contract(lang, "of", outcome),
        "on_outcome": contract(lang, "on", outcome), "to_outcome": contract(lang, "to", outcome),
        "of_risk": contract(lang, "of", risk),
        "to_comparator": contract(lang, "to", comparator),
        "pop": pop, "design": _pick(rng, lex.DESIGNS)[li],
        "country": _pick(rng, lex.COUNTRIES)[li], "risk": risk, "risk2": risk2,
        "form": lex.DOSE_FORMS[_pick(rng, _FORMS_BY_CLASS.get(drug_row[1], _ORAL_FORMS))][li],
        "freq": _pick(rng, words["freq"]),
        "sponsor": _pick(rng, words["sponsor"]), "test": _pick(rng, words["test"]),
        "n": fmt_int(lang, n), "n1": fmt_int(lang, n1), "n2": fmt_int(lang, n - n1),
        "n_small": str(rng.randint(2, 30)), "age": fmt_dec(lang, rng.uniform(agemin + 8, 79)),
        "sd": fmt_dec(lang, rng.uniform(5, 14)), "agemin": str(agemin),
        "agemax": str(rng.choice([75, 80, 85])), "pct": fmt_dec(lang, pct),
        "pct2": fmt_dec(lang, pct * rng.uniform(1.05, 1.6)),
        "pctf": fmt_dec(lang, rng.uniform(30, 70)), "hr": fmt_dec(lang, hr, 2),
        "lo": fmt_dec(lang, hr - half, 2), "hi": fmt_dec(lang, hr + half * 1.2, 2),
        "pval": pval if lang == "en" else pval.replace(".", ","),
        "weeks": str(rng.choice([4, 8, 12, 16, 24, 26, 48, 52])),
        "months": str(rng.choice([3, 6, 12, 18, 24, 36])), "fu": fmt_dec(lang, rng.uniform(6, 60)),
        "mg": fmt_num(lang, rng.choice(_DOSES_MG[drug_row[1]])),
        "year": str(year), "year2": str(year + rng.randint(1, 4)), "month": month,
        "sites": str(rng.randint(3, 120)), "nct": "NCT0" + "".join(rng.choices(string.digits, k=7)),
        "prev": fmt_int(lang, rng.randint(5, 900)), "century": rng.choice(_CENTURY[lang]),
        "acronym": drug[:4].upper() + "-" + rng.choice(_ACRONYM_WORDS),
    }
    if lang == "fr":
        slots["of_disease_bare"] = de_bare(slots["disease"])
        slots["of_drug"] = de_bare(drug)
        slots["of_se1"] = de_bare(slots["se1"])
    if lang == "it":
        slots["the_pop"] = italian_plural_article(pop) + " " + pop
        slots["in_the_pop"] = {"i": "nei ", "gli": "negli ", "le": "nelle "}[
            italian_plural_article(pop)] + pop
    for key in list(slots):
        slots[_capitalise(key)] = _capitalise(slots[key])
    return slots


def make_document(lang, rng):
    """One document of MIN_WORDS..MAX_WORDS words in a random style."""
    styles = STYLES[lang]
    while True:
        style = rng.choices(list(STYLE_WEIGHTS), weights=list(STYLE_WEIGHTS.values()))[0]
        slots = bind_document(lang, rng)
        sentences = [(keep, rng.choice(alts).format_map(slots))
                     for keep, alts in styles[style] if rng.random() < keep]
        # Too long: drop optional sections from the end first.
        while sum(len(s.split()) for _, s in sentences) > MAX_WORDS:
            optional = [i for i, (keep, _) in enumerate(sentences) if keep < 1.0]
            if not optional:
                break
            del sentences[optional[-1]]
        text = " ".join(s for _, s in sentences)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            return text


def make_corpus(lang, num_docs, seed):
    rng = random.Random(f"medmt5-sample-{lang}-{seed}")
    docs, seen = [], set()
    while len(docs) < num_docs:
        text = make_document(lang, rng)
        if text not in seen:
            seen.add(text)
            docs.append(text)
    return docs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_docs", type=int, default=None,
                        help=f"documents per language (default {_NUM_DOCS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tasks", "data", "corpus"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for lang in lex.LANGS:
        docs = make_corpus(lang, args.num_docs or _NUM_DOCS[lang], args.seed)
        path = os.path.join(args.out, f"{lang}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for text in docs:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        words = sum(len(t.split()) for t in docs)
        print(f"{path}: {len(docs)} documents, {words} words")


if __name__ == "__main__":
    main()
