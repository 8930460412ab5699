//! Every attribute name the platform writes, in one place.
//!
//! Two kinds live here. [`semconv`] holds the OpenTelemetry semantic-convention names we use (HTTP and
//! database are stable, messaging is in development at v1.44); they are written out rather than taken
//! from `opentelemetry-semantic-conventions` so that this file is the complete list a reviewer reads,
//! and so [`semconv::ALL`] can drive the conformance check in tests. [`pizza`] and [`workflow`] are the
//! project's own, documented in `semconv/registry/pizza.yaml` (OpenTelemetry Weaver's format); a test
//! keeps the two in step.
//!
//! Customer personal data (name, address, phone, free text) has no attribute here, on purpose: the
//! order id is the join key. The conformance check refuses any key not listed here, and tests search
//! exported values for the customer details they used.

/// OpenTelemetry semantic-convention attribute names used by the platform.
pub mod semconv {
    /// Service identity (resource).
    pub const SERVICE_NAME: &str = "service.name";
    /// Service version (resource).
    pub const SERVICE_VERSION: &str = "service.version";
    /// Deployment environment (resource).
    pub const DEPLOYMENT_ENVIRONMENT_NAME: &str = "deployment.environment.name";

    /// HTTP request method, upper case (`GET`, `POST`; `_OTHER` for unknown methods).
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// The original method when `http.request.method` is `_OTHER`.
    pub const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
    /// The matched route template, never the raw path (`/orders/{id}`).
    pub const HTTP_ROUTE: &str = "http.route";
    /// HTTP response status code.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// How many times this request was sent again (retries, redirects); absent on the first try.
    pub const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";
    /// The path of the request URL (server side).
    pub const URL_PATH: &str = "url.path";
    /// The scheme of the request URL.
    pub const URL_SCHEME: &str = "url.scheme";
    /// The query string, server side (without the `?`).
    pub const URL_QUERY: &str = "url.query";
    /// The absolute URL (client side).
    pub const URL_FULL: &str = "url.full";
    /// Host the client addressed, or the server's own name.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// Port the client addressed, or the server's own port.
    pub const SERVER_PORT: &str = "server.port";
    /// The peer address as the server saw it.
    pub const CLIENT_ADDRESS: &str = "client.address";
    /// `User-Agent`, as sent.
    pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
    /// HTTP protocol version (`1.1`, `2`).
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    /// Low-cardinality class of an error (exception type, status code, `timeout`).
    pub const ERROR_TYPE: &str = "error.type";

    /// The messaging system (`kafka`).
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `send`, `receive`, `process`, `create`, `settle`.
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// The system-specific operation name (`send`, `process`).
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// The topic.
    pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
    /// The partition (as a string, per the convention).
    pub const MESSAGING_DESTINATION_PARTITION_ID: &str = "messaging.destination.partition.id";
    /// The consumer group.
    pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
    /// The record's offset.
    pub const MESSAGING_KAFKA_OFFSET: &str = "messaging.kafka.offset";
    /// The record's key (here the order id, never personal data).
    pub const MESSAGING_KAFKA_MESSAGE_KEY: &str = "messaging.kafka.message.key";
    /// The message id (here the CloudEvents `id`).
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    /// Payload size in bytes.
    pub const MESSAGING_MESSAGE_BODY_SIZE: &str = "messaging.message.body.size";

    /// Database system (`postgresql`).
    pub const DB_SYSTEM_NAME: &str = "db.system.name";
    /// Database name.
    pub const DB_NAMESPACE: &str = "db.namespace";
    /// `SELECT`, `INSERT`, ...
    pub const DB_OPERATION_NAME: &str = "db.operation.name";
    /// The table.
    pub const DB_COLLECTION_NAME: &str = "db.collection.name";
    /// Parameterized query text (never with values).
    pub const DB_QUERY_TEXT: &str = "db.query.text";
    /// SQLSTATE on error.
    pub const DB_RESPONSE_STATUS_CODE: &str = "db.response.status_code";

