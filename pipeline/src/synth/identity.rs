//! `synth --identifiable`: the same synthetic population as identifiable extracts, as a
//! GP system and SUS would send them to the gate: `nhs_number` (written with or
//! without spaces) in place of `pseudo_id`, and patients with a name, date of birth,
//! address, postcode and phone. Pseudonymising them with the synthetic key gives back
//! exactly the pseudonymised tables `synth` writes for the same seed; rows that
//! break the pseudo_id rules there carry broken NHS numbers here.
//!
//! Names come from short lists, phones from Ofcom's range reserved for drama
//! (07700 900000-900999), postcodes and streets are made up: nothing here is anyone.

use super::chunk::ChunkOut;
use super::{seed_key, synthetic_nhs_number};
use crate::error::Result;
use crate::governance::pseudonym::{Key, pseudo_id};
use crate::ingest::contract::{self, Table};
use crate::session::is_pseudo_id;
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Builder, Int32Array, RecordBatch, StringArray, StringBuilder,
};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

const GIVEN: &[&str] = &[
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Freya", "Grace", "Sophia",
    "Margaret", "Patricia", "Susan", "Janet", "Aisha", "Priya", "Fatima", "Zofia", "Siobhan",
    "Eleanor", "Noah", "Oliver", "George", "Arthur", "Muhammad", "Leo", "Harry", "Oscar", "Jack",
    "Thomas", "David", "John", "Peter", "Michael", "Raj", "Tomasz", "Kwame", "Dylan", "Callum",
    "Hamish",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Thomas",
    "Clarke",
    "Jackson",
    "Wood",
    "Harris",
    "Edwards",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Hughes",
    "Moore",
    "Clark",
    "King",
    "Harrison",
    "Lewis",
    "Baker",
    "Lee",
    "Allen",
    "Morris",
    "Khan",
    "Scott",
    "Watson",
    "Davis",
    "Parker",
    "James",
    "Bennett",
    "Young",
    "Phillips",
    "Richardson",
    "Mitchell",
    "Begum",
    "Nowak",
    "Okafor",
    "Murphy",
    "Kaur",
    "Ali",
    "Singh",
    "Kowalski",
    "Mensah",
    "Oduya",
];
const STREETS: &[&str] = &[
    "Mill",
    "Church",
    "Station",
    "Victoria",
    "Park",
    "Green",
    "Manor",
    "Kingsway",
    "Highfield",
    "Albert",
    "Chapel",
    "School",
    "Moor",
    "Beech",
    "Willow",
    "Orchard",
    "Meadow",
    "Castle",
];
const KINDS: &[&str] = &[
    "Road", "Street", "Lane", "Close", "Avenue", "Way", "Terrace",
];
const TOWNS: &[(&str, &str)] = &[
    ("Leeds", "LS"),
    ("Bradford", "BD"),
    ("Wakefield", "WF"),
    ("Halifax", "HX"),
    ("Huddersfield", "HD"),
    ("Harrogate", "HG"),
];
const LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

/// The vault key of a synthetic population, derived from the seed like its
/// pseudonymisation key. Real keys are random.
pub fn synthetic_vault_key(seed: u64) -> Key {
    seed_key(b"riskstrat synthetic vault key v1", seed)
}

/// The cell key secret of a synthetic deployment (commissioner answers' perturbation).
pub fn synthetic_cell_key(seed: u64) -> Key {
    seed_key(b"riskstrat synthetic cell key v1", seed)
}

/// An index beyond any synthetic person (at most 50 million), stable per string.
fn stranger(id: &str) -> u64 {
    let h = Sha256::digest(id.as_bytes());
    70_000_000 + u64::from_le_bytes(h[..8].try_into().unwrap()) % 9_000_000
}

/// An NHS number as a source system might write it: mostly plain, some spaced, a few
/// hyphenated.
fn written(nhs: &str, i: u64) -> String {
    match i % 10 {
        0..=6 => nhs.to_string(),
        7 | 8 => format!("{} {} {}", &nhs[..3], &nhs[3..6], &nhs[6..]),
        _ => format!("{}-{}-{}", &nhs[..3], &nhs[3..6], &nhs[6..]),
    }
}

/// The NHS number behind a generated pseudo_id cell. People of this chunk get theirs;
/// a well-formed id nobody has (an orphan) gets a valid number of nobody; a
/// malformed id gets a number that fails the check (wrong check digit, or nine
/// digits), so that it lands in the gate's quarantine.
fn nhs_for(id: &str, people: &HashMap<String, u64>) -> String {
    if let Some(&i) = people.get(id) {
        return written(&synthetic_nhs_number(i), i);
    }
    let k = stranger(id);
    let nhs = synthetic_nhs_number(k);
    if is_pseudo_id(id) {
        return nhs;
    }
    if k.is_multiple_of(2) {
        let last = nhs.as_bytes()[9] - b'0';
        format!("{}{}", &nhs[..9], (last + 1) % 10)
    } else {
        nhs[..9].to_string()
    }
}

/// Replace column 0 (pseudo_id) by nhs_number under the identifiable schema.
fn to_nhs(
    batch: &RecordBatch,
    table: &Table,
    people: &HashMap<String, u64>,
) -> Result<RecordBatch> {
    let ids: &StringArray = column(batch, 0);
    let nhs: StringArray = ids
        .iter()
        .map(|v| v.map(|id| nhs_for(id, people)))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[0] = Arc::new(nhs);
    if table.name == contract::PATIENTS.name {
        columns.extend(identities(ids, batch, people));
    }
    Ok(RecordBatch::try_new(table.identifiable_schema(), columns)?)
}

