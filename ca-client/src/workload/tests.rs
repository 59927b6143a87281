//! Tests of `workload`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;

use clap::Parser as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::cli::{Cli, Command};

fn secret_file(dir: &Path, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(format!("secret-{mode:o}-{}", content.len()));
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn usage_text(r: Result<String, WorkloadError>) -> String {
    match r {
        Err(e @ WorkloadError::Usage(_)) => e.to_string(),
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn client_secret_is_read_strictly() {
    let dir = tempfile::tempdir().unwrap();
    for (content, want) in [
        (&b"s3cret\n"[..], "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b"s3cret", "s3cret"),
        (b"with space ~!", "with space ~!"),
    ] {
        let path = secret_file(dir.path(), content, 0o600);
        assert_eq!(read_client_secret(&path).unwrap(), want, "{content:?}");
    }
    let path = secret_file(dir.path(), b"s3cret\n", 0o400);
    assert_eq!(read_client_secret(&path).unwrap(), "s3cret");

    for (content, want) in [
        (&b""[..], "is empty"),
        (b"\n", "is empty"),
        (b"a\nb\n", "on one line"),
        (b"s3cret\n\n", "on one line"),
        (b"s3\tcret", "on one line"),
        (b"s\xc3\xa9cret", "on one line"),
        (b"\xff\xfe", "not UTF-8"),
    ] {
        let path = secret_file(dir.path(), content, 0o600);
        let msg = usage_text(read_client_secret(&path));
        assert!(msg.contains(want), "{content:?}: {msg}");
        assert!(msg.contains("--client-secret-file"), "{msg}");
    }
    let big = secret_file(dir.path(), &[b'a'; 5000], 0o600);
    assert!(usage_text(read_client_secret(&big)).contains("larger than"));

    for mode in [0o640, 0o604, 0o644, 0o660, 0o602, 0o610] {
        let path = secret_file(dir.path(), b"s3cret\n", mode);
        let msg = usage_text(read_client_secret(&path));
        assert!(
            msg.contains(&format!("permissions {mode:04o} are too open"))
                && msg.contains("chmod 600"),
            "{mode:o}: {msg}"
        );
    }
    assert!(usage_text(read_client_secret(dir.path())).contains("not a regular file"));
    assert!(usage_text(read_client_secret(&dir.path().join("missing"))).contains("cannot open"));
}

#[test]
fn identity_provider_urls_are_https_or_loopback() {
    for ok in [
        "https://idp.example.com/oauth2/token",
        "https://login.example.com/t/oauth2/v2.0/token?p=b2c",
        "http://127.0.0.1:4000/token",
        "http://localhost/token",
        "http://[::1]:9/token",
    ] {
        idp_url("--token-endpoint", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "http://idp.example.com/token",
        "http://10.0.0.1/token",
        "ftp://idp.example.com/token",
        "idp.example.com/token",
        "https://user:pw@idp.example.com/token",
        "https://idp.example.com/token#x",
    ] {
        assert!(
            matches!(
                idp_url("--token-endpoint", bad),
                Err(WorkloadError::Usage(_))
            ),
            "{bad}"
        );
    }
}

fn parse(args: &[&str]) -> Result<Box<CertArgs>, clap::Error> {
    let mut argv = vec!["jitssh", "cert"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv)?.command {
        Command::Cert(a) => Ok(a),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_credentials_flags_exclude_tokens_and_need_their_companions() {
    let a = parse(&[
        "--client-id",
        "svc",
        "--client-secret-file",
        "/s",
        "--issuer",
        "https://idp.example.com",
        "--scope",
        "a",
        "--scope",
        "b",
        "--resource",
        "urn:jitssh:ca",
        "--client-auth",
        "post",
    ])
    .unwrap();
    assert_eq!(a.client_id.as_deref(), Some("svc"));
    assert_eq!(a.scopes, ["a", "b"]);
    assert_eq!(a.client_auth, Some(ClientAuth::Post));
    parse(&[
        "--client-id",
        "svc",
        "--client-secret-file",
        "/s",
        "--token-endpoint",
        "https://i/t",
    ])
    .unwrap();
    for bad in [
        &[
            "--client-id",
            "svc",
            "--client-secret-file",
            "/s",
            "--issuer",
            "https://i",
            "--token-file",
            "t",
        ][..],
        &[
            "--client-id",
            "svc",
            "--client-secret-file",
            "/s",
            "--issuer",
            "https://i",
            "--token",
            "-",
        ],
        &["--client-id", "svc", "--client-secret-file", "/s"],
        &["--client-id", "svc", "--issuer", "https://i"],
        &[
            "--client-id",
            "svc",
            "--client-secret-file",
            "/s",
            "--issuer",
            "https://i",
            "--token-endpoint",
            "https://i/t",
        ],
        &["--token-file", "t", "--client-secret-file", "/s"],
        &["--token-file", "t", "--scope", "x"],
        &["--token-file", "t", "--resource", "urn:x"],
        &["--token-file", "t", "--issuer", "https://i"],
        &["--token-file", "t", "--token-env", "V"],
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

/// A one-shot HTTP server: answers `status` and `body` to the first
/// request and hands the request text back.
async fn token_server(
    status: u16,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&req).to_string()
    });
    (url, task)
}

async fn run_grant(status: u16, body: &'static str) -> (Result<String, WorkloadError>, String) {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), b"s3cret\n", 0o600);
    let (url, task) = token_server(status, body).await;
    let a = parse(&[
        "--client-id",
        "svc",
        "--client-secret-file",
        secret.to_str().unwrap(),
        "--token-endpoint",
        &url,
        "--resource",
        "urn:jitssh:ca",
        "--scope",
        "issue",
    ])
    .unwrap();
    let http = crate::http_client().unwrap();
    let got = client_credentials(&http, &a, "svc").await;
    (got, task.await.unwrap())
}

#[tokio::test]
async fn client_credentials_grant_sends_the_secret_and_maps_answers() {
    let (got, request) = run_grant(
        200,
        r#"{"access_token":"aaa.bbb.ccc","token_type":"Bearer","expires_in":300}"#,
    )
    .await;
    assert_eq!(got.unwrap(), "aaa.bbb.ccc");
    let lower = request.to_ascii_lowercase();
    // Basic base64("svc:s3cret")
    assert!(request.contains("Basic c3ZjOnMzY3JldA=="), "{request}");
    for p in [
        "grant_type=client_credentials",
        "scope=issue",
        "resource=urn%3ajitssh%3aca",
    ] {
        assert!(lower.contains(p), "{p}: {request}");
    }
    assert!(
        !request.contains("s3cret"),
        "the secret travels only in the header"
    );

    let (got, _) = run_grant(
        401,
        r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
    )
    .await;
    let e = got.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::from(3));
    let msg = e.to_string();
    assert!(
        msg.contains("invalid_client") && msg.contains("--client-secret-file"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");

    let (got, _) = run_grant(503, r#"{"error":"temporarily_unavailable"}"#).await;
    assert_eq!(got.unwrap_err().exit_code(), ExitCode::from(4));

    let (got, _) = run_grant(
        200,
        r#"{"access_token":"opaque-token","token_type":"Bearer"}"#,
    )
    .await;
    assert!(
        matches!(got, Err(WorkloadError::Idp(IdpError::NotJwt))),
        "{got:?}"
    );

    let (got, _) = run_grant(200, r#"{"access_token":"a.b.c","token_type":"mac"}"#).await;
    assert!(
        matches!(got, Err(WorkloadError::Idp(IdpError::BadResponse { .. }))),
        "{got:?}"
    );
}

#[tokio::test]
async fn unreachable_token_endpoint_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), b"s3cret\n", 0o600);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/token");
    let a = parse(&[
        "--client-id",
        "svc",
        "--client-secret-file",
        secret.to_str().unwrap(),
        "--token-endpoint",
        &url,
    ])
    .unwrap();
    let e = client_credentials(&crate::http_client().unwrap(), &a, "svc")
        .await
        .unwrap_err();
    assert!(
        matches!(e, WorkloadError::Idp(IdpError::Unreachable { .. })),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), ExitCode::from(4));
}
