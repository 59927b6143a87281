//! A real third-party OpenID provider for the end-to-end suites: npm
//! `oidc-provider` (tests/oidc-provider/server.mjs) on a loopback port, and the
//! *user's* side of its logins (browser pages, device verification) driven
//! with plain HTTP requests: a small cookie jar, manual redirects, and the
//! provider's own HTML forms. No browser.
//!
//! The provider's `jitssh` client is public (PKCE S256, any loopback redirect
//! URI and port, device flow, refresh tokens); ID tokens are ES256 and carry
//! `email`, `email_verified`, `preferred_username` and `groups`. See
//! tests/oidc-provider/README.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jitssh_e2e::free_port;
use rand_core::{OsRng, RngCore};
use reqwest::Url;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The interactive CLI's client: public, PKCE S256, loopback redirects, device flow.
pub const CLIENT_ID: &str = "jitssh";
/// The scopes a `jitssh login` asks for.
pub const SCOPES: &str = "openid email profile groups offline_access";
/// Confidential client for the `client_credentials` grant (JWT access tokens).
pub const AUTOMATION_CLIENT_ID: &str = "jitssh-automation";
pub const AUTOMATION_CLIENT_SECRET: &str = "jitssh-automation-secret";
/// Resource indicator and `aud` of the automation client's access tokens.
pub const AUTOMATION_RESOURCE: &str = "urn:jitssh:ca";
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// An account at the provider. Its `sub` is [`ProviderUser::subject`];
/// `email_verified` is true; `preferred_username` is `username`.
#[derive(Debug, Clone)]
pub struct ProviderUser {
    pub username: String,
    pub password: String,
    pub email: String,
    pub groups: Vec<String>,
}

impl ProviderUser {
    /// `username` with password `{username}-password` and email `{username}@example.com`.
    pub fn new(username: &str, groups: &[&str]) -> ProviderUser {
        ProviderUser {
            username: username.into(),
            password: format!("{username}-password"),
            email: format!("{username}@example.com"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// The `sub` claim the provider gives this user (deliberately not the username).
    pub fn subject(&self) -> String {
        format!("user-{}", self.username)
    }
}

/// A running `oidc-provider` (Node) on 127.0.0.1; dropped = killed.
pub struct Provider {
    /// `http://127.0.0.1:PORT`, also the `iss` of its tokens.
    pub issuer: String,
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    discovery: Value,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc-provider")
}

impl Provider {
    /// Start the provider with these users (and the built-in clients), wait
    /// until it listens, and read its discovery document. Takes about 1–2 s.
    pub fn start(users: &[ProviderUser]) -> Provider {
        Self::start_with(users, json!({}))
    }

    /// [`Provider::start`] with `overrides` merged into its configuration
    /// (top-level keys of `server.mjs`'s config, e.g. `client`).
    pub fn start_with(users: &[ProviderUser], overrides: Value) -> Provider {
        let dir = provider_dir();
        match Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "the test OpenID provider needs Node.js 20.18 or later (`node` on PATH) and \
                 `npm ci` in tests/oidc-provider; `tests/run` does both"
            ),
        }
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "{} has no node_modules/oidc-provider: run `npm ci` in tests/oidc-provider (or `tests/run`)",
            dir.display()
        );

        let tmp = tempfile::tempdir().unwrap();
        let mut config = json!({
            "users": users.iter().map(|u| json!({
                "sub": u.subject(),
                "username": u.username,
                "password": u.password,
                "email": u.email,
                "email_verified": true,
                "groups": u.groups,
            })).collect::<Vec<_>>(),
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                config.insert(k.clone(), v.clone());
            }
        }
        let config_path = tmp.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = tmp.path().join("provider.log");

        // A port picked by free_port() can be taken before node binds it: retry.
        let mut last_error = String::new();
        for _ in 0..3 {
            match spawn(&dir, free_port(), &config_path, &log) {
                Ok((child, issuer)) => {
                    let mut provider = Provider {
                        issuer,
                        child,
                        _dir: tmp,
                        log,
                        discovery: Value::Null,
                    };
                    let url = format!("{}/.well-known/openid-configuration", provider.issuer);
                    provider.discovery = http()
                        .get(&url)
                        .send()
                        .and_then(|r| r.error_for_status())
                        .and_then(|r| r.json())
                        .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", provider.log()));
                    return provider;
                }
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        panic!("the test OpenID provider did not start: {last_error}");
    }

    /// The provider's stderr so far (warnings, refused logins, server errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub fn discovery(&self) -> &Value {
        &self.discovery
    }

    /// An endpoint URL from the discovery document, e.g. `token_endpoint`.
    pub fn endpoint(&self, name: &str) -> String {
        self.discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("discovery has no {name}: {}", self.discovery))
            .to_owned()
    }

