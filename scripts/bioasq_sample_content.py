"""Question/answer content for the BioASQ-layout samples (used by make_benchmark_samples.py).

Original texts built from textbook facts (causal genes, drug classes, indications) in
en/es/fr/it. Rows follow the multilingual BioASQ-6B layout: `body`, `snippets`,
`ideal_answer`, `exact_answer`, `type`; gene items use snippet dicts and an
ideal_answer list, the others plain strings, so both shapes are exercised.
"""

import re

LANGS = ("en", "es", "fr", "it")

# Article + preposition contractions, applied after filling the templates.
_CONTRACT = {
    "es": [(" de el ", " del "), (" a el ", " al ")],
    "fr": [(" de le ", " du "), (" de les ", " des "), (" à le ", " au ")],
    "it": [(" di il ", " del "), (" di l'", " dell'"), (" di la ", " della "),
           (" in il ", " nel "), (" in l'", " nell'"), (" in la ", " nella ")],
    "en": [],
}


def _fill(text: str, lang: str, **slots) -> str:
    text = " " + text.format(**slots) + " "
    for a, b in _CONTRACT[lang]:
        text = text.replace(a, b)
    text = text.strip()
    # capitalise the first letter of each sentence ("Sí. El omeprazol ...")
    return re.sub(r"(^|[.?!] )(\w)", lambda m: m.group(1) + m.group(2).upper(), text)


GENE_T = {
    "en": ("Which gene is mutated in {dis}?", "{dis} is caused by mutations in the {gene} gene.",
           "Mutations in the {gene} gene are responsible for {dis}.",
           "{dis} is an inherited disorder that can be diagnosed by genetic testing."),
    "es": ("¿Qué gen está mutado en {dis}?", "{dis} se debe a mutaciones en el gen {gene}.",
           "Las mutaciones de el gen {gene} son responsables de {dis}.",
           "{dis} es un trastorno hereditario que puede diagnosticarse mediante pruebas "
           "genéticas."),
    "fr": ("Quel gène est muté dans {dis} ?", "{dis} résulte de mutations de le gène {gene}.",
           "Des mutations de le gène {gene} sont responsables de {dis}.",
           "{dis} est une maladie héréditaire qui peut être diagnostiquée par un test génétique."),
    "it": ("Quale gene è mutato in {dis}?", "{dis} è causata da mutazioni di il gene {gene}.",
           "Le mutazioni di il gene {gene} sono responsabili di {dis}.",
           "{dis} è una malattia ereditaria che può essere diagnosticata mediante test genetici."),
}
GENES = [
    ("CFTR", {"en": "cystic fibrosis", "es": "la fibrosis quística", "fr": "la mucoviscidose",
              "it": "la fibrosi cistica"}),
    ("DMD", {"en": "Duchenne muscular dystrophy", "es": "la distrofia muscular de Duchenne",
             "fr": "la dystrophie musculaire de Duchenne",
             "it": "la distrofia muscolare di Duchenne"}),
    ("HTT", {"en": "Huntington disease", "es": "la enfermedad de Huntington",
             "fr": "la maladie de Huntington", "it": "la malattia di Huntington"}),
    ("FBN1", {"en": "Marfan syndrome", "es": "el síndrome de Marfan",
              "fr": "le syndrome de Marfan", "it": "la sindrome di Marfan"}),
    ("HBB", {"en": "sickle cell disease", "es": "la anemia falciforme",
             "fr": "la drépanocytose", "it": "l'anemia falciforme"}),
    ("PAH", {"en": "phenylketonuria", "es": "la fenilcetonuria", "fr": "la phénylcétonurie",
             "it": "la fenilchetonuria"}),
]

