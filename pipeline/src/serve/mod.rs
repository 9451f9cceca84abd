//! Commissioner queries: the views of a run, answered only through disclosure
//! control. `query` uses this in-process; `serve` puts it behind Flight SQL.
//!
//! Person-level run files (features, scores, cohorts) are registered only in a
//! private session used to build the views; the commissioner's session holds
//! nothing but the views (`views::VIEWS`), so no query can name a person table.

pub mod access;
pub mod flight;
pub mod limits;
pub mod render;
pub mod views;

use crate::bad_input;
use crate::error::{Error, Result};
use crate::governance::disclosure_control::{self, Guarded, Policy};
use crate::governance::pseudonym::Key;
use crate::outputs::run_store::RunHandle;
use crate::session::{SessionOptions, new_context};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::JoinType;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext, ident, lit};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use views::{Catalog, VIEWS};

/// The catalog every commissioner session shows; one schema per job.
pub const CATALOG: &str = "riskstrat";

/// A job's schema name: its name with `-` as `_`, so it needs no quoting.
pub fn schema_name(job: &str) -> String {
    job.replace('-', "_")
}

/// The deployment's cell key secret: whoever answers commissioners holds it (a key
/// file, 64 hex characters, owner-only), never a run folder.
#[derive(clap::Args, Debug, Clone)]
pub struct CellKeyArg {
    /// The cell key secret file (perturbation of commissioner answers); also from the
    /// environment variable RISKSTRAT_CELL_KEY. Make one with `riskstrat keygen FILE`.
    #[arg(long = "cell-key", env = "RISKSTRAT_CELL_KEY", value_name = "FILE")]
    pub cell_key: Option<PathBuf>,
}

impl CellKeyArg {
    /// Read the secret, refusing one kept inside the data it protects.
    pub fn load(&self, data: &Path) -> Result<Key> {
        let path = self.cell_key.as_ref().ok_or_else(|| {
            bad_input!(
                "--cell-key: commissioner answers are perturbed with the deployment's cell key secret; give its file with --cell-key FILE or RISKSTRAT_CELL_KEY (make one with `riskstrat keygen FILE`)"
            )
        })?;
        crate::governance::refuse_inside(path, data, "--cell-key")?;
        Key::read_file(path).map_err(|e| e.context("--cell-key"))
    }
}

/// One run as a commissioner sees it.
#[derive(Debug, Clone)]
pub struct RunViews {
    pub job: String,
    pub run_id: String,
    /// Where the run is: its folder, or its URL in the run store.
    pub dir: PathBuf,
    pub run: RunHandle,
    pub catalog: Catalog,
    schema: Arc<MemorySchemaProvider>,
}

/// A commissioner session over one or more runs (the newest of each job).
#[derive(Clone)]
pub struct Commissioner {
    ctx: SessionContext,
    pub runs: Vec<RunViews>,
    pub policy: Policy,
    /// Whether each (view, dimensions) cut meets the minimum cell population: it
    /// depends on the run only, so it is computed once.
    cuts: Arc<Mutex<HashMap<(String, Vec<String>), bool>>>,
}

/// A protected answer: counts perturbed and rounded, small cells left out.
#[derive(Debug, Clone)]
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Per column: a grouping key, or a (protected) count or statistic.
    pub outputs: Vec<disclosure_control::Output>,
    /// Per column, over the answer's rows: the cells disclosure control withheld.
    pub withheld: Vec<datafusion::arrow::array::BooleanArray>,
}

/// A commissioner query that failed while running, as the caller sees it: the
/// detail, which could hold data values, goes only to the operator's log, under the
/// reference the caller is given.
pub fn query_failed(detail: &dyn std::fmt::Display) -> Error {
    let reference = format!("{:08x}", rand::random::<u32>());
    tracing::warn!(target: "riskstrat::operator", "query failure {reference}: {detail}");
    Error::failed(format!(
        "the query could not be answered (reference {reference}); tell whoever runs this service the reference"
    ))
}

