//! `jitssh ensure`: succeed at once while a certificate with enough time left
//! is loaded; otherwise log in again the way the last login did (silently
//! with the cached refresh token when possible). Meant for ssh_config's
//! `Match exec`, so the happy path does no network I/O.

use std::time::Duration;

use crate::Context;
use crate::duration::unix_now;
use crate::login::{LoginError, LoginOptions, LoginOutcome, login};
use crate::profile::Target;
use crate::status::inventory;
use crate::store::ProfileStore;

/// What `ensure` did.
#[derive(Debug)]
pub enum EnsureOutcome {
    /// A certificate with this many seconds left was already there.
    Fresh(i64),
    Renewed(LoginOutcome),
}

pub async fn ensure(
    ctx: &Context,
    target: &Target,
    min_left: Duration,
    open_browser: bool,
) -> Result<EnsureOutcome, LoginError> {
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    let session = store.load_session();
    if let Some(s) = &session {
        let user_ca = crate::certs::parse_ca_keys(&s.user_ca);
        let now = unix_now();
        let need = i64::try_from(min_left.as_secs()).unwrap_or(i64::MAX);
        let best = inventory(&ctx.paths, &target.profile, Some(s), &user_ca)
            .found
            .iter()
            .filter(|f| f.is_valid(now))
            .map(|f| f.seconds_left(now))
            .max();
        if let Some(left) = best
            && left >= need
        {
            return Ok(EnsureOutcome::Fresh(left));
        }
    }
    let last = session.unwrap_or_default();
    let opts = LoginOptions {
        principals: if last.principals.is_empty() {
            target.defaults.principals.clone()
        } else {
            last.principals
        },
        ttl_seconds: last.ttl_seconds.or(target.defaults.ttl_seconds),
        reason: last.reason,
        device: false,
        open_browser,
        write: last.write_dir.map(Some),
        force: false,
    };
    login(ctx, target, &opts).await.map(EnsureOutcome::Renewed)
}
