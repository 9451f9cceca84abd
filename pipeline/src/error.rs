//! One error type with the exit-code contract: 2 for bad usage or bad input, 1 for a
//! run that failed for any other reason.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user can fix it: a setting, a file, a column, a row. Exit code 2.
    BadInput,
    /// Something went wrong while running. Exit code 1.
    Failed,
}

#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The error this one was made from, kept so that callers can decide by type.
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::BadInput,
            message: message.into(),
            source: None,
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Failed,
            message: message.into(),
            source: None,
        }
    }
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::BadInput => 2,
            ErrorKind::Failed => 1,
        }
    }
    /// Prefix the message with where it happened, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
            source: self.source,
        }
    }
    /// Keep `source` as the cause of this error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// The DataFusion error this one was made from, if any.
    pub fn datafusion(&self) -> Option<&datafusion::error::DataFusionError> {
        self.source.as_ref()?.downcast_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::failed(e.to_string()).with_source(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::failed(e.to_string()).with_source(e)
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::failed(e.to_string()).with_source(e)
    }
}

impl From<datafusion::parquet::errors::ParquetError> for Error {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        Error::failed(e.to_string()).with_source(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::failed(e.to_string()).with_source(e)
    }
}

/// Whether `e` or an error in its source chain is DataFusion's `ResourcesExhausted` (a
/// memory pool's limit), by type, never by its text (which a data value quoted in a
/// message could imitate). Operators wrap it in Arrow, context and shared errors.
pub fn is_memory_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    use datafusion::error::DataFusionError;
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(DataFusionError::ResourcesExhausted(_)) = err.downcast_ref() {
            return true;
        }
        next = err.source();
    }
    false
}

/// Shorthand for a bad-input error with `format!` arguments.
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => { $crate::error::Error::bad_input(format!($($arg)*)) };
}
