"""Write the shipped benchmark samples under tasks/data/benchmarks/ (deterministic).

    python scripts/make_benchmark_samples.py [--out tasks/data/benchmarks]

The sentences are original, written for this project from parallel templates in
en/es/fr/it (the real multilingual sets are translations too); slot fillers are real
drugs, diseases and plausible figures. Templates mark spans with `[Label ... ]` and are
parsed here by a few lines of code independent of tasks/seqlabel.py, so the tests that
round-trip these files through seqlabel check it against an independent encoder.
QA samples come from scripts/bioasq_sample_content.py.

Files are written in the real releases' layouts (docs/data.md): AbstRCT as the hub's
parquet shards `abstrct/{lang}/{split}-00000-of-00001.parquet` (columns id, tokens,
labels_txt, labels), NER as the authors' tree `ner/{lang}/{lang}-{dataset}-{split}.tsv`
with their dataset ids and raw E3C/DIANN tags (`ety`, `dis`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bioasq_sample_content  # noqa: E402  (sibling script module)

LANGS = ("en", "es", "fr", "it")

# ---------------------------------------------------------------- AbstRCT (Claim/Premise)
# Each template: {lang: text}. Slots: {drug}, {cancer}, numbers {m1} {m2} {p} {pct1}
# {pct2} {k} {hr}; glaucoma {gdrug} {gdrug2} {iop1} {iop2}; other {xdrug} {k2} {d}.
NEOPLASM = [
    {"en": "[Premise The median progression-free survival was {m1} months with {drug} and {m2} months with placebo ( p = {p} ) ] .",
     "es": "[Premise La mediana de supervivencia libre de progresión fue de {m1} meses con {drug} y de {m2} meses con placebo ( p = {p} ) ] .",
     "fr": "[Premise La survie médiane sans progression était de {m1} mois avec le {drug} et de {m2} mois avec le placebo ( p = {p} ) ] .",
     "it": "[Premise La sopravvivenza libera da progressione mediana è stata di {m1} mesi con {drug} e di {m2} mesi con placebo ( p = {p} ) ] ."},
    {"en": "[Premise Grade 3 or 4 neutropenia occurred in {pct1} % of patients in the {drug} arm versus {pct2} % in the control arm ] .",
     "es": "[Premise Se observó neutropenia de grado 3 o 4 en el {pct1} % de los pacientes del grupo de {drug} frente al {pct2} % del grupo control ] .",
     "fr": "[Premise Une neutropénie de grade 3 ou 4 est survenue chez {pct1} % des patients du bras {drug} contre {pct2} % dans le bras contrôle ] .",
     "it": "[Premise Una neutropenia di grado 3 o 4 si è verificata nel {pct1} % dei pazienti del braccio {drug} rispetto al {pct2} % del braccio di controllo ] ."},
    {"en": "[Premise The objective response rate was {pct1} % in the combination group and {pct2} % in the monotherapy group ] .",
     "es": "[Premise La tasa de respuesta objetiva fue del {pct1} % en el grupo de combinación y del {pct2} % en el grupo de monoterapia ] .",
     "fr": "[Premise Le taux de réponse objective était de {pct1} % dans le groupe association et de {pct2} % dans le groupe monothérapie ] .",
     "it": "[Premise Il tasso di risposta obiettiva è stato del {pct1} % nel gruppo in combinazione e del {pct2} % nel gruppo in monoterapia ] ."},
    {"en": "[Premise Quality of life scores did not differ significantly between the two groups ] .",
     "es": "[Premise Las puntuaciones de calidad de vida no difirieron significativamente entre ambos grupos ] .",
     "fr": "[Premise Les scores de qualité de vie ne différaient pas significativement entre les deux groupes ] .",
     "it": "[Premise I punteggi di qualità della vita non differivano significativamente tra i due gruppi ] ."},
    {"en": "[Premise After a median follow-up of {m1} months , {k} patients in the {drug} group had died ] .",
     "es": "[Premise Tras una mediana de seguimiento de {m1} meses , habían fallecido {k} pacientes del grupo de {drug} ] .",
     "fr": "[Premise Après un suivi médian de {m1} mois , {k} patients du groupe {drug} étaient décédés ] .",
     "it": "[Premise Dopo un follow-up mediano di {m1} mesi , {k} pazienti del gruppo {drug} erano deceduti ] ."},
    {"en": "In conclusion , [Claim {drug} significantly prolongs progression-free survival in patients with {cancer} ] .",
     "es": "En conclusión , [Claim el {drug} prolonga significativamente la supervivencia libre de progresión en pacientes con {cancer} ] .",
     "fr": "En conclusion , [Claim le {drug} prolonge significativement la survie sans progression chez les patients atteints de {cancer} ] .",
     "it": "In conclusione , [Claim il {drug} prolunga significativamente la sopravvivenza libera da progressione nei pazienti con {cancer} ] ."},
    {"en": "[Claim Adjuvant {drug} is well tolerated and should be considered for patients with {cancer} ] .",
     "es": "[Claim El {drug} adyuvante se tolera bien y debería considerarse en pacientes con {cancer} ] .",
     "fr": "[Claim Le {drug} en adjuvant est bien toléré et devrait être envisagé chez les patients atteints de {cancer} ] .",
     "it": "[Claim Il {drug} adiuvante è ben tollerato e dovrebbe essere considerato nei pazienti con {cancer} ] ."},
    {"en": "These results suggest that [Claim adding {drug} to standard chemotherapy does not improve overall survival ] .",
     "es": "Estos resultados sugieren que [Claim añadir {drug} a la quimioterapia estándar no mejora la supervivencia global ] .",
     "fr": "Ces résultats suggèrent que [Claim l'ajout du {drug} à la chimiothérapie standard n'améliore pas la survie globale ] .",
     "it": "Questi risultati suggeriscono che [Claim l'aggiunta del {drug} alla chemioterapia standard non migliora la sopravvivenza globale ] ."},
    {"en": "[Claim The toxicity profile of {drug} was acceptable ] , and [Claim further phase III trials are warranted ] .",
     "es": "[Claim El perfil de toxicidad del {drug} fue aceptable ] , y [Claim se justifican nuevos ensayos de fase III ] .",
     "fr": "[Claim Le profil de toxicité du {drug} était acceptable ] , et [Claim de nouveaux essais de phase III sont justifiés ] .",
     "it": "[Claim Il profilo di tossicità del {drug} è stato accettabile ] , e [Claim sono giustificati ulteriori studi di fase III ] ."},
    {"en": "[Premise Overall survival was longer with {drug} ( hazard ratio {hr} ) ] , [Claim supporting its use as first-line therapy in {cancer} ] .",
     "es": "[Premise La supervivencia global fue mayor con {drug} ( hazard ratio {hr} ) ] , [Claim lo que respalda su uso como tratamiento de primera línea en el {cancer} ] .",
     "fr": "[Premise La survie globale était plus longue avec le {drug} ( hazard ratio {hr} ) ] , [Claim ce qui justifie son utilisation en première ligne dans le {cancer} ] .",
     "it": "[Premise La sopravvivenza globale è stata più lunga con il {drug} ( hazard ratio {hr} ) ] , [Claim a sostegno del suo impiego come terapia di prima linea nel {cancer} ] ."},
    {"en": "Patients with {cancer} were randomly assigned to receive {drug} or placebo .",
     "es": "Los pacientes con {cancer} fueron asignados aleatoriamente a recibir {drug} o placebo .",
     "fr": "Les patients atteints de {cancer} ont été randomisés pour recevoir le {drug} ou un placebo .",
     "it": "I pazienti con {cancer} sono stati randomizzati a ricevere il {drug} o placebo ."},
]
# (drug, cancer): real indications; Spanish/French/Italian articles in the templates
# are masculine, which all of these drug names take.
NEO_DRUGS = [
    ({"en": "tamoxifen", "es": "tamoxifeno", "fr": "tamoxifène", "it": "tamoxifene"}, "breast"),
    ({"en": "letrozole", "es": "letrozol", "fr": "létrozole", "it": "letrozolo"}, "breast"),
    ({"en": "trastuzumab", "es": "trastuzumab", "fr": "trastuzumab", "it": "trastuzumab"}, "breast"),
    ({"en": "docetaxel", "es": "docetaxel", "fr": "docétaxel", "it": "docetaxel"}, "lung"),
    ({"en": "cisplatin", "es": "cisplatino", "fr": "cisplatine", "it": "cisplatino"}, "ovary"),
    ({"en": "paclitaxel", "es": "paclitaxel", "fr": "paclitaxel", "it": "paclitaxel"}, "ovary"),
    ({"en": "carboplatin", "es": "carboplatino", "fr": "carboplatine", "it": "carboplatino"}, "ovary"),
    ({"en": "bevacizumab", "es": "bevacizumab", "fr": "bévacizumab", "it": "bevacizumab"}, "colon"),
]
CANCERS = {
    "breast": {"en": "breast cancer", "es": "cáncer de mama", "fr": "cancer du sein",
               "it": "carcinoma mammario"},
    "lung": {"en": "non-small cell lung cancer", "es": "cáncer de pulmón no microcítico",
             "fr": "cancer du poumon non à petites cellules",
             "it": "carcinoma polmonare non a piccole cellule"},
    "ovary": {"en": "ovarian cancer", "es": "cáncer de ovario", "fr": "cancer de l'ovaire",
              "it": "carcinoma ovarico"},
    "colon": {"en": "colorectal cancer", "es": "cáncer colorrectal", "fr": "cancer colorectal",
              "it": "carcinoma colorettale"},
}
GLAUCOMA = [
    {"en": "[Premise Mean intraocular pressure decreased from {iop1} to {iop2} mmHg in the {gdrug} group ] .",
     "es": "[Premise La presión intraocular media disminuyó de {iop1} a {iop2} mmHg en el grupo de {gdrug} ] .",
     "fr": "[Premise La pression intraoculaire moyenne a diminué de {iop1} à {iop2} mmHg dans le groupe {gdrug} ] .",
     "it": "[Premise La pressione intraoculare media è diminuita da {iop1} a {iop2} mmHg nel gruppo {gdrug} ] ."},
    {"en": "[Premise Conjunctival hyperaemia was reported by {pct1} % of patients treated with {gdrug} ] .",
     "es": "[Premise El {pct1} % de los pacientes tratados con {gdrug} refirió hiperemia conjuntival ] .",
     "fr": "[Premise Une hyperhémie conjonctivale a été rapportée par {pct1} % des patients traités par {gdrug} ] .",
     "it": "[Premise Un'iperemia congiuntivale è stata riferita dal {pct1} % dei pazienti trattati con {gdrug} ] ."},
    {"en": "[Claim {gdrug} is an effective option for lowering intraocular pressure in open-angle glaucoma ] .",
     "es": "[Claim {gdrug} es una opción eficaz para reducir la presión intraocular en el glaucoma de ángulo abierto ] .",
     "fr": "[Claim Le traitement par {gdrug} est une option efficace pour abaisser la pression intraoculaire dans le glaucome à angle ouvert ] .",
     "it": "[Claim Il trattamento con {gdrug} è un'opzione efficace per ridurre la pressione intraoculare nel glaucoma ad angolo aperto ] ."},
    {"en": "We conclude that [Claim {gdrug} and {gdrug2} provide a similar reduction of intraocular pressure ] .",
     "es": "Concluimos que [Claim {gdrug} y {gdrug2} producen una reducción similar de la presión intraocular ] .",
     "fr": "Nous concluons que [Claim les traitements par {gdrug} et par {gdrug2} entraînent une baisse similaire de la pression intraoculaire ] .",
     "it": "Concludiamo che [Claim il trattamento con {gdrug} e quello con {gdrug2} producono una riduzione simile della pressione intraoculare ] ."},
    {"en": "[Premise Visual field progression was observed in {k} eyes ] , [Claim indicating that pressure control alone may be insufficient ] .",
     "es": "[Premise Se observó progresión del campo visual en {k} ojos ] , [Claim lo que indica que el control de la presión por sí solo puede ser insuficiente ] .",
     "fr": "[Premise Une progression du champ visuel a été observée dans {k} yeux ] , [Claim ce qui indique que le contrôle de la pression seul peut être insuffisant ] .",
     "it": "[Premise Una progressione del campo visivo è stata osservata in {k} occhi ] , [Claim il che indica che il solo controllo della pressione può essere insufficiente ] ."},
]
GLAUCOMA_DRUGS = [
    {"en": "latanoprost", "es": "latanoprost", "fr": "latanoprost", "it": "latanoprost"},
    {"en": "timolol", "es": "timolol", "fr": "timolol", "it": "timololo"},
    {"en": "brimonidine", "es": "brimonidina", "fr": "brimonidine", "it": "brimonidina"},
    {"en": "dorzolamide", "es": "dorzolamida", "fr": "dorzolamide", "it": "dorzolamide"},
    {"en": "travoprost", "es": "travoprost", "fr": "travoprost", "it": "travoprost"},
]
OTHER = [
    {"en": "[Premise Systolic blood pressure fell by {k} mmHg with {xdrug} compared with {k2} mmHg with placebo ] .",
     "es": "[Premise La presión arterial sistólica disminuyó {k} mmHg con {xdrug} frente a {k2} mmHg con placebo ] .",
     "fr": "[Premise La pression artérielle systolique a baissé de {k} mmHg sous {xdrug} contre {k2} mmHg sous placebo ] .",
     "it": "[Premise La pressione arteriosa sistolica si è ridotta di {k} mmHg con {xdrug} rispetto a {k2} mmHg con placebo ] ."},
    {"en": "[Claim {xdrug} is an effective and safe option for patients with mild hypertension ] .",
     "es": "[Claim {xdrug} es una opción eficaz y segura para los pacientes con hipertensión leve ] .",
     "fr": "[Claim Le traitement par {xdrug} est une option efficace et sûre chez les patients atteints d'hypertension légère ] .",
     "it": "[Claim Il trattamento con {xdrug} è un'opzione efficace e sicura per i pazienti con ipertensione lieve ] ."},
    {"en": "[Premise HbA1c decreased by {d} percentage points after 24 weeks of metformin therapy ] .",
     "es": "[Premise La HbA1c disminuyó {d} puntos porcentuales tras 24 semanas de tratamiento con metformina ] .",
     "fr": "[Premise L'HbA1c a diminué de {d} points de pourcentage après 24 semaines de traitement par metformine ] .",
     "it": "[Premise L'HbA1c si è ridotta di {d} punti percentuali dopo 24 settimane di terapia con metformina ] ."},
]
OTHER_DRUGS = [
    {"en": "amlodipine", "es": "amlodipino", "fr": "amlodipine", "it": "amlodipina"},
    {"en": "losartan", "es": "losartán", "fr": "losartan", "it": "losartan"},
    {"en": "ramipril", "es": "ramipril", "fr": "ramipril", "it": "ramipril"},
]


def _num(x: float, lang: str, digits: int) -> str:
    s = f"{x:.{digits}f}"
    return s if lang == "en" else s.replace(".", ",")


def _slots(rng: random.Random) -> dict:
    """One example's slot values, shared by the four languages (parallel sentences)."""
    drug, site = NEO_DRUGS[rng.randrange(len(NEO_DRUGS))]
    g1, g2 = rng.sample(GLAUCOMA_DRUGS, 2)
    m1 = rng.randint(10, 30)
    pct1 = rng.randint(12, 45)
    k = rng.randint(4, 30)
    nums = {"m1": (m1, 0), "m2": (rng.randint(4, m1 - 2), 0), "p": (rng.randint(1, 40) / 1000, 3),
            "pct1": (pct1, 0), "pct2": (rng.randint(3, pct1 - 2), 0), "k": (k, 0),
            "k2": (rng.randint(1, 4), 0), "hr": (rng.randint(60, 90) / 100, 2),
            "iop1": (rng.randint(22, 28), 0), "iop2": (rng.randint(15, 19), 0),
            "d": (rng.randint(5, 15) / 10, 1)}
    words = {"drug": drug, "cancer": CANCERS[site], "gdrug": g1, "gdrug2": g2,
             "xdrug": OTHER_DRUGS[rng.randrange(len(OTHER_DRUGS))]}
    return {"nums": nums, "words": words}