impl Commissioner {
    /// A session over these runs (folders or run URLs); the first is the default
    /// schema. `secret` is the deployment's cell key secret (`--cell-key`).
    pub async fn open(runs: &[PathBuf], policy: Policy, secret: &Key) -> Result<Self> {
        let runs: Vec<RunHandle> = runs
            .iter()
            .map(|d| RunHandle::at(d))
            .collect::<Result<_>>()?;
        Self::open_runs(&runs, policy, secret).await
    }

    /// A session over runs of any run store; the first is the default schema.
    pub async fn open_runs(runs: &[RunHandle], policy: Policy, secret: &Key) -> Result<Self> {
        let mut opened = Vec::new();
        for run in runs {
            opened.push(open_run(run, secret, &policy).await?);
        }
        Self::from_runs(opened, policy)
    }

    /// A session over already opened runs (the server opens each once and gives each
    /// token the jobs it may see).
    pub fn from_runs(runs: Vec<RunViews>, policy: Policy) -> Result<Self> {
        let default = runs
            .first()
            .map(|r| schema_name(&r.job))
            .ok_or_else(|| Error::bad_input("no run to query"))?;
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema(CATALOG, &default)
            .with_create_default_catalog_and_schema(true)
            .set_bool(
                "datafusion.execution.parquet.schema_force_view_types",
                false,
            );
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::session::register_functions(&ctx)?;
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| Error::failed("no default catalog"))?;
        for r in &runs {
            catalog.register_schema(&schema_name(&r.job), r.schema.clone())?;
            // Views read the run's files when a query runs, in this session.
            r.run.attach(&ctx);
        }
        Ok(Self {
            ctx,
            runs,
            policy,
            cuts: Default::default(),
        })
    }

    pub fn catalog(&self) -> Catalog {
        Catalog {
            views: self
                .runs
                .iter()
                .flat_map(|r| r.catalog.views.iter().cloned())
                .collect(),
            // Disclosure control knows views by name, not run: a view withheld in one
            // run is refused in all (its rows are gone from that run in any case).
            withheld: self
                .runs
                .iter()
                .flat_map(|r| r.catalog.withheld.iter().cloned())
                .collect(),
        }
    }

    /// Plan, check, run and protect one query. Refusals are bad input naming the rule;
    /// a failure while running says nothing but a reference.
    pub async fn query(&self, sql: &str) -> Result<Answer> {
        let guarded = self.plan(sql).await?;
        let batches = match self.execute(&guarded).await {
            Ok(b) => b,
            Err(e) => return Err(self.failed(e).await),
        };
        self.protect(&guarded, batches)
    }

    /// What a caller is told of a failure while running: a damaged run-folder file
    /// is named (a file name is no data); anything else says only a reference.
    async fn failed(&self, e: DataFusionError) -> Error {
        let runs: Vec<&RunHandle> = self.runs.iter().map(|r| &r.run).collect();
        match crate::outputs::run_store::name_damaged_file(&runs, e).await {
            Ok(named) => named,
            Err(e) => query_failed(&e),
        }
    }

    /// Run a guarded plan; the raw rows must go through `protect` before anyone sees
    /// them. DataFusion's own error, so a server can tell a memory limit apart; show
    /// callers `query_failed` of it, never the error itself.
    pub async fn execute(&self, guarded: &Guarded) -> datafusion::error::Result<Vec<RecordBatch>> {
        DataFrame::new(self.ctx.state(), guarded.plan.clone())
            .collect()
            .await
    }

    /// The same session with a memory pool of its own and no spilling, for one query
    /// of the server: a query that needs more than the pool holds fails with
    /// DataFusion's ResourcesExhausted instead of starving the others or filling a
    /// disk with person-level spill files. Shares the catalog and the file caches.
    pub fn with_memory_pool(&self, pool: Arc<limits::QueryPool>) -> Result<Self> {
        let stopped = pool.stop_flag();
        let state = self.ctx.state();
        let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_pool(pool)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let mut state = SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .with_physical_optimizer_rule(Arc::new(limits::YieldPerBatch { stopped }))
            .build();
        // Small batches, each a chance to stop: see `limits::YieldPerBatch`.
        state.config_mut().options_mut().execution.batch_size =
            datafusion::common::config::ConfigNonZeroUsize::try_new(limits::BATCH_ROWS)?;
        Ok(Self {
            ctx: SessionContext::new_with_state(state),
            runs: self.runs.clone(),
            policy: self.policy,
            cuts: self.cuts.clone(),
        })
    }

    /// The guarded plan of a query: planned from SQL (no DDL, DML or statements are
    /// even planned into effect), checked by disclosure control, and its cut checked
    /// against the minimum cell population.
    pub async fn plan(&self, sql: &str) -> Result<Guarded> {
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(|e| bad_input!("query: {}", e.strip_backtrace()))?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|_| {
                Error::from(disclosure_control::Refusal {
                    rule: "select",
                    detail: "only SELECT queries are allowed".into(),
                })
            })?;
        let guarded = disclosure_control::guard(&plan, &self.catalog())?;
        if let Some((view, dims)) = &guarded.partition {
            self.check_cut(view, dims).await?;
        }
        Ok(guarded)
    }

    /// Refuse a query whose cut (the cross-classification of every dimension it
    /// names) has a cell of 1 to `min_people - 1` people anywhere in the view: the
    /// answer depends on the dimensions named, never on the values asked for.
    async fn check_cut(&self, view: &str, dims: &[String]) -> Result<()> {
        let key = (view.to_string(), dims.to_vec());
        let known = self.cuts.lock().expect("cut cache").get(&key).copied();
        let fine = match known {
            Some(fine) => fine,
            None => {
                let small = match self
                    .ctx
                    .table(view)
                    .await?
                    .aggregate(
                        dims.iter().map(|d| ident(d.as_str())).collect(),
                        vec![count(lit(1i64)).alias("n")],
                    )?
                    .filter(ident("n").lt(lit(self.policy.min_people)))?
                    .limit(0, Some(1))?
                    .count()
                    .await
                {
                    Ok(n) => n,
                    Err(e) => return Err(self.failed(e).await),
                };
                let fine = small == 0;
                self.cuts.lock().expect("cut cache").insert(key, fine);
                fine
            }
        };
        if fine {
            Ok(())
        } else {
            Err(disclosure_control::Refusal {
                rule: "cut",
                detail: format!(
                    "{} cut the population of {view} into cells of fewer than {} people: use fewer or coarser dimensions",
                    if dims.is_empty() { "the query".to_string() } else { dims.join(" x ") },
                    self.policy.min_people
                ),
            }
            .into())
        }
    }

    /// Protect a guarded query's raw rows: one batch of released values.
    pub fn protect(&self, guarded: &Guarded, batches: Vec<RecordBatch>) -> Result<Answer> {
        let schema = Arc::new(guarded.plan.schema().as_arrow().clone());
        let out = disclosure_control::protect(&batches, guarded, &self.policy, &schema)?;
        Ok(Answer {
            schema: out.batch.schema(),
            rows: out.batch.num_rows(),
            batches: vec![out.batch],
            outputs: guarded.outputs.clone(),
            withheld: out.withheld,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// Build the views of one run folder in a private session that holds its person-level
/// files and the cell key functions; only the views leave it, and the pre-aggregated
/// ones only as released values.
/// A run folder that could not be read while opening it: a damaged file is named, as
/// the run folder's error; anything else as it is.
async fn opening_failed(run: &RunHandle, e: DataFusionError) -> Error {
    match crate::outputs::run_store::name_damaged_file(&[run], e).await {
        Ok(named) => named,
        Err(e) => e.into(),
    }
}

pub async fn open_run(run: &RunHandle, secret: &Key, policy: &Policy) -> Result<RunViews> {
    let manifest = run.manifest().await?;
    let base = new_context(&SessionOptions::default())?;
    for udf in crate::session::cell_key_udfs(secret) {
        base.register_udf(udf);
    }
    for (name, file) in [
        ("features", "features.parquet"),
        ("scores", "scores.parquet"),
    ] {
        run.register(&base, name, file).await?;
    }
    // Cohort membership, long: (pseudo_id, cohort), from each cohort file; and each
    // compared cohort's changes (sql/views/cohort_changes.sql).
    let cohorts = manifest.cohorts.keys();
    let files = cohorts.map(|c| (c.as_str(), format!("cohort_{c}.parquet")));
    let membership = long_table(&base, run, files, &[]).await?;
    let compared = manifest.changes.keys();
    let files = compared.map(|c| (c.as_str(), crate::changes::file_name(c)));
    let columns = ["change", "practice_code", "previous_tier", "current_tier"];
    let changes = long_table(&base, run, files, &columns).await?;
    base.register_table("cohort_change_rows", changes.into_view())?;
    // Read as this version writes it: a flag added since reads as NULL in older runs.
    let outcomes = crate::service_evaluation::schema();
    for (name, file, schema) in [
        (
            "service_outcomes_table",
            "service_outcomes.parquet",
            Some(outcomes.as_ref()),
        ),
        ("service_people", "service_people.parquet", None),
        ("feedback_people", "feedback_people.parquet", None),
    ] {
        if run.exists(file).await {
            run.register_as(&base, name, file, schema).await?;
        }
    }
    register_view(&base, "person", "views/person.sql").await?;
    // Held in memory once: every query would otherwise recompute two keyed hashes
    // per person.
    let person = match base.table("person").await?.cache().await {
        Ok(p) => p,
        Err(e) => return Err(opening_failed(run, e).await),
    };
    base.deregister_table("person")?;
    base.register_table("person", person.clone().into_view())?;
    let membership = without_small_cohorts(membership, person, policy)?;
    base.register_table("cohort_membership", membership.into_view())?;

    let schema = Arc::new(MemorySchemaProvider::new());
    let mut catalog = Catalog::default();
    for v in VIEWS {
        if !has_all(run, v.needs).await {
            continue;
        }
        let table = register_view(&base, v.name, v.file).await?;
        let table: Arc<dyn TableProvider> = if v.person_level {
            table
        } else {
            // Computed and protected once: a query reads only released rows.
            let rows = match base.table(v.name).await?.collect().await {
                Ok(rows) => rows,
                Err(e) => return Err(opening_failed(run, e).await),
            };
            let raw = datafusion::arrow::compute::concat_batches(&table.schema(), &rows)?;
            let released = disclosure_control::protect_view(
                &raw,
                v.name,
                &Catalog::one(v, table.schema()),
                policy,
            )?;
            let people = v.people.unwrap_or_default();
            let withheld = match v.cut_at_grain {
                true => {
                    disclosure_control::grain_refusal(&raw, v.name, v.dimensions, people, policy)?
                }
                false => None,
            };
            // A withheld view keeps its columns (so a query plans, and is refused) but no rows.
            let released = match withheld {
                Some(r) => {
                    catalog.withheld.push((v.name, r));
                    released.slice(0, 0)
                }
                None => released,
            };
            Arc::new(MemTable::try_new(released.schema(), vec![vec![released]])?)
        };
        catalog.views.push((v, table.schema()));
        schema.register_table(v.name.to_string(), table)?;
    }
    Ok(RunViews {
        job: manifest.job.clone(),
        run_id: manifest.run_id.clone(),
        dir: run.location(),
        run: run.clone(),
        catalog,
        schema,
    })
}

/// Cohort membership without the cohorts of fewer than the policy's minimum of
/// people, which then look as an empty cohort does (regression, disclosure review of
/// 2026-12-07: a cohort of 3 made every query of cohort_people refused, while an
/// empty one answered, so a cohort's first members showed).
/// Counted as `cohort_people` holds them: people of the person view (whose sex is F or
/// M), each once (code review of 2026-12-07: a cohort file of 8 with one person of sex
/// U was kept, and was 7 in the view).
fn without_small_cohorts(
    membership: DataFrame,
    person: DataFrame,
    policy: &Policy,
) -> Result<DataFrame> {
    let people = person.select(vec![ident("pseudo_id").alias("__person")])?;
    let membership = membership.join(
        people,
        JoinType::LeftSemi,
        &["pseudo_id"],
        &["__person"],
        None,
    )?;
    let large = membership
        .clone()
        .aggregate(
            vec![ident("cohort")],
            vec![count_distinct(ident("pseudo_id")).alias("__people")],
        )?
        .filter(ident("__people").gt_eq(lit(policy.min_people)))?
        .select(vec![ident("cohort").alias("__large")])?;
    Ok(membership.join(large, JoinType::LeftSemi, &["cohort"], &["__large"], None)?)
}

/// Per cohort file of the run, its rows as (pseudo_id, cohort, `columns`...), one
/// table of text columns for all of them (empty, typed, when there are none).
async fn long_table(
    base: &SessionContext,
    run: &RunHandle,
    files: impl Iterator<Item = (&str, String)>,
    columns: &[&str],
) -> Result<DataFrame> {
    let mut all: Option<DataFrame> = None;
    for (cohort, file) in files {
        let mut select = vec![ident("pseudo_id"), lit(cohort).alias("cohort")];
        select.extend(columns.iter().map(|c| ident(*c)));
        let df = run.read_parquet(base, &file).await?.select(select)?;
        all = Some(match all {
            Some(a) => a.union(df)?,
            None => df,
        });
    }
    if let Some(a) = all {
        return Ok(a);
    }
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let fields: Vec<Field> = ["pseudo_id", "cohort"]
        .iter()
        .chain(columns)
        .map(|c| Field::new(*c, DataType::Utf8, true))
        .collect();
    let empty = datafusion::arrow::array::RecordBatch::new_empty(Arc::new(Schema::new(fields)));
    Ok(base.read_batch(empty)?)
}

/// Whether the run has every one of `files`.
async fn has_all(run: &RunHandle, files: &[&str]) -> bool {
    for f in files {
        if !run.exists(f).await {
            return false;
        }
    }
    true
}

/// Plan a built-in view's SQL in the private session and register it there, so later
/// views can read it. Built-in only: a job cannot change what commissioners see.
async fn register_view(
    base: &SessionContext,
    name: &str,
    file: &str,
) -> Result<Arc<dyn TableProvider>> {
    let sql = crate::sql::fixed(file)?;
    let plan = base
        .state()
        .create_logical_plan(&sql.text)
        .await
        .map_err(|e| Error::failed(format!("{}: {e}", sql.origin)))?;
    let table: Arc<dyn TableProvider> = Arc::new(SealedView {
        schema: Arc::new(plan.schema().as_arrow().clone()),
        plan,
    });
    base.register_table(name, table.clone())?;
    Ok(table)
}

/// A view whose definition a query cannot see into: unlike DataFusion's `ViewTable`,
/// it is not inlined into the query's plan, so disclosure control sees the view as a
/// leaf and the person-level plan behind it stays out of reach. Scanning plans the
/// definition (with the query's projection) in the querying session.
#[derive(Debug)]
struct SealedView {
    plan: LogicalPlan,
    schema: SchemaRef,
}

#[async_trait::async_trait]
impl TableProvider for SealedView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let mut plan = LogicalPlanBuilder::from(self.plan.clone());
        if let Some(p) = projection {
            let fields = self.plan.schema().columns();
            plan = plan.project(p.iter().map(|&i| Expr::Column(fields[i].clone())))?;
        }
        if let Some(n) = limit {
            plan = plan.limit(0, Some(n))?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a cast error inside a query echoed the row it failed on
    /// (`Cannot cast string 'E01011111|high|0.53'`), to the caller and into the audit log.
    #[test]
    fn runtime_errors_carry_no_data_only_a_reference() {
        let detail = "Arrow error: Cast error: Cannot cast string 'E01011111|high|0.53' to value of Int32 type";
        let a = query_failed(&detail);
        let b = query_failed(&detail);
        for e in [&a, &b] {
            assert!(
                !e.message.contains("E01011111") && !e.message.contains("0.53"),
                "{}",
                e.message
            );
            assert!(e.message.contains("reference "), "{}", e.message);
        }
        assert_ne!(a.message, b.message, "each failure gets its own reference");
    }
}
