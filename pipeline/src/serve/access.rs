//! The commissioner access file of `serve`: who may connect and which jobs each may
//! see. Tokens are stored only as SHA-256 hex, so the file discloses no token; the
//! server hashes what a client presents and looks the hash up.
//!
//! ```toml
//! [[token]]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! name = "commissioning-team"
//! role = "commissioner"
//! jobs = ["complex-needs"]
//! ```

use crate::bad_input;
use crate::error::Result;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// The only role there is: commissioners see the views through disclosure control.
pub const COMMISSIONER: &str = "commissioner";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    sha256: String,
    name: String,
    role: String,
    jobs: Vec<String>,
}

/// One token's grant: the name it is audited under and the jobs it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub jobs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Access {
    by_hash: HashMap<[u8; 32], Grant>,
}

/// SHA-256 of a token, as stored in the access file.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Access {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad_input!("--access {}: cannot read it ({e})", path.display()))?;
        Self::parse(&text).map_err(|e| e.context(format!("--access {}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| bad_input!("{e}"))?;
        if file.token.is_empty() {
            return Err(bad_input!(
                "no [[token]] entries: add one per commissioner (sha256, name, role, jobs)"
            ));
        }
        let mut by_hash = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, e) in file.token.into_iter().enumerate() {
            let at = format!("[[token]] {} ({:?})", i + 1, e.name);
            let hash: [u8; 32] = hex::decode(e.sha256.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    bad_input!(
                        "{at}: sha256 must be 64 hex digits, the SHA-256 of the token (e.g. `printf %s \"$TOKEN\" | sha256sum`), never the token itself"
                    )
                })?;
            if e.name.trim().is_empty() {
                return Err(bad_input!(
                    "[[token]] {}: name is empty; name the team (it is what the audit log records)",
                    i + 1
                ));
            }
            if !names.insert(e.name.clone()) {
                return Err(bad_input!(
                    "{at}: the name is used twice; give each token its own name so the audit log tells them apart"
                ));
            }
            if e.role != COMMISSIONER {
                return Err(bad_input!(
                    "{at}: role {:?} is unknown; the only role is \"{COMMISSIONER}\"",
                    e.role
                ));
            }
            if e.jobs.is_empty() {
                return Err(bad_input!(
                    "{at}: jobs is empty; list the jobs (as in [job] name) this token may see"
                ));
            }
            if by_hash.contains_key(&hash) {
                return Err(bad_input!(
                    "{at}: the same sha256 as an earlier token; each token must be different"
                ));
            }
            by_hash.insert(
                hash,
                Grant {
                    name: e.name,
                    jobs: e.jobs,
                },
            );
        }
        Ok(Self { by_hash })
    }

    /// The grant of a presented token, if any. Looks up by hash: what an attacker
    /// could learn from the lookup's timing is about hashes, not tokens.
    pub fn identify(&self, token: &str) -> Option<&Grant> {
        self.by_hash.get(&token_sha256(token))
    }

    /// Every grant with its hash, for building the per-token sessions.
    pub fn grants(&self) -> impl Iterator<Item = (&[u8; 32], &Grant)> {
        self.by_hash.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sha: &str, name: &str, role: &str) -> String {
        format!(
            "[[token]]\nsha256 = \"{sha}\"\nname = \"{name}\"\nrole = \"{role}\"\njobs = [\"complex-needs\"]\n"
        )
    }

    #[test]
    fn a_token_is_found_by_its_hash_only() {
        let sha = hex::encode(token_sha256("test"));
        assert_eq!(
            sha,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        let a = Access::parse(&entry(&sha, "team", "commissioner")).unwrap();
        assert_eq!(a.identify("test").unwrap().name, "team");
        assert!(a.identify("Test").is_none());
        assert!(a.identify(&sha).is_none(), "the hash is not a token");
    }

    #[test]
    fn mistakes_are_named() {
        let sha = hex::encode(token_sha256("t"));
        let err = |text: &str| Access::parse(text).unwrap_err().message;
        assert!(err("").contains("no [[token]]"));
        assert!(err(&entry("t", "team", "commissioner")).contains("64 hex digits"));
        assert!(err(&entry(&sha, "team", "admin")).contains("only role"));
        assert!(err(&(entry(&sha, "a", "commissioner") + "colour = 1\n")).contains("colour"));
        let two = entry(&sha, "a", "commissioner") + &entry(&sha, "b", "commissioner");
        assert!(err(&two).contains("same sha256"));
        let other = hex::encode(token_sha256("u"));
        let names = entry(&sha, "a", "commissioner") + &entry(&other, "a", "commissioner");
        assert!(err(&names).contains("used twice"));
        let no_jobs = format!(
            "[[token]]\nsha256 = \"{sha}\"\nname = \"a\"\nrole = \"commissioner\"\njobs = []\n"
        );
        assert!(err(&no_jobs).contains("jobs is empty"));
    }
}
