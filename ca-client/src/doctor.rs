//! `jitssh doctor`: checks what a login and plain `ssh` rely on — the CA
//! (reachable, TLS trusted, clocks agree), ssh-agent (takes a certificate
//! with a lifetime), the OpenSSH client, the `~/.ssh/config` block, the host
//! CA in known_hosts, a valid certificate, the cached sign-in — and prints a
//! fix for each failure. Read-only, except a throwaway certificate that the
//! agent check adds and removes again.

use crate::agent::Agent;
use crate::ca::{CaClient, CaError};
use crate::duration::unix_now;
use crate::profile::Target;
use crate::store::ProfileStore;
use crate::{Context, certs, status};

/// The clock difference to the CA that fails the check: certificates are
/// valid for minutes, and the CA's leeway for tokens is 60 s.
pub const MAX_SKEW_SECS: i64 = 30;

/// OpenSSH knows Ed25519 certificates from 6.5 on; jitssh's other needs
/// (`Match exec`, `IdentityAgent`, `RevokedHostKeys`) are older or 7.3.
const MIN_OPENSSH: (u32, u32) = (7, 3);

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    /// What is wrong, and what to type or change.
    Fail {
        problem: String,
        fix: String,
    },
}

fn pass(name: &'static str, what: impl Into<String>) -> Check {
    Check {
        name,
        outcome: Outcome::Pass(what.into()),
    }
}

fn fail(name: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        outcome: Outcome::Fail {
            problem: problem.into(),
            fix: fix.into(),
        },
    }
}

/// Run every check, in the order a login needs them.
pub async fn doctor(ctx: &Context, target: &Target) -> Vec<Check> {
    let mut checks = Vec::new();
    let ca = ca_checks(ctx, target).await;
    let user_ca = ca.1;
    checks.extend(ca.0);
    checks.push(agent_check());
    checks.push(openssh_check(ssh_version().as_deref()));
    checks.push(ssh_config_check(ctx));
    checks.push(known_hosts_check(ctx, target));
    checks.push(certificate_check(ctx, target, &user_ca));
    checks.push(refresh_token_check(ctx, target));
    checks
}

/// Print the checks; `true` when every one passed.
pub fn report(checks: &[Check]) -> bool {
    for c in checks {
        match &c.outcome {
            Outcome::Pass(what) => println!("ok    {:<13} {what}", c.name),
            Outcome::Fail { problem, fix } => {
                println!("FAIL  {:<13} {problem}", c.name);
                println!("      {:<13} fix: {fix}", "");
            }
        }
    }
    let failed = checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail { .. }))
        .count();
    if failed == 0 {
        println!("All {} checks passed.", checks.len());
    } else {
        println!("{failed} of {} checks failed.", checks.len());
    }
    failed == 0
}

/// The CA and the clock; also the CA's user keys for the certificate check.
async fn ca_checks(ctx: &Context, target: &Target) -> (Vec<Check>, Vec<ssh_key::PublicKey>) {
    let url = match target.ca() {
        Ok(url) => url.clone(),
        Err(e) => {
            return (
                vec![fail(
                    "CA",
                    e.to_string(),
                    "jitssh login --ca https://ca.example.com (it remembers the CA)",
                )],
                Vec::new(),
            );
        }
    };
    let client = CaClient::new(url.clone(), ctx.http.clone(), ctx.ca_timeout);
    let config = match client.config().await {
        Ok(answer) => answer,
        Err(e) => {
            let fix = match &e {
                CaError::Unreachable { detail, .. }
                    if detail.contains("certificate") || detail.contains("TLS") =>
                {
                    "the CA's TLS certificate is not trusted here: install its CA certificate in the system store (update-ca-certificates), or check the URL"
                }
                CaError::Unreachable { .. } | CaError::Timeout { .. } => {
                    "check the URL (--ca, JITSSH_CA or the profile's `ca`), that the CA runs, and your network or VPN"
                }
                _ => "check that the URL is the jitssh CA's (https://ca.example.com, no path)",
            };
            return (vec![fail("CA", e.to_string(), fix)], Vec::new());
        }
    };
    let tls = if url.scheme() == "https" {
        "TLS trusted"
    } else {
        "plain http to loopback"
    };
    let mut checks = vec![pass("CA", format!("{url} answers ({tls})"))];
    checks.push(match config.server_time {
        Some(t) => clock_check(crate::ca::skew(t, unix_now())),
        None => fail(
            "clock",
            "the CA sent no Date header, so the clocks cannot be compared",
            "check that nothing between you and the CA strips the Date header",
        ),
    });
    let user_ca = match client.keys().await {
        Ok(keys) => certs::parse_ca_keys(&keys.value.user_ca),
        Err(_) => Vec::new(),
    };
    (checks, user_ca)
}

