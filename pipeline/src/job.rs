//! Job files (TOML): what to read, when, and what to compute. Unknown keys are an
//! error that names them, so that a typo cannot silently change a run.

use crate::bad_input;
use crate::error::{Error, Result};
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub job: JobSection,
    pub inputs: BTreeMap<String, String>,
    #[serde(default)]
    pub features: FeaturesSection,
    #[serde(default)]
    pub cohorts: CohortsSection,
    #[serde(default)]
    pub resources: ResourcesSection,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub outcomes: OutcomesSection,
    pub schedule: Option<crate::schedule::ScheduleSection>,
    /// Non-secret options of the cloud stores the inputs are in.
    #[serde(default)]
    pub storage: crate::ingest::stores::StorageOptions,
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]`: run the relational stages on an Apache Ballista cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The scheduler, `df://HOST:PORT`.
    pub scheduler: String,
    /// Storage every process of the cluster reads and writes (an absolute path on a
    /// shared file system, or an object store URL), for the tables a run builds.
    pub scratch: String,
    /// The largest table a join sends whole to every task rather than shuffling both
    /// sides by key (`"1GiB"` by default); `"0"` always shuffles.
    pub broadcast_limit: Option<String>,
}

/// `[cluster]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub scheduler: String,
    /// An absolute path or an object store URL.
    pub scratch: String,
    /// Bytes; see [`ClusterSection::broadcast_limit`].
    pub broadcast_limit: usize,
}

/// `[cluster] broadcast_limit` when the job gives none: the valid patients' keys of
/// 10M people (about 45 bytes a person) are broadcast, 60M people's are shuffled.
pub const DEFAULT_BROADCAST_LIMIT: usize = 1 << 30;

/// The service outcome evaluation (the `outcomes` stage), run when there is a
/// `services` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesSection {
    /// Turn off for runs that only need cohorts.
    #[serde(default = "yes")]
    pub evaluate: bool,
    /// Comparison candidates kept per enrolled patient (the nearest on bed days in
    /// its exact cell) before the final choice on risk: more is slower and closer to
    /// considering everyone.
    #[serde(default = "candidates")]
    pub candidates: usize,
}

/// Candidate comparison patients kept per enrolled patient (nearest on bed days in
/// the exact cell), before the final choice on risk: the default of
/// `[outcomes] candidates`. 30 gives the same estimates as 150 within sampling error
/// (30 seeds of 100,000 people: errors +4.6 and +46.8 per 1,000 person-years against
/// +6.7 and +55.4; match rates within 1 point) in about 60% of the time at 1,000,000
/// people.
pub const CANDIDATES: usize = 30;

fn candidates() -> usize {
    CANDIDATES
}

fn yes() -> bool {
    true
}

