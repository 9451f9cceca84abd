//! End-to-end tests of information governance through the binary: pseudonymise, the
//! re-identification gate and each of its rules, role separation, and the whole flow
//! from identifiable extracts to a next run that honours the care team's feedback,
//! with a scan of every file written for plaintext identifiers.

use crate::common;

use crate::common::*;
use datafusion::arrow::array::{Array, StringArray};
use riskstrat::governance::audit::{self, Record};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;

const AS_OF: &str = "2026-04-01";
/// Two practices (one per 8,000 people), so two teams.
const PATIENTS: u64 = 16_000;

/// What `synth --identifiable` + `pseudonymise` + `run` leave: the starting point of
/// every gate test.
struct Flow {
    dir: PathBuf,
    run: PathBuf,
}

impl Flow {
    fn key(&self) -> PathBuf {
        self.dir.join("keys/pseudonym.key")
    }
    fn vault_key(&self) -> PathBuf {
        self.dir.join("keys/vault.key")
    }
    fn vault(&self) -> PathBuf {
        self.dir.join("gate/vault.parquet")
    }
    fn teams(&self) -> PathBuf {
        self.dir.join("teams.toml")
    }
    fn audit(&self) -> PathBuf {
        self.dir.join("gate/audit.jsonl")
    }
    fn list(&self, name: &str) -> PathBuf {
        self.dir.join("lists").join(name)
    }

    fn pseudonymise(&self) -> Output {
        common::pseudonymise(&self.dir).output().unwrap()
    }

    fn approve(&self, team: &str, cohort: &str) {
        self.approve_for_job(team, cohort, "complex-needs");
    }

    fn approve_for_job(&self, team: &str, cohort: &str, job: &str) {
        let o = riskstrat()
            .args(["approve", "--team", team, "--cohort", cohort])
            .args(["--job", job])
            .args(["--purpose", "direct-care", "--expires"])
            .arg(tomorrow())
            .args(["--approver", "caldicott.guardian", "--teams"])
            .arg(self.teams())
            .arg("--audit")
            .arg(self.audit())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }

    fn reidentify(&self, team: &str, requester: &str, cohort: &str, out: &str) -> Output {
        self.reidentify_with_key(team, requester, cohort, out, &self.vault_key())
    }

    fn reidentify_with_key(
        &self,
        team: &str,
        requester: &str,
        cohort: &str,
        out: &str,
        vault_key: &Path,
    ) -> Output {
        self.gate(&self.run, team, requester, cohort, out, vault_key)
            .output()
            .unwrap()
    }

    /// `reidentify --changes` of `run`.
    fn changes(&self, run: &Path, team: &str, requester: &str, out: &str) -> Output {
        let vault_key = self.vault_key();
        self.gate(run, team, requester, "complex_needs", out, &vault_key)
            .arg("--changes")
            .output()
            .unwrap()
    }

    fn gate(
        &self,
        run: &Path,
        team: &str,
        requester: &str,
        cohort: &str,
        out: &str,
        vault_key: &Path,
    ) -> std::process::Command {
        let mut c = riskstrat();
        c.arg("reidentify")
            .arg("--run")
            .arg(run)
            .args(["--cohort", cohort, "--team", team, "--requester", requester])
            .arg("--vault")
            .arg(self.vault())
            .arg("--vault-key")
            .arg(vault_key)
            .arg("--teams")
            .arg(self.teams())
            .arg("--audit")
            .arg(self.audit())
            .arg("--out")
            .arg(self.list(out));
        c
    }

    /// `pseudonymise` the extract again, then release T01's list to `out`: the NHS
    /// numbers named, and the release's output.
    fn repseudonymise_and_release(&self, out: &str) -> (HashSet<String>, Output) {
        let o = self.pseudonymise();
        assert!(o.status.success(), "{}", stderr(&o));
        let o = self.reidentify("T01", "gp.north.1", "complex_needs", out);
        assert!(o.status.success(), "{}", stderr(&o));
        let named = released_nhs(&self.list(&format!("{out}.csv")));
        (named.into_iter().collect(), o)
    }

    /// The last audit record other than a delivery: the one a release or refusal
    /// wrote.
    fn last_record(&self) -> Record {
        let records = audit::read(&self.audit()).unwrap();
        let last = records.into_iter().rev().find(|r| r.action != "delivered");
        last.unwrap()
    }
}

fn tomorrow() -> String {
    (chrono::Utc::now().date_naive() + chrono::Days::new(1)).to_string()
}

