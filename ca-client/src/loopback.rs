//! The RFC 8252 loopback redirect listener: a one-shot HTTP server on
//! 127.0.0.1 at a random port that waits for the browser to come back with
//! `?code=...&state=...` (or `?error=...`).
//!
//! Requests whose `state` is not ours are answered and otherwise ignored, so
//! another local process cannot end (or hijack) a login in progress.

use std::time::Duration;

use reqwest::Url;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Path of the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";
/// Bound on one request head; browsers send far less.
const MAX_REQUEST: usize = 16 * 1024;
/// A connection that sends no request within this is dropped (browsers pre-connect).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the provider sent back through the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// Success: the authorization code and, if the provider sent it (RFC 9207), its issuer.
    Code { code: String, iss: Option<String> },
    /// The provider refused or the user cancelled.
    Error {
        error: String,
        description: Option<String>,
    },
}

/// Why no callback arrived.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("cannot listen on 127.0.0.1 for the login redirect: {0}")]
    Bind(std::io::Error),
    #[error("no login within {0} s")]
    TimedOut(u64),
}

/// A bound listener; its `redirect_uri` goes into the authorization request.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    pub redirect_uri: String,
}

impl Loopback {
    /// Bind 127.0.0.1 on a port the OS picks.
    pub async fn bind() -> Result<Loopback, LoopbackError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(LoopbackError::Bind)?;
        let port = listener.local_addr().map_err(LoopbackError::Bind)?.port();
        Ok(Loopback {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}"),
        })
    }

    /// Wait up to `timeout` for the callback carrying `state`.
    pub async fn wait(self, state: &str, timeout: Duration) -> Result<Callback, LoopbackError> {
        let (tx, mut rx) = mpsc::channel::<Callback>(1);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let (tx, state) = (tx.clone(), state.to_owned());
                        tokio::spawn(async move {
                            if let Some(cb) = serve(stream, &state).await {
                                let _ = tx.send(cb).await;
                            }
                        });
                    }
                }
                Some(cb) = rx.recv() => return Ok(cb),
                () = &mut deadline => return Err(LoopbackError::TimedOut(timeout.as_secs())),
            }
        }
    }
}

/// Answer one connection; a callback with our state is returned.
async fn serve(mut stream: TcpStream, state: &str) -> Option<Callback> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .ok()??;
    let (status, body, callback) = match parse_request(&head, state) {
        Request::Callback(cb @ Callback::Code { .. }) => (
            "200 OK",
            "Signed in. You can close this tab and return to the terminal.\n".to_owned(),
            Some(cb),
        ),
        Request::Callback(cb @ Callback::Error { .. }) => (
            "200 OK",
            "The sign-in did not complete. Return to the terminal for details.\n".to_owned(),
            Some(cb),
        ),
        Request::WrongState => (
            "400 Bad Request",
            "This sign-in link does not belong to the jitssh login that is waiting. \
             Run `jitssh login` again and use the link it prints.\n"
                .to_owned(),
            None,
        ),
        Request::Other => ("404 Not Found", "Not found.\n".to_owned(), None),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    callback
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

#[derive(Debug, PartialEq, Eq)]
enum Request {
    Callback(Callback),
    WrongState,
    Other,
}

/// Classify a request head: `GET /callback?...` with our state, or not.
fn parse_request(head: &str, state: &str) -> Request {
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (Some("GET"), Some(target)) = (parts.next(), parts.next()) else {
        return Request::Other;
    };
    let Ok(url) = Url::parse(&format!("http://127.0.0.1{target}")) else {
        return Request::Other;
    };
    if url.path() != CALLBACK_PATH {
        return Request::Other;
    }
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(state) {
        return Request::WrongState;
    }
    if let Some(error) = param("error") {
        return Request::Callback(Callback::Error {
            error,
            description: param("error_description"),
        });
    }
    match param("code") {
        Some(code) if !code.is_empty() => Request::Callback(Callback::Code {
            code,
            iss: param("iss"),
        }),
        _ => Request::Callback(Callback::Error {
            error: "invalid_request".into(),
            description: Some("the redirect carried neither code nor error".into()),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_callbacks() {
        let req = |line: &str| parse_request(&format!("{line}\r\nHost: x\r\n\r\n"), "st8");
        assert_eq!(
            req("GET /callback?code=abc&state=st8&iss=http%3A%2F%2Fidp HTTP/1.1"),
            Request::Callback(Callback::Code {
                code: "abc".into(),
                iss: Some("http://idp".into())
            })
        );
        assert_eq!(
            req("GET /callback?error=access_denied&error_description=no&state=st8 HTTP/1.1"),
            Request::Callback(Callback::Error {
                error: "access_denied".into(),
                description: Some("no".into())
            })
        );
        assert_eq!(
            req("GET /callback?code=abc&state=other HTTP/1.1"),
            Request::WrongState
        );
        assert_eq!(req("GET /callback?code=abc HTTP/1.1"), Request::WrongState);
        assert_eq!(req("GET /favicon.ico HTTP/1.1"), Request::Other);
        assert_eq!(
            req("POST /callback?code=a&state=st8 HTTP/1.1"),
            Request::Other
        );
        assert!(matches!(
            req("GET /callback?state=st8 HTTP/1.1"),
            Request::Callback(Callback::Error { .. })
        ));
    }

    #[tokio::test]
    async fn waits_for_its_state_and_times_out() {
        let lb = Loopback::bind().await.unwrap();
        let uri = lb.redirect_uri.clone();
        assert!(uri.starts_with("http://127.0.0.1:") && uri.ends_with("/callback"));
        let waiter = tokio::spawn(async move { lb.wait("good", Duration::from_secs(10)).await });
        let http = reqwest::Client::new();
        let stale = http
            .get(format!("{uri}?code=x&state=bad"))
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status().as_u16(), 400);
        let ok = http
            .get(format!("{uri}?code=c0de&state=good"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            Callback::Code {
                code: "c0de".into(),
                iss: None
            }
        );

        let lb = Loopback::bind().await.unwrap();
        let err = lb.wait("s", Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, LoopbackError::TimedOut(0)));
    }
}