impl Default for OutcomesSection {
    fn default() -> Self {
        Self {
            evaluate: true,
            candidates: candidates(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Design terms (default: the contract's twelve).
    pub features: Option<Vec<String>>,
    /// L2 penalty on the coefficients (not the intercept); default 0.
    pub l2: Option<f64>,
    /// Score with this saved model.json instead of fitting (monthly scoring, yearly refit).
    pub load: Option<String>,
    /// Risk tiers as cumulative shares, highest risk first; the last must reach 1.
    pub tiers: Option<Vec<TierSpec>>,
}

/// The contract's default model: its twelve design terms (`model::terms`).
pub const DEFAULT_TERMS: &[&str] = &[
    "age",
    "sex_female",
    "imd_decile",
    "gp_appts_12m",
    "other_appts_12m",
    "home_visits_12m",
    "dna_12m",
    "distinct_drugs_12m",
    "ltc_groups_12m",
    "emergency_admissions_12m",
    "emergency_bed_days_12m",
    "charlson_score",
];

/// What the job says about the model, checked (`[model]`).
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub terms: Vec<String>,
    pub l2: f64,
    /// Score with a saved `model.json` instead of fitting.
    pub load: Option<PathBuf>,
    pub tiers: Vec<riskstrat_models::tiers::Tier>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            terms: DEFAULT_TERMS.iter().map(|s| s.to_string()).collect(),
            l2: 0.0,
            load: None,
            tiers: riskstrat_models::tiers::default_tiers(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    pub name: String,
    pub up_to: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    pub name: String,
    /// `YYYY-MM-DD`; omitted means today.
    pub as_of: Option<String>,
    /// Folder (`file://` URL) or object store URL (`s3://bucket/runs`) under which
    /// run folders are written.
    pub output: String,
    /// Folder whose SQL files override the built-in ones by relative path.
    pub sql_dir: Option<String>,
    /// An empty opt-out extract is usually a failed extract; allow it only on purpose.
    #[serde(default)]
    pub allow_empty_optouts: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesSection {
    /// Extra feature SQL files, each returning `pseudo_id` and new columns.
    #[serde(default)]
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortsSection {
    /// Built-in cohort names (`complex_needs`) or paths to `.sql` files.
    #[serde(default = "default_cohorts")]
    pub include: Vec<String>,
    /// How long feedback of `declined` or `not_appropriate` keeps someone out of cohorts.
    #[serde(default = "default_feedback_months")]
    pub feedback_exclusion_months: u32,
}

fn default_feedback_months() -> u32 {
    12
}

impl Default for CohortsSection {
    fn default() -> Self {
        Self {
            include: default_cohorts(),
            feedback_exclusion_months: default_feedback_months(),
        }
    }
}

fn default_cohorts() -> Vec<String> {
    vec!["complex_needs".into()]
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSection {
    /// Memory limit for query execution, e.g. "4GiB" or "512MiB"; spills beyond it.
    pub memory_limit: Option<String>,
    /// Where spill files go (default: the system temp folder).
    pub temp_dir: Option<String>,
    /// Parallelism (default: number of cores).
    pub target_partitions: Option<usize>,
}

/// A job after parsing and checking: paths resolved against the job file's folder.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub as_of: NaiveDate,
    pub output: Output,
    pub sql_dir: Option<PathBuf>,
    pub allow_empty_optouts: bool,
    /// Input table name -> location (path or URL), as given, resolved if relative.
    pub inputs: BTreeMap<String, String>,
    pub extra_features: Vec<PathBuf>,
    pub cohorts: Vec<CohortSpec>,
    pub feedback_months: u32,
    /// Evaluate services (`[outcomes] evaluate`), with `[outcomes] candidates`.
    pub evaluate_services: bool,
    pub outcomes_candidates: usize,
    pub resources: ResourcesSection,
    pub model: ModelConfig,
    pub source: PathBuf,
    /// `[schedule]`, checked (`schedule`, `backfill`).
    pub schedule: Option<crate::schedule::Schedule>,
    /// The scheduled tick this run is for (set by the scheduler, never by the file):
    /// its key goes into the manifest so that a tick is run once.
    pub tick: Option<String>,
    /// `[storage]`: endpoint, region, allow_http of the inputs' cloud stores.
    pub storage: crate::ingest::stores::StorageOptions,
    /// `[cluster]`: where the relational stages run; `None` is in-process.
    pub cluster: Option<Cluster>,
}

/// `[job] output`: where the job's run folders are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A local folder.
    Folder(PathBuf),
    /// An object store URL (`s3://bucket/runs`, `az://`, `gs://`). What must be local
    /// (the scheduler's lock and its attempts log) is kept in `state`: the folder
    /// `.riskstrat/` beside the job file.
    Store { url: String, state: PathBuf },
}

impl Output {
    /// The local folder of the job's scheduler state (its lock and attempts log):
    /// `<output>/<job>` for a folder, `.riskstrat/<job>` beside the job file for a store.
    pub fn state_dir(&self, job: &str) -> PathBuf {
        match self {
            Output::Folder(dir) => dir.join(job),
            Output::Store { state, .. } => state.join(job),
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Folder(dir) => write!(f, "{}", dir.display()),
            Output::Store { url, .. } => f.write_str(url),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CohortSpec {
    Builtin(String),
    File(PathBuf),
}

impl CohortSpec {
    pub fn name(&self) -> String {
        match self {
            CohortSpec::Builtin(n) => n.clone(),
            CohortSpec::File(p) => p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        }
    }
}

pub fn parse_date(s: &str, what: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        bad_input!("{what}: '{s}' is not a date; write it as YYYY-MM-DD, e.g. 2026-04-01")
    })
}

/// A job file's syntax or key error, by line and column, without quoting the line:
/// a value put where it does not belong (a secret under `[storage]`) is not repeated.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> crate::error::Error {
    let at = e
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            // The key (or section) of that line names the setting; its value is left out.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split('=').next())
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 64 && !k.contains(['"', '\'']))
                .map(|k| format!(" ({k})"))
                .unwrap_or_default();
            format!("line {line}, column {column}{key}: ")
        })
        .unwrap_or_default();
    bad_input!(
        "job file {}: {at}{}",
        path.display(),
        e.message().trim_end()
    )
}

/// A location is a URL when it has a scheme (`s3://`, `file://`); otherwise a path.
pub fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
    })
}

