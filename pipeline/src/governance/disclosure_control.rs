//! THE disclosure control. Read this file to know what a commissioner can get out.
//!
//! Every commissioner result passes through here twice: `guard` on the query's
//! logical plan (as planned from SQL, before views are inlined, so the commissioner
//! views are its leaves), then `protect` on the rows it returns.
//!
//! `guard` accepts exactly two shapes, and refuses everything else naming the rule:
//!
//! A. one aggregate over one person-level view:
//!    `[Limit] [Sort] [Projection] [SubqueryAlias]... Aggregate <- (Filter | Projection
//!    | SubqueryAlias | Sort)... <- person view`, where
//!    - the aggregates are `count`, `sum` or `avg` of a plain column (or `count(*)`),
//!      without DISTINCT, FILTER or ORDER BY; `sum`/`avg` only of measures;
//!    - the grouping keys are plain columns the view declares as dimensions (never an
//!      identifier, an exact date or a measure such as risk);
//!    - nothing filters the groups (no HAVING), nothing limits, joins, unions or
//!      windows the people before they are aggregated, and no subquery hides anywhere;
//!    - every output column is a grouping key or an aggregate as it is: no
//!      arithmetic, casts or string tricks on top.
//! B. rows of one pre-aggregated view (cohort_summary, service_outcomes, ...), filtered
//!    only on its dimensions.
//!
//! `guard` adds hidden columns to the plan: the people in each group (`count(*)`, or
//! the aggregate view's `people`) and, for each `sum`/`avg`, the people it was
//! computed over. `protect` then, per the contract: suppresses (null) every statistic
//! of a group of 1-7 people and every count of 1-7; rounds every other count
//! (`count`, `sum` of an integer, a view's counts) to the nearest 5; and gives other
//! statistics (averages, sums of money or risk, rates) to 3 significant figures so
//! that differencing two large groups does not give one person's value. Thresholds
//! can be raised, never lowered.

use crate::error::{Error, Result};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch,
};
use datafusion::arrow::compute::kernels::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, ScalarValue};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};
use std::sync::Arc;

/// The contract's thresholds; configurable upward only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Groups and counts below this (and above 0) are suppressed.
    pub min_people: i64,
    /// Other counts are rounded to the nearest multiple of this.
    pub round_to: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_people: 8,
            round_to: 5,
        }
    }
}

impl Policy {
    pub fn new(min_people: i64, round_to: i64) -> Result<Self> {
        let d = Policy::default();
        if min_people < d.min_people || round_to < d.round_to {
            return Err(Error::bad_input(format!(
                "disclosure thresholds may be raised, never lowered below the contract's (suppress groups under {}, round counts to {})",
                d.min_people, d.round_to
            )));
        }
        Ok(Self {
            min_people,
            round_to,
        })
    }
}

/// What a view's column is to disclosure control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A category people can be grouped and filtered by (practice, age band, ...).
    Dimension,
    /// A per-person number that may be summed or averaged (risk, admissions, ...).
    Measure,
    /// In a pre-aggregated view: the number of people in the row.
    People,
    /// In a pre-aggregated view: a count (rounded, suppressed under the threshold).
    Count,
    /// In a pre-aggregated view: a statistic (suppressed with its row, 3 s.f.).
    Statistic,
}

/// What disclosure control needs to know of a view.
pub trait ViewRoles {
    /// Whether `view` is person-level (one row per person), or pre-aggregated; None
    /// if there is no such view.
    fn person_level(&self, view: &str) -> Option<bool>;
    fn role(&self, view: &str, column: &str) -> Option<Role>;
}

/// Why a query was refused: the rule it broke, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub detail: String,
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::bad_input(format!(
            "refused by disclosure control [{}]: {}",
            r.rule, r.detail
        ))
    }
}

fn refuse<T>(rule: &'static str, detail: impl Into<String>) -> std::result::Result<T, Refusal> {
    Err(Refusal {
        rule,
        detail: detail.into(),
    })
}

/// What an output column is, and which hidden column counts the people behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Key,
    /// A count of people or events: suppressed if 1 to min-1, else rounded.
    Count,
    /// Any other statistic; `n` is the hidden column of the people it is computed
    /// over, if not the whole group.
    Statistic {
        n: Option<usize>,
    },
}