    /// Exception events.
    pub const EXCEPTION_TYPE: &str = "exception.type";
    /// Exception events.
    pub const EXCEPTION_MESSAGE: &str = "exception.message";

    /// Every name above: the allow-list for conformance tests.
    pub const ALL: &[&str] = &[
        SERVICE_NAME,
        SERVICE_VERSION,
        DEPLOYMENT_ENVIRONMENT_NAME,
        HTTP_REQUEST_METHOD,
        HTTP_REQUEST_METHOD_ORIGINAL,
        HTTP_ROUTE,
        HTTP_RESPONSE_STATUS_CODE,
        HTTP_REQUEST_RESEND_COUNT,
        URL_PATH,
        URL_SCHEME,
        URL_QUERY,
        URL_FULL,
        SERVER_ADDRESS,
        SERVER_PORT,
        CLIENT_ADDRESS,
        USER_AGENT_ORIGINAL,
        NETWORK_PROTOCOL_VERSION,
        ERROR_TYPE,
        MESSAGING_SYSTEM,
        MESSAGING_OPERATION_TYPE,
        MESSAGING_OPERATION_NAME,
        MESSAGING_DESTINATION_NAME,
        MESSAGING_DESTINATION_PARTITION_ID,
        MESSAGING_CONSUMER_GROUP_NAME,
        MESSAGING_KAFKA_OFFSET,
        MESSAGING_KAFKA_MESSAGE_KEY,
        MESSAGING_MESSAGE_ID,
        MESSAGING_MESSAGE_BODY_SIZE,
        DB_SYSTEM_NAME,
        DB_NAMESPACE,
        DB_OPERATION_NAME,
        DB_COLLECTION_NAME,
        DB_QUERY_TEXT,
        DB_RESPONSE_STATUS_CODE,
        EXCEPTION_TYPE,
        EXCEPTION_MESSAGE,
    ];
}

/// The pizza shop's own attributes (`pizza.*`), registered in `semconv/registry/pizza.yaml`.
pub mod pizza {
    /// The order id: on every span of an order, the one key that finds it in any topology.
    pub const ORDER_ID: &str = "pizza.order.id";
    /// The CloudEvents type of a message (`order-placed`, `order-ready`, ...).
    pub const EVENT_TYPE: &str = "pizza.event.type";
    /// The trace topology in force when the span was made (`continuous` or `linked`).
    pub const TRACE_TOPOLOGY: &str = "pizza.trace.topology";
    /// Why a link exists (`producer`, `inbound_untrusted`, `created_by`, `woken_by`, ...).
    pub const LINK_REASON: &str = "pizza.link.reason";
    /// Set on a span whose inbound context was dropped on purpose by the fault switch.
    pub const CONTEXT_DROPPED: &str = "pizza.trace.context_dropped";
    /// The edge a fault applies to.
    pub const FAULT_EDGE: &str = "pizza.fault.edge";
    /// How many times a message was delivered before this attempt (redelivery after a crash).
    pub const DELIVERY_ATTEMPT: &str = "pizza.message.delivery_attempt";
    /// A message already processed (inbox hit): its effect is not applied again.
    pub const DUPLICATE: &str = "pizza.message.duplicate";
    /// The id of the outbox row a relay `send` span publishes.
    pub const OUTBOX_ID: &str = "pizza.outbox.id";
    /// Where a poison message went (`<topic>.dlq`).
    pub const DEAD_LETTER_TOPIC: &str = "pizza.message.dead_letter_topic";
    /// Metric attribute of `pizza.telemetry.spans`: `exported`, `queue_full`, `export_failed`.
    pub const SPAN_OUTCOME: &str = "pizza.telemetry.span.outcome";
    /// Metric attribute: the outcome of handling a message or a step (`ok`, `retry`, `dead_lettered`).
    pub const OUTCOME: &str = "pizza.outcome";