impl Job {
    pub fn load(path: &Path, as_of_override: Option<&str>) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad_input!(
                "job file {}: cannot read it ({e}); check the path",
                path.display()
            )
        })?;
        Self::parse(&text, path, as_of_override)
    }

    /// Parse and check a job file's text, section by section, in the order the checks
    /// have always run (the first problem found is the one reported).
    pub fn parse(text: &str, path: &Path, as_of_override: Option<&str>) -> Result<Job> {
        let file: JobFile = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let at = JobPath::new(path);
        let name = job_name(&file.job, &at)?;
        let as_of = as_of_date(&file.job, as_of_override, &at)?;
        let inputs = input_locations(&file.inputs, &at)?;
        let output = output_folder(&file.job, &at)?;
        refuse_output_among_inputs(&output, &inputs, &at)?;
        let cohorts = cohort_specs(&file.cohorts, &at)?;
        let extra_features = extra_feature_files(&file.features, &at)?;
        check_resources(&file.resources, &at)?;
        if file.outcomes.candidates == 0 {
            // Accepted, it matched no one and wrote match rates of 0.
            return Err(bad_input!(
                "{}: must be at least 1 (30 by default)",
                at.ctx("[outcomes] candidates")
            ));
        }
        let model = model_config(&file.model, &at)?;
        let sql_dir = sql_folder(&file.job, &at)?;
        let cluster = file
            .cluster
            .as_ref()
            .map(|c| cluster_settings(c, &file.inputs, &file.storage, &at))
            .transpose()?;
        let schedule = file
            .schedule
            .as_ref()
            .map(|s| crate::schedule::Schedule::parse(s, &at.ctx("[schedule]")))
            .transpose()?;
        Ok(Job {
            name,
            as_of,
            output,
            sql_dir,
            allow_empty_optouts: file.job.allow_empty_optouts,
            inputs,
            extra_features,
            cohorts,
            feedback_months: file.cohorts.feedback_exclusion_months,
            evaluate_services: file.outcomes.evaluate,
            outcomes_candidates: file.outcomes.candidates,
            resources: file.resources,
            model,
            source: path.to_path_buf(),
            schedule,
            tick: None,
            storage: file.storage,
            cluster,
        })
    }
}

/// Where a job file is: relative paths in it are resolved against its folder, and
/// errors name the file and the setting.
struct JobPath<'a> {
    file: &'a Path,
    folder: PathBuf,
}

impl<'a> JobPath<'a> {
    fn new(file: &'a Path) -> Self {
        let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
        JobPath { file, folder }
    }

    fn resolve(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.folder.join(p)
        }
    }

    /// The start of an error about a setting: "job file <path>: <key>".
    fn ctx(&self, key: &str) -> String {
        format!("job file {}: {key}", self.file.display())
    }
}

/// `[job] name`: it names the output folder.
fn job_name(job: &JobSection, at: &JobPath) -> Result<String> {
    let name = job.name.trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad_input!(
            "{}: '{}' must be letters, digits, '-' or '_' (it names the output folder)",
            at.ctx("[job] name"),
            job.name
        ));
    }
    Ok(name)
}

/// `--as-of`, else `[job] as_of`, else today.
fn as_of_date(job: &JobSection, as_of_override: Option<&str>, at: &JobPath) -> Result<NaiveDate> {
    Ok(match as_of_override.or(job.as_of.as_deref()) {
        Some(s) => parse_date(
            s,
            &at.ctx(if as_of_override.is_some() {
                "--as-of"
            } else {
                "[job] as_of"
            }),
        )?,
        None => chrono::Utc::now().date_naive(),
    })
}

