//! Inputs checked again at the end of a run: a file rewritten, replaced, added or
//! removed while the run read it could give a run mixing old and new data, so such a
//! run fails (exit 1) naming the input, and leaves no run folder.

use super::{InputFile, Inputs, file_name, fingerprint};
use crate::error::{Error, Result};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use std::collections::BTreeMap;

/// Fail if any input's files differ from what the run read at its start.
pub async fn unchanged(ctx: &SessionContext, inputs: &Inputs) -> Result<()> {
    let state = ctx.state();
    for t in &inputs.tables {
        let changed = |detail: String| {
            Error::failed(format!(
                "input {} ({}) changed during the run: {detail}; no run was written. Run again once the extract is complete",
                t.table, t.location
            ))
        };
        let url = super::stores::listing_url(&t.location).map_err(|e| changed(e.to_string()))?;
        let store = ctx.runtime_env().object_store(url.object_store())?;
        let ext = if url.is_collection() || url.get_glob().is_some() {
            ".parquet"
        } else {
            ""
        };
        let now: Vec<object_store::ObjectMeta> =
            match url.list_all_files(&state, store.as_ref(), ext).await {
                Ok(s) => s
                    .try_collect()
                    .await
                    .map_err(|e| changed(format!("cannot list it ({e})")))?,
                Err(e) => return Err(changed(format!("cannot list it ({e})"))),
            };
        let before: BTreeMap<&str, &InputFile> =
            t.files.iter().map(|f| (f.path.as_str(), f)).collect();
        for meta in &now {
            let path = file_name(&url, meta);
            let Some(was) = before.get(path.as_str()) else {
                return Err(changed(format!("file {path} appeared")));
            };
            if fingerprint(meta) != was.fingerprint {
                return Err(changed(format!(
                    "file {path} was rewritten (size {} -> {} bytes, modified {} -> {})",
                    was.bytes,
                    meta.size,
                    was.modified,
                    meta.last_modified.to_rfc3339()
                )));
            }
        }
        if now.len() != before.len() {
            let listed: Vec<String> = now.iter().map(|m| file_name(&url, m)).collect();
            let gone = t
                .files
                .iter()
                .find(|f| !listed.contains(&f.path))
                .map_or("?", |f| f.path.as_str());
            return Err(changed(format!("file {gone} disappeared")));
        }
    }
    Ok(())
}