/// Column `i` of a batch `synth` built, as the array type it was built as.
fn column<T: Array + 'static>(batch: &RecordBatch, i: usize) -> &T {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<T>()
        .expect("the type synth built the column as")
}

/// given_name, family_name, date_of_birth, address, postcode, phone for each patients
/// row, in the order of `vault::IDENTITY_COLUMNS`. The same person always gets
/// the same identity (a duplicate row repeats it).
fn identities(
    ids: &StringArray,
    batch: &RecordBatch,
    people: &HashMap<String, u64>,
) -> Vec<ArrayRef> {
    let yob: &Int32Array = column(batch, 1);
    let mut given = StringBuilder::new();
    let mut family = StringBuilder::new();
    let mut dob = Date32Builder::new();
    let mut address = StringBuilder::new();
    let mut postcode = StringBuilder::new();
    let mut phone = StringBuilder::new();
    for r in 0..batch.num_rows() {
        let who = if ids.is_valid(r) {
            let id = ids.value(r);
            people.get(id).copied().unwrap_or_else(|| stranger(id))
        } else {
            stranger(&format!("row{r}"))
        };
        let mut rng = ChaCha8Rng::seed_from_u64(who);
        rng.set_stream(7);
        given.append_value(GIVEN.choose(&mut rng).unwrap());
        family.append_value(FAMILY.choose(&mut rng).unwrap());
        let day = rng.random_range(0..365);
        let y = yob.value(r);
        let jan1 = chrono::NaiveDate::from_ymd_opt(y, 1, 1).unwrap_or_default();
        dob.append_value(crate::sql::date32(jan1) + day);
        let (town, area) = TOWNS.choose(&mut rng).unwrap();
        address.append_value(format!(
            "{} {} {}, {town}",
            rng.random_range(1..240),
            STREETS.choose(&mut rng).unwrap(),
            KINDS.choose(&mut rng).unwrap()
        ));
        let l = |rng: &mut ChaCha8Rng| *LETTERS.choose(rng).unwrap() as char;
        postcode.append_value(format!(
            "{area}{} {}{}{}",
            rng.random_range(1..30),
            rng.random_range(1..10),
            l(&mut rng),
            l(&mut rng)
        ));
        phone.append_value(format!("07700 900{:03}", rng.random_range(0..1000)));
    }
    vec![
        Arc::new(given.finish()),
        Arc::new(family.finish()),
        Arc::new(dob.finish()),
        Arc::new(address.finish()),
        Arc::new(postcode.finish()),
        Arc::new(phone.finish()),
    ]
}

/// A chunk's tables as identifiable extracts.
pub(super) fn identify(chunk: ChunkOut, key: &Key, first: u64, n: u64) -> Result<ChunkOut> {
    let people: HashMap<String, u64> = (first..first + n)
        .map(|i| (pseudo_id(key, &synthetic_nhs_number(i)), i))
        .collect();
    Ok(ChunkOut {
        people: chunk.people,
        truth: chunk.truth.clone(),
        patients: to_nhs(&chunk.patients, &contract::PATIENTS, &people)?,
        appointments: to_nhs(&chunk.appointments, &contract::APPOINTMENTS, &people)?,
        prescriptions: to_nhs(&chunk.prescriptions, &contract::PRESCRIPTIONS, &people)?,
        admissions: to_nhs(&chunk.admissions, &contract::ADMISSIONS, &people)?,
        optouts: to_nhs(&chunk.optouts, &contract::OPTOUTS, &people)?,
        services: to_nhs(&chunk.services, &contract::SERVICES, &people)?,
    })
}

/// A care-team registry for the synthetic practices: the first half served by a north
/// team, the rest by a south team (one team when there is one practice).
pub fn teams_toml(practices: &[String]) -> String {
    let half = practices.len().div_ceil(2);
    let list = |p: &[String]| {
        p.iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "# Care-team registry (DATA_CONTRACT.md) for the synthetic practices.\n\n[[team]]\nid = \"T01\"\nname = \"North locality complex care team\"\npractices = [{}]\nmembers = [\"gp.north.1\", \"nurse.north.2\"]\n",
        list(&practices[..half])
    );
    if practices.len() > half {
        s.push_str(&format!(
            "\n[[team]]\nid = \"T02\"\nname = \"South locality complex care team\"\npractices = [{}]\nmembers = [\"gp.south.1\"]\n",
            list(&practices[half..])
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::pseudonym::normalise_nhs_number;

    #[test]
    fn malformed_ids_get_failing_numbers_and_orphans_valid_ones() {
        let people = HashMap::from([("a".repeat(32), 5u64)]);
        assert_eq!(
            normalise_nhs_number(&nhs_for(&"a".repeat(32), &people)).unwrap(),
            synthetic_nhs_number(5)
        );
        let orphan = "0123456789abcdef0123456789abcdef";
        assert!(normalise_nhs_number(&nhs_for(orphan, &people)).is_ok());
        for bad in ["0123456789ABCDEF0123456789ABCDEF", "0123-x", "zz"] {
            assert!(
                normalise_nhs_number(&nhs_for(bad, &people)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn written_forms_normalise_back() {
        for i in 0..20 {
            let n = synthetic_nhs_number(i);
            assert_eq!(normalise_nhs_number(&written(&n, i)).unwrap(), n);
        }
    }
}