/// `[inputs]`: contract tables only, every required one present; paths resolved,
/// URLs kept as they are.
fn input_locations(
    given: &BTreeMap<String, String>,
    at: &JobPath,
) -> Result<BTreeMap<String, String>> {
    let mut inputs = BTreeMap::new();
    for (table, loc) in given {
        if crate::ingest::contract::table(table).is_none() {
            let known: Vec<_> = crate::ingest::contract::TABLES
                .iter()
                .map(|t| t.name)
                .collect();
            return Err(bad_input!(
                "{}: unknown input '{table}'; the tables are {}",
                at.ctx("[inputs]"),
                known.join(", ")
            ));
        }
        let loc = if is_url(loc) {
            loc.clone()
        } else {
            at.resolve(loc).to_string_lossy().into_owned()
        };
        inputs.insert(table.clone(), loc);
    }
    for t in crate::ingest::contract::TABLES
        .iter()
        .filter(|t| t.required)
    {
        if !inputs.contains_key(t.name) {
            return Err(bad_input!(
                "{}: the required input '{}' is missing; add `{} = \"path/to/{}.parquet\"`",
                at.ctx("[inputs]"),
                t.name,
                t.name,
                t.name
            ));
        }
    }
    Ok(inputs)
}

/// `[job] output`: a local folder or `file://` URL, resolved; or an object store URL.
fn output_folder(job: &JobSection, at: &JobPath) -> Result<Output> {
    let output = job
        .output
        .strip_prefix("file://")
        .map(str::to_string)
        .unwrap_or(job.output.clone());
    if !is_url(&output) {
        return Ok(Output::Folder(at.resolve(&output)));
    }
    let (scheme, rest) = output.split_once("://").unwrap_or_default();
    let bucket = rest.split('/').next().unwrap_or_default();
    if crate::ingest::stores::Cloud::of(scheme).is_none() || bucket.is_empty() {
        return Err(bad_input!(
            "{}: '{}': run folders are written to a local folder, a file:// URL or a bucket's URL (s3://, az://, abfs://, gs://, e.g. s3://bucket/runs)",
            at.ctx("[job] output"),
            job.output
        ));
    }
    Ok(Output::Store {
        url: output.trim_end_matches('/').to_string(),
        state: at.folder.join(".riskstrat"),
    })
}

/// `[job] output` inside a folder an input reads: every later run would read the
/// run files as that input and fail until they were moved by hand (regression:
/// `output = "appointments/runs"`).
fn refuse_output_among_inputs(
    output: &Output,
    inputs: &BTreeMap<String, String>,
    at: &JobPath,
) -> Result<()> {
    let Output::Folder(out) = output else {
        return Ok(());
    };
    let out = crate::durable::absolute(out);
    // A file a run writes, as an input's listing would meet it.
    let run_file = out.join("job").join("run").join("scores.parquet");
    for (table, loc) in inputs {
        let loc = loc.strip_prefix("file://").unwrap_or(loc);
        if is_url(loc) {
            continue;
        }
        let reads = match loc.find(['*', '?', '[']) {
            // A glob: whether it matches such a file (`*` taken to match `/` too).
            Some(i) => {
                let cut = loc[..i].rfind('/').map_or(0, |j| j + 1);
                let folder = crate::durable::absolute(Path::new(&loc[..cut]));
                let pattern = format!("{}/{}", folder.display(), &loc[cut..]);
                glob::Pattern::new(&pattern).is_ok_and(|p| p.matches_path(&run_file))
            }
            // A folder: whether the output is inside it.
            None => {
                Path::new(loc).is_dir() && out.starts_with(crate::durable::absolute(Path::new(loc)))
            }
        };
        if reads {
            return Err(bad_input!(
                "{}: {} is inside what input '{table}' reads ({loc}): the runs' files would be read as {table}; choose an output folder outside the inputs",
                at.ctx("[job] output"),
                out.display()
            ));
        }
    }
    Ok(())
}

/// `[cohorts] include`: built-in cohort names or `.sql` files that exist, no two of
/// the same name.
fn cohort_specs(section: &CohortsSection, at: &JobPath) -> Result<Vec<CohortSpec>> {
    let mut cohorts = Vec::new();
    for c in &section.include {
        let spec = if c.ends_with(".sql") {
            let p = at.resolve(c);
            if !p.is_file() {
                return Err(bad_input!(
                    "{}: cohort file {} does not exist",
                    at.ctx("[cohorts] include"),
                    p.display()
                ));
            }
            CohortSpec::File(p)
        } else if crate::sql::builtin(&format!("cohorts/{c}.sql")).is_some() {
            CohortSpec::Builtin(c.clone())
        } else {
            return Err(bad_input!(
                "{}: '{c}' is neither a built-in cohort ({}) nor a path ending in .sql",
                at.ctx("[cohorts] include"),
                crate::sql::builtin_cohorts().join(", ")
            ));
        };
        if cohorts.iter().any(|x: &CohortSpec| x.name() == spec.name()) {
            return Err(bad_input!(
                "{}: two cohorts are named '{}'",
                at.ctx("[cohorts] include"),
                spec.name()
            ));
        }
        cohorts.push(spec);
    }
    Ok(cohorts)
}