impl Output {
    pub fn is_key(&self) -> bool {
        matches!(self, Output::Key)
    }
}

/// A plan that passed the guard, with hidden columns after the visible ones.
#[derive(Debug, Clone)]
pub struct Guarded {
    pub plan: LogicalPlan,
    pub outputs: Vec<Output>,
    /// Index of the hidden group-size column.
    pub people: usize,
}

const PEOPLE: &str = "__people";

fn hidden_n(i: usize) -> String {
    format!("__n_{i}")
}

/// Check a planned query and add the hidden columns `protect` needs.
pub fn guard(plan: &LogicalPlan, views: &dyn ViewRoles) -> std::result::Result<Guarded, Refusal> {
    // The nodes above the aggregate (or the aggregate view), top first.
    let mut above: Vec<&LogicalPlan> = Vec::new();
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                for e in &p.expr {
                    if as_column(e).is_none() {
                        return refuse(
                            "output",
                            format!(
                                "output `{}` is computed from aggregates; select grouping keys and count/sum/avg as they are",
                                e.schema_name()
                            ),
                        );
                    }
                }
            }
            LogicalPlan::Sort(s) => {
                if s.expr.iter().any(|e| as_column(&e.expr).is_none()) {
                    return refuse("order", "ORDER BY may name output columns only");
                }
            }
            LogicalPlan::Limit(_) | LogicalPlan::SubqueryAlias(_) | LogicalPlan::Filter(_) => {}
            LogicalPlan::Aggregate(a) => return guard_aggregate(plan, &above, a, views),
            LogicalPlan::TableScan(t) => {
                return guard_aggregate_view(plan, &above, t.table_name.table(), views);
            }
            other => return refuse_node(other, "above the aggregate"),
        }
        if let LogicalPlan::Filter(f) = node
            && has_subquery(&f.predicate)
        {
            return refuse("subquery", "subqueries are not allowed");
        }
        above.push(node);
        node = node.inputs()[0];
    }
}

fn refuse_node<T>(node: &LogicalPlan, place: &str) -> std::result::Result<T, Refusal> {
    match node {
        LogicalPlan::Join(_) => refuse("join", "joins are not allowed: each query reads one view"),
        LogicalPlan::Union(_) => refuse("union", "UNION is not allowed"),
        LogicalPlan::Window(_) => refuse("window", "window functions are not allowed"),
        LogicalPlan::Distinct(_) => refuse(
            "aggregate",
            "DISTINCT lists rows: aggregate with count, sum or avg instead",
        ),
        LogicalPlan::Limit(_) => refuse(
            "limit",
            "LIMIT before aggregating would pick out a few people",
        ),
        LogicalPlan::Aggregate(_) => refuse("aggregate", "aggregate exactly once"),
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => {
            refuse("view", "a query must read one of the commissioner views")
        }
        LogicalPlan::Ddl(_)
        | LogicalPlan::Dml(_)
        | LogicalPlan::Copy(_)
        | LogicalPlan::Statement(_) => refuse("select", "only SELECT queries are allowed"),
        other => refuse(
            "plan",
            format!("{} is not allowed {place}", other.display()),
        ),
    }
}

/// The column an output expression passes through, if it is nothing more.
fn as_column(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => as_column(&a.expr),
        _ => None,
    }
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::InSubquery(_)
                | Expr::Exists(_)
                | Expr::OuterReferenceColumn(..)
        ))
    })
    .unwrap_or(true)
}

/// The view under a chain of single-input nodes, checking each node on the way.
fn person_view<'a>(
    mut node: &'a LogicalPlan,
    views: &dyn ViewRoles,
) -> std::result::Result<String, Refusal> {
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                if has_subquery(&f.predicate) {
                    return refuse("subquery", "subqueries are not allowed");
                }
            }
            LogicalPlan::Projection(p) => {
                if let Some(e) = p.expr.iter().find(|e| !matches!(e, Expr::Column(_))) {
                    return refuse(
                        "derived",
                        format!(
                            "`{}`: below the aggregate, select view columns as they are (no computed or renamed columns)",
                            e.schema_name()
                        ),
                    );
                }
            }
            LogicalPlan::SubqueryAlias(_) | LogicalPlan::Sort(_) => {}
            LogicalPlan::TableScan(t) => {
                let name = t.table_name.table().to_string();
                return match views.person_level(&name) {
                    Some(true) => Ok(name),
                    Some(false) => refuse(
                        "aggregate",
                        format!(
                            "{name} is already aggregated: select from it without aggregating again"
                        ),
                    ),
                    None => refuse("view", format!("{name} is not a commissioner view")),
                };
            }
            other => return refuse_node(other, "before aggregating"),
        }
        node = node.inputs()[0];
    }
}