def render(template: str, slots: dict, lang: str):
    """Template -> (tokens, BIO tags). `[Label` opens a span, `]` closes it."""
    text = template
    for name, value in slots["words"].items():
        text = text.replace("{" + name + "}", value[lang])
    for name, (value, digits) in slots["nums"].items():
        text = text.replace("{" + name + "}", _num(value, lang, digits))
    if "{" in text:
        raise ValueError(f"unfilled slot in {text!r}")
    tokens, tags, label, first = [], [], None, False
    for unit in text.split():
        if unit.startswith("[") and len(unit) > 1:
            label, first = unit[1:], True
        elif unit == "]":
            label = None
        else:
            tokens.append(unit)
            tags.append("O" if label is None else ("B-" if first else "I-") + label)
            first = False
    tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
    return tokens, tags


ABSTRCT_SIZES = {"neoplasm_train": 66, "neoplasm_dev": 12, "neoplasm_test": 22,
                 "glaucoma_test": 15, "mixed_test": 15}
# More training sentences (from their own random stream, so the first 66 and every other
# split stay as they were): with 66 per language the demo's tiny tagger memorises its
# training sentences (F1 41-61 on them, 4-9 on the test set); more fillers of the same
# argument patterns make it learn where Claims and Premises start and end.
ABSTRCT_EXTRA_TRAIN = {"neoplasm_train": 198}
# HiTZ/multilingual-abstrct's integer `labels` order (no ClassLabel names in the files).
ABSTRCT_ID_ORDER = ("O", "B-Claim", "I-Claim", "B-Premise", "I-Premise")
# The `huggingface` schema metadata `datasets` writes into a parquet shard (features only).
_HF_FEATURES = {
    "id": {"dtype": "string", "_type": "Value"},
    "tokens": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "labels_txt": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "labels": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"},
}