/// `[features] extra`: feature SQL files that exist.
fn extra_feature_files(section: &FeaturesSection, at: &JobPath) -> Result<Vec<PathBuf>> {
    let mut extra_features = Vec::new();
    for f in &section.extra {
        let p = at.resolve(f);
        if !p.is_file() {
            return Err(bad_input!(
                "{}: feature file {} does not exist",
                at.ctx("[features] extra"),
                p.display()
            ));
        }
        extra_features.push(p);
    }
    Ok(extra_features)
}

/// The most partitions a job may ask for: each plan's hash repartitions and
/// aggregates keep state per partition, so a mistyped 100000 would run out of memory
/// or time, naming nothing.
pub const MAX_TARGET_PARTITIONS: usize = 1024;

/// `[resources]`: a memory limit that reads as a size, 1 to
/// [`MAX_TARGET_PARTITIONS`] partitions.
fn check_resources(section: &ResourcesSection, at: &JobPath) -> Result<()> {
    if let Some(m) = &section.memory_limit {
        parse_bytes(m).map_err(|e| e.context(at.ctx("[resources] memory_limit")))?;
    }
    if let Some(n) = section.target_partitions {
        if !(1..=MAX_TARGET_PARTITIONS).contains(&n) {
            return Err(bad_input!(
                "{}: {n} is not between 1 and {MAX_TARGET_PARTITIONS}; leave it out to use one per core",
                at.ctx("[resources] target_partitions")
            ));
        }
    }
    // Found only at the first spill otherwise, as an I/O error naming nothing.
    if let Some(t) = &section.temp_dir {
        if !std::path::Path::new(t).is_dir() {
            return Err(bad_input!(
                "{}: {t} is not an existing folder; create it or fix the path",
                at.ctx("[resources] temp_dir")
            ));
        }
    }
    Ok(())
}

/// `[model]`: the contract's default model with what the job changes, checked.
fn model_config(section: &ModelSection, at: &JobPath) -> Result<ModelConfig> {
    let mut model = ModelConfig::default();
    if let Some(f) = &section.features {
        if f.is_empty() {
            return Err(bad_input!(
                "{}: name at least one feature",
                at.ctx("[model] features")
            ));
        }
        model.terms = f.clone();
    }
    if let Some(l2) = section.l2 {
        if !(l2 >= 0.0 && l2.is_finite()) {
            return Err(bad_input!(
                "{}: {l2} must be zero or more",
                at.ctx("[model] l2")
            ));
        }
        model.l2 = l2;
    }
    if let Some(t) = &section.tiers {
        let tiers: Vec<_> = t
            .iter()
            .map(|t| riskstrat_models::tiers::Tier {
                name: t.name.clone(),
                up_to: t.up_to,
            })
            .collect();
        riskstrat_models::tiers::validate(&tiers)
            .map_err(|e| bad_input!("{}: {e}", at.ctx("[model] tiers")))?;
        model.tiers = tiers;
    }
    if let Some(l) = &section.load {
        let p = at.resolve(l);
        if !p.is_file() {
            return Err(bad_input!(
                "{}: {} does not exist",
                at.ctx("[model] load"),
                p.display()
            ));
        }
        model.load = Some(p);
    }
    Ok(model)
}

/// `[job] sql_dir`: a folder that exists, resolved.
fn sql_folder(job: &JobSection, at: &JobPath) -> Result<Option<PathBuf>> {
    let sql_dir = job.sql_dir.as_deref().map(|d| at.resolve(d));
    if let Some(d) = &sql_dir
        && !d.is_dir()
    {
        // Otherwise the built-in SQL would run instead: a typo would change the run.
        return Err(bad_input!(
            "{}: {} is not a folder; fix the path or remove the setting to use the built-in SQL",
            at.ctx("[job] sql_dir"),
            d.display()
        ));
    }
    Ok(sql_dir)
}