    /// POST a form to the token endpoint; returns the status and JSON body.
    pub fn token_request(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = http()
            .post(self.endpoint("token_endpoint"))
            .form(form)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Complete an authorization-code login as `user` the way a person in a
    /// browser would: GET `authorize_url` (the full URL the CLI built), follow
    /// the provider's redirects with a cookie-keeping client, submit the login
    /// form and the consent form, and return the final redirect Location (the
    /// loopback `redirect_uri` with `?code=...&state=...&iss=...`). With
    /// `follow_final`, also GET that URL so the CLI's loopback listener gets it
    /// (any HTTP answer is accepted). Panics if the provider refuses.
    pub fn browser_login(
        &self,
        authorize_url: &str,
        user: &str,
        password: &str,
        follow_final: bool,
    ) -> String {
        self.try_browser_login(authorize_url, user, password, follow_final)
            .unwrap_or_else(|e| {
                panic!(
                    "browser login as {user} failed: {e:#}\nprovider log:\n{}",
                    self.log()
                )
            })
    }

    /// [`Provider::browser_login`] that returns the failure instead (wrong
    /// password, unknown user, a redirect with `?error=...`).
    pub fn try_browser_login(
        &self,
        authorize_url: &str,
        user: &str,
        password: &str,
        follow_final: bool,
    ) -> anyhow::Result<String> {
        let mut browser = Browser::new(&self.issuer)?;
        let first = browser.open(authorize_url)?;
        let location = match browser.act(first, user, password, None)? {
            Outcome::Left(location) => location,
            Outcome::Done(body) => bail!(
                "the login ended on a provider page, not a redirect: {}",
                excerpt(&body)
            ),
        };
        let url = Url::parse(&location).with_context(|| format!("final redirect {location:?}"))?;
        if let Some((_, error)) = url.query_pairs().find(|(k, _)| k == "error") {
            let description = url
                .query_pairs()
                .find(|(k, _)| k == "error_description")
                .map(|(_, v)| v.into_owned());
            bail!(
                "the provider redirected with error={error} ({})",
                description.unwrap_or_default()
            );
        }
        if follow_final {
            http()
                .get(url)
                .send()
                .with_context(|| format!("GET {location} (the CLI's loopback listener)"))?;
        }
        Ok(location)
    }

    /// Device flow, user side: open `verification_uri`, enter `user_code`,
    /// confirm, log in as `user`, consent. Panics unless the provider ends on
    /// its success page.
    pub fn device_approve(
        &self,
        verification_uri: &str,
        user_code: &str,
        user: &str,
        password: &str,
    ) {
        self.try_device_approve(verification_uri, user_code, user, password)
            .unwrap_or_else(|e| {
                panic!(
                    "device approval as {user} failed: {e:#}\nprovider log:\n{}",
                    self.log()
                )
            })
    }

    /// [`Provider::device_approve`] that returns the failure instead.
    pub fn try_device_approve(
        &self,
        verification_uri: &str,
        user_code: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let mut browser = Browser::new(&self.issuer)?;
        let first = browser.open(verification_uri)?;
        match browser.act(first, user, password, Some(user_code))? {
            Outcome::Done(body) if body.contains("Sign-in Success") => Ok(()),
            Outcome::Done(body) => bail!(
                "the device approval ended on an unexpected page: {}",
                excerpt(&body)
            ),
            Outcome::Left(location) => {
                bail!("the device approval left the provider for {location}")
            }
        }
    }

    /// Test-only shortcut: a complete authorization-code + PKCE login as
    /// `user`, acting as the `jitssh` client with a loopback redirect URI that
    /// nobody listens on; returns the token response (`id_token`,
    /// `refresh_token`, `access_token`, ...). The ID token's `nonce` is checked.
    pub fn login_tokens(&self, user: &str, password: &str) -> Value {
        let pkce = Pkce::generate();
        let state = random_token();
        let nonce = random_token();
        let redirect_uri = format!("http://127.0.0.1:{}/callback", free_port());
        let authorize_url = Url::parse_with_params(
            &self.endpoint("authorization_endpoint"),
            [
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", &redirect_uri),
                ("scope", SCOPES),
                ("state", &state),
                ("nonce", &nonce),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        let location = self.browser_login(authorize_url.as_str(), user, password, false);
        let url = Url::parse(&location).unwrap();
        assert!(
            location.starts_with(&redirect_uri),
            "redirected to {location}, not {redirect_uri}"
        );
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(
            param("state").as_deref(),
            Some(state.as_str()),
            "state in {location}"
        );
        assert_eq!(
            param("iss").as_deref(),
            Some(self.issuer.as_str()),
            "iss in {location}"
        );
        let code = param("code").unwrap_or_else(|| panic!("no code in {location}"));
        let (status, tokens) = self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("client_id", CLIENT_ID),
            ("code_verifier", &pkce.verifier),
        ]);
        assert_eq!(status, 200, "token endpoint: {tokens}\n{}", self.log());
        let id_token = tokens["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no id_token: {tokens}"));
        assert_eq!(decode_jwt(id_token).1["nonce"], json!(nonce));
        tokens
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn `node server.mjs` and wait for its `READY <issuer>` line.
fn spawn(dir: &Path, port: u16, config: &Path, log: &Path) -> anyhow::Result<(Child, String)> {
    let stderr = std::fs::File::create(log)?;
    let mut child = Command::new("node")
        .arg(dir.join("server.mjs"))
        .args(["--port", &port.to_string(), "--config"])
        .arg(config)
        // Node exits when our end of its stdin closes, even if we are killed.
        .arg("--die-with-parent")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .context("spawning node")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    // Reads READY, then keeps draining stdout so node never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(issuer) = line.strip_prefix("READY ") {
                let _ = tx.send(issuer.trim().to_owned());
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(issuer) = rx.recv_timeout(Duration::from_millis(50)) {
            return Ok((child, issuer));
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "node server.mjs --port {port} exited with {status}:\n{}",
                std::fs::read_to_string(log)?
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "node server.mjs --port {port} was not READY within {START_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(log)?
            );
        }
    }
}