MECH_T = {
    "en": ("What is the mechanism of action of {drug}?", "{drug} is {mech}.",
           "{drug} acts as {mech} and is widely prescribed.",
           "The dose of {drug} should be adjusted in elderly patients."),
    "es": ("¿Cuál es el mecanismo de acción de {drug}?", "{drug} es {mech}.",
           "{drug} actúa como {mech} y se prescribe con frecuencia.",
           "Se recomienda ajustar la dosis de {drug} en pacientes de edad avanzada."),
    "fr": ("Quel est le mécanisme d'action de {drug} ?", "{drug} est {mech}.",
           "{drug} agit comme {mech} et fait l'objet de nombreuses prescriptions.",
           "La posologie de {drug} doit être adaptée chez les patients âgés."),
    "it": ("Qual è il meccanismo d'azione di {drug}?", "{drug} è {mech}.",
           "{drug} agisce come {mech} ed è di uso comune.",
           "La dose di {drug} va adattata nei pazienti anziani."),
}
DRUGS = {  # drug with its article where the language needs one
    "omeprazole": {"en": "omeprazole", "es": "el omeprazol", "fr": "l'oméprazole",
                   "it": "l'omeprazolo"},
    "atorvastatin": {"en": "atorvastatin", "es": "la atorvastatina", "fr": "l'atorvastatine",
                     "it": "l'atorvastatina"},
    "warfarin": {"en": "warfarin", "es": "la warfarina", "fr": "la warfarine",
                 "it": "il warfarin"},
    "tamoxifen": {"en": "tamoxifen", "es": "el tamoxifeno", "fr": "le tamoxifène",
                  "it": "il tamoxifene"},
    "metoprolol": {"en": "metoprolol", "es": "el metoprolol", "fr": "le métoprolol",
                   "it": "il metoprololo"},
    "lisinopril": {"en": "lisinopril", "es": "el lisinopril", "fr": "le lisinopril",
                   "it": "il lisinopril"},
}
MECHS = {
    "omeprazole": {"en": "a proton pump inhibitor", "es": "un inhibidor de la bomba de protones",
                   "fr": "un inhibiteur de la pompe à protons",
                   "it": "un inibitore della pompa protonica"},
    "atorvastatin": {"en": "an HMG-CoA reductase inhibitor",
                     "es": "un inhibidor de la HMG-CoA reductasa",
                     "fr": "un inhibiteur de l'HMG-CoA réductase",
                     "it": "un inibitore della HMG-CoA reduttasi"},
    "warfarin": {"en": "a vitamin K antagonist", "es": "un antagonista de la vitamina K",
                 "fr": "un antagoniste de la vitamine K", "it": "un antagonista della vitamina K"},
    "tamoxifen": {"en": "a selective estrogen receptor modulator",
                  "es": "un modulador selectivo de los receptores de estrógenos",
                  "fr": "un modulateur sélectif des récepteurs aux œstrogènes",
                  "it": "un modulatore selettivo del recettore degli estrogeni"},
    "metoprolol": {"en": "a cardioselective beta-blocker",
                   "es": "un betabloqueante cardioselectivo",
                   "fr": "un bêtabloquant cardiosélectif",
                   "it": "un beta-bloccante cardioselettivo"},
    "lisinopril": {"en": "an angiotensin-converting enzyme inhibitor",
                   "es": "un inhibidor de la enzima convertidora de angiotensina",
                   "fr": "un inhibiteur de l'enzyme de conversion de l'angiotensine",
                   "it": "un inibitore dell'enzima di conversione dell'angiotensina"},
}

