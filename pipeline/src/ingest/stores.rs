//! Cloud object stores for inputs: `s3://` (AWS S3 and compatible stores), `az://`,
//! `abfs://` and `abfss://` (Azure Blob Storage), `gs://` (Google Cloud Storage), each
//! through `object_store`'s own builder reading its environment the way the builder
//! documents (`AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_NAME`,
//! `GOOGLE_SERVICE_ACCOUNT`, ...). A job's `[storage]` section holds only what is not
//! secret (endpoint, region, allow_http); credentials never come from a job file, and
//! no error here quotes an option's value.

use crate::bad_input;
use crate::error::Result;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use serde::Deserialize;
use std::sync::Arc;

/// `[storage]`: options every cloud input of the job shares. Secrets are refused by
/// name (unknown keys are errors).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    /// The store's endpoint (an S3-compatible service, an emulator, a private link).
    pub endpoint: Option<String>,
    /// The AWS region.
    pub region: Option<String>,
    /// Allow plain http to the endpoint (emulators on loopback only).
    pub allow_http: Option<bool>,
}

/// The kinds of store a URL scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Azure,
    Gcs,
}

impl Cloud {
    pub fn of(scheme: &str) -> Option<Cloud> {
        match scheme {
            "s3" | "s3a" => Some(Cloud::S3),
            "az" | "adl" | "azure" | "abfs" | "abfss" => Some(Cloud::Azure),
            "gs" => Some(Cloud::Gcs),
            _ => None,
        }
    }

    /// The environment variables that hold this store's credentials, for error
    /// messages (names only, never values).
    pub fn credentials(self) -> &'static str {
        match self {
            Cloud::S3 => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
            Cloud::Azure => {
                "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS or service principal)"
            }
            Cloud::Gcs => "GOOGLE_SERVICE_ACCOUNT (or GOOGLE_APPLICATION_CREDENTIALS)",
        }
    }

    /// Where the endpoint is set, for error messages.
    pub fn endpoint_setting(self) -> &'static str {
        match self {
            Cloud::S3 => "[storage] endpoint or AWS_ENDPOINT",
            Cloud::Azure => "[storage] endpoint or AZURE_STORAGE_ENDPOINT",
            Cloud::Gcs => "[storage] endpoint or GOOGLE_SERVICE_ACCOUNT's gcs_base_url",
        }
    }
}

/// The store for one input URL (`s3://bucket/path`), built from the environment and
/// `[storage]`.
pub fn build(
    location: &str,
    opts: &StorageOptions,
) -> Result<(ObjectStoreUrl, Arc<dyn ObjectStore>)> {
    let (scheme, rest) = location
        .split_once("://")
        .ok_or_else(|| bad_input!("{location}: not a URL"))?;
    let Some(cloud) = Cloud::of(scheme) else {
        return Err(bad_input!(
            "{location}: riskstrat reads local paths, file://, s3://, az:// (abfs://) and gs:// URLs, not '{scheme}'"
        ));
    };
    let bucket = rest.split('/').next().unwrap_or_default();
    let url = ObjectStoreUrl::parse(format!("{scheme}://{bucket}"))
        .map_err(|e| bad_input!("{location}: not a valid URL ({e})"))?;
    let failed = |e: object_store::Error| {
        bad_input!(
            "{location}: cannot set up its store ({}); check the bucket in the URL, {} and {}",
            without_values(&e.to_string()),
            cloud.endpoint_setting(),
            cloud.credentials()
        )
    };
    let store: Arc<dyn ObjectStore> = match cloud {
        Cloud::S3 => {
            let mut b = AmazonS3Builder::from_env().with_url(location);
            if let Some(e) = &opts.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &opts.region {
                b = b.with_region(r);
            }
            if let Some(h) = opts.allow_http {
                b = b.with_allow_http(h);
            }
            Arc::new(b.build().map_err(failed)?)
        }
        Cloud::Azure => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(location);
            if let Some(e) = &opts.endpoint {
                b = b.with_endpoint(e.clone());
            }
            if let Some(h) = opts.allow_http {
                b = b.with_allow_http(h);
            }
            Arc::new(b.build().map_err(failed)?)
        }
        Cloud::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(location);
            if opts.endpoint.is_some() || opts.region.is_some() {
                return Err(bad_input!(
                    "{location}: [storage] endpoint and region are for S3 and Azure; point GOOGLE_SERVICE_ACCOUNT at a service account file (with gcs_base_url for another endpoint)"
                ));
            }
            if let Some(h) = opts.allow_http {
                b = b.with_client_options(object_store::ClientOptions::new().with_allow_http(h));
            }
            Arc::new(b.build().map_err(failed)?)
        }
    };
    Ok((url, store))
}

/// An input's location as DataFusion lists it. A glob in a URL's path
/// (`s3://bucket/extract/prescriptions-*.parquet`) is split off as DataFusion does
/// for local paths, so globs behave the same on every store.
pub fn listing_url(
    location: &str,
) -> std::result::Result<ListingTableUrl, datafusion::error::DataFusionError> {
    let glob_at = location
        .split_once("://")
        .filter(|(scheme, _)| Cloud::of(scheme).is_some())
        .and_then(|(scheme, rest)| {
            let at = rest.find(['*', '?', '['])?;
            Some(scheme.len() + 3 + rest[..at].rfind('/')? + 1)
        });
    let Some(at) = glob_at else {
        return ListingTableUrl::parse(location);
    };
    let (base, pattern) = location.split_at(at);
    let external = |e: String| datafusion::error::DataFusionError::External(e.into());
    let base = url::Url::parse(base).map_err(|e| external(e.to_string()))?;
    let pattern = glob::Pattern::new(pattern).map_err(|e| external(e.to_string()))?;
    ListingTableUrl::try_new(base, Some(pattern))
}

