//! The Flight SQL service: statements and prepared statements planned, guarded, run
//! under the limits, protected and audited; everything else refused as read-only.
//! Catalog metadata and SQL info are answered by `metadata.rs`.

use super::Caller;
use super::auth::caller;
use super::metadata::{self, MetadataCommand};
use crate::error::{Error, ErrorKind};
use crate::governance::audit::{self, Action, Record};
use crate::governance::disclosure_control::Guarded;
use crate::serve::limits::{Limits, Queries, QueryPool, is_memory};
use crate::serve::{Answer, Commissioner};
use crate::session::buffers_size;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

fn status(e: Error) -> Status {
    match e.kind {
        ErrorKind::BadInput => Status::invalid_argument(e.message),
        ErrorKind::Failed => Status::internal(e.message),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL"))
}

fn no_transactions(id: &Option<prost::bytes::Bytes>) -> Result<(), Status> {
    match id {
        Some(_) => Err(Status::invalid_argument(
            "transactions are not supported: the service is read-only",
        )),
        None => Ok(()),
    }
}

fn read_only() -> Status {
    Status::permission_denied("the service is read-only: only SELECT queries over the views")
}

/// The service: the query audit log and the query threads with their limits.
pub struct Service {
    audit: Arc<audit::Writer>,
    queries: Queries,
}

pub(super) type DoGetStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

impl Service {
    pub(super) fn new(audit: Arc<audit::Writer>, queries: Queries) -> Self {
        Self { audit, queries }
    }

    /// The protected schema of a query (planned and guarded, not run). Audited as a
    /// plan, or a refusal: the cut rule's check on the data ran, and its outcome is
    /// itself something the caller learns.
    async fn schema(&self, caller: &Arc<Caller>, sql: &str) -> Result<SchemaRef, Status> {
        let result = self
            .under_limits(caller, sql, |c, text| async move {
                let g = c.plan(&text).await.map_err(status)?;
                Ok(c.protect(&g, vec![]).map_err(status)?.schema)
            })
            .await;
        self.audit(caller, sql, result.as_ref().map(|_| None))
            .await?;
        result
    }

    /// Plan, guard, run under the limits, protect, and audit a query: only then may
    /// its rows be sent. If the audit record cannot be written, nothing is sent.
    async fn answer(&self, caller: &Arc<Caller>, sql: &str) -> Result<Answer, Status> {
        let started = Instant::now();
        let limits = self.queries.limits.clone();
        let result = self
            .under_limits(caller, sql, |c, text| async move {
                let g = c.plan(&text).await.map_err(status)?;
                answer_within(&c, &g, &limits).await
            })
            .await;
        self.audit(caller, sql, result.as_ref().map(|a| Some(a.rows)))
            .await?;
        tracing::debug!(
            "query by {:?}: {} in {} ms",
            caller.name,
            match &result {
                Ok(a) => format!("{} rows", a.rows),
                Err(e) => format!("{:?}", e.code()),
            },
            started.elapsed().as_millis()
        );
        result
    }

    /// Run `work` on the caller's session with the query's own memory pool, on a query
    /// thread under a slot and the time limit.
    async fn under_limits<T, F, Fut>(
        &self,
        caller: &Arc<Caller>,
        sql: &str,
        work: F,
    ) -> Result<T, Status>
    where
        F: FnOnce(Commissioner, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Status>> + 'static,
        T: Send + 'static,
    {
        self.queries.limits.check_text(sql)?;
        caller.commissioner()?;
        let (who, text) = (caller.clone(), sql.to_string());
        self.queries
            .run(move |pool: Arc<QueryPool>| async move {
                let c = who.commissioner()?.with_memory_pool(pool).map_err(status)?;
                work(c, text).await
            })
            .await
    }

    /// One record per call: who, the SQL, when (the record's time), and the rows
    /// returned (none for a plan) or why none were.
    async fn audit(
        &self,
        caller: &Caller,
        sql: &str,
        outcome: Result<Option<usize>, &Status>,
    ) -> Result<(), Status> {
        let (action, rows, detail) = match outcome {
            Ok(Some(rows)) => (Action::Query, Some(rows as u64), None),
            Ok(None) => (Action::Plan, None, None),
            Err(e) => (Action::Refuse, None, Some(e.message().to_string())),
        };
        let record = Record {
            actor: caller.name.clone(),
            action,
            run: Some(caller.runs.clone()),
            query: Some(sql.to_string()),
            rows,
            detail,
            ..Default::default()
        };
        let writer = self.audit.clone();
        tokio::task::spawn_blocking(move || writer.append(record))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(|_| ())
            .map_err(|e| {
                tracing::error!("{e}");
                Status::internal(format!("{e}; nothing was sent"))
            })
    }

    /// The flight info of the query whose SQL is `handle`, for the caller of `request`:
    /// its protected schema (planned and guarded, not run) and the ticket to fetch its
    /// rows with.
    async fn info(
        &self,
        request: Request<FlightDescriptor>,
        handle: &[u8],
        ticket: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        let schema = self.schema(&caller, utf8(handle)?).await?;
        flight_info(ticket, &schema, request.into_inner())
    }

    /// The rows of the query whose SQL is `handle`, for the caller of `request`.
    async fn rows(
        &self,
        request: &Request<Ticket>,
        handle: &[u8],
    ) -> Result<Response<DoGetStream>, Status> {
        let a = self.answer(&caller(request)?, utf8(handle)?).await?;
        Ok(stream(a.schema, a.batches))
    }
}

/// Run a guarded plan and protect its rows, with the raw rows and then the answer
/// reserved in the query's memory pool, so that operators and answer together stay
/// within `--query-memory` (the pool does not otherwise see the batches a query
/// returns).
async fn answer_within(c: &Commissioner, g: &Guarded, limits: &Limits) -> Result<Answer, Status> {
    let pool = c.context().runtime_env().memory_pool.clone();
    let mut held = MemoryConsumer::new("answer").register(&pool);
    let failed = |e: DataFusionError| {
        if is_memory(&e) {
            limits.out_of_memory()
        } else {
            status(crate::serve::query_failed(&e.strip_backtrace()))
        }
    };
    let rows = DataFrame::new(c.context().state(), g.plan.clone())
        .execute_stream()
        .await
        .map_err(failed)?;
    let batches = collect_reserved(rows, &mut held, limits, failed).await?;
    let answer = c.protect(g, batches).map_err(status)?;
    // The raw rows are gone with `protect`: only the answer is held from here.
    held.free();
    reserve(&mut held, buffers_size(&answer.batches), limits)?;
    Ok(answer)
}

/// Every batch of `rows`, each buffer reserved once as it arrives. Operators emit one
/// large batch as many slices (a sort's output, an aggregate's groups): counted per
/// slice, an answer that fits was refused as too large.
async fn collect_reserved(
    mut rows: SendableRecordBatchStream,
    held: &mut MemoryReservation,
    limits: &Limits,
    failed: impl Fn(DataFusionError) -> Status,
) -> Result<Vec<RecordBatch>, Status> {
    let mut counted = RecordBatchMemoryCounter::new();
    let mut batches = Vec::new();
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(&failed)?;
        reserve(held, counted.count_batch(&batch), limits)?;
        batches.push(batch);
    }
    Ok(batches)
}

fn reserve(held: &mut MemoryReservation, bytes: usize, limits: &Limits) -> Result<(), Status> {
    held.try_grow(bytes).map_err(|_| limits.out_of_memory())
}

pub(super) fn flight_info(
    ticket: Vec<u8>,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DoGetStream> {
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(s))
}

pub(super) fn batch_stream(
    batch: std::result::Result<RecordBatch, arrow_flight::error::FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(Status::from)?;
    Ok(stream(batch.schema(), vec![batch]))
}

/// The trait's two methods for each catalog metadata command (a
/// `metadata::MetadataCommand`): its flight info, and its rows. `#[tonic::async_trait]`
/// does not look inside macros, so the methods are written as it writes an `async fn`:
/// returning a boxed future.
macro_rules! metadata_commands {
    ($($command:ident => $info:ident, $do_get:ident;)*) => {$(
        fn $info<'s, 'f>(
            &'s self,
            query: $command,
            request: Request<FlightDescriptor>,
        ) -> BoxFuture<'f, Result<Response<FlightInfo>, Status>>
        where
            's: 'f,
            Self: 'f,
        {
            Box::pin(async move { metadata::info(query, request) })
        }

        fn $do_get<'s, 'f>(
            &'s self,
            query: $command,
            request: Request<Ticket>,
        ) -> BoxFuture<'f, Result<Response<<Self as FlightService>::DoGetStream>, Status>>
        where
            's: 'f,
            Self: 'f,
        {
            Box::pin(async move { query.rows(&request) })
        }
    )*};
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    /// The token is checked by the interceptor; a client that handshakes first (some
    /// do, whatever the auth) gets an empty answer and goes on with its bearer token.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        no_transactions(&query.transaction_id)?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into_bytes().into(),
        };
        let ticket = ticket.as_any().encode_to_vec();
        self.info(request, query.query.as_bytes(), ticket).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.rows(&request, &ticket.statement_handle).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        no_transactions(&query.transaction_id)?;
        let schema = self.schema(&caller(&request)?, &query.query).await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            // No parameters: values go into the SQL, where disclosure control sees them.
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = cmd.as_any().encode_to_vec();
        self.info(request, &cmd.prepared_statement_handle, ticket)
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.rows(&request, &cmd.prepared_statement_handle).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        Err(Status::invalid_argument(
            "prepared statements here take no parameters: write the values into the SQL",
        ))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    // Catalog metadata (`metadata.rs`): the ticket is the command itself, answered per
    // caller.
    metadata_commands! {
        CommandGetCatalogs => get_flight_info_catalogs, do_get_catalogs;
        CommandGetDbSchemas => get_flight_info_schemas, do_get_schemas;
        CommandGetTables => get_flight_info_tables, do_get_tables;
        CommandGetTableTypes => get_flight_info_table_types, do_get_table_types;
        CommandGetSqlInfo => get_flight_info_sql_info, do_get_sql_info;
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::collect_reserved;
    use crate::serve::limits::Limits;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
    use datafusion::physical_plan::memory::MemoryStream;
    use std::sync::Arc;
    use std::time::Duration;

    const LIMIT: usize = 16 << 20;

    /// One million i64s: 8 MB.
    fn million() -> RecordBatch {
        let n = Int64Array::from_iter_values(0..1_000_000);
        RecordBatch::try_from_iter([("n", Arc::new(n) as _)]).unwrap()
    }

    /// `batches` streamed through `collect_reserved` under a 16 MiB pool: the rows
    /// kept, or the refusal, and the bytes reserved.
    async fn collect(batches: Vec<RecordBatch>) -> (Result<usize, tonic::Status>, usize) {
        let limits = Limits {
            time: Duration::from_secs(10),
            memory: LIMIT,
            memory_text: "16MiB".into(),
            concurrent: 1,
            queue: Duration::from_secs(1),
        };
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(LIMIT));
        let mut held = MemoryConsumer::new("answer").register(&pool);
        let schema = batches[0].schema();
        let rows = Box::pin(MemoryStream::try_new(batches, schema, None).unwrap());
        let failed = |e: datafusion::error::DataFusionError| tonic::Status::internal(e.to_string());
        let kept = collect_reserved(rows, &mut held, &limits, failed).await;
        let rows = kept.map(|b| b.iter().map(|b| b.num_rows()).sum());
        (rows, held.size())
    }

    /// Regression: ten slices of one 8 MB batch were reserved as 80 MB, so a result
    /// that fits in 16 MiB was refused as out of memory.
    #[tokio::test]
    async fn slices_of_one_result_batch_are_reserved_once() {
        let whole = million();
        let slices = (0..10).map(|i| whole.slice(i * 100_000, 100_000)).collect();
        let (rows, held) = collect(slices).await;
        assert_eq!(rows.expect("an 8 MB result fits 16 MiB"), 1_000_000);
        assert_eq!(held, 8_000_000, "one buffer, counted once");
    }

    #[tokio::test]
    async fn a_result_larger_than_the_limit_is_refused() {
        let (rows, _) = collect(vec![million(), million(), million()]).await;
        assert_eq!(rows.unwrap_err().code(), tonic::Code::ResourceExhausted);
    }
}
