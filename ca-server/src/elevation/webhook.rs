//! Elevation notifications: a JSON POST to the configured webhook on every
//! new pending request and every decision, delivered by one background task
//! with a timeout and bounded retries. The request flow never waits for it:
//! a full queue drops the notification (and logs it).

use std::sync::Mutex;
use std::time::Duration;

use ca_core::identity::Party;
use ca_core::wire::Elevation;
use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::WebhookConfig;
use crate::secret_file::SecretFileError;

/// Notifications waiting for delivery before new ones are dropped.
const QUEUE: usize = 1024;

/// The body of one delivery.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// `elevation.pending`, `elevation.approved`, `elevation.approval`,
    /// `elevation.denied`, `elevation.cancelled`, `elevation.revoked`,
    /// `elevation.expired`.
    pub event: &'static str,
    pub time: u64,
    /// Who caused it (`null` for expiry).
    pub actor: Option<Party>,
    pub comment: Option<String>,
    pub elevation: Elevation,
}

/// Why the notifier cannot be set up; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// `elevation.webhook_url` is not one notifications may go to.
    #[error("{0}")]
    Url(String),
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
}

/// Queues notifications and delivers them in the background.
pub struct Notifier {
    tx: mpsc::Sender<Notification>,
    rx: Mutex<Option<mpsc::Receiver<Notification>>>,
    config: WebhookConfig,
    secret: Option<Vec<u8>>,
}

impl Notifier {
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        // Config load checks this already; a config built in code too.
        crate::config::check_webhook_url(&config.url).map_err(WebhookError::Url)?;
        let secret = match &config.secret_file {
            Some(path) => {
                let text = crate::secret_file::read_line(path, "elevation.webhook_secret_file")?;
                Some(text.trim().as_bytes().to_vec())
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Notifier {
            tx,
            rx: Mutex::new(Some(rx)),
            config,
            secret,
        })
    }

    /// Queue a notification; never waits.
    pub fn notify(&self, n: Notification) {
        if let Err(e) = self.tx.try_send(n) {
            tracing::warn!(error = %e, "elevation webhook queue is full or closed; notification dropped");
        }
    }

    /// Start the delivery task (once; later calls do nothing).
    pub fn spawn(&self) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let config = self.config.clone();
        let secret = self.secret.clone();
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the webhook HTTP client; notifications disabled");
                    return;
                }
            };
            while let Some(n) = rx.recv().await {
                deliver(&client, &config, secret.as_deref(), &n).await;
            }
        });
    }
}

/// `sha256=HEX` of HMAC-SHA256(secret, body).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(
    client: &reqwest::Client,
    config: &WebhookConfig,
    secret: Option<&[u8]>,
    n: &Notification,
) {
    let Ok(body) = serde_json::to_vec(n) else {
        return;
    };
    let mut backoff = Duration::from_millis(500);
    for attempt in 0..=config.retries {
        let mut req = client
            .post(config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Jitssh-Event", n.event)
            .body(body.clone());
        if let Some(secret) = secret {
            req = req.header("X-Jitssh-Signature", signature(secret, &body));
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(event = n.event, id = %n.elevation.id, "webhook delivered");
                return;
            }
            Ok(resp) => {
                tracing::warn!(event = n.event, status = %resp.status(), attempt, "webhook refused the notification")
            }
            Err(e) => {
                tracing::warn!(event = n.event, error = %e, attempt, "webhook delivery failed")
            }
        }
        if attempt < config.retries {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
    tracing::error!(event = n.event, id = %n.elevation.id, "webhook notification given up after retries");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_file_is_checked_like_a_ca_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook.secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let config = |mode| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            WebhookConfig {
                url: "https://hooks.example.com/x".parse().unwrap(),
                timeout: Duration::from_secs(1),
                retries: 0,
                secret_file: Some(path.clone()),
            }
        };
        let e = Notifier::new(config(0o644)).err().unwrap().to_string();
        assert!(
            e.contains("elevation.webhook_secret_file")
                && e.contains(&format!("chmod 600 {}", path.display())),
            "{e}"
        );
        let n = Notifier::new(config(0o600)).unwrap();
        assert_eq!(n.secret.as_deref(), Some(&b"s3cret"[..]));
        let plain = WebhookConfig {
            url: "http://hooks.example.com/x".parse().unwrap(),
            ..config(0o600)
        };
        assert!(Notifier::new(plain).is_err());
    }

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
