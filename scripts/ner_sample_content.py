"""Templates and fillers for the NER sample TSVs (used by make_benchmark_samples.py).

Original sentences; entity pairs (gene-disease, drug-adverse effect, condition-disability)
are real associations. `_pairs` fillers are drawn together so a sentence stays true.
"""

import random


def _l(en, es=None, fr=None, it=None):
    return {"en": en, "es": es, "fr": fr, "it": it}


NCBI_TEMPLATES = [
    _l("Mutations in the {gene} gene cause [Disease {dis} ] in affected families ."),
    _l("The prevalence of [Disease {dis} ] was higher among carriers of {gene} variants ."),
    _l("No association was found between common {gene} polymorphisms and [Disease {dis2} ] ."),
    _l("Early diagnosis of [Disease {dis} ] improves long-term outcomes ."),
    _l("A novel {gene} variant was identified in a child with [Disease {dis} ] ."),
    _l("Patients with [Disease {dis} ] should be screened regularly for [Disease {dis2} ] ."),
    _l("Genetic counselling was offered to all relatives of the index case ."),
]
NCBI_FILLERS = {"_pairs": [
    {"gene": _l("CFTR"), "dis": _l("cystic fibrosis"), "dis2": _l("pancreatic insufficiency")},
    {"gene": _l("DMD"), "dis": _l("Duchenne muscular dystrophy"),
     "dis2": _l("dilated cardiomyopathy")},
    {"gene": _l("FBN1"), "dis": _l("Marfan syndrome"), "dis2": _l("aortic dissection")},
    {"gene": _l("HFE"), "dis": _l("hereditary hemochromatosis"), "dis2": _l("liver cirrhosis")},
    {"gene": _l("APC"), "dis": _l("familial adenomatous polyposis"),
     "dis2": _l("colorectal cancer")},
    {"gene": _l("BRCA1"), "dis": _l("hereditary breast cancer"), "dis2": _l("ovarian cancer")},
    {"gene": _l("VHL"), "dis": _l("von Hippel-Lindau disease"),
     "dis2": _l("renal cell carcinoma")},
]}

CDR_TEMPLATES = [
    _l("[Chemical {chem} ] - induced [Disease {adr} ] was observed in {n} patients ."),
    _l("Treatment with [Chemical {chem} ] was stopped because of severe [Disease {adr} ] ."),
    _l("We report a case of [Disease {adr} ] after a short course of [Chemical {chem} ] ."),
    _l("The risk of [Disease {adr} ] increased with the cumulative dose of [Chemical {chem} ] ."),
    _l("Rats received [Chemical {chem} ] to induce experimental [Disease {adr} ] ."),
    _l("Serum concentrations were measured weekly during the study ."),
]
CDR_FILLERS = {"_pairs": [
    {"chem": _l("cisplatin"), "adr": _l("nephrotoxicity")},
    {"chem": _l("doxorubicin"), "adr": _l("cardiotoxicity")},
    {"chem": _l("haloperidol"), "adr": _l("tardive dyskinesia")},
    {"chem": _l("amiodarone"), "adr": _l("pulmonary fibrosis")},
    {"chem": _l("gentamicin"), "adr": _l("hearing loss")},
    {"chem": _l("lithium"), "adr": _l("nephrogenic diabetes insipidus")},
    {"chem": _l("isoniazid"), "adr": _l("hepatitis")},
    {"chem": _l("heparin"), "adr": _l("thrombocytopenia")},
    {"chem": _l("valproic acid"), "adr": _l("acute liver failure")},
    {"chem": _l("methotrexate"), "adr": _l("oral mucositis")},
]}

