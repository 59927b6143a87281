//! Just-in-time elevation: request a role with a reason; the policy
//! approves, denies or asks approvers; the grant starts at approval and ends
//! by itself. Every transition commits together with its audit row.
//!
//! The rules enforced here whatever the policy says: nobody approves their
//! own request (same issuer + subject, or the same verified email); each
//! approver counts once; only a pending request inside its deadline can be
//! decided; an approval counts only for the exact request (its hash) it was
//! given for; a grant never outlives its role's maximum or
//! `[elevation] max_grant`. Certificates carry a role's principals only while
//! the requester's grant is active ([`GrantIndex`], read by `issue`).
//!
//! One file per job: `service` (opening, background work, reads), `caller`,
//! `access` (what a caller may see and decide), `create`, `decide` (approve,
//! deny), `close` (cancel, revoke, expiry), `list`, `transition` (the commit
//! every state change ends with), `grants` (the active-grant index),
//! `people`, `policy_input`, `store` (SQL), `webhook`, and `changes` (waking
//! watchers after a change).

mod access;
mod caller;
mod changes;
mod close;
mod create;
mod decide;
mod error;
mod grants;
mod list;
mod people;
mod policy_input;
mod service;
mod store;
mod transition;
pub mod webhook;

pub use caller::{Caller, Channel};
pub use changes::REPLICA_POLL;
pub use create::MAX_PENDING_PER_REQUESTER;
pub use error::{ElevationOpError, OpenError};
pub use grants::GrantIndex;
pub use list::{GrantCursor, GrantsPage};
pub use service::Elevations;
pub use store::{Row, create_tables};
