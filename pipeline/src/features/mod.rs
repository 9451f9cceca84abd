//! Features: the population at a date, and one row per person in it with every
//! feature of the registry. The SQL files compute the per-person aggregates; the
//! registry decides the columns, their order, types and defaults, and the docs.

pub mod registry;

use crate::bad_input;
use crate::error::Result;
use crate::sql::{Params, SqlSource};
use datafusion::common::JoinType;
use datafusion::prelude::{DataFrame, Expr, SessionContext, ident};
use registry::{FEATURES, Source};
use std::path::PathBuf;

/// Plan the feature table at `params.as_of`: population left-joined to every source.
pub async fn plan(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    extra: &[PathBuf],
) -> Result<DataFrame> {
    let mut df = crate::sql::query(ctx, &sql.get("population.sql")?, params).await?;

    let mut sources: Vec<&str> = Vec::new();
    for f in FEATURES {
        if let Source::Sql(s) = f.source
            && !sources.contains(&s)
        {
            sources.push(s);
        }
    }
    let mut texts = Vec::new();
    for s in &sources {
        let text = sql.get(&format!("features/{s}.sql"))?;
        let wanted: Vec<&str> = FEATURES
            .iter()
            .filter(|f| f.source == Source::Sql(s))
            .map(|f| f.name)
            .collect();
        texts.push((text, wanted));
    }
    let mut extra_columns = Vec::new();
    for p in extra {
        texts.push((crate::sql::read_file(p)?, Vec::new()));
    }

    for (i, (text, wanted)) in texts.into_iter().enumerate() {
        let part = crate::sql::query(ctx, &text, params).await?;
        let names: Vec<String> = part
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if !names.iter().any(|n| n == "pseudo_id") {
            return Err(bad_input!(
                "{}: must return a pseudo_id column",
                text.origin
            ));
        }
        for w in &wanted {
            if !names.iter().any(|n| n == w) {
                return Err(bad_input!(
                    "{}: must return the feature column '{w}'",
                    text.origin
                ));
            }
        }
        let is_extra = wanted.is_empty();
        let mut keep = Vec::new();
        for n in names.iter().filter(|n| *n != "pseudo_id") {
            if is_extra {
                if FEATURES.iter().any(|f| f.name == n)
                    || extra_columns.contains(n)
                    || df.schema().has_column_with_unqualified_name(n)
                {
                    return Err(bad_input!(
                        "{}: column '{n}' already exists; give it another name",
                        text.origin
                    ));
                }
                extra_columns.push(n.clone());
            }
            keep.push(ident(n));
        }
        let key = format!("__key{i}");
        keep.push(ident("pseudo_id").alias(&key));
        let part = part.select(keep)?;
        df = df.join(part, JoinType::Left, &["pseudo_id"], &[key.as_str()], None)?;
    }

    let mut select: Vec<Expr> = vec![ident("pseudo_id")];
    select.extend(FEATURES.iter().map(|f| f.expr(params).alias(f.name)));
    select.extend(extra_columns.iter().map(ident));
    Ok(df.select(select)?)
}

#[cfg(test)]
mod tests {
    use super::registry::*;

    #[test]
    fn every_sql_feature_source_is_builtin() {
        for f in FEATURES {
            if let Source::Sql(s) = f.source {
                let text = crate::sql::builtin(&format!("features/{s}.sql")).expect("built-in");
                assert!(text.contains(f.name), "{} not in features/{s}.sql", f.name);
            }
        }
    }

    #[test]
    fn readme_feature_table_is_current() {
        assert_eq!(
            crate::readme_section("features")
                .strip_prefix('\n')
                .expect("a new line after the marker"),
            markdown(),
            "regenerate with `riskstrat features`"
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FEATURES.len());
    }
}
