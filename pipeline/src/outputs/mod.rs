//! Outputs: the run folder (written whole or not at all), Parquet writers, the
//! manifest and the HTML report.

pub mod manifest;
pub mod report;
pub mod run_folder;
pub mod run_store;

use crate::durable::io_at;
use crate::error::{Error, Result};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::DataFrame;
use std::path::Path;

/// Execute `df` into one Parquet file; returns the number of rows written.
pub async fn write_parquet(df: DataFrame, path: &Path) -> Result<u64> {
    let batches = df
        .write_parquet(
            &path.to_string_lossy(),
            DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await
        .map_err(|e| written(path, e))?;
    let mut n = 0u64;
    for b in batches {
        if let Some(c) = b
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        {
            n += c.values().iter().sum::<u64>();
        }
    }
    Ok(n)
}

/// Write one in-memory batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &datafusion::arrow::array::RecordBatch) -> Result<()> {
    let file = std::fs::File::create(path).map_err(io_at(path, "writing"))?;
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    w.write(batch).map_err(|e| written(path, e))?;
    w.close().map_err(|e| written(path, e))?;
    Ok(())
}

/// A failed write names its file (a full disk included), whatever layer reported it.
fn written(path: &Path, e: impl Into<Error>) -> Error {
    let e: Error = e.into();
    e.context(format!("writing {}", path.display()))
}
