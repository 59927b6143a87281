//! The claim rules, once the signature holds: times with bounded leeway and
//! `sub`; for ID tokens `aud` and `azp`, for access tokens the resource
//! audience and `client_id`. Then the identity the rest of the CA sees.

use ca_core::{IdentityKind, VerifiedIdentity};
use serde_json::{Map, Value};

use super::error::TokenError;
use super::options::IssuerConfig;

pub(super) struct CheckedClaims {
    pub(super) exp: u64,
    pub(super) iat: u64,
    pub(super) sub: String,
}

/// A JSON number as NumericDate; strings, negatives and non-finite values are refused.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    // Fractional seconds are allowed by RFC 7519; truncate.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Some(f) if f.is_finite() && (0.0..1.0e18).contains(&f) => Ok(Some(f as u64)),
                    _ => Err(TokenError::ClaimType(name)),
                }
            }
        }
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

/// `exp`, `iat` (both required), `nbf` against `now` with `leeway`, and a
/// non-empty string `sub`: the checks ID and access tokens share.
fn check_times_and_subject(
    leeway: u64,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<CheckedClaims, TokenError> {
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::ClaimMissing("exp"))?;
    let iat = numeric_date(claims, "iat")?.ok_or(TokenError::ClaimMissing("iat"))?;
    let nbf = numeric_date(claims, "nbf")?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if iat > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture);
    }

    let sub = non_empty_string(claims, "sub")?;
    Ok(CheckedClaims { exp, iat, sub })
}

/// A required claim that must be a non-empty string.
fn non_empty_string(claims: &Map<String, Value>, name: &'static str) -> Result<String, TokenError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(TokenError::ClaimMissing(name)),
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, TokenError> {
    match claims.get("aud") {
        None => Err(TokenError::ClaimMissing("aud")),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(TokenError::ClaimType("aud")))
            .collect(),
        Some(_) => Err(TokenError::ClaimType("aud")),
    }
}

/// ID token claims: times and `sub`, `aud` among the configured client ids,
/// and `azp` when it matters (OIDC Core §3.1.3.7).
pub(super) fn check_claims(
    cfg: &IssuerConfig,
    leeway: u64,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<CheckedClaims, TokenError> {
    let checked = check_times_and_subject(leeway, claims, now)?;
    let aud = audiences(claims)?;
    let configured = |a: &str| cfg.audiences.iter().any(|c| c == a);
    let matched: Vec<&str> = aud.iter().copied().filter(|a| configured(a)).collect();
    if matched.is_empty() {
        return Err(TokenError::AudienceMismatch);
    }
    let azp = match claims.get("azp") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(TokenError::ClaimType("azp")),
    };
    // OIDC Core §2: with several audiences, azp says which one the token was
    // issued to; it must be us, not another party that shares the token.
    if aud.len() > 1 && !azp.is_some_and(|azp| matched.contains(&azp)) {
        return Err(TokenError::AzpMismatch);
    }
    if azp.is_some_and(|azp| !configured(azp)) {
        return Err(TokenError::AzpMismatch);
    }
    Ok(checked)
}