fn guard_aggregate(
    root: &LogicalPlan,
    above: &[&LogicalPlan],
    agg: &Aggregate,
    views: &dyn ViewRoles,
) -> std::result::Result<Guarded, Refusal> {
    if above.iter().any(|n| matches!(n, LogicalPlan::Filter(_))) {
        return refuse(
            "having",
            "HAVING (or a filter on aggregated results) is not allowed: it would single out small groups",
        );
    }
    let view = person_view(&agg.input, views)?;
    let role = |c: &Column| views.role(&view, &c.name);
    for g in &agg.group_expr {
        match g {
            Expr::Column(c) if role(c) == Some(Role::Dimension) => {}
            Expr::Column(c) => {
                return refuse(
                    "group",
                    format!(
                        "`{}` is not a dimension of {view}: group by categories only",
                        c.name
                    ),
                );
            }
            Expr::GroupingSet(_) => {
                return refuse("group", "ROLLUP, CUBE and GROUPING SETS are not allowed");
            }
            other => {
                return refuse(
                    "group",
                    format!(
                        "group by view columns as they are, not `{}`",
                        other.schema_name()
                    ),
                );
            }
        }
    }

    // Each aggregate: its kind, and for sum/avg the hidden count of its people.
    let input_schema = agg.input.schema();
    let mut kinds = Vec::new();
    let mut hidden = vec![count(Expr::Literal(ScalarValue::Int64(Some(1)), None)).alias(PEOPLE)];
    for (i, e) in agg.aggr_expr.iter().enumerate() {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(f) = inner else {
            return refuse(
                "aggregate",
                format!("`{}` is not an allowed aggregate", e.schema_name()),
            );
        };
        let name = f.func.name().to_ascii_lowercase();
        let p = &f.params;
        if !["count", "sum", "avg"].contains(&name.as_str()) {
            return refuse(
                "aggregate",
                format!(
                    "{name} is not allowed: use count, sum or avg (min, max, medians, percentiles and lists would show individuals)"
                ),
            );
        }
        if p.distinct || p.filter.is_some() || !p.order_by.is_empty() {
            return refuse(
                "aggregate",
                format!("{name} with DISTINCT, FILTER or ORDER BY is not allowed"),
            );
        }
        let kind = match (name.as_str(), p.args.as_slice()) {
            ("count", [Expr::Literal(..)]) => Output::Count,
            ("count", [Expr::Column(c)]) if role(c).is_some() => Output::Count,
            (_, [Expr::Column(c)]) if role(c) == Some(Role::Measure) => {
                let ty = input_schema
                    .field_with_name(c.relation.as_ref(), &c.name)
                    .map(|f| f.data_type().clone())
                    .unwrap_or(DataType::Float64);
                hidden.push(count(Expr::Column(c.clone())).alias(hidden_n(i)));
                if name == "sum" && ty.is_integer() {
                    // A sum of whole numbers counts events: treat it as a count.
                    Output::Count
                } else {
                    Output::Statistic {
                        n: Some(hidden.len() - 1),
                    }
                }
            }
            (_, [Expr::Column(c)]) => {
                return refuse(
                    "aggregate",
                    format!(
                        "{name}({}) is not allowed: sum and avg take a measure of the view",
                        c.name
                    ),
                );
            }
            _ => {
                return refuse(
                    "aggregate",
                    format!(
                        "{name} takes one view column as it is, not `{}`",
                        e.schema_name()
                    ),
                );
            }
        };
        kinds.push(kind);
    }
    let n_keys = agg.group_expr.len();
    let hidden_names: Vec<String> = hidden.iter().map(|e| e.schema_name().to_string()).collect();
    let mut aggr_expr = agg.aggr_expr.clone();
    aggr_expr.extend(hidden);
    let new_agg = LogicalPlan::Aggregate(
        Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), aggr_expr).map_err(|e| {
            Refusal {
                rule: "plan",
                detail: e.to_string(),
            }
        })?,
    );
    // A statistic's `n` indexes `hidden` here; `finish` makes it an output index.
    let outputs = trace(root, above, |i| {
        if i < n_keys {
            Output::Key
        } else {
            kinds[i - n_keys]
        }
    })?;
    finish(new_agg, above, &hidden_names, outputs)
}

