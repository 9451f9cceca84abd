//! Catalog metadata for generic clients (catalogs, schemas, the views as tables,
//! table types) answered per caller, and the SQL info they read first.

use super::Caller;
use super::auth::caller;
use super::service::{DoGetStream, batch_stream, flight_info};
use crate::serve::{CATALOG, RunViews, schema_name};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, ProstMessageExt, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction,
};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use datafusion::arrow::datatypes::SchemaRef;
use prost::Message;
use std::sync::LazyLock;
use tonic::{Request, Response, Status};

/// A catalog metadata command, answered per caller: the schema of its answer, and
/// the answer itself. Its flight info's ticket is the command itself.
pub(super) trait MetadataCommand: ProstMessageExt {
    fn schema(self) -> SchemaRef;
    fn rows(self, request: &Request<Ticket>) -> Result<Response<DoGetStream>, Status>;
}

impl MetadataCommand for CommandGetCatalogs {
    fn schema(self) -> SchemaRef {
        self.into_builder().schema()
    }
    fn rows(self, request: &Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        catalogs(self, &*caller(request)?)
    }
}

impl MetadataCommand for CommandGetDbSchemas {
    fn schema(self) -> SchemaRef {
        self.into_builder().schema()
    }
    fn rows(self, request: &Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        schemas(self, &*caller(request)?)
    }
}

impl MetadataCommand for CommandGetTables {
    fn schema(self) -> SchemaRef {
        self.into_builder().schema()
    }
    fn rows(self, request: &Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        tables(self, &*caller(request)?)
    }
}

impl MetadataCommand for CommandGetTableTypes {
    fn schema(self) -> SchemaRef {
        self.into_builder().schema()
    }
    fn rows(self, _request: &Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        table_types(self)
    }
}

impl MetadataCommand for CommandGetSqlInfo {
    fn schema(self) -> SchemaRef {
        self.into_builder(&SQL_INFO).schema()
    }
    fn rows(self, _request: &Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        batch_stream(self.into_builder(&SQL_INFO).build())
    }
}

/// The flight info of a metadata command: its ticket is the command itself.
pub(super) fn info(
    command: impl MetadataCommand,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = command.as_any().encode_to_vec();
    flight_info(ticket, &command.schema(), request.into_inner())
}

/// The catalog, if the caller sees any run.
fn catalogs(query: CommandGetCatalogs, caller: &Caller) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    if caller.commissioner.is_some() {
        b.append(CATALOG);
    }
    batch_stream(b.build())
}

/// One schema per job the caller sees.
fn schemas(query: CommandGetDbSchemas, caller: &Caller) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    for r in runs_of(caller) {
        b.append(CATALOG, schema_name(&r.job));
    }
    batch_stream(b.build())
}

/// The views of the caller's runs, as tables of their visible columns.
fn tables(query: CommandGetTables, caller: &Caller) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    for r in runs_of(caller) {
        for (view, schema) in &r.catalog.views {
            // Hidden columns (record keys) are no business of a client's browser.
            let visible: Vec<_> = schema
                .fields()
                .iter()
                .filter(|f| !f.name().starts_with("__"))
                .cloned()
                .collect();
            let schema = datafusion::arrow::datatypes::Schema::new(visible);
            b.append(CATALOG, schema_name(&r.job), view.name, "VIEW", &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
    }
    batch_stream(b.build())
}

/// Every table here is a view.
fn table_types(query: CommandGetTableTypes) -> Result<Response<DoGetStream>, Status> {
    let mut b = query.into_builder();
    b.append("VIEW");
    batch_stream(b.build())
}

fn runs_of(caller: &Caller) -> &[RunViews] {
    caller.commissioner.as_ref().map_or(&[], |c| &c.runs)
}

/// What generic clients ask before they browse or query (JDBC's DatabaseMetaData).
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "riskstrat");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    // Prepared statements are their SQL: they never expire.
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    // What disclosure control allows: ORDER BY output columns, one view, no subqueries,
    // unions or joins.
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, false);
    b.append(SqlInfo::SqlSupportedSubqueries, 0i32);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, false);
    b.append(SqlInfo::SqlSupportedUnions, 0i32);
    b.append(SqlInfo::SqlMaxTablesInSelect, 1i64);
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.build().expect("SQL info is well formed")
});
