//! The HTTP status of each operation's refusals, shared by the JSON API
//! (`http`) and the web console (`console`), so one refusal answers with
//! the same status through either door.

use axum::http::StatusCode;

use crate::elevation::ElevationOpError;

/// The status of an elevation operation's refusal.
pub fn elevation(e: &ElevationOpError) -> StatusCode {
    match e {
        ElevationOpError::BadBody(_)
        | ElevationOpError::Request(_)
        | ElevationOpError::UnknownRole { .. } => StatusCode::BAD_REQUEST,
        ElevationOpError::NotConfigured | ElevationOpError::NotFound(_) => StatusCode::NOT_FOUND,
        ElevationOpError::Denied { .. }
        | ElevationOpError::PolicyError(_)
        | ElevationOpError::SelfApproval
        | ElevationOpError::NotApprover { .. }
        | ElevationOpError::NotRequester(_)
        | ElevationOpError::WorkloadApprover
        | ElevationOpError::Revoked => StatusCode::FORBIDDEN,
        ElevationOpError::LoginName(l) if l.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        ElevationOpError::LoginName(_) => StatusCode::FORBIDDEN,
        ElevationOpError::NotPending { .. }
        | ElevationOpError::NotCancellable { .. }
        | ElevationOpError::Changed { .. }
        | ElevationOpError::AlreadyApproved(_)
        | ElevationOpError::RequestChanged(_) => StatusCode::CONFLICT,
        ElevationOpError::AuditUnavailable(_) | ElevationOpError::Store(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ElevationOpError::TooManyPending(_) | ElevationOpError::RateLimited(_) => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ElevationOpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
