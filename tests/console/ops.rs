//! The operator pages in a real browser: an operator signed in through the
//! provider's login form revokes a real certificate's serial from
//! Revocations, sees it listed with when it reached the KRL, and the KRL the
//! API serves revokes it (`ssh-keygen -Q`); then Policy and its "try it".
//! Screenshots of both pages (Revocations also scrolled to its list) and
//! of a try's result.

use std::path::Path;
use std::process::Command;

use fantoccini::{Client, Locator};
use jitssh_e2e::{bin, keygen, run_ok};
use serde_json::json;

use super::{
    Driver, browser_present, console_ca, fits, main_text, shoot, shoot_both, sign_in, wait_at,
};
use crate::provider::{Provider, ProviderUser};

/// A certificate for `user` through the API: its serial and file.
fn certificate(
    ca: &str,
    provider: &Provider,
    user: &ProviderUser,
    dir: &Path,
    name: &str,
) -> (String, std::path::PathBuf) {
    let token = provider.login_tokens(&user.username, &user.password)["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, public) = keygen(dir, name);
    let r = reqwest::blocking::Client::new()
        .post(format!("{ca}/v1/certs/user"))
        .bearer_auth(token)
        .json(&json!({"public_key": public}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: serde_json::Value = r.json().unwrap();
    let cert = dir.join(format!("{name}-cert.pub"));
    std::fs::write(&cert, format!("{}\n", b["certificate"].as_str().unwrap())).unwrap();
    (b["serial"].as_str().unwrap().to_owned(), cert)
}

/// Whether the KRL at `GET /v1/krl` revokes `cert`, as `ssh-keygen -Q` says.
fn krl_revokes(ca: &str, dir: &Path, cert: &Path) -> bool {
    let krl = reqwest::blocking::get(format!("{ca}/v1/krl"))
        .unwrap()
        .bytes()
        .unwrap();
    let file = dir.join("krl");
    std::fs::write(&file, krl).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(&file)
        .arg(cert)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => false,
        Some(1) => true,
        other => panic!(
            "ssh-keygen -Q: {other:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// [`shoot_both`] with the element `id` scrolled to the top at each width.
async fn shoot_both_at(c: &Client, id: &str, name: &str) {
    for (width, height, kind) in [(1280, 900, "desktop"), (375, 812, "phone")] {
        c.set_window_size(width, height).await.unwrap();
        c.execute(
            "document.getElementById(arguments[0]).scrollIntoView();",
            vec![json!(id)],
        )
        .await
        .unwrap();
        shoot(c, width, height, &format!("{name}-{kind}.png")).await;
        assert!(fits(c).await, "{name}: sideways scrolling at {width} px");
    }
    c.set_window_size(1280, 900).await.unwrap();
}

#[test]
fn an_operator_revokes_a_certificate_and_tries_the_policy() {
    if !browser_present() {
        return;
    }
    let olivia = ProviderUser::new("e2e-olivia", &["ca-operators"]);
    let cora = ProviderUser::new("e2e-ops-cora", &["sre"]);
    let provider = Provider::start(&[olivia.clone(), cora.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (ca, _ca) = console_ca(&provider.issuer, dir.path());

    let (serial, cert) = certificate(&ca, &provider, &cora, work.path(), "phone");
    assert!(!krl_revokes(&ca, work.path(), &cert));
    // Something already in the list: a serial revoked with the CLI.
    let (old, _) = certificate(&ca, &provider, &cora, work.path(), "laptop");
    run_ok(
        Command::new(bin("jitssh-ca"))
            .arg("revoke")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .args([
                "--serial",
                &old,
                "--reason",
                "laptop left in a taxi (INC-5102)",
            ]),
    );

    let driver = Driver::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = driver.browser().await;
        sign_in(&c, &ca, &provider, &olivia).await;
        c.find(Locator::LinkText("Revocations"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_at(&c, &format!("{ca}/ui/revocations")).await;
        let main = main_text(&c).await;
        assert!(main.contains(&format!("Serial {old}")), "{main}");
        assert!(
            main.contains("by jitssh-ca revoke, on the CA's host"),
            "{main}"
        );

        // Revoke the phone's certificate, with the keyboard's Enter.
        fill(&c, "#serial", &serial).await;
        fill(
            &c,
            "#reason-serial",
            "phone lost on the train (INC-5120)\u{E007}",
        )
        .await;
        wait_at(&c, &format!("{ca}/ui/revocations")).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !main_text(&c).await.contains("Revoked\n") {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                main_text(&c).await
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let main = main_text(&c).await;
        assert!(main.contains(&format!("Serial {serial}")), "{main}");
        assert!(
            main.contains("by e2e-olivia@example.com (console)"),
            "{main}"
        );
        assert!(main.contains("In this server's KRL since"), "{main}");
        c.goto(&format!("{ca}/ui/revocations")).await.unwrap();
        shoot_both(&c, "revocations").await;
        shoot_both_at(&c, "list", "revocations-list").await;

        // Policy: what serves, and a try of the user decision's example.
        c.find(Locator::LinkText("Policy"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_at(&c, &format!("{ca}/ui/policy")).await;
        let main = main_text(&c).await;
        for shown in ["Serving now", "jitssh.rego", "passed", "Try it"] {
            assert!(main.contains(shown), "{shown:?} missing from\n{main}");
        }
        shoot_both(&c, "policy").await;
        c.find(Locator::Css("form.try button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_at(&c, &format!("{ca}/ui/policy/try")).await;
        let main = main_text(&c).await;
        assert!(
            main.contains("The CA would issue a certificate for alice"),
            "{main}"
        );
        assert!(main.contains("\"allow\": true"), "{main}");
        shoot_both(&c, "policy-try").await;
        c.close().await.unwrap();
    });

    assert!(
        krl_revokes(&ca, work.path(), &cert),
        "the served KRL revokes the phone's certificate"
    );
}