fn flow(name: &str, seed: u64) -> Flow {
    let dir = scratch(name);
    let o = riskstrat()
        .args([
            "synth",
            "--identifiable",
            "--patients",
            &PATIENTS.to_string(),
        ])
        .args(["--seed", &seed.to_string(), "--as-of", AS_OF, "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut f = Flow {
        dir: dir.clone(),
        run: PathBuf::new(),
    };
    let o = f.pseudonymise();
    assert!(o.status.success(), "{}", stderr(&o));
    // These tests are about the gate; the service evaluation only costs time here.
    let job = std::fs::read_to_string(dir.join("job.toml")).unwrap();
    std::fs::write(
        dir.join("job.toml"),
        job + "\n[outcomes]\nevaluate = false\n",
    )
    .unwrap();
    let o = run_job(&dir.join("job.toml"));
    assert!(o.status.success(), "{}", stderr(&o));
    f.run = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    f
}

fn strings(batches: &[datafusion::arrow::array::RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(column)
                .unwrap_or_else(|| panic!("{column}"));
            let s = c.as_any().downcast_ref::<StringArray>().unwrap();
            (0..s.len())
                .map(|i| {
                    if s.is_valid(i) {
                        s.value(i).to_string()
                    } else {
                        String::new()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Modulus 11, written again here so the test does not trust the code it tests.
fn valid_nhs(raw: &str) -> Option<String> {
    let d: String = raw.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if d.len() != 10 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: Vec<u32> = d.bytes().map(|b| (b - b'0') as u32).collect();
    let s: u32 = (0..9).map(|i| v[i] * (10 - i as u32)).sum();
    let c = (11 - s % 11) % 11;
    (c != 10 && c == v[9]).then_some(d)
}

/// NHS numbers (ten digits) of the identifiable patients -> (practice, opted out).
fn identifiable_people(dir: &Path) -> std::collections::HashMap<String, String> {
    let p = read_parquet(&dir.join("identifiable/patients.parquet"));
    strings(&p, "nhs_number")
        .into_iter()
        .zip(strings(&p, "practice_code"))
        .filter_map(|(n, pr)| valid_nhs(&n).map(|n| (n, pr)))
        .collect()
}

fn opted_out_nhs(dir: &Path) -> HashSet<String> {
    strings(
        &read_parquet(&dir.join("identifiable/optouts.parquet")),
        "nhs_number",
    )
    .iter()
    .filter_map(|n| valid_nhs(n))
    .collect()
}

fn released_nhs(list: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(list).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "nhs_number,given_name,family_name,date_of_birth,address,postcode,phone,practice_code,tier,reason_1,reason_2,reason_3"
    );
    lines
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

fn team_practices(dir: &Path, team: &str) -> HashSet<String> {
    let reg = riskstrat::governance::teams::Registry::load(&dir.join("teams.toml")).unwrap();
    reg.team(team).unwrap().practices.iter().cloned().collect()
}

fn assert_refused(f: &Flow, o: &Output, why: &str, out: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    assert!(stderr(o).contains("refusal audited"), "{}", stderr(o));
    let r = f.last_record();
    assert_eq!(r.action, "refuse");
    assert_eq!(
        r.detail.as_deref(),
        Some(format!("reidentify: {why}").as_str())
    );
    assert!(!f.list(&format!("{out}.csv")).exists());
    assert!(!f.list(&format!("{out}.parquet")).exists());
}

/// A team receives exactly the cohort's people at its practices: nobody else's,
/// nobody opted out, nobody from another cohort; the release is audited with the
/// list's hash.
#[test]
fn gate_releases_exactly_the_teams_cohort_patients() {
    let f = flow("gov_release", 21);
    f.approve("T01", "complex_needs");
    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "t01");
    assert!(o.status.success(), "{}", stderr(&o));

    // Expected, independently: cohort pseudo_ids -> NHS numbers through the
    // Python-checked HMAC, kept if at a T01 practice and not opted out.
    let people = identifiable_people(&f.dir);
    let by_pid = nhs_by_pseudo_id(&f, &people);
    let practices = team_practices(&f.dir, "T01");
    let optouts = opted_out_nhs(&f.dir);
    let cohort: HashSet<String> = pseudo_ids(&f.run.join("cohort_complex_needs.parquet"))
        .into_iter()
        .collect();
    let expected: HashSet<String> = cohort
        .iter()
        .map(|p| by_pid[p].clone())
        .filter(|n| practices.contains(&people[n]))
        .collect();
    assert!(expected.len() >= 10, "too few to test: {}", expected.len());
    assert!(
        expected.len() < cohort.len(),
        "T01 should not serve everyone"
    );

    let released = released_nhs(&f.list("t01.csv"));
    let set: HashSet<String> = released.iter().cloned().collect();
    assert_eq!(set.len(), released.len(), "nobody twice");
    assert_eq!(set, expected);
    assert!(set.is_disjoint(&optouts));
    // The Parquet copy holds the same people.
    let pq: HashSet<String> = strings(&read_parquet(&f.list("t01.parquet")), "nhs_number")
        .into_iter()
        .collect();
    assert_eq!(pq, set);

    let r = f.last_record();
    assert_eq!(r.action, "reidentify");
    assert_eq!(r.team.as_deref(), Some("T01"));
    assert_eq!(r.cohort.as_deref(), Some("complex_needs"));
    assert_eq!(r.patients, Some(set.len() as u64));
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(f.list("t01.csv")).unwrap(),
    ));
    assert_eq!(r.file_sha256.as_deref(), Some(sha.as_str()));
    // The approval it was released under, as fields.
    assert_eq!(r.approver.as_deref(), Some("caldicott.guardian"));
    assert_eq!(r.expires.map(|d| d.to_string()), Some(tomorrow()));

    // A person who opts out after the run: the gate re-pseudonymises the new extract,
    // and the same run's list no longer names them.
    let gone = released[0].clone();
    append_optout(&f.dir, &gone);
    // Regression: feedback kept inside pseudonymise's output went with the output.
    let kept = f.dir.join("pseudonymised/feedback");
    std::fs::create_dir_all(&kept).unwrap();
    let o = f.pseudonymise();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds feedback"), "{}", stderr(&o));
    assert!(kept.exists());
    std::fs::remove_dir(&kept).unwrap();
    let (again, o) = f.repseudonymise_and_release("t01-again");
    assert!(!again.contains(&gone));
    assert_eq!(again.len(), set.len() - 1);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("1 cohort members at the team's practices are not in the vault")
    );
    assert!(f.last_record().detail.unwrap().contains("not_in_vault=1"));

    // Regression: an opt-out whose NHS number ended in `\r` (a CSV step's line
    // ending) was quarantined, pseudonymise went on, and the gate named the objector.
    let second = released[1].clone();
    append_optout(&f.dir, &format!("{second}\r"));
    let (named, _) = f.repseudonymise_and_release("t01-cr");
    assert!(!named.contains(&second));
    assert_eq!(named.len(), set.len() - 2);
    // An objection whose number cannot be read at all stops pseudonymise, and the
    // output it would have replaced stays as it was.
    let before = std::fs::read(f.dir.join("pseudonymised/optouts.parquet")).unwrap();
    append_optout(&f.dir, "94347659");
    let o = f.pseudonymise();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(
            "1 opt-out rows have an NHS number that cannot be read (malformed_nhs_number 1)"
        ),
        "{e}"
    );
    assert!(!e.contains("94347659"), "{e}");
    assert_eq!(
        std::fs::read(f.dir.join("pseudonymised/optouts.parquet")).unwrap(),
        before
    );
}

/// Set every value of a string column of a Parquet file.
fn overwrite_column(path: &Path, column: &str, value: &str) {
    use datafusion::arrow::array::{ArrayRef, RecordBatch};
    use std::sync::Arc;
    let batches = read_parquet(path);
    let schema = batches[0].schema();
    let i = schema.index_of(column).unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema.clone(),
        None,
    )
    .unwrap();
    for b in &batches {
        let mut columns = b.columns().to_vec();
        columns[i] = Arc::new(StringArray::from(vec![value; b.num_rows()])) as ArrayRef;
        w.write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    w.close().unwrap();
}

/// Regression: the gate decided who a team's patients were by the practice in the
/// run's features, which the analyst writes (by SQL, or by hand). Now the vault's own
/// record must agree, and a run folder that is not where its manifest says is refused.
#[test]
fn gate_names_no_one_the_vault_places_at_another_practice() {
    let f = flow("gov_practice", 29);
    f.approve("T01", "complex_needs");
    let people = identifiable_people(&f.dir);
    let by_pid = nhs_by_pseudo_id(&f, &people);
    let practices = team_practices(&f.dir, "T01");
    let cohort = pseudo_ids(&f.run.join("cohort_complex_needs.parquet"));
    let expected: HashSet<String> = cohort
        .iter()
        .map(|p| by_pid[p].clone())
        .filter(|n| practices.contains(&people[n]))
        .collect();
    assert!(
        expected.len() < cohort.len(),
        "T01 should not serve everyone"
    );

    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "honest");
    assert!(o.status.success(), "{}", stderr(&o));
    let honest: HashSet<String> = released_nhs(&f.list("honest.csv")).into_iter().collect();
    assert!(honest.is_subset(&expected) && !honest.is_empty());
    assert!(
        f.last_record()
            .detail
            .unwrap()
            .contains("practice_differs=0")
    );
    // Regression: with RISKSTRAT_LOG=debug, DataFusion's own debug output printed the
    // cohort's pseudo_ids.
    let o = f
        .gate(
            &f.run,
            "T01",
            "gp.north.1",
            "complex_needs",
            "debug",
            &f.vault_key(),
        )
        .env("RISKSTRAT_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        cohort.iter().all(|p| !log.contains(p.as_str())),
        "a pseudo_id in the log"
    );
    // Regression: `reidentify ... | head` panicked (exit 101) after the release was
    // made and audited, which a script would retry; a closed stdout is now no error.
    let mut child = f
        .gate(
            &f.run,
            "T01",
            "gp.north.1",
            "complex_needs",
            "piped",
            &f.vault_key(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(
        f.list("piped.csv").exists(),
        "released before its summary was printed"
    );

    // Everyone placed at one of T01's practices in the run's features.
    let ours = practices.iter().next().unwrap().clone();
    overwrite_column(&f.run.join("features.parquet"), "practice_code", &ours);
    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "tampered");
    assert!(o.status.success(), "{}", stderr(&o));
    let named: HashSet<String> = released_nhs(&f.list("tampered.csv")).into_iter().collect();
    assert_eq!(named, honest, "named people the vault places elsewhere");
    assert!(
        stderr(&o).contains("cohort members are registered, by the vault's record, at a practice other than the run's"),
        "{}",
        stderr(&o)
    );
    let detail = f.last_record().detail.unwrap();
    let differs: usize = detail
        .split("practice_differs=")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        differs > 0 && honest.len() + differs <= cohort.len(),
        "{detail}"
    );

    // A copy of the run under another name.
    let copy = f.run.with_file_name("copied-run");
    let o = std::process::Command::new("cp")
        .arg("-r")
        .arg(&f.run)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = f
        .gate(
            &copy,
            "T01",
            "gp.north.1",
            "complex_needs",
            "copied",
            &f.vault_key(),
        )
        .output()
        .unwrap();
    assert_refused(&f, &o, "no such run or cohort", "copied");
    assert!(
        stderr(&o).contains("a copied or renamed run folder"),
        "{}",
        stderr(&o)
    );
}

