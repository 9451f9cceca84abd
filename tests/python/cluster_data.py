"""Extracts for tests/cluster.rs, written independently of `riskstrat synth`.

A small population in the data contract's pseudonymised tables, drawn with Python's
own random numbers: each person has a hidden frailty that raises their appointments,
medicines and the chance of emergency admissions, so the model has something to find.
Some people are enrolled in services (the service evaluation runs). A few rows break the contract's rules on purpose (quarantine must see them), some
people have opted out, and each event table is split over two files.

usage: python cluster_data.py OUT_DIR PEOPLE SEED
"""

import datetime as dt
import hashlib
import os
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq

AS_OF = dt.date(2026, 4, 1)
START = AS_OF - dt.timedelta(days=3 * 365)
EMERGENCY = ["21", "22", "23", "24", "28"]
ELECTIVE = ["11", "12"]
BNF = ["0601021", "0301011", "0205051", "0407010", "0402010", "1001010", "0212000"]
ICD10 = ["I21", "I50", "J44", "E11", "N18", "C50", "F03", "K70", "R69"]


def pid(i):
    return hashlib.sha256(f"cluster-test-{i}".encode()).hexdigest()[:32]


def day(rng, lo=START, hi=AS_OF):
    return lo + dt.timedelta(days=rng.randrange((hi - lo).days))


def write(out, table, columns, schema, parts=1):
    folder = os.path.join(out, table)
    os.makedirs(folder, exist_ok=True)
    t = pa.table(columns, schema=schema)
    n = t.num_rows
    step = (n + parts - 1) // parts or 1
    for k in range(parts):
        pq.write_table(t.slice(k * step, step), os.path.join(folder, f"part-{k}.parquet"))


