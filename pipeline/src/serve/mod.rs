//! Commissioner queries: the views of a run, answered only through disclosure
//! control. `query` uses this in-process; `serve` puts it behind Flight SQL.
//!
//! Person-level run files (features, scores, cohorts) are registered only in a
//! private session used to build the views; the commissioner's session holds
//! nothing but the views (`views::VIEWS`), so no query can name a person table.

pub mod access;
pub mod flight;
pub mod render;
pub mod views;

use crate::bad_input;
use crate::error::{Error, Result};
use crate::governance::disclosure_control::{self, Guarded, Policy};
use crate::outputs::run_folder::{read_manifest, register_file};
use crate::session::{SessionOptions, new_context};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::catalog::{Session, TableProvider};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, ident, lit};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use views::{Catalog, VIEWS};

/// The catalog every commissioner session shows; one schema per job.
pub const CATALOG: &str = "riskstrat";

/// A job's schema name: its name with `-` as `_`, so it needs no quoting.
pub fn schema_name(job: &str) -> String {
    job.replace('-', "_")
}

/// One run as a commissioner sees it.
#[derive(Debug, Clone)]
pub struct RunViews {
    pub job: String,
    pub run_id: String,
    pub dir: PathBuf,
    pub catalog: Catalog,
    schema: Arc<MemorySchemaProvider>,
}

/// A commissioner session over one or more runs (the newest of each job).
#[derive(Clone)]
pub struct Commissioner {
    ctx: SessionContext,
    pub runs: Vec<RunViews>,
    pub policy: Policy,
}

/// A protected answer: counts rounded, small numbers suppressed.
#[derive(Debug, Clone)]
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Per column: a grouping key, or a (protected) count or statistic.
    pub outputs: Vec<disclosure_control::Output>,
}

impl Commissioner {
    /// A session over these run folders; the first is the default schema.
    pub async fn open(runs: &[PathBuf], policy: Policy) -> Result<Self> {
        let mut opened = Vec::new();
        for dir in runs {
            opened.push(open_run(dir).await?);
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
        }
        Ok(Self { ctx, runs, policy })
    }

    pub fn catalog(&self) -> Catalog {
        Catalog {
            views: self
                .runs
                .iter()
                .flat_map(|r| r.catalog.views.iter().cloned())
                .collect(),
        }
    }

    /// Plan, check, run and protect one query. Refusals are bad input naming the rule.
    pub async fn query(&self, sql: &str) -> Result<Answer> {
        let guarded = self.plan(sql).await?;
        let batches = self.execute(&guarded).await?;
        self.protect(&guarded, batches)
    }

    /// Run a guarded plan; the raw rows must go through `protect` before anyone sees
    /// them. DataFusion's own error, so a server can tell a memory limit apart.
    pub async fn execute(&self, guarded: &Guarded) -> datafusion::error::Result<Vec<RecordBatch>> {
        DataFrame::new(self.ctx.state(), guarded.plan.clone())
            .collect()
            .await
    }

    /// The same session with its own memory pool of `limit` bytes and no spilling, for
    /// one query of the server: a query that needs more fails with DataFusion's
    /// ResourcesExhausted instead of starving the others or filling a disk with
    /// person-level spill files. Shares the catalog and the file caches.
    pub fn with_memory_limit(&self, limit: usize) -> Result<Self> {
        let state = self.ctx.state();
        let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_limit(limit, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .build();
        Ok(Self {
            ctx: SessionContext::new_with_state(state),
            runs: self.runs.clone(),
            policy: self.policy,
        })
    }

    /// The guarded plan of a query: planned from SQL (no DDL, DML or statements are
    /// even planned into effect), then checked by disclosure control.
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
        Ok(disclosure_control::guard(&plan, &self.catalog())?)
    }

    /// Suppress and round every batch, dropping the hidden columns.
    pub fn protect(&self, guarded: &Guarded, batches: Vec<RecordBatch>) -> Result<Answer> {
        let mut out = Vec::with_capacity(batches.len());
        for b in &batches {
            out.push(disclosure_control::protect(b, guarded, &self.policy)?);
        }
        let schema = match out.first() {
            Some(b) => b.schema(),
            None => {
                let empty =
                    RecordBatch::new_empty(Arc::new(guarded.plan.schema().as_arrow().clone()));
                disclosure_control::protect(&empty, guarded, &self.policy)?.schema()
            }
        };
        let rows = out.iter().map(|b| b.num_rows()).sum();
        Ok(Answer {
            schema,
            batches: out,
            rows,
            outputs: guarded.outputs.clone(),
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// Build the views of one run folder in a private session that holds its person-level
/// files; only the views leave it.
pub async fn open_run(dir: &Path) -> Result<RunViews> {
    let manifest = read_manifest(dir)?;
    let base = new_context(&SessionOptions::default())?;
    for (name, file) in [
        ("features", "features.parquet"),
        ("scores", "scores.parquet"),
    ] {
        register_file(&base, name, &dir.join(file)).await?;
    }
    // Cohort membership, long: (pseudo_id, cohort), from each cohort file.
    let mut membership: Option<DataFrame> = None;
    for cohort in manifest.cohorts.keys() {
        let df = base
            .read_parquet(
                dir.join(format!("cohort_{cohort}.parquet"))
                    .to_string_lossy()
                    .as_ref(),
                ParquetReadOptions::default(),
            )
            .await?
            .select(vec![
                ident("pseudo_id"),
                lit(cohort.as_str()).alias("cohort"),
            ])?;
        membership = Some(match membership {
            Some(m) => m.union(df)?,
            None => df,
        });
    }
    let membership = match membership {
        Some(m) => m,
        None => base.sql("SELECT CAST(NULL AS VARCHAR) AS pseudo_id, CAST(NULL AS VARCHAR) AS cohort WHERE false").await?,
    };
    base.register_table("cohort_membership", membership.into_view())?;
    for (name, file) in [
        ("service_outcomes_table", "service_outcomes.parquet"),
        ("feedback_outcomes_table", "feedback_outcomes.parquet"),
    ] {
        let path = dir.join(file);
        if path.exists() {
            register_file(&base, name, &path).await?;
        }
    }
    register_view(&base, "person", "views/person.sql").await?;

    let schema = Arc::new(MemorySchemaProvider::new());
    let mut catalog = Catalog::default();
    for v in VIEWS {
        if v.needs.is_some_and(|f| !dir.join(f).exists()) {
            continue;
        }
        let table = register_view(&base, v.name, v.file).await?;
        catalog.views.push((v, table.schema()));
        schema.register_table(v.name.to_string(), table)?;
    }
    Ok(RunViews {
        job: manifest.job.clone(),
        run_id: manifest.run_id.clone(),
        dir: dir.to_path_buf(),
        catalog,
        schema,
    })
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
