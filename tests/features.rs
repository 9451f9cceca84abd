//! The contract's features, value for value, on hand-written rows at every edge the
//! contract names. Table-driven: each case adds its rows and states what it expects;
//! one run computes them all.

use crate::common::*;
use datafusion::arrow::array::{
    Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const A: &str = "2026-04-01";

#[derive(Debug, Clone, PartialEq)]
enum V {
    I(i64),
    F(f64),
    S(String),
    Null,
}

/// What a case expects of one person.
enum Expect {
    /// In the population with these feature values.
    Features(&'static [(&'static str, V0)]),
    /// Not in the population at A (but not quarantined).
    NotInPopulation,
}

/// `const`-friendly expected values.
#[derive(Clone, Copy)]
enum V0 {
    I(i64),
    F(f64),
    S(&'static str),
    Null,
}

impl V0 {
    fn v(self) -> V {
        match self {
            V0::I(x) => V::I(x),
            V0::F(x) => V::F(x),
            V0::S(x) => V::S(x.to_string()),
            V0::Null => V::Null,
        }
    }
}

fn appt(
    name: &str,
    date: &str,
    hcp: &'static str,
    mode: &'static str,
    status: &'static str,
) -> Appt {
    Appt {
        id: Some(pid(name)),
        date: d(date),
        hcp,
        mode,
        status,
    }
}
fn gp(name: &str, date: &str) -> Appt {
    appt(name, date, "GP", "Face-to-Face", "Attended")
}
fn rx(name: &str, date: &str, bnf: &'static str, items: i32, nic: f64) -> Rx {
    Rx {
        id: Some(pid(name)),
        date: d(date),
        bnf,
        items,
        nic,
    }
}
fn spell(
    name: &str,
    spell: &str,
    date: &str,
    discharge: Option<&str>,
    method: &'static str,
    primary: Option<&'static str>,
    secondary: Vec<&'static str>,
    cost: f64,
) -> Spell {
    Spell {
        id: pid(name),
        spell: spell.to_string(),
        date: d(date),
        discharge: discharge.map(d),
        method,
        primary,
        secondary: Some(secondary),
        cost,
    }
}

struct Case {
    name: &'static str,
    setup: fn(&mut Dataset),
    expect: Expect,
}

use V0::*;

/// Every case. The person is named after the case.
fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "no_events",
            setup: |ds| {
                ds.patients.push(Patient {
                    yob: 1950,
                    ..Patient::new("no_events")
                })
            },
            expect: Expect::Features(&[
                ("age", I(76)),
                ("sex", S("F")),
                ("imd_decile", I(3)),
                ("practice_code", S("A81001")),
                ("lsoa_code", S("E01012345")),
                ("gp_appts_12m", I(0)),
                ("other_appts_12m", I(0)),
                ("home_visits_12m", I(0)),
                ("dna_12m", I(0)),
                ("rx_items_12m", I(0)),
                ("rx_cost_12m", F(0.0)),
                ("distinct_drugs_12m", I(0)),
                ("ltc_groups_12m", I(0)),
                ("emergency_admissions_12m", I(0)),
                ("emergency_bed_days_12m", I(0)),
                ("elective_admissions_12m", I(0)),
                ("admission_cost_12m", F(0.0)),
                ("total_cost_12m", F(0.0)),
                ("charlson_score", I(0)),
            ]),
        },
        Case {
            name: "null_deprivation_and_lsoa",
            setup: |ds| {
                ds.patients.push(Patient {
                    imd: None,
                    lsoa: None,
                    sex: "U",
                    ..Patient::new("null_deprivation_and_lsoa")
                })
            },
            expect: Expect::Features(&[("imd_decile", Null), ("lsoa_code", Null), ("sex", S("U"))]),
        },
        Case {
            // W12 = [A-365, A): are in, A-366 and A are out.
            name: "appointment_window_edges",
            setup: |ds| {
                let n = "appointment_window_edges";
                ds.patients.push(Patient::new(n));
                for date in [
                    "2025-04-01",
                    "2025-03-31",
                    "2026-03-31",
                    "2026-04-01",
                    "2026-06-01",
                ] {
                    ds.appointments.push(gp(n, date));
                }
            },
            expect: Expect::Features(&[("gp_appts_12m", I(2))]),
        },
        Case {
            name: "appointment_kinds",
            setup: |ds| {
                let n = "appointment_kinds";
                ds.patients.push(Patient::new(n));
                ds.appointments.extend([
                    appt(n, "2025-06-01", "GP", "Face-to-Face", "Attended"),
                    appt(n, "2025-06-02", "GP", "Home Visit", "Attended"),
                    appt(
                        n,
                        "2025-06-03",
                        "Other Practice staff",
                        "Telephone",
                        "Attended",
                    ),
                    appt(
                        n,
                        "2025-06-04",
                        "Other Practice staff",
                        "Home Visit",
                        "Attended",
                    ),
                    appt(n, "2025-06-05", "GP", "Face-to-Face", "DNA"),
                    appt(n, "2025-06-06", "Unknown", "Home Visit", "DNA"),
                    appt(n, "2025-06-07", "GP", "Face-to-Face", "Unknown"),
                    appt(n, "2025-06-08", "Unknown", "Video/Online", "Attended"),
                    appt(n, "2025-03-31", "GP", "Home Visit", "DNA"),
                ]);
            },
            expect: Expect::Features(&[
                ("gp_appts_12m", I(2)),
                ("other_appts_12m", I(2)),
                ("home_visits_12m", I(2)),
                ("dna_12m", I(2)),
            ]),
        },
        Case {
            name: "registration_starts_on_a",
            setup: |ds| {
                ds.patients.push(Patient {
                    start: d(A),
                    ..Patient::new("registration_starts_on_a")
                })
            },
            expect: Expect::Features(&[("gp_appts_12m", I(0))]),
        },
        Case {
            name: "registration_starts_after_a",
            setup: |ds| {
                ds.patients.push(Patient {
                    start: d("2026-04-02"),
                    ..Patient::new("registration_starts_after_a")
                })
            },
            expect: Expect::NotInPopulation,
        },
        Case {
            name: "registration_ends_on_a",
            setup: |ds| {
                ds.patients.push(Patient {
                    end: Some(d(A)),
                    ..Patient::new("registration_ends_on_a")
                })
            },
            expect: Expect::Features(&[("age", I(66))]),
        },
        Case {
            name: "registration_ended_before_a",
            setup: |ds| {
                ds.patients.push(Patient {
                    end: Some(d("2026-03-31")),
                    ..Patient::new("registration_ended_before_a")
                })
            },
            expect: Expect::NotInPopulation,
        },
        Case {
            name: "death_on_a",
            setup: |ds| {
                ds.patients.push(Patient {
                    death: Some(d(A)),
                    ..Patient::new("death_on_a")
                })
            },
            expect: Expect::Features(&[("age", I(66))]),
        },
        Case {
            name: "death_before_a",
            setup: |ds| {
                ds.patients.push(Patient {
                    death: Some(d("2026-03-31")),
                    ..Patient::new("death_before_a")
                })
            },
            expect: Expect::NotInPopulation,
        },
        Case {
            // Sums of items and cost; substances are the first 9 characters; groups match
            // by prefixes of length 4 (0601) and 6 (040702); 040701 and 0304 match none.
            name: "prescribing",
            setup: |ds| {
                let n = "prescribing";
                ds.patients.push(Patient::new(n));
                ds.prescriptions.extend([
                    rx(n, "2025-04-01", "0601023A0AAABAB", 1, 2.5), // diabetes, substance 0601023A0
                    rx(n, "2025-05-01", "0601023A0AAACAC", 2, 5.0), // same substance, other product
                    rx(n, "2025-06-01", "0407020A0AAAAAA", 1, 10.0), // chronic_pain (040702), 6-char prefix
                    rx(n, "2025-07-01", "0407010H0AAAAAA", 3, 1.25), // 040701: no group
                    rx(n, "2025-08-01", "0304010G0AAAAAA", 1, 0.75), // 0304: not respiratory (0301/0302)
                    rx(n, "2025-03-31", "0301011R0AAAPAP", 1, 99.0), // out of window
                    rx(n, "2026-04-01", "0205051R0AAAAAA", 1, 99.0), // A: out of window
                ]);
            },
            expect: Expect::Features(&[
                ("rx_items_12m", I(8)),
                ("rx_cost_12m", F(19.5)),
                ("distinct_drugs_12m", I(4)),
                ("ltc_groups_12m", I(2)),
                ("total_cost_12m", F(19.5)),
            ]),
        },
        Case {
            name: "ltc_groups_three_with_two_cardiovascular_prefixes",
            setup: |ds| {
                let n = "ltc_groups_three_with_two_cardiovascular_prefixes";
                ds.patients.push(Patient::new(n));
                ds.prescriptions.extend([
                    rx(n, "2025-09-01", "0205051R0AAAAAA", 1, 1.0), // cardiovascular 0205
                    rx(n, "2025-09-01", "0212000B0AAABAB", 1, 1.0), // cardiovascular 0212: same group
                    rx(n, "2025-09-01", "0302000C0AAAAAA", 1, 1.0), // respiratory 0302
                    rx(n, "2025-09-01", "1001010J0AAAAAA", 1, 1.0), // musculoskeletal 1001
                ]);
            },
            expect: Expect::Features(&[("ltc_groups_12m", I(3)), ("distinct_drugs_12m", I(4))]),
        },
        Case {
            // Emergency spells admitted in W12: one open at A (10 bed days to A), one of 5 days
            // admitted on A-365; one admitted A-366 is out. One elective. Costs of all valid spells in W12.
            name: "spells",
            setup: |ds| {
                let n = "spells";
                ds.patients.push(Patient::new(n));
                ds.admissions.extend([
                    spell(
                        n,
                        "SP-OPEN",
                        "2026-03-22",
                        None,
                        "21",
                        Some("J189"),
                        vec![],
                        1000.0,
                    ),
                    spell(
                        n,
                        "SP-EDGE",
                        "2025-04-01",
                        Some("2025-04-06"),
                        "2A",
                        Some("N390"),
                        vec![],
                        500.0,
                    ),
                    spell(
                        n,
                        "SP-OLD",
                        "2025-03-31",
                        Some("2025-04-10"),
                        "21",
                        Some("N390"),
                        vec![],
                        700.0,
                    ),
                    spell(
                        n,
                        "SP-ELECT",
                        "2025-10-01",
                        Some("2025-10-01"),
                        "12",
                        Some("H251"),
                        vec![],
                        300.0,
                    ),
                    spell(
                        n,
                        "SP-MAT",
                        "2025-11-01",
                        Some("2025-11-03"),
                        "31",
                        Some("O800"),
                        vec![],
                        50.0,
                    ),
                    spell(
                        n,
                        "SP-AT-A",
                        "2026-04-01",
                        None,
                        "21",
                        Some("J189"),
                        vec![],
                        9999.0,
                    ),
                ]);
            },
            expect: Expect::Features(&[
                ("emergency_admissions_12m", I(2)),
                ("emergency_bed_days_12m", I(15)),
                ("elective_admissions_12m", I(1)),
                ("admission_cost_12m", F(1850.0)),
                ("total_cost_12m", F(1850.0)),
            ]),
        },
        Case {
            // Duplicated spell ids keep no copy; invalid methods and discharge before admission
            // are quarantined and not counted; an event before 1900 is quarantined.
            name: "invalid_spells",
            setup: |ds| {
                let n = "invalid_spells";
                ds.patients.push(Patient::new(n));
                ds.admissions.extend([
                    spell(
                        n,
                        "DUP-1",
                        "2025-05-01",
                        Some("2025-05-03"),
                        "21",
                        Some("J189"),
                        vec![],
                        100.0,
                    ),
                    spell(
                        n,
                        "DUP-1",
                        "2025-06-01",
                        Some("2025-06-03"),
                        "21",
                        Some("J189"),
                        vec![],
                        100.0,
                    ),
                    spell(
                        n,
                        "BAD-METHOD",
                        "2025-07-01",
                        Some("2025-07-03"),
                        "27",
                        Some("J189"),
                        vec![],
                        100.0,
                    ),
                    spell(
                        n,
                        "BAD-DISCHARGE",
                        "2025-08-01",
                        Some("2025-07-30"),
                        "21",
                        Some("J189"),
                        vec![],
                        100.0,
                    ),
                    spell(
                        n,
                        "ANCIENT",
                        "1899-12-31",
                        Some("1900-01-02"),
                        "21",
                        Some("J189"),
                        vec![],
                        100.0,
                    ),
                    spell(
                        n,
                        "GOOD",
                        "2025-09-01",
                        Some("2025-09-02"),
                        "22",
                        Some("J189"),
                        vec![],
                        100.0,
                    ),
                ]);
            },
            expect: Expect::Features(&[
                ("emergency_admissions_12m", I(1)),
                ("emergency_bed_days_12m", I(1)),
                ("admission_cost_12m", F(100.0)),
            ]),
        },
        Case {
            // msld over mld: 3, not 4.
            name: "charlson_msld_over_mld",
            setup: |ds| {
                let n = "charlson_msld_over_mld";
                ds.patients.push(Patient::new(n));
                ds.admissions.push(spell(
                    n,
                    "CH-1",
                    "2025-06-01",
                    Some("2025-06-02"),
                    "11",
                    Some("K700"),
                    vec!["K704"],
                    0.0,
                ));
            },
            expect: Expect::Features(&[("charlson_score", I(3))]),
        },
        Case {
            // A NULL list of secondary diagnoses: the primary still counts (chf, 1).
            // Regression: reading the codes as one unnest of the primary prepended to
            // the secondary list must not lose the primary where the list is NULL.
            name: "charlson_null_secondary_list_keeps_the_primary",
            setup: |ds| {
                let n = "charlson_null_secondary_list_keeps_the_primary";
                ds.patients.push(Patient::new(n));
                let mut s = spell(
                    n,
                    "CH-9",
                    "2025-06-01",
                    Some("2025-06-02"),
                    "11",
                    Some("I500"),
                    vec![],
                    0.0,
                );
                s.secondary = None;
                ds.admissions.push(s);
            },
            expect: Expect::Features(&[("charlson_score", I(1))]),
        },
        Case {
            // diabwc over diab: 2, not 3; across two spells, one outside W12 but inside W24.
            name: "charlson_diabwc_over_diab",
            setup: |ds| {
                let n = "charlson_diabwc_over_diab";
                ds.patients.push(Patient::new(n));
                ds.admissions.push(spell(
                    n,
                    "CH-2",
                    "2025-06-01",
                    Some("2025-06-02"),
                    "11",
                    Some("E109"),
                    vec![],
                    0.0,
                ));
                ds.admissions.push(spell(
                    n,
                    "CH-3",
                    "2024-04-01",
                    Some("2024-04-02"),
                    "11",
                    Some("R69"),
                    vec!["E102"],
                    0.0,
                ));
            },
            expect: Expect::Features(&[("charlson_score", I(2))]),
        },
        Case {
            // metacanc over canc: 6, not 8. chf twice counts once (1). A-731 is outside W24.
            name: "charlson_metacanc_over_canc",
            setup: |ds| {
                let n = "charlson_metacanc_over_canc";
                ds.patients.push(Patient::new(n));
                ds.admissions.push(spell(
                    n,
                    "CH-4",
                    "2025-06-01",
                    Some("2025-06-02"),
                    "21",
                    Some("C180"),
                    vec!["C787", "I500"],
                    0.0,
                ));
                ds.admissions.push(spell(
                    n,
                    "CH-5",
                    "2025-07-01",
                    Some("2025-07-02"),
                    "21",
                    Some("I509"),
                    vec![],
                    0.0,
                ));
                ds.admissions.push(spell(
                    n,
                    "CH-6",
                    "2024-03-31",
                    Some("2024-04-02"),
                    "21",
                    Some("F03"),
                    vec!["N18"],
                    0.0,
                ));
            },
            expect: Expect::Features(&[
                ("charlson_score", I(7)),
                ("emergency_admissions_12m", I(2)),
            ]),
        },
        Case {
            // Mild forms alone score their own weights: mld 1 + diab 1 + canc 2; dementia 1 (3-char prefix F03).
            name: "charlson_mild_forms_alone",
            setup: |ds| {
                let n = "charlson_mild_forms_alone";
                ds.patients.push(Patient::new(n));
                ds.admissions.push(spell(
                    n,
                    "CH-7",
                    "2024-04-01",
                    Some("2024-04-02"),
                    "11",
                    Some("K703"),
                    vec!["E119", "C509", "F039"],
                    0.0,
                ));
            },
            expect: Expect::Features(&[("charlson_score", I(5))]),
        },
        Case {
            // Opted out after A: out of everything, whatever the date.
            name: "optout_recorded_after_a",
            setup: |ds| {
                let n = "optout_recorded_after_a";
                ds.patients.push(Patient::new(n));
                ds.appointments.push(gp(n, "2025-06-01"));
                ds.admissions.push(spell(
                    n,
                    "OPT-1",
                    "2025-06-01",
                    Some("2025-06-05"),
                    "21",
                    Some("J189"),
                    vec![],
                    10.0,
                ));
                ds.admissions.push(spell(
                    n,
                    "OPT-1",
                    "2025-06-09",
                    Some("2025-06-05"),
                    "99",
                    Some("J189"),
                    vec![],
                    10.0,
                ));
                ds.optouts.push((pid(n), "ndoo", d("2026-09-01")));
                // Malformed copies of the opted-out id (upper case; padded) must not
                // reach quarantine.
                ds.appointments.push(Appt {
                    id: Some(pid(n).to_uppercase()),
                    ..gp(n, "2025-06-02")
                });
                ds.appointments.push(Appt {
                    id: Some(format!("  {}  ", pid(n))),
                    ..gp(n, "2025-06-03")
                });
            },
            expect: Expect::NotInPopulation,
        },
        Case {
            name: "emergency_twice_is_complex",
            setup: |ds| {
                let n = "emergency_twice_is_complex";
                ds.patients.push(Patient::new(n));
                ds.admissions.push(spell(
                    n,
                    "CX-1",
                    "2025-06-01",
                    Some("2025-06-02"),
                    "21",
                    Some("J189"),
                    vec![],
                    0.0,
                ));
                ds.admissions.push(spell(
                    n,
                    "CX-2",
                    "2025-08-01",
                    Some("2025-08-02"),
                    "24",
                    Some("J189"),
                    vec![],
                    0.0,
                ));
            },
            expect: Expect::Features(&[("emergency_admissions_12m", I(2))]),
        },
        Case {
            // Meets a clinical criterion (two emergency admissions) but its risk is low.
            name: "emergency_twice_affluent",
            setup: |ds| {
                let n = "emergency_twice_affluent";
                ds.patients.push(Patient {
                    imd: Some(10),
                    ..Patient::new(n)
                });
                ds.admissions.push(spell(
                    n,
                    "AF-1",
                    "2025-06-01",
                    Some("2025-06-02"),
                    "21",
                    Some("J189"),
                    vec![],
                    0.0,
                ));
                ds.admissions.push(spell(
                    n,
                    "AF-2",
                    "2025-08-01",
                    Some("2025-08-02"),
                    "21",
                    Some("J189"),
                    vec![],
                    0.0,
                ));
            },
            expect: Expect::Features(&[("emergency_admissions_12m", I(2)), ("imd_decile", I(10))]),
        },
        Case {
            // Ten substances and an emergency admission: complex. The same ten without: not.
            name: "ten_drugs_and_emergency",
            setup: |ds| {
                let n = "ten_drugs_and_emergency";
                ds.patients.push(Patient::new(n));
                ten_drugs(ds, n);
                ds.admissions.push(spell(
                    n,
                    "TD-1",
                    "2025-06-01",
                    Some("2025-06-02"),
                    "21",
                    Some("J189"),
                    vec![],
                    0.0,
                ));
            },
            expect: Expect::Features(&[
                ("distinct_drugs_12m", I(10)),
                ("emergency_admissions_12m", I(1)),
            ]),
        },
        Case {
            name: "ten_drugs_only",
            setup: |ds| {
                let n = "ten_drugs_only";
                ds.patients.push(Patient::new(n));
                ten_drugs(ds, n);
            },
            expect: Expect::Features(&[
                ("distinct_drugs_12m", I(10)),
                ("emergency_admissions_12m", I(0)),
            ]),
        },
        Case {
            // Two patients rows with one pseudo_id: both quarantined, events orphaned.
            name: "duplicate_patient",
            setup: |ds| {
                let n = "duplicate_patient";
                ds.patients.push(Patient::new(n));
                ds.patients.push(Patient {
                    practice: "A81002",
                    ..Patient::new(n)
                });
                ds.appointments.push(gp(n, "2025-06-01"));
            },
            expect: Expect::NotInPopulation,
        },
    ]
}

