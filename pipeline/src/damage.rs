//! Which Parquet file a decoding failure came from. DataFusion reports a damaged data
//! page (a footer that reads, data that does not) with the decoder's message and no
//! file. Rather than slow every scan down, a run or query that failed on a decoding
//! error decodes its files one at a time afterwards, and names the first that fails.

use crate::error::Error;
use datafusion::arrow::error::ArrowError;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use datafusion::prelude::{DataFrame, SessionContext, ident};
use futures::StreamExt;
use std::sync::Arc;

/// Whether this one error (not its causes) is a Parquet decoding error.
pub fn is_decode_error(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<ParquetError>()
        || matches!(
            e.downcast_ref::<ArrowError>(),
            Some(ArrowError::ParquetError(_))
        )
        || matches!(
            e.downcast_ref::<DataFusionError>(),
            Some(DataFusionError::ParquetError(_))
        )
}

/// Whether a Parquet decoding error is anywhere in the chain of causes.
pub fn caused_by_decoding(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if is_decode_error(x) {
            return true;
        }
        cur = x.source();
    }
    false
}

/// The same, for riskstrat's error.
pub fn error_is_decoding(e: &Error) -> bool {
    e.source
        .as_deref()
        .is_some_and(|s| caused_by_decoding(s as &(dyn std::error::Error + 'static)))
}

/// One Parquet file as a table of its own (schema from its footer).
pub async fn one_file(ctx: &SessionContext, url: &str) -> datafusion::error::Result<DataFrame> {
    let url = ListingTableUrl::parse(url)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    ctx.read_table(Arc::new(ListingTable::try_new(config)?))
}

/// Decode every page of `columns` (those of them the file has; all when None) of one
/// file, keeping nothing. The error, if any, is the decoder's.
pub async fn decode(
    ctx: &SessionContext,
    url: &str,
    columns: Option<&[&str]>,
) -> datafusion::error::Result<()> {
    let mut df = one_file(ctx, url).await?;
    if let Some(cols) = columns {
        let keep: Vec<_> = cols
            .iter()
            .filter(|c| df.schema().has_column_with_unqualified_name(c))
            .map(|c| ident(*c))
            .collect();
        df = df.select(keep)?;
    }
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        batch?;
    }
    Ok(())
}

/// The first of `urls` whose pages do not decode (`columns` as for [`decode`]), with
/// the decoder's error: what a run or query that failed on a decoding error names.
pub async fn first_damaged(
    ctx: &SessionContext,
    urls: impl IntoIterator<Item = String>,
    columns: Option<&[&str]>,
) -> Option<(String, DataFusionError)> {
    for url in urls {
        if let Err(e) = decode(ctx, &url, columns).await
            && caused_by_decoding(&e)
        {
            return Some((url, e));
        }
    }
    None
}