/// Add an opt-out for one NHS number to the identifiable extract.
fn append_optout(dir: &Path, nhs: &str) {
    use datafusion::arrow::array::{ArrayRef, Date32Array, RecordBatch};
    use std::sync::Arc;
    let path = dir.join("identifiable/optouts.parquet");
    let mut batches = read_parquet(&path);
    let schema = batches[0].schema();
    batches.push(
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![nhs])) as ArrayRef,
                Arc::new(StringArray::from(vec!["ndoo"])),
                Arc::new(Date32Array::from(vec![riskstrat::sql::date32(d(
                    "2026-05-01",
                ))])),
            ],
        )
        .unwrap(),
    );
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        schema,
        None,
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

/// Each NHS number of the extract by its pseudo_id, through the test's own HMAC.
fn nhs_by_pseudo_id(
    f: &Flow,
    people: &std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    let key = riskstrat::governance::pseudonym::Key::read_file(&f.key()).unwrap();
    people
        .keys()
        .map(|n| {
            (
                riskstrat::governance::pseudonym::pseudo_id(&key, n),
                n.clone(),
            )
        })
        .collect()
}

/// NHS numbers of a run's cohort members at a team's practices (as the extract says),
/// by the test's own HMAC of every NHS number in the extract.
fn listed(f: &Flow, run: &Path, team: &str) -> HashSet<String> {
    let people = identifiable_people(&f.dir);
    let by_pid = nhs_by_pseudo_id(f, &people);
    let practices = team_practices(&f.dir, team);
    pseudo_ids(&run.join("cohort_complex_needs.parquet"))
        .iter()
        .map(|p| by_pid[p].clone())
        .filter(|n| practices.contains(&people[n]))
        .collect()
}

