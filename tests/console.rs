//! The web console in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`) over WebDriver (`fantoccini`), signing in through
//! the real test OpenID provider's login form, reading "My access", the
//! session cookie's flags as the browser holds them, screenshots at desktop
//! and phone widths (into `docs/console/`), and logging out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use jitssh_e2e::{free_port, init_ca, spawn_serve_on, wait_for_port};
use serde_json::json;

use crate::provider::{CLIENT_ID, Provider, ProviderUser};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser is installed; under CI (`CI=true`, set by `.ci/run`)
/// a missing one fails the suite instead of skipping this test.
fn browser_present() -> bool {
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
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `jitssh-ca init` for `issuer`, `[ui]` on at `http://127.0.0.1:PORT`, served there.
fn console_ca(issuer: &str, dir: &Path) -> (String, Killed) {
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

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(c: &Client, width: u32, height: u32, name: &str) {
    c.set_window_size(width, height).await.unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(name), png).unwrap();
}

/// The page's width fits the window: nothing to scroll sideways.
async fn fits(c: &Client) -> bool {
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
async fn wait_at(c: &Client, prefix: &str) -> String {
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

#[test]
fn sign_in_with_a_real_browser_read_my_access_and_sign_out() {
    if !browser_present() {
        return;
    }
    let cora = ProviderUser::new("e2e-cora", &["dba", "oncall", "sre"]);
    let provider = Provider::start(std::slice::from_ref(&cora));
    let dir = tempfile::tempdir().unwrap();
    let (ca, _ca) = console_ca(&provider.issuer, dir.path());

    // Something to show: one grant (auto-approved), one request waiting,
    // whose reason tries to run a script.
    let token = provider.login_tokens(&cora.username, &cora.password)["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (role, reason) in [
        ("db-admin", "INC-4711 replication lag on db-3"),
        (
            "prod-root",
            "kernel upgrade <script>document.title='pwned'</script>",
        ),
    ] {
        let r = http
            .post(format!("{ca}/v1/elevations"))
            .bearer_auth(&token)
            .json(&json!({"role": role, "reason": reason}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    }

    let port = free_port();
    let mut driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut driver, "chromedriver");
    let _driver = Killed(driver);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let old_session = rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900", "--hide-scrollbars"]}),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session with chromium");

        // No session: the console sends the browser to its sign-in page.
        c.goto(&format!("{ca}/ui/")).await.unwrap();
        wait_at(&c, &format!("{ca}/ui/login")).await;
        shoot(&c, 1280, 900, "sign-in-desktop.png").await;
        c.find(Locator::LinkText("Sign in")).await.unwrap().click().await.unwrap();

        // The provider's own login form, then its consent page if it shows one.
        wait_at(&c, &provider.issuer).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.current_url().await.unwrap().as_str().starts_with(&format!("{ca}/ui/")) {
            assert!(Instant::now() < deadline, "sign-in did not come back: {}", c.source().await.unwrap());
            if let Ok(login) = c.find(Locator::Css("input[name=login]")).await {
                login.send_keys(&cora.username).await.unwrap();
                c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(&cora.password).await.unwrap();
                c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
            } else if let Ok(button) = c.find(Locator::Css("button[type=submit]")).await {
                button.click().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(wait_at(&c, &format!("{ca}/ui/")).await, format!("{ca}/ui/"));

        // My access: who, the grant with its minutes, the waiting request.
        let main = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
        for shown in ["My access", "e2e-cora", "user-e2e-cora", provider.issuer.as_str(), "db-admin", "min left", "postgres", "prod-root", "0 of 2 approvals"] {
            assert!(main.contains(shown), "{shown:?} missing from\n{main}");
        }
        // The reason's script is text, and did not run.
        assert!(main.contains("<script>document.title='pwned'</script>"), "{main}");
        assert_eq!(c.title().await.unwrap(), "My access · jitssh");

        // The session cookie as the browser holds it: HttpOnly (no script
        // reads it), SameSite=Lax, only for /ui; not Secure on loopback HTTP.
        let cookie = c.get_named_cookie("jitssh_session").await.unwrap();
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
        assert_eq!(cookie.path(), Some("/ui"));
        assert_ne!(cookie.secure(), Some(true));
        let visible = c.execute("return document.cookie;", vec![]).await.unwrap();
        assert!(!visible.as_str().unwrap_or("").contains("jitssh_session"), "{visible}");
        let session = cookie.value().to_owned();

        shoot(&c, 1280, 900, "my-access-desktop.png").await;
        assert!(fits(&c).await, "sideways scrolling at desktop width");
        shoot(&c, 375, 812, "my-access-phone.png").await;
        assert!(fits(&c).await, "sideways scrolling at 375 px");
        c.set_window_size(1280, 900).await.unwrap();

        // Sign out with the keyboard: Enter on the focused button.
        let out = c.find(Locator::Css("form.logout button")).await.unwrap();
        out.send_keys("\u{E007}").await.unwrap();
        wait_at(&c, &format!("{ca}/ui/login?signed_out=1")).await;
        let main = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
        assert!(main.contains("You are signed out."), "{main}");
        assert!(c.get_named_cookie("jitssh_session").await.is_err(), "the cookie is cleared");
        c.close().await.unwrap();
        session
    });

    // The server ended the session: a kept copy of the cookie opens nothing.
    let r = http
        .get(format!("{ca}/ui/"))
        .header("cookie", format!("jitssh_session={old_session}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login?ended=1");
}
