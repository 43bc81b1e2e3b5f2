//! Label sets and the bounded enums that become label values.
//!
//! Every label value comes from configuration (listener, route, cluster),
//! discovery (endpoint) or a closed enum below (status class, decision,
//! endpoint state, health-check result); none comes from request data.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub listener: String,
    pub route: String,
    /// `abort` or `delay`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub route: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub listener: String,
    pub route: String,
    pub code: String,
}

/// gRPC status code names (`grpc-status` 0..=16) as label values, in
/// code order; any other value is counted as `unknown`, like a gRPC client
/// decodes it.
pub const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// The label value of a `grpc-status` code.
pub fn grpc_code_name(code: u32) -> &'static str {
    GRPC_CODES.get(code as usize).copied().unwrap_or("unknown")
}

/// Whether a gRPC status is a server-side failure — the codes gRPC maps to
/// HTTP 5xx (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS)
/// — and so counts as an error in live error rates, like a 5xx.
pub fn grpc_is_server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15) || code > 16
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub listener: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub cluster: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub cluster: String,
    pub decision: String,
}

/// A policy decision taken on the request path. Every one is counted per
/// cluster, so an operator can see which policy tripped and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A failed attempt was retried.
    Retry,
    /// A retry was wanted but the retry budget was spent.
    BudgetExhausted,
    /// A retry was wanted but the cluster's concurrent-retry limit was hit.
    RetryLimited,
    /// A hedged attempt was sent.
    Hedge,
    /// A hedge was wanted but the extra-load cap was reached.
    HedgeBudgetExhausted,
    /// An endpoint was ejected by outlier detection.
    Ejection,
    /// An ejected endpoint received its probation probe.
    Probe,
    /// A probe succeeded and the endpoint is back.
    Restored,
    /// A request failed fast on a cluster limit.
    Overloaded,
    /// A request arrived with its deadline already passed.
    DeadlineExpired,
    /// Active health checks marked an endpoint unhealthy.
    Unhealthy,
    /// Active health checks marked an endpoint healthy.
    Healthy,
}

impl Decision {
    pub const ALL: [Decision; 12] = [
        Decision::Retry,
        Decision::BudgetExhausted,
        Decision::RetryLimited,
        Decision::Hedge,
        Decision::HedgeBudgetExhausted,
        Decision::Ejection,
        Decision::Probe,
        Decision::Restored,
        Decision::Overloaded,
        Decision::DeadlineExpired,
        Decision::Unhealthy,
        Decision::Healthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Retry => "retry",
            Decision::BudgetExhausted => "retry_budget_exhausted",
            Decision::RetryLimited => "retry_limited",
            Decision::Hedge => "hedge",
            Decision::HedgeBudgetExhausted => "hedge_budget_exhausted",
            Decision::Ejection => "ejection",
            Decision::Probe => "probe",
            Decision::Restored => "restored",
            Decision::Overloaded => "overloaded",
            Decision::DeadlineExpired => "deadline_expired",
            Decision::Unhealthy => "unhealthy",
            Decision::Healthy => "healthy",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The class of a response status, the only status label (bounded: five
/// values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    pub fn of(status: u16) -> Self {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStateLabels {
    pub cluster: String,
    pub endpoint: String,
    pub state: String,
}

/// Every state an endpoint can be in, as the admin API names them; each
/// endpoint exports one `switchyard_endpoint_state` series per state.
pub const ENDPOINT_STATES: [&str; 5] = ["active", "probation", "ejected", "unhealthy", "draining"];

/// `switchyard_endpoint_bytes_total`: bytes an L4 (tcp/udp) cluster moved
/// to or from one endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointBytesLabels {
    pub cluster: String,
    pub endpoint: String,
    /// `rx` (received from the endpoint) or `tx` (sent to it).
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    pub cluster: String,
    /// `passed` or `failed`.
    pub result: String,
}
