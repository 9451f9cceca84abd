//! Outputs: the run folder (written whole or not at all), Parquet writers, the
//! manifest and the HTML report.

pub mod manifest;
pub mod report;
pub mod run_folder;
pub mod run_store;

use crate::durable::io_at;
use crate::error::{Error, Result};
use datafusion::prelude::DataFrame;
use std::path::Path;

/// Execute `df` into one Parquet file; returns the number of rows written.
pub async fn write_parquet(df: DataFrame, path: &Path) -> Result<u64> {
    use datafusion::common::config::TableParquetOptions;
    use datafusion::common::file_options::parquet_writer::ParquetWriterOptions;
    use futures::StreamExt;
    // Streamed into this process and written here, with the session's Parquet
    // settings: on a cluster, a run's files are never written by an executor.
    let mut options = TableParquetOptions {
        global: df
            .task_ctx()
            .session_config()
            .options()
            .execution
            .parquet
            .clone(),
        ..Default::default()
    };
    // ArrowWriter embeds the Arrow schema itself.
    options.global.skip_arrow_metadata = true;
    let props = ParquetWriterOptions::try_from(&options)?
        .writer_options()
        .clone();
    let mut stream = df.execute_stream().await?;
    let file = std::fs::File::create(path).map_err(io_at(path, "writing"))?;
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, stream.schema(), Some(props))
            .map_err(|e| written(path, e))?;
    let mut n = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        n += batch.num_rows() as u64;
        w.write(&batch).map_err(|e| written(path, e))?;
    }
    w.close().map_err(|e| written(path, e))?;
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
