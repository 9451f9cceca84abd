//! Pseudonyms and the keys behind them. An NHS number is normalised (white space,
//! hyphens and invisible format characters removed, exactly 10 ASCII digits) and
//! checked with modulus 11; its
//! pseudonym is the first 16 bytes of HMAC-SHA256(key, the 10 digits), lowercase hex.
//! Key files hold 32 random bytes as 64 hex characters on one line, and must not be
//! readable by group or others. Keys are never logged: `Key`'s Debug hides them.

use crate::bad_input;
use crate::error::Result;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NhsNumberProblem {
    Empty,
    NotTenDigits,
    CheckDigit,
}

impl NhsNumberProblem {
    /// The quarantine reason code.
    pub fn reason(self) -> &'static str {
        match self {
            NhsNumberProblem::Empty => "null_nhs_number",
            NhsNumberProblem::NotTenDigits => "malformed_nhs_number",
            NhsNumberProblem::CheckDigit => "invalid_nhs_number_check_digit",
        }
    }
}

/// The 10 digits of a valid NHS number, or why it is not one.
pub fn normalise_nhs_number(raw: &str) -> Result<String, NhsNumberProblem> {
    // Regression: a number ending in `\r` (a CSV step's line ending), a tab or a
    // no-break space was malformed, so an opt-out holding one matched no one.
    let ignored = |c: char| c.is_whitespace() || c == '-' || c == '\u{feff}' || c == '\u{200b}';
    let digits: String = raw.chars().filter(|c| !ignored(*c)).collect();
    if digits.is_empty() {
        return Err(NhsNumberProblem::Empty);
    }
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NhsNumberProblem::NotTenDigits);
    }
    let d: Vec<u32> = digits.bytes().map(|b| (b - b'0') as u32).collect();
    let sum: u32 = (0..9).map(|i| d[i] * (10 - i as u32)).sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return Err(NhsNumberProblem::CheckDigit),
        c => c,
    };
    if check != d[9] {
        return Err(NhsNumberProblem::CheckDigit);
    }
    Ok(digits)
}

/// 32 secret bytes. Debug and Display never show them.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }
    /// 32 bytes from the operating system's generator (through rand's thread RNG,
    /// a CSPRNG seeded from it).
    pub fn random() -> Self {
        Key(rand::random())
    }
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Read a key file, refusing one that group or others can read.
    pub fn read_file(path: &Path) -> Result<Key> {
        let meta = std::fs::metadata(path)
            .map_err(|e| bad_input!("key file {}: cannot read it ({e})", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(bad_input!(
                    "key file {}: readable by group or others (mode {:o}); run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad_input!("key file {}: cannot read it ({e})", path.display()))?;
        let hex_text = text.trim();
        let bytes = hex::decode(hex_text)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                // Never echo the file's content: it may be a key with a typo.
                bad_input!(
                    "key file {}: must hold 32 bytes as 64 hex characters on one line",
                    path.display()
                )
            })?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes);
        if !looks_random(&k) {
            return Err(bad_input!(
                "key file {}: its 32 bytes are too regular to be a random key (for example all zero); make one with `riskstrat keygen`",
                path.display()
            ));
        }
        Ok(Key(k))
    }

    /// Write a new key file readable by its owner only.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| {
            bad_input!(
                "key file {}: cannot create it ({e}); it must not exist already",
                path.display()
            )
        })?;
        writeln!(f, "{}", hex::encode(self.0))?;
        f.sync_all()?;
        Ok(())
    }
}

/// Whether 32 bytes could have come from a random generator: at least 16 distinct
/// values (32 random bytes have about 30; fewer than 16 has a chance below 1e-20).
/// Regression: an all-zero key was accepted, and anyone could compute its pseudonyms.
fn looks_random(bytes: &[u8; 32]) -> bool {
    let distinct: std::collections::BTreeSet<u8> = bytes.iter().copied().collect();
    distinct.len() >= 16
}

/// Whether `s` is a pseudo_id as the contract writes one: 32 lowercase hex characters.
pub fn is_pseudo_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The contract's pseudonym of a normalised NHS number.
pub fn pseudo_id(key: &Key, nhs_number: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(nhs_number.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_nhs_number_is_judged_as_the_contract_says() {
        let text = include_str!("../../../data/reference/nhs_numbers.csv");
        let mut n = 0;
        for line in text.lines().skip(1) {
            let (value, valid) = line.rsplit_once(',').unwrap();
            let want = valid.trim() == "true";
            assert_eq!(normalise_nhs_number(value).is_ok(), want, "{value:?}");
            n += 1;
        }
        assert_eq!(n, 220);
    }

    #[test]
    fn normalises_spaces_and_hyphens() {
        assert_eq!(normalise_nhs_number("943 476 5919").unwrap(), "9434765919");
        assert_eq!(normalise_nhs_number("943-476-5919").unwrap(), "9434765919");
        assert_eq!(normalise_nhs_number(""), Err(NhsNumberProblem::Empty));
        assert_eq!(
            normalise_nhs_number("943476591"),
            Err(NhsNumberProblem::NotTenDigits)
        );
        assert_eq!(
            normalise_nhs_number("9434765911"),
            Err(NhsNumberProblem::CheckDigit)
        );
        for odd in [
            "9434765919\r",
            "\t9434765919",
            "943\u{a0}476\u{a0}5919",
            "\u{feff}9434765919",
        ] {
            assert_eq!(normalise_nhs_number(odd).unwrap(), "9434765919", "{odd:?}");
        }
    }

    #[test]
    fn pseudonyms_match_python_hmac() {
        // tests/fixtures/pseudonyms.csv, from tests/fixtures/make_pseudonyms.py.
        let text = include_str!("../../../tests/fixtures/pseudonyms.csv");
        let mut n = 0;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let mut k = [0u8; 32];
            k.copy_from_slice(&hex::decode(f[0]).unwrap());
            assert_eq!(pseudo_id(&Key(k), f[1]), f[2]);
            n += 1;
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn key_files_must_be_private() {
        let dir = std::env::temp_dir().join(format!("rs-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let _ = std::fs::remove_file(&path);
        let key = Key::random();
        key.write_file(&path).unwrap();
        assert_eq!(Key::read_file(&path).unwrap().bytes(), key.bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = Key::read_file(&path).unwrap_err();
            assert!(e.message.contains("chmod 600"), "{}", e.message);
            assert_eq!(format!("{:?}", Key([7; 32])), "Key(..)");
        }
        // Regression: all-zero and one-byte keys were accepted.
        for weak in [[0u8; 32], [7; 32]] {
            let _ = std::fs::remove_file(&path);
            Key(weak).write_file(&path).unwrap();
            let e = Key::read_file(&path).unwrap_err();
            assert!(e.message.contains("riskstrat keygen"), "{}", e.message);
            assert!(!e.message.contains("0000"), "{}", e.message);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