YESNO_T = {
    "en": ("Is {drug} used to treat {cond}?", "Yes. {drug} is used to treat {cond}.",
           "No. {drug} is not used to treat {cond}.",
           "{drug} is indicated for the treatment of {cond}.",
           "{drug} is not indicated for the treatment of {cond}.", "yes", "no"),
    "es": ("¿Se utiliza {drug} para tratar {cond}?", "Sí. {drug} se utiliza para tratar {cond}.",
           "No. {drug} no se utiliza para tratar {cond}.",
           "{drug} se emplea en el tratamiento de {cond}.",
           "{drug} no se emplea en el tratamiento de {cond}.", "sí", "no"),
    "fr": ("Utilise-t-on {drug} pour traiter {cond} ?",
           "Oui. On utilise {drug} pour traiter {cond}.",
           "Non. On n'utilise pas {drug} pour traiter {cond}.",
           "On emploie {drug} dans le traitement de {cond}.",
           "On n'emploie pas {drug} dans le traitement de {cond}.", "oui", "non"),
    "it": ("{drug} si usa per trattare {cond}?", "Sì. {drug} si usa per trattare {cond}.",
           "No. {drug} non si usa per trattare {cond}.",
           "{drug} si impiega nel trattamento di {cond}.",
           "{drug} non si impiega nel trattamento di {cond}.", "sì", "no"),
}
YESNO = [
    ("omeprazole", True, {"en": "gastro-oesophageal reflux disease",
                          "es": "la enfermedad por reflujo gastroesofágico",
                          "fr": "le reflux gastro-œsophagien",
                          "it": "la malattia da reflusso gastroesofageo"}),
    ("tamoxifen", True, {"en": "breast cancer", "es": "el cáncer de mama",
                         "fr": "le cancer du sein", "it": "il carcinoma mammario"}),
    ("lisinopril", True, {"en": "hypertension", "es": "la hipertensión arterial",
                          "fr": "l'hypertension artérielle", "it": "l'ipertensione arteriosa"}),
    ("warfarin", False, {"en": "bacterial pneumonia", "es": "la neumonía bacteriana",
                         "fr": "la pneumonie bactérienne", "it": "la polmonite batterica"}),
    ("atorvastatin", False, {"en": "migraine", "es": "la migraña", "fr": "la migraine",
                             "it": "l'emicrania"}),
    ("metoprolol", False, {"en": "type 1 diabetes", "es": "la diabetes de tipo 1",
                           "fr": "le diabète de type 1", "it": "il diabete di tipo 1"}),
]


def _items():
    items = [("gene", g) for g in GENES] + [("mech", d) for d in MECHS] + \
        [("yesno", y) for y in YESNO]
    return [(f"q{i:03d}",) + item for i, item in enumerate(items)]


def split_items():
    """{"train": [...], "test": [...]}: every third question is a test question."""
    items = _items()
    return {"train": [it for i, it in enumerate(items) if i % 3 != 2],
            "test": [it for i, it in enumerate(items) if i % 3 == 2]}


def _snippet(text: str, qid: str, k: int) -> dict:
    """A snippet object as in the BioASQ task B files (document URL, section, offsets)."""
    return {"offsetInBeginSection": 0, "offsetInEndSection": len(text), "text": text,
            "beginSection": "abstract",
            "document": f"http://www.ncbi.nlm.nih.gov/pubmed/{90000000 + 10 * int(qid[1:]) + k}",
            "endSection": "abstract"}


def render_item(item, lang: str) -> dict:
    """One question in `lang`, with the fields and types of the BioASQ task B release:
    `ideal_answer` a list of strings, `snippets` a list of snippet objects, `documents` the
    PubMed URLs the snippets cite, `exact_answer` a string for yes/no, a list of synonym
    lists for factoid and no field for summary questions (tasks/qa_readers.py cites where
    this is documented)."""
    qid, kind, data = item
    if kind == "gene":
        gene, dis = data
        q, a, s1, s2 = (_fill(t, lang, dis=dis[lang], gene=gene) for t in GENE_T[lang])
        row = {"body": q, "type": "factoid", "ideal_answer": [a], "exact_answer": [[gene]],
               "snippet_texts": [s1, s2]}
    elif kind == "mech":
        drug, mech = DRUGS[data][lang], MECHS[data][lang]
        q, a, s1, s2 = (_fill(t, lang, drug=drug, mech=mech) for t in MECH_T[lang])
        row = {"body": q, "type": "summary", "ideal_answer": [a], "snippet_texts": [s1, s2]}
    else:
        name, yes, cond = data
        q, a_yes, a_no, s_yes, s_no, w_yes, w_no = YESNO_T[lang]
        fill = dict(drug=DRUGS[name][lang], cond=cond[lang])
        row = {"body": _fill(q, lang, **fill), "type": "yesno",
               "ideal_answer": [_fill(a_yes if yes else a_no, lang, **fill)],
               "exact_answer": w_yes if yes else w_no,
               "snippet_texts": [_fill(s_yes if yes else s_no, lang, **fill)]}
    snippets = [_snippet(t, qid, k) for k, t in enumerate(row.pop("snippet_texts"))]
    return {"body": row["body"], "documents": [s["document"] for s in snippets],
            "ideal_answer": row["ideal_answer"],
            **({"exact_answer": row["exact_answer"]} if "exact_answer" in row else {}),
            "type": row["type"], "id": qid, "snippets": snippets}