/// A plain client that does not follow redirects.
fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7636 S256: a random verifier and its challenge.
#[derive(Debug)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn generate() -> Pkce {
        let verifier = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// Header and payload of a compact JWS, not verified.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = |what: &str| -> Value {
        let b64 = parts
            .next()
            .unwrap_or_else(|| panic!("JWT without {what}: {token}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .unwrap_or_else(|e| panic!("JWT {what} is not base64url: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT {what} is not JSON: {e}"))
    };
    let header = part("header");
    let payload = part("payload");
    (header, payload)
}

/// The text of an HTML page (styles, scripts and tags removed), shortened.
fn excerpt(body: &str) -> String {
    let mut text = String::new();
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        text.push(' ');
        rest = &rest[lt..];
        let lower = rest.get(..8).unwrap_or(rest).to_ascii_lowercase();
        let end = if lower.starts_with("<style") || lower.starts_with("<script") {
            let close = if lower.starts_with("<style") {
                "</style>"
            } else {
                "</script>"
            };
            rest.to_ascii_lowercase()
                .find(close)
                .map(|p| p + close.len())
        } else {
            rest.find('>').map(|p| p + 1)
        };
        rest = &rest[end.unwrap_or(rest.len())..];
    }
    text.push_str(rest);
    let text = decode_entities(&text.split_whitespace().collect::<Vec<_>>().join(" "));
    text.chars().take(1500).collect()
}

