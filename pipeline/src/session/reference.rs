//! The session's reference data: the code lists (long-term condition BNF groups,
//! Charlson ICD-10 codes) as lookups and tables, admission methods, and the age bands.

use crate::error::Result;
use crate::ingest::contract::{ELECTIVE_METHODS, EMERGENCY_METHODS, OTHER_VALID_METHODS};
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use std::sync::Arc;

pub const LTC_BNF_GROUPS_CSV: &str = include_str!("../../../data/reference/ltc_bnf_groups.csv");
pub const CHARLSON_CSV: &str = include_str!("../../../data/reference/charlson_quan2005_icd10.csv");

/// The label of an age's band: the bands of the service evaluation's matching
/// (`riskstrat_models::index_matching::AGE_BAND_STARTS`), used for the model's
/// subgroups and, through the `age_band` UDF, for the views. One set of bands, labelled
/// here only.
pub fn age_band(age: i64) -> &'static str {
    use riskstrat_models::index_matching::{AGE_BAND_STARTS, age_band};
    const LABELS: [&str; AGE_BAND_STARTS.len()] =
        ["0-17", "18-44", "45-64", "65-74", "75-84", "85+"];
    LABELS[age_band(age.clamp(0, i64::from(i32::MAX)) as i32) as usize]
}

/// A code list as a prefix lookup: a code's category is the one whose prefix it starts
/// with. Prefixes of different categories must not nest, so that a code has at most
/// one category and counting distinct categories counts them exactly.
#[derive(Debug, Clone)]
pub struct PrefixLookup {
    by_prefix: std::collections::HashMap<String, String>,
    /// Distinct prefix lengths, longest first.
    lengths: Vec<usize>,
}

impl PrefixLookup {
    /// From (category, prefix) pairs; `what` names the list in errors.
    pub fn new(pairs: &[(String, String)], what: &str) -> Result<Self> {
        for (ca, pa) in pairs {
            for (cb, pb) in pairs {
                if ca != cb && pa.starts_with(pb.as_str()) {
                    return Err(crate::error::Error::failed(format!(
                        "{what}: prefix {pa} ({ca}) lies inside prefix {pb} ({cb}): a code would be in two categories"
                    )));
                }
            }
        }
        let mut lengths: Vec<usize> = pairs.iter().map(|p| p.1.len()).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Ok(Self {
            by_prefix: pairs.iter().map(|(c, p)| (p.clone(), c.clone())).collect(),
            lengths,
        })
    }

    pub fn ltc_groups() -> Result<Self> {
        let rows = parse_csv(LTC_BNF_GROUPS_CSV);
        if let Some(r) = rows.iter().find(|r| r[1].len() > 9) {
            // features/prescriptions.sql matches groups on 9-character substances.
            return Err(crate::error::Error::failed(format!(
                "ltc_bnf_groups.csv: prefix {} is longer than a chemical substance (9 characters)",
                r[1]
            )));
        }
        let pairs: Vec<_> = rows
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        Self::new(&pairs, "ltc_bnf_groups.csv")
    }

    pub fn charlson() -> Result<Self> {
        let pairs: Vec<_> = parse_csv(CHARLSON_CSV)
            .into_iter()
            .map(|r| (r[0].clone(), r[3].clone()))
            .collect();
        Self::new(&pairs, "charlson_quan2005_icd10.csv")
    }

    /// The distinct categories, sorted.
    pub fn categories(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.by_prefix.values().map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    pub fn category(&self, code: &str) -> Option<&str> {
        self.lengths
            .iter()
            .filter_map(|&n| code.get(..n))
            .find_map(|p| self.by_prefix.get(p).map(String::as_str))
    }
}

/// The reference tables, by name: `ltc_bnf_groups`, `charlson_codes`, `admission_methods`.
pub(super) fn tables() -> Result<Vec<(&'static str, RecordBatch)>> {
    let mut out = Vec::new();
    let ltc = parse_csv(LTC_BNF_GROUPS_CSV);
    let batch = RecordBatch::try_from_iter(vec![
        ("ltc_group", strings(ltc.iter().map(|r| r[0].as_str()))),
        ("bnf_prefix", strings(ltc.iter().map(|r| r[1].as_str()))),
    ])?;
    out.push(("ltc_bnf_groups", batch));

    let ch = parse_csv(CHARLSON_CSV);
    let weights: Int32Array = ch.iter().map(|r| r[2].parse::<i32>().ok()).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("condition", strings(ch.iter().map(|r| r[0].as_str()))),
        ("description", strings(ch.iter().map(|r| r[1].as_str()))),
        ("weight", Arc::new(weights) as ArrayRef),
        ("icd10_prefix", strings(ch.iter().map(|r| r[3].as_str()))),
    ])?;
    out.push(("charlson_codes", batch));

    let methods: Vec<(&str, &str)> = EMERGENCY_METHODS
        .iter()
        .map(|m| (*m, "emergency"))
        .chain(ELECTIVE_METHODS.iter().map(|m| (*m, "elective")))
        .chain(OTHER_VALID_METHODS.iter().map(|m| (*m, "other")))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("code", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, false),
        ])),
        vec![
            strings(methods.iter().map(|m| m.0)),
            strings(methods.iter().map(|m| m.1)),
        ],
    )?;
    out.push(("admission_methods", batch));
    Ok(out)
}

fn strings<'a>(it: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(it.map(Some).collect::<StringArray>())
}

/// The reference CSVs are simple (no quoted commas): header skipped, fields trimmed.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ltc_groups_match_by_prefix_of_any_length() {
        let p = PrefixLookup::ltc_groups().unwrap();
        assert_eq!(p.category("0601023A0AAABAB"), Some("diabetes"));
        assert_eq!(p.category("0407020A0AAAAAA"), Some("chronic_pain"));
        assert_eq!(p.category("0407010H0AAAAAA"), None);
        assert_eq!(p.category("0304010G0AAAAAA"), None);
        assert_eq!(p.category("0212000B0AAABAB"), Some("cardiovascular"));
        assert_eq!(p.category("06"), None);
    }

    #[test]
    fn charlson_conditions_match_by_prefix() {
        let p = PrefixLookup::charlson().unwrap();
        assert_eq!(p.category("K704"), Some("msld"));
        assert_eq!(p.category("K703"), Some("mld"));
        assert_eq!(p.category("C787"), Some("metacanc"));
        assert_eq!(p.category("C18"), Some("canc"));
        assert_eq!(p.category("I2"), None);
    }

    #[test]
    fn nested_prefixes_of_different_categories_are_refused() {
        let pairs = [
            ("a".to_string(), "I2".to_string()),
            ("b".to_string(), "I21".to_string()),
        ];
        assert!(PrefixLookup::new(&pairs, "test").is_err());
    }

    #[test]
    fn reference_tables_load_whole() {
        assert_eq!(parse_csv(LTC_BNF_GROUPS_CSV).len(), 16);
        let ch = parse_csv(CHARLSON_CSV);
        assert_eq!(ch.len(), 289);
        assert!(
            ch.iter()
                .all(|r| r.len() == 4 && r[2].parse::<i32>().is_ok())
        );
    }
}