/// `[cluster]`: a `df://HOST:PORT` scheduler, scratch storage every process sees, and
/// inputs every process can read: on a cluster the executors open the input files, so
/// a path relative to the job file (which only the client can resolve) is refused.
fn cluster_settings(
    c: &ClusterSection,
    inputs: &BTreeMap<String, String>,
    storage: &crate::ingest::stores::StorageOptions,
    at: &JobPath,
) -> Result<Cluster> {
    if c.scheduler
        .strip_prefix("df://")
        .and_then(host_port)
        .is_none()
    {
        return Err(bad_input!(
            "{}: '{}' is not a scheduler address; write df://HOST:PORT (the --bind of `riskstrat cluster scheduler`)",
            at.ctx("[cluster] scheduler"),
            c.scheduler
        ));
    }
    if let Some((scheme, _)) = c.scratch.split_once("://")
        && is_url(&c.scratch)
        && scheme != "file"
        && crate::ingest::stores::Cloud::of(scheme).is_none()
    {
        return Err(bad_input!(
            "{}: riskstrat writes scratch tables to an absolute path, file://, s3://, az:// or gs://, not '{scheme}'",
            at.ctx("[cluster] scratch")
        ));
    }
    if *storage != crate::ingest::stores::StorageOptions::default() {
        // The scheduler and executors cannot see the job file: they build their
        // stores from their own environment only.
        return Err(bad_input!(
            "{}: on a cluster every process builds its object stores from its environment; remove [storage] and set AWS_ENDPOINT, AWS_REGION, AWS_ALLOW_HTTP (or the Azure and GCS equivalents) for the client, the scheduler and every executor",
            at.ctx("[storage]")
        ));
    }
    if !is_url(&c.scratch) && !Path::new(&c.scratch).is_absolute() {
        return Err(bad_input!(
            "{}: '{}' is a relative path; give an absolute path on storage every process of the cluster sees, or an object store URL",
            at.ctx("[cluster] scratch"),
            c.scratch
        ));
    }
    for (table, loc) in inputs {
        if !is_url(loc) && !Path::new(loc).is_absolute() {
            return Err(bad_input!(
                "{}: '{loc}' is a relative path, which the cluster's executors cannot resolve; give an absolute path on storage every process sees, or an object store URL",
                at.ctx(&format!("[inputs] {table}"))
            ));
        }
    }
    let broadcast_limit = match &c.broadcast_limit {
        None => DEFAULT_BROADCAST_LIMIT,
        Some(b) => parse_bytes(b).map_err(|e| e.context(at.ctx("[cluster] broadcast_limit")))?,
    };
    Ok(Cluster {
        scheduler: c.scheduler.clone(),
        scratch: c.scratch.clone(),
        broadcast_limit,
    })
}

/// `HOST:PORT` (a cluster scheduler's address) as its host and port.
pub fn host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    (!host.is_empty()).then_some(())?;
    Some((host, port.parse().ok()?))
}

/// "4GiB", "512MiB", "2G", "1000000" -> bytes.
pub fn parse_bytes(s: &str) -> Result<usize> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::bad_input(format!("'{s}' is not a size; write e.g. 4GiB or 512MiB")))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(Error::bad_input(format!(
                "'{s}' has an unknown unit; use KiB, MiB or GiB"
            )));
        }
    };
    Ok((n * mult) as usize)
}

#[cfg(test)]
mod tests {
    /// A value put where it does not belong (a credential under `[storage]`) is not
    /// repeated in the error, which still names the line and the key.
    #[test]
    fn job_file_errors_name_the_key_but_never_quote_the_value() {
        let text = "[job]\nname = \"j\"\noutput = \"runs\"\n[inputs]\n[storage]\nsecret_access_key = \"wJalrXUtnFEMI-K7MDENG\"\n";
        let e = Job::parse(text, Path::new("/jobs/j.toml"), None).unwrap_err();
        assert!(!e.message.contains("wJalrXUtnFEMI"), "{}", e.message);
        assert!(e.message.contains("line 6"), "{}", e.message);
        assert!(e.message.contains("secret_access_key"), "{}", e.message);
    }

    use super::*;

    const MINIMAL: &str = r#"
[job]
name = "complex-needs"
as_of = "2026-04-01"
output = "runs"
[inputs]
patients = "data/patients.parquet"
appointments = "data/appointments/"
prescriptions = "data/prescriptions.parquet"
admissions = "data/admissions.parquet"
optouts = "data/optouts.parquet"
"#;