fn ten_drugs(ds: &mut Dataset, n: &str) {
    const CODES: [&str; 10] = [
        "0101010A0AAAAAA",
        "0101010B0AAAAAA",
        "0101010C0AAAAAA",
        "0101010D0AAAAAA",
        "0101010E0AAAAAA",
        "0101010F0AAAAAA",
        "0101010G0AAAAAA",
        "0101010H0AAAAAA",
        "0101010J0AAAAAA",
        "0101010K0AAAAAA",
    ];
    for c in CODES {
        ds.prescriptions.push(rx(n, "2025-12-01", c, 1, 1.0));
    }
}

/// Rows no patient owns, or that break a rule without a person to attach to.
fn orphans_and_malformed(ds: &mut Dataset) {
    ds.appointments.push(gp("nobody_registered", "2025-06-01"));
    ds.appointments.push(Appt {
        id: None,
        ..gp("x", "2025-06-01")
    });
    ds.appointments.push(Appt {
        id: Some("not-a-pseudo-id".into()),
        ..gp("x", "2025-06-01")
    });
    ds.appointments.push(gp("no_events", "1899-12-31"));
    ds.prescriptions.push(rx(
        "nobody_registered",
        "2025-06-01",
        "0601023A0AAABAB",
        1,
        1.0,
    ));
    ds.patients.push(Patient {
        id: None,
        ..Patient::new("x")
    });
}