/// A change list's rows: (change, NHS number, address, tier, previous tier).
fn change_rows(list: &Path) -> Vec<[String; 5]> {
    let b = read_parquet(list);
    let col = |c: &str| strings(&b, c);
    let (change, nhs, address) = (col("change"), col("nhs_number"), col("address"));
    let (tier, previous) = (col("tier"), col("previous_tier"));
    (0..nhs.len())
        .map(|i| {
            [
                change[i].clone(),
                nhs[i].clone(),
                address[i].clone(),
                tier[i].clone(),
                previous[i].clone(),
            ]
        })
        .collect()
}

/// A care team's change list holds exactly who entered its list since its previous
/// release and who left it, each row marked, audited with the release it was compared
/// with; it is refused like any release without an approval, without an earlier
/// release, or when the earlier release's run is gone.
#[test]
fn a_change_list_holds_the_teams_entrants_and_leavers_since_its_last_release() {
    let f = flow("gov_changes", 30);
    let o = riskstrat()
        .args(["run", f.dir.join("job.toml").to_str().unwrap()])
        .args(["--as-of", "2026-02-01"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let february = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());

    // Without an approval, --changes is refused like any release.
    let o = f.changes(&f.run, "T01", "gp.north.1", "x");
    assert_refused(&f, &o, "no approval for this team and cohort", "x");
    f.approve("T01", "complex_needs");
    // With no list sent yet there is nothing to compare with.
    let o = f.changes(&f.run, "T01", "gp.north.1", "x");
    assert_refused(&f, &o, "no earlier release to compare with", "x");

    // February's whole list, then April's changes.
    let o = f
        .gate(
            &february,
            "T01",
            "gp.north.1",
            "complex_needs",
            "feb",
            &f.vault_key(),
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let first = f.last_record().seq;
    let delivered = audit::read(&f.audit()).unwrap().pop().unwrap();
    assert_eq!(delivered.action, "delivered");
    assert_eq!(delivered.compared_with, Some(first));
    // Regression: a release audited but killed before its files were in place became
    // the team's previous list, so April's entrants were never sent.
    let o = f
        .gate(
            &f.run,
            "T01",
            "gp.north.1",
            "complex_needs",
            "lost",
            &f.vault_key(),
        )
        .env("RISKSTRAT_FAULT", "reidentify.before_rename=kill")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!f.list("lost.csv").exists());
    assert_eq!(f.last_record().action, "reidentify");
    // The earlier release's run must still be there.
    let aside = f.dir.join("february-aside");
    std::fs::rename(&february, &aside).unwrap();
    let o = f.changes(&f.run, "T01", "gp.north.1", "x");
    assert_refused(&f, &o, "earlier release's run not found", "x");
    std::fs::rename(&aside, &february).unwrap();

    let o = f.changes(&f.run, "T01", "gp.north.1", "apr");
    assert!(o.status.success(), "{}", stderr(&o));
    let before = listed(&f, &february, "T01");
    let now = listed(&f, &f.run, "T01");
    let entered: HashSet<String> = now.difference(&before).cloned().collect();
    let left: HashSet<String> = before.difference(&now).cloned().collect();
    assert!(
        entered.len() >= 3 && left.len() >= 3,
        "too few to test: {} entered, {} left",
        entered.len(),
        left.len()
    );
    let rows = change_rows(&f.list("apr.parquet"));
    let got = |c: &str| -> HashSet<String> {
        rows.iter()
            .filter(|r| r[0] == c)
            .map(|r| r[1].clone())
            .collect()
    };
    assert_eq!(got("entered"), entered);
    assert_eq!(got("left"), left);
    assert_eq!(rows.len(), entered.len() + left.len(), "each person once");
    for r in &rows {
        // Entrants carry the minimum fields and their tier now; leavers only what
        // identifies them and the tier they had.
        let entrant = r[0] == "entered";
        assert_eq!(!r[2].is_empty(), entrant, "address of {}", r[0]);
        assert_eq!(!r[3].is_empty(), entrant, "tier of {}", r[0]);
        if !entrant {
            assert!(!r[4].is_empty(), "a leaver's previous tier");
        }
    }
    let header = std::fs::read_to_string(f.list("apr.csv")).unwrap();
    assert!(
        header.starts_with("change,nhs_number,given_name,family_name,date_of_birth,address,postcode,phone,practice_code,tier,reason_1,reason_2,reason_3,previous_tier\n"),
        "{}",
        header.lines().next().unwrap()
    );
    let r = f.last_record();
    assert_eq!(r.action, "reidentify");
    assert_eq!(r.compared_with, Some(first));
    assert_eq!(r.patients, Some(rows.len() as u64));
    let detail = r.detail.unwrap();
    let feb_id = february.file_name().unwrap().to_string_lossy();
    assert!(
        detail.contains(&format!(
            "changes_since_run={feb_id} entered={} left={}",
            entered.len(),
            left.len()
        )),
        "{detail}"
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!("{} entered, {} left", entered.len(), left.len())),
        "{said}"
    );

    // The change list is now the team's previous release: asked again, nothing changed.
    let changes_seq = r.seq;
    let o = f.changes(&f.run, "T01", "gp.north.1", "apr-again");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(change_rows(&f.list("apr-again.parquet")).is_empty());
    assert_eq!(f.last_record().compared_with, Some(changes_seq));
}