// ---------------------------------------------------------------------------
// The browser: cookies, redirects and forms, just enough for the provider's
// own pages (devInteractions login and consent, device code input/confirm).

#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    Get,
    Post,
}

#[derive(Debug)]
struct Cookie {
    name: String,
    value: String,
    path: String,
}

/// A page the provider rendered (after following its redirects).
#[derive(Debug)]
struct Page {
    url: Url,
    status: u16,
    body: String,
}

enum Step {
    Page(Page),
    /// A redirect off the provider (to the client's redirect_uri): not followed.
    Left(String),
}

enum Outcome {
    Left(String),
    /// A page without a form we know (e.g. the device flow's success page).
    Done(String),
}

struct Browser {
    http: Client,
    origin: reqwest::Url,
    cookies: Vec<Cookie>,
}

impl Browser {
    fn new(issuer: &str) -> anyhow::Result<Browser> {
        Ok(Browser {
            http: http(),
            origin: Url::parse(issuer)?,
            cookies: Vec::new(),
        })
    }

    fn on_provider(&self, url: &Url) -> bool {
        url.origin() == self.origin.origin()
    }

    /// GET a provider URL (the authorization or verification URL) and follow its redirects.
    fn open(&mut self, url: &str) -> anyhow::Result<Step> {
        let parsed = Url::parse(url).with_context(|| format!("URL {url:?}"))?;
        if !self.on_provider(&parsed) {
            bail!("{url} is not on the provider {}", self.origin);
        }
        self.go(Method::Get, url, &[])
    }

