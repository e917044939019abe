"""Code system names and unit strings seen in HL7 v2 feeds, and their FHIR equivalents."""

from __future__ import annotations

# HL7 table 0396 and common legacy names -> FHIR code system URIs.
CODE_SYSTEMS: dict[str, str] = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "HCPCS": "urn:oid:2.16.840.1.113883.6.285",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://terminology.hl7.org/CodeSystem/MVX",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "UCUM": "http://unitsofmeasure.org",
    "NCIT": "http://ncimeta.nci.nih.gov",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "CDCPHINVS": "urn:oid:2.16.840.1.114222.4.5.274",
    "ISO3166_1": "urn:iso:std:iso:3166",
    "ISO+": "http://unitsofmeasure.org",
    "UPIN": "urn:oid:2.16.840.1.113883.4.8",
}

# Unit strings seen in feeds that are not UCUM, and their UCUM codes.
UNIT_ALIASES: dict[str, str] = {
    "beats/min": "/min",
    "bpm": "/min",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "in": "[in_i]",
    "mcg/dl": "ug/dL",
    "mcg/ml": "ug/mL",
    "tera.l-1": "10*12/L",
    "giga.l-1": "10*9/L",
    "k/ul": "10*3/uL",
    "k/mm3": "10*3/uL",
    "m/ul": "10*6/uL",
    "deg f": "[degF]",
    "deg c": "Cel",
    "degc": "Cel",
    "mmhg": "mm[Hg]",
    "sec": "s",
    "hr": "h",
    "hrs": "h",
    "mins": "min",
    "minutes": "min",
    "hours": "h",
    "years": "a",
    "yr": "a",
    "months": "mo",
    "days": "d",
    "weeks": "wk",
}
# Units that are already valid UCUM as written (case matters in UCUM).
UCUM_AS_IS = frozenset({
    "%", "/min", "mg/dL", "g/dL", "g/L", "mg/L", "ug/dL", "ug/L", "ug/mL", "ng/mL", "ng/dL",
    "pg/mL", "mmol/L", "umol/L", "mEq/L", "U/L", "IU/L", "[IU]/L", "mL", "L", "dL", "kg", "g",
    "mg", "cm", "mm", "m", "s", "min", "h", "d", "wk", "mo", "a", "fL", "pg", "10*3/uL",
    "10*6/uL", "10*9/L", "10*12/L", "mm[Hg]", "Cel", "[degF]", "[lb_av]", "[in_i]", "kg/m2",
    "mL/min", "{ratio}", "mosm/kg"
})