#[test]
fn gate_refuses_an_unknown_team() {
    let f = flow("gov_unknown_team", 22);
    f.approve("T01", "complex_needs");
    let o = f.reidentify("T99", "gp.north.1", "complex_needs", "x");
    assert_refused(&f, &o, "unknown team", "x");
}

#[test]
fn gate_refuses_a_requester_outside_the_team() {
    let f = flow("gov_not_member", 23);
    f.approve("T01", "complex_needs");
    let o = f.reidentify("T01", "gp.south.1", "complex_needs", "x");
    assert_refused(&f, &o, "requester is not a member of the team", "x");
}

#[test]
fn gate_refuses_without_an_approval() {
    let f = flow("gov_no_approval", 24);
    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "x");
    assert_refused(&f, &o, "no approval for this team and cohort", "x");
}

#[test]
fn gate_refuses_an_expired_approval() {
    let f = flow("gov_expired", 25);
    // An approval recorded in the past, expired yesterday: written with the library,
    // as `approve` itself refuses a date already passed.
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    audit::append(
        &f.audit(),
        Record {
            actor: "caldicott.guardian".into(),
            action: audit::Action::Approve,
            team: Some("T01".into()),
            purpose: Some("direct-care".into()),
            cohort: Some("complex_needs".into()),
            detail: Some(format!("expires={yesterday}")),
            ..Default::default()
        },
    )
    .unwrap();
    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "x");
    assert_refused(&f, &o, "approval expired", "x");
}

#[test]
fn gate_refuses_an_approval_for_another_cohort_or_team() {
    let f = flow("gov_other_approval", 26);
    f.approve("T01", "high_cost");
    f.approve("T02", "complex_needs");
    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "x");
    assert_refused(&f, &o, "no approval for this team and cohort", "x");
    // And the approvals that exist do work for what they cover.
    let o = f.reidentify("T02", "gp.south.1", "complex_needs", "t02");
    assert!(o.status.success(), "{}", stderr(&o));
    // Regression: an approval named a cohort only, so another job's run (with its own
    // SQL for a cohort of that name) was covered.
    f.approve_for_job("T01", "complex_needs", "another-job");
    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "y");
    assert_refused(&f, &o, "no approval for this job", "y");
    assert!(
        stderr(&o).contains("not of job complex-needs"),
        "{}",
        stderr(&o)
    );
    f.approve("T01", "complex_needs");
    let o = f.reidentify("T01", "gp.north.1", "complex_needs", "t01");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn gate_refuses_a_wrong_vault_key() {
    let f = flow("gov_wrong_key", 27);
    f.approve("T01", "complex_needs");
    let wrong = f.dir.join("keys/other.key");
    riskstrat::governance::pseudonym::Key::random()
        .write_file(&wrong)
        .unwrap();
    let o = f.reidentify_with_key("T01", "gp.north.1", "complex_needs", "x", &wrong);
    assert_refused(&f, &o, "vault key does not open the vault", "x");
    assert!(stderr(&o).contains("does not open it"), "{}", stderr(&o));
}