    /// One request, then the provider's redirects, until a page or a redirect elsewhere.
    fn go(&mut self, method: Method, url: &str, form: &[(String, String)]) -> anyhow::Result<Step> {
        let mut url = Url::parse(url).with_context(|| format!("URL {url:?}"))?;
        let mut method = method;
        for _ in 0..20 {
            if !self.on_provider(&url) {
                return Ok(Step::Left(url.into()));
            }
            let mut req = match method {
                Method::Get => self.http.get(url.clone()),
                Method::Post => self.http.post(url.clone()).form(form),
            };
            let cookie = self.cookie_header(&url);
            if !cookie.is_empty() {
                req = req.header(reqwest::header::COOKIE, cookie);
            }
            let resp = req.send().with_context(|| format!("{method:?} {url}"))?;
            for value in resp.headers().get_all(reqwest::header::SET_COOKIE) {
                self.store_cookie(value.to_str().unwrap_or_default(), &url);
            }
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| anyhow!("{status} without Location from {url}"))?;
                url = url
                    .join(location)
                    .with_context(|| format!("Location {location:?}"))?;
                method = Method::Get;
                continue;
            }
            let body = resp.text()?;
            return Ok(Step::Page(Page {
                url,
                status: status.as_u16(),
                body,
            }));
        }
        bail!("more than 20 redirects")
    }

    fn cookie_header(&self, url: &Url) -> String {
        self.cookies
            .iter()
            .filter(|c| path_matches(&c.path, url.path()))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store_cookie(&mut self, header: &str, url: &Url) {
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        // Default path: the request path's directory (RFC 6265 5.1.4).
        let mut path = match url.path().rfind('/') {
            Some(0) | None => "/".to_owned(),
            Some(i) => url.path()[..i].to_owned(),
        };
        let mut expired = value.is_empty();
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "path" => path = v.trim().to_owned(),
                "max-age" => expired |= v.trim().parse::<i64>().map(|s| s <= 0).unwrap_or(false),
                "expires" => expired |= v.contains("1970"),
                _ => {}
            }
        }
        self.cookies.retain(|c| !(c.name == name && c.path == path));
        if !expired {
            self.cookies.push(Cookie { name, value, path });
        }
    }

    /// Fill in and submit the provider's forms until it redirects away or
    /// shows a page without a form: login (username, password), consent,
    /// device code input (`user_code`) and device confirmation.
    fn act(
        &mut self,
        mut step: Step,
        user: &str,
        password: &str,
        user_code: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let mut seen = Vec::new();
        loop {
            let page = match step {
                Step::Left(location) => return Ok(Outcome::Left(location)),
                Step::Page(page) => page,
            };
            if !(200..300).contains(&page.status) {
                bail!(
                    "{} answered {}: {}",
                    page.url,
                    page.status,
                    excerpt(&page.body)
                );
            }
            let Some(form) = forms(&page.body)
                .into_iter()
                .find(|f| f.method.eq_ignore_ascii_case("post"))
            else {
                return Ok(Outcome::Done(page.body));
            };
            let kind = form.kind();
            // The same form again means the last submission was refused.
            if seen.contains(&kind) {
                bail!(
                    "the provider showed the {kind} form again: {}",
                    excerpt(&page.body)
                );
            }
            seen.push(kind.clone());
            let mut fields = form.fields.clone();
            let mut set = |name: &str, value: &str| match fields.iter_mut().find(|(k, _)| k == name)
            {
                Some(field) => field.1 = value.to_owned(),
                None => fields.push((name.to_owned(), value.to_owned())),
            };
            match kind.as_str() {
                "login" => {
                    set("login", user);
                    set("password", password);
                }
                "consent" | "device confirmation" => {}
                "device code" => {
                    let code = user_code
                        .ok_or_else(|| anyhow!("the provider asks for a device user code"))?;
                    set("user_code", code);
                }
                other => bail!(
                    "unexpected form ({other}) at {}: {}",
                    page.url,
                    excerpt(&page.body)
                ),
            }
            let action = match &form.action {
                Some(action) if !action.is_empty() => page.url.join(action)?,
                _ => page.url.clone(),
            };
            step = self.go(Method::Post, action.as_str(), &fields)?;
        }
    }
}

fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

#[derive(Debug, Clone)]
struct Form {
    id: Option<String>,
    action: Option<String>,
    method: String,
    fields: Vec<(String, String)>,
}

impl Form {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn kind(&self) -> String {
        match (self.field("prompt"), self.id.as_deref()) {
            (Some("login"), _) => "login".into(),
            (Some("consent"), _) => "consent".into(),
            (_, Some("op.deviceInputForm")) => "device code".into(),
            (_, Some("op.deviceConfirmForm")) => "device confirmation".into(),
            (prompt, id) => format!("prompt={prompt:?} id={id:?}"),
        }
    }
}

/// The forms of a page: attributes of `<form>` and the named `<input>`s inside.
fn forms(html: &str) -> Vec<Form> {
    let mut out: Vec<Form> = Vec::new();
    let mut open = false;
    for (name, attrs) in tags(html) {
        match name.as_str() {
            "form" => {
                let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                out.push(Form {
                    id: get("id"),
                    action: get("action"),
                    method: get("method").unwrap_or_else(|| "get".into()),
                    fields: Vec::new(),
                });
                open = true;
            }
            "/form" => open = false,
            "input" if open => {
                let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                if let (Some(form), Some(name)) = (out.last_mut(), get("name")) {
                    form.fields.push((name, get("value").unwrap_or_default()));
                }
            }
            _ => {}
        }
    }
    out
}