fn guard_aggregate_view(
    root: &LogicalPlan,
    above: &[&LogicalPlan],
    view: &str,
    views: &dyn ViewRoles,
) -> std::result::Result<Guarded, Refusal> {
    match views.person_level(view) {
        None => return refuse("view", format!("{view} is not a commissioner view")),
        Some(true) => {
            return refuse(
                "aggregate",
                format!(
                    "{view} has a row per person: aggregate it with count, sum or avg, grouped by its dimensions"
                ),
            );
        }
        Some(false) => {}
    }
    for n in above {
        if let LogicalPlan::Filter(f) = n {
            let mut bad = None;
            let _ = f.predicate.apply(|e| {
                if let Expr::Column(c) = e
                    && views.role(view, &c.name) != Some(Role::Dimension)
                {
                    bad = Some(c.name.clone());
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            });
            if let Some(c) = bad {
                return refuse(
                    "filter",
                    format!("filter {view} on its dimensions only, not `{c}`"),
                );
            }
        }
    }
    let scan = match above.last() {
        Some(n) => n.inputs()[0],
        None => root,
    };
    let LogicalPlan::TableScan(t) = scan else {
        unreachable!("guard stops at the scan")
    };
    let people = views_people(
        view,
        &t.projected_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>(),
        views,
    )
    .ok_or_else(|| Refusal {
        rule: "view",
        detail: format!("{view} declares no people column"),
    })?;
    let schema = t.projected_schema.clone();
    let outputs = trace(root, above, |i| {
        let name = schema.field(i).name();
        match views.role(view, name) {
            Some(Role::Dimension) | None => Output::Key,
            Some(Role::People) | Some(Role::Count) => Output::Count,
            Some(Role::Statistic) | Some(Role::Measure) => Output::Statistic { n: None },
        }
    })?;
    // Carry the view's people column up as the hidden group size.
    let mut exprs: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    exprs.push(Expr::Column(Column::new_unqualified(&people)).alias(PEOPLE));
    let base = LogicalPlan::Projection(
        Projection::try_new(exprs, Arc::new(scan.clone())).map_err(|e| Refusal {
            rule: "plan",
            detail: e.to_string(),
        })?,
    );
    finish(base, above, &[PEOPLE.to_string()], outputs)
}

fn views_people(view: &str, columns: &[String], views: &dyn ViewRoles) -> Option<String> {
    columns
        .iter()
        .find(|c| views.role(view, c) == Some(Role::People))
        .cloned()
}

/// For each output column of `root`, what it is: followed down through the nodes
/// above to the column of the aggregate (or scan) it comes from.
fn trace(
    root: &LogicalPlan,
    above: &[&LogicalPlan],
    at_bottom: impl Fn(usize) -> Output,
) -> std::result::Result<Vec<Output>, Refusal> {
    let width = root.schema().fields().len();
    let mut out = Vec::with_capacity(width);
    for i in 0..width {
        let mut idx = i;
        for n in above {
            if let LogicalPlan::Projection(p) = n {
                let c = as_column(&p.expr[idx]).expect("checked in guard");
                idx = p.input.schema().index_of_column(c).map_err(|e| Refusal {
                    rule: "plan",
                    detail: e.to_string(),
                })?;
            }
        }
        out.push(at_bottom(idx));
    }
    Ok(out)
}

/// Rebuild the nodes above `bottom`, each Projection carrying the hidden columns.
fn finish(
    bottom: LogicalPlan,
    above: &[&LogicalPlan],
    hidden: &[String],
    outputs: Vec<Output>,
) -> std::result::Result<Guarded, Refusal> {
    let err = |e: datafusion::error::DataFusionError| Refusal {
        rule: "plan",
        detail: e.to_string(),
    };
    let mut plan = bottom;
    for n in above.iter().rev() {
        plan = match n {
            LogicalPlan::Projection(p) => {
                let mut exprs = p.expr.clone();
                exprs.extend(
                    hidden
                        .iter()
                        .map(|h| Expr::Column(Column::new_unqualified(h))),
                );
                LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan)).map_err(err)?)
            }
            other => other
                .with_new_exprs(other.expressions(), vec![plan])
                .map_err(err)?,
        };
    }
    let schema = plan.schema().clone();
    let position = |name: &str| {
        schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .ok_or_else(|| Refusal {
                rule: "plan",
                detail: format!("hidden column {name} lost"),
            })
    };
    let people = position(PEOPLE)?;
    // Statistic n: index into `hidden` -> index in the output.
    let mut fixed = Vec::with_capacity(outputs.len());
    for o in outputs {
        fixed.push(match o {
            Output::Statistic { n: Some(h) } => Output::Statistic {
                n: Some(position(&hidden[h])?),
            },
            o => o,
        });
    }
    Ok(Guarded {
        plan,
        outputs: fixed,
        people,
    })
}