/// Regression (fault review of 2026-12-07): `--out` replaced whatever file had the
/// list's name (`--out gate/vault` replaced the vault with a plaintext list) and wrote
/// names among the analysts' tables. Now only an earlier list, unchanged, is replaced.
#[test]
fn gate_never_overwrites_a_file_it_did_not_release() {
    let f = flow("gov_out_targets", 33);
    f.approve("T01", "complex_needs");
    let release = |out: &str| f.reidentify("T01", "gp.north.1", "complex_needs", out);
    for _ in 0..2 {
        let o = release("t01");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut edited = std::fs::read(f.list("t01.csv")).unwrap();
    edited.extend_from_slice(b"a line added by hand\n");
    std::fs::write(f.list("t01.csv"), &edited).unwrap();
    let patients = f.dir.join("pseudonymised/patients.parquet");
    let untouched = [f.vault(), patients.clone(), f.list("t01.csv")];
    let before: Vec<Vec<u8>> = untouched
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for (out, why) in [
        ("t01", "is not a list this gate released"),
        ("../gate/vault", "is not a list this gate released"),
        (
            "../pseudonymised/patients",
            "a folder of pseudonymised tables",
        ),
        ("../runs/complex-needs/list", "must not sit inside"),
        // Code review of 2026-12-07: beside the job folders, and in a folder not yet
        // made among the pseudonymised tables.
        ("../runs/list", "must not sit inside"),
        (
            "../pseudonymised/appointments/new/../newer/list",
            "a folder of pseudonymised tables",
        ),
    ] {
        let o = release(out);
        assert_eq!(o.status.code(), Some(2), "{out}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{out}: {}", stderr(&o));
    }
    let after: Vec<Vec<u8>> = untouched
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(after == before, "a file was replaced");
    assert!(!f.dir.join("runs/complex-needs/list.csv").exists());
    assert!(!f.dir.join("pseudonymised/appointments/newer").exists());
}

/// The audit record comes first: with a tampered audit log nothing is released.
#[test]
fn gate_releases_nothing_when_the_audit_log_is_broken() {
    let f = flow("gov_broken_audit", 28);
    f.approve("T01", "complex_needs");
    f.approve("T02", "complex_needs");
    let text = std::fs::read_to_string(f.audit()).unwrap();
    let first = text.lines().next().unwrap();
    std::fs::write(f.audit(), text.replacen(first, "", 1).trim_start()).unwrap();
    let o = f.reidentify("T02", "gp.south.1", "complex_needs", "x");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing released"), "{}", stderr(&o));
    assert!(!f.list("x.csv").exists() && !f.list("x.parquet").exists());
}

/// The pseudonymised tables are exactly what `synth` writes for the same seed, less
/// the rows whose NHS number fails (quarantined on the gate's side, with reasons) and
/// the rows of people with an opt-out (withheld).
#[test]
fn pseudonymise_matches_synth_and_quarantines_invalid_nhs_numbers() {
    let f = flow("gov_pseudonymise", 29);
    let plain = f.dir.join("plain");
    let o = synth(&plain, PATIENTS, 29);
    assert!(o.status.success(), "{}", stderr(&o));
    let optouts: HashSet<String> = pseudo_ids(&plain.join("optouts.parquet"))
        .into_iter()
        .collect();
    let want: HashSet<String> = pseudo_ids(&plain.join("patients.parquet"))
        .into_iter()
        .filter(|p| riskstrat::session::is_pseudo_id(p) && !optouts.contains(p))
        .collect();
    let got: HashSet<String> = pseudo_ids(&f.dir.join("pseudonymised/patients.parquet"))
        .into_iter()
        .collect();
    assert_eq!(got, want);

    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.dir.join("pseudonymised/pseudonymise.json")).unwrap(),
    )
    .unwrap();
    for table in ["patients", "appointments", "prescriptions", "admissions"] {
        let t = &summary["tables"][table];
        let q: u64 = t["quarantined"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let read = t["rows_read"].as_u64().unwrap();
        let written = t["rows_written"].as_u64().unwrap();
        let withheld = t["rows_withheld_optout"].as_u64().unwrap();
        assert_eq!(
            read,
            written + withheld + q,
            "{table}: every row accounted for"
        );
        let qfile = f.dir.join(format!("gate/vault-quarantine/{table}.parquet"));
        if q > 0 {
            let batches = read_parquet(&qfile);
            let nhs = strings(&batches, "nhs_number");
            assert_eq!(nhs.len() as u64, q);
            assert!(nhs.iter().all(|n| valid_nhs(n).is_none()), "{table}");
            let reasons: HashSet<String> = strings(&batches, "reason").into_iter().collect();
            assert!(reasons.iter().all(|r| {
                [
                    "null_nhs_number",
                    "malformed_nhs_number",
                    "invalid_nhs_number_check_digit",
                ]
                .contains(&r.as_str())
            }));
        }
        assert!(withheld > 0, "{table}: opted-out rows withheld");
    }
    assert!(summary["tables"]["appointments"]["quarantined"]["null_nhs_number"].as_u64() > Some(0));
    // Nothing is quarantined on the analysts' side for pseudo_ids: none is malformed.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.run.join("manifest.json")).unwrap()).unwrap();
    assert!(m["rows"]["appointments"]["quarantined_by_reason"]["malformed_pseudo_id"].is_null());
    assert_eq!(m["optouts"]["patients_excluded"], 0);
}

