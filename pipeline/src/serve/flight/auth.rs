//! Authentication of every call: the bearer token against the access file's hashes,
//! and failed authentications counted and audited.

use super::{Caller, Callers};
use crate::governance::audit::{self, Action, Record};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// Why a call was not authenticated. Holds nothing of the token but, for an unknown
/// one, the first 8 hex digits of its SHA-256: enough to tell one misconfigured client
/// from many guesses, far too little to find the token by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Why {
    NoToken,
    NotBearer,
    Unknown { sha256_prefix: String },
}

impl Why {
    pub(super) fn status(&self) -> Status {
        const HOW: &str = "send the header `authorization: Bearer <token>`";
        match self {
            Why::NoToken => Status::unauthenticated(format!("no token: {HOW}")),
            Why::NotBearer => Status::unauthenticated(format!("not a bearer token: {HOW}")),
            Why::Unknown { .. } => {
                Status::unauthenticated("unknown token: check it with whoever runs this service")
            }
        }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NoToken => f.write_str("no token"),
            Why::NotBearer => f.write_str("not a bearer token"),
            Why::Unknown { sha256_prefix } => {
                write!(f, "unknown token (sha256 {sha256_prefix}...)")
            }
        }
    }
}

/// The caller of a request, from its bearer token. Never logs or echoes the token.
pub(super) fn authenticate(callers: &Callers, metadata: &MetadataMap) -> Result<Arc<Caller>, Why> {
    let header = metadata.get("authorization").ok_or(Why::NoToken)?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or(Why::NotBearer)?;
    let hash = crate::serve::access::token_sha256(token);
    callers.get(&hash).cloned().ok_or_else(|| Why::Unknown {
        sha256_prefix: hex::encode(&hash[..4]),
    })
}

/// The audit actor of a call refused for want of a valid token.
const UNAUTHENTICATED: &str = Action::Unauthenticated.as_str();

/// Failed authentications: counted, and each an audit record (action
/// `unauthenticated`). The interceptor must not wait for the disk (nor for stderr),
/// so it only counts and hands the record to a bounded queue, which one task writes
/// out (and logs); when a flood fills the queue, the failures left out are counted and
/// the next record written says how many.
pub(super) struct Unauthenticated {
    count: AtomicU64,
    unrecorded: Arc<AtomicU64>,
    queue: tokio::sync::mpsc::Sender<Record>,
}

impl Unauthenticated {
    const QUEUE: usize = 1024;

    pub(super) fn start(audit: Arc<audit::Writer>) -> Self {
        let (queue, mut records) = tokio::sync::mpsc::channel::<Record>(Self::QUEUE);
        let unrecorded = Arc::new(AtomicU64::new(0));
        let missed = unrecorded.clone();
        tokio::spawn(async move {
            while let Some(mut r) = records.recv().await {
                let n = missed.swap(0, Relaxed);
                if n > 0 {
                    let d = r.detail.take().unwrap_or_default();
                    r.detail = Some(format!(
                        "{d}; {n} failed authentications before it were counted but not recorded one by one (too many at once)"
                    ));
                }
                tracing::warn!(
                    "refused a call: {}",
                    r.detail.as_deref().unwrap_or_default()
                );
                let writer = audit.clone();
                match tokio::task::spawn_blocking(move || writer.append(r)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("a failed authentication was not audited: {e}"),
                    Err(e) => tracing::error!("a failed authentication was not audited: {e}"),
                }
            }
        });
        Self {
            count: AtomicU64::new(0),
            unrecorded,
            queue,
        }
    }

    /// Count a failed call and queue its record; never blocks.
    pub(super) fn record(&self, why: &Why, peer: Option<std::net::SocketAddr>) {
        let n = self.count.fetch_add(1, Relaxed) + 1;
        let from = peer.map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        let record = Record {
            actor: UNAUTHENTICATED.into(),
            action: Action::Unauthenticated,
            detail: Some(format!(
                "{why}, from {from}; failed authentication {n} since the server started"
            )),
            ..Default::default()
        };
        if self.queue.try_send(record).is_err() {
            self.unrecorded.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

/// The caller the interceptor attached to a request.
pub(super) fn caller<T>(req: &Request<T>) -> Result<Arc<Caller>, Status> {
    // The interceptor puts it there on every call; its absence is a wiring bug.
    req.extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no token"))
}
