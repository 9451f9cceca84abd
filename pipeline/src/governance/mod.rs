//! Information governance: the rules that protect people, each small and separate.
//! The gate's workflows that apply them (`pseudonymise.rs`, `gate.rs`, `feedback.rs`)
//! are at the top of the crate, beside `run` and `serve`.
//!
//! - `optouts`: the one opt-out rule.
//! - `pseudonym`: NHS number checks, pseudonyms and key files.
//! - `vault`: the encrypted identity vault.
//! - `teams`: the care-team registry and approvals.
//! - `audit`: the hash-chained log of every approval, release, refusal and import.
//! - `cell_key`: record keys, cell keys and the perturbation table (the cell key method).
//! - `disclosure_control`: what a commissioner's query may return.

pub mod audit;
pub mod cell_key;
pub mod disclosure_control;
pub mod optouts;
pub mod pseudonym;
pub mod teams;
pub mod vault;

use crate::bad_input;
use crate::durable::absolute;
use crate::error::Result;
use std::path::Path;

/// Refuse a key, vault or gate-side file placed inside a folder meant for analysts or
/// care teams: secrets never sit next to the data they protect.
pub fn refuse_inside(path: &Path, folder: &Path, flag: &str) -> Result<()> {
    if absolute(path).starts_with(absolute(folder)) {
        return Err(bad_input!(
            "{flag} {}: must not sit inside {}; keep keys, the vault and gate-side files outside the data folders",
            path.display(),
            folder.display()
        ));
    }
    Ok(())
}

/// Refuse `path` (a file or folder a command replaces whole) where it is, holds or
/// sits inside `other`: replacing it would destroy `other` (regression: `pseudonymise
/// --quarantine keys` deleted both keys, `--vault` an input extract).
pub fn refuse_overlap(path: &Path, flag: &str, other: &Path, other_flag: &str) -> Result<()> {
    let (a, b) = (absolute(path), absolute(other));
    if a.starts_with(&b) || b.starts_with(&a) {
        return Err(bad_input!(
            "{flag} {}: overlaps {other_flag} {} (is it, holds it or sits inside it), and {flag} is replaced whole; name a separate path",
            path.display(),
            other.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_inside_a_folder_are_refused_even_before_they_exist() {
        let dir = std::env::temp_dir().join(format!("rs-inside-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        assert!(refuse_inside(&dir.join("data/k.key"), &dir.join("data"), "--key").is_err());
        assert!(refuse_inside(&dir.join("data/./x/../k.key"), &dir.join("data"), "--key").is_err());
        assert!(refuse_inside(&dir.join("k.key"), &dir.join("data"), "--key").is_ok());
        // A sibling whose name starts the same is not inside.
        assert!(refuse_inside(&dir.join("data2/k.key"), &dir.join("data"), "--key").is_ok());
        // Overlap goes both ways; siblings do not overlap.
        let o = |a: &str, b: &str| refuse_overlap(&dir.join(a), "--a", &dir.join(b), "--b");
        assert!(o("keys", "keys/k.key").is_err());
        assert!(o("keys/k.key", "keys").is_err());
        assert!(o("gate", "gate").is_err());
        assert!(o("gate", "gate2").is_ok());
        // Regression (code review of 2026-12-07): a `..` after a folder not yet made
        // hid that the path was the keys' folder.
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        assert!(o("new/../keys", "keys/k.key").is_err());
        assert!(o("new/./../keys/x", "keys").is_err());
        assert!(o("new/../keys2", "keys").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