#[test]
fn pseudonymise_refuses_misplaced_or_shared_or_open_keys() {
    let f = flow("gov_pseudonymise_keys", 30);
    let base = |key: &Path, vault_key: &Path, out: &Path| {
        riskstrat()
            .arg("pseudonymise")
            .arg("--key")
            .arg(key)
            .arg("--in")
            .arg(f.dir.join("identifiable"))
            .arg("--out")
            .arg(out)
            .arg("--vault")
            .arg(f.dir.join("gate/vault2.parquet"))
            .arg("--vault-key")
            .arg(vault_key)
            .output()
            .unwrap()
    };
    let out = f.dir.join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    let inside = out.join("pseudonym.key");
    std::fs::copy(f.key(), &inside).unwrap();
    let o = base(&inside, &f.vault_key(), &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must not sit inside"), "{}", stderr(&o));

    let o = base(&f.key(), &f.key(), &f.dir.join("other"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("same key"), "{}", stderr(&o));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = f.dir.join("open.key");
        std::fs::copy(f.key(), &open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = base(&open, &f.vault_key(), &f.dir.join("other"));
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    }
    // A folder that is not an earlier output is never replaced, nor is the input.
    let o = base(&f.key(), &f.vault_key(), &f.dir.join("identifiable"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("overlaps --in"), "{}", stderr(&o));
    assert!(f.dir.join("identifiable/patients.parquet").exists());
    std::fs::create_dir_all(f.dir.join("notes")).unwrap();
    std::fs::write(f.dir.join("notes/minutes.txt"), "kept").unwrap();
    let o = base(&f.key(), &f.vault_key(), &f.dir.join("notes"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not an earlier pseudonymise output"),
        "{}",
        stderr(&o)
    );
    assert!(f.dir.join("notes/minutes.txt").exists());
    assert!(!f.dir.join("gate/vault2.parquet").exists());
    // The key is never printed.
    let key_hex = std::fs::read_to_string(f.key()).unwrap();
    assert!(!stderr(&o).contains(key_hex.trim()));
}

/// A table's file rewritten with no rows (its schema kept).
fn empty_table(path: &Path) {
    let schema = read_parquet(path)[0].schema();
    let w = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema,
        None,
    )
    .unwrap();
    w.close().unwrap();
}

/// Regressions of the fault review of 2026-12-07: `pseudonymise --quarantine keys`
/// deleted both keys (`gate`: the vault and the audit log; `runs`: every run), `--vault`
/// on an extract overwrote it, and an empty opt-out or patients extract was taken,
/// exit 0 (every objector released; the vault replaced by an empty one).
#[test]
fn pseudonymise_never_replaces_what_it_did_not_write_nor_takes_an_empty_extract() {
    let dir = scratch("gov_pseudonymise_targets");
    let o = riskstrat()
        .args([
            "synth",
            "--identifiable",
            "--patients",
            "2000",
            "--seed",
            "32",
        ])
        .args(["--as-of", AS_OF, "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = common::pseudonymise(&dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(dir.join("gate/audit.jsonl"), "").unwrap();
    std::fs::create_dir_all(dir.join("runs/job/run1")).unwrap();
    std::fs::write(dir.join("runs/job/run1/manifest.json"), "{}").unwrap();
    let snapshot = || {
        // Lock files (empty, beside a target) are left by a refusal under the lock.
        let mut files: Vec<(PathBuf, Vec<u8>)> = walk(&dir)
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".lock"))
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    // `--vault` and `--quarantine` as given (relative to the flow), the rest as usual.
    let command = |vault: &str, quarantine: Option<&str>| {
        let mut c = common::pseudonymise_to(&dir, &dir.join(vault));
        if let Some(q) = quarantine {
            c.arg("--quarantine").arg(dir.join(q));
        }
        c
    };
    let refused = |mut c: std::process::Command, expect: &str| {
        let before = snapshot();
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{c:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{c:?}: {}", stderr(&o));
        assert!(snapshot() == before, "{c:?} changed a file");
    };
    let vault = "gate/vault.parquet";
    refused(command(vault, Some("keys")), "overlaps --key");
    // Code review of 2026-12-07: a `..` after a folder not yet made.
    refused(command(vault, Some("new/../keys")), "overlaps --key");
    refused(command(vault, Some("gate")), "overlaps --quarantine");
    refused(command(vault, Some("identifiable")), "overlaps --in");
    refused(
        command(vault, Some("runs")),
        "holds job, which pseudonymise did not write",
    );
    refused(command(vault, Some("teams.toml")), "is a file");
    refused(
        command("identifiable/patients.parquet", None),
        "overlaps --in",
    );
    refused(command("teams.toml", None), "is not an identity vault");

    // An empty opt-out extract, then an empty patients extract: nothing is written.
    let optouts = dir.join("identifiable/optouts.parquet");
    let kept = std::fs::read(&optouts).unwrap();
    empty_table(&optouts);
    refused(
        command(vault, None),
        "an empty opt-out list is almost always a failed extract; if there truly are none, run pseudonymise with --allow-empty-optouts",
    );
    let o = command(vault, None)
        .arg("--allow-empty-optouts")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("patients: 2"), "{printed}");
    assert!(printed.contains(" 0 withheld"), "{printed}");
    std::fs::write(&optouts, kept).unwrap();
    // No NHS number of the patients can be read.
    let patients = dir.join("identifiable/patients.parquet");
    let kept = std::fs::read(&patients).unwrap();
    overwrite_column(&patients, "nhs_number", "not a number");
    refused(command(vault, None), "the patients extract: none of its 2");
    std::fs::write(&patients, kept).unwrap();
    empty_table(&dir.join("identifiable/patients.parquet"));
    refused(
        command(vault, None),
        "the patients extract has no rows: check that the extract ran",
    );
}

/// Analysts' commands never take a key or open the vault.
#[test]
fn run_and_validate_refuse_keys_and_the_vault() {
    let f = flow("gov_roles", 31);
    let job = f.dir.join("job.toml");
    for cmd in ["run", "validate"] {
        for flag in ["--key", "--vault", "--vault-key"] {
            let o = riskstrat()
                .arg(cmd)
                .arg(&job)
                .arg(flag)
                .arg(f.key())
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2), "{cmd} {flag}");
            assert!(
                stderr(&o).contains(&format!("{cmd} never takes {flag}")),
                "{}",
                stderr(&o)
            );
        }
    }
    let text = std::fs::read_to_string(&job).unwrap();
    for (input, needle) in [
        ("gate/vault.parquet", "encrypted Parquet"),
        ("keys/vault.key", "looks like a key file"),
    ] {
        let bad = f.dir.join("bad.toml");
        std::fs::write(&bad, text.replace("pseudonymised/patients.parquet", input)).unwrap();
        for cmd in ["run", "validate"] {
            let o = riskstrat().arg(cmd).arg(&bad).output().unwrap();
            assert_eq!(o.status.code(), Some(2), "{cmd} {input}");
            assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        }
    }
    // Regression: a key file named as feature SQL was printed whole by the SQL
    // parser's error (and kept in a schedule's state file).
    let key_text = std::fs::read_to_string(f.key()).unwrap().trim().to_string();
    let bad = f.dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!("{text}\n[features]\nextra = [\"keys/pseudonym.key\"]\n"),
    )
    .unwrap();
    let o = riskstrat().arg("run").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("looks like a key file"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(&key_text[..16]), "{}", stderr(&o));
}

/// Every identifier of the identifiable extract: NHS numbers as written and
/// normalised, names, addresses, postcodes, phones.
fn identifiers(dir: &Path) -> HashSet<String> {
    let p = read_parquet(&dir.join("identifiable/patients.parquet"));
    let mut ids = HashSet::new();
    for n in strings(&p, "nhs_number") {
        if let Some(v) = valid_nhs(&n) {
            ids.insert(v);
        }
        ids.insert(n);
    }
    let given = strings(&p, "given_name");
    let family = strings(&p, "family_name");
    for (g, f) in given.iter().zip(&family) {
        ids.insert(format!("{g} {f}"));
    }
    for c in ["address", "postcode", "phone"] {
        ids.extend(strings(&p, c));
    }
    ids.remove("");
    ids
}

/// Identifiers found in `file`: Parquet is decoded and every string value compared
/// whole (names alone are also words, so values, not substrings); text is searched.
fn identifiers_in(file: &Path, ids: &HashSet<String>, names: &HashSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    if file.extension().is_some_and(|e| e == "parquet") {
        for b in read_parquet(file) {
            for c in b.columns() {
                if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
                    for v in s.iter().flatten() {
                        if ids.contains(v) || names.contains(v) {
                            found.push(v.to_string());
                        }
                    }
                }
            }
        }
    } else {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        found.extend(ids.iter().filter(|id| text.contains(id.as_str())).cloned());
    }
    found
}