/// Start tags (lowercased name, attributes with entity-decoded values) and
/// end tags (`/name`), in order. Enough for server-rendered forms.
fn tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
    let bytes = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(lt) = html[i..].find('<').map(|p| p + i) {
        i = lt + 1;
        if html[i..].starts_with("!--") {
            i = html[i..].find("-->").map_or(html.len(), |p| i + p + 3);
            continue;
        }
        let name_end = html[i..]
            .find(|c: char| {
                c.is_ascii_whitespace() || c == '>' || (c == '/' && !html[i..].starts_with('/'))
            })
            .map_or(html.len(), |p| i + p);
        let name = html[i..name_end].to_ascii_lowercase();
        if name.is_empty()
            || !name
                .trim_start_matches('/')
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        {
            continue;
        }
        // Attributes up to the closing '>' outside quotes.
        let mut attrs = Vec::new();
        let mut j = name_end;
        loop {
            while j < bytes.len() && (bytes[j].is_ascii_whitespace() || bytes[j] == b'/') {
                j += 1;
            }
            if j >= bytes.len() || bytes[j] == b'>' {
                break;
            }
            let k_start = j;
            while j < bytes.len()
                && !bytes[j].is_ascii_whitespace()
                && !matches!(bytes[j], b'=' | b'>' | b'/')
            {
                j += 1;
            }
            let key = html[k_start..j].to_ascii_lowercase();
            let mut value = String::new();
            if j < bytes.len() && bytes[j] == b'=' {
                j += 1;
                if j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
                    let quote = bytes[j] as char;
                    let end = html[j + 1..].find(quote).map_or(html.len(), |p| j + 1 + p);
                    value = decode_entities(&html[j + 1..end]);
                    j = (end + 1).min(html.len());
                } else {
                    let v_start = j;
                    while j < bytes.len() && !bytes[j].is_ascii_whitespace() && bytes[j] != b'>' {
                        j += 1;
                    }
                    value = decode_entities(&html[v_start..j]);
                }
            }
            if key.is_empty() {
                j += 1;
            } else {
                attrs.push((key, value));
            }
        }
        out.push((name, attrs));
        i = (j + 1).min(html.len());
    }
    out
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|&p| p <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> ProviderUser {
        ProviderUser::new("alice", &["developers", "sre"])
    }

    #[test]
    fn provider_login_issues_es256_id_token_with_claims() {
        let user = alice();
        let provider = Provider::start(std::slice::from_ref(&user));
        let d = provider.discovery();
        assert_eq!(d["issuer"], json!(provider.issuer));
        assert!(d["device_authorization_endpoint"].is_string(), "{d}");
        assert!(
            d["code_challenge_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("S256")),
            "{d}"
        );
        assert!(
            d["id_token_signing_alg_values_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("ES256")),
            "{d}"
        );
        let jwks: Value = http()
            .get(provider.endpoint("jwks_uri"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let algs: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["alg"].as_str())
            .collect();
        for alg in ["ES256", "RS256", "EdDSA"] {
            assert!(algs.contains(&alg), "JWKS lacks {alg}: {jwks}");
        }
        assert!(
            jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k.get("d").is_none()),
            "private JWKS: {jwks}"
        );

        let tokens = provider.login_tokens(&user.username, &user.password);
        assert!(tokens["refresh_token"].is_string(), "{tokens}");
        let (header, claims) = decode_jwt(tokens["id_token"].as_str().unwrap());
        assert_eq!(header["alg"], "ES256", "{header}");
        assert!(header["kid"].is_string(), "{header}");
        assert_eq!(claims["iss"], json!(provider.issuer), "{claims}");
        assert_eq!(claims["aud"], json!(CLIENT_ID), "{claims}");
        assert_eq!(claims["sub"], json!(user.subject()), "{claims}");
        assert_eq!(claims["email"], json!(user.email), "{claims}");
        assert_eq!(claims["email_verified"], json!(true), "{claims}");
        assert_eq!(
            claims["preferred_username"],
            json!(user.username),
            "{claims}"
        );
        assert_eq!(claims["groups"], json!(user.groups), "{claims}");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 300, "ID token lifetime: {claims}");
    }

    #[test]
    fn provider_refuses_wrong_password_and_unknown_user() {
        let user = alice();
        let provider = Provider::start(std::slice::from_ref(&user));
        let pkce = Pkce::generate();
        let url = Url::parse_with_params(
            &provider.endpoint("authorization_endpoint"),
            [
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", "http://127.0.0.1:1/any/path"),
                ("scope", SCOPES),
                ("state", "s"),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        let err = provider
            .try_browser_login(url.as_str(), "alice", "wrong", false)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("Invalid username or password"),
            "{err:#}"
        );
        let err = provider
            .try_browser_login(url.as_str(), "mallory", "x", false)
            .unwrap_err();
        assert!(format!("{err:#}").contains("401"), "{err:#}");
        // Any loopback port and path is a valid redirect URI; the right password works.
        let location = provider.browser_login(url.as_str(), "alice", &user.password, false);
        assert!(
            location.starts_with("http://127.0.0.1:1/any/path?code="),
            "{location}"
        );
        // A non-loopback redirect URI is refused by the provider itself (400 page).
        let evil = url.as_str().replace("127.0.0.1%3A1", "evil.example");
        let err = provider
            .try_browser_login(&evil, "alice", &user.password, false)
            .unwrap_err();
        assert!(format!("{err:#}").contains("400"), "{err:#}");
        // The helper only drives the provider's own pages.
        assert!(
            provider
                .try_browser_login("http://127.0.0.1:1/auth", "alice", "x", false)
                .is_err()
        );
    }

    #[test]
    fn provider_browser_login_delivers_code_to_loopback_listener() {
        use std::io::{Read, Write};
        let user = alice();
        let provider = Provider::start(std::slice::from_ref(&user));
        // Stands in for the CLI's RFC 8252 loopback listener.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let redirect_uri = format!("http://{}/", listener.local_addr().unwrap());
        let cli = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "connection closed mid-request");
                request.extend_from_slice(&buf[..n]);
            }
            let body = "You may close this window.";
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(response.as_bytes()).unwrap();
            String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        });
        let pkce = Pkce::generate();
        let url = Url::parse_with_params(
            &provider.endpoint("authorization_endpoint"),
            [
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", &redirect_uri),
                ("scope", SCOPES),
                ("state", "st8"),
                ("nonce", "n0nce"),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        let location = provider.browser_login(url.as_str(), "alice", &user.password, true);
        let request_line = cli.join().unwrap();
        let path = location
            .strip_prefix(redirect_uri.trim_end_matches('/'))
            .unwrap();
        assert_eq!(request_line, format!("GET {path} HTTP/1.1"));
        assert!(
            path.contains("code=") && path.contains("state=st8"),
            "{path}"
        );
    }

    #[test]
    fn provider_device_flow_issues_id_token() {
        let user = alice();
        let provider = Provider::start(std::slice::from_ref(&user));
        let resp: Value = http()
            .post(provider.endpoint("device_authorization_endpoint"))
            .form(&[("client_id", CLIENT_ID), ("scope", SCOPES)])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let device_code = resp["device_code"]
            .as_str()
            .unwrap_or_else(|| panic!("{resp}"));
        let poll = [
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
            ("client_id", CLIENT_ID),
        ];
        let (status, body) = provider.token_request(&poll);
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("authorization_pending")),
            "{body}"
        );

        let err = provider
            .try_device_approve(
                resp["verification_uri"].as_str().unwrap(),
                "BCDF-GHJK",
                &user.username,
                &user.password,
            )
            .unwrap_err();
        assert!(format!("{err:#}").contains("incorrect"), "{err:#}");
        provider.device_approve(
            resp["verification_uri"].as_str().unwrap(),
            resp["user_code"].as_str().unwrap(),
            &user.username,
            &user.password,
        );
        let (status, tokens) = provider.token_request(&poll);
        assert_eq!(status, 200, "{tokens}");
        let (header, claims) = decode_jwt(tokens["id_token"].as_str().unwrap());
        assert_eq!(header["alg"], "ES256");
        assert_eq!(claims["aud"], json!(CLIENT_ID));
        assert_eq!(claims["preferred_username"], json!(user.username));
        assert_eq!(claims["groups"], json!(user.groups));
        assert!(tokens["refresh_token"].is_string(), "{tokens}");
        // A device code is good for one token response.
        let (status, again) = provider.token_request(&poll);
        assert_eq!(status, 400, "{again}");
    }

    #[test]
    fn provider_refresh_token_gives_new_id_token_until_revoked() {
        let user = alice();
        let provider = Provider::start(std::slice::from_ref(&user));
        let tokens = provider.login_tokens(&user.username, &user.password);
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let (status, refreshed) = provider.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", CLIENT_ID),
        ]);
        assert_eq!(status, 200, "{refreshed}");
        let new_id = refreshed["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{refreshed}"));
        assert_ne!(new_id, tokens["id_token"].as_str().unwrap());
        let claims = decode_jwt(new_id).1;
        assert_eq!(claims["email"], json!(user.email));
        assert_eq!(claims["groups"], json!(user.groups));

        // Public clients get rotated refresh tokens; revoking the new one ends it.
        let rotated = refreshed["refresh_token"].as_str().unwrap_or(refresh);
        let revoked = http()
            .post(provider.endpoint("revocation_endpoint"))
            .form(&[
                ("token", rotated),
                ("token_type_hint", "refresh_token"),
                ("client_id", CLIENT_ID),
            ])
            .send()
            .unwrap();
        assert_eq!(revoked.status().as_u16(), 200);
        let (status, body) = provider.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rotated),
            ("client_id", CLIENT_ID),
        ]);
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
    }

    #[test]
    fn provider_client_credentials_gives_jwt_access_token() {
        let provider = Provider::start(&[alice()]);
        let resp = http()
            .post(provider.endpoint("token_endpoint"))
            .basic_auth(AUTOMATION_CLIENT_ID, Some(AUTOMATION_CLIENT_SECRET))
            .form(&[("grant_type", "client_credentials"), ("scope", "issue")])
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().unwrap();
        assert_eq!(status, 200, "{body}\n{}", provider.log());
        assert!(body.get("id_token").is_none(), "{body}");
        let (header, claims) = decode_jwt(
            body["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{body}")),
        );
        assert_eq!(header["alg"], "ES256", "{header}");
        assert_eq!(header["typ"], "at+jwt", "{header}");
        assert_eq!(claims["iss"], json!(provider.issuer), "{claims}");
        assert_eq!(claims["aud"], json!(AUTOMATION_RESOURCE), "{claims}");
        assert_eq!(claims["client_id"], json!(AUTOMATION_CLIENT_ID), "{claims}");
        assert_eq!(claims["scope"], json!("issue"), "{claims}");
    }

    #[test]
    fn html_forms_are_parsed() {
        let html = r#"<form id="f" action="/interaction/a?x=1&amp;y=&#x2F;" method="post">
            <input type="hidden" name="prompt" value="login"/>
            <input required type="text" name="login" placeholder='a > b' autofocus="on">
            <input
              value="AB-CD" type="text" name="user_code" onfocus="this.select();"></input></form>"#;
        let f = forms(html);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].action.as_deref(), Some("/interaction/a?x=1&y=/"));
        assert_eq!(f[0].kind(), "login");
        assert_eq!(
            f[0].fields,
            vec![
                ("prompt".into(), "login".into()),
                ("login".into(), String::new()),
                ("user_code".into(), "AB-CD".into())
            ]
        );
        assert!(path_matches("/interaction/abc", "/interaction/abc"));
        assert!(path_matches("/", "/auth/x"));
        assert!(!path_matches("/auth/x", "/auth/xy"));
    }
}