fn column_value(batch: &RecordBatch, col: &str, row: usize) -> V {
    let a = batch
        .column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    if a.is_null(row) {
        return V::Null;
    }
    if let Some(x) = a.as_any().downcast_ref::<Int64Array>() {
        return V::I(x.value(row));
    }
    if let Some(x) = a.as_any().downcast_ref::<Int32Array>() {
        return V::I(x.value(row) as i64);
    }
    if let Some(x) = a.as_any().downcast_ref::<Float64Array>() {
        return V::F(x.value(row));
    }
    if let Some(x) = a.as_any().downcast_ref::<StringArray>() {
        return V::S(x.value(row).to_string());
    }
    panic!("column {col} has type {}", a.data_type());
}

fn rows_by_id(path: &Path) -> HashMap<String, (RecordBatch, usize)> {
    let mut out = HashMap::new();
    for b in read_parquet(path) {
        let ids = b
            .column_by_name("pseudo_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            if !ids.is_null(i) {
                out.insert(ids.value(i).to_string(), (b.clone(), i));
            }
        }
    }
    out
}

fn reasons(path: &Path, key: &str) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    if !path.exists() {
        return out;
    }
    for b in read_parquet(path) {
        for i in 0..b.num_rows() {
            let k = match column_value(&b, key, i) {
                V::S(s) => s,
                _ => "<null>".into(),
            };
            let V::S(r) = column_value(&b, "reason", i) else {
                panic!("reason is null")
            };
            *out.entry((k, r)).or_default() += 1;
        }
    }
    out
}