/// The whole flow, as the demo shows it: synth identifiable -> pseudonymise -> run ->
/// approve -> reidentify -> feedback import -> the next run leaves out those who
/// declined. Then every file written outside the vault, the keys, the identifiable
/// extracts, the gate's quarantine and the released lists is scanned for identifiers.
#[test]
fn whole_flow_releases_to_the_team_and_leaks_nothing() {
    let f = flow("gov_whole_flow", 32);
    f.approve("T01", "complex_needs");
    let o = f.reidentify("T01", "nurse.north.2", "complex_needs", "t01");
    assert!(o.status.success(), "{}", stderr(&o));
    let released = released_nhs(&f.list("t01.csv"));
    assert!(released.len() >= 4);

    // The team returns outcomes for four people, recorded on the run's date.
    let returned = f.list("returned.csv");
    std::fs::write(
        &returned,
        format!(
            "nhs_number,outcome\n{},declined\n{},not_appropriate\n{},enrolled:VW01\n{},reviewed\n",
            released[0], released[1], released[2], released[3]
        ),
    )
    .unwrap();
    let mut printed = vec![o];
    let o = riskstrat()
        .args([
            "feedback",
            "import",
            "--team",
            "T01",
            "--importer",
            "nurse.north.2",
        ])
        .arg("--in")
        .arg(&returned)
        .arg("--key")
        .arg(f.key())
        .arg("--vault")
        .arg(f.vault())
        .arg("--vault-key")
        .arg(f.vault_key())
        .arg("--teams")
        .arg(f.teams())
        .arg("--audit")
        .arg(f.audit())
        .arg("--out")
        .arg(f.dir.join("feedback"))
        .args(["--recorded", AS_OF])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    printed.push(o);

    let job = std::fs::read_to_string(f.dir.join("job.toml"))
        .unwrap()
        .replace("[cohorts]", "feedback = \"feedback/\"\n\n[cohorts]");
    std::fs::write(f.dir.join("job2.toml"), job).unwrap();
    let o = run_job(&f.dir.join("job2.toml"));
    assert!(o.status.success(), "{}", stderr(&o));
    let second = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["feedback_excluded"]["complex_needs"], 2);
    assert_eq!(m["feedback"]["enrolled"], 1);
    let before = pseudo_ids(&f.run.join("cohort_complex_needs.parquet")).len();
    let after = pseudo_ids(&second.join("cohort_complex_needs.parquet")).len();
    assert_eq!(after, before - 2);

    let actions: Vec<String> = audit::read(&f.audit())
        .unwrap()
        .into_iter()
        .map(|r| r.action.to_string())
        .collect();
    assert_eq!(
        actions,
        ["approve", "reidentify", "delivered", "feedback_import"]
    );
    let o = riskstrat()
        .args(["audit", "verify"])
        .arg(f.audit())
        .output()
        .unwrap();
    assert!(o.status.success());

    // The scan. It must find identifiers where they belong (the list) ...
    let ids = identifiers(&f.dir);
    let names: HashSet<String> = {
        let p = read_parquet(&f.dir.join("identifiable/patients.parquet"));
        strings(&p, "given_name")
            .into_iter()
            .chain(strings(&p, "family_name"))
            .collect()
    };
    assert!(!identifiers_in(&f.list("t01.csv"), &ids, &names).is_empty());
    assert!(!identifiers_in(&f.list("t01.parquet"), &ids, &names).is_empty());
    // ... and nowhere else.
    let allowed = [
        f.dir.join("identifiable"),
        f.dir.join("keys"),
        f.dir.join("lists"),
        f.vault(),
        f.dir.join("gate/vault-quarantine"),
        f.dir.join("plain"),
    ];
    let mut scanned = 0;
    for file in walk(&f.dir) {
        if allowed.iter().any(|a| file.starts_with(a)) {
            continue;
        }
        let found = identifiers_in(&file, &ids, &names);
        assert!(found.is_empty(), "{} holds identifiers", file.display());
        scanned += 1;
    }
    assert!(scanned > 20, "scanned only {scanned} files");
    // Nor in anything the gate's commands printed.
    for o in &printed {
        for text in [String::from_utf8_lossy(&o.stdout).into_owned(), stderr(o)] {
            assert!(!ids.iter().any(|id| text.contains(id.as_str())), "{text}");
        }
    }
}