/// An object_store message without anything that looks like a credential value.
pub fn without_values(message: &str) -> String {
    message
        .split_whitespace()
        .map(|w| {
            let long_token = w.len() >= 24
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c));
            if long_token { "[redacted]" } else { w }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What went wrong talking to a cloud store, from its error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NoBucket,
    Unreachable,
    Refused,
    NoObject,
    Other,
}

impl Problem {
    pub fn of(error: &str) -> Problem {
        let e = error.to_ascii_lowercase();
        if e.contains("nosuchbucket")
            || e.contains("containernotfound")
            || e.contains("bucket") && e.contains("not found")
        {
            Problem::NoBucket
        } else if e.contains("connection refused")
            || e.contains("error sending request")
            || e.contains("dns error")
            || e.contains("timed out")
            || e.contains("connect")
        {
            Problem::Unreachable
        } else if e.contains("403")
            || e.contains("401")
            || e.contains("forbidden")
            || e.contains("accessdenied")
            || e.contains("invalidaccesskeyid")
            || e.contains("signaturedoesnotmatch")
            || e.contains("authoriz")
            || e.contains("credential")
        {
            Problem::Refused
        } else if e.contains("not found") || e.contains("404") || e.contains("nosuchkey") {
            Problem::NoObject
        } else {
            Problem::Other
        }
    }

    /// A setting of the job or the environment is wrong (not a passing fault).
    pub fn is_setting(self) -> bool {
        matches!(
            self,
            Problem::NoBucket | Problem::Unreachable | Problem::Refused
        )
    }
}

/// What to fix when reading `location` failed with `error`: for a cloud URL, the
/// setting that most likely needs fixing (the error's own text is kept, with anything
/// that looks like a credential value removed); for a local path, the error as it is.
pub fn explain(location: &str, error: &str) -> String {
    let Some(cloud) = location.split_once("://").and_then(|(s, _)| Cloud::of(s)) else {
        return error.to_string();
    };
    let hint = match Problem::of(error) {
        Problem::NoBucket => "no such bucket or container: check the URL's bucket".to_string(),
        Problem::Unreachable => {
            format!("cannot reach the store: check {}", cloud.endpoint_setting())
        }
        Problem::Refused => format!(
            "the store refused the credentials: check {}",
            cloud.credentials()
        ),
        Problem::NoObject => "no such object: check the path in the URL".to_string(),
        Problem::Other => format!(
            "check the URL, {} and {}",
            cloud.endpoint_setting(),
            cloud.credentials()
        ),
    };
    format!("{hint} ({})", without_values(error))
}

/// Register the store of every cloud input with `ctx`, so DataFusion reads them like
/// local files.
pub fn register<'a>(
    ctx: &SessionContext,
    locations: impl IntoIterator<Item = &'a String>,
    opts: &StorageOptions,
) -> Result<()> {
    for location in locations {
        let Some((scheme, _)) = location.split_once("://") else {
            continue;
        };
        if scheme == "file" {
            continue;
        }
        let (url, store) = build(location, opts)?;
        ctx.register_object_store(url.as_ref(), store);
    }
    Ok(())
}

/// The object stores of a cluster process (`riskstrat cluster scheduler|executor`),
/// which has no job file: any `file://` path, and each cloud bucket's store built on
/// first use from the process's environment, as [`build`] builds an input's.
#[derive(Debug, Default)]
pub struct FromEnvironment {
    known: datafusion::execution::object_store::DefaultObjectStoreRegistry,
}

impl datafusion::execution::object_store::ObjectStoreRegistry for FromEnvironment {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        let (base, store) = build(url.as_str(), &StorageOptions::default())
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.message))?;
        self.known.register_store(base.as_ref(), store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_their_store_and_others_are_refused() {
        assert_eq!(Cloud::of("s3"), Some(Cloud::S3));
        assert_eq!(Cloud::of("abfss"), Some(Cloud::Azure));
        assert_eq!(Cloud::of("gs"), Some(Cloud::Gcs));
        let e = build("ftp://host/x", &StorageOptions::default()).unwrap_err();
        assert!(e.message.contains("not 'ftp'"), "{}", e.message);
    }

    #[test]
    fn globs_in_cloud_urls_are_split_as_for_local_paths() {
        let url = listing_url("s3://bucket/extract/rx-*.parquet").unwrap();
        assert_eq!(url.as_str(), "s3://bucket/extract/");
        assert_eq!(url.get_glob().as_ref().unwrap().as_str(), "rx-*.parquet");
        let url = listing_url("gs://bucket/extract/2026-*/part-?.parquet").unwrap();
        assert_eq!(url.as_str(), "gs://bucket/extract/");
        assert!(url.get_glob().is_some());
        let plain = listing_url("az://container/extract/").unwrap();
        assert!(plain.get_glob().is_none() && plain.is_collection());
    }

    #[test]
    fn long_tokens_are_redacted_from_messages() {
        let m = without_values("signature wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY refused");
        assert_eq!(m, "signature [redacted] refused");
    }
}