/// Apply suppression and rounding to a guarded query's rows, dropping the hidden
/// columns. Counts come out as Int64, other statistics as Float64.
pub fn protect(batch: &RecordBatch, g: &Guarded, policy: &Policy) -> Result<RecordBatch> {
    let int = |i: usize| -> Result<Int64Array> {
        let a = cast::cast(batch.column(i), &DataType::Int64)?;
        Ok(a.as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64")
            .clone())
    };
    let small = |v: &Int64Array| -> BooleanArray {
        v.iter()
            .map(|x| Some(x.is_some_and(|x| x >= 1 && x < policy.min_people)))
            .collect()
    };
    let group_small = small(&int(g.people)?);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, o) in g.outputs.iter().enumerate() {
        let field = batch.schema().field(i).clone();
        match o {
            Output::Key => {
                fields.push(field);
                columns.push(batch.column(i).clone());
            }
            Output::Count => {
                let v = int(i)?;
                let own = small(&v);
                let out: Int64Array = (0..v.len())
                    .map(|r| {
                        if v.is_null(r) || group_small.value(r) || own.value(r) {
                            None
                        } else {
                            Some(round_to(v.value(r), policy.round_to))
                        }
                    })
                    .collect();
                fields.push(Field::new(field.name(), DataType::Int64, true));
                columns.push(Arc::new(out));
            }
            Output::Statistic { n } => {
                let v = cast::cast(batch.column(i), &DataType::Float64)?;
                let v = v.as_any().downcast_ref::<Float64Array>().expect("Float64");
                let n_small = n.map(|n| int(n).map(|a| small(&a))).transpose()?;
                let out: Float64Array = (0..v.len())
                    .map(|r| {
                        let hide = v.is_null(r)
                            || group_small.value(r)
                            || n_small.as_ref().is_some_and(|s| s.value(r));
                        (!hide).then(|| significant(v.value(r), 3))
                    })
                    .collect();
                fields.push(Field::new(field.name(), DataType::Float64, true));
                columns.push(Arc::new(out));
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// To the nearest multiple of `step` (halves away from zero).
pub fn round_to(v: i64, step: i64) -> i64 {
    let r = v.rem_euclid(step);
    if 2 * r >= step { v - r + step } else { v - r }
}

/// `v` to `digits` significant figures.
pub fn significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(round_to(8, 5), 10);
        assert_eq!(round_to(12, 5), 10);
        assert_eq!(round_to(13, 5), 15);
        assert_eq!(round_to(10, 5), 10);
        assert_eq!(round_to(0, 5), 0);
        assert_eq!(round_to(17, 10), 20);
        assert_eq!(significant(0.0873456, 3), 0.0873);
        assert_eq!(significant(123456.0, 3), 123000.0);
        assert_eq!(significant(-1.2345, 3), -1.23);
    }

    #[test]
    fn thresholds_only_go_up() {
        assert!(Policy::new(7, 5).is_err());
        assert!(Policy::new(8, 4).is_err());
        assert_eq!(Policy::new(10, 10).unwrap().min_people, 10);
    }
}