/// One run over all cases, shared by the tests of this file.
async fn run_cases() -> (std::path::PathBuf, Vec<Case>) {
    static RUN: tokio::sync::OnceCell<std::path::PathBuf> = tokio::sync::OnceCell::const_new();
    let dir = RUN
        .get_or_init(|| async { run_all_cases().await })
        .await
        .clone();
    (dir, cases())
}

async fn run_all_cases() -> std::path::PathBuf {
    let dir = scratch("features_cases");
    let cases = cases();
    let mut ds = Dataset::default();
    for c in &cases {
        (c.setup)(&mut ds);
    }
    orphans_and_malformed(&mut ds);
    let job_path = ds.write(&dir, A);
    let job = riskstrat::job::Job::load(&job_path, None).unwrap();
    riskstrat::run::run(&job).await.unwrap().dir
}

#[tokio::test]
async fn features_match_the_contract_at_every_edge() {
    let (run, cases) = run_cases().await;
    let features = rows_by_id(&run.join("features.parquet"));
    let mut failures = Vec::new();
    for c in &cases {
        let id = pid(c.name);
        match (&c.expect, features.get(&id)) {
            (Expect::NotInPopulation, None) => {}
            (Expect::NotInPopulation, Some(_)) => {
                failures.push(format!("{}: expected not in population", c.name))
            }
            (Expect::Features(_), None) => {
                failures.push(format!("{}: missing from features", c.name))
            }
            (Expect::Features(want), Some((batch, row))) => {
                for (col, v) in want.iter() {
                    let got = column_value(batch, col, *row);
                    let ok = match (&got, v.v()) {
                        (V::F(a), V::F(b)) => (a - b).abs() < 1e-9,
                        (g, w) => *g == w,
                    };
                    if !ok {
                        failures.push(format!("{}: {col} = {got:?}, expected {:?}", c.name, v.v()));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "feature mismatches:\n{}",
        failures.join("\n")
    );

    // Population: every case with Features, nobody else.
    let expected_pop = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Features(_)))
        .count();
    assert_eq!(features.len(), expected_pop);
}

/// The run's integer person key (`patients.person`, carried by valid event rows for the
/// features to group on) numbers one run's rows only: no file of the run holds it, and
/// quarantine keeps exactly the input's columns and the reason.
#[tokio::test]
async fn the_runs_person_key_is_never_written_out() {
    let (run, _) = run_cases().await;
    let columns = |file: &Path| -> Vec<String> {
        let batches = read_parquet(file);
        let schema = batches.first().expect("rows").schema();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    for table in ["patients", "appointments", "prescriptions", "admissions"] {
        let mut want: Vec<String> = riskstrat::ingest::contract::TABLES
            .iter()
            .find(|t| t.name == table)
            .expect("a contract table")
            .columns
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        want.push("reason".into());
        let file = run.join(format!("quarantine/{table}.parquet"));
        assert_eq!(columns(&file), want, "{}", file.display());
    }
    for entry in std::fs::read_dir(&run).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") && !read_parquet(&path).is_empty() {
            assert!(
                !columns(&path)
                    .iter()
                    .any(|c| c == riskstrat::ingest::contract::PERSON),
                "{}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn quarantine_and_manifest_account_for_every_row() {
    let (run, _) = run_cases().await;
    let adm = reasons(&run.join("quarantine/admissions.parquet"), "spell_id");
    let want_adm: BTreeMap<(String, String), usize> = [
        (("DUP-1", "duplicate_spell_id"), 2),
        (("BAD-METHOD", "invalid_admission_method"), 1),
        (("BAD-DISCHARGE", "discharge_before_admission"), 1),
        (("ANCIENT", "date_before_1900"), 1),
    ]
    .into_iter()
    .map(|((a, b), n)| ((a.to_string(), b.to_string()), n))
    .collect();
    assert_eq!(adm, want_adm);

    let appts = reasons(&run.join("quarantine/appointments.parquet"), "reason");
    let count = |r: &str| {
        appts
            .iter()
            .filter(|((_, x), _)| x == r)
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    assert_eq!(count("unknown_pseudo_id"), 2, "{appts:?}"); // nobody_registered + duplicate_patient's event
    assert_eq!(count("null_pseudo_id"), 1);
    assert_eq!(
        count("malformed_pseudo_id"),
        1,
        "the upper-cased and padded opted-out ids must not be here: {appts:?}"
    );
    assert_eq!(count("date_before_1900"), 1);

    let pats = reasons(&run.join("quarantine/patients.parquet"), "pseudo_id");
    let dup = pid("duplicate_patient");
    assert_eq!(pats.get(&(dup, "duplicate_pseudo_id".into())), Some(&2));
    assert_eq!(
        pats.get(&("<null>".into(), "null_pseudo_id".into())),
        Some(&1)
    );

    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["optouts"]["patients_excluded"], 1);
    // The opted-out person's rows: 1 patient, 3 appointments (one upper-cased, one
    // padded), 2 spells.
    assert_eq!(m["optouts"]["rows_excluded"], 6);
    assert_eq!(
        m["rows"]["admissions"]["quarantined_by_reason"]["duplicate_spell_id"],
        2
    );
    assert_eq!(
        m["rows"]["prescriptions"]["quarantined_by_reason"]["unknown_pseudo_id"],
        1
    );
    let r = &m["rows"]["appointments"];
    assert_eq!(
        r["read"].as_u64().unwrap(),
        r["excluded_optout"].as_u64().unwrap()
            + r["valid"].as_u64().unwrap()
            + r["quarantined"].as_u64().unwrap()
    );
    assert_eq!(m["as_of"], A);

    // The opted-out person is in no file of the run folder, in any case of hex.
    let opted = pid("optout_recorded_after_a");
    assert_no_ids_in(&run, &[opted].into_iter().collect());
}

#[tokio::test]
async fn complex_needs_cohort_follows_its_definition() {
    let (run, _) = run_cases().await;
    let cohort = rows_by_id(&run.join("cohort_complex_needs.parquet"));
    // The saved model ranks by 0.3 drugs + 0.8 LTC groups + 1.0 emergency - 0.5 IMD;
    // of 19 people, the top ceil(0.35 x 19) = 7 are very_high or high. Of those,
    // `prescribing` (2 groups, 4 drugs, no admission) meets no clinical criterion, and
    // `emergency_twice_affluent` meets one but its risk is low (IMD decile 10).
    let members = [
        "emergency_twice_is_complex",
        "ten_drugs_and_emergency",
        "ten_drugs_only",
        "ltc_groups_three_with_two_cardiovascular_prefixes",
        "spells",
        "charlson_metacanc_over_canc",
    ];
    let mut got: Vec<String> = cohort.keys().cloned().collect();
    got.sort();
    let mut want: Vec<String> = members.iter().map(|n| pid(n)).collect();
    want.sort();
    assert_eq!(got, want);
}

/// Regression: money was summed as floating point, in whatever order the rows reached
/// the aggregates, so costs (and the model fitted on them, and the service evaluation's
/// near-tied matches) differed in their last bits from run to run; ten 0.1s made
/// 0.9999999999999999. Summed in whole micropounds, the sums are exact.
#[tokio::test]
async fn money_sums_are_exact_in_any_order() {
    let dir = scratch("features_money");
    let n = "money";
    let mut ds = Dataset::default();
    ds.patients.push(Patient::new(n));
    ds.appointments.push(gp(n, "2025-10-01"));
    ds.optouts
        .push((pid("someone_else"), "ndoo", d("2026-01-01")));
    for day in 1..=10 {
        let date = format!("2025-10-{day:02}");
        ds.prescriptions
            .push(rx(n, &date, "0407010H0AAAAAA", 1, 0.1));
    }
    for (id, date, cost) in [("SP-M1", "2025-11-01", 0.1), ("SP-M2", "2025-12-01", 0.2)] {
        let spell = spell(n, id, date, Some(date), "11", Some("J189"), vec![], cost);
        ds.admissions.push(spell);
    }
    let job = riskstrat::job::Job::load(&ds.write(&dir, A), None).unwrap();
    let run = riskstrat::run::run(&job).await.unwrap().dir;
    let features = rows_by_id(&run.join("features.parquet"));
    let (batch, row) = &features[&pid(n)];
    for (column, want) in [
        ("rx_cost_12m", 1.0f64),
        ("admission_cost_12m", 0.3),
        ("total_cost_12m", 1.3),
    ] {
        let V::F(got) = column_value(batch, column, *row) else {
            panic!("{column} is not a float")
        };
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{column}: {got:?}, not {want:?}"
        );
    }
}

#[tokio::test]
async fn scores_tiers_and_reasons_follow_the_model() {
    let (run, cases) = run_cases().await;
    let scores = rows_by_id(&run.join("scores.parquet"));
    assert_eq!(
        scores.len(),
        cases
            .iter()
            .filter(|c| matches!(c.expect, Expect::Features(_)))
            .count()
    );
    let get = |name: &str, col: &str| {
        let (b, i) = &scores[&pid(name)];
        column_value(b, col, *i)
    };
    // risk = sigmoid(-5 - 0.5*3 + 0.3*10 + 0.8*0 + 1.0*0) for ten_drugs_only.
    let want = 1.0 / (1.0 + (-(-5.0 - 1.5 + 3.0f64)).exp());
    let V::F(risk) = get("ten_drugs_only", "risk") else {
        panic!()
    };
    assert!((risk - want).abs() < 1e-12, "{risk} vs {want}");
    // Top 4 (ceil(0.2 x 19)) are very_high; the next 3 high; the rest low.
    let tiers: Vec<String> = scores
        .values()
        .map(|(b, i)| match column_value(b, "tier", *i) {
            V::S(s) => s,
            _ => panic!(),
        })
        .collect();
    assert_eq!(tiers.iter().filter(|t| *t == "very_high").count(), 4);
    assert_eq!(tiers.iter().filter(|t| *t == "high").count(), 3);
    assert_eq!(
        get("ten_drugs_and_emergency", "tier"),
        V::S("very_high".into())
    );
    assert_eq!(get("emergency_twice_affluent", "tier"), V::S("low".into()));
    // The feature that raises ten_drugs_only's risk most is its drugs, by 0.3 x (10 - mean).
    assert_eq!(
        get("ten_drugs_only", "reason_1"),
        V::S("distinct_drugs_12m".into())
    );
    let features = rows_by_id(&run.join("features.parquet"));
    let drugs: Vec<f64> = features
        .values()
        .map(|(b, i)| match column_value(b, "distinct_drugs_12m", *i) {
            V::I(x) => x as f64,
            _ => panic!(),
        })
        .collect();
    let mean = drugs.iter().sum::<f64>() / drugs.len() as f64;
    let V::F(c) = get("ten_drugs_only", "reason_1_contribution") else {
        panic!()
    };
    assert!((c - 0.3 * (10.0 - mean)).abs() < 1e-12);
    // No events, and deprivation unknown (taken as decile 5, above the mean of 3.45):
    // nothing raises the risk, so no reasons.
    assert_eq!(get("null_deprivation_and_lsoa", "reason_1"), V::Null);
    // Decile 3 is below the mean: the only thing raising no_events's risk.
    assert_eq!(get("no_events", "reason_1"), V::S("imd_decile".into()));
    assert_eq!(get("no_events", "reason_2"), V::Null);
}

/// Regression (issue 16, seventh round): the population joins each built-in feature
/// file's rows on one integer, `__packed` (person x dates + the date's index), which
/// DataFusion can join by array lookup. It joined on `(as_of, person)`, two columns
/// hashed into a table that at 10,000,000 people no longer fitted any cache.
#[tokio::test]
async fn population_joins_each_part_on_one_integer_key() {
    use riskstrat::features::registry::{FEATURES, Source};
    let dir = scratch("features_packed_joins");
    let job = riskstrat::job::Job::load(&small_dataset().write(&dir, A), None).unwrap();
    let rc = riskstrat::run::context::RunContext::checking(&job, riskstrat::clock::Clock::system())
        .await
        .unwrap();
    riskstrat::run::stages::load(&rc, riskstrat::run::stages::Checks::Now)
        .await
        .unwrap();
    let sql = riskstrat::sql::SqlSource { override_dir: None };
    let dates = [job.as_of, job.as_of - chrono::Days::new(365)];
    let df = riskstrat::features::plan_at(
        &rc.ctx,
        &sql,
        &riskstrat::sql::Params::at(job.as_of),
        &dates,
        &[],
    )
    .await
    .unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    let joins: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("HashJoinExec") && l.contains("__key"))
        .collect();
    let mut files: Vec<&str> = FEATURES
        .iter()
        .filter_map(|f| match f.source {
            Source::Sql(s) => Some(s),
            _ => None,
        })
        .collect();
    files.sort();
    files.dedup();
    assert_eq!(joins.len(), files.len(), "a join per feature file:\n{text}");
    for j in joins {
        assert!(j.contains("__packed") && !j.contains("__date"), "{j}");
    }
    // Everyone at both dates once (p0 opted out): 19 people x 2 dates.
    let rows: usize = df
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 38);
}