def write_abstrct_parquet(path: str, rows) -> None:
    """One hub-layout shard: id, tokens, labels_txt (IOB strings), labels (int ids)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "tokens": pa.array([r["tokens"] for r in rows], pa.list_(pa.string())),
        "labels_txt": pa.array([r["labels"] for r in rows], pa.list_(pa.string())),
        "labels": pa.array([[ABSTRCT_ID_ORDER.index(t) for t in r["labels"]] for r in rows],
                           pa.list_(pa.int64())),
    })
    table = table.replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def write_abstrct(out: str, seed: int = 0) -> None:
    """abstrct/{lang}/{split}-00000-of-00001.parquet, as HiTZ/multilingual-abstrct on the hub."""
    rng = random.Random(seed)
    extra_rng = random.Random(seed + 1000)
    for split, size in ABSTRCT_SIZES.items():
        rows = {lang: [] for lang in LANGS}
        for i in range(size + ABSTRCT_EXTRA_TRAIN.get(split, 0)):
            r = rng if i < size else extra_rng
            if split.startswith("neoplasm"):
                pool = NEOPLASM
            elif split == "glaucoma_test":
                pool = GLAUCOMA
            else:
                pool = (NEOPLASM, GLAUCOMA, OTHER)[i % 3]
            template = pool[r.randrange(len(pool))]
            slots = _slots(r)
            for lang in LANGS:
                tokens, tags = render(template[lang], slots, lang)
                rows[lang].append({"id": f"{split}_{i:03d}", "tokens": tokens, "labels": tags})
        for lang in LANGS:
            write_abstrct_parquet(os.path.join(out, "abstrct", lang,
                                               f"{split}-00000-of-00001.parquet"), rows[lang])


# ---------------------------------------------------------------- NER TSV files
import ner_sample_content as ner  # noqa: E402  (sibling script module)

NER_SIZES = {"train": 24, "dev": 8, "test": 12}


def write_ner(out: str, seed: int = 1) -> None:
    for dataset, langs, templates, fillers, keep in ner.DATASETS:
        rng = random.Random(f"{seed}-{dataset}")
        for split, size in NER_SIZES.items():
            sents = {lang: [] for lang in langs}
            for i in range(size):
                template = templates[i % len(templates)] if i < len(templates) else \
                    templates[rng.randrange(len(templates))]
                slots = {"words": ner.draw(fillers, rng),
                         "nums": {"n": (rng.randint(3, 40), 0), "age": (rng.randint(28, 86), 0)}}
                for lang in langs:
                    tokens, tags = render(template[lang], slots, lang)
                    tags = [t if t == "O" or t[2:] in keep else "O" for t in tags]
                    sents[lang].append((tokens, tags))
            for lang in langs:
                # the authors' release: a folder per language
                path = os.path.join(out, "ner", lang, f"{lang}-{dataset}-{split}.tsv")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s))
                                        for s in sents[lang]) + "\n")


def write_bioasq_parquet(path: str, rows) -> None:
    """One shard in the layout of HiTZ/Multilingual-BioASQ-6B on the hub (one row per
    question; tasks/qa_readers.py says which parts of it are verified). `exact_answer` is left
    out: its type changes with the question type (str, list of lists, absent), which one
    parquet column cannot hold, and the reader does not use it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    snippet = pa.struct([("offsetInBeginSection", pa.int64()), ("offsetInEndSection", pa.int64()),
                         ("text", pa.string()), ("beginSection", pa.string()),
                         ("document", pa.string()), ("endSection", pa.string())])
    table = pa.table({
        "body": pa.array([r["body"] for r in rows], pa.string()),
        "documents": pa.array([r["documents"] for r in rows], pa.list_(pa.string())),
        "ideal_answer": pa.array([r["ideal_answer"] for r in rows], pa.list_(pa.string())),
        "type": pa.array([r["type"] for r in rows], pa.string()),
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "snippets": pa.array([r["snippets"] for r in rows], pa.list_(snippet)),
    })
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def write_bioasq(out: str) -> None:
    """bioasq/{lang}/{split}-00000-of-00001.parquet, as HiTZ/Multilingual-BioASQ-6B."""
    for split, items in bioasq_sample_content.split_items().items():
        for lang in LANGS:
            write_bioasq_parquet(
                os.path.join(out, "bioasq", lang, f"{split}-00000-of-00001.parquet"),
                [bioasq_sample_content.render_item(item, lang) for item in items])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tasks", "data",
        "benchmarks"))
    args = parser.parse_args(argv)
    write_abstrct(args.out)
    write_ner(args.out)
    write_bioasq(args.out)
    print(f"wrote samples under {args.out}")


if __name__ == "__main__":
    main()