    /// Every name above.
    pub const ALL: &[&str] = &[
        ORDER_ID,
        EVENT_TYPE,
        TRACE_TOPOLOGY,
        LINK_REASON,
        CONTEXT_DROPPED,
        FAULT_EDGE,
        DELIVERY_ATTEMPT,
        DUPLICATE,
        OUTBOX_ID,
        DEAD_LETTER_TOPIC,
        SPAN_OUTCOME,
        OUTCOME,
    ];
}

/// Durable-workflow attributes (`workflow.*`), registered in `semconv/registry/pizza.yaml`.
///
/// There is no stable workflow convention yet (semantic-conventions issue #1688 and PR #2387 propose
/// `workflow.*`); these follow the proposal's spirit and are ours until one lands.
pub mod workflow {
    /// The workflow's name (`order-fulfillment`).
    pub const NAME: &str = "workflow.name";
    /// The run id.
    pub const RUN_ID: &str = "workflow.run.id";
    /// The run's status at a terminal span (`completed`, `failed`, `cancelled`).
    pub const RUN_STATUS: &str = "workflow.run.status";
    /// How many executions a run took.
    pub const RUN_EXECUTIONS: &str = "workflow.run.executions";
    /// Which execution of the run this is (1-based).
    pub const EXECUTION_NUMBER: &str = "workflow.execution.number";
    /// Whether this execution replayed recorded steps.
    pub const REPLAY: &str = "workflow.replay";
    /// How many recorded steps this execution replayed without running them.
    pub const REPLAYED_STEPS: &str = "workflow.replayed_steps";
    /// The worker that ran the execution.
    pub const WORKER_ID: &str = "workflow.worker.id";
    /// The step's name.
    pub const STEP_NAME: &str = "workflow.step.name";
    /// `run`, `sleep`, `run_workflow`, `wait_for_signal`, `send_signal`.
    pub const STEP_KIND: &str = "workflow.step.kind";
    /// The attempt number of a step (1-based).
    pub const STEP_ATTEMPT: &str = "workflow.step.attempt";
    /// A signal's name.
    pub const SIGNAL_NAME: &str = "workflow.signal.name";
    /// What a wait waited for (`sleep`, `signal`, `child`).
    pub const WAIT_KIND: &str = "workflow.wait.kind";
    /// Whether a wait ended by its timeout.
    pub const WAIT_TIMED_OUT: &str = "workflow.wait.timed_out";
    /// The parent run of a child workflow.
    pub const PARENT_RUN_ID: &str = "workflow.parent_run.id";

    /// Every name above.
    pub const ALL: &[&str] = &[
        NAME,
        RUN_ID,
        RUN_STATUS,
        RUN_EXECUTIONS,
        EXECUTION_NUMBER,
        REPLAY,
        REPLAYED_STEPS,
        WORKER_ID,
        STEP_NAME,
        STEP_KIND,
        STEP_ATTEMPT,
        SIGNAL_NAME,
        WAIT_KIND,
        WAIT_TIMED_OUT,
        PARENT_RUN_ID,
    ];
}

/// Names the OpenTelemetry SDK and `tracing-opentelemetry` add on their own (source location, thread,
/// timing, status); allowed in exported spans though we never write them.
pub const SDK_ADDED: &[&str] = &[
    "code.file.path",
    "code.line.number",
    "code.module.name",
    "code.function.name",
    "code.filepath",
    "code.lineno",
    "code.namespace",
    "thread.id",
    "thread.name",
    "busy_ns",
    "idle_ns",
    "target",
    "level",
    "otel.status_code",
    "otel.status_description",
    "otel.scope.name",
    "otel.scope.version",
    "otel.library.name",
    "otel.library.version",
    "exception.stacktrace",
    "exception.escaped",
];

/// Is `key` a name the platform may emit: a semantic convention we use, one of ours, or SDK-added?
pub fn is_known(key: &str) -> bool {
    semconv::ALL.contains(&key)
        || pizza::ALL.contains(&key)
        || workflow::ALL.contains(&key)
        || SDK_ADDED.contains(&key)
}