    #[test]
    fn a_cluster_broadcasts_up_to_1gib_unless_told() {
        let abs = MINIMAL.replace("\"data/", "\"/data/");
        let on = |extra: &str| {
            let text =
                format!("{abs}[cluster]\nscheduler = \"df://h:1\"\nscratch = \"/s\"\n{extra}");
            Job::parse(&text, Path::new("/jobs/j.toml"), None)
                .map(|j| j.cluster.unwrap().broadcast_limit)
        };
        assert_eq!(on("").unwrap(), 1 << 30);
        assert_eq!(on("broadcast_limit = \"0\"").unwrap(), 0);
        assert_eq!(on("broadcast_limit = \"2GiB\"").unwrap(), 2 << 30);
        let e = on("broadcast_limit = \"big\"").unwrap_err();
        assert!(
            e.message.contains("[cluster] broadcast_limit"),
            "{}",
            e.message
        );
    }

    #[test]
    fn parses_and_resolves_relative_paths() {
        let job = Job::parse(MINIMAL, Path::new("/jobs/j.toml"), None).unwrap();
        assert_eq!(job.name, "complex-needs");
        assert_eq!(job.as_of, NaiveDate::from_ymd_opt(2026, 4, 1).unwrap());
        assert_eq!(job.inputs["patients"], "/jobs/data/patients.parquet");
        assert_eq!(job.output, Output::Folder(PathBuf::from("/jobs/runs")));
        assert_eq!(
            job.cohorts,
            vec![CohortSpec::Builtin("complex_needs".into())]
        );
    }

    /// Regression (fault review of 2026-12-07): runs written inside an input folder
    /// were read as that input by every later run.
    #[test]
    fn an_output_inside_an_input_folder_is_refused() {
        let dir = std::env::temp_dir().join(format!("rs-job-out-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data/appointments")).unwrap();
        let job = dir.join("job.toml");
        let parse = |output: &str, prescriptions: &str| {
            let text = MINIMAL
                .replace("output = \"runs\"", &format!("output = \"{output}\""))
                .replace("data/prescriptions.parquet", prescriptions);
            Job::parse(&text, &job, None)
        };
        for (output, prescriptions, table) in [
            ("data/appointments/runs", "data/p.parquet", "appointments"),
            (
                "data/appointments/../appointments/x",
                "data/p.parquet",
                "appointments",
            ),
            ("data/rx/2026/runs", "data/rx/*/*.parquet", "prescriptions"),
        ] {
            let e = parse(output, prescriptions).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.message.contains("[job] output")
                    && e.message.contains(&format!("read as {table}")),
                "{output}: {}",
                e.message
            );
        }
        // A file:// URL is a local path too.
        let url = format!("file://{}/data/rx/*.parquet", dir.display());
        let e = parse("data/rx/runs", &url).unwrap_err();
        assert!(e.message.contains("read as prescriptions"), "{}", e.message);
        // Beside the inputs, or holding them, is fine, as is a folder a glob cannot
        // reach.
        assert!(parse("runs", "data/rx/*/*.parquet").is_ok());
        assert!(parse("data/runs", "data/rx-*.parquet").is_ok());
        assert!(parse("data", "data/p.parquet").is_ok());
        assert!(parse("data/appointments-runs", "data/p.parquet").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_object_store_output_keeps_the_scheduler_state_beside_the_job_file() {
        let text = MINIMAL.replace("output = \"runs\"", "output = \"s3://bucket/runs/\"");
        let job = Job::parse(&text, Path::new("/jobs/j.toml"), None).unwrap();
        assert_eq!(
            job.output,
            Output::Store {
                url: "s3://bucket/runs".into(),
                state: PathBuf::from("/jobs/.riskstrat"),
            }
        );
        assert_eq!(
            job.output.state_dir("complex-needs"),
            PathBuf::from("/jobs/.riskstrat/complex-needs")
        );
        let local = Job::parse(MINIMAL, Path::new("/jobs/j.toml"), None).unwrap();
        assert_eq!(
            local.output.state_dir("complex-needs"),
            PathBuf::from("/jobs/runs/complex-needs")
        );
        for bad in ["ftp://host/runs", "s3://", "https://example.org/runs"] {
            let text = MINIMAL.replace("output = \"runs\"", &format!("output = \"{bad}\""));
            let e = Job::parse(&text, Path::new("/jobs/j.toml"), None).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.message.contains("[job] output"), "{}", e.message);
        }
    }

    #[test]
    fn as_of_override_wins() {
        let job = Job::parse(MINIMAL, Path::new("j.toml"), Some("2025-01-31")).unwrap();
        assert_eq!(job.as_of, NaiveDate::from_ymd_opt(2025, 1, 31).unwrap());
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("output = \"runs\"", "output = \"runs\"\noutptu = \"x\"");
        let e = Job::parse(&text, Path::new("j.toml"), None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("outptu"), "{}", e.message);
    }