DIANN_TEMPLATES = [
    _l("The most frequent sequela in patients with {cond} was [dis {dis} ] .",
       "La secuela más frecuente en los pacientes con {cond} fue [dis {dis} ] ."),
    _l("About {n} % of patients with {cond} developed [dis {dis} ] within five years .",
       "Alrededor del {n} % de los pacientes con {cond} desarrolló [dis {dis} ] en cinco años ."),
    _l("The scale measures the severity of [dis {dis} ] in adults with {cond} .",
       "La escala mide la gravedad de [dis {dis} ] en adultos con {cond} ."),
    _l("Rehabilitation reduced [dis {dis} ] in patients with {cond} .",
       "La rehabilitación redujo [dis {dis} ] en pacientes con {cond} ."),
    _l("Functional status was assessed at admission and at discharge .",
       "La situación funcional se evaluó al ingreso y al alta ."),
]
DIANN_FILLERS = {"_pairs": [
    {"cond": _l("stroke", "ictus"), "dis": _l("hemiplegia", "hemiplejía")},
    {"cond": _l("stroke", "ictus"), "dis": _l("aphasia", "afasia")},
    {"cond": _l("multiple sclerosis", "esclerosis múltiple"),
     "dis": _l("visual impairment", "discapacidad visual")},
    {"cond": _l("bacterial meningitis", "meningitis bacteriana"),
     "dis": _l("hearing loss", "pérdida auditiva")},
    {"cond": _l("diabetic retinopathy", "retinopatía diabética"),
     "dis": _l("loss of vision", "pérdida de visión")},
    {"cond": _l("traumatic brain injury", "traumatismo craneoencefálico"),
     "dis": _l("cognitive impairment", "deterioro cognitivo")},
    {"cond": _l("spinal cord injury", "lesión medular"), "dis": _l("paraplegia", "paraplejía")},
]}

PHARMA_TEMPLATES = [
    _l(None, "Se inició tratamiento con [NORMALIZABLES {drug} ] {dose} por vía oral ."),
    _l(None, "La analítica mostró una elevación de [PROTEINAS {prot} ] ."),
    _l(None, "Se administró [NORMALIZABLES {drug} ] junto con [NORMALIZABLES {drug2} ] "
             "durante el ingreso ."),
    _l(None, "Se suspendió el [NO_NORMALIZABLES {nn} ] por intolerancia digestiva ."),
    _l(None, "Se detectaron anticuerpos frente a [PROTEINAS {ab} ] ."),
    _l(None, "Recibió [UNCLEAR {unc} ] según el protocolo del servicio ."),
    _l(None, "La paciente evolucionó favorablemente y fue dada de alta ."),
]
PHARMA_FILLERS = {
    "_pairs": [
        {"drug": _l(None, "paracetamol"), "dose": _l(None, "1 g cada 8 horas")},
        {"drug": _l(None, "amoxicilina"), "dose": _l(None, "500 mg cada 8 horas")},
        {"drug": _l(None, "omeprazol"), "dose": _l(None, "20 mg al día")},
        {"drug": _l(None, "prednisona"), "dose": _l(None, "30 mg al día")},
        {"drug": _l(None, "furosemida"), "dose": _l(None, "40 mg cada 12 horas")},
        {"drug": _l(None, "metamizol"), "dose": _l(None, "575 mg cada 8 horas")},
    ],
    "drug2": [_l(None, "enoxaparina"), _l(None, "ceftriaxona"), _l(None, "ondansetrón")],
    "prot": [_l(None, "troponina I"), _l(None, "proteína C reactiva"), _l(None, "ferritina"),
             _l(None, "creatina quinasa"), _l(None, "lactato deshidrogenasa")],
    "ab": [_l(None, "tiroglobulina"), _l(None, "peroxidasa tiroidea"),
           _l(None, "receptor de acetilcolina")],
    "nn": [_l(None, "suplemento de hierro oral"), _l(None, "complejo vitamínico"),
           _l(None, "extracto de valeriana")],
    "unc": [_l(None, "sueroterapia"), _l(None, "quimioterapia con platino"),
            _l(None, "nutrición parenteral")],
}