/// RFC 9068 access token claims: times and `sub` as for ID tokens, `aud`
/// containing the configured resource (the ID-token client ids do not
/// count), and a `client_id`. The subject is `sub`: for a
/// client-credentials grant, the client itself (RFC 9068 §2.2).
pub(super) fn check_access_claims(
    audience: &str,
    leeway: u64,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<CheckedClaims, TokenError> {
    let checked = check_times_and_subject(leeway, claims, now)?;
    if !audiences(claims)?.contains(&audience) {
        return Err(TokenError::AudienceMismatch);
    }
    non_empty_string(claims, "client_id")?;
    Ok(checked)
}

pub(super) fn identity(
    cfg: &IssuerConfig,
    claims: Map<String, Value>,
    subject: String,
) -> VerifiedIdentity {
    let email_verified = claims.get("email_verified") == Some(&Value::Bool(true));
    let email = if email_verified {
        claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        None
    };
    let groups = match claims.get(&cfg.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    // People only: the issuer's login rule, or why there is no login name.
    let (login, login_problem) = match cfg.kind {
        IdentityKind::Workload => (None, None),
        IdentityKind::Human => match cfg.login.derive(&claims, email.as_deref()) {
            Ok(name) => (Some(name), None),
            Err(e) => (None, Some(format!("issuer {:?}: {e}", cfg.issuer))),
        },
    };
    VerifiedIdentity {
        kind: cfg.kind,
        issuer: cfg.issuer.clone(),
        subject,
        email,
        email_verified,
        groups,
        login,
        login_problem,
        claims,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::*;
    use crate::oidc::tests::{
        AUD, NOW, RESOURCE, access_claims, access_token, alg_str, code, hmac_token, mock, opts,
        verifier, verifier_with, workload_verifier,
    };
    use crate::oidc::{TokenVerifier, VerifierOptions, token_hash};

    #[tokio::test]
    async fn email_only_when_verified_is_json_true() {
        let m = mock().await;
        let v = verifier(&m);
        for verified in [json!(false), json!("true"), json!(1), Value::Null] {
            let t = m.with(|c| c["email_verified"] = verified.clone());
            let id = v.verify(&t, NOW).await.unwrap();
            assert_eq!(id.email, None, "{verified}");
            assert!(!id.email_verified);
        }
        let t = m.with(|c| {
            c.as_object_mut().unwrap().remove("email_verified");
        });
        assert_eq!(v.verify(&t, NOW).await.unwrap().email, None);
    }

    #[tokio::test]
    async fn groups_come_from_the_configured_claim() {
        let m = mock().await;
        let mut cfg = IssuerConfig::new(m.issuer(), vec![AUD.into()], IdentityKind::Workload);
        cfg.groups_claim = "roles".into();
        let v = TokenVerifier::new(vec![cfg], opts()).unwrap();
        let t = m.with(|c| c["roles"] = json!(["deployers", {"x": 1}]));
        let id = v.verify(&t, NOW).await.unwrap();
        assert_eq!(id.groups, ["deployers"]);
        assert_eq!(id.kind, IdentityKind::Workload);
        let t = m.with(|c| c["roles"] = json!("deployers"));
        assert!(
            v.verify(&t, NOW).await.unwrap().groups.is_empty(),
            "a string is not a group list"
        );
    }

    #[tokio::test]
    async fn accepts_access_tokens_from_a_workload_issuer_that_opted_in() {
        let m = mock().await;
        let v = workload_verifier(&m, Some(RESOURCE));
        for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
            let token = access_token(&m, typ, |_| {});
            let got = v
                .verify_full(&token, NOW)
                .await
                .unwrap_or_else(|e| panic!("{typ}: {e}"));
            assert_eq!(got.exp, NOW + 300);
            assert_eq!(got.token_hash, token_hash(&token));
            let id = got.identity;
            assert_eq!(id.kind, IdentityKind::Workload);
            assert_eq!(id.issuer, m.issuer());
            assert_eq!(id.subject, "svc-deployer", "the subject is sub");
            assert_eq!(id.claims["client_id"], "svc-deployer");
            assert_eq!(id.email, None);
        }
        // Audience in a list; a sub that is not the client id (Auth0, Keycloak).
        let t = access_token(&m, "at+jwt", |c| {
            c["aud"] = json!(["https://api.example.com", RESOURCE]);
            c["sub"] = json!("service-account-7");
        });
        assert_eq!(
            v.verify(&t, NOW).await.unwrap().subject,
            "service-account-7"
        );
        // ID tokens of the same issuer keep working as before.
        assert_eq!(code(&v, &m.with(|_| {})).await, "ok");
    }

    #[tokio::test]
    async fn access_tokens_need_the_resource_audience_client_id_and_times() {
        let m = mock().await;
        let v = workload_verifier(&m, Some(RESOURCE));
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "other resource",
                Box::new(|c| c["aud"] = json!("urn:other")),
                "token_audience_mismatch",
            ),
            (
                "ID-token client id is not the resource",
                Box::new(|c| c["aud"] = json!(AUD)),
                "token_audience_mismatch",
            ),
            (
                "audience list without the resource",
                Box::new(|c| c["aud"] = json!(["urn:a", AUD])),
                "token_audience_mismatch",
            ),
            (
                "prefix of the resource",
                Box::new(|c| c["aud"] = json!("urn:jitssh")),
                "token_audience_mismatch",
            ),
            (
                "no aud",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
                "token_claim_missing",
            ),
            (
                "no client_id",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("client_id");
                }),
                "token_claim_missing",
            ),
            (
                "empty client_id",
                Box::new(|c| c["client_id"] = json!("")),
                "token_claim_missing",
            ),
            (
                "client_id not a string",
                Box::new(|c| c["client_id"] = json!(7)),
                "token_claim_type",
            ),
            (
                "no sub",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
                "token_claim_missing",
            ),
            (
                "no iat",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("iat");
                }),
                "token_claim_missing",
            ),
            (
                "expired",
                Box::new(|c| c["exp"] = json!(NOW - 120)),
                "token_expired",
            ),
            (
                "not yet valid",
                Box::new(|c| c["nbf"] = json!(NOW + 120)),
                "token_not_yet_valid",
            ),
            (
                "other issuer",
                Box::new(|c| c["iss"] = json!("https://evil.example.com")),
                "token_issuer_unknown",
            ),
        ];
        for (what, f, want) in cases {
            assert_eq!(
                code(&v, &access_token(&m, "at+jwt", f)).await,
                want,
                "{what}"
            );
        }
        // The resource does not make an ID token (no at+jwt) acceptable either.
        assert_eq!(
            code(&v, &m.with(|c| c["aud"] = json!(RESOURCE))).await,
            "token_audience_mismatch"
        );
        // Same checks on the signature as for ID tokens.
        let good = access_token(&m, "at+jwt", |_| {});
        let (input, _) = good.rsplit_once('.').unwrap();
        let forged = access_token(&m, "at+jwt", |c| c["sub"] = json!("admin"));
        let forged_sig = forged.rsplit_once('.').unwrap().1;
        assert_eq!(
            code(&v, &format!("{input}.{forged_sig}")).await,
            "token_signature_invalid"
        );
        let mut h = m.header(Algorithm::ES256);
        h["typ"] = json!("at+jwt");
        h["alg"] = alg_str(Algorithm::HS256);
        let hmac = hmac_token(&h, &access_claims(&m), b"secret", Algorithm::HS256);
        assert_eq!(code(&v, &hmac).await, "token_algorithm_not_allowed");
    }

    #[tokio::test]
    async fn checks_audience_and_azp() {
        let m = mock().await;
        let v = verifier(&m);
        let cases: [(Value, Option<Value>, &str); 12] = [
            (json!(AUD), None, "ok"),
            (json!([AUD]), None, "ok"),
            (json!(AUD), Some(json!(AUD)), "ok"),
            (json!([AUD, "other"]), Some(json!(AUD)), "ok"),
            (json!("other"), None, "token_audience_mismatch"),
            (json!(["other", "another"]), None, "token_audience_mismatch"),
            (json!([]), None, "token_audience_mismatch"),
            (json!(7), None, "token_claim_type"),
            (json!([AUD, 7]), None, "token_claim_type"),
            (json!([AUD, "other"]), None, "token_azp_mismatch"),
            (
                json!([AUD, "other"]),
                Some(json!("other")),
                "token_azp_mismatch",
            ),
            (json!(AUD), Some(json!("other")), "token_azp_mismatch"),
        ];
        for (aud, azp, want) in cases {
            let t = m.with(|c| {
                c["aud"] = aud.clone();
                if let Some(azp) = &azp {
                    c["azp"] = azp.clone();
                }
            });
            assert_eq!(code(&v, &t).await, want, "aud {aud} azp {azp:?}");
        }
        let no_aud = m.with(|c| {
            c.as_object_mut().unwrap().remove("aud");
        });
        assert_eq!(code(&v, &no_aud).await, "token_claim_missing");
        assert_eq!(
            code(&v, &m.with(|c| c["azp"] = json!(1))).await,
            "token_claim_type"
        );
    }

    #[tokio::test]
    async fn checks_times_with_bounded_leeway() {
        let m = mock().await;
        // A leeway above 60 s is clamped to 60 s.
        let v = verifier_with(
            &m,
            VerifierOptions {
                leeway_secs: 3600,
                ..opts()
            },
        );
        let cases: [(&str, Value, &str); 10] = [
            ("exp", json!(NOW - 61), "token_expired"),
            ("exp", json!(NOW - 60), "token_expired"),
            ("exp", json!(NOW - 59), "ok"),
            ("exp", json!(NOW - 3000), "token_expired"),
            ("nbf", json!(NOW + 61), "token_not_yet_valid"),
            ("nbf", json!(NOW + 3000), "token_not_yet_valid"),
            ("nbf", json!(NOW + 60), "ok"),
            ("iat", json!(NOW + 61), "token_issued_in_future"),
            ("iat", json!(NOW + 60), "ok"),
            ("exp", json!((NOW + 300) as f64 + 0.5), "ok"),
        ];
        for (claim, value, want) in cases {
            let t = m.with(|c| c[claim] = value.clone());
            assert_eq!(code(&v, &t).await, want, "{claim}={value}");
        }
    }

    #[tokio::test]
    async fn requires_numeric_times_and_subject() {
        let m = mock().await;
        let v = verifier(&m);
        for claim in ["exp", "iat", "nbf"] {
            for bad in [
                json!((NOW + 300).to_string()),
                json!(-1),
                json!(true),
                json!([NOW]),
            ] {
                let t = m.with(|c| c[claim] = bad.clone());
                assert_eq!(code(&v, &t).await, "token_claim_type", "{claim}={bad}");
            }
        }
        for claim in ["exp", "iat", "sub"] {
            let t = m.with(|c| {
                c.as_object_mut().unwrap().remove(claim);
            });
            assert_eq!(code(&v, &t).await, "token_claim_missing", "{claim}");
        }
        assert_eq!(
            code(&v, &m.with(|c| c["sub"] = json!(""))).await,
            "token_claim_missing"
        );
        assert_eq!(
            code(&v, &m.with(|c| c["sub"] = json!(12))).await,
            "token_claim_type"
        );
        let no_nbf = m.with(|c| {
            c.as_object_mut().unwrap().remove("nbf");
        });
        assert_eq!(code(&v, &no_nbf).await, "ok", "nbf is optional");
    }
}