def main(out, people, seed):
    rng = random.Random(seed)
    p = {c: [] for c in ["pseudo_id", "year_of_birth", "sex", "practice_code", "lsoa_code",
                         "imd_decile", "registration_start", "registration_end", "date_of_death"]}
    ap = {c: [] for c in ["pseudo_id", "appointment_date", "hcp_type", "appt_mode", "appt_status"]}
    rx = {c: [] for c in ["pseudo_id", "issue_date", "bnf_code", "items", "quantity", "nic"]}
    ad = {c: [] for c in ["pseudo_id", "spell_id", "provider_code", "admission_date",
                          "discharge_date", "admission_method", "primary_diagnosis",
                          "secondary_diagnoses", "spell_cost"]}
    sv = {c: [] for c in ["pseudo_id", "service_code", "start_date", "end_date"]}
    optouts = []
    spell = 0
    for i in range(people):
        frailty = rng.expovariate(1.0)
        age = min(100, int(rng.gauss(45, 20) + 12 * frailty))
        p["pseudo_id"].append(pid(i))
        p["year_of_birth"].append(AS_OF.year - max(age, 0))
        p["sex"].append(rng.choice("FM"))
        p["practice_code"].append(f"P{rng.randrange(8):05d}")
        p["lsoa_code"].append(f"E0100{rng.randrange(1000):04d}")
        p["imd_decile"].append(rng.randrange(1, 11))
        p["registration_start"].append(dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(7000)))
        p["registration_end"].append(None)
        p["date_of_death"].append(None)
        if rng.random() < 0.02:
            optouts.append(pid(i))
        if rng.random() < 0.03 + 0.05 * min(frailty, 2):
            start = day(rng, AS_OF - dt.timedelta(days=330), AS_OF - dt.timedelta(days=60))
            sv["pseudo_id"].append(pid(i))
            sv["service_code"].append(rng.choice(["VW01", "CM02"]))
            sv["start_date"].append(start)
            sv["end_date"].append(start + dt.timedelta(days=rng.randrange(30, 120)))
        for _ in range(int(rng.expovariate(1.0 / (2 + 6 * frailty)))):
            ap["pseudo_id"].append(pid(i))
            ap["appointment_date"].append(day(rng))
            ap["hcp_type"].append(rng.choice(["GP", "GP", "Other Practice staff"]))
            ap["appt_mode"].append(rng.choice(["Face-to-Face", "Telephone", "Home Visit"]))
            ap["appt_status"].append(rng.choice(["Attended"] * 8 + ["DNA"]))
        for _ in range(int(rng.expovariate(1.0 / (1 + 10 * frailty)))):
            rx["pseudo_id"].append(pid(i))
            rx["issue_date"].append(day(rng))
            rx["bnf_code"].append(rng.choice(BNF) + "A0AAAAAA")
            rx["items"].append(rng.randrange(1, 4))
            rx["quantity"].append(float(rng.randrange(7, 90)))
            rx["nic"].append(round(rng.uniform(1, 60), 2))
        for _ in range(int(rng.expovariate(1.0 / (0.05 + 0.8 * frailty * frailty)))):
            spell += 1
            start = day(rng)
            ad["pseudo_id"].append(pid(i))
            ad["spell_id"].append(f"S{spell:08d}")
            ad["provider_code"].append("RXX")
            ad["admission_date"].append(start)
            ad["discharge_date"].append(start + dt.timedelta(days=rng.randrange(0, 12)))
            ad["admission_method"].append(rng.choice(EMERGENCY if rng.random() < 0.7 else ELECTIVE))
            ad["primary_diagnosis"].append(rng.choice(ICD10))
            ad["secondary_diagnoses"].append(rng.sample(ICD10, rng.randrange(0, 3)))
            ad["spell_cost"].append(round(rng.uniform(500, 9000), 2))
    # Rows that break the rules: an unknown person, a bad method, a bad status.
    ap["pseudo_id"].append("f" * 32)
    ap["appointment_date"].append(day(rng))
    ap["hcp_type"].append("GP")
    ap["appt_mode"].append("Telephone")
    ap["appt_status"].append("Attended")
    ad["pseudo_id"].append(pid(0))
    ad["spell_id"].append("S-BAD")
    ad["provider_code"].append(None)
    ad["admission_date"].append(day(rng))
    ad["discharge_date"].append(None)
    ad["admission_method"].append("ZZ")
    ad["primary_diagnosis"].append(None)
    ad["secondary_diagnoses"].append([])
    ad["spell_cost"].append(None)

    d, s, i32, f64 = pa.date32(), pa.string(), pa.int32(), pa.float64()
    field = lambda n, t, null=True: pa.field(n, t, nullable=null)
    write(out, "patients", p, pa.schema([
        field("pseudo_id", s, False), field("year_of_birth", i32, False), field("sex", s, False),
        field("practice_code", s, False), field("lsoa_code", s), field("imd_decile", i32),
        field("registration_start", d, False), field("registration_end", d),
        field("date_of_death", d)]))
    write(out, "optouts", {"pseudo_id": optouts, "optout_type": ["type1"] * len(optouts),
                           "recorded_date": [dt.date(2025, 1, 1)] * len(optouts)},
          pa.schema([field("pseudo_id", s, False), field("optout_type", s),
                     field("recorded_date", d)]))
    write(out, "appointments", ap, pa.schema([
        field("pseudo_id", s, False), field("appointment_date", d, False),
        field("hcp_type", s, False), field("appt_mode", s, False),
        field("appt_status", s, False)]), parts=2)
    write(out, "prescriptions", rx, pa.schema([
        field("pseudo_id", s, False), field("issue_date", d, False), field("bnf_code", s, False),
        field("items", i32, False), field("quantity", f64), field("nic", f64)]), parts=2)
    write(out, "admissions", ad, pa.schema([
        field("pseudo_id", s, False), field("spell_id", s, False), field("provider_code", s),
        field("admission_date", d, False), field("discharge_date", d),
        field("admission_method", s, False), field("primary_diagnosis", s),
        field("secondary_diagnoses", pa.list_(s)), field("spell_cost", f64)]), parts=2)
    # Care teams' feedback on some of the people: declined keeps a person out of cohorts.
    fb = {c: [] for c in ["pseudo_id", "team", "outcome", "service_code", "recorded_date"]}
    for i in rng.sample(range(people), max(1, people // 40)):
        fb["pseudo_id"].append(pid(i))
        fb["team"].append(rng.choice(["T01", "T02"]))
        fb["outcome"].append(rng.choice(["reviewed", "enrolled", "declined", "not_appropriate"]))
        fb["service_code"].append("VW01" if fb["outcome"][-1] == "enrolled" else None)
        fb["recorded_date"].append(day(rng, AS_OF - dt.timedelta(days=200), AS_OF))
    write(out, "feedback", fb, pa.schema([
        field("pseudo_id", s, False), field("team", s, False), field("outcome", s, False),
        field("service_code", s), field("recorded_date", d, False)]))
    write(out, "services", sv, pa.schema([
        field("pseudo_id", s, False), field("service_code", s, False),
        field("start_date", d, False), field("end_date", d)]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