/// The local clock against the CA's (`skew`: local minus the CA's).
pub fn clock_check(skew: i64) -> Check {
    if skew.abs() <= MAX_SKEW_SECS {
        return pass("clock", format!("within {} s of the CA's", skew.abs()));
    }
    let direction = if skew > 0 { "ahead of" } else { "behind" };
    fail(
        "clock",
        format!(
            "{} s {direction} the CA's: certificates will look expired or not yet valid",
            skew.abs()
        ),
        "sync the clock: sudo timedatectl set-ntp true",
    )
}

/// ssh-agent: reachable, and it takes a certificate with a lifetime (a
/// throwaway one, signed by a throwaway CA, removed again at once).
fn agent_check() -> Check {
    const NAME: &str = "ssh-agent";
    let mut agent = match Agent::from_env() {
        Ok(a) => a,
        Err(e) => {
            return fail(
                NAME,
                e.to_string(),
                "eval \"$(ssh-agent)\" (or enable your desktop's agent); without one, `jitssh login --write` uses key files",
            );
        }
    };
    let probe = || -> Result<(ssh_key::PrivateKey, ssh_key::Certificate), String> {
        let key = certs::generate_key().map_err(|e| e.to_string())?;
        let ca = certs::generate_key().map_err(|e| e.to_string())?;
        let now = unix_now();
        let mut builder = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut rand_core::OsRng,
            key.public_key().key_data().clone(),
            now.saturating_sub(60),
            now + 60,
        )
        .map_err(|e| e.to_string())?;
        builder
            .serial(1)
            .and_then(|b| b.key_id("jitssh doctor probe"))
            .and_then(|b| b.cert_type(ssh_key::certificate::CertType::User))
            .and_then(|b| b.valid_principal("jitssh-doctor-probe"))
            .map_err(|e| e.to_string())?;
        let cert = builder.sign(&ca).map_err(|e| e.to_string())?;
        Ok((key, cert))
    };
    let (key, cert) = match probe() {
        Ok(p) => p,
        Err(e) => {
            return fail(
                NAME,
                format!("cannot make a probe certificate: {e}"),
                "report this as a bug",
            );
        }
    };
    if let Err(e) = agent.add_certificate(&key, &cert, 10, "jitssh doctor probe") {
        return fail(
            NAME,
            e.to_string(),
            "use OpenSSH's ssh-agent (some agents refuse certificates or lifetimes): eval \"$(ssh-agent)\"",
        );
    }
    let listed = agent
        .certificates()
        .map(|all| all.iter().any(|(c, _)| c == &cert))
        .unwrap_or(false);
    let _ = agent.remove_certificate(&cert);
    if !listed {
        return fail(
            NAME,
            "the agent accepted a certificate but does not list it",
            "use OpenSSH's ssh-agent: eval \"$(ssh-agent)\"",
        );
    }
    pass(
        NAME,
        format!(
            "{} takes certificates with lifetimes",
            agent.socket().display()
        ),
    )
}

/// `ssh -V`, which prints to stderr.
fn ssh_version() -> Option<String> {
    let out = std::process::Command::new("ssh").arg("-V").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    Some(text.trim().to_owned())
}

/// The OpenSSH client, from its `ssh -V` line (`None`: no `ssh`).
pub fn openssh_check(version: Option<&str>) -> Check {
    const NAME: &str = "OpenSSH";
    let Some(line) = version else {
        return fail(
            NAME,
            "no `ssh` on PATH",
            "install the OpenSSH client: sudo apt-get install openssh-client",
        );
    };
    match parse_openssh(line) {
        Some(v) if v >= MIN_OPENSSH => pass(
            NAME,
            format!("{}.{} supports Ed25519 certificates", v.0, v.1),
        ),
        Some(v) => fail(
            NAME,
            format!(
                "OpenSSH {}.{} is too old for jitssh's certificates and ssh_config",
                v.0, v.1
            ),
            format!(
                "upgrade the OpenSSH client to {}.{} or later",
                MIN_OPENSSH.0, MIN_OPENSSH.1
            ),
        ),
        None => fail(
            NAME,
            format!("`ssh -V` says {line:?}, not OpenSSH"),
            "use the OpenSSH client: sudo apt-get install openssh-client",
        ),
    }
}