    #[test]
    fn unknown_input_table_is_named() {
        let text = MINIMAL.replace("[inputs]", "[inputs]\npatiants = \"x.parquet\"");
        let e = Job::parse(&text, Path::new("j.toml"), None).unwrap_err();
        assert!(e.message.contains("patiants"), "{}", e.message);
    }

    #[test]
    fn bad_date_is_named() {
        let text = MINIMAL.replace("2026-04-01", "01/04/2026");
        let e = Job::parse(&text, Path::new("j.toml"), None).unwrap_err();
        assert!(
            e.message.contains("as_of") && e.message.contains("01/04/2026"),
            "{}",
            e.message
        );
    }

    #[test]
    fn missing_required_input_is_named() {
        let text = MINIMAL.replace("optouts = \"data/optouts.parquet\"\n", "");
        let e = Job::parse(&text, Path::new("j.toml"), None).unwrap_err();
        assert!(e.message.contains("optouts"), "{}", e.message);
    }

    #[test]
    fn repeated_tier_names_are_refused_naming_the_setting() {
        let text = format!(
            "{MINIMAL}[model]\n{}",
            r#"tiers = [{ name = "high", up_to = 0.05 }, { name = "high", up_to = 0.2 }, { name = "low", up_to = 1.0 }]"#
        );
        let e = Job::parse(&text, Path::new("j.toml"), None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.message.contains("[model] tiers") && e.message.contains("'high'"),
            "{}",
            e.message
        );
    }

    /// Regression: a temp_dir that did not exist failed at the first spill, exit 1,
    /// "No such file or directory", naming nothing.
    #[test]
    fn temp_dir_that_does_not_exist_is_refused_naming_the_setting() {
        let job = std::env::temp_dir().join("j.toml");
        let with = |t: &str| format!("{MINIMAL}\n[resources]\ntemp_dir = \"{t}\"\n");
        let here = std::env::temp_dir();
        assert!(Job::parse(&with(here.to_str().unwrap()), &job, None).is_ok());
        let e = Job::parse(&with("/no/such/spill/folder"), &job, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("[resources] temp_dir"), "{}", e.message);
        for n in [0, MAX_TARGET_PARTITIONS + 1] {
            let t = format!("{MINIMAL}\n[resources]\ntarget_partitions = {n}\n");
            let e = Job::parse(&t, &job, None).unwrap_err();
            assert!(
                e.message.contains("[resources] target_partitions")
                    && e.message.contains(&n.to_string()),
                "{}",
                e.message
            );
        }
        let t = format!("{MINIMAL}\n[resources]\ntarget_partitions = {MAX_TARGET_PARTITIONS}\n");
        assert!(Job::parse(&t, &job, None).is_ok());
        let none = format!("{MINIMAL}\n[outcomes]\ncandidates = 0\n");
        let e = Job::parse(&none, &job, None).unwrap_err();
        assert!(e.message.contains("[outcomes] candidates"), "{}", e.message);
    }

    #[test]
    fn sql_dir_that_does_not_exist_is_refused_naming_the_setting() {
        let dir = std::env::temp_dir().join(format!("rs-job-sqldir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("my-sql")).unwrap();
        let job = dir.join("j.toml");
        let text = MINIMAL.replace(
            "output = \"runs\"",
            "output = \"runs\"\nsql_dir = \"my-sql\"",
        );
        let ok = Job::parse(&text, &job, None).unwrap();
        assert_eq!(ok.sql_dir, Some(dir.join("my-sql")));
        let typo = text.replace("my-sql", "my-sqll");
        let e = Job::parse(&typo, &job, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.message.contains("[job] sql_dir") && e.message.contains("my-sqll"),
            "{}",
            e.message
        );
        // A file is not a folder of SQL files either.
        std::fs::write(dir.join("file.sql"), "SELECT 1").unwrap();
        let file = text.replace("my-sql", "file.sql");
        let e = Job::parse(&file, &job, None).unwrap_err();
        assert!(e.message.contains("[job] sql_dir"), "{}", e.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn urls_are_not_paths() {
        assert!(is_url("s3://bucket/x"));
        assert!(is_url("file:///tmp/x"));
        assert!(!is_url("/tmp/x"));
        assert!(!is_url("data/x.parquet"));
    }
}
