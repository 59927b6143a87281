//! The web console in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`) over WebDriver (`fantoccini`), signed in through
//! the real test OpenID provider's login form. This file holds what every
//! browser test shares (the browser, the CA with `[ui]` on, signing in,
//! screenshots into `docs/console/`); one file per page holds its tests.

mod audit;
mod decide;
mod grants;
mod my_access;
mod ops;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use jitssh_e2e::{free_port, init_ca, spawn_serve_on, wait_for_port};
use serde_json::json;

use crate::provider::{CLIENT_ID, Provider, ProviderUser};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser is installed; under CI (`CI=true`, set by `.ci/run`)
/// a missing one fails the suite instead of skipping this test.
pub fn browser_present() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromium-driver are missing (apt-get install -y chromium chromium-driver; tests/run does it)"
        );
        eprintln!(
            "skipping the browser test: chromium and chromium-driver are not installed (tests/run installs them)"
        );
    }
    present
}

/// A process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `jitssh-ca init` for `issuer`, `[ui]` on at `http://127.0.0.1:PORT`, served there.
pub fn console_ca(issuer: &str, dir: &Path) -> (String, Killed) {
    init_ca(dir, issuer, CLIENT_ID);
    let port = free_port();
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let on = format!("\nenabled = true\npublic_url = \"http://127.0.0.1:{port}\"\n");
    assert!(text.contains("\nenabled = false\n"), "{text}");
    std::fs::write(&config, text.replacen("\nenabled = false\n", &on, 1)).unwrap();
    let (url, child) = spawn_serve_on(&config, port);
    (url, Killed(child))
}

pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn shoot(c: &Client, width: u32, height: u32, name: &str) {
    c.set_window_size(width, height).await.unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(name), png).unwrap();
}

/// The page's width fits the window: nothing to scroll sideways.
pub async fn fits(c: &Client) -> bool {
    c.execute(
        "return document.documentElement.scrollWidth <= window.innerWidth;",
        vec![],
    )
    .await
    .unwrap()
    .as_bool()
    .unwrap()
}

/// Wait until the browser is at a URL starting with `prefix`.
pub async fn wait_at(c: &Client, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = c.current_url().await.unwrap().to_string();
        if url.starts_with(prefix) {
            return url;
        }
        assert!(Instant::now() < deadline, "still at {url}, not {prefix}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chromedriver on a free port, killed when dropped.
pub struct Driver {
    pub port: u16,
    _child: Killed,
}

impl Driver {
    pub fn start() -> Driver {
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut driver, "chromedriver");
        Driver {
            port,
            _child: Killed(driver),
        }
    }

    /// A new headless Chromium session (1280×900, no sandbox: CI runs as root).
    pub async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900", "--hide-scrollbars"]}),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("WebDriver session with chromium")
    }
}

/// From the console's sign-in page, sign in as `user` through the
/// provider's login form (and its consent page if it shows one), back at
/// `/ui/`.
pub async fn sign_in(c: &Client, ca: &str, provider: &Provider, user: &ProviderUser) {
    c.goto(&format!("{ca}/ui/login")).await.unwrap();
    c.find(Locator::LinkText("Sign in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    finish_sign_in(c, ca, provider, user).await;
}

/// The provider's part of a sign-in already sent there.
pub async fn finish_sign_in(c: &Client, ca: &str, provider: &Provider, user: &ProviderUser) {
    wait_at(c, &provider.issuer).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&format!("{ca}/ui/"))
    {
        assert!(
            Instant::now() < deadline,
            "sign-in did not come back: {}",
            c.source().await.unwrap()
        );
        if let Ok(login) = c.find(Locator::Css("input[name=login]")).await {
            login.send_keys(&user.username).await.unwrap();
            c.find(Locator::Css("input[name=password]"))
                .await
                .unwrap()
                .send_keys(&user.password)
                .await
                .unwrap();
            c.find(Locator::Css("button[type=submit]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        } else if let Ok(button) = c.find(Locator::Css("button[type=submit]")).await {
            button.click().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_at(c, &format!("{ca}/ui/")).await;
}

/// The text of the page's `<main>`. A page still arriving (a redirect or a
/// form's answer) can replace `<main>` between finding it and reading it:
/// read again then, for up to 10 s.
pub async fn main_text(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = async { c.find(Locator::Css("main")).await?.text().await }.await;
        match read {
            Ok(text) => return text,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reading <main> again: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no <main> to read: {e}"),
        }
    }
}

/// `user`'s ID token from the provider (its password grant), for API calls.
pub fn id_token(provider: &Provider, user: &ProviderUser) -> String {
    provider.login_tokens(&user.username, &user.password)["id_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST /v1/elevations` for `role` with `reason`, as the holder of
/// `token`: the new elevation's id.
pub fn elevate(ca: &str, token: &str, role: &str, reason: &str) -> String {
    let r = reqwest::blocking::Client::new()
        .post(format!("{ca}/v1/elevations"))
        .bearer_auth(token)
        .json(&json!({"role": role, "reason": reason}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Type `keys` into the element `css` (end with `\u{E007}`, Enter, to
/// submit its form from the keyboard).
pub async fn type_into(c: &Client, css: &str, keys: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(keys)
        .await
        .unwrap();
}

/// Wait until the page's `<main>` shows `text`; its text then.
pub async fn wait_for_text(c: &Client, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let main = main_text(c).await;
        if main.contains(text) {
            return main;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never showed in\n{main}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The part of a page's text from the line `from` to the line `to` (or the
/// end), for assertions about one section.
pub fn section<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} missing from\n{text}"));
    let end = text[start..].find(to).map_or(text.len(), |e| start + e);
    &text[start..end]
}

/// Screenshots of the current page at desktop and phone widths
/// (`NAME-desktop.png`, `NAME-phone.png`), each checked for sideways
/// scrolling; the window is left at desktop width.
pub async fn shoot_both(c: &Client, name: &str) {
    shoot(c, 1280, 900, &format!("{name}-desktop.png")).await;
    assert!(fits(c).await, "{name}: sideways scrolling at desktop width");
    shoot(c, 375, 812, &format!("{name}-phone.png")).await;
    assert!(fits(c).await, "{name}: sideways scrolling at 375 px");
    c.set_window_size(1280, 900).await.unwrap();
}
