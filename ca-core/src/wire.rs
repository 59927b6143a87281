//! JSON bodies of the HTTP API (`/v1/...`), shared by server and client.

use serde::{Deserialize, Serialize};

/// `POST /v1/certs/user` request body. Unknown fields are refused so a typo
/// (`ttl` for `ttl_seconds`) is an error, not a silently ignored wish.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCertRequest {
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/certs/user` success body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserCertResponse {
    /// The OpenSSH certificate line (`ssh-ed25519-cert-v01@openssh.com AAAA...`).
    pub certificate: String,
    /// Decimal string: JSON numbers lose precision above 2^53.
    pub serial: String,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
}

/// `POST /v1/certs/host` request body: a one-time join token from
/// `jitssh-ca host token create`, the host's public key, and optionally the
/// subset of the token's hostnames to certify (default: all of them).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCertRequest {
    pub token: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
}

/// `POST /v1/certs/host/renew` request body: the host's current certificate
/// and an SSHSIG (armored, namespace [`crate::host::RENEW_NAMESPACE`]) over the
/// challenge from `POST /v1/certs/host/challenge`, made with the certified key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRenewRequest {
    pub certificate: String,
    pub challenge: String,
    pub signature: String,
}

/// `POST /v1/certs/host` and `/v1/certs/host/renew` success body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostCertResponse {
    /// The OpenSSH host certificate line.
    pub certificate: String,
    /// Decimal string, as for user certificates.
    pub serial: String,
    pub key_id: String,
    pub hostnames: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
}

/// `POST /v1/certs/host/challenge` success body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostChallenge {
    /// Opaque text to sign; single use.
    pub challenge: String,
    /// Unix seconds after which the challenge is refused.
    pub expires_at: u64,
}

/// `POST /v1/elevations` request body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElevationCreate {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    pub reason: String,
}

/// `POST /v1/elevations/{id}/approve|deny|cancel` body (all optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElevationDecide {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The `request_hash` the approver was shown: when set and the request
    /// is not that exact request, the approval is refused (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
}

/// One approval or denial recorded on an elevation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElevationVote {
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    pub time: u64,
}

/// An elevation request and, once approved, its grant. What every
/// `/v1/elevations` endpoint returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elevation {
    pub id: String,
    pub role: String,
    /// The principals an approved grant lets certificates carry.
    pub principals: Vec<String>,
    /// An approved grant whose window has passed reads `expired`.
    pub state: crate::elevation_state::ElevationState,
    pub requester: crate::identity::Party,
    pub reason: String,
    /// Length of the grant, counted from approval.
    pub ttl_seconds: u64,
    /// The policy's reasons for its decision on the request.
    pub reasons: Vec<String>,
    pub created_at: u64,
    /// Pending: when the request expires undecided. Approved: when the grant ends.
    pub expires_at: u64,
    pub approvals_required: u32,
    pub approvals: Vec<ElevationVote>,
    #[serde(default)]
    pub grant_starts_at: Option<u64>,
    #[serde(default)]
    pub grant_ends_at: Option<u64>,
    /// Who closed it (denier, canceller, revoker) and why, when closed.
    #[serde(default)]
    pub closed_by: Option<ElevationVote>,
    /// Binds approvals to this exact request; send it back when approving.
    pub request_hash: String,
    /// Whether the caller may approve or deny it (per policy and server rules).
    #[serde(default)]
    pub can_decide: bool,
}

/// `GET /v1/elevations`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ElevationList {
    pub elevations: Vec<Elevation>,
}

/// Every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable snake_case identifier clients can match on.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The policy's reasons, for `denied_by_policy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// `GET /v1/ca`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaKeys {
    pub user_ca: Vec<String>,
    pub host_ca: Vec<String>,
}

/// Parameters of the authorization request the client sets itself: never
/// taken from `authorization_params` (they would break PKCE, the redirect or
/// the CSRF check). The CA refuses them in its config, the client drops them.
pub const RESERVED_AUTHORIZATION_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// `GET /v1/config`: everything `jitssh login --ca URL` needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientConfig {
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Extra authorization request parameters this provider needs for
    /// offline access (`[login] authorization_params`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub authorization_params: std::collections::BTreeMap<String, String>,
}
