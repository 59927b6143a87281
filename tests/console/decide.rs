//! To decide in a real browser, the headline: a request made with
//! `jitssh elevate --wait` in a terminal appears on the approver's page
//! without a reload; approved there, the waiting command finishes with the
//! role's certificate in the agent. A person without the right sees no
//! link, gets 403, and a forged POST with their own CSRF token is refused
//! and audited; a cross-site POST without the token decides nothing.
//! Screenshots of the list and of a request.

use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use jitssh_e2e::{Running, bin};
use serde_json::{Value, json};

use super::{Driver, browser_present, console_ca, main_text, shoot_both, sign_in, wait_at};
use crate::elevation::browser_login;
use crate::login::{User, text};
use crate::provider::{Provider, ProviderUser};

const WAIT: Duration = Duration::from_secs(60);

/// The live list's status line, once it says the page is live.
async fn wait_live(c: &Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = c
            .find(Locator::Id("live-status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if status.starts_with("Live:") {
            return;
        }
        assert!(Instant::now() < deadline, "never live: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The certificates in `me`'s agent, as `ssh-keygen -L` shows them.
fn agent_certificates(me: &User) -> String {
    let listed = Command::new("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", &me.agent.socket)
        .output()
        .unwrap();
    let certs: String = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.contains("-cert-v01@openssh.com"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut shown = String::new();
    for (i, line) in certs.lines().enumerate() {
        let file = dir.path().join(format!("c{i}-cert.pub"));
        std::fs::write(&file, line).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-L")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        shown.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    shown
}

#[test]
fn a_request_from_the_terminal_appears_live_and_is_approved_in_the_browser() {
    if !browser_present() {
        return;
    }
    let dora = ProviderUser::new("e2e-dora", &["dba"]);
    let erik = ProviderUser::new("e2e-erik", &["sre"]);
    let lead = ProviderUser::new("e2e-lead", &["dba-leads"]);
    let dev = ProviderUser::new("e2e-dev", &["developers"]);
    let provider = Provider::start(&[dora.clone(), erik.clone(), lead.clone(), dev.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _ca) = console_ca(&provider.issuer, dir.path());
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Already waiting: erik's request, made through the API.
    let token = provider.login_tokens(&erik.username, &erik.password)["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http
        .post(format!("{ca}/v1/elevations"))
        .bearer_auth(&token)
        .json(&json!({"role": "db-admin", "reason": "vacuum the audit tables", "ttl_seconds": 900}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let eriks: Value = r.json().unwrap();
    let (erik_id, erik_hash) = (
        eriks["id"].as_str().unwrap().to_owned(),
        eriks["request_hash"].as_str().unwrap().to_owned(),
    );

    // dora signs in at her terminal (the test plays her browser).
    let me = User::new(&ca);
    browser_login(&provider, &dora, &me);

    let driver = Driver::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dora_id, lead_cookie) = rt.block_on(async {
        let c = driver.browser().await;
        sign_in(&c, &ca, &provider, &lead).await;
        c.find(Locator::LinkText("To decide"))
            .await
            .expect("the approver's bar links To decide")
            .click()
            .await
            .unwrap();
        wait_at(&c, &format!("{ca}/ui/decide")).await;
        wait_live(&c).await;
        let main = main_text(&c).await;
        assert!(main.contains("db-admin for e2e-erik@example.com"), "{main}");
        assert!(!main.contains("e2e-dora"), "{main}");
        // A mark on this page: a reload or navigation would wipe it.
        c.execute("window.jitsshMark = 'same page'; return 1;", vec![])
            .await
            .unwrap();

        // In a terminal: dora asks and waits.
        let elevate = Running::spawn(&mut me.jitssh(&[
            "elevate",
            "db-admin",
            "--reason",
            "restore the orders table",
            "--wait",
        ]));
        let asked = Instant::now();
        let link = loop {
            let links = c
                .find_all(Locator::Css("#decide-list .card-title a"))
                .await
                .unwrap();
            let mut found = None;
            for l in links {
                if l.text().await.unwrap().contains("e2e-dora") {
                    found = Some(l);
                }
            }
            if let Some(l) = found {
                break l;
            }
            assert!(asked.elapsed() < WAIT, "{}", main_text(&c).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!("the request appeared on the page {:?} after the CLI started", asked.elapsed());
        let mark = c
            .execute("return window.jitsshMark || null;", vec![])
            .await
            .unwrap();
        assert_eq!(mark, json!("same page"), "the page was not reloaded");
        let main = main_text(&c).await;
        assert!(main.contains("restore the orders table"), "{main}");
        // Newest first.
        assert!(
            main.find("e2e-dora").unwrap() < main.find("e2e-erik").unwrap(),
            "{main}"
        );
        shoot_both(&c, "decide").await;

        // The request in full, then approved with a comment.
        let href = link.attr("href").await.unwrap().unwrap();
        let dora_id = href.trim_start_matches("/ui/decide/").to_owned();
        link.click().await.unwrap();
        wait_at(&c, &format!("{ca}{href}")).await;
        let main = main_text(&c).await;
        for shown in [
            "db-admin for e2e-dora@example.com",
            "user-e2e-dora",
            "postgres",
            "restore the orders table",
            "0 of 1: nobody has approved it yet",
            "Request hash",
            "Approve: e2e-dora@example.com gets postgres",
        ] {
            assert!(main.contains(shown), "{shown:?} missing from\n{main}");
        }
        // The hash the page shows is the one its form sends.
        let shown_hash = c
            .find(Locator::Css("code.hash"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let form_hash = c
            .find(Locator::Css("form.decide input[name=request_hash]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shown_hash, form_hash);
        assert_eq!(shown_hash.len(), 64, "{shown_hash}");
        shoot_both(&c, "decide-detail").await;
        c.find(Locator::Id("comment"))
            .await
            .unwrap()
            .send_keys("restore approved, ping me when done")
            .await
            .unwrap();
        c.find(Locator::Css("form.decide button:not(.deny)"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_at(&c, &format!("{ca}/ui/decide?done=approved")).await;
        let main = main_text(&c).await;
        assert!(main.contains(&format!("You approved {dora_id}")), "{main}");

        // The waiting command finishes with the role's certificate.
        let (status, stdout, stderr) = elevate.finish(WAIT);
        assert!(status.success(), "elevate --wait: {stdout}\n{stderr}");
        assert!(stdout.contains("active until"), "{stdout}");

        let cookie = c.get_named_cookie("jitssh_session").await.unwrap();
        let lead_cookie = cookie.value().to_owned();

        // A cross-site form (another origin, no token) posting a decision:
        // the browser does not send the Lax cookie, and nothing is decided.
        let forged = format!(
            "data:text/html,<form method=post action='{ca}/ui/decide/{erik_id}/deny'><input name=request_hash value='{erik_hash}'></form><script>document.forms[0].submit()</script>"
        );
        c.goto(&forged.replace(' ', "%20")).await.unwrap();
        wait_at(&c, &format!("{ca}/ui/login")).await;
        c.close().await.unwrap();
        (dora_id, lead_cookie)
    });

    let certs = agent_certificates(&me);
    assert!(certs.contains("postgres"), "the role's principal: {certs}");
    assert!(certs.contains("Key ID: \"e2e-dora@example.com"), "{certs}");

    // The same approver's session, posting without the token from another
    // origin: refused, nothing decided.
    let r = http
        .post(format!("{ca}/ui/decide/{erik_id}/deny"))
        .header("cookie", format!("jitssh_session={lead_cookie}"))
        .header("origin", "https://evil.example")
        .form(&[("request_hash", erik_hash.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);

    // A person without the right: no link, 403, and a forged POST carrying
    // their own valid token refused and audited.
    let (session, csrf) = rt.block_on(async {
        let c = driver.browser().await;
        sign_in(&c, &ca, &provider, &dev).await;
        assert!(
            c.find(Locator::LinkText("To decide")).await.is_err(),
            "no To decide link for a developer"
        );
        c.goto(&format!("{ca}/ui/decide")).await.unwrap();
        let main = main_text(&c).await;
        assert!(main.contains("Not available to you"), "{main}");
        assert!(!main.contains("e2e-erik"), "{main}");
        c.goto(&format!("{ca}/ui/")).await.unwrap();
        let csrf = c
            .find(Locator::Css("form.logout input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        let session = c
            .get_named_cookie("jitssh_session")
            .await
            .unwrap()
            .value()
            .to_owned();
        c.close().await.unwrap();
        (session, csrf)
    });
    let r = http
        .get(format!("{ca}/ui/decide"))
        .header("cookie", format!("jitssh_session={session}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{ca}/ui/decide/{erik_id}/approve"))
        .header("cookie", format!("jitssh_session={session}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("request_hash", erik_hash.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);

    // What the log says: dora's request approved through the console, the
    // forged POST refused, erik's request still waiting.
    let audit = |args: &[&str]| {
        let out = Command::new(bin("jitssh-ca"))
            .args(["audit", "list", "--config"])
            .arg(dir.path().join("config.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let approvals = audit(&["--action", "elevation_approve"]);
    assert_eq!(approvals.lines().count(), 1, "{approvals}");
    assert!(
        approvals.contains("elevation_approve approved"),
        "{approvals}"
    );
    assert!(approvals.contains("e2e-lead"), "{approvals}");
    let refused = audit(&["--action", "console_action"]);
    assert_eq!(refused.lines().count(), 1, "{refused}");
    assert!(
        refused.contains("denied code=console_forbidden") && refused.contains("e2e-dev"),
        "{refused}"
    );
    assert!(audit(&["--action", "elevation_deny"]).is_empty());
    let shown = Command::new(bin("jitssh-ca"))
        .args(["elevation", "show", "--config"])
        .arg(dir.path().join("config.toml"))
        .arg(&erik_id)
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "pending", "{shown}");
    let shown = Command::new(bin("jitssh-ca"))
        .args(["elevation", "show", "--config"])
        .arg(dir.path().join("config.toml"))
        .arg(&dora_id)
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "approved", "{shown}");
    assert_eq!(
        shown["approvals"][0]["comment"],
        "restore approved, ping me when done"
    );
}