E3C_TEMPLATES = [
    _l("A {age}-year-old man was admitted with [ety {sym} ] and [ety {sym2} ] .",
       "Varón de {age} años que ingresó por [ety {sym} ] y [ety {sym2} ] .",
       "Homme de {age} ans admis pour [ety {sym} ] et [ety {sym2} ] .",
       "Uomo di {age} anni ricoverato per [ety {sym} ] e [ety {sym2} ] ."),
    _l("Physical examination revealed {sign_art} [ety {sign} ] .",
       "La exploración física reveló {sign_art} [ety {sign} ] .",
       "L'examen clinique a révélé {sign_art} [ety {sign} ] .",
       "L'esame obiettivo ha evidenziato {sign_art} [ety {sign} ] ."),
    _l("The patient had a history of [ety {hist} ] .",
       "El paciente tenía antecedentes de [ety {hist} ] .",
       "Le patient avait des antécédents de [ety {hist} ] .",
       "Il paziente aveva una storia di [ety {hist} ] ."),
    _l("Symptoms resolved after treatment and the patient was discharged .",
       "Los síntomas se resolvieron tras el tratamiento y el paciente fue dado de alta .",
       "Les symptômes ont disparu après le traitement et le patient est sorti .",
       "I sintomi si sono risolti dopo il trattamento e il paziente è stato dimesso ."),
]
_SYMPTOMS = [
    _l("fever", "fiebre", "fièvre", "febbre"),
    _l("dyspnoea", "disnea", "dyspnée", "dispnea"),
    _l("chest pain", "dolor torácico", "douleur thoracique", "dolore toracico"),
    _l("cough", "tos", "toux", "tosse"),
    _l("abdominal pain", "dolor abdominal", "douleur abdominale", "dolore addominale"),
    _l("headache", "cefalea", "céphalées", "cefalea"),
]
E3C_FILLERS = {
    "_pairs": [
        {"sign_art": _l("", "una", "une", "una"),
         "sign": _l("splenomegaly", "esplenomegalia", "splénomégalie", "splenomegalia")},
        {"sign_art": _l("", "", "un", ""), "sign": _l("jaundice", "ictericia", "ictère", "ittero")},
        {"sign_art": _l("a", "un", "un", "un"),
         "sign": _l("heart murmur", "soplo cardíaco", "souffle cardiaque", "soffio cardiaco")},
        {"sign_art": _l("", "", "des", ""),
         "sign": _l("bibasal crackles", "crepitantes bibasales", "crépitants bibasaux",
                    "rantoli bibasali")},
    ],
    "sym": _SYMPTOMS,
    "sym2": _SYMPTOMS,
    "hist": [
        _l("type 2 diabetes", "diabetes de tipo 2", "diabète de type 2", "diabete di tipo 2"),
        _l("ischaemic heart disease", "cardiopatía isquémica", "cardiopathie ischémique",
           "cardiopatia ischemica"),
        _l("chronic obstructive pulmonary disease", "enfermedad pulmonar obstructiva crónica",
           "bronchopneumopathie chronique obstructive", "broncopneumopatia cronica ostruttiva"),
        _l("atrial fibrillation", "fibrilación auricular", "fibrillation auriculaire",
           "fibrillazione atriale"),
    ],
}

# (dataset id in the authors' file names, languages, templates, fillers, raw tags kept).
# Ids as in the authors' Medical-MT5/multitask.sh (Sequence-Labeling-LLMs); E3C and DIANN
# carry their raw tags `ety` / `dis`, which the reader verbalises (ClinicalEntity,
# Disability) as the authors' label_names.py does.
DATASETS = [
    ("ncbi-disease", ("en",), NCBI_TEMPLATES, NCBI_FILLERS, {"Disease"}),
    ("bc5cdr_disease", ("en",), CDR_TEMPLATES, CDR_FILLERS, {"Disease"}),
    ("bc5cdr_chemical", ("en",), CDR_TEMPLATES, CDR_FILLERS, {"Chemical"}),
    ("diann", ("en", "es"), DIANN_TEMPLATES, DIANN_FILLERS, {"dis"}),
    ("pharmaconer-bsc", ("es",), PHARMA_TEMPLATES, PHARMA_FILLERS,
     {"NORMALIZABLES", "NO_NORMALIZABLES", "PROTEINAS", "UNCLEAR"}),
    ("e3c", ("en", "es", "fr", "it"), E3C_TEMPLATES, E3C_FILLERS, {"ety"}),
]


def draw(fillers: dict, rng: random.Random) -> dict:
    """One example's word slots: independent slots, then one `_pairs` entry (tied slots);
    `sym2` is redrawn until it differs from `sym`."""
    words = {k: v[rng.randrange(len(v))] for k, v in fillers.items() if not k.startswith("_")}
    if "_pairs" in fillers:
        words.update(fillers["_pairs"][rng.randrange(len(fillers["_pairs"]))])
    while "sym2" in words and words["sym2"] == words["sym"]:
        words["sym2"] = fillers["sym2"][rng.randrange(len(fillers["sym2"]))]
    return words