/// `OpenSSH_9.2p1 Debian-2, OpenSSL 3.0.11` → (9, 2).
pub fn parse_openssh(line: &str) -> Option<(u32, u32)> {
    let rest = line.split("OpenSSH_").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn ssh_config_check(ctx: &Context) -> Check {
    const NAME: &str = "ssh config";
    let path = ctx.paths.home.join(".ssh/config");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.contains("jitssh") && text.contains("ensure") => pass(
            NAME,
            format!(
                "{} renews certificates (jitssh ensure)",
                ctx.paths.tilde(&path)
            ),
        ),
        _ => fail(
            NAME,
            format!("{} has no jitssh block", ctx.paths.tilde(&path)),
            "jitssh config >> ~/.ssh/config",
        ),
    }
}

fn known_hosts_check(ctx: &Context, target: &Target) -> Check {
    const NAME: &str = "known_hosts";
    let path = ctx.paths.known_hosts();
    let marker = certs::known_hosts_marker(&target.profile);
    match std::fs::read_to_string(&path) {
        Ok(text)
            if text
                .lines()
                .any(|l| l.starts_with("@cert-authority") && l.ends_with(&marker)) =>
        {
            pass(
                NAME,
                format!("{} trusts the host CA", ctx.paths.tilde(&path)),
            )
        }
        _ => fail(
            NAME,
            format!(
                "{} has no host CA line for this profile",
                ctx.paths.tilde(&path)
            ),
            "jitssh login (it writes the line); hosts are then trusted without asking",
        ),
    }
}

fn certificate_check(ctx: &Context, target: &Target, user_ca: &[ssh_key::PublicKey]) -> Check {
    const NAME: &str = "certificate";
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    let session = store.load_session();
    let user_ca = if user_ca.is_empty() {
        session
            .as_ref()
            .map(|s| certs::parse_ca_keys(&s.user_ca))
            .unwrap_or_default()
    } else {
        user_ca.to_vec()
    };
    let inv = status::inventory(&ctx.paths, &target.profile, session.as_ref(), &user_ca);
    let now = unix_now();
    match inv
        .found
        .iter()
        .filter(|f| f.is_valid(now))
        .max_by_key(|f| f.seconds_left(now))
    {
        Some(best) => pass(NAME, status::describe(&ctx.paths, best, now)),
        None => fail(NAME, "no valid jitssh certificate", "jitssh login"),
    }
}

fn refresh_token_check(ctx: &Context, target: &Target) -> Check {
    const NAME: &str = "sign-in";
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    if store.token_path().exists() {
        pass(NAME, "a cached refresh token: renewals need no browser")
    } else {
        fail(
            NAME,
            "no cached refresh token: the next login opens the browser",
            "jitssh login; if it says the provider returned no refresh token, see README (offline access)",
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn openssh_versions() {
        assert_eq!(
            parse_openssh("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15"),
            Some((9, 2))
        );
        assert_eq!(parse_openssh("OpenSSH_7.3p1"), Some((7, 3)));
        assert_eq!(parse_openssh("Sun_SSH_1.5"), None);
        assert!(matches!(
            openssh_check(Some("OpenSSH_9.6p1")).outcome,
            Outcome::Pass(_)
        ));
        for bad in [Some("OpenSSH_6.4p1"), Some("dropbear 2022"), None] {
            let Outcome::Fail { fix, .. } = openssh_check(bad).outcome else {
                panic!("{bad:?} passed");
            };
            assert!(!fix.is_empty());
        }
    }

    #[test]
    fn clocks_more_than_30_s_apart_fail_with_a_fix() {
        assert!(matches!(clock_check(0).outcome, Outcome::Pass(_)));
        assert!(matches!(clock_check(-30).outcome, Outcome::Pass(_)));
        let Outcome::Fail { problem, fix } = clock_check(31).outcome else {
            panic!("31 s passed");
        };
        assert!(problem.contains("31 s ahead of"), "{problem}");
        assert!(fix.contains("timedatectl"), "{fix}");
        let Outcome::Fail { problem, .. } = clock_check(-120).outcome else {
            panic!("-120 s passed");
        };
        assert!(problem.contains("120 s behind"), "{problem}");
    }
}
